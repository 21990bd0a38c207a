//! Read-through cache of finished tasks in Redis.
//!
//! Only tasks in a final state (completed, failed, cancelled) are cached: those change
//! only through this API, never through a worker, so the API sees every write that must
//! invalidate them. Invalidation writes a short-lived tombstone instead of deleting, and
//! fills use `SET NX`, so a read that raced a write cannot put the old version back.
//! If an invalidation cannot reach Redis, the cache is marked dirty and emptied before
//! it is trusted again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

#[derive(Clone)]
pub struct TaskCache {
    redis: Redis,
    ttl: Duration,
    dirty: Arc<AtomicBool>,
    metrics: Arc<ApiMetrics>,
}

impl TaskCache {
    pub fn new(redis: Redis, ttl: Duration, metrics: Arc<ApiMetrics>) -> Self {
        TaskCache { redis, ttl, dirty: Arc::new(AtomicBool::new(false)), metrics }
    }

    fn key(&self, id: i64) -> String {
        self.redis.key(format_args!("task:{id}"))
    }

    fn count(&self, result: &str) {
        self.metrics.cache_requests.with_label_values(&[result]).inc();
    }

    /// The cached task, if there is a trustworthy entry.
    pub async fn get(&self, id: i64) -> Option<Task> {
        if !self.clean().await {
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
        if !task.status.is_terminal() || read_started.elapsed() > MAX_FILL_AGE || self.dirty.load(Ordering::Acquire) {
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
        let key = self.key(id);
        let ttl_ms = TOMBSTONE_TTL.as_millis() as u64;
        let written = self
            .redis
            .run(|mut c| async move {
                redis::cmd("SET").arg(key).arg(TOMBSTONE).arg("PX").arg(ttl_ms).query_async::<()>(&mut c).await
            })
            .await;
        if written.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// True when the cache can be trusted; empties it first if an invalidation was lost.
    async fn clean(&self) -> bool {
        if !self.dirty.load(Ordering::Acquire) {
            return true;
        }
        let pattern = self.redis.key("task:*");
        let flushed = self
            .redis
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
            .await;
        if flushed.is_ok() {
            tracing::info!("task cache emptied after missed invalidations");
            self.dirty.store(false, Ordering::Release);
        }
        flushed.is_ok()
    }
}
