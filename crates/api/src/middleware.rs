//! Request-scoped middleware: ids, observation, authentication, rate limits, audit.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, OriginalUri, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use tracing::Instrument;

use crate::accounts::{self, Caller};
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
        // Successful reads are most of the traffic, the metrics count each one and the
        // proxy logs a sample of them: a line per read would cost more than the read.
        // Changes, failures and slow answers are all logged.
        let notable = changes_state(&method) || status >= 400 || elapsed >= SLOW_REQUEST;
        span.in_scope(|| {
            if notable {
                tracing::info!(status, latency_ms, "request");
            } else {
                tracing::debug!(status, latency_ms, "request");
            }
        });
    }
    response
}

/// A read slower than this is logged like a change.
const SLOW_REQUEST: std::time::Duration = std::time::Duration::from_millis(500);

/// The client's address: the proxy's `X-Forwarded-For` when trusted, else the peer.
fn client_ip(state: &AppState, req: &Request) -> Option<String> {
    if state.settings.trust_proxy {
        if let Some(ip) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
        {
            return Some(ip);
        }
    }
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

const CSRF_HEADER: HeaderName = HeaderName::from_static("x-csrf-token");

fn changes_state(method: &Method) -> bool {
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
    let session = accounts::session(&state.db, id)
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
/// every state-changing request, refused ones included.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let caller = identify(&state, &mut req).await;
    let audit = AuditRecord::of(&state, &req);
    if let Some(record) = &audit {
        // A handler may write it in its own transaction (see `AuditRecord::write_on`).
        req.extensions_mut().insert(record.clone());
    }
    let (caller, response) = match caller {
        Err(e) => (None, e.into_response()),
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

fn rate_limited(state: &AppState, retry_after: u64) -> Response {
    state.metrics.rate_limited.inc();
    ApiError::RateLimited { retry_after }.into_response()
}

/// For the routes that take no credentials but change state (signing in): a rate limit
/// per client address, so secrets cannot be guessed at speed, and the audit record, naming
/// the user the handler reports in its response's extensions.
pub async fn public_change(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let audit = AuditRecord::of(&state, &req);
    let subject = format!("ip:{}", client_ip(&state, &req).unwrap_or_default());
    let response = match state.limiter.check(&subject) {
        Decision::Limited { retry_after, .. } => rate_limited(&state, retry_after),
        _ => next.run(req).await,
    };
    if let Some(record) = audit {
        let caller = response.extensions().get::<Caller>().cloned();
        record.finish(&state, caller, Outcome::of(&response)).await;
    }
    response
}

/// How a request ended, for its audit record: the status and the object its handler
/// named (`AuditTarget`).
struct Outcome {
    target: Option<String>,
    status: u16,
}

impl Outcome {
    fn of(response: &Response) -> Outcome {
        let target = response.extensions().get::<AuditTarget>().map(|t| t.0.clone());
        Outcome { target, status: response.status().as_u16() }
    }
}

/// On a response whose audit record its handler wrote already.
#[derive(Debug, Clone, Copy)]
pub struct Audited;

/// What the audit log records of a state-changing request.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    method: String,
    route: String,
    path: String,
    request_id: Option<String>,
    client_ip: Option<String>,
    user_agent: Option<String>,
}

impl AuditRecord {
    /// The record of `req`, if it is one that changes state.
    fn of(state: &AppState, req: &Request) -> Option<AuditRecord> {
        changes_state(req.method()).then(|| AuditRecord {
            method: req.method().to_string(),
            route: req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default(),
            // Inside a nested router the URI lost its prefix; the original has it.
            path: req.extensions().get::<OriginalUri>().map_or(req.uri(), |o| &o.0).path().to_owned(),
            request_id: req.extensions().get::<RequestId>().map(|r| r.0.clone()),
            client_ip: client_ip(state, req),
            user_agent: req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(256).collect()),
        })
    }

    /// Writes the record before the answer goes out, except after a 503: the database was
    /// unreachable a moment ago, and waiting for the pool again would hold back (by the
    /// acquire timeout) an answer that tells the client to retry. That record is written in
    /// the background instead.
    async fn finish(self, state: &AppState, caller: Option<Caller>, outcome: Outcome) {
        if outcome.status == 503 {
            let state = state.clone();
            tokio::spawn(async move { self.write(&state, caller.as_ref(), outcome).await });
        } else {
            self.write(state, caller.as_ref(), outcome).await;
        }
    }

    /// Writes the record inside the handler's transaction, so the change and its record
    /// commit together (one commit instead of two on the hot path). The handler then puts
    /// [`Audited`] on its response; should the transaction fail, the middleware records
    /// the failed request as usual.
    pub async fn write_on(
        &self,
        conn: &mut sqlx::PgConnection,
        caller: &Caller,
        status: u16,
        target: &str,
    ) -> sqlx::Result<()> {
        self.insert(Some(caller), status, Some(target)).execute(conn).await.map(|_| ())
    }

    fn insert<'q>(
        &'q self,
        caller: Option<&Caller>,
        status: u16,
        target: Option<&'q str>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(
            "INSERT INTO audit_log (user_id, token_id, method, route, path, target, status, request_id, client_ip, user_agent)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(caller.map(|c| c.user_id))
        .bind(caller.map(|c| c.token_id))
        .bind(&self.method)
        .bind(&self.route)
        .bind(&self.path)
        .bind(target)
        .bind(status as i16)
        .bind(&self.request_id)
        .bind(&self.client_ip)
        .bind(&self.user_agent)
    }

    /// Best effort: a lost audit row is logged (with everything it held) but does not
    /// turn a completed change into an error for the client.
    async fn write(self, state: &AppState, caller: Option<&Caller>, Outcome { target, status }: Outcome) {
        let result = self.insert(caller, status, target.as_deref()).execute(&state.db).await;
        if let Err(e) = result {
            tracing::error!(error = %e, method = %self.method, path = %self.path, user_id = ?caller.map(|c| c.user_id),
                            token_id = ?caller.map(|c| c.token_id), target = ?target, status,
                            request_id = ?self.request_id, client_ip = ?self.client_ip, user_agent = ?self.user_agent,
                            "audit record not written");
        }
    }
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
}
