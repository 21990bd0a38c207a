//! Read-through cache of finished tasks in Redis.
//!
//! Only tasks in a final state (completed, failed, cancelled) are cached: workers never
//! change those (retention deletes them once old, see docs/architecture.md), so the API
//! sees every write that must invalidate them. Invalidation writes a short-lived tombstone
//! instead of deleting, and fills use `SET NX`, so a read that raced a write cannot put the
//! old version back. An invalidation that cannot reach Redis is remembered and written as
//! soon as Redis answers again (on the next request or within a second); until then this
//! replica reads around the cache. Past a bound, remembered ids give way to emptying the
//! whole task cache.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowforge_queue::Task;
use redis::AsyncCommands;

use crate::metrics::ApiMetrics;
use crate::redis::Redis;

const TOMBSTONE: &str = "-";
/// Long enough to cover any read that started before the write (reads slower than
/// [`MAX_FILL_AGE`] never fill).
const TOMBSTONE_TTL: Duration = Duration::from_secs(5);
const MAX_FILL_AGE: Duration = Duration::from_secs(1);
/// Most missed invalidations remembered one by one.
const MAX_PENDING: usize = 10_000;

/// Invalidations that did not reach Redis yet.
#[derive(Default)]
struct Missed {
    ids: HashSet<i64>,
    /// More were missed than remembered: empty the whole task cache.
    overflow: bool,
}

impl Missed {
    fn is_empty(&self) -> bool {
        self.ids.is_empty() && !self.overflow
    }
}

#[derive(Clone)]
pub struct TaskCache {
    redis: Redis,
    ttl: Duration,
    missed: Arc<Mutex<Missed>>,
    metrics: Arc<ApiMetrics>,
}

impl TaskCache {
    pub fn new(redis: Redis, ttl: Duration, metrics: Arc<ApiMetrics>) -> Self {
        TaskCache { redis, ttl, missed: Arc::default(), metrics }
    }

    fn key(&self, id: i64) -> String {
        self.redis.key(format_args!("task:{id}"))
    }

    fn count(&self, result: &str) {
        self.metrics.cache_requests.with_label_values(&[result]).inc();
    }

    /// The cached task, if there is a trustworthy entry.
    pub async fn get(&self, id: i64) -> Option<Task> {
        if !self.settle().await {
            self.count("bypass");
            return None;
        }
        let key = self.key(id);
        match self.redis.run(|mut c| async move { c.get::<_, Option<String>>(key).await }).await {
            Ok(Some(text)) if text != TOMBSTONE => match serde_json::from_str(&text) {
                Ok(task) => {
                    self.count("hit");
                    Some(task)
                }
                Err(_) => {
                    self.count("miss");
                    None
                }
            },
            Ok(_) => {
                self.count("miss");
                None
            }
            Err(_) => {
                self.count("error");
                None
            }
        }
    }

    /// Caches `task` if it is final and was read from the database less than a second ago.
    pub async fn fill(&self, task: &Task, read_started: Instant) {
        if !task.status.is_terminal() || read_started.elapsed() > MAX_FILL_AGE || !self.missed_nothing() {
            return;
        }
        let Ok(text) = serde_json::to_string(task) else { return };
        let key = self.key(task.id);
        let ttl_ms = self.ttl.as_millis() as u64;
        let _ = self
            .redis
            .run(|mut c| async move {
                redis::cmd("SET").arg(key).arg(text).arg("NX").arg("PX").arg(ttl_ms).query_async::<()>(&mut c).await
            })
            .await;
    }

    /// Must be called after every committed change to a task the API makes.
    pub async fn invalidate(&self, id: i64) {
        if self.tombstone(vec![id]).await.is_err() {
            let mut missed = self.missed.lock().expect("missed invalidations");
            if missed.ids.len() < MAX_PENDING {
                missed.ids.insert(id);
            } else {
                missed.overflow = true;
            }
        }
    }

    fn missed_nothing(&self) -> bool {
        self.missed.lock().expect("missed invalidations").is_empty()
    }

    async fn tombstone(&self, ids: Vec<i64>) -> Result<(), crate::redis::Unavailable> {
        let keys: Vec<String> = ids.iter().map(|id| self.key(*id)).collect();
        let ttl_ms = TOMBSTONE_TTL.as_millis() as u64;
        self.redis
            .run(|mut c| async move {
                let mut pipe = redis::pipe();
                for key in keys {
                    pipe.cmd("SET").arg(key).arg(TOMBSTONE).arg("PX").arg(ttl_ms).ignore();
                }
                pipe.query_async::<()>(&mut c).await
            })
            .await
    }

    /// Writes missed invalidations if Redis answers; true when none is left, i.e. when
    /// this replica may trust the cache again. Also called every second in the background.
    pub async fn settle(&self) -> bool {
        let (ids, overflow) = {
            let missed = self.missed.lock().expect("missed invalidations");
            if missed.is_empty() {
                return true;
            }
            (missed.ids.iter().copied().collect::<Vec<_>>(), missed.overflow)
        };
        let written = if overflow { self.empty().await } else { self.tombstone(ids.clone()).await };
        if written.is_err() {
            return false;
        }
        let mut missed = self.missed.lock().expect("missed invalidations");
        ids.iter().for_each(|id| {
            missed.ids.remove(id);
        });
        if overflow {
            missed.overflow = false;
        }
        tracing::info!(invalidations = ids.len(), overflow, "missed cache invalidations written");
        missed.is_empty()
    }

    /// Empties the whole task cache (after more missed invalidations than remembered).
    async fn empty(&self) -> Result<(), crate::redis::Unavailable> {
        let pattern = self.redis.key("task:*");
        self.redis
            .run(|mut c| async move {
                let mut cursor: u64 = 0;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut c)
                        .await?;
                    if !keys.is_empty() {
                        redis::cmd("UNLINK").arg(keys).query_async::<()>(&mut c).await?;
                    }
                    if next == 0 {
                        return Ok(());
                    }
                    cursor = next;
                }
            })
            .await
    }
}
