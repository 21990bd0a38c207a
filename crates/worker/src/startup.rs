//! Wiring: pool, metrics, handlers, the queue runtime and the side HTTP server.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use flowforge_platform::http::Drain;
use flowforge_platform::http::Listener;
use flowforge_queue::{Queue, QueueMetrics, Worker};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::WorkerSettings;
use crate::handlers;
use crate::server;

/// A worker process, built and bound but not yet running.
pub struct WorkerApp {
    worker: Worker,
    pool: PgPool,
    metrics: prometheus::Registry,
    listener: Listener,
    metrics_addr: SocketAddr,
}

impl WorkerApp {
    /// Binds the metrics address (port 0 picks a free one). The database is connected
    /// lazily: the process starts, and reports not-ready, while PostgreSQL comes up.
    pub async fn build(settings: WorkerSettings) -> anyhow::Result<Self> {
        let pool = settings.database.pool("flowforge-worker")?;
        let metrics = prometheus::Registry::new();
        let queue_metrics = QueueMetrics::new(&metrics).context("registering queue metrics")?;
        let registry = handlers::registry(&settings.handlers, pool.clone());
        let listener = Listener::bind(settings.metrics_addr, None)
            .await
            .with_context(|| format!("binding the metrics address {}", settings.metrics_addr))?;
        let metrics_addr = listener.local_addr();
        let mut kinds: Vec<&str> = registry.kinds().collect();
        kinds.sort_unstable();
        // Two keys mean a rotation of the deployment's webhook key is under way (operators
        // check that it ends).
        tracing::info!(worker_id = %settings.runtime.id, ?kinds, %metrics_addr, profile = %settings.profile,
                       webhook_secrets_keys = settings.handlers.webhook.deployment_keys().count(), "worker starting");
        let worker = Worker::new(Queue::new(pool.clone()), registry, settings.runtime, queue_metrics);
        Ok(WorkerApp { worker, pool, metrics, listener, metrics_addr })
    }

    /// Where `/metrics`, `/health` and `/ready` are served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Runs until `shutdown` is cancelled, then: `/ready` turns 503 at once (the same
    /// token), the queue runtime drains, and the HTTP server stops last so probes and a
    /// final metrics scrape see the drain.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let server_stop = CancellationToken::new();
        let router = server::router(self.pool, self.metrics, shutdown.clone());
        let stopped = server_stop.clone().cancelled_owned();
        // Probes and scrapes are quick: a second is plenty once the queue has drained.
        let drain = Drain { deadline: Duration::from_secs(1), ..Drain::default() };
        let server = tokio::spawn(flowforge_platform::http::serve(self.listener, router, stopped, drain));
        self.worker.run(shutdown).await;
        server_stop.cancel();
        server.await.context("metrics server task")?.context("metrics server")
    }
}
