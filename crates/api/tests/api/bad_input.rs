//! Every kind of bad input gets a clear 4xx JSON error, and nothing is written.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_error, TestApp};

#[tokio::test]
async fn bad_bodies_are_refused_cleanly() {
    let app = TestApp::spawn().await;
    let id = app.create(&app.admin, &json!({"title": "existing"})).await["id"].as_i64().unwrap();
    let before = app.task_count().await;
    let raw = |method: Method, path: &str, body: &'static str| {
        app.request(method, path, &app.admin).header("Content-Type", "application/json").body(body).send()
    };

    assert_error(raw(Method::POST, "/tasks", "{\"title\": ").await.unwrap(), 400, "malformed_json").await;
    assert_error(raw(Method::POST, "/tasks", "not json at all").await.unwrap(), 400, "malformed_json").await;
    assert_error(raw(Method::POST, "/tasks", "").await.unwrap(), 400, "malformed_json").await;
    let wrong_type =
        assert_error(raw(Method::POST, "/tasks", r#"{"title": 123}"#).await.unwrap(), 422, "validation_failed").await;
    assert!(wrong_type["error"]["details"][0]["message"].as_str().unwrap().contains("title"), "{wrong_type}");
    let unknown = assert_error(
        raw(Method::POST, "/tasks", r#"{"title": "x", "colour": "red"}"#).await.unwrap(),
        422,
        "validation_failed",
    )
    .await;
    assert!(unknown["error"]["details"][0]["message"].as_str().unwrap().contains("colour"), "{unknown}");
    assert_error(
        raw(Method::POST, "/tasks", r#"{"description": "no title"}"#).await.unwrap(),
        422,
        "validation_failed",
    )
    .await;
    assert_error(raw(Method::POST, "/tasks", r#"[1, 2, 3]"#).await.unwrap(), 422, "validation_failed").await;

    let no_content_type =
        app.request(Method::POST, "/tasks", &app.admin).body(r#"{"title": "x"}"#).send().await.unwrap();
    assert_error(no_content_type, 415, "unsupported_media_type").await;

    let huge = format!(r#"{{"title": "big", "description": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let r = app
        .request(Method::POST, "/tasks", &app.admin)
        .header("Content-Type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_error(r, 413, "payload_too_large").await;

    let invalid = assert_error(
        app.post("/tasks", &app.admin, &json!({"title": "  ", "priority": 101, "max_attempts": 0, "kind": "UPPER"}))
            .await,
        422,
        "validation_failed",
    )
    .await;
    let fields: Vec<&str> =
        invalid["error"]["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["title", "kind", "priority", "max_attempts"], "every problem at once");

    for body in [
        json!({"title": "nul", "description": "a\0b"}),
        json!({"title": "nul", "payload": {"k": "a\0b"}}),
        json!({"title": "nul", "payload": {"a\0": 1}}),
        json!({"title": "huge", "payload": {"n": [1.7976931348623155e308]}}),
        json!({"title": "ancient", "run_at": "-10000-01-01T00:00:00Z"}),
    ] {
        assert_error(app.post("/tasks", &app.admin, &body).await, 422, "validation_failed").await;
    }
    assert_error(app.post("/api/v1/tokens", &app.admin, &json!({"name": "a\0"})).await, 422, "validation_failed").await;

    let bulk = json!({"tasks": [{"title": "ok"}, {"title": ""}, {"title": "ok too"}]});
    let r = assert_error(app.post("/tasks/bulk", &app.admin, &bulk).await, 422, "validation_failed").await;
    assert_eq!(r["error"]["details"][0]["field"], "tasks[1].title");
    let too_many: Vec<Value> = (0..1001).map(|i| json!({"title": format!("t{i}")})).collect();
    assert_error(app.post("/tasks/bulk", &app.admin, &json!({"tasks": too_many})).await, 422, "validation_failed")
        .await;
    assert_error(app.post("/tasks/bulk", &app.admin, &json!({"tasks": []})).await, 422, "validation_failed").await;

    let path = format!("/tasks/{id}");
    assert_error(
        app.request(Method::PUT, &path, &app.admin).json(&json!({"description": "no title"})).send().await.unwrap(),
        422,
        "validation_failed",
    )
    .await;
    // An empty change changes nothing, and says so by answering the task as it is.
    assert_eq!(app.patch(&path, &app.admin, &json!({})).await.status(), 200);
    assert_error(app.patch(&path, &app.admin, &json!({"status": "completed"})).await, 422, "validation_failed").await;
    assert_error(
        app.request(Method::PATCH, &path, &app.admin)
            .header("If-Match", "yesterday")
            .json(&json!({"title": "x"}))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_if_match",
    )
    .await;
    let long_key = "k".repeat(300);
    assert_error(
        app.request(Method::POST, "/tasks", &app.admin)
            .header("Idempotency-Key", long_key)
            .json(&json!({"title": "x"}))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_idempotency_key",
    )
    .await;

    assert_eq!(app.task_count().await, before, "a refused request wrote something");
    let unchanged: Value = app.get(&path, &app.admin).await.json().await.unwrap();
    assert_eq!(unchanged["data"]["title"], "existing");
    assert_eq!(unchanged["data"]["version"], 1);
}

#[tokio::test]
async fn bad_ids_queries_and_routes_are_refused_cleanly() {
    let app = TestApp::spawn().await;
    for path in ["/tasks/abc", "/tasks/-1", "/tasks/0", "/tasks/99999999999999999999", "/tasks/1.5"] {
        assert_error(app.get(path, &app.admin).await, 400, "invalid_id").await;
    }
    assert_error(app.get("/tasks/424242", &app.admin).await, 404, "not_found").await;
    assert_error(app.get("/tasks?cursor=%%%", &app.admin).await, 400, "invalid_cursor").await;
    assert_error(app.get("/tasks?cursor=bm90LWEtY3Vyc29y", &app.admin).await, 400, "invalid_cursor").await;
    assert_error(app.get("/tasks?limit=0", &app.admin).await, 400, "invalid_limit").await;
    assert_error(app.get("/tasks?limit=lots", &app.admin).await, 400, "invalid_query").await;
    assert_error(app.get("/tasks?limit=-5", &app.admin).await, 400, "invalid_query").await;
    assert_error(app.get("/tasks?status=done", &app.admin).await, 400, "invalid_status").await;
    assert_error(app.get("/tasks?sort=title", &app.admin).await, 400, "invalid_sort").await;
    assert_error(app.get("/tasks?colour=red", &app.admin).await, 400, "invalid_query").await;
    assert_error(app.get("/tasks?q=a%00b", &app.admin).await, 400, "invalid_query").await;
    assert_error(app.get("/tasks?kind=%00", &app.admin).await, 400, "invalid_query").await;
    assert_error(app.get("/nowhere", &app.admin).await, 404, "not_found").await;
    let r = app.request(Method::PUT, "/tasks", &app.admin).json(&json!({})).send().await.unwrap();
    assert_error(r, 405, "method_not_allowed").await;
}
