//! The worker's side HTTP server: metrics and probes.

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
