//! The api service's settings (all `FLOWFORGE_*`, see docs/configuration.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flowforge_platform::config::{ConfigError, Profile, Secret, Source};
use flowforge_platform::db::DatabaseSettings;
use flowforge_platform::telemetry::TelemetrySettings;
use flowforge_platform::tls::ServerTls;
use flowforge_webhooks::DeploymentKeySettings;

use flowforge_accounts::TokenTtl;

use crate::client_addr::TrustedProxies;

#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub profile: Profile,
    pub listen: SocketAddr,
    /// HTTPS with this certificate (the hop from the proxy); plain HTTP without one.
    pub tls: Option<ServerTls>,
    pub database: DatabaseSettings,
    pub telemetry: TelemetrySettings,
    pub redis_url: Secret,
    /// The CA (PEM) a `rediss://` server's certificate must be signed by; none: the
    /// system's roots.
    pub redis_ca: Option<String>,
    /// Prefix of every Redis key, so several deployments (or tests) can share a server.
    pub redis_key_prefix: String,
    /// How long a Redis command may take before the API carries on without it.
    pub redis_timeout: Duration,
    pub cache_ttl: Duration,
    /// How long a replica trusts a token it has checked (0: check every request).
    pub auth_cache_ttl: Duration,
    /// Requests per minute per user; 0 turns rate limiting off.
    pub rate_limit_per_minute: u32,
    /// State-changing requests a replica runs at once; more wait their turn.
    pub write_concurrency: usize,
    /// How long a state-changing request waits for its turn before it is refused with
    /// 429 (`overloaded`).
    pub write_queue_timeout: Duration,
    /// Refused credentials (and sign-ins) per client address per minute; past it, that
    /// address gets 429 before any lookup. 0 turns the limit off.
    pub auth_failures_per_minute: u32,
    /// Peers whose `X-Forwarded-For` names the client (see [`TrustedProxies`]).
    pub trusted_proxies: Arc<TrustedProxies>,
    /// After SIGTERM: how long to report not-ready before closing, so load balancers
    /// stop sending traffic first.
    pub shutdown_delay: Duration,
    /// After the delay: how long requests in flight and open event streams may go on
    /// before the replica closes them and exits.
    pub shutdown_timeout: Duration,
    /// Longest a request may take to produce its response; past it, 503 `timeout`.
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    pub bulk_max_tasks: usize,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_key_ttl: Duration,
    /// How long audit records are kept.
    pub audit_retention: Duration,
    /// How long a new API token works (None: until revoked); also the longest a caller
    /// may ask for.
    pub token_ttl: Option<Duration>,
    /// Working tokens a user may hold at once.
    pub max_tokens_per_user: i64,
    /// Unfinished (pending or running) tasks a user other than an admin may have; `None`:
    /// no cap.
    pub user_max_unfinished_tasks: Option<u32>,
    /// The highest priority a user other than an admin may give a task.
    pub user_max_priority: i32,
    /// Event streams open at once on a replica, and per user on a replica.
    pub max_streams: usize,
    pub max_streams_per_user: usize,
    /// How long a web UI session lasts after signing in.
    pub session_ttl: Duration,
    /// The deployment key that seals each user's webhook signing secret.
    pub webhook_keys: DeploymentKeySettings,
    /// Prometheus (with any route prefix), read by the operations view; none turns it off.
    pub prometheus_url: Option<String>,
    /// Accept the failure-testing kinds (`panic`, `fill_scratch`); set it where the
    /// workers register their handlers.
    pub chaos_kinds: bool,
}

impl ApiSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(Source::from_env())
    }

    pub fn from_source(mut s: Source) -> Result<Self, ConfigError> {
        let profile = s.profile();
        let listen = s.parse_or("API_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080)));
        let tls = ServerTls::from_source(&mut s);
        let database = DatabaseSettings::from_source(&mut s, 20);
        let telemetry = TelemetrySettings::from_source(&mut s);
        let redis_url = s.parse_dev_default("REDIS_URL", "Redis URL for cache and rate limits", || {
            Secret::new("redis://127.0.0.1:6379")
        });
        let redis_ca = s.optional("REDIS_CA");
        let redis_key_prefix = s.parse_or("REDIS_KEY_PREFIX", "ff:".to_string());
        let redis_timeout = s.duration_or("REDIS_TIMEOUT", Duration::from_millis(250));
        let cache_ttl = s.duration_or("CACHE_TTL", Duration::from_secs(60));
        let auth_cache_ttl = s.duration_or("AUTH_CACHE_TTL", Duration::from_secs(5));
        let rate_limit_per_minute = s.parse_or("RATE_LIMIT_PER_MINUTE", 1200u32);
        // One turn per pooled connection: short stalls (a migration's lock, a failover) are
        // waited out rather than refused. Fewer turns answer bursts faster (docs/benchmarks.md).
        let pool_size = database.as_ref().map_or(1, |d| d.max_connections as usize);
        let write_concurrency = s.parse_or("WRITE_CONCURRENCY", pool_size);
        let write_queue_timeout = s.duration_or("WRITE_QUEUE_TIMEOUT", Duration::from_millis(100));
        let auth_failures_per_minute = s.parse_or("AUTH_FAILURES_PER_MINUTE", 30u32);
        let trusted_proxies = match TrustedProxies::parse(&s.parse_or("TRUSTED_PROXIES", String::new())) {
            Ok(p) => p,
            Err(e) => {
                s.problem(format!("FLOWFORGE_TRUSTED_PROXIES: {e}"));
                TrustedProxies::default()
            }
        };
        let default_delay = if profile.is_dev() { Duration::ZERO } else { Duration::from_secs(5) };
        let shutdown_delay = s.duration_or("SHUTDOWN_DELAY", default_delay);
        let shutdown_timeout = s.duration_or("SHUTDOWN_TIMEOUT", Duration::from_secs(10));
        let request_timeout = s.duration_or("REQUEST_TIMEOUT", Duration::from_secs(30));
        if request_timeout < Duration::from_secs(1) {
            s.problem("FLOWFORGE_REQUEST_TIMEOUT must be at least 1s");
        }
        let max_body_bytes = s.parse_or("MAX_BODY_BYTES", 1024 * 1024usize);
        let bulk_max_tasks = s.parse_or("BULK_MAX_TASKS", 1000usize);
        let idempotency_key_ttl = s.duration_or("IDEMPOTENCY_KEY_TTL", Duration::from_secs(24 * 3600));
        let audit_retention = s.duration_or("AUDIT_RETENTION", Duration::from_secs(90 * 24 * 3600));
        let session_ttl = s.duration_or("SESSION_TTL", Duration::from_secs(8 * 3600));
        let token_ttl = s.parse_or("TOKEN_TTL", TokenTtl(Some(Duration::from_secs(90 * 24 * 3600)))).0;
        if token_ttl.is_some_and(|t| t < Duration::from_secs(60)) {
            s.problem("FLOWFORGE_TOKEN_TTL must be at least 1m, or never");
        }
        let max_tokens_per_user = s.parse_or("MAX_TOKENS_PER_USER", 20i64);
        let user_max_unfinished_tasks = Some(s.parse_or("USER_MAX_UNFINISHED_TASKS", 10_000u32)).filter(|&n| n > 0);
        let user_max_priority = s.parse_or("USER_MAX_PRIORITY", 10i32);
        // At least the default priority (0), which every task without one gets.
        if !(0..=*crate::requests::PRIORITY_RANGE.end()).contains(&user_max_priority) {
            s.problem("FLOWFORGE_USER_MAX_PRIORITY must be between 0 and 100");
        }
        let max_streams = s.parse_or("MAX_STREAMS", 1000usize);
        let max_streams_per_user = s.parse_or("MAX_STREAMS_PER_USER", 10usize);
        if max_tokens_per_user < 1 {
            s.problem("FLOWFORGE_MAX_TOKENS_PER_USER must be at least 1");
        }
        let webhook_keys = DeploymentKeySettings::from_source(&mut s);
        let chaos_kinds = s.parse_or("CHAOS_HANDLERS", false);
        let prometheus_url = s.optional("PROMETHEUS_URL");
        if prometheus_url.as_deref().is_some_and(|u| !u.starts_with("http://") && !u.starts_with("https://")) {
            s.problem("FLOWFORGE_PROMETHEUS_URL must be an http:// or https:// URL");
        }
        if session_ttl < Duration::from_secs(60) {
            s.problem("FLOWFORGE_SESSION_TTL must be at least 1m");
        }
        if max_body_bytes < 1024 {
            s.problem("FLOWFORGE_MAX_BODY_BYTES must be at least 1024");
        }
        if write_concurrency == 0 {
            s.problem("FLOWFORGE_WRITE_CONCURRENCY must be at least 1");
        }
        if bulk_max_tasks == 0 {
            s.problem("FLOWFORGE_BULK_MAX_TASKS must be at least 1");
        }
        if let Some(url) = &redis_url {
            // Neither message repeats the URL: it holds the password.
            match crate::redis::client(url.expose(), redis_ca.as_deref()) {
                Ok(_) => {}
                Err(_) if redis::Client::open(url.expose()).is_err() => {
                    s.problem("FLOWFORGE_REDIS_URL is not a valid Redis URL")
                }
                Err(e) => s.problem(format!("FLOWFORGE_REDIS_CA: {e}")),
            }
        }
        s.finish()?;
        Ok(ApiSettings {
            profile,
            listen,
            tls,
            database: database.expect("checked by finish"),
            telemetry,
            redis_url: redis_url.expect("checked by finish"),
            redis_ca,
            redis_key_prefix,
            redis_timeout,
            cache_ttl,
            auth_cache_ttl,
            rate_limit_per_minute,
            write_concurrency,
            write_queue_timeout,
            auth_failures_per_minute,
            trusted_proxies: Arc::new(trusted_proxies),
            shutdown_delay,
            shutdown_timeout,
            request_timeout,
            max_body_bytes,
            bulk_max_tasks,
            idempotency_key_ttl,
            audit_retention,
            session_ttl,
            token_ttl,
            max_tokens_per_user,
            user_max_unfinished_tasks,
            user_max_priority,
            max_streams,
            max_streams_per_user,
            webhook_keys: webhook_keys.expect("checked by finish"),
            prometheus_url,
            chaos_kinds,
        })
    }
}
