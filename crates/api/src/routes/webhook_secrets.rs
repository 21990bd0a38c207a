//! `/api/v1/webhook-secrets`: each user's secret that signs their webhook deliveries
//! (Standard Webhooks). Created or rotated with a POST, shown once; listed without it.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use flowforge_webhooks::{SecretInfo, StoreError, MAX_OVERLAP};
use serde::Deserialize;
use serde_json::json;

use crate::accounts::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::middleware::AuditTarget;
use crate::routes::ErrorBody;
use crate::state::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_secrets, rotate_secret))
}

/// How long the secret being replaced keeps signing, unless the request says.
const DEFAULT_OVERLAP: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// Seconds the secret being replaced keeps signing beside the new one (both
    /// signatures on every delivery), so receivers can switch without a gap. 0 stops it at
    /// once; default 86400, at most 604800.
    #[schema(maximum = 604_800)]
    pub previous_valid_for_secs: Option<u64>,
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Database(e) => e.into(),
        StoreError::UnknownKey => ApiError::Internal(anyhow::anyhow!(e)),
    }
}

/// Create your webhook signing secret, or rotate it: the new secret (`whsec_…`) is in
/// this answer only. Configure it in your receivers; deliveries carry `webhook-id`,
/// `webhook-timestamp` and `webhook-signature` as Standard Webhooks specifies.
#[utoipa::path(post, path = "/webhook-secrets", tag = "webhooks", request_body = RotateSecret,
    responses((status = 201, description = "The new secret (shown once) and your secrets that now sign"),
              (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<RotateSecret>,
) -> ApiResult<Response> {
    let overlap = body.previous_valid_for_secs.map_or(DEFAULT_OVERLAP, Duration::from_secs);
    if overlap > MAX_OVERLAP {
        return Err(ApiError::invalid("previous_valid_for_secs", format!("at most {}", MAX_OVERLAP.as_secs())));
    }
    let (secret, secrets) = state.webhook_secrets.rotate(caller.user_id, overlap).await.map_err(store_error)?;
    let current = secrets.first().map_or(0, |s| s.id);
    let mut r = (
        StatusCode::CREATED,
        Json(json!({ "success": true, "data": { "id": current, "secret": secret.expose(), "secrets": secrets } })),
    )
        .into_response();
    r.extensions_mut().insert(AuditTarget(format!("webhook-secret:{current}")));
    Ok(r)
}

/// Your secrets that sign deliveries now, current first (never the secrets themselves).
#[utoipa::path(get, path = "/webhook-secrets", tag = "webhooks",
    responses((status = 200, description = "Id, creation time and, for a rotated-out secret, when it stops signing")),
    security(("bearer" = [])))]
pub async fn list_secrets(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> ApiResult<Response> {
    let secrets: Vec<SecretInfo> = state.webhook_secrets.list(caller.user_id).await.map_err(store_error)?;
    Ok(Json(json!({ "success": true, "data": secrets })).into_response())
}
