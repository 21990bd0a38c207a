use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_error, TestApp};

#[tokio::test]
async fn requests_without_a_valid_token_are_refused() {
    let app = TestApp::spawn().await;
    let r = app.client.get(format!("{}/tasks", app.base)).send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_error(r, 401, "unauthorized").await;
    assert_error(app.get("/tasks", "ff_not-a-real-token").await, 401, "unauthorized").await;
    assert_error(app.get("/tasks", "garbage").await, 401, "unauthorized").await;
    let r = app.client.get(format!("{}/tasks", app.base)).header("Authorization", "Basic YTpi").send().await.unwrap();
    assert_error(r, 401, "unauthorized").await;
}

#[tokio::test]
async fn users_see_only_their_own_tasks_and_admins_see_all() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let id = app.create(&alice, &json!({"title": "alice's"})).await["id"].as_i64().unwrap();
    app.create(&bob, &json!({"title": "bob's"})).await;

    let path = format!("/tasks/{id}");
    assert_error(app.get(&path, &bob).await, 404, "not_found").await;
    assert_error(app.patch(&path, &bob, &json!({"title": "mine now"})).await, 404, "not_found").await;
    assert_error(app.request(Method::DELETE, &path, &bob).send().await.unwrap(), 404, "not_found").await;
    assert_error(app.post(&format!("{path}/cancel"), &bob, &json!({})).await, 404, "not_found").await;
    assert_error(app.post(&format!("{path}/retry"), &bob, &json!({})).await, 404, "not_found").await;
    let bobs: Value = app.get("/tasks", &bob).await.json().await.unwrap();
    let titles: Vec<&str> = bobs["data"].as_array().unwrap().iter().map(|t| t["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["bob's"]);
    let alice_id: i64 =
        sqlx::query_scalar("SELECT id FROM users WHERE name = 'alice'").fetch_one(&app.db.pool).await.unwrap();
    assert_error(app.get(&format!("/tasks?owner={alice_id}"), &bob).await, 403, "forbidden").await;

    assert_eq!(app.get(&path, &alice).await.status(), 200);
    assert_eq!(app.get(&path, &app.admin).await.status(), 200);
    let all: Value = app.get("/tasks", &app.admin).await.json().await.unwrap();
    assert_eq!(all["data"].as_array().unwrap().len(), 2);
    let filtered: Value = app.get(&format!("/tasks?owner={alice_id}"), &app.admin).await.json().await.unwrap();
    assert_eq!(filtered["data"].as_array().unwrap().len(), 1);
    // The task did not change under bob's attempts.
    let task: Value = app.get(&path, &alice).await.json().await.unwrap();
    assert_eq!(task["data"]["title"], "alice's");
}

#[tokio::test]
async fn admins_manage_users_and_tokens_can_be_revoked() {
    let app = TestApp::spawn().await;
    let carol = app.user("carol").await;
    assert_error(
        app.post("/api/v1/users", &carol, &json!({"name": "mallory", "role": "admin"})).await,
        403,
        "forbidden",
    )
    .await;
    let r = app.post("/api/v1/users", &app.admin, &json!({"name": "dave"})).await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let dave = created["data"]["token"]["token"].as_str().unwrap().to_string();
    let me: Value = app.get("/api/v1/me", &dave).await.json().await.unwrap();
    assert_eq!(me["data"]["name"], "dave");
    assert_eq!(me["data"]["role"], "user");
    assert_error(app.post("/api/v1/users", &app.admin, &json!({"name": "dave"})).await, 409, "user_exists").await;
    assert_error(
        app.post("/api/v1/users", &app.admin, &json!({"name": "no spaces allowed"})).await,
        422,
        "validation_failed",
    )
    .await;

    let r = app.post("/api/v1/tokens", &dave, &json!({"name": "ci"})).await;
    assert_eq!(r.status(), 201);
    let second: Value = r.json().await.unwrap();
    let second_id = second["data"]["id"].as_i64().unwrap();
    let second_token = second["data"]["token"].as_str().unwrap().to_string();
    assert_eq!(app.get("/tasks", &second_token).await.status(), 200);
    assert_error(
        app.request(Method::DELETE, &format!("/api/v1/tokens/{second_id}"), &carol).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_eq!(
        app.request(Method::DELETE, &format!("/api/v1/tokens/{second_id}"), &dave).send().await.unwrap().status(),
        200
    );
    assert_error(app.get("/tasks", &second_token).await, 401, "unauthorized").await;
    assert_eq!(app.get("/tasks", &dave).await.status(), 200, "other tokens keep working");
    // Only hashes are stored.
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_tokens WHERE encode(token_hash, 'escape') LIKE '%' || $1 || '%'")
            .bind(&dave[3..20])
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn a_token_revoked_through_another_replica_stops_working_here_within_the_auth_cache_ttl() {
    let app = TestApp::spawn_with(&[("AUTH_CACHE_TTL", "700ms")]).await;
    let grace = app.user("grace").await;
    assert_eq!(app.get("/tasks", &grace).await.status(), 200);
    // Another replica revokes it: this one only sees the database change.
    sqlx::query("UPDATE api_tokens SET revoked_at = now() FROM users WHERE users.id = api_tokens.user_id AND users.name = 'grace'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let revoked = std::time::Instant::now();
    let mut last = 200;
    while revoked.elapsed() < std::time::Duration::from_secs(3) && last == 200 {
        last = app.get("/tasks", &grace).await.status().as_u16();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(last, 401, "still accepted 3 s after its revocation");
    assert!(revoked.elapsed() < std::time::Duration::from_millis(1500), "refused only after {:?}", revoked.elapsed());
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let app = TestApp::spawn_with(&[("RATE_LIMIT_PER_MINUTE", "5")]).await;
    let erin = app.user("erin").await;
    for _ in 0..5 {
        let r = app.get("/tasks", &erin).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ratelimit-limit"], "5");
    }
    let r = app.get("/tasks", &erin).await;
    let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=61).contains(&retry_after));
    assert_error(r, 429, "rate_limited").await;
    // Limits are per user.
    assert_eq!(app.get("/tasks", &app.admin).await.status(), 200);
    assert!(app.metric("rate_limited_requests_total").await >= 1.0);
}

#[tokio::test]
async fn every_state_changing_request_is_audited() {
    let app = TestApp::spawn().await;
    let frank = app.user("frank").await;
    let r = app
        .request(Method::POST, "/tasks", &frank)
        .header("X-Request-Id", "audit-1")
        .header("User-Agent", "audit-test")
        .json(&json!({"title": "audited"}))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["data"]["id"].as_i64().unwrap();
    app.patch(&format!("/tasks/{id}"), &frank, &json!({"title": "changed"})).await;
    app.request(Method::DELETE, &format!("/tasks/{id}"), &frank).send().await.unwrap();
    app.get("/tasks", &frank).await; // reads are not audited
    app.client.post(format!("{}/tasks", app.base)).json(&json!({"title": "no token"})).send().await.unwrap();
    app.state.refusals.write(&app.db.pool).await;

    let frank_id: i64 =
        sqlx::query_scalar("SELECT id FROM users WHERE name = 'frank'").fetch_one(&app.db.pool).await.unwrap();
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT user_id, method, route, target, status, request_id, client_ip, user_agent FROM audit_log ORDER BY id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    let create = &rows[0];
    assert_eq!(create.user_id, Some(frank_id));
    assert_eq!((create.method.as_str(), create.route.as_str(), create.status), ("POST", "/tasks", 201));
    assert_eq!(create.target, Some(format!("task:{id}")));
    assert_eq!(create.request_id.as_deref(), Some("audit-1"));
    assert_eq!(create.client_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(create.user_agent.as_deref(), Some("audit-test"));
    assert_eq!((rows[1].method.as_str(), rows[1].route.as_str(), rows[1].status), ("PATCH", "/tasks/{id}", 200));
    assert_eq!((rows[2].method.as_str(), rows[2].status), ("DELETE", 200));
    assert_eq!((rows[3].user_id, rows[3].status), (None, 401), "refused attempts are audited too");
}

#[derive(Debug, sqlx::FromRow)]
struct AuditRow {
    user_id: Option<i64>,
    method: String,
    route: String,
    target: Option<String>,
    status: i16,
    request_id: Option<String>,
    client_ip: Option<String>,
    user_agent: Option<String>,
}

#[derive(Debug, sqlx::FromRow, PartialEq)]
struct RefusalRow {
    status: i16,
    client_ip: Option<String>,
    occurrences: i32,
    path: String,
}

async fn anonymous_refusals(app: &TestApp) -> Vec<RefusalRow> {
    sqlx::query_as("SELECT status, client_ip, occurrences, path FROM audit_log WHERE user_id IS NULL ORDER BY id")
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_address_sending_bad_credentials_is_limited_before_any_lookup_and_its_refusals_are_tallied() {
    let app = TestApp::spawn_with(&[("AUTH_FAILURES_PER_MINUTE", "10")]).await;
    let known = app.user("known").await;
    assert_eq!(app.get("/tasks", &known).await.status(), 200);
    // A browser asking whether it is signed in presents nothing and costs nothing: not counted.
    for _ in 0..15 {
        let r = app.client.get(format!("{}/api/v1/session", app.base)).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
    let mut statuses = Vec::new();
    for i in 0..20 {
        let request = app.client.post(format!("{}/tasks", app.base)).json(&json!({"title": "x"}));
        let request = if i % 2 == 0 { request } else { request.bearer_auth(format!("ff_guess{i}")) };
        let r = request.send().await.unwrap();
        if r.status() == 429 {
            let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=61).contains(&retry_after));
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses[..10], [401; 10], "{statuses:?}");
    assert_eq!(statuses[10..], [429; 10], "{statuses:?}");
    // A token this replica checked before the flood still works from that address; one
    // it would have to look up waits for the window to pass.
    assert_eq!(app.get("/tasks", &known).await.status(), 200);
    let fresh = app.user("fresh").await;
    assert_error(app.get("/tasks", &fresh).await, 429, "rate_limited").await;

    // Tallied: nothing yet, then one row per kind with its count.
    assert!(anonymous_refusals(&app).await.is_empty());
    app.state.refusals.write(&app.db.pool).await;
    let rows = anonymous_refusals(&app).await;
    let mut counts: Vec<(i16, i32)> = rows.iter().map(|r| (r.status, r.occurrences)).collect();
    counts.sort_unstable();
    assert_eq!(counts, [(401, 10), (429, 10)], "{rows:?}");
    assert!(rows.iter().all(|r| r.client_ip.as_deref() == Some("127.0.0.1")));
}

#[tokio::test]
async fn stored_paths_are_capped() {
    let app = TestApp::spawn().await;
    let long = format!("/tasks/{}", "9".repeat(4000));
    let r = app.client.patch(format!("{}{long}", app.base)).json(&json!({"title": "x"})).send().await.unwrap();
    assert_error(r, 401, "unauthorized").await;
    app.state.refusals.write(&app.db.pool).await;
    let rows = anonymous_refusals(&app).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].path.len(), 512);
    assert!(long.starts_with(&rows[0].path));
}

/// Failed sign-ins from one client, each with another forged `X-Forwarded-For`.
async fn sign_in_attempts_with_forged_addresses(app: &TestApp, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for i in 0..n {
        let r = app
            .client
            .post(format!("{}/api/v1/session", app.base))
            .header("X-Forwarded-For", format!("198.51.100.{i}"))
            .json(&json!({ "token": format!("ff_guess{i}") }))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    statuses
}

#[tokio::test]
async fn a_forged_forwarded_for_neither_escapes_the_limit_nor_reaches_the_audit() {
    // Not behind a trusted proxy: the header is ignored.
    let app = TestApp::spawn_with(&[("AUTH_FAILURES_PER_MINUTE", "5")]).await;
    let statuses = sign_in_attempts_with_forged_addresses(&app, 8).await;
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
    app.state.refusals.write(&app.db.pool).await;
    assert!(anonymous_refusals(&app).await.iter().all(|r| r.client_ip.as_deref() == Some("127.0.0.1")));

    // Behind a trusted proxy (this test client plays it): the hop it added is the client,
    // and whatever the client wrote left of it is not.
    let app = TestApp::spawn_with(&[("AUTH_FAILURES_PER_MINUTE", "5"), ("TRUSTED_PROXIES", "127.0.0.1")]).await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let r = app
            .client
            .post(format!("{}/api/v1/session", app.base))
            .header("X-Forwarded-For", format!("198.51.100.{i}, 203.0.113.9"))
            .json(&json!({ "token": "ff_guess" }))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
    app.state.refusals.write(&app.db.pool).await;
    let rows = anonymous_refusals(&app).await;
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r.client_ip.as_deref() == Some("203.0.113.9")), "{rows:?}");
}

#[tokio::test]
async fn tokens_expire_are_listed_without_secrets_and_are_capped_per_user() {
    let app = TestApp::spawn_with(&[("TOKEN_TTL", "30d"), ("MAX_TOKENS_PER_USER", "3")]).await;
    let erin = app.user("erin").await; // one working token (no expiry: issued directly)
    let r = app.post("/api/v1/tokens", &erin, &json!({"name": "ci"})).await;
    assert_eq!(r.status(), 201);
    let issued: Value = r.json().await.unwrap();
    let expires: chrono::DateTime<chrono::Utc> = issued["data"]["expires_at"].as_str().unwrap().parse().unwrap();
    let in_30_days = chrono::Utc::now() + chrono::Duration::days(30);
    assert!((expires - in_30_days).num_seconds().abs() < 60, "expires {expires}, expected about {in_30_days}");
    let short = app.post("/api/v1/tokens", &erin, &json!({"name": "short", "ttl_secs": 3600})).await;
    let short: Value = short.json().await.unwrap();
    let short_token = short["data"]["token"].as_str().unwrap().to_owned();

    // The cap: three working tokens, a fourth is refused until one is revoked.
    assert_error(app.post("/api/v1/tokens", &erin, &json!({})).await, 409, "too_many_tokens").await;
    let listed: Value = app.get("/api/v1/tokens", &erin).await.json().await.unwrap();
    let listed = listed["data"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(listed[0]["name"], "short");
    assert!(listed.iter().all(|t| t.get("token").is_none() && t.get("token_hash").is_none()), "{listed:?}");
    assert!(!Value::Array(listed.clone()).to_string().contains(&short_token), "a listing showed a token");
    let ci_id = issued["data"]["id"].as_i64().unwrap();
    assert_eq!(
        app.request(Method::DELETE, &format!("/api/v1/tokens/{ci_id}"), &erin).send().await.unwrap().status(),
        200
    );
    assert_eq!(app.post("/api/v1/tokens", &erin, &json!({})).await.status(), 201);
    // Others' tokens are not listed.
    let admin_list: Value = app.get("/api/v1/tokens", &app.admin).await.json().await.unwrap();
    assert_eq!(admin_list["data"].as_array().unwrap().len(), 1);

    // Past its time a token stops working.
    sqlx::query("UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE prefix = $1")
        .bind(&short_token[..9])
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_error(app.get("/tasks", &short_token).await, 401, "unauthorized").await;
    // Asking for longer than the deployment allows is refused, with the field named.
    let r = app.post("/api/v1/tokens", &app.admin, &json!({"ttl_secs": 40 * 24 * 3600})).await;
    let body = assert_error(r, 422, "validation_failed").await;
    assert_eq!(body["error"]["details"][0]["field"], "ttl_secs");
}
