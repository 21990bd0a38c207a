use flowforge_queue::DepthGauges;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The api service's Prometheus metrics.
pub struct ApiMetrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub tasks_created: IntCounterVec,
    pub cache_requests: IntCounterVec,
    pub rate_limited: IntCounter,
    pub overloaded: IntCounter,
    pub event_streams: IntGauge,
    pub redis_errors: IntCounter,
    /// The backlog, read from the database like the workers do, so it is visible with none.
    pub depth: DepthGauges,
}

impl ApiMetrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let m = ApiMetrics {
            http_requests: IntCounterVec::new(
                Opts::new("http_requests_total", "HTTP requests by method, route and status"),
                &["method", "route", "status"],
            )?,
            http_duration: HistogramVec::new(
                HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by method, route and status")
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                &["method", "route", "status"],
            )?,
            tasks_created: IntCounterVec::new(Opts::new("tasks_created_total", "Tasks created, by kind"), &["kind"])?,
            cache_requests: IntCounterVec::new(
                Opts::new("cache_requests_total", "Task cache lookups by result (hit, miss, error, bypass)"),
                &["result"],
            )?,
            rate_limited: IntCounter::new("rate_limited_requests_total", "Requests refused by the rate limit")?,
            overloaded: IntCounter::new(
                "overloaded_requests_total",
                "Changes refused because they waited too long for their turn (FLOWFORGE_WRITE_CONCURRENCY)",
            )?,
            event_streams: IntGauge::new("event_streams", "Open server-sent event streams (web UI live updates)")?,
            redis_errors: IntCounter::new("redis_errors_total", "Redis commands that failed or timed out")?,
            depth: DepthGauges::new(&registry)?,
            registry,
        };
        m.registry.register(Box::new(m.http_requests.clone()))?;
        m.registry.register(Box::new(m.http_duration.clone()))?;
        m.registry.register(Box::new(m.tasks_created.clone()))?;
        m.registry.register(Box::new(m.cache_requests.clone()))?;
        m.registry.register(Box::new(m.rate_limited.clone()))?;
        m.registry.register(Box::new(m.overloaded.clone()))?;
        m.registry.register(Box::new(m.event_streams.clone()))?;
        m.registry.register(Box::new(m.redis_errors.clone()))?;
        Ok(m)
    }
}
