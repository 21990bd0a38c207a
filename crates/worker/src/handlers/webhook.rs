//! `webhook`: delivers a signed JSON request to a URL the task names.
//!
//! Each request carries `X-FlowForge-Timestamp` (unix seconds) and `X-FlowForge-Signature`,
//! one or more `sha256=HEX(HMAC-SHA256(key, "{timestamp}.{body}"))` values separated by
//! `", "`. Usually there is one. While the signing key is being rotated
//! (`FLOWFORGE_WEBHOOK_SIGNING_KEY_PREVIOUS` set) there are two, the current key's first:
//! `sha256=NEW, sha256=OLD`.
//!
//! Receivers split the header on `", "` and accept the request if any `sha256=` value
//! equals their own HMAC of `"{timestamp}.{body}"` (compared in constant time), ignoring
//! values with another scheme; and they reject old timestamps to stop replays. A receiver
//! so written keeps accepting through a rotation whichever of the two keys it holds.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use flowforge_platform::Secret;
use flowforge_queue::{Handler, HandlerError, TaskContext};
use hmac::{Hmac, Mac};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING,
};
use reqwest::{redirect, Client, Method, Response, StatusCode, Url};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

use super::payload;
use crate::config::WebhookSettings;

/// How much of the receiver's answer is kept in the task's result or error.
const MAX_RESPONSE_BYTES: usize = 4096;

/// Headers the HTTP client derives from the request itself; a payload's own value
/// would contradict the body or the connection.
const FRAMING_HEADERS: [HeaderName; 4] = [CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION, HOST];

/// One `X-FlowForge-Signature` value (`sha256=…`) for a request body sent at `timestamp`
/// (unix seconds) and signed with `key`.
pub fn sign(key: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub struct Webhook {
    client: Client,
    /// The current key, then the previous one while a rotation is under way.
    signing_keys: Vec<Secret>,
    allow_private: bool,
}

impl Webhook {
    pub fn new(settings: &WebhookSettings) -> Self {
        // Redirects are not followed: a receiver could otherwise bounce the request (and
        // its signature) anywhere, including addresses the SSRF guard refuses.
        // No proxy: a proxy would resolve the target itself, out of the SSRF guard's sight.
        let mut builder = Client::builder().timeout(settings.timeout).redirect(redirect::Policy::none()).no_proxy();
        if !settings.allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Webhook {
            client: builder.build().expect("a rustls client with these options always builds"),
            signing_keys: settings.signing_keys(),
            allow_private: settings.allow_private,
        }
    }

    /// The `X-FlowForge-Signature` header: one signature per key, current key first,
    /// separated by `", "`.
    fn signature(&self, timestamp: u64, body: &[u8]) -> HeaderValue {
        let signatures: Vec<String> = self.signing_keys.iter().map(|k| sign(k.expose(), timestamp, body)).collect();
        HeaderValue::try_from(signatures.join(", ")).expect("hex is a valid header value")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookPayload {
    url: String,
    #[serde(default)]
    method: WebhookMethod,
    #[serde(default)]
    body: Value,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
enum WebhookMethod {
    #[default]
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "PUT")]
    Put,
}

#[async_trait]
impl Handler for Webhook {
    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError> {
        let request: WebhookPayload =
            payload(&ctx, r#"{"url": "https://...", "method": "POST" or "PUT", "body": ..., "headers": {...}}"#)?;
        let url = Url::parse(&request.url).map_err(|e| permanent(format!("invalid url {:?}: {e}", request.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(permanent(format!("url must be http or https, not {}", url.scheme())));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &request.headers {
            let name = HeaderName::try_from(name).map_err(|e| permanent(format!("header {name:?}: {e}")))?;
            if FRAMING_HEADERS.contains(&name) {
                return Err(permanent(format!("header {name} is set by the worker, not the payload")));
            }
            let value = HeaderValue::try_from(value).map_err(|e| permanent(format!("header {name}: {e}")))?;
            headers.insert(name, value);
        }
        if !self.allow_private {
            // Checked here for a clear, permanent error; the client's resolver checks again
            // at connect time, so a DNS answer that changes in between cannot slip through.
            let host = url.host_str().unwrap_or_default();
            let addrs = resolve(host, url.port_or_known_default().unwrap_or_default())
                .await
                .map_err(|e| HandlerError::Retryable(format!("webhook: cannot resolve {host}: {e}")))?;
            refuse_private(host, &addrs).map_err(permanent)?;
        }
        let body = serde_json::to_vec(&request.body).expect("a JSON value always serialises");
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs();
        // After the task's own headers, so a payload cannot forge these.
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert("x-flowforge-task-id", HeaderValue::from(ctx.id));
        headers.insert("x-flowforge-attempt", HeaderValue::from(ctx.attempt));
        headers.insert("x-flowforge-timestamp", HeaderValue::from(timestamp));
        headers.insert("x-flowforge-signature", self.signature(timestamp, &body));
        // A request id that is not a valid header value is left out rather than failing delivery.
        if let Some(request_id) = ctx.request_id.as_deref().and_then(|id| HeaderValue::from_str(id).ok()) {
            headers.insert("x-request-id", request_id);
        }
        let method = match request.method {
            WebhookMethod::Post => Method::POST,
            WebhookMethod::Put => Method::PUT,
        };
        let response = self
            .client
            .request(method, url)
            .headers(headers)
            .body(body)
            .send()
            .await
            // Without the URL: it may carry credentials, and errors end up in logs.
            .map_err(|e| {
                HandlerError::Retryable(format!("webhook request failed: {}", error_chain(&e.without_url())))
            })?;
        let status = response.status();
        outcome(status, read_prefix(response).await)
    }
}

fn permanent(message: impl std::fmt::Display) -> HandlerError {
    HandlerError::Permanent(format!("webhook: {message}"))
}

/// 2xx delivers; timeouts, throttling and server errors are worth retrying; any other
/// answer (4xx, or 3xx since redirects are not followed) will not change on retry.
fn outcome(status: StatusCode, body: String) -> Result<Value, HandlerError> {
    if status.is_success() {
        return Ok(json!({ "status": status.as_u16(), "body": body }));
    }
    let message = format!("webhook answered {status}: {body}");
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS {
        Err(HandlerError::Retryable(message))
    } else {
        Err(HandlerError::Permanent(message))
    }
}

/// The first [`MAX_RESPONSE_BYTES`] of the body, never reading more: a receiver's answer
/// is kept for inspection, and must not cost unbounded memory. A body that breaks off
/// yields what arrived, since the status already says how the delivery went.
async fn read_prefix(mut response: Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    bytes.truncate(MAX_RESPONSE_BYTES);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `reqwest` puts the useful part (connection refused, DNS failure) in the sources.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    // `Url` keeps the brackets of IPv6 literals, which the system resolver does not want.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(tokio::net::lookup_host((host, port)).await?.collect())
}

/// Refuses a host with any address inside the deployment's own networks.
fn refuse_private(host: &str, addrs: &[SocketAddr]) -> Result<(), String> {
    match addrs.iter().find(|a| !is_public(a.ip())) {
        Some(a) => Err(format!(
            "refusing {host}: it resolves to the non-public address {} (set FLOWFORGE_WEBHOOK_ALLOW_PRIVATE to allow)",
            a.ip()
        )),
        None => Ok(()),
    }
}

/// Whether `ip` is a globally routable unicast address. Refused: loopback, private,
/// shared (CGNAT, 100.64/10 — where some clouds keep their metadata service), link-local,
/// benchmarking (198.18/15), IETF protocol (192.0.0/24), documentation, reserved
/// (240/4), multicast, broadcast, unspecified; for IPv6 also unique-local, site-local,
/// and any form that embeds an IPv4 address (mapped, compatible, NAT64, 6to4), judged
/// as that address.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            let embedded =
                |hi: u16, lo: u16| std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
            if let Some(v4) = v6.to_ipv4_mapped() {
                is_public(IpAddr::V4(v4))
            } else if seg[..6] == [0, 0, 0, 0, 0, 0] {
                // IPv4-compatible (::a.b.c.d), including :: and ::1.
                is_public(IpAddr::V4(embedded(seg[6], seg[7])))
            } else if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                is_public(IpAddr::V4(embedded(seg[6], seg[7]))) // NAT64
            } else if seg[0] == 0x2002 {
                is_public(IpAddr::V4(embedded(seg[1], seg[2]))) // 6to4
            } else {
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local()
                    || (seg[0] & 0xffc0) == 0xfec0) // site-local (deprecated, still routable inside)
            }
        }
    }
}

/// The client's resolver when private targets are refused: every connection, not just
/// the check before it, sees only public addresses.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addrs = resolve(name.as_str(), 0).await?;
            refuse_private(name.as_str(), &addrs)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::tests::context;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Reference value: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            sign("key", 1_700_000_000, br#"{"a":1}"#),
            "sha256=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
    }

    #[test]
    fn status_decides_retry_or_not() {
        let retryable = |code: u16| {
            matches!(outcome(StatusCode::from_u16(code).unwrap(), String::new()), Err(HandlerError::Retryable(_)))
        };
        let permanent = |code: u16| {
            matches!(outcome(StatusCode::from_u16(code).unwrap(), String::new()), Err(HandlerError::Permanent(_)))
        };
        assert_eq!(outcome(StatusCode::CREATED, "ok".into()).unwrap(), json!({"status": 201, "body": "ok"}));
        for code in [408, 429, 500, 502, 503] {
            assert!(retryable(code), "{code}");
        }
        for code in [301, 400, 401, 404, 410, 422] {
            assert!(permanent(code), "{code}");
        }
    }

    #[test]
    fn only_public_addresses_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "100.100.100.200",
            "100.64.0.1",
            "198.18.0.1",
            "192.0.0.1",
            "240.0.0.1",
            "224.0.0.1",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "2002:a00:1::",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn the_client_resolver_refuses_private_answers() {
        let refused = PublicOnly.resolve("localhost".parse().unwrap()).await.err().expect("localhost refused");
        assert!(refused.to_string().contains("non-public"), "{refused}");
    }

    /// A local receiver that records the headers and body of every request it gets.
    async fn receiver() -> (Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, axum::body::Bytes)>>>, SocketAddr) {
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                record.lock().unwrap().push((headers, body));
                "received"
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (received, addr)
    }

    /// Delivers one request to a local receiver with these keys; returns the timestamp,
    /// body and the `X-FlowForge-Signature` values it got.
    async fn deliver(key: &str, previous: Option<&str>) -> (u64, Vec<u8>, Vec<String>) {
        let (received, addr) = receiver().await;
        let webhook = Webhook::new(&WebhookSettings {
            signing_key: Secret::new(key),
            previous_signing_key: previous.map(Secret::new),
            timeout: std::time::Duration::from_secs(5),
            allow_private: true,
        });
        let payload = json!({"url": format!("http://{addr}/hook"), "body": {"order": 42}});
        let result = webhook.run(context("webhook", payload, 1)).await.unwrap();
        assert_eq!(result, json!({"status": 200, "body": "received"}));
        let (headers, body) = received.lock().unwrap().pop().expect("the receiver got the request");
        let timestamp = headers["x-flowforge-timestamp"].to_str().unwrap().parse().unwrap();
        let signatures =
            headers.get_all("x-flowforge-signature").iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>();
        assert_eq!(signatures.len(), 1, "one header, however many signatures: {signatures:?}");
        (timestamp, body.to_vec(), signatures[0].split(", ").map(String::from).collect())
    }

    /// What a receiver holding `key` does: accept if any `sha256=` value matches.
    fn receiver_accepts(signatures: &[String], key: &str, timestamp: u64, body: &[u8]) -> bool {
        let ours = sign(key, timestamp, body);
        let ours = ours.strip_prefix("sha256=").unwrap();
        signatures.iter().filter_map(|s| s.strip_prefix("sha256=")).any(|theirs| theirs == ours)
    }

    #[tokio::test]
    async fn during_a_rotation_both_keys_sign_the_request_current_first() {
        let (timestamp, body, signatures) = deliver("new-key", Some("old-key")).await;
        assert_eq!(signatures, [sign("new-key", timestamp, &body), sign("old-key", timestamp, &body)]);
        assert!(receiver_accepts(&signatures, "new-key", timestamp, &body), "a receiver with the new key refused");
        assert!(receiver_accepts(&signatures, "old-key", timestamp, &body), "a receiver with the old key refused");
        assert!(!receiver_accepts(&signatures, "other-key", timestamp, &body), "any key verified");
    }

    #[tokio::test]
    async fn without_a_previous_key_there_is_exactly_one_signature() {
        let (timestamp, body, signatures) = deliver("new-key", None).await;
        assert_eq!(signatures, [sign("new-key", timestamp, &body)]);
        assert!(!receiver_accepts(&signatures, "old-key", timestamp, &body));
    }

    #[tokio::test]
    async fn a_previous_key_equal_to_the_current_one_signs_once() {
        let (timestamp, body, signatures) = deliver("same-key", Some("same-key")).await;
        assert_eq!(signatures, [sign("same-key", timestamp, &body)]);
    }

    #[tokio::test]
    async fn bad_payloads_fail_permanently() {
        let webhook = Webhook::new(&WebhookSettings {
            signing_key: Secret::new("k"),
            previous_signing_key: None,
            timeout: std::time::Duration::from_secs(1),
            allow_private: false,
        });
        for (payload, expected) in [
            (json!({}), "url"),
            (json!({"url": "not a url"}), "invalid url"),
            (json!({"url": "ftp://example.com/x"}), "http or https"),
            (json!({"url": "file:///etc/passwd"}), "http or https"),
            (json!({"url": "http://127.0.0.1:1/x"}), "non-public"),
            (json!({"url": "http://[::1]:1/x"}), "non-public"),
            (json!({"url": "http://localhost:1/x"}), "non-public"),
            (json!({"url": "https://example.com", "method": "GET"}), "unknown variant"),
            (json!({"url": "https://example.com", "headers": {"bad header": "x"}}), "header"),
            (json!({"url": "https://example.com", "headers": {"Content-Length": "1"}}), "set by the worker"),
        ] {
            match webhook.run(context("webhook", payload.clone(), 1)).await {
                Err(HandlerError::Permanent(m)) => assert!(m.contains(expected), "{payload}: {m}"),
                other => panic!("{payload}: expected a permanent error, got {other:?}"),
            }
        }
    }
}
