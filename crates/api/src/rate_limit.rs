//! Fixed-window rate limit per user, counted in Redis so every api replica shares it.
//! Without Redis the limit is not enforced (fail open): availability over strictness,
//! and the `redis_errors_total` metric makes the degradation visible.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::redis::Redis;

const WINDOW_SECS: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed {
        limit: u32,
        remaining: u32,
        reset_secs: u64,
    },
    Limited {
        limit: u32,
        retry_after: u64,
    },
    /// Limits off, or Redis unreachable.
    Unchecked,
}

#[derive(Clone)]
pub struct RateLimiter {
    redis: Redis,
    per_minute: u32,
}

impl RateLimiter {
    pub fn new(redis: Redis, per_minute: u32) -> Self {
        RateLimiter { redis, per_minute }
    }

    pub async fn check(&self, subject: &str) -> Decision {
        if self.per_minute == 0 {
            return Decision::Unchecked;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let window = now / WINDOW_SECS;
        let reset_secs = WINDOW_SECS - now % WINDOW_SECS;
        let key = self.redis.key(format_args!("rl:{subject}:{window}"));
        let count = self
            .redis
            .run(|mut c| async move {
                let (count,): (u64,) = redis::pipe()
                    .atomic()
                    .incr(&key, 1u64)
                    .expire(&key, (WINDOW_SECS + 1) as i64)
                    .ignore()
                    .query_async(&mut c)
                    .await?;
                Ok(count)
            })
            .await;
        let limit = self.per_minute;
        match count {
            Err(_) => Decision::Unchecked,
            Ok(n) if n > u64::from(limit) => Decision::Limited { limit, retry_after: reset_secs },
            Ok(n) => Decision::Allowed { limit, remaining: limit - n as u32, reset_secs },
        }
    }
}
