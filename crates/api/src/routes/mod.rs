//! The HTTP surface: which routes exist and which layers wrap them.

pub mod accounts;
pub mod health;
pub mod kinds;
pub mod live;
pub mod session;
pub mod tasks;
pub mod webhook_secrets;

use axum::extract::DefaultBodyLimit;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use flowforge_queue::Task;
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, FieldError};
use crate::middleware;
use crate::openapi;
use crate::state::AppState;

/// Response shapes, for the OpenAPI document.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TaskEnvelope {
    pub success: bool,
    pub data: Task,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TaskListEnvelope {
    pub success: bool,
    pub data: Vec<Task>,
    pub pagination: Option<Pagination>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Pagination {
    pub limit: u32,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub success: bool,
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `validation_failed`, `not_found`, `rate_limited`, ...
    pub code: String,
    pub message: String,
    pub details: Option<Vec<FieldError>>,
}

pub fn router(state: AppState) -> Router {
    let bulk_limit = state.settings.max_body_bytes.saturating_mul(8);
    // Each route is declared once, with its annotation: the OpenAPI document is made from
    // the routers themselves, so it lists exactly what is served.
    let (authenticated, mut document) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(tasks::router(bulk_limit))
        .nest(
            "/api/v1",
            OpenApiRouter::new()
                .merge(kinds::router())
                .merge(accounts::router())
                .merge(session::router())
                .merge(live::router())
                .merge(webhook_secrets::router()),
        )
        .split_for_parts();
    // The seed contract's /tasks, also under /api/v1 (documented once, as the document says).
    let (v1_tasks, _) = tasks::router(bulk_limit).split_for_parts();
    let authenticated = authenticated
        .nest("/api/v1", v1_tasks)
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), middleware::authenticate));
    let (public, public_document) = OpenApiRouter::new()
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
        .nest(
            "/api/v1",
            session::public_router()
                .route_layer(axum::middleware::from_fn_with_state(state.clone(), middleware::public_change)),
        )
        .split_for_parts();
    document.merge(public_document);
    let document = openapi::Document::new(&document, &state.kinds, &state.settings);
    Router::new()
        .route("/openapi.json", get(openapi::serve).with_state(document.clone()))
        .route("/api/v1/openapi.json", get(openapi::serve).with_state(document))
        .merge(public)
        .merge(authenticated)
        // Inside `observe`, so a request that timed out is counted and audited as such.
        .route_layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, state.settings.request_timeout))
        .route_layer(axum::middleware::map_response(timeout_body))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), middleware::observe))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn(middleware::request_ids))
        .with_state(state)
}

/// The timeout layer answers with a bare status; every other 503 carries a JSON body.
async fn timeout_body(response: Response) -> Response {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE && !response.headers().contains_key(CONTENT_TYPE) {
        ApiError::TimedOut.into_response()
    } else {
        response
    }
}

async fn not_found() -> Response {
    ApiError::NotFound.into_response()
}

async fn method_not_allowed() -> Response {
    let mut r = ApiError::bad_request("method_not_allowed", "this method is not allowed on this path").into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}

/// A panic becomes a plain 500 with the usual error body; its message stays in the logs.
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
}
