//! The audit log: a row for every state-changing request, refused ones included. Refusals
//! of callers without valid credentials come at the rate an attacker likes, so those are
//! tallied: one row per kind (address, route, status) with its count, every
//! [`TALLY_EVERY`] and when the replica stops.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{MatchedPath, OriginalUri, Request};
use axum::http::header;
use axum::response::Response;
use sqlx::PgPool;

use crate::accounts::Caller;
use crate::middleware::{AuditTarget, RequestId};
use crate::state::AppState;

/// Longest request path stored; longer ones are cut (the route names what was asked).
pub const MAX_STORED_PATH: usize = 512;
/// How often tallied refusals are written.
pub const TALLY_EVERY: Duration = Duration::from_secs(10);
/// Kinds of refusal tallied at once; past it, further ones share a row without address.
const MAX_TALLIED_KINDS: usize = 10_000;

/// How a request ended, for its audit record: the status and the object its handler
/// named (`AuditTarget`).
pub struct Outcome {
    target: Option<String>,
    status: u16,
}

impl Outcome {
    pub fn of(response: &Response) -> Outcome {
        let target = response.extensions().get::<AuditTarget>().map(|t| t.0.clone());
        Outcome { target, status: response.status().as_u16() }
    }
}

/// On a response whose audit record its handler wrote already.
#[derive(Debug, Clone, Copy)]
pub struct Audited;

/// What the audit log records of a state-changing request.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    method: String,
    route: String,
    path: String,
    request_id: Option<String>,
    client_ip: Option<String>,
    user_agent: Option<String>,
}

impl AuditRecord {
    /// The record of `req` from `client_ip`, if `req` is one that changes state.
    pub fn of(req: &Request, client_ip: Option<String>) -> Option<AuditRecord> {
        crate::middleware::changes_state(req.method()).then(|| AuditRecord {
            method: req.method().to_string(),
            route: req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default(),
            // Inside a nested router the URI lost its prefix; the original has it.
            path: truncated(req.extensions().get::<OriginalUri>().map_or(req.uri(), |o| &o.0).path(), MAX_STORED_PATH),
            request_id: req.extensions().get::<RequestId>().map(|r| r.0.clone()),
            client_ip,
            user_agent: req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(|s| truncated(s, 256)),
        })
    }

    /// Writes the record before the answer goes out, except after a 503: the database was
    /// unreachable a moment ago, and waiting for the pool again would hold back (by the
    /// acquire timeout) an answer that tells the client to retry. That record is written in
    /// the background instead. An anonymous refusal is only tallied.
    pub async fn finish(self, state: &AppState, caller: Option<Caller>, outcome: Outcome) {
        if caller.is_none() && matches!(outcome.status, 401 | 429) {
            state.refusals.add(self, outcome.status);
            return;
        }
        if outcome.status == 503 {
            let db = state.db.clone();
            tokio::spawn(async move { self.write(&db, caller.as_ref(), outcome, 1).await });
        } else {
            self.write(&state.db, caller.as_ref(), outcome, 1).await;
        }
    }

    /// Writes records of changes that succeeded with `status` inside the handler's
    /// transaction, so each change and its record commit together (one commit instead
    /// of two on the hot path), in one statement for any number. The handler then puts
    /// [`Audited`] on its response; should the transaction fail, the middleware records
    /// the failed request as usual.
    pub async fn write_all_on(
        conn: &mut sqlx::PgConnection,
        records: &[(&AuditRecord, &Caller, String)],
        status: u16,
    ) -> sqlx::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        fn column<'a, T>(records: &'a [(&AuditRecord, &Caller, String)], f: impl Fn(&'a AuditRecord) -> T) -> Vec<T> {
            records.iter().map(|(r, _, _)| f(r)).collect()
        }
        sqlx::query(
            "INSERT INTO audit_log (user_id, token_id, method, route, path, target, status, request_id, client_ip,
                                    user_agent, occurrences)
             SELECT user_id, token_id, method, route, path, target, $7, request_id, client_ip, user_agent, 1
             FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $8::text[],
                         $9::text[], $10::text[])
                  AS a(user_id, token_id, method, route, path, target, request_id, client_ip, user_agent)",
        )
        .bind(records.iter().map(|(_, c, _)| c.user_id).collect::<Vec<_>>())
        .bind(records.iter().map(|(_, c, _)| c.token_id).collect::<Vec<_>>())
        .bind(column(records, |r| r.method.as_str()))
        .bind(column(records, |r| r.route.as_str()))
        .bind(column(records, |r| r.path.as_str()))
        .bind(records.iter().map(|(_, _, t)| t.as_str()).collect::<Vec<_>>())
        .bind(status as i16)
        .bind(column(records, |r| r.request_id.as_deref()))
        .bind(column(records, |r| r.client_ip.as_deref()))
        .bind(column(records, |r| r.user_agent.as_deref()))
        .execute(conn)
        .await
        .map(|_| ())
    }

    fn insert<'q>(
        &'q self,
        caller: Option<&Caller>,
        status: u16,
        target: Option<&'q str>,
        occurrences: i32,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(
            "INSERT INTO audit_log (user_id, token_id, method, route, path, target, status, request_id, client_ip,
                                    user_agent, occurrences)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(caller.map(|c| c.user_id))
        .bind(caller.map(|c| c.token_id))
        .bind(&self.method)
        .bind(&self.route)
        .bind(&self.path)
        .bind(target)
        .bind(status as i16)
        .bind(&self.request_id)
        .bind(&self.client_ip)
        .bind(&self.user_agent)
        .bind(occurrences)
    }

    /// Best effort: a lost audit row is logged (with everything it held) but does not
    /// turn a completed change into an error for the client.
    async fn write(self, db: &PgPool, caller: Option<&Caller>, Outcome { target, status }: Outcome, occurrences: i32) {
        let result = self.insert(caller, status, target.as_deref(), occurrences).execute(db).await;
        if let Err(e) = result {
            tracing::error!(error = %e, method = %self.method, path = %self.path, user_id = ?caller.map(|c| c.user_id),
                            token_id = ?caller.map(|c| c.token_id), target = ?target, status, occurrences,
                            request_id = ?self.request_id, client_ip = ?self.client_ip, user_agent = ?self.user_agent,
                            "audit record not written");
        }
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn truncated(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RefusalKind {
    client_ip: Option<String>,
    method: String,
    route: String,
    status: u16,
}

/// Anonymous refusals since the last write: per kind, the latest record and the count.
#[derive(Debug, Default)]
pub struct RefusalTally {
    kinds: Mutex<HashMap<RefusalKind, (AuditRecord, i32)>>,
}

impl RefusalTally {
    fn add(&self, record: AuditRecord, status: u16) {
        let mut kinds = self.kinds.lock().expect("refusal tally");
        let mut kind = RefusalKind {
            client_ip: record.client_ip.clone(),
            method: record.method.clone(),
            route: record.route.clone(),
            status,
        };
        if kinds.len() >= MAX_TALLIED_KINDS && !kinds.contains_key(&kind) {
            kind.client_ip = None;
        }
        let count = kinds.get(&kind).map_or(0, |(_, n)| *n);
        kinds.insert(kind, (record, count.saturating_add(1)));
    }

    /// Writes one row per kind, with its count, and starts a new period.
    pub async fn write(&self, db: &PgPool) {
        let kinds = std::mem::take(&mut *self.kinds.lock().expect("refusal tally"));
        for (kind, (mut record, count)) in kinds {
            record.client_ip = kind.client_ip;
            record.write(db, None, Outcome { target: None, status: kind.status }, count).await;
        }
    }

    /// Runs [`RefusalTally::write`] every [`TALLY_EVERY`], forever.
    pub async fn keep_writing(state: AppState) {
        loop {
            tokio::time::sleep(TALLY_EVERY).await;
            state.refusals.write(&state.db).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_text_is_cut_on_a_character_boundary() {
        assert_eq!(truncated("abc", 512), "abc");
        assert_eq!(truncated(&"a".repeat(600), MAX_STORED_PATH).len(), 512);
        assert_eq!(truncated("aé", 2), "a");
    }
}
