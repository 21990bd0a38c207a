//! `WorkerApp` in-process: built from settings, bound on port 0, stopped by a token.

use std::time::Duration;

use flowforge_platform::Source;
use flowforge_queue::MIGRATOR;
use flowforge_testkit::{free_port, TestDb};
use flowforge_worker::{WorkerApp, WorkerSettings};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

fn settings(database_url: &str) -> WorkerSettings {
    let vars = [
        ("DATABASE_URL", database_url),
        ("DATABASE_ACQUIRE_TIMEOUT", "500ms"),
        ("METRICS_ADDR", "127.0.0.1:0"),
        ("RETENTION", "off"),
        ("PROFILE", "dev"),
        ("WORKER_SHUTDOWN_TIMEOUT", "1s"),
    ];
    WorkerSettings::from_source(Source::from_vars(vars.map(|(k, v)| (format!("FLOWFORGE_{k}"), v.to_string()))))
        .unwrap()
}

async fn get(url: String) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn ready_with_a_database_and_stops_when_told() {
    let db = TestDb::new(&[&MIGRATOR]).await;
    let app = WorkerApp::build(settings(&db.url)).await.unwrap();
    let addr = app.metrics_addr();
    assert_ne!(addr.port(), 0, "the bound port is exposed, not the configured 0");
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(stop.clone()));
    assert_eq!(get(format!("http://{addr}/ready")).await, (200, json!({"status": "ready"})));

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), running).await.expect("stopped in time").unwrap().unwrap();
    assert!(reqwest::get(format!("http://{addr}/health")).await.is_err(), "the HTTP server outlived the worker");
}

#[tokio::test]
async fn not_ready_while_the_database_is_unreachable_but_alive() {
    let app = WorkerApp::build(settings(&format!("postgres://nobody@127.0.0.1:{}/none", free_port()))).await.unwrap();
    let addr = app.metrics_addr();
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(stop.clone()));

    assert_eq!(get(format!("http://{addr}/health")).await, (200, json!({"status": "healthy"})));
    let (status, body) = get(format!("http://{addr}/ready")).await;
    assert_eq!((status, &body["status"]), (503, &json!("unavailable")), "{body}");

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), running).await.expect("stopped in time").unwrap().unwrap();
}
