//! The `flowforge` binary against real services.

use std::process::{Command, Output};

use async_trait::async_trait;
use flowforge_api::{ApiSettings, Application};
use flowforge_platform::Source;
use flowforge_queue::{Handler, HandlerError, Queue, QueueMetrics, Registry, TaskContext, Worker, WorkerConfig};
use flowforge_testkit::TestDb;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

fn flowforge(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowforge"));
    cmd.args(args).env("FLOWFORGE_LOG", "warn").env("FLOWFORGE_PROFILE", "dev");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run flowforge")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn migrate_is_idempotent_and_token_create_bootstraps_an_admin() {
    let db = TestDb::new(&[]).await;
    let env = [("FLOWFORGE_DATABASE_URL", db.url.as_str())];
    for _ in 0..2 {
        let out = flowforge(&["migrate"], &env);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = flowforge(&["token", "create", "--user", "ops", "--role", "admin"], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let token = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "stdout holds only the token: {stdout:?}");
    let caller = flowforge_accounts::authenticate(&db.pool, token).await.unwrap().expect("token works");
    assert!(caller.is_admin());
    let bad = flowforge(&["token", "create", "--user", "has spaces"], &env);
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("--user"));
}

#[test]
fn bad_configuration_fails_fast_listing_every_problem() {
    let out = flowforge(
        &["migrate"],
        &[
            ("FLOWFORGE_PROFILE", "prod"),
            ("FLOWFORGE_DATABASE_MAX_CONNECTIONS", "many"),
            ("FLOWFORGE_LOG_FORMAT", "xml"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    for key in ["FLOWFORGE_DATABASE_URL", "FLOWFORGE_DATABASE_MAX_CONNECTIONS", "FLOWFORGE_LOG_FORMAT"] {
        assert!(stderr.contains(key), "{key} not reported in: {stderr}");
    }
}

struct Noop;

#[async_trait]
impl Handler for Noop {
    async fn run(&self, _ctx: TaskContext) -> Result<Value, HandlerError> {
        Ok(Value::Null)
    }
}

#[tokio::test]
async fn check_passes_on_a_live_stack_and_fails_on_a_dead_one() {
    let db =
        TestDb::new(&[&flowforge_queue::MIGRATOR, &flowforge_accounts::MIGRATOR, &flowforge_webhooks::MIGRATOR]).await;
    let vars = [
        ("PROFILE", "dev".to_string()),
        ("API_ADDR", "127.0.0.1:0".to_string()),
        ("DATABASE_URL", db.url.clone()),
        ("REDIS_URL", flowforge_testkit::redis_url()),
        ("REDIS_KEY_PREFIX", format!("{}:", db.name)),
    ];
    let settings =
        ApiSettings::from_source(Source::from_vars(vars.map(|(k, v)| (format!("FLOWFORGE_{k}"), v)))).unwrap();
    let app = Application::build(settings).await.unwrap();
    let url = format!("http://{}", app.local_addr());
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(app.run_until_stopped(async move { stopped.cancelled().await }));
    let worker = Worker::new(
        Queue::new(db.pool.clone()),
        Registry::new().register("noop", Noop),
        WorkerConfig { retention: None, ..WorkerConfig::default() },
        QueueMetrics::unregistered(),
    );
    tokio::spawn(worker.run(stop.clone()));

    let user = flowforge_accounts::ensure_user(&db.pool, "checker", flowforge_accounts::Role::User).await.unwrap();
    let token = flowforge_accounts::issue_token(&db.pool, user.id, "check", None).await.unwrap();
    let token_file = std::env::temp_dir().join(format!("ff-check-token-{}", uuid::Uuid::new_v4()));
    std::fs::write(&token_file, format!("{}\n", token.token)).unwrap();

    let run = |url: String, token_file: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            flowforge(
                &["check", "--url", &url, "--token-file", token_file.to_str().unwrap(), "--timeout-secs", "10"],
                &[],
            )
        })
    };
    let out = run(url, token_file.clone()).await.unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for line in ["health", "ready", "authenticated", "task created", "task completed"] {
        assert!(stdout.lines().any(|l| l.starts_with("ok") && l.contains(line)), "{line}: {stdout}");
    }

    let dead = format!("http://127.0.0.1:{}", flowforge_testkit::free_port());
    let out = run(dead, token_file.clone()).await.unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stdout).contains("FAIL health"));
    stop.cancel();
    let _ = std::fs::remove_file(token_file);
}

/// The server the test databases live on: `flowforge bench` makes its own there.
fn test_server() -> String {
    std::env::var("FLOWFORGE_TEST_DATABASE_URL").expect("FLOWFORGE_TEST_DATABASE_URL (run through scripts/test.sh)")
}

/// Runs `flowforge bench …` with `--out` to a fresh file and returns its JSON lines.
async fn bench(args: &[&str]) -> Vec<Value> {
    let out_file = std::env::temp_dir().join(format!("ff-bench-{}.jsonl", uuid::Uuid::new_v4()));
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(["--out".to_string(), out_file.display().to_string()]);
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        flowforge(&args, &[("FLOWFORGE_DATABASE_URL", test_server().as_str())])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let lines = std::fs::read_to_string(&out_file).unwrap();
    let _ = std::fs::remove_file(&out_file);
    lines.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

async fn database_exists(name: &str) -> bool {
    let db = TestDb::new(&[]).await;
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn two_worker_processes_burn_down_a_large_backlog_running_every_task_exactly_once() {
    const TASKS: i64 = 100_000;
    let runs = bench(&[
        "bench",
        "burn-down",
        "--tasks",
        &TASKS.to_string(),
        "--processes",
        "2",
        "--repeat",
        "1",
        "--check-once",
    ])
    .await;
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run["processes"], 2);
    // Every handler ran exactly once, and the table agrees: one attempt each, all done.
    assert_eq!(run["handler_runs"], TASKS, "{run}");
    assert_eq!(run["duplicate_runs"], 0, "{run}");
    assert_eq!(run["tasks_run_more_than_once"], 0, "{run}");
    assert_eq!(run["attempts_over_one"], 0, "{run}");
    assert_eq!(run["completed"], TASKS, "{run}");
    assert!(run["jobs_per_sec"].as_f64().unwrap() > 0.0);
    assert!(!database_exists(run["database"].as_str().unwrap()).await, "the scratch database is dropped");
}

#[tokio::test]
async fn bench_latency_reports_percentiles_of_every_probe() {
    let runs = bench(&["bench", "latency", "--samples", "20", "--interval", "5ms", "--repeat", "1"]).await;
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run["samples"], 20);
    let (p50, p99) = (run["p50_ms"].as_f64().unwrap(), run["p99_ms"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99, "{run}");
}

/// Kills the child process when the test ends, pass or fail.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn alert_receiver_records_what_alertmanager_sends() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let _receiver = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_flowforge"))
            .args(["alert-receiver", "--listen", &addr])
            .env("FLOWFORGE_LOG", "warn")
            .env("FLOWFORGE_PROFILE", "dev")
            .spawn()
            .expect("start the receiver"),
    );
    let healthy = || flowforge(&["healthcheck", "--addr", &addr], &[]).status.success();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !healthy() {
        assert!(std::time::Instant::now() < deadline, "receiver never became healthy");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let client = reqwest::Client::new();
    let notification = serde_json::json!({
        "version": "4", "status": "firing", "receiver": "operators",
        "groupLabels": { "alertname": "QueueBacklog" },
        "alerts": [{ "status": "firing", "labels": { "alertname": "QueueBacklog", "severity": "warning" },
                     "annotations": { "summary": "150 tasks are due" } }]
    });
    let sent = client.post(format!("http://{addr}/alerts")).json(&notification).send().await.unwrap();
    assert_eq!(sent.status(), 200);
    let not_alertmanager =
        client.post(format!("http://{addr}/alerts")).json(&serde_json::json!({"x": 1})).send().await.unwrap();
    assert_eq!(not_alertmanager.status(), 422);
    let garbage = client
        .post(format!("http://{addr}/alerts"))
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);

    let received: Vec<Value> = client.get(format!("http://{addr}/alerts")).send().await.unwrap().json().await.unwrap();
    assert_eq!(received, vec![notification], "exactly the valid notification is kept");
}
