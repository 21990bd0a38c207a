//! The worker's side HTTP server (metrics and probes) and the client of its `/health`
//! used as the container's health check.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct AppState {
    pool: PgPool,
    metrics: prometheus::Registry,
    /// Cancelled when the worker starts draining; from then on it is not ready.
    shutdown: CancellationToken,
}

pub(crate) fn router(pool: PgPool, metrics: prometheus::Registry, shutdown: CancellationToken) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(AppState { pool, metrics, shutdown })
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, flowforge_platform::metrics::CONTENT_TYPE)],
        flowforge_platform::metrics::render(&state.metrics),
    )
}

/// Liveness: answering at all is the signal.
async fn health() -> impl IntoResponse {
    Json(json!({ "status": "healthy" }))
}

/// Readiness: the database answers and the worker is not draining.
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "draining" })));
    }
    match sqlx::query("SELECT 1").execute(&state.pool).await {
        Ok(_) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "reason": "database unreachable" })),
            )
        }
    }
}

/// `GET /health` of the worker serving on `metrics_addr`, over plain HTTP/1.0 so the
/// check needs nothing but the binary (the image has no shell or curl). A wildcard
/// listen address is probed on loopback.
pub fn probe_health(metrics_addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let ip = match metrics_addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let addr = SocketAddr::new(ip, metrics_addr.port());
    let fail = |e: std::io::Error| format!("GET http://{addr}/health: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(fail)?;
    stream.set_read_timeout(Some(timeout)).map_err(fail)?;
    stream.set_write_timeout(Some(timeout)).map_err(fail)?;
    write!(stream, "GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(fail)?;
    let mut status_line = String::new();
    BufReader::new(stream).read_line(&mut status_line).map_err(fail)?;
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!("GET http://{addr}/health answered {:?}", status_line.trim_end())),
    }
}
