//! `webhook`: delivers a signed JSON request to a URL the task names.
//!
//! Signed as [Standard Webhooks](https://www.standardwebhooks.com/) specifies, with the
//! secret of the user who created the task (`POST /api/v1/webhook-secrets`): headers
//! `webhook-id` (unique per attempt, naming the task and attempt), `webhook-timestamp`
//! and `webhook-signature` (`v1,<base64>`, two space-separated while the user's secret is
//! being rotated). See `flowforge_webhooks` for the scheme, and docs/api.md for receivers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use flowforge_kinds as kinds;
use flowforge_queue::{HandlerError, TaskContext, TaskHandler};
use flowforge_webhooks::{Delivery, SecretStore, StoreError, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::{redirect, Client, Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::config::WebhookSettings;

/// How much of the receiver's answer is kept in the task's result or error.
const MAX_RESPONSE_BYTES: usize = 4096;

pub struct Webhook {
    client: Client,
    secrets: SecretStore,
    guard: Option<Arc<TargetGuard>>,
    allowed_ports: Option<Vec<u16>>,
}

impl Webhook {
    pub fn new(settings: &WebhookSettings, secrets: SecretStore) -> Self {
        // Redirects are not followed: a receiver could otherwise bounce the request (and
        // its signature) anywhere, including addresses the SSRF guard refuses.
        // No proxy: a proxy would resolve the target itself, out of the SSRF guard's sight.
        let mut builder = Client::builder().timeout(settings.timeout).redirect(redirect::Policy::none()).no_proxy();
        let guard = (!settings.allow_private).then(|| Arc::new(TargetGuard::with_own_addresses()));
        if let Some(guard) = &guard {
            builder = builder.dns_resolver(guard.clone());
        }
        Webhook {
            client: builder.build().expect("a rustls client with these options always builds"),
            secrets,
            guard,
            allowed_ports: settings.allowed_ports.clone(),
        }
    }

    /// The signing secrets of the task's owner, current first.
    async fn secrets_for(&self, ctx: &TaskContext) -> Result<Vec<flowforge_webhooks::SigningSecret>, HandlerError> {
        let owner = ctx.owner_id.ok_or_else(|| permanent("the task has no owner whose secret could sign it"))?;
        let secrets = self.secrets.signing_secrets(owner).await.map_err(|e| match e {
            // An operator retired the deployment key too early; fixing it lets the retry through.
            StoreError::UnknownKey => HandlerError::Retryable(format!("webhook: {e}")),
            StoreError::Database(e) => HandlerError::Retryable(format!("webhook: reading the signing secret: {e}")),
        })?;
        if secrets.is_empty() {
            return Err(permanent(
                "you have no webhook signing secret yet: create one (POST /api/v1/webhook-secrets), then retry the task",
            ));
        }
        Ok(secrets)
    }
}

/// The payload's URL and headers were validated when it was parsed; the target's port
/// and address depend on this worker's settings and are checked here.
#[async_trait]
impl TaskHandler<kinds::Webhook> for Webhook {
    async fn run(&self, request: kinds::Webhook, ctx: TaskContext) -> Result<Value, HandlerError> {
        let url = request.target();
        let mut headers = request.header_map();
        let port = url.port_or_known_default().unwrap_or_default();
        if let Some(allowed) = self.allowed_ports.as_ref().filter(|p| !p.contains(&port)) {
            return Err(permanent(format!(
                "port {port} is not allowed (allowed: {allowed:?}; see FLOWFORGE_WEBHOOK_ALLOWED_PORTS)"
            )));
        }
        if let Some(guard) = &self.guard {
            // Checked here for a clear, permanent error; the client's resolver checks again
            // at connect time, so a DNS answer that changes in between cannot slip through.
            let host = url.host_str().unwrap_or_default();
            let addrs = resolve(host, port)
                .await
                .map_err(|e| HandlerError::Retryable(format!("webhook: cannot resolve {host}: {e}")))?;
            guard.check(host, &addrs).map_err(permanent)?;
        }
        let secrets = self.secrets_for(&ctx).await?;
        let body = serde_json::to_vec(&request.body).expect("a JSON value always serialises");
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs() as i64;
        let id = Delivery::id_for(ctx.id, ctx.attempt);
        let signature = flowforge_webhooks::sign(&secrets, &Delivery { id: &id, timestamp, body: &body });
        // After the task's own headers, so a payload cannot forge these.
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ID_HEADER, HeaderValue::try_from(id).expect("ascii"));
        headers.insert(TIMESTAMP_HEADER, HeaderValue::from(timestamp));
        headers.insert(SIGNATURE_HEADER, HeaderValue::try_from(signature).expect("base64 is a valid header value"));
        // Unsigned conveniences; `webhook-id` carries both, signed.
        headers.insert("x-flowforge-task-id", HeaderValue::from(ctx.id));
        headers.insert("x-flowforge-attempt", HeaderValue::from(ctx.attempt));
        // A request id that is not a valid header value is left out rather than failing delivery.
        if let Some(request_id) = ctx.request_id.as_deref().and_then(|id| HeaderValue::from_str(id).ok()) {
            headers.insert("x-request-id", request_id);
        }
        let method = match request.method {
            kinds::WebhookMethod::Post => Method::POST,
            kinds::WebhookMethod::Put => Method::PUT,
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

/// Which targets a webhook may reach: public addresses only, and none of this machine's
/// own (a public address of the host would reach its services from outside the
/// containers' networks).
#[derive(Clone)]
struct TargetGuard {
    /// Shared: every connection's resolution takes a handle.
    own: Arc<[IpAddr]>,
}

impl TargetGuard {
    fn with_own_addresses() -> TargetGuard {
        let own = nix::ifaddrs::getifaddrs()
            .map(|addrs| {
                addrs
                    .filter_map(|a| a.address)
                    .filter_map(|a| {
                        a.as_sockaddr_in()
                            .map(|v4| IpAddr::V4(v4.ip()))
                            .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                    })
                    .collect()
            })
            .unwrap_or_default();
        TargetGuard { own }
    }

    /// Refuses a host with any address that is not public or is ours. The message names
    /// neither the address nor which rule refused it: the task's author sees it, and
    /// must not learn the layout of the networks behind the worker.
    fn check(&self, host: &str, addrs: &[SocketAddr]) -> Result<(), String> {
        match addrs.iter().any(|a| !is_public(a.ip()) || self.own.contains(&a.ip().to_canonical())) {
            true => Err(format!(
                "refusing {host}: it is not a public address this worker may call (FLOWFORGE_WEBHOOK_ALLOW_PRIVATE allows private ones)"
            )),
            false => Ok(()),
        }
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
impl Resolve for TargetGuard {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.clone();
        Box::pin(async move {
            let addrs = resolve(name.as_str(), 0).await?;
            guard.check(name.as_str(), &addrs)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::tests::context;

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
    async fn the_client_resolver_refuses_private_answers_and_our_own() {
        let refused = TargetGuard { own: Arc::from([]) }.resolve("localhost".parse().unwrap()).await.err().unwrap();
        assert!(refused.to_string().contains("not a public address"), "{refused}");
        assert!(!refused.to_string().contains("127.0.0.1"), "the address leaked: {refused}");
        let ours = TargetGuard { own: Arc::from(["8.8.8.8".parse().unwrap()]) };
        assert!(ours.check("us", &["8.8.8.8:443".parse().unwrap()]).is_err());
        assert!(ours.check("them", &["8.8.4.4:443".parse().unwrap()]).is_ok());
    }

    #[tokio::test]
    async fn bad_payloads_fail_permanently() {
        // Never connected: every payload here is refused before a secret is read.
        let db = sqlx::PgPool::connect_lazy("postgres://nowhere.invalid/x").unwrap();
        let settings = WebhookSettings {
            secrets_keys: flowforge_webhooks::DeploymentKeySettings {
                current: flowforge_platform::Secret::new("k"),
                previous: None,
            },
            timeout: std::time::Duration::from_secs(1),
            allow_private: false,
            allowed_ports: Some(vec![80, 443]),
        };
        let webhook = Webhook::new(&settings, SecretStore::new(db, settings.deployment_keys()));
        let webhook = flowforge_queue::Registry::new().handle(webhook).get("webhook").unwrap();
        for (payload, expected) in [
            (json!({}), "url"),
            (json!({"url": "not a url"}), "url: not a URL"),
            (json!({"url": "ftp://example.com/x"}), "http or https"),
            (json!({"url": "file:///etc/passwd"}), "http or https"),
            (json!({"url": "http://127.0.0.1/x"}), "not a public address"),
            (json!({"url": "http://[::1]/x"}), "not a public address"),
            (json!({"url": "http://localhost/x"}), "not a public address"),
            (json!({"url": "http://postgres:5432/"}), "port 5432 is not allowed"),
            (json!({"url": "https://example.com:8443/"}), "port 8443 is not allowed"),
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
