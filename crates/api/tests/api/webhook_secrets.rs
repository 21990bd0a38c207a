use serde_json::{json, Value};

use crate::helpers::{assert_error, TestApp};

#[tokio::test]
async fn each_user_gets_their_own_secret_shown_once_and_rotates_it_with_an_overlap() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    assert_eq!(app.get("/api/v1/webhook-secrets", &alice).await.json::<Value>().await.unwrap()["data"], json!([]));

    let r = app.post("/api/v1/webhook-secrets", &alice, &json!({})).await;
    assert_eq!(r.status(), 201);
    let first: Value = r.json().await.unwrap();
    let first_secret = first["data"]["secret"].as_str().unwrap().to_owned();
    assert!(first_secret.starts_with("whsec_"), "{first}");
    let r = app.post("/api/v1/webhook-secrets", &bob, &json!({"previous_valid_for_secs": 0})).await;
    let bob_secret = r.json::<Value>().await.unwrap()["data"]["secret"].as_str().unwrap().to_owned();
    assert_ne!(first_secret, bob_secret);

    // Rotated with an hour's overlap: two sign, the new one first; listing shows no secret.
    let r = app.post("/api/v1/webhook-secrets", &alice, &json!({"previous_valid_for_secs": 3600})).await;
    let second: Value = r.json().await.unwrap();
    assert_ne!(second["data"]["secret"], first["data"]["secret"]);
    let listed: Value = app.get("/api/v1/webhook-secrets", &alice).await.json().await.unwrap();
    let listed = listed["data"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["id"], second["data"]["id"]);
    assert!(listed[0]["retires_at"].is_null() && listed[1]["retires_at"].is_string(), "{listed:?}");
    assert!(!Value::Array(listed.clone()).to_string().contains("whsec_"), "a listing showed a secret");
    // Bob sees only his.
    let bobs: Value = app.get("/api/v1/webhook-secrets", &bob).await.json().await.unwrap();
    assert_eq!(bobs["data"].as_array().unwrap().len(), 1);

    // Audited, and nothing stored or logged in clear.
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE target LIKE 'webhook-secret:%'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(audited, 3);
    let dump: Vec<String> = sqlx::query_scalar("SELECT encode(sealed, 'base64') FROM webhook_secrets")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert!(dump.iter().all(|s| !first_secret.contains(s.as_str()) && !s.contains(&first_secret[6..20])));
}

#[tokio::test]
async fn bad_rotation_requests_are_refused_clearly() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let r = app.post("/api/v1/webhook-secrets", &alice, &json!({"previous_valid_for_secs": 10_000_000})).await;
    let body = assert_error(r, 422, "validation_failed").await;
    assert_eq!(body["error"]["details"][0]["field"], "previous_valid_for_secs", "{body}");
    let r = app.post("/api/v1/webhook-secrets", &alice, &json!({"overlap": 1})).await;
    assert_eq!(r.status(), 422);
    let r = app.client.post(format!("{}/api/v1/webhook-secrets", app.base)).json(&json!({})).send().await.unwrap();
    assert_error(r, 401, "unauthorized").await;
}
