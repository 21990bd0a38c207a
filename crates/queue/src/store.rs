//! Every SQL statement of the queue. Each worker-side write is fenced by the lease
//! token handed out at claim time.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::claim::PICK_DUE;
use crate::feed::{changed_payload, MAX_IDS_IN_PAYLOAD};
use crate::model::{ClaimedTask, NewTask, Task, TaskStatus, TASK_COLUMNS};
use crate::{CANCEL_CHANNEL, EVENTS_CHANNEL, WAKE_CHANNEL};

/// How one attempt ended, as reported by a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed(Value),
    /// `retry_in: None` means do not retry (a permanent error).
    Failed {
        error: String,
        retry_in: Option<Duration>,
    },
    Cancelled,
    /// Given back unfinished (worker shutting down): pending again, attempt not counted.
    Released,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Completed(_) => "completed",
            Outcome::Failed { .. } => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Released => "released",
        }
    }
}

/// Result of a cancel request.
#[derive(Debug, Clone)]
pub enum CancelOutcome {
    /// It was pending and is now cancelled.
    Cancelled(Task),
    /// It is running; its worker has been told and will stop it.
    Requested(Task),
    /// Already completed, failed or cancelled: nothing to do.
    AlreadyFinished(Task),
    NotFound,
}

/// Result of a retry request.
#[derive(Debug, Clone)]
pub enum RetryOutcome {
    Requeued(Task),
    /// Only failed or cancelled tasks can be retried.
    NotRetryable(Task),
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    /// Pending and due now.
    pub ready: i64,
    /// Pending with `run_at` in the future (scheduled or backing off).
    pub scheduled: i64,
    pub running: i64,
}

/// The queue's storage side.
#[derive(Clone, Debug)]
pub struct Queue {
    pool: PgPool,
    /// A few connections with asynchronous commit, for what must outlive a worker but not
    /// the database: claim markers (see `claim`), and notifications. A NOTIFY makes its
    /// transaction take an id, and so commit through a WAL flush, while it holds the
    /// database-wide notification lock: with a synchronous commit every notifying
    /// transaction would wait for the disk in turn.
    unsynced: PgPool,
    /// Ids that writers which silenced their triggers inserted, on their way to the task
    /// that sends their notifications (see [`Queue::notify_inserted`]).
    inserted: Arc<OnceLock<mpsc::UnboundedSender<Vec<i64>>>>,
}

/// Longest error text kept per attempt; handlers can produce arbitrarily long messages.
const MAX_ERROR_LEN: usize = 4096;

fn truncate(mut s: String) -> String {
    if s.len() > MAX_ERROR_LEN {
        let mut cut = MAX_ERROR_LEN;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

impl Queue {
    pub fn new(pool: PgPool) -> Self {
        let options = (*pool.connect_options()).clone().options([("synchronous_commit", "off")]);
        let unsynced = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(pool.options().get_acquire_timeout())
            .connect_lazy_with(options);
        Queue { pool, unsynced, inserted: Arc::default() }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn unsynced(&self) -> &PgPool {
        &self.unsynced
    }

    /// Inserts tasks on `conn`, typically inside the caller's transaction so the task and
    /// whatever else the caller records commit together. Returned in input order.
    pub async fn enqueue_on<'a>(
        conn: &mut PgConnection,
        tasks: impl IntoIterator<Item = &'a NewTask>,
    ) -> sqlx::Result<Vec<Task>> {
        let tasks = tasks.into_iter();
        let mut cols = Columns::with_capacity(tasks.size_hint().0);
        for t in tasks {
            cols.push(t);
        }
        if cols.title.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "INSERT INTO tasks (title, description, kind, payload, priority, run_at, max_attempts, timeout_secs, \
                                owner_id, request_id, trace_id)
             SELECT title, description, kind, payload, priority, COALESCE(run_at, now()), max_attempts, timeout_secs,
                    owner_id, request_id, trace_id
             FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::int2[], $6::timestamptz[], $7::int4[],
                         $8::int4[], $9::int8[], $10::text[], $11::text[])
                  AS t(title, description, kind, payload, priority, run_at, max_attempts, timeout_secs,
                       owner_id, request_id, trace_id)
             RETURNING {TASK_COLUMNS}"
        );
        let mut rows: Vec<Task> = sqlx::query_as(&sql)
            .bind(cols.title)
            .bind(cols.description)
            .bind(cols.kind)
            .bind(cols.payload)
            .bind(cols.priority)
            .bind(cols.run_at)
            .bind(cols.max_attempts)
            .bind(cols.timeout_secs)
            .bind(cols.owner_id)
            .bind(cols.request_id)
            .bind(cols.trace_id)
            .fetch_all(&mut *conn)
            .await?;
        // Identity values are assigned in the order rows are produced by unnest.
        rows.sort_by_key(|t| t.id);
        Ok(rows)
    }

    /// Wakes idle workers and tells the change feed about tasks a transaction begun with
    /// [`BEGIN_NOTIFY_AFTER_COMMIT`] inserted: the notifications its triggers would have
    /// sent. Returns at once; one task per queue sends them, the ids of every insert that
    /// committed while its last statement was on the wire in one statement, so under load
    /// a round trip serves many writers. The tasks are committed already, so a failure is
    /// only logged (workers poll). Call it from within a Tokio runtime.
    pub fn notify_inserted(&self, ids: &[i64]) {
        let sender = self.inserted.get_or_init(|| {
            let (sender, inserted) = mpsc::unbounded_channel();
            tokio::spawn(send_inserted_notifications(self.unsynced.clone(), inserted));
            sender
        });
        // Fails only once the runtime is gone, when nobody is left to tell.
        let _ = sender.send(ids.to_vec());
    }

    /// The change feed's notification for tasks the engine changed in a transaction that
    /// left its notifications for after its commit. Best effort: live views also reload.
    pub(crate) async fn notify_changed(&self, ids: &[i64]) {
        if ids.is_empty() {
            return;
        }
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(changed_payload(ids))
            .execute(&self.unsynced)
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, tasks = ids.len(), "change feed notification not sent");
        }
    }

    /// Inserts tasks in their own transaction.
    pub async fn enqueue(&self, tasks: &[NewTask]) -> sqlx::Result<Vec<Task>> {
        let mut conn = self.pool.acquire().await?;
        Self::enqueue_on(&mut conn, tasks).await
    }

    pub async fn get(&self, id: i64) -> sqlx::Result<Option<Task>> {
        let mut conn = self.pool.acquire().await?;
        fetch_on(&mut conn, id).await
    }

    /// Leases up to `limit` due tasks, shared fairly between owners ([`PICK_DUE`]). Rows
    /// locked by another claimer are skipped, not waited for.
    pub async fn claim(&self, limit: usize, lease: Duration, worker: &str) -> sqlx::Result<Vec<ClaimedTask>> {
        sqlx::query_as(&format!(
            "{PICK_DUE}
             UPDATE tasks t SET
                 status = 'running', attempts = t.attempts + 1, lease_token = gen_random_uuid(),
                 lease_expires_at = now() + make_interval(secs => $2), leased_by = $3,
                 started_at = now(), updated_at = now(), version = t.version + 1
             FROM picked WHERE t.id = picked.id
             RETURNING t.id, t.kind, t.payload, t.attempts, t.max_attempts, t.timeout_secs, t.lease_token,
                       t.owner_id, t.request_id, t.trace_id, t.created_at, t.run_at"
        ))
        .bind(limit as i64)
        .bind(lease.as_secs_f64())
        .bind(worker)
        .fetch_all(&self.pool)
        .await
    }

    /// Records attempt outcomes in one statement. Only rows still leased under the given
    /// token change; the returned list says which did and the status each ended in.
    pub async fn record(&self, outcomes: &[(i64, Uuid, Outcome)]) -> sqlx::Result<Vec<(i64, TaskStatus)>> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let cols = OutcomeColumns::new(outcomes.iter().map(|(id, _, o)| (*id, o)));
        let tokens: Vec<Uuid> = outcomes.iter().map(|(_, token, _)| *token).collect();
        let changed: Vec<(i64, TaskStatus)> = sqlx::query_as(
            // `quiet`: the triggers leave the change feed to `notify_changed`, after the commit
            // (see BEGIN_NOTIFY_AFTER_COMMIT).
            "WITH quiet AS (
                 SELECT set_config('flowforge.notify_after_commit', 'on', true)
             ), input AS (
                 SELECT * FROM unnest($1::int8[], $2::uuid[], $3::text[], $4::jsonb[], $5::text[], $6::float8[])
                     AS i(id, token, outcome, result, error, retry_in)
             ), decided AS (
                 SELECT t.id, i.token, i.outcome, i.result, i.error, i.retry_in,
                     CASE
                         WHEN i.outcome = 'completed' THEN 'completed'
                         WHEN i.outcome = 'cancelled' OR t.cancel_requested THEN 'cancelled'
                         WHEN i.outcome = 'released' THEN 'pending'
                         WHEN i.retry_in IS NOT NULL AND t.attempts < t.max_attempts THEN 'pending'
                         ELSE 'failed'
                     END::task_status AS next_status
                 FROM tasks t JOIN input i ON t.id = i.id
                 -- The token alone is the fence: only a running task has one (a CHECK
                 -- says so). A `status = 'running'` here would let the planner walk
                 -- the small partial lease index instead of the primary key, and that
                 -- index holds an entry for every task that ran since the last vacuum.
                 WHERE t.lease_token = i.token
             )
             -- `decided` reads the statement's snapshot. Under a held lease only
             -- `cancel_requested` can change meanwhile, so the SET expressions consult `t`,
             -- which is the latest row version if this UPDATE had to wait for the row: a
             -- cancel committed meanwhile wins over a retry or a release.
             UPDATE tasks t SET
                 status = CASE WHEN d.next_status = 'pending' AND t.cancel_requested
                               THEN 'cancelled'::task_status ELSE d.next_status END,
                 result = CASE WHEN d.outcome = 'completed' THEN d.result ELSE t.result END,
                 last_error = COALESCE(d.error, t.last_error),
                 errors = CASE WHEN d.error IS NULL THEN t.errors ELSE t.errors || jsonb_build_array(
                     jsonb_build_object('attempt', t.attempts, 'at', now(), 'error', d.error, 'worker', t.leased_by)) END,
                 attempts = CASE WHEN d.outcome = 'released' THEN t.attempts - 1 ELSE t.attempts END,
                 run_at = CASE WHEN d.next_status = 'pending' AND d.outcome = 'failed' AND NOT t.cancel_requested
                               THEN now() + make_interval(secs => d.retry_in) ELSE t.run_at END,
                 completed_at = CASE WHEN d.next_status <> 'pending' OR t.cancel_requested THEN now() END,
                 lease_token = NULL, lease_expires_at = NULL, updated_at = now(), version = t.version + 1
             FROM decided d, quiet
             WHERE t.id = d.id AND t.lease_token = d.token
             RETURNING t.id, t.status",
        )
        .bind(cols.ids)
        .bind(tokens)
        .bind(cols.labels)
        .bind(cols.results)
        .bind(cols.errors)
        .bind(cols.retry_in)
        .fetch_all(&self.pool)
        .await?;
        if outcomes.iter().any(|(_, _, o)| *o == Outcome::Released) {
            self.wake_best_effort().await;
        }
        let ids: Vec<i64> = changed.iter().map(|(id, _)| *id).collect();
        self.notify_changed(&ids).await;
        Ok(changed)
    }

    /// Extends the leases still held under the given tokens. Returns, for each lease
    /// still held, whether cancellation was requested; a task missing from the answer
    /// has been lost (rescued by someone else) and must stop.
    pub async fn heartbeat(&self, leases: &[(i64, Uuid)], lease: Duration) -> sqlx::Result<Vec<(i64, bool)>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, tokens): (Vec<i64>, Vec<Uuid>) = leases.iter().copied().unzip();
        sqlx::query_as(
            // A lease extension is no change-feed event: `quiet` keeps the trigger from
            // sending one (and from holding the notification lock through this commit).
            "WITH quiet AS (
                 SELECT set_config('flowforge.notify_after_commit', 'on', true)
             ), held AS (
                 SELECT t.id FROM tasks t JOIN unnest($1::int8[], $2::uuid[]) AS i(id, token) ON t.id = i.id
                 WHERE t.lease_token = i.token -- the fence, by primary key (see `record`)
                 -- The same lock order as `record`, so the two never deadlock.
                 ORDER BY t.id
                 FOR UPDATE OF t
             )
             UPDATE tasks t SET lease_expires_at = now() + make_interval(secs => $3)
             FROM held, quiet WHERE t.id = held.id
             RETURNING t.id, t.cancel_requested",
        )
        .bind(ids)
        .bind(tokens)
        .bind(lease.as_secs_f64())
        .fetch_all(&self.pool)
        .await
    }

    /// Takes back tasks whose lease ran out (their worker died or hung): pending again,
    /// or failed if that was the last attempt, or cancelled if that had been asked.
    pub async fn rescue_expired(&self, limit: usize) -> sqlx::Result<Vec<(i64, TaskStatus)>> {
        let rescued: Vec<(i64, TaskStatus)> = sqlx::query_as(
            "WITH expired AS (
                 -- Values read by a locking SELECT are the row's latest version, so a
                 -- cancel that committed meanwhile is seen.
                 SELECT id, cancel_requested, attempts, max_attempts, leased_by FROM tasks
                 WHERE status = 'running' AND lease_expires_at < now()
                 ORDER BY lease_expires_at
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED
             ), decided AS (
                 SELECT e.id,
                     CASE WHEN e.cancel_requested THEN 'cancelled'
                          WHEN e.attempts >= e.max_attempts THEN 'failed'
                          ELSE 'pending' END::task_status AS next_status,
                     'lease expired: worker ' || coalesce(e.leased_by, '?') || ' stopped heartbeating' AS error
                 FROM expired e
             )
             UPDATE tasks t SET
                 status = d.next_status,
                 last_error = d.error,
                 errors = t.errors || jsonb_build_array(
                     jsonb_build_object('attempt', t.attempts, 'at', now(), 'error', d.error, 'worker', t.leased_by)),
                 run_at = now(),
                 completed_at = CASE WHEN d.next_status = 'pending' THEN NULL ELSE now() END,
                 lease_token = NULL, lease_expires_at = NULL, updated_at = now(), version = t.version + 1
             FROM decided d WHERE t.id = d.id
             RETURNING t.id, t.status",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        if rescued.iter().any(|(_, s)| *s == TaskStatus::Pending) {
            self.wake_best_effort().await;
        }
        Ok(rescued)
    }

    /// Cancels a pending task at once, or asks the worker running it to stop.
    pub async fn cancel(&self, id: i64) -> sqlx::Result<CancelOutcome> {
        let mut tx = self.pool.begin().await?;
        let outcome = Self::cancel_on(&mut tx, id).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// [`Queue::cancel`] inside the caller's transaction (the worker hears of it at commit).
    pub async fn cancel_on(conn: &mut PgConnection, id: i64) -> sqlx::Result<CancelOutcome> {
        let updated: Option<Task> = sqlx::query_as(&format!(
            "UPDATE tasks SET
                 status = CASE WHEN status = 'pending' THEN 'cancelled'::task_status ELSE status END,
                 cancel_requested = (status = 'running'),
                 completed_at = CASE WHEN status = 'pending' THEN now() ELSE completed_at END,
                 updated_at = now(), version = version + 1
             WHERE id = $1 AND status IN ('pending', 'running')
             RETURNING {TASK_COLUMNS}"
        ))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(match updated {
            Some(task) if task.status == TaskStatus::Running => {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CANCEL_CHANNEL)
                    .bind(id.to_string())
                    .execute(&mut *conn)
                    .await?;
                CancelOutcome::Requested(task)
            }
            Some(task) => CancelOutcome::Cancelled(task),
            None => fetch_on(conn, id).await?.map_or(CancelOutcome::NotFound, CancelOutcome::AlreadyFinished),
        })
    }

    /// Puts a failed or cancelled task back in the queue with a fresh set of attempts.
    pub async fn retry(&self, id: i64) -> sqlx::Result<RetryOutcome> {
        let mut tx = self.pool.begin().await?;
        let outcome = Self::retry_on(&mut tx, id).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// [`Queue::retry`] inside the caller's transaction (workers wake at commit).
    pub async fn retry_on(conn: &mut PgConnection, id: i64) -> sqlx::Result<RetryOutcome> {
        let updated: Option<Task> = sqlx::query_as(&format!(
            "UPDATE tasks SET status = 'pending', attempts = 0, run_at = now(), cancel_requested = false,
                 completed_at = NULL, result = NULL, updated_at = now(), version = version + 1
             WHERE id = $1 AND status IN ('failed', 'cancelled')
             RETURNING {TASK_COLUMNS}"
        ))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(match updated {
            Some(task) => {
                sqlx::query("SELECT pg_notify($1, '')").bind(WAKE_CHANNEL).execute(&mut *conn).await?;
                RetryOutcome::Requeued(task)
            }
            None => fetch_on(conn, id).await?.map_or(RetryOutcome::NotFound, RetryOutcome::NotRetryable),
        })
    }

    /// Deletes up to `limit` tasks that finished before `cutoff`; returns their ids.
    pub async fn delete_finished_before(&self, cutoff: DateTime<Utc>, limit: usize) -> sqlx::Result<Vec<i64>> {
        sqlx::query_scalar(
            "DELETE FROM tasks WHERE id IN (
                 SELECT id FROM tasks
                 WHERE status IN ('completed', 'failed', 'cancelled') AND completed_at < $1
                 ORDER BY completed_at LIMIT $2)
             RETURNING id",
        )
        .bind(cutoff)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
    }

    /// Deletes every task that finished before `cutoff`, in batches so no statement holds
    /// locks for long. Returns how many were deleted.
    pub async fn purge_finished(&self, cutoff: DateTime<Utc>) -> sqlx::Result<usize> {
        const BATCH: usize = 5000;
        let mut deleted = 0;
        loop {
            let n = self.delete_finished_before(cutoff, BATCH).await?.len();
            deleted += n;
            if n < BATCH {
                return Ok(deleted);
            }
        }
    }

    /// `owner`'s pending and running tasks, counted no further than `up_to`.
    pub async fn count_unfinished<'c>(db: impl sqlx::PgExecutor<'c>, owner: i64, up_to: i64) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "SELECT LEAST($2,
                 (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE COALESCE(owner_id, 0) = $1 AND status = 'pending' LIMIT $2) p)
                 + (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE COALESCE(owner_id, 0) = $1 AND status = 'running' LIMIT $2) r))",
        )
        .bind(owner)
        .bind(up_to)
        .fetch_one(db)
        .await
    }

    /// Counts of waiting and running tasks (each from its own partial index).
    pub async fn depth(&self) -> sqlx::Result<QueueDepth> {
        let (ready, scheduled, running): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM tasks WHERE status = 'pending' AND run_at <= now()),
                    (SELECT count(*) FROM tasks WHERE status = 'pending' AND run_at > now()),
                    (SELECT count(*) FROM tasks WHERE status = 'running')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(QueueDepth { ready, scheduled, running })
    }

    /// Wakes idle workers after re-queueing work outside an INSERT. The write it follows
    /// has committed, so a failure here is only logged: workers poll anyway.
    async fn wake_best_effort(&self) {
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')").bind(WAKE_CHANNEL).execute(&self.unsynced).await {
            tracing::warn!(error = %e, "could not notify workers; they will find the work by polling");
        }
    }
}

async fn fetch_on(conn: &mut PgConnection, id: i64) -> sqlx::Result<Option<Task>> {
    sqlx::query_as(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1")).bind(id).fetch_optional(conn).await
}

/// The task behind [`Queue::notify_inserted`]; ends when the queue's last clone is gone.
async fn send_inserted_notifications(unsynced: PgPool, mut inserted: mpsc::UnboundedReceiver<Vec<i64>>) {
    while let Some(mut ids) = inserted.recv().await {
        // Past this many the change feed's payload is a reload anyway.
        while ids.len() < MAX_IDS_IN_PAYLOAD {
            match inserted.try_recv() {
                Ok(more) => ids.extend(more),
                Err(_) => break,
            }
        }
        let sent = sqlx::query("SELECT pg_notify($1, ''), pg_notify($2, $3)")
            .bind(WAKE_CHANNEL)
            .bind(EVENTS_CHANNEL)
            .bind(changed_payload(&ids))
            .execute(&unsynced)
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, tasks = ids.len(), "could not notify about new tasks; workers will poll");
        }
    }
}

/// Begins a transaction whose inserts leave their notifications to
/// [`Queue::notify_inserted`], to be called once it has committed (for example with
/// `pool.begin_with(BEGIN_NOTIFY_AFTER_COMMIT)`). A notification sent inside a writing
/// transaction makes its commit wait for the disk while holding a database-wide lock (see
/// the `notify_after_commit` migration), which puts one-task transactions in single file.
pub const BEGIN_NOTIFY_AFTER_COMMIT: &str = "BEGIN; SET LOCAL flowforge.notify_after_commit = on";

/// Outcomes as column-wise arrays, for the `unnest` of the statements that record them.
pub(crate) struct OutcomeColumns {
    pub ids: Vec<i64>,
    pub labels: Vec<&'static str>,
    /// `None` for a handler that returned JSON `null`: stored as SQL NULL, which reads
    /// back the same and skips a jsonb parse per task.
    pub results: Vec<Option<Value>>,
    pub errors: Vec<Option<String>>,
    pub retry_in: Vec<Option<f64>>,
}

impl OutcomeColumns {
    pub fn new<'a>(outcomes: impl ExactSizeIterator<Item = (i64, &'a Outcome)>) -> Self {
        let n = outcomes.len();
        let mut cols = OutcomeColumns {
            ids: Vec::with_capacity(n),
            labels: Vec::with_capacity(n),
            results: Vec::with_capacity(n),
            errors: Vec::with_capacity(n),
            retry_in: Vec::with_capacity(n),
        };
        for (id, outcome) in outcomes {
            let (result, error, retry) = match outcome {
                Outcome::Completed(Value::Null) => (None, None, None),
                Outcome::Completed(v) => (Some(v.clone()), None, None),
                Outcome::Failed { error, retry_in } => {
                    (None, Some(truncate(error.clone())), retry_in.map(|d| d.as_secs_f64()))
                }
                Outcome::Cancelled | Outcome::Released => (None, None, None),
            };
            cols.ids.push(id);
            cols.labels.push(outcome.label());
            cols.results.push(result);
            cols.errors.push(error);
            cols.retry_in.push(retry);
        }
        cols
    }
}

/// Column-wise arrays for the `unnest` insert.
struct Columns {
    title: Vec<String>,
    description: Vec<String>,
    kind: Vec<String>,
    payload: Vec<Value>,
    priority: Vec<i16>,
    run_at: Vec<Option<DateTime<Utc>>>,
    max_attempts: Vec<i32>,
    timeout_secs: Vec<i32>,
    owner_id: Vec<Option<i64>>,
    request_id: Vec<Option<String>>,
    trace_id: Vec<Option<String>>,
}

impl Columns {
    fn with_capacity(n: usize) -> Self {
        Columns {
            title: Vec::with_capacity(n),
            description: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            payload: Vec::with_capacity(n),
            priority: Vec::with_capacity(n),
            run_at: Vec::with_capacity(n),
            max_attempts: Vec::with_capacity(n),
            timeout_secs: Vec::with_capacity(n),
            owner_id: Vec::with_capacity(n),
            request_id: Vec::with_capacity(n),
            trace_id: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, t: &NewTask) {
        self.title.push(t.title.clone());
        self.description.push(t.description.clone());
        self.kind.push(t.kind.clone());
        self.payload.push(t.payload.clone());
        self.priority.push(t.priority);
        self.run_at.push(t.run_at);
        self.max_attempts.push(t.max_attempts);
        self.timeout_secs.push(t.timeout_secs);
        self.owner_id.push(t.owner_id);
        self.request_id.push(t.request_id.clone());
        self.trace_id.push(t.trace_id.clone());
    }
}
