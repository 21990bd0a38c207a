//! Claims held by row locks: how the worker runtime takes tasks.
//!
//! A claim is a transaction that locks a batch of due tasks (`FOR UPDATE SKIP LOCKED`)
//! and stays open while their handlers run, for at most the worker's inline window.
//! When it closes, one statement records every outcome that is in and gives each task
//! still running a lease (the same fenced lease [`Queue::claim`] hands out), then the
//! transaction commits. A task that finishes inside the window is therefore written
//! once, not twice (claim, then outcome), which is what makes the engine fast: a row
//! lock costs a small WAL record, a row update a new row version and an entry in every
//! index.
//!
//! The fence is the transaction itself: a worker that died or lost its connection can
//! never commit, its locks vanish with it and its tasks are due again at once. What a
//! crash would lose is the attempt count, so a task that kills its worker every time
//! would be retried forever. To keep `max_attempts` meaning something, each claim leaves
//! a marker (its transaction id and task ids) committed beside it, and the transaction
//! deletes the marker when it commits. A marker whose transaction is no longer in
//! progress belongs to a claim that died: [`Queue::count_abandoned_claims`] then counts
//! an attempt for each of its tasks still pending, dead-lettering those out of attempts.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::model::TaskStatus;
use crate::store::{Outcome, OutcomeColumns, Queue, BEGIN_NOTIFY_AFTER_COMMIT};

/// A task locked by an open claim, as its handler will see it.
#[derive(Debug, Clone)]
pub(crate) struct LockedTask {
    pub id: i64,
    pub kind: String,
    pub payload: Value,
    /// The attempt this run is (1 on the first).
    pub attempt: i32,
    pub max_attempts: i32,
    pub timeout_secs: i32,
    pub owner_id: Option<i64>,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    /// When it became due: `run_at`, or its creation if later.
    pub due: DateTime<Utc>,
}

/// An open claim: the transaction holding the tasks' row locks.
pub(crate) struct Claim {
    pub tx: Transaction<'static, Postgres>,
    /// The transaction's id, which names its marker.
    pub xid: i64,
    pub tasks: Vec<LockedTask>,
}

/// What an attempt that ended inside its claim leaves the task in; `None` for a released
/// task, which is left as it was. A pending task never has a cancellation requested (only
/// running ones do), so the outcome alone decides.
pub(crate) fn status_after(outcome: &Outcome, attempt: i32, max_attempts: i32) -> Option<TaskStatus> {
    match outcome {
        Outcome::Completed(_) => Some(TaskStatus::Completed),
        Outcome::Cancelled => Some(TaskStatus::Cancelled),
        Outcome::Failed { retry_in: Some(_), .. } if attempt < max_attempts => Some(TaskStatus::Pending),
        Outcome::Failed { .. } => Some(TaskStatus::Failed),
        Outcome::Released => None,
    }
}

/// The start of a statement that locks up to `$1` due tasks as `picked`, sharing them
/// fairly between owners, so that one owner's backlog cannot starve another's. Tasks
/// without an owner are one more group, owner 0.
///
/// 1. `owners`: every group with pending tasks, one index probe each (a loose scan);
/// 2. `load`: the tasks each group has running, `r`, counted once per group (in a
///    subquery the planner would copy the count into each of its three uses), only when
///    there are several groups (one group's share is the whole batch whatever it runs),
///    and only up to one more than an even share of the batch: every running task counted
///    is a heap visit, and a group already that busy gets little of this batch anyway;
/// 3. `shares`: with `m` groups, each may take up to `(limit + Σr) / m − r`, so groups
///    with fewer running go first and the batch evens them out (water-filling);
/// 4. `fair`: each group's share from its own due tasks, highest priority then oldest,
///    the groups with the fewest running first;
/// 5. `extra`: when the shares left slots free (a group had fewer tasks due than its
///    share), more from the groups that have them, so that no slot idles while anything
///    is due. With one group its share was the whole batch, so there is nothing more.
///
/// Groups that count as equally busy are taken in random order: the counts are capped, so
/// busy groups often tie, and the order of the scan would hand every odd slot to the
/// lowest owner id.
///
/// Priority orders tasks within a group's share, not across groups. With one group (one
/// owner, or none) its share is the whole batch: the claim as it would be without
/// fairness, plus one probe per part.
pub(crate) const PICK_DUE: &str = "
    WITH RECURSIVE owners(owner) AS (
        (SELECT COALESCE(owner_id, 0) FROM tasks WHERE status = 'pending' ORDER BY COALESCE(owner_id, 0) LIMIT 1)
      UNION ALL
        SELECT (SELECT COALESCE(t.owner_id, 0) FROM tasks t
                WHERE t.status = 'pending' AND COALESCE(t.owner_id, 0) > o.owner
                ORDER BY COALESCE(t.owner_id, 0) LIMIT 1)
        FROM owners o WHERE o.owner IS NOT NULL
    ), groups AS (
        SELECT count(*) AS m FROM owners WHERE owner IS NOT NULL
    ), load AS MATERIALIZED (
        SELECT o.owner,
               CASE WHEN g.m > 1 THEN (SELECT count(*) FROM (
                        SELECT FROM tasks r
                        WHERE r.status = 'running' AND COALESCE(r.owner_id, 0) = o.owner
                        LIMIT $1 / g.m + 1) busy)
                    ELSE 0 END AS running
        FROM owners o CROSS JOIN groups g WHERE o.owner IS NOT NULL
    ), shares AS MATERIALIZED (
        SELECT owner, running, ((($1 + sum(running) OVER ()) / g.m) - running)::int8 AS share
        FROM load CROSS JOIN groups g
    ), fair AS (
        SELECT t.* FROM (SELECT * FROM shares WHERE share > 0 ORDER BY running, random()) s
        CROSS JOIN LATERAL (
            SELECT id, kind, payload, attempts, max_attempts, timeout_secs, owner_id, request_id, trace_id,
                   created_at, run_at
            FROM tasks
            WHERE status = 'pending' AND COALESCE(owner_id, 0) = s.owner AND run_at <= now()
            ORDER BY priority DESC, run_at, id
            LIMIT s.share
            FOR UPDATE SKIP LOCKED) t
        LIMIT $1
    ), extra AS (
        SELECT t.* FROM (SELECT * FROM shares WHERE (SELECT m FROM groups) > 1 ORDER BY running, random()) s
        CROSS JOIN LATERAL (
            SELECT id, kind, payload, attempts, max_attempts, timeout_secs, owner_id, request_id, trace_id,
                   created_at, run_at
            FROM tasks
            WHERE status = 'pending' AND COALESCE(owner_id, 0) = s.owner AND run_at <= now()
              AND id <> ALL (ARRAY(SELECT id FROM fair))
            ORDER BY priority DESC, run_at, id
            LIMIT $1
            FOR UPDATE SKIP LOCKED) t
        LIMIT $1 - (SELECT count(*) FROM fair)
    ), picked AS (
        SELECT * FROM fair UNION ALL SELECT * FROM extra
    )";

/// One row of [`Queue::open_claim`]: the claim's transaction id, then the task.
type LockedRow = (i64, i64, String, Value, i32, i32, i32, Option<i64>, Option<String>, Option<String>, DateTime<Utc>);

impl Queue {
    /// Locks up to `limit` due tasks, shared fairly between owners ([`PICK_DUE`]), in a
    /// new transaction. Rows another claim holds are skipped, not waited for. `None` when
    /// nothing is due (the transaction is rolled back).
    pub(crate) async fn open_claim(&self, limit: usize) -> sqlx::Result<Option<Claim>> {
        // The close's notifications are sent after its commit (`notify_changed`).
        let mut tx = self.pool().begin_with(BEGIN_NOTIFY_AFTER_COMMIT).await?;
        let mut rows: Vec<LockedRow> = sqlx::query_as(&format!(
            "{PICK_DUE}
             SELECT (SELECT pg_current_xact_id()::text::int8), id, kind, payload, attempts + 1, max_attempts,
                    timeout_secs, owner_id, request_id, trace_id, GREATEST(run_at, created_at)
             FROM picked"
        ))
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        let Some(xid) = rows.first().map(|r| r.0) else {
            tx.rollback().await?;
            return Ok(None);
        };
        // In id order, not owner by owner: the handlers start together anyway, and the
        // outcomes are then written in the order the rows lie in the table. Sorted here,
        // not by the database, which every worker shares.
        rows.sort_unstable_by_key(|r| r.1);
        let tasks = rows
            .into_iter()
            .map(|(_, id, kind, payload, attempt, max_attempts, timeout_secs, owner_id, request_id, trace_id, due)| {
                LockedTask {
                    id,
                    kind,
                    payload,
                    attempt,
                    max_attempts,
                    timeout_secs,
                    owner_id,
                    request_id,
                    trace_id,
                    due,
                }
            })
            .collect();
        Ok(Some(Claim { tx, xid, tasks }))
    }

    /// Commits a marker for an open claim, so that the attempt is counted if the claim
    /// dies with its worker. Written with an asynchronous commit: it must outlive the
    /// worker, not the database (a database crash ends the claim too).
    pub(crate) async fn mark_claim(&self, xid: i64, task_ids: &[i64], worker: &str) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO task_claims (xid, worker, task_ids) VALUES ($1::text::xid8, $2, $3)")
            .bind(xid.to_string())
            .bind(worker)
            .bind(task_ids)
            .execute(self.unsynced())
            .await?;
        Ok(())
    }

    /// Closes a claim: records `outcomes` (one attempt each, leaving each task in the
    /// status given, from [`status_after`]), leases the `leased` tasks to `worker` for
    /// `lease` under the tokens given, removes the claim's marker and commits. Tasks in
    /// neither list (released) stay pending with the attempt not counted.
    pub(crate) async fn close_claim(
        claim: Claim,
        outcomes: &[(i64, TaskStatus, &Outcome)],
        leased: &[(i64, Uuid)],
        lease: Duration,
        worker: &str,
    ) -> sqlx::Result<()> {
        let Claim { mut tx, xid, .. } = claim;
        let cols = OutcomeColumns::new(outcomes.iter().map(|&(id, _, o)| (id, o)));
        let statuses: Vec<&str> = outcomes.iter().map(|(_, st, _)| st.as_str()).collect();
        let (lease_ids, tokens): (Vec<i64>, Vec<Uuid>) = leased.iter().copied().unzip();
        let (recorded, leased_now): (i64, i64) = sqlx::query_as(
            "WITH recorded AS (
                 -- `t` is the row as the claim locked it: nothing else has changed it.
                 UPDATE tasks t SET
                     status = i.status::task_status,
                     attempts = t.attempts + 1,
                     result = i.result,
                     last_error = COALESCE(i.error, t.last_error),
                     errors = CASE WHEN i.error IS NULL THEN t.errors ELSE t.errors || jsonb_build_array(
                         jsonb_build_object('attempt', t.attempts + 1, 'at', statement_timestamp(),
                                            'error', i.error, 'worker', $6::text)) END,
                     run_at = CASE WHEN i.status = 'pending'
                                   THEN statement_timestamp() + make_interval(secs => i.retry_in) ELSE t.run_at END,
                     completed_at = CASE WHEN i.status = 'pending' THEN NULL ELSE statement_timestamp() END,
                     -- now() is when the claim's transaction began: when the task started.
                     leased_by = $6, started_at = now(), updated_at = statement_timestamp(),
                     version = t.version + 1
                 FROM unnest($1::int8[], $2::text[], $3::jsonb[], $4::text[], $5::float8[])
                     AS i(id, status, result, error, retry_in)
                 WHERE t.id = i.id
                 RETURNING 1
             ), leased AS (
                 UPDATE tasks t SET
                     status = 'running', attempts = t.attempts + 1, lease_token = l.token,
                     lease_expires_at = statement_timestamp() + make_interval(secs => $9), leased_by = $6,
                     started_at = now(), updated_at = statement_timestamp(), version = t.version + 1
                 FROM unnest($7::int8[], $8::uuid[]) AS l(id, token)
                 WHERE t.id = l.id
                 RETURNING 1
             ), unmarked AS (
                 DELETE FROM task_claims WHERE xid = $10::text::xid8
             )
             SELECT (SELECT count(*) FROM recorded), (SELECT count(*) FROM leased)",
        )
        .bind(cols.ids)
        .bind(statuses)
        .bind(cols.results)
        .bind(cols.errors)
        .bind(cols.retry_in)
        .bind(worker)
        .bind(lease_ids)
        .bind(tokens)
        .bind(lease.as_secs_f64())
        .bind(xid.to_string())
        .fetch_one(&mut *tx)
        .await?;
        if recorded as usize != outcomes.len() || leased_now as usize != leased.len() {
            // Impossible while the claim holds the rows; if it happens, write nothing.
            return Err(sqlx::Error::Protocol(format!(
                "closing a claim changed {recorded} of {} outcomes and {leased_now} of {} leases",
                outcomes.len(),
                leased.len()
            )));
        }
        tx.commit().await
    }

    /// Counts an attempt for every task of a claim that died with its worker (its marker
    /// outlived its transaction) and is still pending: pending again, or failed when that
    /// was its last attempt. Returns the tasks changed and the status each is in now.
    pub async fn count_abandoned_claims(&self) -> sqlx::Result<Vec<(i64, TaskStatus)>> {
        sqlx::query_as(
            "WITH abandoned AS (
                 DELETE FROM task_claims
                 WHERE pg_xact_status(xid) IS DISTINCT FROM 'in progress'
                 RETURNING worker, task_ids
             ), per_task AS (
                 -- A task can be in several dead claims: one attempt each.
                 SELECT id, array_agg(worker) AS workers FROM (
                     SELECT unnest(task_ids) AS id, worker FROM abandoned
                 ) c GROUP BY id
             )
             UPDATE tasks t SET
                 attempts = t.attempts + cardinality(d.workers),
                 status = CASE WHEN t.attempts + cardinality(d.workers) >= t.max_attempts
                               THEN 'failed' ELSE 'pending' END::task_status,
                 completed_at = CASE WHEN t.attempts + cardinality(d.workers) >= t.max_attempts
                                     THEN statement_timestamp() END,
                 last_error = 'worker ' || d.workers[cardinality(d.workers)] || ' stopped during the attempt (crashed or lost its connection)',
                 errors = t.errors || (
                     SELECT jsonb_agg(jsonb_build_object(
                         'attempt', t.attempts + n, 'at', statement_timestamp(), 'worker', d.workers[n],
                         'error', 'worker ' || d.workers[n] || ' stopped during the attempt (crashed or lost its connection)'))
                     FROM generate_series(1, cardinality(d.workers)) AS n),
                 updated_at = statement_timestamp(), version = t.version + 1
             FROM per_task d
             -- A task claimed again and finished since has nothing left to count.
             WHERE t.id = d.id AND t.status = 'pending'
             RETURNING t.id, t.status",
        )
        .fetch_all(self.pool())
        .await
    }
}
