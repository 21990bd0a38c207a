use std::sync::Arc;

use flowforge_kinds::Catalogue;
use flowforge_queue::Queue;
use flowforge_webhooks::SecretStore;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::accounts::TokenCache;
use crate::admission::WriteGate;
use crate::audit::RefusalTally;
use crate::cache::TaskCache;
use crate::config::ApiSettings;
use crate::creations::GroupCommit;
use crate::events::TaskFeed;
use crate::metrics::ApiMetrics;
use crate::ops::Prometheus;
use crate::quota::TaskQuota;
use crate::rate_limit::RateLimiter;
use crate::redis::Redis;
use crate::routes::live::StreamSlots;

/// Everything a handler may need. One shared allocation: every middleware layer and
/// handler takes its own clone, per request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub db: PgPool,
    pub queue: Queue,
    /// Creations without an idempotency key, committed in batches.
    pub creations: GroupCommit,
    pub redis: Redis,
    pub cache: TaskCache,
    pub limiter: RateLimiter,
    /// Refused credentials per client address.
    pub auth_failures: RateLimiter,
    pub refusals: RefusalTally,
    pub writes: WriteGate,
    pub quota: TaskQuota,
    pub tokens: Arc<TokenCache>,
    pub metrics: Arc<ApiMetrics>,
    pub feed: TaskFeed,
    pub prometheus: Prometheus,
    pub webhook_secrets: SecretStore,
    pub streams: StreamSlots,
    /// The task kinds this deployment runs.
    pub kinds: Catalogue,
    pub settings: Arc<ApiSettings>,
    draining: CancellationToken,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(db: PgPool, settings: ApiSettings) -> anyhow::Result<Self> {
        let metrics = Arc::new(ApiMetrics::new()?);
        let client = crate::redis::client(settings.redis_url.expose(), settings.redis_ca.as_deref())?;
        let redis = Redis::new(client, &settings.redis_key_prefix, settings.redis_timeout, metrics.clone());
        let queue = Queue::new(db.clone());
        Ok(AppState(Arc::new(Shared {
            creations: GroupCommit::new(db.clone(), queue.clone(), settings.database.acquire_timeout),
            queue,
            cache: TaskCache::new(redis.clone(), settings.cache_ttl, metrics.clone()),
            limiter: RateLimiter::new(redis.clone(), settings.rate_limit_per_minute),
            auth_failures: RateLimiter::new(redis.clone(), settings.auth_failures_per_minute),
            refusals: RefusalTally::default(),
            writes: WriteGate::new(settings.write_concurrency, settings.write_queue_timeout),
            quota: TaskQuota::new(settings.user_max_unfinished_tasks),
            tokens: Arc::new(TokenCache::new(settings.auth_cache_ttl)),
            feed: TaskFeed::default(),
            prometheus: Prometheus::new(settings.prometheus_url.as_deref())?,
            webhook_secrets: SecretStore::new(db.clone(), settings.webhook_keys.keys()),
            streams: StreamSlots::default(),
            kinds: Catalogue::all(settings.chaos_kinds),
            redis,
            db,
            metrics,
            settings: Arc::new(settings),
            draining: CancellationToken::new(),
        })))
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Cancelled when draining starts: long-lived responses end on it.
    pub fn draining_token(&self) -> CancellationToken {
        self.draining.clone()
    }
}
