//! What the web UI relies on: cookie sessions with CSRF protection, the live event
//! stream, and the operations metrics endpoint.

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::helpers::{assert_error, TestApp};

const COOKIE: &str = "__Host-flowforge_session";

struct SignedIn {
    cookie: String,
    csrf: String,
    set_cookie: String,
}

async fn sign_in(app: &TestApp, token: &str) -> SignedIn {
    let r =
        app.client.post(format!("{}/api/v1/session", app.base)).json(&json!({ "token": token })).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    let value = set_cookie.split(';').next().unwrap().strip_prefix(&format!("{COOKIE}=")).unwrap().to_owned();
    SignedIn {
        cookie: format!("{COOKIE}={value}"),
        csrf: body["data"]["csrf_token"].as_str().unwrap().into(),
        set_cookie,
    }
}

async fn with_cookie(
    app: &TestApp,
    method: Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> Response {
    let mut r = app.client.request(method, format!("{}{path}", app.base)).header("cookie", cookie);
    if let Some(csrf) = csrf {
        r = r.header("x-csrf-token", csrf);
    }
    if let Some(body) = body {
        r = r.json(&body);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn signing_in_sets_a_hardened_cookie_and_signing_out_ends_the_session() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let s = sign_in(&app, &alice).await;
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(s.set_cookie.contains(attribute), "{attribute} missing from {}", s.set_cookie);
    }
    assert!(!s.set_cookie.contains("Domain"), "__Host- cookies carry no Domain");

    let r = with_cookie(&app, Method::GET, "/api/v1/session", &s.cookie, None, None).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["data"]["user"]["name"], "alice");
    assert_eq!(body["data"]["csrf_token"], s.csrf.as_str());
    assert_eq!(with_cookie(&app, Method::GET, "/api/v1/tasks", &s.cookie, None, None).await.status(), 200);

    // Signing out needs the CSRF token too, clears the cookie and ends the session.
    let r = with_cookie(&app, Method::DELETE, "/api/v1/session", &s.cookie, None, None).await;
    assert_error(r, 403, "csrf_failed").await;
    let r = with_cookie(&app, Method::DELETE, "/api/v1/session", &s.cookie, Some(&s.csrf), None).await;
    assert_eq!(r.status(), 204);
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    let r = with_cookie(&app, Method::GET, "/api/v1/session", &s.cookie, None, None).await;
    assert_error(r, 401, "unauthorized").await;

    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE path = '/api/v1/session' AND user_id = (SELECT id FROM users WHERE name = 'alice')",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 2, "sign-in and sign-out are audited");
}

#[tokio::test]
async fn changes_with_a_cookie_need_the_csrf_token_and_lose_nothing_without_it() {
    let app = TestApp::spawn().await;
    let s = sign_in(&app, &app.user("alice").await).await;
    let task = json!({ "title": "from the board" });
    for csrf in [None, Some("wrong"), Some("")] {
        let r = with_cookie(&app, Method::POST, "/api/v1/tasks", &s.cookie, csrf, Some(task.clone())).await;
        assert_error(r, 403, "csrf_failed").await;
    }
    assert_eq!(app.task_count().await, 0);
    let r = with_cookie(&app, Method::POST, "/api/v1/tasks", &s.cookie, Some(&s.csrf), Some(task)).await;
    assert_eq!(r.status(), 201);
    assert_eq!(app.task_count().await, 1);
    // A bearer token needs no CSRF token: it is never sent by a browser on its own.
    assert_eq!(app.post("/api/v1/tasks", &app.admin, &json!({ "title": "api" })).await.status(), 201);
}

#[tokio::test]
async fn sign_in_refuses_bad_tokens_clearly_and_revoking_the_token_ends_its_sessions() {
    let app = TestApp::spawn().await;
    let url = format!("{}/api/v1/session", app.base);
    let body = assert_error(
        app.client.post(&url).json(&json!({ "token": " " })).send().await.unwrap(),
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(body["error"]["details"][0]["field"], "token");
    let r = app.client.post(&url).json(&json!({ "token": "ff_wrong" })).send().await.unwrap();
    assert!(r.headers().get("set-cookie").is_none());
    assert_error(r, 401, "unauthorized").await;
    assert_error(app.client.post(&url).json(&json!({ "tok": "x" })).send().await.unwrap(), 422, "validation_failed")
        .await;
    let r = with_cookie(&app, Method::GET, "/api/v1/session", &format!("{COOKIE}=made-up"), None, None).await;
    assert_error(r, 401, "unauthorized").await;

    let issued: Value =
        app.post("/api/v1/tokens", &app.admin, &json!({ "name": "browser" })).await.json().await.unwrap();
    let s = sign_in(&app, issued["data"]["token"].as_str().unwrap()).await;
    let id = issued["data"]["id"].as_i64().unwrap();
    assert!(app
        .request(Method::DELETE, &format!("/api/v1/tokens/{id}"), &app.admin)
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    let r = with_cookie(&app, Method::GET, "/api/v1/tasks", &s.cookie, None, None).await;
    assert_error(r, 401, "unauthorized").await;
}

/// Reads an event stream until `done` holds for the text so far, or 10 s pass.
async fn read_until(r: &mut Response, text: &mut String, done: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(text) {
        match tokio::time::timeout_at(deadline, r.chunk()).await {
            Ok(Ok(Some(bytes))) => text.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("stream ended or timed out ({other:?}) with: {text}"),
        }
    }
}

#[tokio::test]
async fn the_event_stream_sends_each_caller_the_changes_they_may_see() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mut stream = app.get("/api/v1/events", &alice).await;
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    read_until(&mut stream, &mut text, |t| t.contains("event: ready")).await;

    let bobs = app.create(&bob, &json!({ "title": "bob's secret" })).await;
    let mine = app
        .create(&alice, &json!({ "title": "alice's", "kind": "echo", "payload": {"large": "x".repeat(1000)} }))
        .await;
    let id = mine["id"].as_i64().unwrap();
    read_until(&mut stream, &mut text, |t| t.contains("\"title\":\"alice's\"")).await;
    assert!(text.contains("event: task"));
    // Events carry what the board shows; the payload, result and errors are read on demand.
    assert!(!text.contains("\"payload\"") && !text.contains("\"result\"") && !text.contains("xxxx"), "{text}");
    assert!(!text.contains("bob's secret"), "another user's task leaked: {text}");

    app.finish(id, "completed").await;
    read_until(&mut stream, &mut text, |t| t.contains("\"status\":\"completed\"")).await;
    app.request(Method::DELETE, &format!("/tasks/{id}"), &alice).send().await.unwrap();
    read_until(&mut stream, &mut text, |t| t.contains(&format!("event: deleted\ndata: {{\"id\":{id}}}"))).await;

    // Admins see everyone's.
    let mut admin_stream = app.get("/api/v1/events", &app.admin).await;
    let mut admin_text = String::new();
    read_until(&mut admin_stream, &mut admin_text, |t| t.contains("event: ready")).await;
    app.finish(bobs["id"].as_i64().unwrap(), "failed").await;
    read_until(&mut admin_stream, &mut admin_text, |t| t.contains("bob's secret")).await;

    // Draining ends the streams, so browsers reconnect to a replica that stays.
    app.begin_shutdown();
    let ended =
        tokio::time::timeout(Duration::from_secs(10), async { while let Ok(Some(_)) = stream.chunk().await {} }).await;
    assert!(ended.is_ok(), "the stream stayed open after draining began");
}

#[tokio::test]
async fn the_operations_view_is_for_admins_and_says_when_prometheus_is_missing() {
    let app = TestApp::spawn_with(&[("PROMETHEUS_URL", "http://127.0.0.1:9")]).await;
    assert_error(app.get("/api/v1/ops/metrics", &app.user("alice").await).await, 403, "forbidden").await;
    assert_error(app.get("/api/v1/ops/metrics?minutes=0", &app.admin).await, 400, "invalid_minutes").await;
    assert_error(app.get("/api/v1/ops/metrics?range=5", &app.admin).await, 400, "invalid_query").await;
    let r = app.get("/api/v1/ops/metrics", &app.admin).await;
    assert_eq!(r.headers()["retry-after"], "5");
    let body = assert_error(r, 503, "metrics_unavailable").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("Prometheus"), "{body}");

    let unconfigured = TestApp::spawn().await;
    let body =
        assert_error(unconfigured.get("/api/v1/ops/metrics", &unconfigured.admin).await, 503, "metrics_unavailable")
            .await;
    assert!(body["error"]["message"].as_str().unwrap().contains("FLOWFORGE_PROMETHEUS_URL"), "{body}");
}

#[tokio::test]
async fn event_streams_are_capped_per_user_and_per_replica() {
    let app = TestApp::spawn_with(&[("MAX_STREAMS_PER_USER", "2"), ("MAX_STREAMS", "3")]).await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut open = Vec::new();
    for _ in 0..2 {
        let r = app.get("/api/v1/events", &alice).await;
        assert_eq!(r.status(), 200);
        open.push(r);
    }
    let r = app.get("/api/v1/events", &alice).await;
    assert!(r.headers().contains_key("retry-after"));
    assert_error(r, 429, "too_many_streams").await;
    // Another user still gets one, up to what the replica allows.
    let r = app.get("/api/v1/events", &bob).await;
    assert_eq!(r.status(), 200);
    open.push(r);
    assert_error(app.get("/api/v1/events", &bob).await, 429, "too_many_streams").await;
    assert_eq!(app.metric("event_streams").await, 3.0);
}
