//! Probes and metrics. `/health` is liveness (the process answers; the body also says
//! whether the database is reachable, as the original contract expects), `/ready` is
//! readiness (database reachable and not draining): load balancers route on `/ready`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use flowforge_platform::http::database_answers;
use serde_json::json;

use crate::state::AppState;

/// Liveness: always 200 while the process runs.
#[utoipa::path(get, path = "/health", tag = "probes",
    responses((status = 200, description = "`{\"status\":\"healthy\",\"database\":\"connected\"}` (or degraded/disconnected)")))]
pub async fn health(State(state): State<AppState>) -> Response {
    let body = if database_answers(&state.db).await {
        json!({ "status": "healthy", "database": "connected" })
    } else {
        json!({ "status": "degraded", "database": "disconnected" })
    };
    Json(body).into_response()
}

/// Readiness: 200 only when this replica should receive traffic.
#[utoipa::path(get, path = "/ready", tag = "probes",
    responses((status = 200, description = "Ready"), (status = 503, description = "Draining or database unreachable")))]
pub async fn ready(State(state): State<AppState>) -> Response {
    if state.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "draining" }))).into_response();
    }
    let (db, redis) = tokio::join!(database_answers(&state.db), state.redis.ping());
    let body = json!({
        "status": if db { "ready" } else { "not_ready" },
        "database": if db { "connected" } else { "disconnected" },
        // Redis is optional: the API serves without it, so it does not decide readiness.
        "redis": if redis { "connected" } else { "unavailable" },
    });
    let status = if db { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// Prometheus metrics of this replica.
#[utoipa::path(get, path = "/metrics", tag = "probes", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    flowforge_platform::http::metrics_response(&state.metrics.registry)
}
