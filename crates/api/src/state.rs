use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use flowforge_queue::Queue;
use sqlx::PgPool;

use crate::cache::TaskCache;
use crate::config::ApiSettings;
use crate::metrics::ApiMetrics;
use crate::rate_limit::RateLimiter;
use crate::redis::Redis;

/// Everything a handler may need, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub queue: Queue,
    pub redis: Redis,
    pub cache: TaskCache,
    pub limiter: RateLimiter,
    pub metrics: Arc<ApiMetrics>,
    pub settings: Arc<ApiSettings>,
    draining: Arc<AtomicBool>,
}

impl AppState {
    pub fn new(db: PgPool, settings: ApiSettings) -> anyhow::Result<Self> {
        let metrics = Arc::new(ApiMetrics::new()?);
        let redis = Redis::new(
            settings.redis_url.expose(),
            &settings.redis_key_prefix,
            settings.redis_timeout,
            metrics.clone(),
        )?;
        Ok(AppState {
            queue: Queue::new(db.clone()),
            cache: TaskCache::new(redis.clone(), settings.cache_ttl, metrics.clone()),
            limiter: RateLimiter::new(redis.clone(), settings.rate_limit_per_minute),
            redis,
            db,
            metrics,
            settings: Arc::new(settings),
            draining: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}
