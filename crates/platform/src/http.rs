//! What every FlowForge HTTP server shares: the probes and metrics routes, and serving
//! with podinfo's shutdown order (not ready → wait for load balancers → drain → close),
//! bounded by a deadline so one slow client cannot hold a stopping replica forever.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Whether a service can take work now; `Err` says why not (logged, and in the body).
pub type ReadinessCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// The probe routes of a service: `/health` (liveness: answering is the signal),
/// `/ready` (not draining, and the service's own check) and `/metrics` when it has a
/// registry.
#[derive(Clone, Default)]
pub struct Probes {
    metrics: Option<prometheus::Registry>,
    ready: Option<ReadinessCheck>,
    draining: CancellationToken,
}

impl Probes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `/metrics` from `registry`.
    pub fn metrics(mut self, registry: prometheus::Registry) -> Self {
        self.metrics = Some(registry);
        self
    }

    /// Serves `/ready`: 503 once `draining` is cancelled or while `check` fails.
    pub fn ready(mut self, draining: CancellationToken, check: ReadinessCheck) -> Self {
        self.draining = draining;
        self.ready = Some(check);
        self
    }

    pub fn router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        let mut router = Router::new().route("/health", get(|| async { Json(json!({ "status": "healthy" })) }));
        if let Some(registry) = self.metrics.clone() {
            router = router.route("/metrics", get(move || std::future::ready(metrics_response(&registry))));
        }
        if self.ready.is_some() {
            router = router.route("/ready", get(ready).with_state(self));
        }
        router
    }
}

/// Whether PostgreSQL answers a query within a second: what every probe asks of it.
pub async fn database_answers(pool: &sqlx::PgPool) -> bool {
    matches!(tokio::time::timeout(Duration::from_secs(1), sqlx::query("SELECT 1").execute(pool)).await, Ok(Ok(_)))
}

/// A readiness check that PostgreSQL answers ([`database_answers`]).
pub fn database_ready(pool: sqlx::PgPool) -> ReadinessCheck {
    Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move {
            if database_answers(&pool).await {
                Ok(())
            } else {
                Err("database unreachable".into())
            }
        })
    })
}

async fn ready(State(probes): State<Probes>) -> Response {
    if probes.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "draining" }))).into_response();
    }
    let check = probes.ready.as_ref().expect("routed only with a check");
    match check().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable", "reason": reason })))
                .into_response()
        }
    }
}

/// `registry` in Prometheus' text format.
pub fn metrics_response(registry: &prometheus::Registry) -> Response {
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], crate::metrics::render(registry)).into_response()
}

/// How a server stops once told to.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    /// Cancelled when the stop begins: `/ready` fails from then on.
    pub draining: CancellationToken,
    /// How long to keep serving while load balancers notice.
    pub delay: Duration,
    /// How long requests in flight (and open streams) may take after that. Then `serve`
    /// returns, and what is still open ends with the process.
    pub deadline: Duration,
}

/// Serves `app` until `stop` resolves, then drains as `drain` says. Handlers see the
/// client's address through `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    stop: impl Future<Output = ()> + Send + 'static,
    drain: Drain,
) -> std::io::Result<()> {
    let closing = CancellationToken::new();
    let Drain { draining, delay, deadline } = drain;
    let graceful = {
        let closing = closing.clone();
        async move {
            stop.await;
            draining.cancel();
            tracing::info!(?delay, ?deadline, "draining: /ready now fails; closing after the delay");
            tokio::time::sleep(delay).await;
            closing.cancel();
        }
    };
    let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(graceful)
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result,
        _ = async { closing.cancelled().await; tokio::time::sleep(deadline).await } => {
            tracing::warn!(?deadline, "drain deadline passed: closing the connections still open");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start(
        app: Router,
        drain: Drain,
    ) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<std::io::Result<()>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, app, stop.clone().cancelled_owned(), drain));
        (addr, stop, server)
    }

    #[tokio::test]
    async fn probes_answer_and_ready_fails_while_draining() {
        let registry = prometheus::Registry::new();
        let counter = prometheus::IntCounter::new("probe_test_total", "a counter").unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.inc();
        let draining = CancellationToken::new();
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = healthy.clone();
        let check: ReadinessCheck = Arc::new(move || {
            let ok = flag.load(std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                if ok {
                    Ok(())
                } else {
                    Err("backend down".into())
                }
            })
        });
        let app = Probes::new().metrics(registry).ready(draining.clone(), check).router();
        let drain =
            Drain { draining: draining.clone(), delay: Duration::from_millis(300), deadline: Duration::from_secs(1) };
        let (addr, stop, server) = start(app, drain).await;
        let get = |path: &'static str| async move {
            let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        };
        assert_eq!(get("/health").await.0, 200);
        assert!(get("/metrics").await.1.contains("probe_test_total 1"));
        assert_eq!(get("/ready").await.0, 200);
        healthy.store(false, std::sync::atomic::Ordering::SeqCst);
        let (status, body) = get("/ready").await;
        assert_eq!((status, body.contains("backend down")), (503, true));
        healthy.store(true, std::sync::atomic::Ordering::SeqCst);
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, body) = get("/ready").await;
        assert_eq!((status, body.contains("draining")), (503, true), "not ready during the delay, still answering");
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_request_that_outlives_the_deadline_does_not_hold_the_stop() {
        let app = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        );
        let drain =
            Drain { draining: CancellationToken::new(), delay: Duration::ZERO, deadline: Duration::from_millis(500) };
        let (addr, stop, server) = start(app, drain).await;
        let slow = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        stop.cancel();
        server.await.unwrap().unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(5), "stopped after {took:?}");
        assert!(!slow.is_finished(), "the slow request was still running: it did not hold the stop");
        slow.abort();
    }
}
