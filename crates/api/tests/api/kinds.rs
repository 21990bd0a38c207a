//! Task kinds: only the kinds the deployment runs are accepted, each payload is checked
//! against its kind's type at the door, and user strings never become metric labels.

use serde_json::{json, Value};

use crate::helpers::{assert_error, TestApp};

fn fields(body: &Value) -> Vec<String> {
    body["error"]["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap().to_owned()).collect()
}

/// The `/metrics` lines that are series (not comments).
async fn series(app: &TestApp) -> Vec<String> {
    let text = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    let mut names: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(s, _)| s.to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_hundred_bogus_kinds_in_one_bulk_call_are_refused_and_add_no_series() {
    let app = TestApp::spawn().await;
    app.create(&app.admin, &json!({"title": "warm up", "kind": "noop"})).await;
    let before_series = series(&app).await;
    let before_tasks = app.task_count().await;
    let tasks: Vec<Value> = (0..100).map(|i| json!({"title": "bogus", "kind": format!("no-such-kind-{i}")})).collect();
    let refused =
        assert_error(app.post("/tasks/bulk", &app.admin, &json!({ "tasks": tasks })).await, 422, "validation_failed")
            .await;
    let refused_fields = fields(&refused);
    assert_eq!(refused_fields.len(), 100);
    assert!(refused_fields.iter().enumerate().all(|(i, f)| *f == format!("tasks[{i}].kind")), "{refused_fields:?}");
    assert!(!refused.to_string().contains("no-such-kind"), "the caller's strings are not echoed: {refused}");
    assert_eq!(app.task_count().await, before_tasks, "nothing written");
    let after_series = series(&app).await;
    let new: Vec<&String> = after_series.iter().filter(|s| !before_series.contains(s)).collect();
    assert!(new.iter().all(|s| !s.contains("no-such-kind")), "user strings became labels: {new:?}");
    assert!(new.iter().all(|s| !s.contains("kind=")), "no kind series added: {new:?}");
}

#[tokio::test]
async fn payloads_are_checked_against_their_kind_at_create_and_update() {
    let app = TestApp::spawn().await;
    for (body, field) in [
        (json!({"title": "t", "kind": "sleep"}), "payload"),
        (json!({"title": "t", "kind": "sleep", "payload": {"duration_ms": "soon"}}), "payload.duration_ms"),
        (json!({"title": "t", "kind": "sleep", "payload": {"duration_ms": 3_600_001}}), "payload.duration_ms"),
        (json!({"title": "t", "kind": "webhook", "payload": {"url": "ftp://example.com/"}}), "payload.url"),
        (
            json!({"title": "t", "kind": "webhook", "payload": {"url": "https://x.test", "headers": {"Host": "y"}}}),
            "payload.headers.Host",
        ),
        (json!({"title": "t", "kind": "panic"}), "kind"),
    ] {
        let refused = assert_error(app.post("/tasks", &app.admin, &body).await, 422, "validation_failed").await;
        assert_eq!(fields(&refused), [field], "{body}");
    }
    let sleep = app.create(&app.admin, &json!({"title": "t", "kind": "sleep", "payload": {"duration_ms": 5}})).await;
    let path = format!("/tasks/{}", sleep["id"]);
    // Changing only the payload (or only the kind) is checked against the task's other
    // half: a conflict with the task as it is (409), with the fields named as in a 422.
    let refused = assert_error(
        app.patch(&path, &app.admin, &json!({"payload": {"duration": 5}})).await,
        409,
        "payload_does_not_fit_kind",
    )
    .await;
    assert_eq!(fields(&refused), ["payload.duration"]);
    let refused =
        assert_error(app.patch(&path, &app.admin, &json!({"kind": "fail"})).await, 409, "payload_does_not_fit_kind")
            .await;
    assert_eq!(fields(&refused), ["payload.duration_ms"]);
    // Both halves in one change are the body's own problem: 422.
    let refused = assert_error(
        app.patch(&path, &app.admin, &json!({"kind": "sleep", "payload": {"duration_ms": -1}})).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(fields(&refused), ["payload.duration_ms"]);
    let r = app.patch(&path, &app.admin, &json!({"kind": "echo"})).await;
    assert_eq!(r.status(), 200);
    let changed: Value = r.json().await.unwrap();
    assert_eq!(changed["data"]["kind"], "echo");
}

#[tokio::test]
async fn the_kinds_are_listed_with_their_schema_and_chaos_kinds_only_when_enabled() {
    let app = TestApp::spawn().await;
    let listed: Value = app.get("/api/v1/kinds", &app.admin).await.json().await.unwrap();
    let names: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|k| k["kind"].as_str().unwrap()).collect();
    assert_eq!(names, ["echo", "noop", "sleep", "fail", "webhook"]);
    let sleep = &listed["data"][2];
    assert_eq!(sleep["payload_schema"]["required"], json!(["duration_ms"]));
    assert_eq!(sleep["example"], json!({"duration_ms": 1500}));
    // Every example is accepted as it stands.
    for kind in listed["data"].as_array().unwrap() {
        let body = json!({"title": "example", "kind": kind["kind"], "payload": kind["example"]});
        assert_eq!(app.post("/tasks", &app.admin, &body).await.status(), 201, "{body}");
    }
    assert_error(app.client.get(format!("{}/api/v1/kinds", app.base)).send().await.unwrap(), 401, "unauthorized").await;

    let chaos = TestApp::spawn_with(&[("CHAOS_HANDLERS", "true")]).await;
    let r = chaos.post("/tasks", &chaos.admin, &json!({"title": "boom", "kind": "panic"})).await;
    assert_eq!(r.status(), 201);
}
