//! A cap on each user's unfinished tasks (pending or running,
//! `FLOWFORGE_USER_MAX_UNFINISHED_TASKS`): one user's backlog cannot grow without bound
//! in the queue everybody shares. Admins, who run the deployment, are not capped. Each
//! replica counts a user's unfinished tasks in the database at most once per
//! [`RECOUNT_EVERY`] and adds what it created since; so the cap can be passed by what the
//! other replicas created within that time, never by more.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::accounts::Caller;
use crate::error::ApiError;

/// How long a replica trusts its count of a user's unfinished tasks.
pub const RECOUNT_EVERY: Duration = Duration::from_secs(1);
/// Users whose counts are kept; past it, stale counts are dropped.
const MAX_COUNTED_USERS: usize = 10_000;

pub struct TaskQuota {
    db: PgPool,
    /// `None`: no cap.
    limit: Option<u32>,
    counts: Mutex<HashMap<i64, (Instant, i64)>>,
}

impl TaskQuota {
    pub fn new(db: PgPool, limit: Option<u32>) -> Self {
        TaskQuota { db, limit, counts: Mutex::default() }
    }

    /// Admits `new` more tasks for the caller, or refuses them all with 429
    /// `too_many_tasks`.
    pub async fn admit(&self, caller: &Caller, new: usize) -> Result<(), ApiError> {
        let Some(limit) = self.limit.filter(|_| !caller.is_admin()) else { return Ok(()) };
        let cached = self.counts.lock().expect("task counts").get(&caller.user_id).copied();
        let counted = match cached {
            Some((at, _)) if at.elapsed() < RECOUNT_EVERY => None,
            _ => Some(self.count(caller.user_id, limit).await?),
        };
        let mut counts = self.counts.lock().expect("task counts");
        if let Some(n) = counted {
            if counts.len() >= MAX_COUNTED_USERS {
                counts.retain(|_, (at, _)| at.elapsed() < RECOUNT_EVERY);
            }
            counts.insert(caller.user_id, (Instant::now(), n));
        }
        let unfinished = &mut counts.entry(caller.user_id).or_insert((Instant::now(), 0)).1;
        if *unfinished + new as i64 > i64::from(limit) {
            return Err(ApiError::TooManyTasks { limit });
        }
        *unfinished += new as i64;
        Ok(())
    }

    /// The user's unfinished tasks, counted up to just past `limit`.
    async fn count(&self, user: i64, limit: u32) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT 1 FROM tasks WHERE owner_id = $1 AND status IN ('pending', 'running')
                                   LIMIT $2) unfinished",
        )
        .bind(user)
        .bind(i64::from(limit) + 1)
        .fetch_one(&self.db)
        .await
    }
}
