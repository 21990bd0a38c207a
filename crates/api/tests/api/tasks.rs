use reqwest::Method;
use serde_json::{json, Value};

use flowforge_api::creations::Creation;
use flowforge_queue::NewTask;

use crate::helpers::{assert_error, TestApp};

#[tokio::test]
async fn the_seed_contract_works_as_written() {
    let app = TestApp::spawn().await;
    let health: Value = app.client.get(format!("{}/health", app.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health, json!({"status": "healthy", "database": "connected"}));

    let r = app
        .post(
            "/tasks",
            &app.admin,
            &json!({"title": "Critical Data", "description": "This data MUST survive disaster", "status": "pending"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert!(r.headers()["location"].to_str().unwrap().starts_with("/tasks/"));
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["success"], true);
    let task = &created["data"];
    let id = task["id"].as_i64().unwrap();
    assert_eq!(task["title"], "Critical Data");
    assert_eq!(task["description"], "This data MUST survive disaster");
    assert_eq!(task["status"], "pending");
    assert!(task["created_at"].is_string() && task["updated_at"].is_string());

    let got: Value = app.get(&format!("/tasks/{id}"), &app.admin).await.json().await.unwrap();
    assert_eq!(got["success"], true);
    assert_eq!(got["data"]["id"], id);

    let list: Value = app.get("/tasks", &app.admin).await.json().await.unwrap();
    assert_eq!(list["success"], true);
    assert!(list["data"].as_array().unwrap().iter().any(|t| t["id"] == id));

    let r = app
        .request(Method::PUT, &format!("/tasks/{id}"), &app.admin)
        .json(&json!({"title": "Renamed", "description": "new"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let put: Value = r.json().await.unwrap();
    assert_eq!((put["data"]["title"].as_str(), put["data"]["description"].as_str()), (Some("Renamed"), Some("new")));

    let patched: Value =
        app.patch(&format!("/tasks/{id}"), &app.admin, &json!({"description": "patched"})).await.json().await.unwrap();
    assert_eq!(patched["data"]["title"], "Renamed");
    assert_eq!(patched["data"]["description"], "patched");

    let r = app.request(Method::DELETE, &format!("/tasks/{id}"), &app.admin).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["success"], true);
    assert_error(app.get(&format!("/tasks/{id}"), &app.admin).await, 404, "not_found").await;

    // The versioned path serves the same handlers.
    let v1 = app.post("/api/v1/tasks", &app.admin, &json!({"title": "v1"})).await;
    assert_eq!(v1.status(), 201);
}

#[tokio::test]
async fn probes_metrics_and_openapi() {
    let app = TestApp::spawn().await;
    let ready = app.client.get(format!("{}/ready", app.base)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["database"], "connected");
    app.create(&app.admin, &json!({"title": "counted", "kind": "noop"})).await;
    assert!(app.metric("tasks_created_total{kind=\"noop\"}").await >= 1.0);
    assert!(app.metric("http_requests_total{method=\"POST\",route=\"/tasks\",status=\"201\"}").await >= 1.0);
    assert!(
        app.metric("http_request_duration_seconds_count{method=\"POST\",route=\"/tasks\",status=\"201\"}").await >= 1.0
    );
    let doc: Value = app.client.get(format!("{}/openapi.json", app.base)).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/tasks", "/tasks/{id}", "/tasks/bulk", "/tasks/{id}/cancel", "/tasks/{id}/retry", "/health", "/ready"]
    {
        assert!(doc["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    assert!(doc["components"]["schemas"]["CreateTask"].is_object());
    for method in ["get", "put", "patch", "delete"] {
        assert!(doc["paths"]["/tasks/{id}"][method].is_object(), "{method} /tasks/{{id}} missing");
    }
    // The routers make the document: every route under /api/v1 is there, at its full path.
    for (path, method) in [
        ("/api/v1/me", "get"),
        ("/api/v1/kinds", "get"),
        ("/api/v1/tokens/{id}", "delete"),
        ("/api/v1/session", "post"),
        ("/api/v1/session", "delete"),
        ("/api/v1/webhook-secrets", "post"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} missing");
    }
    // A parameter said to be in the path is in the path (the rest are in the query).
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["in"] == "path" {
                    let name = parameter["name"].as_str().unwrap();
                    assert!(path.contains(&format!("{{{name}}}")), "{method} {path}: {name} is not in the path");
                }
            }
        }
    }
    let operations: usize = doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(operations, 25, "one operation per route and method");
}

#[tokio::test]
async fn keyset_pagination_filters_and_sorting() {
    let app = TestApp::spawn().await;
    let tasks: Vec<Value> = (0..25)
        .map(|i| {
            json!({"title": format!("task {i} {}", if i % 5 == 0 { "needle" } else { "hay" }),
                         "kind": if i % 2 == 0 { "noop" } else { "echo" }, "priority": i % 3})
        })
        .collect();
    let r = app.post("/tasks/bulk", &app.admin, &json!({"tasks": tasks})).await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["data"].as_array().unwrap().len(), 25);

    for sort in ["-created_at", "created_at", "-priority", "priority"] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _page in 0..10 {
            let mut path = format!("/tasks?limit=10&sort={sort}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page: Value = app.get(&path, &app.admin).await.json().await.unwrap();
            let rows = page["data"].as_array().unwrap();
            seen.extend(rows.iter().map(|t| (t["priority"].as_i64().unwrap(), t["id"].as_i64().unwrap())));
            match page["pagination"]["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(seen.len(), 25, "{sort}: every task exactly once");
        let mut expected = seen.clone();
        match sort {
            "-created_at" => expected.sort_by_key(|(_, id)| std::cmp::Reverse(*id)),
            "created_at" => expected.sort_by_key(|(_, id)| *id),
            "-priority" => expected.sort_by_key(|(p, id)| std::cmp::Reverse((*p, *id))),
            _ => expected.sort(),
        }
        assert_eq!(seen, expected, "{sort}: order");
    }

    let count = |v: Value| v["data"].as_array().unwrap().len();
    assert_eq!(count(app.get("/tasks?kind=noop&limit=200", &app.admin).await.json().await.unwrap()), 13);
    assert_eq!(count(app.get("/tasks?q=NEEDLE", &app.admin).await.json().await.unwrap()), 5);
    assert_eq!(count(app.get("/tasks?status=pending,failed", &app.admin).await.json().await.unwrap()), 25);
    assert_eq!(count(app.get("/tasks?status=completed", &app.admin).await.json().await.unwrap()), 0);
    // LIKE metacharacters are searched literally.
    assert_eq!(count(app.get("/tasks?q=%25", &app.admin).await.json().await.unwrap()), 0);
}

#[tokio::test]
async fn idempotency_keys_replay_instead_of_duplicating() {
    let app = TestApp::spawn().await;
    let body = json!({"title": "charge card", "kind": "noop"});
    let send = |body: Value| {
        let app = &app;
        async move {
            app.request(Method::POST, "/tasks", &app.admin)
                .header("Idempotency-Key", "order-42")
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let first = send(body.clone()).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = send(body.clone()).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["data"]["id"], again["data"]["id"]);
    assert_eq!(app.task_count().await, 1);
    assert_error(send(json!({"title": "something else"})).await, 409, "idempotency_key_reused").await;
    assert_eq!(app.task_count().await, 1);
    // Keys belong to their user: another user may use the same key.
    let bob = app.user("bob").await;
    let r = app
        .request(Method::POST, "/tasks", &bob)
        .header("Idempotency-Key", "order-42")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(app.task_count().await, 2);

    // Concurrent retries with one key create one task.
    let results = futures_join(&app, "burst").await;
    let ids: std::collections::HashSet<i64> = results.into_iter().collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(app.task_count().await, 3);
}

async fn futures_join(app: &TestApp, key: &str) -> Vec<i64> {
    let mut handles = Vec::new();
    for _ in 0..8 {
        let req = app
            .request(Method::POST, "/tasks", &app.admin)
            .header("Idempotency-Key", key)
            .json(&json!({"title": "burst"}));
        handles.push(tokio::spawn(async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap()["data"]["id"].as_i64().unwrap()
        }));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.push(h.await.unwrap());
    }
    ids
}

#[tokio::test]
async fn if_match_guards_against_lost_updates() {
    let app = TestApp::spawn().await;
    let id = app.create(&app.admin, &json!({"title": "v1"})).await["id"].as_i64().unwrap();
    let r = app.get(&format!("/tasks/{id}"), &app.admin).await;
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let ok = app
        .request(Method::PATCH, &format!("/tasks/{id}"), &app.admin)
        .header("If-Match", &etag)
        .json(&json!({"title": "v2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let new_etag = ok.headers()["etag"].to_str().unwrap().to_string();
    assert_ne!(etag, new_etag);
    // A second writer still holding the old version is refused, and changes nothing.
    let stale = app
        .request(Method::PATCH, &format!("/tasks/{id}"), &app.admin)
        .header("If-Match", &etag)
        .json(&json!({"title": "v3"}))
        .send()
        .await
        .unwrap();
    assert_error(stale, 412, "precondition_failed").await;
    let stale_delete = app
        .request(Method::DELETE, &format!("/tasks/{id}"), &app.admin)
        .header("If-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_error(stale_delete, 412, "precondition_failed").await;
    let now: Value = app.get(&format!("/tasks/{id}"), &app.admin).await.json().await.unwrap();
    assert_eq!(now["data"]["title"], "v2");
}

#[tokio::test]
async fn cancel_retry_and_what_may_change_when() {
    let app = TestApp::spawn().await;
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let id = app.create(&app.admin, &json!({"title": "later", "run_at": later})).await["id"].as_i64().unwrap();
    let r = app.post(&format!("/tasks/{id}/cancel"), &app.admin, &json!({})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["data"]["status"], "cancelled");
    // Cancelling again is harmless.
    assert_eq!(app.post(&format!("/tasks/{id}/cancel"), &app.admin, &json!({})).await.status(), 200);
    let r = app.post(&format!("/tasks/{id}/retry"), &app.admin, &json!({})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["data"]["status"], "pending");
    assert_error(app.post(&format!("/tasks/{id}/retry"), &app.admin, &json!({})).await, 409, "task_not_retryable")
        .await;

    // The same through PATCH status.
    let r = app.patch(&format!("/tasks/{id}"), &app.admin, &json!({"status": "cancelled"})).await;
    assert_eq!(r.json::<Value>().await.unwrap()["data"]["status"], "cancelled");
    let r = app.patch(&format!("/tasks/{id}"), &app.admin, &json!({"status": "pending"})).await;
    assert_eq!(r.json::<Value>().await.unwrap()["data"]["status"], "pending");

    // Once finished, the queue fields are frozen, the description is not.
    app.finish(id, "completed").await;
    assert_error(
        app.patch(&format!("/tasks/{id}"), &app.admin, &json!({"priority": 5})).await,
        409,
        "task_not_pending",
    )
    .await;
    assert_eq!(app.patch(&format!("/tasks/{id}"), &app.admin, &json!({"description": "notes"})).await.status(), 200);
    assert_error(app.post(&format!("/tasks/{id}/cancel"), &app.admin, &json!({})).await, 409, "task_finished").await;

    // A running task cannot be deleted.
    sqlx::query("UPDATE tasks SET status = 'running', lease_token = gen_random_uuid() WHERE id = $1")
        .bind(id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let r = app.request(Method::DELETE, &format!("/tasks/{id}"), &app.admin).send().await.unwrap();
    assert_error(r, 409, "task_running").await;
    let r = app.post(&format!("/tasks/{id}/cancel"), &app.admin, &json!({})).await;
    assert_eq!(r.status(), 202, "cancelling a running task is a request to its worker");
    assert_eq!(r.json::<Value>().await.unwrap()["data"]["cancel_requested"], true);
}

#[tokio::test]
async fn request_ids_are_echoed_and_stored_with_the_task() {
    let app = TestApp::spawn().await;
    let r = app
        .request(Method::POST, "/tasks", &app.admin)
        .header("X-Request-Id", "req-abc-123")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .json(&json!({"title": "traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-abc-123");
    let task: Value = r.json().await.unwrap();
    assert_eq!(task["data"]["request_id"], "req-abc-123");
    assert_eq!(task["data"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    // A malformed id is replaced, not trusted.
    let r = app
        .request(Method::GET, "/tasks", &app.admin)
        .header("X-Request-Id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
}

#[tokio::test]
async fn a_patch_is_all_or_nothing_and_if_match_guards_status_changes_too() {
    let app = TestApp::spawn().await;
    let id = app.create(&app.admin, &json!({"title": "original"})).await["id"].as_i64().unwrap();
    app.finish(id, "completed").await;
    let path = format!("/tasks/{id}");
    // A retry of a completed task is refused, so the title change in the same request is not made.
    assert_error(
        app.patch(&path, &app.admin, &json!({"title": "half", "status": "pending"})).await,
        409,
        "task_not_retryable",
    )
    .await;
    let task: Value = app.get(&path, &app.admin).await.json().await.unwrap();
    assert_eq!(task["data"]["title"], "original");
    let version = task["data"]["version"].as_i64().unwrap();
    app.finish(id, "failed").await;
    assert_eq!(app.patch(&path, &app.admin, &json!({"description": "moves the version on"})).await.status(), 200);
    let stale = app
        .request(Method::PATCH, &path, &app.admin)
        .header("If-Match", format!("\"{version}\""))
        .json(&json!({"status": "pending"}))
        .send()
        .await
        .unwrap();
    assert_error(stale, 412, "precondition_failed").await;
    let task: Value = app.get(&path, &app.admin).await.json().await.unwrap();
    assert_eq!(task["data"]["status"], "failed", "a stale If-Match changed the status");
}

#[tokio::test]
async fn a_change_that_finds_every_turn_taken_is_refused_quickly_and_loses_nothing() {
    // Two changes in flight at once; a third waits at most 50 ms.
    let app = TestApp::spawn_with(&[("WRITE_CONCURRENCY", "2"), ("WRITE_QUEUE_TIMEOUT", "50ms")]).await;
    let task = app.create(&app.admin, &json!({"title": "contended"})).await;
    let id = task["id"].as_i64().unwrap();

    // Hold the task's row so two edits of it stay in flight, holding both turns.
    let mut lock = app.db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE").bind(id).execute(&mut *lock).await.unwrap();
    let edits: Vec<_> = (0..2)
        .map(|_| {
            let edit =
                app.request(Method::PATCH, &format!("/tasks/{id}"), &app.admin).json(&json!({"title": "edited"}));
            tokio::spawn(edit.send())
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let started = std::time::Instant::now();
    let refused = app.post("/tasks", &app.admin, &json!({"title": "refused"})).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "refused at once, not after the pool's timeout");
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_error(refused, 429, "overloaded").await;

    lock.rollback().await.unwrap();
    for edit in edits {
        assert_eq!(edit.await.unwrap().unwrap().status(), 200, "the changes in flight went through");
    }
    assert_eq!(app.post("/tasks", &app.admin, &json!({"title": "later"})).await.status(), 201);
    let titles: Vec<String> =
        sqlx::query_scalar("SELECT title FROM tasks ORDER BY id").fetch_all(&app.db.pool).await.unwrap();
    assert_eq!(titles, ["edited", "later"], "the refused task was not created");
    assert_eq!(app.metric("overloaded_requests_total").await, 1.0);
}

#[tokio::test]
async fn concurrent_creations_commit_together_each_with_its_own_owner_and_audit_row() {
    // Every request in flight at once, none turned away.
    let app = TestApp::spawn_with(&[
        ("WRITE_CONCURRENCY", "200"),
        ("WRITE_QUEUE_TIMEOUT", "10s"),
        ("RATE_LIMIT_PER_MINUTE", "100000"),
    ])
    .await;
    let (ann, ben) = (app.user("ann").await, app.user("ben").await);
    let requests: Vec<_> = (0..120)
        .map(|i| {
            let (who, token) = if i % 2 == 0 { ("ann", &ann) } else { ("ben", &ben) };
            let req = app
                .request(Method::POST, "/tasks", token)
                .header("X-Request-Id", format!("burst-{i}"))
                .json(&json!({"title": format!("{who} {i}")}));
            tokio::spawn(async move {
                let r = req.send().await.unwrap();
                assert_eq!(r.status(), 201);
                r.json::<Value>().await.unwrap()["data"].clone()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for r in requests {
        answers.push(r.await.unwrap());
    }

    let rows: Vec<CreatedRow> = sqlx::query_as(
        "SELECT t.id, t.title, u.name AS owner, t.request_id, a.request_id AS audited_request
         FROM tasks t JOIN users u ON u.id = t.owner_id
              JOIN audit_log a ON a.target = 'task:' || t.id AND a.user_id = t.owner_id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 120, "one task and one audit row per request");
    for row in &rows {
        let answer = answers.iter().find(|a| a["id"] == row.id).expect("every task was answered");
        assert_eq!(answer["title"], row.title);
        assert!(row.title.starts_with(&row.owner), "{} is owned by its creator, not {}", row.title, row.owner);
        assert_eq!(row.request_id, row.audited_request, "the audit row is the creating request's");
    }
    let transactions: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM tasks").fetch_one(&app.db.pool).await.unwrap();
    assert!(transactions < 120, "creations arriving together share commits ({transactions} transactions)");
}

#[derive(sqlx::FromRow)]
struct CreatedRow {
    id: i64,
    title: String,
    owner: String,
    request_id: Option<String>,
    audited_request: Option<String>,
}

#[tokio::test]
async fn a_creation_the_database_refuses_does_not_take_its_batch_with_it() {
    let app = TestApp::spawn().await;
    let task = |title: &str, max_attempts: i32| Creation {
        tasks: vec![NewTask { title: title.to_owned(), max_attempts, ..NewTask::new("noop", json!({})) }],
        many: false,
        audit: None,
    };
    // Sent before the batcher first runs, so they share a transaction; the database
    // refuses the one with no attempts allowed.
    let results = futures::future::join_all(
        (0..20).map(|i| app.state.creations.create(task(&format!("good {i}"), if i == 7 { 0 } else { 3 }))),
    )
    .await;
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.is_ok(), i != 7, "creation {i}: {:?}", result.as_ref().err());
    }
    assert_eq!(app.task_count().await, 19);
}

#[tokio::test]
async fn with_no_connection_to_be_had_each_creation_is_refused_within_the_acquire_timeout() {
    let app = TestApp::spawn_with(&[
        ("DATABASE_MAX_CONNECTIONS", "2"),
        ("DATABASE_ACQUIRE_TIMEOUT", "2s"),
        ("AUTH_CACHE_TTL", "60s"),
        ("WRITE_CONCURRENCY", "20"),
        ("WRITE_QUEUE_TIMEOUT", "10s"),
    ])
    .await;
    app.create(&app.admin, &json!({"title": "before"})).await; // the token is checked now
                                                               // Every connection the pool will give (the live feed keeps one of its own).
    let mut held = Vec::new();
    while let Ok(conn) = tokio::time::timeout(std::time::Duration::from_millis(300), app.state.db.acquire()).await {
        held.push(conn.unwrap());
    }
    assert!(!held.is_empty());

    // Three waves: the first two batches wait for a connection, the third queues behind
    // them, and must not wait for theirs and then for its own.
    let create = |i: usize| {
        let req = app.request(Method::POST, "/tasks", &app.admin).json(&json!({"title": format!("t{i}")}));
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let r = req.send().await.unwrap();
            (r.status(), started.elapsed())
        })
    };
    let mut sent: Vec<_> = (0..2).map(create).collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    sent.extend((2..4).map(create));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    sent.extend((4..8).map(create));
    for (i, s) in sent.into_iter().enumerate() {
        let (status, took) = s.await.unwrap();
        assert_eq!(status, 503, "creation {i}");
        assert!(took < std::time::Duration::from_millis(3_000), "creation {i} answered after {took:?}");
    }
    drop(held);
    app.create(&app.admin, &json!({"title": "after"})).await;
    assert_eq!(app.task_count().await, 2, "nothing refused was created");
}
