//! Start-up and shutdown behaviour of the service.

use std::time::{Duration, Instant};

use flowforge_api::Application;
use flowforge_testkit::eventually;
use tokio_util::sync::CancellationToken;

use crate::helpers::{settings, TestApp};

#[tokio::test]
async fn shutdown_reports_not_ready_first_then_closes() {
    let app = TestApp::spawn_with(&[("SHUTDOWN_DELAY", "1500ms")]).await;
    let ready = |app: &TestApp| {
        let url = format!("{}/ready", app.base);
        let client = app.client.clone();
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    };
    assert_eq!(ready(&app).await.unwrap(), 200);
    let asked = Instant::now();
    app.begin_shutdown();
    // During the delay the replica still answers, but tells load balancers to go away.
    eventually(Duration::from_secs(1), "/ready to fail", || async {
        (ready(&app).await.ok() == Some(503)).then_some(())
    })
    .await;
    let health = app.client.get(format!("{}/health", app.base)).send().await.unwrap();
    assert_eq!(health.status(), 200, "still alive while draining");
    assert_eq!(app.get("/tasks", &app.admin).await.status(), 200, "in-flight traffic is still served");
    // Then the listener closes.
    eventually(Duration::from_secs(5), "the listener to close", || async { ready(&app).await.is_err().then_some(()) })
        .await;
    assert!(asked.elapsed() >= Duration::from_millis(1400), "closed before the delay: {:?}", asked.elapsed());
}

#[tokio::test]
async fn housekeeping_expires_idempotency_keys_and_audit_records_older_than_a_week() {
    let app = TestApp::spawn().await;
    for (key, age) in [("old", "2 days"), ("fresh", "1 hour")] {
        sqlx::query(&format!(
            "INSERT INTO idempotency_keys (owner_id, key, request_hash, created_at) VALUES (1, $1, '\\x00', now() - interval '{age}')"
        ))
        .bind(key)
        .execute(&app.db.pool)
        .await
        .unwrap();
    }
    for age in ["100 days", "3 days"] {
        sqlx::query(&format!(
            "INSERT INTO audit_log (method, route, path, status, at) VALUES ('POST', '/tasks', '/tasks', 201, now() - interval '{age}')"
        ))
        .execute(&app.db.pool)
        .await
        .unwrap();
    }
    // Housekeeping runs when a replica starts (and hourly after). A retention shorter than
    // a week still keeps the last week's records: the app can't erase recent ones.
    let second = Application::build(settings(&app.db, &[("AUDIT_RETENTION", "1h")])).await.unwrap();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(second.run_until_stopped(async move { stopped.cancelled().await }));
    eventually(Duration::from_secs(10), "expired rows to go", || async {
        let keys: Vec<String> =
            sqlx::query_scalar("SELECT key FROM idempotency_keys").fetch_all(&app.db.pool).await.unwrap();
        let audit: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log").fetch_one(&app.db.pool).await.unwrap();
        (keys == ["fresh"] && audit == 1).then_some(())
    })
    .await;
    stop.cancel();
}

/// A request stuck past `REQUEST_TIMEOUT` (here: waiting for a row another transaction
/// holds) is answered 503 `timeout`, counted, and leaves nothing changed.
#[tokio::test]
async fn a_request_past_its_time_is_stopped_and_changes_nothing() {
    let app = TestApp::spawn_with(&[("REQUEST_TIMEOUT", "1s")]).await;
    let task = app.create(&app.admin, &serde_json::json!({"title": "locked"})).await;
    let id = task["id"].as_i64().unwrap();
    let mut holder = app.db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE").bind(id).execute(&mut *holder).await.unwrap();
    let started = Instant::now();
    let r = app.patch(&format!("/tasks/{id}"), &app.admin, &serde_json::json!({"title": "never"})).await;
    let took = started.elapsed();
    let body = crate::helpers::assert_error(r, 503, "timeout").await;
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(5), "answered after {took:?}: {body}");
    holder.rollback().await.unwrap();
    let now: serde_json::Value = app.get(&format!("/tasks/{id}"), &app.admin).await.json().await.unwrap();
    assert_eq!(now["data"]["title"], "locked");
    assert_eq!(now["data"]["version"], task["version"], "nothing was written");
    assert!(app.metric("http_requests_total{method=\"PATCH\",route=\"/tasks/{id}\",status=\"503\"}").await >= 1.0);
}

/// A write that reaches a read-only server (a leader demoted by a switchover, before its
/// connections are cut) is answered 503 with Retry-After: the client retries and lands on
/// the new leader. It is not an internal error.
#[tokio::test]
async fn a_write_refused_as_read_only_is_answered_503_to_retry() {
    let app = TestApp::spawn().await;
    let name = &app.db.name;
    sqlx::query(&format!("ALTER DATABASE \"{name}\" SET default_transaction_read_only = on"))
        .execute(&app.db.pool)
        .await
        .unwrap();
    // Sessions keep the setting they started with: end them, so each new one is read-only.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    // The first answers may meet the ended sessions; the later ones meet read-only ones.
    for attempt in 0..5 {
        let r = app.post("/tasks", &app.admin, &serde_json::json!({"title": "refused"})).await;
        assert!(r.headers().contains_key("retry-after"), "attempt {attempt}: no Retry-After");
        crate::helpers::assert_error(r, 503, "unavailable").await;
    }
    assert_eq!(app.task_count().await, 0, "nothing was written");
}
