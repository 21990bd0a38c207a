//! `/api/v1/me`, `/api/v1/users` (admins), `/api/v1/tokens`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::accounts::{self, Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Id};
use crate::middleware::AuditTarget;
use crate::routes::ErrorBody;
use crate::state::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(create_user))
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}

fn audited(status: StatusCode, body: serde_json::Value, target: String) -> Response {
    let mut r = (status, Json(body)).into_response();
    r.extensions_mut().insert(AuditTarget(target));
    r
}

/// Who am I?
#[utoipa::path(get, path = "/me", tag = "accounts", responses((status = 200, description = "The caller")),
    security(("bearer" = [])))]
pub async fn me(Extension(caller): Extension<Caller>) -> Response {
    Json(json!({ "success": true, "data": { "id": caller.user_id, "name": caller.name, "role": caller.role } }))
        .into_response()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub name: String,
    /// `user` (default) or `admin`.
    pub role: Option<Role>,
}

/// Create a user and their first token (admins only).
#[utoipa::path(post, path = "/users", tag = "accounts", request_body = CreateUser,
    responses((status = 201, description = "The user and a token (shown once)"), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<CreateUser>,
) -> ApiResult<Response> {
    if !caller.is_admin() {
        return Err(ApiError::Forbidden("only admins can create users"));
    }
    accounts::validate_name(&body.name).map_err(|m| ApiError::invalid("name", m))?;
    // The user and their first token together, or neither: a user without a token could
    // never sign in, and retrying would only answer `user_exists`.
    let mut tx = state.db.begin().await?;
    let user = match accounts::create_user(&mut *tx, &body.name, body.role.unwrap_or(Role::User)).await {
        Ok(u) => u,
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(ApiError::conflict("user_exists", format!("a user called {:?} exists", body.name)))
        }
        Err(e) => return Err(e.into()),
    };
    let token = accounts::issue_token(&mut *tx, user.id, "initial", state.settings.token_ttl).await?;
    tx.commit().await?;
    Ok(audited(
        StatusCode::CREATED,
        json!({ "success": true, "data": { "user": user, "token": token } }),
        format!("user:{}", user.id),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// A label to recognise the token by: at most 100 characters, no control characters.
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub name: Option<String>,
    /// Seconds until it stops working: at least 60; at most, and by default,
    /// `FLOWFORGE_TOKEN_TTL`.
    #[schema(minimum = 60)]
    pub ttl_secs: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenEnvelope {
    pub success: bool,
    pub data: accounts::IssuedToken,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenListEnvelope {
    pub success: bool,
    pub data: Vec<accounts::TokenInfo>,
}

/// Issue another token for yourself (shown once). It expires (`expires_at`); a user holds
/// at most `FLOWFORGE_MAX_TOKENS_PER_USER` working tokens.
#[utoipa::path(post, path = "/tokens", tag = "accounts", request_body = CreateToken,
    responses((status = 201, description = "The new token", body = TokenEnvelope),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<CreateToken>,
) -> ApiResult<Response> {
    let name = body.name.unwrap_or_default();
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name", "at most 100 characters, no control characters"));
    }
    let longest = state.settings.token_ttl;
    let ttl = match (body.ttl_secs.map(Duration::from_secs), longest) {
        (Some(asked), _) if asked < Duration::from_secs(60) => {
            return Err(ApiError::invalid("ttl_secs", "at least 60"));
        }
        (Some(asked), Some(max)) if asked > max => {
            return Err(ApiError::invalid("ttl_secs", format!("at most {}", max.as_secs())));
        }
        (Some(asked), _) => Some(asked),
        (None, default) => default,
    };
    // The user's row is the lock: two requests cannot both take the last place.
    let mut tx = state.db.begin().await?;
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE").bind(caller.user_id).execute(&mut *tx).await?;
    let active = accounts::active_tokens(&mut *tx, caller.user_id).await?;
    let max = state.settings.max_tokens_per_user;
    if active >= max {
        return Err(ApiError::conflict(
            "too_many_tokens",
            format!("you hold {active} working tokens, the most allowed ({max}); revoke one first"),
        ));
    }
    let token = accounts::issue_token(&mut *tx, caller.user_id, &name, ttl).await?;
    tx.commit().await?;
    let target = format!("token:{}", token.id);
    Ok(audited(StatusCode::CREATED, json!(TokenEnvelope { success: true, data: token }), target))
}

/// Your tokens, newest first (at most 100): names, prefixes and dates, never the tokens.
#[utoipa::path(get, path = "/tokens", tag = "accounts",
    responses((status = 200, description = "Your tokens", body = TokenListEnvelope)), security(("bearer" = [])))]
pub async fn list_tokens(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> ApiResult<Response> {
    let tokens = accounts::list_tokens(&state.db, caller.user_id, 100).await?;
    Ok(Json(TokenListEnvelope { success: true, data: tokens }).into_response())
}

/// Revoke one of your tokens (admins: anyone's).
#[utoipa::path(delete, path = "/tokens/{id}", tag = "accounts", params(("id" = i64, Path)),
    responses((status = 200, description = "Revoked"), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn revoke_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id,
) -> ApiResult<Response> {
    if !accounts::revoke_token(&state.db, &caller, id).await? {
        return Err(ApiError::NotFound);
    }
    state.tokens.forget_token(id);
    Ok(audited(
        StatusCode::OK,
        json!({ "success": true, "data": { "id": id, "revoked": true } }),
        format!("token:{id}"),
    ))
}
