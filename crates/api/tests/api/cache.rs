//! The Redis cache never serves stale data, and the API works without Redis.

use std::time::{Duration, Instant};

use flowforge_testkit::{eventually, RedisServer, TlsFiles};
use serde_json::{json, Value};

use crate::helpers::{assert_error, TestApp};

#[tokio::test]
async fn finished_tasks_are_cached_and_every_api_write_invalidates() {
    let app = TestApp::spawn().await;
    let id = app.create(&app.admin, &json!({"title": "cache me"})).await["id"].as_i64().unwrap();
    app.finish(id, "completed").await;
    let path = format!("/tasks/{id}");
    let first: Value = app.get(&path, &app.admin).await.json().await.unwrap();
    let hits_before = app.metric("cache_requests_total{result=\"hit\"}").await;
    let second: Value = app.get(&path, &app.admin).await.json().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(
        app.metric("cache_requests_total{result=\"hit\"}").await,
        hits_before + 1.0,
        "second read came from the cache"
    );

    // Each API write is visible on the very next read.
    let r = app.patch(&path, &app.admin, &json!({"description": "edited"})).await;
    assert_eq!(r.status(), 200);
    let after_edit: Value = app.get(&path, &app.admin).await.json().await.unwrap();
    assert_eq!(after_edit["data"]["description"], "edited");
    app.finish(id, "failed").await;
    app.post(&format!("{path}/retry"), &app.admin, &json!({})).await;
    let after_retry: Value = app.get(&path, &app.admin).await.json().await.unwrap();
    assert_eq!(after_retry["data"]["status"], "pending");
    app.finish(id, "completed").await;
    app.get(&path, &app.admin).await;
    app.client.delete(format!("{}{path}", app.base)).bearer_auth(&app.admin).send().await.unwrap();
    assert_error(app.get(&path, &app.admin).await, 404, "not_found").await;

    // A cached task is still private to its owner.
    let other = app.user("other").await;
    let id2 = app.create(&app.admin, &json!({"title": "admin's"})).await["id"].as_i64().unwrap();
    app.finish(id2, "completed").await;
    app.get(&format!("/tasks/{id2}"), &app.admin).await;
    assert_error(app.get(&format!("/tasks/{id2}"), &other).await, 404, "not_found").await;
}

#[tokio::test]
async fn with_redis_stopped_the_api_keeps_answering_correctly() {
    let mut redis = RedisServer::start();
    let app = TestApp::spawn_with(&[("REDIS_URL", &redis.url()), ("RATE_LIMIT_PER_MINUTE", "1000")]).await;
    let id = app.create(&app.admin, &json!({"title": "before"})).await["id"].as_i64().unwrap();
    app.finish(id, "completed").await;
    let path = format!("/tasks/{id}");
    app.get(&path, &app.admin).await;
    app.get(&path, &app.admin).await; // cached now

    redis.kill();
    let started = Instant::now();
    for _ in 0..5 {
        let r = app.get(&path, &app.admin).await;
        assert_eq!(r.status(), 200);
    }
    // A write while Redis is down must not leave the old version readable later.
    let r = app.patch(&path, &app.admin, &json!({"title": "during outage"})).await;
    assert_eq!(r.status(), 200);
    let now: Value = app.get(&path, &app.admin).await.json().await.unwrap();
    assert_eq!(now["data"]["title"], "during outage");
    let created = app.create(&app.admin, &json!({"title": "created without redis"})).await;
    assert!(created["id"].as_i64().is_some());
    let list: Value = app.get("/tasks", &app.admin).await.json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert!(started.elapsed() < Duration::from_secs(8), "degraded mode is slow: {:?}", started.elapsed());
    let ready = app.client.get(format!("{}/ready", app.base)).send().await.unwrap();
    assert_eq!(ready.status(), 200, "Redis is optional for readiness");
    assert_eq!(ready.json::<Value>().await.unwrap()["redis"], "unavailable");
    assert!(app.metric("redis_errors_total").await >= 1.0);
}

#[tokio::test]
async fn with_the_database_unreachable_the_api_answers_503_quickly() {
    let port = flowforge_testkit::free_port();
    // Pointed at a closed port: nothing answers there.
    let dead = TestApp::spawn_with(&[
        ("DATABASE_URL", &format!("postgres://postgres@127.0.0.1:{port}/none")),
        ("DATABASE_ACQUIRE_TIMEOUT", "1s"),
    ])
    .await;
    let started = Instant::now();
    let r = dead.get("/tasks", &dead.admin).await;
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(r.headers()["retry-after"], "5");
    assert_error(r, 503, "unavailable").await;
    let health: Value = dead.client.get(format!("{}/health", dead.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health, json!({"status": "degraded", "database": "disconnected"}));
    assert_eq!(dead.client.get(format!("{}/ready", dead.base)).send().await.unwrap().status(), 503);
}

#[tokio::test]
async fn an_invalidation_missed_during_an_outage_reaches_the_other_replicas_afterwards() {
    let redis_server = RedisServer::start();
    let overrides = [("REDIS_URL", redis_server.url()), ("RATE_LIMIT_PER_MINUTE", "0".into())];
    let overrides: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = TestApp::spawn_with(&overrides).await;
    // Replica B: same database, same Redis, same key prefix.
    let b_app = flowforge_api::Application::build(crate::helpers::settings(&a.db, &overrides)).await.unwrap();
    let b = format!("http://{}", b_app.local_addr());
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(b_app.run_until_stopped(async move { stopped.cancelled().await }));
    let id = a.create(&a.admin, &json!({"title": "shared"})).await["id"].as_i64().unwrap();
    a.finish(id, "completed").await;
    let path = format!("/tasks/{id}");
    read_via(&a, &b, &path).await;
    assert_eq!(read_via(&a, &b, &path).await["data"]["description"], "", "B has it cached");

    // Redis stops taking writes: A's invalidation cannot land.
    let client = redis::Client::open(redis_server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("CLIENT").arg("PAUSE").arg(1500).arg("WRITE").query_async::<()>(&mut conn).await.unwrap();
    let r = a.patch(&path, &a.admin, &json!({"description": "changed"})).await;
    assert_eq!(r.status(), 200);
    let own: Value = a.get(&path, &a.admin).await.json().await.unwrap();
    assert_eq!(own["data"]["description"], "changed", "the writer never reads its stale entry");

    // Once Redis takes writes again, the missed tombstone is written and B sees the change.
    let started = Instant::now();
    eventually(Duration::from_secs(6), "replica B to see the change", || async {
        (read_via(&a, &b, &path).await["data"]["description"] == "changed").then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    stop.cancel();
}

/// GET `path` from the replica at `base` with `app`'s admin token.
async fn read_via(app: &TestApp, base: &str, path: &str) -> Value {
    app.client.get(format!("{base}{path}")).bearer_auth(&app.admin).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn with_redis_stopped_limits_still_hold_on_each_replica() {
    let mut redis = RedisServer::start();
    let app = TestApp::spawn_with(&[
        ("REDIS_URL", &redis.url()),
        ("RATE_LIMIT_PER_MINUTE", "5"),
        ("AUTH_FAILURES_PER_MINUTE", "3"),
    ])
    .await;
    redis.kill();
    let erin = app.user("erin").await;
    let statuses: Vec<u16> = futures::future::join_all((0..7).map(|_| app.get("/tasks", &erin)))
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2, "{statuses:?}");
    let mut refused = Vec::new();
    for _ in 0..5 {
        refused.push(app.get("/tasks", "ff_guess").await.status().as_u16());
    }
    assert_eq!(refused, [401, 401, 401, 429, 429], "the limit failed open without Redis");
}

/// The hops that carry tokens and tasks inside the stack are encrypted: the api serves
/// HTTPS when it has a certificate, and talks TLS to a `rediss://` Redis whose certificate
/// the configured CA signed, and to no other.
#[tokio::test]
async fn the_api_serves_https_and_uses_redis_over_tls_only_with_its_ca() {
    let files = TlsFiles::new();
    let redis = RedisServer::start_tls(&files);
    let path = |p: &std::path::Path| p.display().to_string();
    let (cert, key, ca) = (path(&files.cert), path(&files.key), path(&files.ca));
    let mut app = TestApp::spawn_with(&[
        ("TLS_CERT_FILE", &cert),
        ("TLS_KEY_FILE", &key),
        ("REDIS_URL", &redis.tls_url()),
        ("REDIS_CA_FILE", &ca),
    ])
    .await;
    let plain_base = app.base.clone();
    app.base = app.base.replace("http://127.0.0.1", "https://localhost");
    let root = reqwest::Certificate::from_pem(&std::fs::read(&files.ca).unwrap()).unwrap();
    app.client = reqwest::Client::builder().add_root_certificate(root).build().unwrap();

    let redis_state = |app: &TestApp| {
        let request = app.client.get(format!("{}/ready", app.base));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap()["redis"].clone() }
    };
    eventually(Duration::from_secs(5), "the api to reach Redis over TLS", || async {
        (redis_state(&app).await == "connected").then_some(())
    })
    .await;
    let id = app.create(&app.admin, &json!({"title": "over TLS"})).await["id"].as_i64().unwrap();
    app.finish(id, "completed").await;
    app.get(&format!("/tasks/{id}"), &app.admin).await;
    let hits = app.metric("cache_requests_total{result=\"hit\"}").await;
    app.get(&format!("/tasks/{id}"), &app.admin).await;
    assert_eq!(app.metric("cache_requests_total{result=\"hit\"}").await, hits + 1.0, "cached in Redis over TLS");
    let plain = reqwest::get(format!("{plain_base}/health")).await;
    assert!(plain.is_err(), "plain HTTP gets no answer: {plain:?}");

    // A server whose certificate another CA signed is not trusted: no Redis for that api.
    let stranger = TlsFiles::new();
    let wary = TestApp::spawn_with(&[("REDIS_URL", &redis.tls_url()), ("REDIS_CA_FILE", &path(&stranger.ca))]).await;
    for _ in 0..3 {
        assert_eq!(redis_state(&wary).await, "unavailable");
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
}
