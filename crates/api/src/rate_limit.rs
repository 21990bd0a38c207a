//! Rate limit per subject (a user, or a client address) over a sliding minute, shared by
//! every api replica through Redis without a Redis round trip per request.
//!
//! The minute slides as Cloudflare's limiter does: counts are kept per fixed minute, and
//! a request sees the current minute's count plus the previous minute's, weighted by how
//! much of it the last 60 s still cover. So a burst across a minute boundary is not
//! admitted twice over, as it would be with fixed windows.
//!
//! Each replica counts its own requests per subject and window, and every
//! [`SYNC_EVERY`] adds what it counted to the subject's counter in Redis, learning the
//! total across replicas in the same answer. A request is allowed while the last known
//! total plus what this replica counted since stays under the limit. Between two syncs
//! the replicas may together admit a few requests past the limit (what each admits in
//! 100 ms), never fewer than it. Without Redis each replica still enforces the limit on
//! its own traffic, and the `redis_errors_total` metric makes the degradation visible.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::redis::Redis;

const WINDOW_SECS: u64 = 60;
/// How often counts are exchanged with Redis.
pub const SYNC_EVERY: Duration = Duration::from_millis(100);

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
    /// Limits off.
    Unchecked,
}

/// One subject's count in the current window.
#[derive(Debug, Default, Clone, Copy)]
struct Count {
    window: u64,
    /// What the window before counted (across replicas, as last known).
    previous: u64,
    /// The total across replicas at the last sync (this replica's synced requests included).
    known_total: u64,
    /// This replica's requests not yet added to Redis.
    unsynced: u64,
}

impl Count {
    /// This count as it stands in `window`: a later window starts empty, remembering what
    /// the one just before it counted.
    fn in_window(self, window: u64) -> Count {
        if self.window == window {
            return self;
        }
        let previous = if self.window + 1 == window { self.known_total + self.unsynced } else { 0 };
        Count { window, previous, ..Count::default() }
    }
}

#[derive(Clone)]
pub struct RateLimiter {
    redis: Redis,
    per_minute: u32,
    counts: Arc<Mutex<HashMap<String, Count>>>,
}

impl RateLimiter {
    pub fn new(redis: Redis, per_minute: u32) -> Self {
        RateLimiter { redis, per_minute, counts: Arc::default() }
    }

    /// Counts this request against `subject`'s limit, unless it is used up already.
    pub fn check(&self, subject: &str) -> Decision {
        self.check_at(subject, now_secs(), true)
    }

    /// Whether `subject` has used up its limit, without counting anything (the caller
    /// counts with [`RateLimiter::count`] only what turns out to count: a refusal, say).
    pub fn exhausted(&self, subject: &str) -> Option<Decision> {
        Some(self.check_at(subject, now_secs(), false)).filter(|d| matches!(d, Decision::Limited { .. }))
    }

    /// Counts one event against `subject`'s limit.
    pub fn count(&self, subject: &str) {
        if self.per_minute > 0 {
            let window = now_secs() / WINDOW_SECS;
            self.with_count(subject, window, |c| c.unsynced += 1);
        }
    }

    fn with_count<T>(&self, subject: &str, window: u64, f: impl FnOnce(&mut Count) -> T) -> T {
        let mut counts = self.counts.lock().expect("rate limit counts");
        let count = counts.entry(subject.to_owned()).or_default();
        *count = count.in_window(window);
        f(count)
    }

    fn check_at(&self, subject: &str, now: u64, count_it: bool) -> Decision {
        if self.per_minute == 0 {
            return Decision::Unchecked;
        }
        let window = now / WINDOW_SECS;
        if !count_it {
            // A look only: every request takes one, so it neither allocates nor adds the
            // subject to the map.
            let counts = self.counts.lock().expect("rate limit counts");
            let count = counts.get(subject).map_or(Count { window, ..Count::default() }, |c| c.in_window(window));
            return self.decide(&count, now, false);
        }
        self.with_count(subject, window, |count| {
            let decision = self.decide(count, now, true);
            if matches!(decision, Decision::Allowed { .. }) {
                count.unsynced += 1;
            }
            decision
        })
    }

    /// What `count` (already in the window of `now`) allows, this request included when
    /// `counting`.
    fn decide(&self, count: &Count, now: u64, counting: bool) -> Decision {
        let reset_secs = WINDOW_SECS - now % WINDOW_SECS;
        let limit = self.per_minute;
        // The part of the previous window the last minute still covers.
        let current = count.known_total + count.unsynced;
        let seen = current + count.previous * reset_secs / WINDOW_SECS;
        if seen >= u64::from(limit) {
            // Until this window's own count has slid out of the way (at its end), or
            // enough of the previous window's has.
            let retry_after = match u64::from(limit).checked_sub(current).filter(|room| *room > 0) {
                None => reset_secs + 1,
                Some(room) => reset_secs.saturating_sub(room * WINDOW_SECS / count.previous.max(1)).max(1),
            };
            return Decision::Limited { limit, retry_after };
        }
        Decision::Allowed { limit, remaining: limit - (seen + u64::from(counting)) as u32, reset_secs }
    }

    /// Adds this replica's new requests to the shared counters and learns the totals.
    /// Counts of past windows are dropped; a failed exchange is retried next time.
    pub async fn sync(&self) {
        let window = now_secs() / WINDOW_SECS;
        let batch: Vec<(String, u64, u64)> = {
            let mut counts = self.counts.lock().expect("rate limit counts");
            // The previous window's counts still weigh on this one.
            counts.retain(|_, c| c.window + 1 >= window);
            counts.iter().filter(|(_, c)| c.unsynced > 0).map(|(s, c)| (s.clone(), c.window, c.unsynced)).collect()
        };
        if batch.is_empty() {
            return;
        }
        let keys: Vec<String> = batch.iter().map(|(s, w, _)| self.redis.key(format_args!("rl:{s}:{w}"))).collect();
        let increments: Vec<u64> = batch.iter().map(|(_, _, n)| *n).collect();
        let totals = self
            .redis
            .run(|mut c| async move {
                let mut pipe = redis::pipe();
                for (key, n) in keys.iter().zip(&increments) {
                    pipe.incr(key, *n).expire(key, (WINDOW_SECS + 1) as i64).ignore();
                }
                pipe.query_async::<Vec<u64>>(&mut c).await
            })
            .await;
        let Ok(totals) = totals else { return };
        let mut counts = self.counts.lock().expect("rate limit counts");
        for ((subject, window, sent), total) in batch.into_iter().zip(totals) {
            if let Some(c) = counts.get_mut(&subject).filter(|c| c.window == window) {
                c.unsynced -= sent;
                c.known_total = total;
            }
        }
    }

    /// Runs [`RateLimiter::sync`] every [`SYNC_EVERY`], forever.
    pub async fn keep_synced(self) {
        loop {
            tokio::time::sleep(SYNC_EVERY).await;
            self.sync().await;
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ApiMetrics;

    fn limiter(per_minute: u32) -> RateLimiter {
        // Nothing listens there: these tests never sync.
        let client = crate::redis::client("redis://127.0.0.1:1", None).unwrap();
        let redis = Redis::new(client, "t:", Duration::from_millis(10), Arc::new(ApiMetrics::new().unwrap()));
        RateLimiter::new(redis, per_minute)
    }

    #[test]
    fn allows_the_limit_per_window_then_refuses_until_the_next() {
        let l = limiter(3);
        let t = 120; // the start of a window
        for remaining in [2, 1, 0] {
            assert_eq!(l.check_at("u", t + 5, true), Decision::Allowed { limit: 3, remaining, reset_secs: 55 });
        }
        assert_eq!(l.check_at("u", t + 5, true), Decision::Limited { limit: 3, retry_after: 56 });
        assert!(matches!(l.check_at("other", t + 5, true), Decision::Allowed { remaining: 2, .. }));
        // A minute later the refused request goes through.
        assert!(matches!(l.check_at("u", t + 5 + 56, true), Decision::Allowed { .. }));
        assert!(matches!(l.check_at("u", t + 180, true), Decision::Allowed { remaining: 2, .. }));
        assert_eq!(limiter(0).check_at("u", t, true), Decision::Unchecked);
    }

    #[test]
    fn the_minute_slides_so_a_burst_across_a_boundary_is_not_admitted_twice() {
        let l = limiter(10);
        let t = 600; // the start of a window
        for _ in 0..10 {
            assert!(matches!(l.check_at("u", t + 59, true), Decision::Allowed { .. }));
        }
        // Just after the boundary the previous minute still counts almost fully...
        assert!(matches!(l.check_at("u", t + 60, true), Decision::Limited { .. }));
        // ...half of it half a minute later...
        for _ in 0..5 {
            assert!(matches!(l.check_at("u", t + 90, true), Decision::Allowed { .. }));
        }
        let Decision::Limited { retry_after, .. } = l.check_at("u", t + 90, true) else { panic!("admitted") };
        assert!((1..=31).contains(&retry_after), "{retry_after}");
        // ...and nothing once a whole minute without requests has passed.
        assert!(matches!(l.check_at("u", t + 180, true), Decision::Allowed { remaining: 9, .. }));
    }

    #[test]
    fn what_other_replicas_counted_counts_here() {
        let l = limiter(10);
        let t = 600;
        l.check_at("u", t, true);
        // As a sync would leave it: 8 seen across the replicas, none unsent.
        l.counts
            .lock()
            .unwrap()
            .insert("u".into(), Count { window: t / WINDOW_SECS, previous: 0, known_total: 8, unsynced: 0 });
        assert!(matches!(l.check_at("u", t, true), Decision::Allowed { remaining: 1, .. }));
        assert!(matches!(l.check_at("u", t, true), Decision::Allowed { remaining: 0, .. }));
        assert!(matches!(l.check_at("u", t, true), Decision::Limited { .. }));
    }
}
