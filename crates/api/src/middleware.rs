//! Request-scoped middleware: ids, observation, authentication, rate limits, audit.

use axum_extra::extract::cookie::CookieJar;
use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use tracing::Instrument;

use crate::accounts::{self, Caller};
use crate::audit::{AuditRecord, Audited, Outcome};
use crate::error::ApiError;
use crate::rate_limit::Decision;
use crate::state::AppState;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The request's id: the caller's `X-Request-Id` if well-formed, else a new UUID.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// W3C trace id: from `traceparent` if valid, else new.
#[derive(Debug, Clone)]
pub struct TraceId(pub String);

/// What a handler tells the audit log about the object it acted on.
#[derive(Debug, Clone)]
pub struct AuditTarget(pub String);

fn valid_request_id(v: &str) -> bool {
    (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// The trace id of a valid `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`, not all zeros).
fn trace_id_from(traceparent: &str) -> Option<String> {
    let parts: Vec<&str> = traceparent.trim().split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    match parts.as_slice() {
        [version, trace, parent, flags]
            if hex(version, 2) && *version != "ff" && hex(trace, 32) && hex(parent, 16) && hex(flags, 2) =>
        {
            (trace.bytes().any(|b| b != b'0')).then(|| trace.to_string())
        }
        _ => None,
    }
}

fn new_trace_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Outermost layer: gives every request an id and a trace id, echoes the id back.
pub async fn request_ids(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let trace = req
        .headers()
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(trace_id_from)
        .unwrap_or_else(new_trace_id);
    req.extensions_mut().insert(RequestId(id.clone()));
    req.extensions_mut().insert(TraceId(trace));
    let mut response = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

/// Metrics and one access-log line per request, inside a span carrying the ids so
/// every log line of the request has them.
pub async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let trace_id = req.extensions().get::<TraceId>().map(|t| t.0.clone()).unwrap_or_default();
    let span = tracing::info_span!("request", %request_id, %trace_id, method = %method, route = %route);
    flowforge_queue::trace::continue_trace(&span, &trace_id);
    let response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let m = &state.metrics;
    let status_label = status.to_string();
    m.http_requests.with_label_values(&[method.as_str(), &route, &status_label]).inc();
    m.http_duration.with_label_values(&[method.as_str(), &route, &status_label]).observe(elapsed.as_secs_f64());
    if route != "/metrics" && route != "/health" && route != "/ready" {
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        // Successful requests are most of the traffic: the metrics count each one, the
        // proxy's access log has every change and the audit log every change with its
        // user. Another line per request through the container log driver cost a third
        // of the throughput, so they are debug (FLOWFORGE_LOG=info,flowforge::access=debug).
        // Failures and slow answers are logged.
        let notable = status >= 400 || elapsed >= SLOW_REQUEST;
        span.in_scope(|| {
            if notable {
                tracing::info!(target: "flowforge::access", status, latency_ms, "request");
            } else {
                tracing::debug!(target: "flowforge::access", status, latency_ms, "request");
            }
        });
    }
    response
}

/// A read slower than this is logged like a change.
const SLOW_REQUEST: std::time::Duration = std::time::Duration::from_millis(500);

/// The client's address: the peer, or what a trusted proxy says it saw.
fn client_ip(state: &AppState, req: &Request) -> Option<String> {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>()?.0.ip();
    let forwarded = req.headers().get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
    Some(state.settings.trusted_proxies.client_ip(peer, forwarded).to_string())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    CookieJar::from_headers(headers).get(name).map(|c| c.value().to_owned())
}

const CSRF_HEADER: HeaderName = HeaderName::from_static("x-csrf-token");

pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Who is calling: a bearer token (API clients) or else a session cookie (the web UI).
/// A change made with a cookie must also carry the session's CSRF token, which a
/// cross-site page cannot know; the cookie's SameSite=Strict is the second fence.
async fn identify(state: &AppState, req: &mut Request) -> Result<Caller, ApiError> {
    if let Some(token) = bearer(req.headers()) {
        return accounts::authenticate_cached(&state.db, &state.tokens, token)
            .await?
            .ok_or(ApiError::Unauthorized("invalid, expired or revoked token"));
    }
    let Some(id) = cookie(req.headers(), accounts::SESSION_COOKIE) else {
        return Err(ApiError::Unauthorized("sign in: send Authorization: Bearer <token>, or sign in to the web UI"));
    };
    let session = accounts::session(&state.db, &id)
        .await?
        .ok_or(ApiError::Unauthorized("your session has ended; sign in again"))?;
    if changes_state(req.method()) {
        let given = req.headers().get(&CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !accounts::secrets_match(given, &session.csrf_token) {
            return Err(ApiError::CsrfFailed);
        }
    }
    let caller = session.caller.clone();
    req.extensions_mut().insert(session);
    Ok(caller)
}

/// Authenticates the caller, applies their rate limit, and writes the audit record of
/// every state-changing request, refused ones included. An address that keeps sending
/// bad credentials is refused before they are looked up.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let ip = client_ip(&state, &req);
    let audit = AuditRecord::of(&req, ip.clone());
    if let Some(record) = &audit {
        // A handler may write it in its own transaction (see `AuditRecord::write_all_on`).
        req.extensions_mut().insert(record.clone());
    }
    let failures = refusals_subject(ip.as_deref());
    // What counts against the address: credentials that did not verify, and changes
    // without any (each costs an audit row). A read without credentials costs nothing to
    // refuse: the web UI asks "am I signed in?" that way on every load.
    let counts = changes_state(req.method()) || presents_credentials(req.headers());
    let caller = match state.auth_failures.exhausted(&failures) {
        // Still served: a token this replica checked a moment ago costs no lookup.
        Some(Decision::Limited { retry_after, .. }) => {
            cached_caller(&state, &req).ok_or_else(|| ApiError::RateLimited { retry_after })
        }
        _ => identify(&state, &mut req).await,
    };
    let (caller, response) = match caller {
        Err(ApiError::RateLimited { retry_after }) => (None, rate_limited(&state, retry_after)),
        Err(e) => {
            if counts && matches!(e, ApiError::Unauthorized(_)) {
                state.auth_failures.count(&failures);
            }
            (None, e.into_response())
        }
        Ok(caller) => match state.limiter.check(&format!("user:{}", caller.user_id)) {
            Decision::Limited { limit, retry_after } => {
                let mut r = rate_limited(&state, retry_after);
                r.headers_mut().insert("x-ratelimit-limit", HeaderValue::from(limit));
                r.headers_mut().insert("x-ratelimit-remaining", HeaderValue::from(0));
                (Some(caller), r)
            }
            decision => {
                req.extensions_mut().insert(caller.clone());
                let turn = if changes_state(req.method()) { Some(state.writes.enter().await) } else { None };
                if let Some(None) = turn {
                    state.metrics.overloaded.inc();
                    // No audit row either: writing one is the work being shed.
                    return ApiError::Overloaded.into_response();
                }
                let mut r = next.run(req).await;
                drop(turn);
                if let Decision::Allowed { limit, remaining, reset_secs } = decision {
                    r.headers_mut().insert("x-ratelimit-limit", HeaderValue::from(limit));
                    r.headers_mut().insert("x-ratelimit-remaining", HeaderValue::from(remaining));
                    r.headers_mut().insert("x-ratelimit-reset", HeaderValue::from(reset_secs));
                }
                (Some(caller), r)
            }
        },
    };
    if let Some(record) = audit.filter(|_| response.extensions().get::<Audited>().is_none()) {
        record.finish(&state, caller, Outcome::of(&response)).await;
    }
    response
}

/// The rate-limit subject that counts refused credentials from a client address.
fn refusals_subject(client_ip: Option<&str>) -> String {
    format!("refused:{}", client_ip.unwrap_or_default())
}

fn presents_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION) || cookie(headers, accounts::SESSION_COOKIE).is_some()
}

/// The caller of a bearer token this replica has checked recently, without a lookup.
fn cached_caller(state: &AppState, req: &Request) -> Option<Caller> {
    accounts::cached(&state.tokens, bearer(req.headers())?)
}

fn rate_limited(state: &AppState, retry_after: u64) -> Response {
    state.metrics.rate_limited.inc();
    ApiError::RateLimited { retry_after }.into_response()
}

/// For the routes that take no credentials but change state (signing in): refused
/// attempts count against the client address like bad credentials elsewhere, so secrets
/// cannot be guessed at speed; and the audit record, naming the user the handler reports
/// in its response's extensions.
pub async fn public_change(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ip = client_ip(&state, &req);
    let audit = AuditRecord::of(&req, ip.clone());
    let failures = refusals_subject(ip.as_deref());
    let response = match state.auth_failures.exhausted(&failures) {
        Some(Decision::Limited { retry_after, .. }) => rate_limited(&state, retry_after),
        _ => next.run(req).await,
    };
    if response.status() == StatusCode::UNAUTHORIZED {
        state.auth_failures.count(&failures);
    }
    if let Some(record) = audit {
        let caller = response.extensions().get::<Caller>().cloned();
        record.finish(&state, caller, Outcome::of(&response)).await;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parsing_follows_w3c() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id_from(good).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(trace_id_from("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id_from("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id_from("garbage"), None);
    }

    #[test]
    fn request_ids_are_bounded_and_plain() {
        assert!(valid_request_id("abc-123_x.y:z"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("has space"));
        assert!(!valid_request_id(&"a".repeat(129)));
    }

    proptest::proptest! {
        /// Any traceparent: a trace id only from the W3C form, 32 lowercase hex, not all zeros.
        #[test]
        fn any_traceparent_gives_a_valid_trace_id_or_none(text in ".{0,80}") {
            if let Some(id) = trace_id_from(&text) {
                proptest::prop_assert_eq!(id.len(), 32);
                proptest::prop_assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
                proptest::prop_assert!(id.bytes().any(|b| b != b'0'));
            }
        }

        #[test]
        fn well_formed_traceparents_are_read(trace in "[0-9a-f]{32}", parent in "[0-9a-f]{16}") {
            let expected = trace.bytes().any(|b| b != b'0').then(|| trace.clone());
            proptest::prop_assert_eq!(trace_id_from(&format!("00-{trace}-{parent}-01")), expected);
        }

        /// Any Cookie header: the value of the named cookie when it is there, nothing else.
        #[test]
        fn any_cookie_header_yields_only_the_named_value(
            pairs in proptest::collection::vec(("[a-z_]{1,8}", "[!#$&-+--:<-~]{0,16}"), 0..6),
            junk in "[ -~]{0,30}",
        ) {
            let text = pairs.iter().map(|(k, v)| format!("{k}={v}")).chain([junk.clone()]).collect::<Vec<_>>().join("; ");
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&text) {
                headers.insert(header::COOKIE, value);
                let named: Vec<&String> = pairs.iter().filter(|(k, _)| k == "sid").map(|(_, v)| v).collect();
                if named.len() == 1 && !junk.contains("sid") {
                    proptest::prop_assert_eq!(cookie(&headers, "sid"), Some(named[0].clone()));
                }
            }
        }

        #[test]
        fn request_ids_are_kept_only_when_plain(text in ".{0,140}") {
            if valid_request_id(&text) {
                proptest::prop_assert!(HeaderValue::from_str(&text).is_ok() && text.len() <= 128);
            }
        }
    }
}
