//! What one user may take of the queue everybody shares: a cap on unfinished tasks and on
//! priority, for everyone but admins.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_error, TestApp};

#[tokio::test]
async fn a_user_with_too_many_unfinished_tasks_is_told_to_wait_and_nothing_is_created() {
    let app = TestApp::spawn_with(&[("USER_MAX_UNFINISHED_TASKS", "5")]).await;
    let (ann, ben) = (app.user("ann").await, app.user("ben").await);
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(app.create(&ann, &json!({"title": format!("ann {i}")})).await["id"].as_i64().unwrap());
    }
    let bulk = |n: usize| json!({"tasks": (0..n).map(|i| json!({"title": format!("bulk {i}")})).collect::<Vec<_>>()});
    let refused = app.post("/tasks/bulk", &ann, &bulk(2)).await;
    assert_eq!(refused.headers()["retry-after"], "5");
    let body = assert_error(refused, 429, "too_many_tasks").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("5 or more tasks pending or running"), "{body}");
    assert_eq!(app.task_count().await, 4, "a bulk past the cap creates none of its tasks");
    assert_eq!(app.post("/tasks", &ann, &json!({"title": "fifth"})).await.status(), 201);
    assert_error(app.post("/tasks", &ann, &json!({"title": "sixth"})).await, 429, "too_many_tasks").await;

    // Another user, and admins, are not held back by ann's backlog.
    assert_eq!(app.post("/tasks", &ben, &json!({"title": "ben's"})).await.status(), 201);
    assert_eq!(app.post("/tasks/bulk", &app.admin, &bulk(10)).await.status(), 201);

    // Finished tasks no longer count, once the replica counts again.
    for id in &ids[..2] {
        app.finish(*id, "completed").await;
    }
    tokio::time::sleep(flowforge_api::quota::RECOUNT_EVERY).await;
    assert_eq!(app.post("/tasks/bulk", &ann, &bulk(2)).await.status(), 201);
    assert_error(app.post("/tasks", &ann, &json!({"title": "over again"})).await, 429, "too_many_tasks").await;
}

#[tokio::test]
async fn only_admins_may_raise_priority_above_the_cap() {
    let app = TestApp::spawn_with(&[("USER_MAX_PRIORITY", "10")]).await;
    let ann = app.user("ann").await;
    let body = assert_error(
        app.post("/tasks", &ann, &json!({"title": "urgent", "priority": 100})).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(body["error"]["details"][0]["field"], "priority");
    assert_eq!(body["error"]["details"][0]["message"], "above 10 can be set only by an admin");
    let bulk = json!({"tasks": [{"title": "fine", "priority": 10}, {"title": "too high", "priority": 11}]});
    let body = assert_error(app.post("/tasks/bulk", &ann, &bulk).await, 422, "validation_failed").await;
    assert_eq!(body["error"]["details"][0]["field"], "tasks[1].priority");
    assert_eq!(app.task_count().await, 0);

    let task = app.create(&ann, &json!({"title": "within the cap", "priority": 10})).await;
    let id = task["id"].as_i64().unwrap();
    let raised = app.patch(&format!("/tasks/{id}"), &ann, &json!({"priority": 50})).await;
    assert_error(raised, 422, "validation_failed").await;
    assert_eq!(app.patch(&format!("/tasks/{id}"), &ann, &json!({"priority": -5})).await.status(), 200);

    let by_admin = app.request(Method::PATCH, &format!("/tasks/{id}"), &app.admin).json(&json!({"priority": 100}));
    let r = by_admin.send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["data"]["priority"], 100);
}
