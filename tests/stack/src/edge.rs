//! The entry point as a user meets it: HTTPS only, pinned TLS, a task created and
//! completed, bad kinds refused, the web UI's headers, and one trace from the proxy
//! through the api to the worker.

use std::process::{Command, Stdio};

use serde_json::json;

use crate::harness::{wait_for, Checks, Stack};
use crate::Scenario;

pub const SCENARIOS: &[(&str, Scenario)] = &[
    ("edge::https_only", https_only),
    ("edge::task_round_trip", task_round_trip),
    ("edge::web_and_metrics", web_and_metrics),
    ("edge::one_trace", one_trace),
];

/// True if a TLS handshake with the proxy succeeds with these openssl options.
fn handshake(stack: &Stack, options: &[&str]) -> bool {
    Command::new("openssl")
        .args(["s_client", "-connect", &format!("localhost:{}", stack.https_port)])
        .args(options)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn https_only(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let plain = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let r = plain.get(format!("http://localhost:{}/tasks", stack.http_port)).send()?;
    let location = r.headers().get("location").and_then(|l| l.to_str().ok()).unwrap_or_default().to_owned();
    checks.check(
        format!("HTTP redirects to HTTPS ({} {location})", r.status().as_u16()),
        r.status().as_u16() == 301 && location == format!("https://localhost:{}/tasks", stack.https_port),
    );
    let pinned = handshake(stack, &["-tls1_3"])
        && handshake(stack, &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"])
        && !handshake(stack, &["-tls1_2", "-cipher", "AES256-SHA256"])
        && !handshake(stack, &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"])
        && !handshake(stack, &["-tls1_1"]);
    checks
        .check("TLS: 1.3, and 1.2 with forward-secret AEAD ciphers only (no CBC, no RSA key exchange, no 1.1)", pinned);
    Ok(())
}

fn task_round_trip(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let id = stack.create_task(&json!({"title": "system test", "kind": "echo", "payload": {"hello": "stack"}}))?;
    let completed = wait_for(30, || stack.task_field(id, "status") == "completed");
    checks.check(format!("task {id} created over HTTPS is completed by a worker"), completed);
    let unknown = stack.post_status("/tasks", &json!({"title": "typo", "kind": "no-such-kind"}));
    checks.check(format!("a task of a kind no worker runs is refused at the door ({unknown})"), unknown == 422);
    Ok(())
}

fn web_and_metrics(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let metrics = stack.client().get(format!("{}/metrics", stack.base)).send()?.status().as_u16();
    checks.check(format!("metrics are not exposed through the proxy ({metrics})"), metrics == 404);
    let page = stack.client().get(format!("{}/", stack.base)).send()?;
    let header = |name: &str| page.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (csp, hsts) = (header("content-security-policy"), header("strict-transport-security"));
    let html = page.text()?;
    checks.check(
        "the web UI is served at / with CSP and HSTS",
        csp.starts_with("default-src") && !hsts.is_empty() && html.contains("<title>FlowForge</title>"),
    );
    Ok(())
}

/// No traceparent sent: the proxy starts the trace; the api keeps its id with the task
/// and the worker logs it with the attempt that failed (a quick completion is not logged
/// at info). Found with the documented search, in the log store.
fn one_trace(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let request_id = format!("systest-trace-{}", std::process::id() as u64 * 7919 + rand_suffix());
    let reply = stack.send(
        stack
            .request(reqwest::Method::POST, "/tasks")
            .header("X-Request-Id", &request_id)
            .json(&json!({"title": "traced", "kind": "fail", "payload": {"fail_attempts": 1}})),
    )?;
    let task = reply.data("id").clone();
    let mut trace_id = String::new();
    let traced = wait_for(30, || {
        let Ok(lines) = stack.stack(["search", &request_id]) else { return false };
        let Some(found) = lines.split("trace_id=").nth(1) else { return false };
        trace_id = found.chars().take_while(char::is_ascii_hexdigit).collect();
        if trace_id.len() != 32 {
            return false;
        }
        let Ok(lines) = stack.stack(["search", &trace_id]) else { return false };
        // The store names each line's container: PROJECT-SERVICE-N (or with underscores).
        let from = |service: &str, with: &[&str]| {
            lines.lines().any(|l| {
                let name = l.split("\"service\":\"").nth(1).and_then(|v| v.split('"').next()).unwrap_or_default();
                name.split(['-', '_']).any(|part| part == service) && with.iter().all(|w| l.contains(w))
            })
        };
        from("proxy", &[]) && from("worker", &["attempt finished", "failed"])
    });
    checks.check(
        format!("task {task}: the trace the proxy started is in the log store from the proxy and the worker"),
        traced,
    );
    println!("     trace {trace_id}, request {request_id}");
    Ok(())
}

/// A few changing digits, so that reruns on a kept stack search for a new request id.
fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos() as u64).unwrap_or(0)
}
