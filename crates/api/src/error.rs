//! One error type for every handler, mapped to a status and a JSON body:
//! `{"success": false, "error": {"code", "message", "details"?}}`. Internal causes are
//! logged with the request's span, never sent to the client.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

/// A problem with one field of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("changes made with a session cookie need its X-CSRF-Token header")]
    CsrfFailed,
    #[error("not found")]
    NotFound,
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// A change to only the kind or only the payload that the task's other half does not
    /// fit: a conflict with the task as it is, so 409, with the fields as in a 422.
    #[error("the task's payload would not fit its kind")]
    Misfit(Vec<FieldError>),
    #[error("the resource changed since you read it (If-Match does not match the current version)")]
    PreconditionFailed,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("rate limit exceeded; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("too many changes in flight; retry in 1 s")]
    Overloaded,
    #[error("{0}")]
    TooManyStreams(&'static str),
    #[error(
        "you have {limit} or more tasks pending or running, the most one user may have; retry when some have finished"
    )]
    TooManyTasks { limit: u32 },
    #[error("a dependency is unavailable; retry shortly")]
    Unavailable,
    /// The request ran past `FLOWFORGE_REQUEST_TIMEOUT` and was stopped; its
    /// transaction, if any, was rolled back.
    #[error("the request took too long and was stopped; nothing was changed; retry shortly")]
    TimedOut,
    /// Prometheus, which the operations view reads, is not configured or not answering.
    #[error("{0}")]
    MetricsUnavailable(&'static str),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// Seconds clients are told to wait when the database is unreachable.
const UNAVAILABLE_RETRY_AFTER: &str = "5";

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest { code, message: message.into() }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Conflict { code, message: message.into() }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::CsrfFailed => (StatusCode::FORBIDDEN, "csrf_failed"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::Misfit(_) => (StatusCode::CONFLICT, "payload_does_not_fit_kind"),
            ApiError::PreconditionFailed => (StatusCode::PRECONDITION_FAILED, "precondition_failed"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Overloaded => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
            ApiError::TooManyStreams(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_streams"),
            ApiError::TooManyTasks { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_tasks"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::TimedOut => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            ApiError::MetricsUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "metrics_unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut error = json!({ "code": code, "message": self.to_string() });
        match &self {
            ApiError::Validation(details) | ApiError::Misfit(details) => error["details"] = json!(details),
            ApiError::Internal(cause) => tracing::error!(error = ?cause, "internal error"),
            ApiError::Unavailable => tracing::warn!("answering 503: dependency unavailable"),
            _ => {}
        }
        let mut response = (status, axum::Json(json!({ "success": false, "error": error }))).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::RateLimited { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            ApiError::Overloaded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::TooManyStreams(_) | ApiError::TooManyTasks { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::Unavailable | ApiError::MetricsUnavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static(UNAVAILABLE_RETRY_AFTER));
            }
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

/// SQLSTATE classes and codes that mean "the database is not reachable right now".
fn is_outage(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("57P") // admin/crash shutdown, cannot connect now
        || code == "53300" // too many connections
        || code == "57014" // statement timeout: overloaded, retry later
        // read-only transaction: a write reached a member that stopped being the leader
        // (a failover or switchover in progress); the new leader takes it once routed there
        || code == "25006"
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::Unavailable
            }
            sqlx::Error::Database(db) if db.code().as_deref().is_some_and(is_outage) => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::Unavailable
            }
            // Class 22, data exception: a value PostgreSQL cannot store or compare (a
            // backstop behind validation, which should have named the field).
            sqlx::Error::Database(db) if db.code().as_deref().is_some_and(|c| c.starts_with("22")) => {
                tracing::warn!(error = %e, "value refused by the database");
                ApiError::invalid("body", "a value is malformed or out of range")
            }
            _ => ApiError::Internal(e.into()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => {
                ApiError::Validation(vec![FieldError::new("body", data_error_message(&e.body_text()))])
            }
            JsonRejection::JsonSyntaxError(e) => ApiError::bad_request("malformed_json", e.body_text()),
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::UnsupportedMediaType("expected a request body with Content-Type: application/json".into())
            }
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge("request body is larger than this endpoint accepts".into())
            }
            other => ApiError::bad_request("unreadable_body", other.body_text()),
        }
    }
}

/// serde's message minus axum's generic preamble.
fn data_error_message(text: &str) -> String {
    text.strip_prefix("Failed to deserialize the JSON body into the target type: ").unwrap_or(text).to_string()
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        let text = r.body_text();
        ApiError::bad_request(
            "invalid_query",
            text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text).to_string(),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request("invalid_path", r.body_text())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
