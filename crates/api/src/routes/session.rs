//! `/api/v1/session`: the web UI signs in with an API token and gets an HttpOnly session
//! cookie plus the CSRF token it must echo on changes; it signs out by deleting it.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use axum_extra::extract::cookie::{Cookie, SameSite};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use crate::accounts::{self, Caller, Session, SESSION_COOKIE};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::middleware::AuditTarget;
use crate::state::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Signing in: takes no credentials, so it sits outside authentication.
pub fn public_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(sign_in))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(current, sign_out))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// An API token (`ff_...`).
    #[schema(pattern = "^ff_")]
    pub token: String,
}

fn session_body(caller: &Caller, csrf_token: Option<&str>, expires_at: Option<DateTime<Utc>>) -> serde_json::Value {
    json!({
        "success": true,
        "data": {
            "user": { "id": caller.user_id, "name": caller.name, "role": caller.role },
            "csrf_token": csrf_token,
            "expires_at": expires_at,
        }
    })
}

/// The session cookie: sent only over HTTPS, never to scripts, never cross-site.
fn session_cookie(value: String, max_age_secs: u64) -> Cookie<'static> {
    Cookie::build((SESSION_COOKIE, value))
        .path("/")
        .max_age(time::Duration::seconds(max_age_secs.try_into().unwrap_or(i64::MAX)))
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .build()
}

fn set_cookie(response: &mut Response, cookie: Cookie<'static>) {
    if let Ok(v) = HeaderValue::from_str(&cookie.encoded().to_string()) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Sign in with an API token: sets the session cookie.
#[utoipa::path(post, path = "/session", tag = "session", request_body = SignIn,
    responses((status = 200, description = "Signed in: the user, the CSRF token and when the session ends"),
              (status = 401, body = crate::routes::ErrorBody), (status = 422, body = crate::routes::ErrorBody)))]
pub async fn sign_in(State(state): State<AppState>, ApiJson(body): ApiJson<SignIn>) -> ApiResult<Response> {
    let token = body.token.trim();
    if token.is_empty() {
        return Err(ApiError::invalid("token", "enter an API token (it starts with ff_)"));
    }
    let caller = accounts::authenticate(&state.db, token)
        .await?
        .ok_or(ApiError::Unauthorized("that token is not valid: it is wrong, expired or revoked"))?;
    let session = accounts::open_session(&state.db, &caller, state.settings.session_ttl).await?;
    tracing::info!(user_id = caller.user_id, token_id = caller.token_id, "signed in");
    let mut response = Json(session_body(&caller, Some(&session.csrf_token), Some(session.expires_at))).into_response();
    set_cookie(&mut response, session_cookie(session.id, state.settings.session_ttl.as_secs()));
    response.extensions_mut().insert(AuditTarget(format!("user:{}", caller.user_id)));
    response.extensions_mut().insert(caller);
    Ok(response)
}

/// The signed-in user and the session's CSRF token (for a page that was reloaded).
#[utoipa::path(get, path = "/session", tag = "session",
    responses((status = 200, description = "The current session"), (status = 401, body = crate::routes::ErrorBody)))]
pub async fn current(Extension(caller): Extension<Caller>, session: Option<Extension<Session>>) -> Response {
    let session = session.map(|Extension(s)| s);
    let expires_at = session.as_ref().map(|s| s.expires_at);
    Json(session_body(&caller, session.as_ref().map(|s| s.csrf_token.as_str()), expires_at)).into_response()
}

/// Sign out: ends the session and clears the cookie.
#[utoipa::path(delete, path = "/session", tag = "session",
    responses((status = 204, description = "Signed out"), (status = 401, description = "No session cookie came with it",
               body = crate::routes::ErrorBody)))]
pub async fn sign_out(State(state): State<AppState>, session: Option<Extension<Session>>) -> ApiResult<Response> {
    let Some(Extension(session)) = session else {
        return Err(ApiError::Unauthorized("this request came without a session cookie: nothing to sign out of"));
    };
    accounts::close_session(&state.db, &session.id_hash).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_cookie(&mut response, session_cookie(String::new(), 0));
    response.extensions_mut().insert(AuditTarget(format!("user:{}", session.caller.user_id)));
    Ok(response)
}
