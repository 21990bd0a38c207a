//! Building and running the service (zero2prod's `Application`), with podinfo's shutdown
//! order: report not-ready, wait for load balancers to notice, drain requests, close.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use flowforge_platform::http::{Drain, Listener};

use crate::audit::RefusalTally;
use crate::config::ApiSettings;
use crate::routes;
use crate::state::AppState;

pub struct Application {
    listener: Listener,
    state: AppState,
}

impl Application {
    /// Binds the listen address (port 0 picks a free port) and prepares the state. The
    /// database pool connects lazily, so the service starts (not ready) before PostgreSQL.
    pub async fn build(settings: ApiSettings) -> anyhow::Result<Application> {
        let db = settings.database.pool("flowforge-api")?;
        let listener = Listener::bind(settings.listen, settings.tls.as_ref()).await?;
        let state = AppState::new(db, settings)?;
        Ok(Application { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let state = self.state.clone();
        let app = routes::router(self.state.clone());
        tracing::info!(addr = %self.local_addr(), tls = self.listener.is_tls(), profile = %state.settings.profile, "api listening");
        let housekeeping = tokio::spawn(housekeeping(state.clone()));
        let cache_recovery = tokio::spawn(settle_cache(state.clone()));
        let rate_limits = tokio::spawn(state.limiter.clone().keep_synced());
        let auth_failures = tokio::spawn(state.auth_failures.clone().keep_synced());
        let proxies = tokio::spawn(state.settings.trusted_proxies.clone().keep_resolved());
        let refusals = tokio::spawn(RefusalTally::keep_writing(state.clone()));
        let depth_stop = tokio_util::sync::CancellationToken::new();
        let feed = tokio::spawn(state.feed.clone().run(state.queue.clone(), depth_stop.clone()));
        let depth = tokio::spawn(state.metrics.depth.clone().refresh(
            state.queue.clone(),
            QUEUE_DEPTH_EVERY,
            depth_stop.clone(),
        ));
        let drain = Drain {
            draining: state.draining_token(),
            delay: state.settings.shutdown_delay,
            deadline: state.settings.shutdown_timeout,
        };
        let result = flowforge_platform::http::serve(self.listener, app, shutdown, drain).await;
        housekeeping.abort();
        cache_recovery.abort();
        for task in [rate_limits, auth_failures, proxies, refusals] {
            task.abort();
        }
        state.refusals.write(&state.db).await;
        depth_stop.cancel();
        let _ = tokio::join!(depth, feed);
        state.db.close().await;
        tracing::info!("api stopped");
        result
    }
}

/// How often the queue-depth gauges are read from the database.
const QUEUE_DEPTH_EVERY: Duration = Duration::from_secs(5);

/// How often expired idempotency keys and old audit records are deleted. Every replica
/// runs it; the deletes are idempotent.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(3600);

async fn housekeeping(state: AppState) {
    let settings = &state.settings;
    loop {
        let keys = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)")
            .bind(settings.idempotency_key_ttl.as_secs_f64())
            .execute(&state.db)
            .await;
        // The app may not delete audit records itself: only expired ones, through the
        // function the migration gives it.
        let audit = sqlx::query_scalar::<_, i64>("SELECT purge_audit_log(make_interval(secs => $1))")
            .bind(settings.audit_retention.as_secs_f64())
            .fetch_one(&state.db)
            .await;
        match (keys, audit) {
            (Ok(k), Ok(a)) if k.rows_affected() > 0 || a > 0 => {
                tracing::info!(idempotency_keys = k.rows_affected(), audit_records = a, "housekeeping")
            }
            (Ok(_), Ok(_)) => {}
            (Err(e), _) | (_, Err(e)) => tracing::warn!(error = %e, "housekeeping failed"),
        }
        tokio::time::sleep(HOUSEKEEPING_EVERY).await;
    }
}

/// Writes invalidations missed while Redis was unreachable as soon as it is back, even
/// when no request comes along to do it.
async fn settle_cache(state: AppState) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        state.cache.settle().await;
    }
}
