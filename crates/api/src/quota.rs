//! A cap on each user's unfinished tasks (pending or running,
//! `FLOWFORGE_USER_MAX_UNFINISHED_TASKS`): one user's backlog cannot grow without bound
//! in the queue everybody shares. Admins, who run the deployment, are not capped. Each
//! replica counts a user's unfinished tasks in the database at most once per
//! [`RECOUNT_EVERY`] and adds what it admitted since; so the cap can be passed by what the
//! other replicas admitted within that time, and by creations that were still on their
//! way to a commit when the count was taken (at most the replica's write turns).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flowforge_queue::Queue;
use sqlx::PgExecutor;

use crate::accounts::Caller;
use crate::error::ApiError;

/// How long a replica trusts its count of a user's unfinished tasks.
pub const RECOUNT_EVERY: Duration = Duration::from_secs(1);
/// Users whose counts are kept; past it, stale counts are dropped.
const MAX_COUNTED_USERS: usize = 10_000;

pub struct TaskQuota {
    /// `None`: no cap.
    limit: Option<u32>,
    counts: Mutex<HashMap<i64, (Instant, i64)>>,
}

impl TaskQuota {
    pub fn new(limit: Option<u32>) -> Self {
        TaskQuota { limit, counts: Mutex::default() }
    }

    /// Admits `new` more tasks for the caller, or refuses them all with 429
    /// `too_many_tasks`. `db` counts when this replica's count is stale: the caller's
    /// transaction if it holds one, so that a request never waits for a second connection.
    pub async fn admit<'c>(&self, db: impl PgExecutor<'c>, caller: &Caller, new: usize) -> Result<(), ApiError> {
        let Some(limit) = self.limit.filter(|_| !caller.is_admin()) else { return Ok(()) };
        let cached = self.counts.lock().expect("task counts").get(&caller.user_id).copied();
        let counted = match cached {
            Some((at, _)) if at.elapsed() < RECOUNT_EVERY => None,
            _ => {
                let started = Instant::now();
                Some((started, Queue::count_unfinished(db, caller.user_id, i64::from(limit) + 1).await?))
            }
        };
        let mut counts = self.counts.lock().expect("task counts");
        if let Some((started, n)) = counted {
            if counts.len() >= MAX_COUNTED_USERS {
                counts.retain(|_, (at, _)| at.elapsed() < RECOUNT_EVERY);
            }
            // A count that started before another request's finished is older than it:
            // keep the newer one, with what was admitted since.
            match counts.get(&caller.user_id) {
                Some((at, _)) if *at >= started => {}
                _ => {
                    counts.insert(caller.user_id, (started, n));
                }
            }
        }
        let unfinished = &mut counts.entry(caller.user_id).or_insert((Instant::now(), 0)).1;
        if *unfinished + new as i64 > i64::from(limit) {
            return Err(ApiError::TooManyTasks { limit });
        }
        *unfinished += new as i64;
        Ok(())
    }
}
