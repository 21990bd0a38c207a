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

/// A drill's verdict, counted in the database: a task completed twice or never is named,
/// and the exit status says so.
#[tokio::test]
async fn drill_verdict_counts_lost_and_twice_completed_tasks() {
    let db = TestDb::new(&[]).await;
    let env = [("FLOWFORGE_DATABASE_URL", db.url.as_str())];
    assert!(flowforge(&["migrate"], &env).status.success());
    for _ in 0..2 {
        let out = flowforge(&["drill", "counter", "install"], &env);
        assert!(out.status.success(), "install is idempotent: {}", text(&out.stderr));
    }
    let tasks = Queue::new(db.pool.clone())
        .enqueue(&(0..3).map(|_| flowforge_queue::NewTask::new("noop", serde_json::json!({}))).collect::<Vec<_>>())
        .await
        .unwrap();
    let ids: Vec<i64> = tasks.iter().map(|t| t.id).collect();
    let dir = std::env::temp_dir().join(format!("flowforge-drill-{}", ids[0]));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("run.ids"), ids.iter().map(|id| format!("{id}\n")).collect::<String>()).unwrap();
    std::fs::write(dir.join("run.json"), r#"{"sent":3,"failed":0,"told_to_retry":0,"latency_ms":{"max":4.2}}"#)
        .unwrap();
    let verdict = |wait: &str| {
        let (ids, summary) = (dir.join("run.ids"), dir.join("run.json"));
        let args = ["drill", "verdict", "--ids", ids.to_str().unwrap(), "--summary", summary.to_str().unwrap()];
        let out = flowforge(&[&args[..], &["--wait", wait, "--json"]].concat(), &env);
        let v: Value = serde_json::from_str(text(&out.stdout).trim()).expect("one JSON verdict");
        (out.status.success(), v)
    };
    // Completions as a worker writes them.
    let complete = "UPDATE tasks SET status = 'completed', attempts = 1, completed_at = now() WHERE id = ANY($1)";
    sqlx::query(complete).bind(&ids[..2]).execute(&db.pool).await.unwrap();
    let (ok, v) = verdict("1s");
    assert!(!ok, "a pending task is lost: {v}");
    assert_eq!((v["lost"].as_u64(), v["completed_twice"].as_u64()), (Some(1), Some(0)), "{v}");

    sqlx::query(complete).bind(&ids[2..]).execute(&db.pool).await.unwrap();
    let (ok, v) = verdict("1s");
    assert!(ok, "every task completed once: {v}");
    assert_eq!(v["completions_counted"].as_u64(), Some(3), "{v}");
    assert!(v["last_completed_at"].as_f64().is_some(), "the end of the recovery: {v}");

    sqlx::query(complete).bind(&ids[2..]).execute(&db.pool).await.unwrap();
    let (ok, v) = verdict("1s");
    assert!(!ok && v["completed_twice"].as_u64() == Some(1), "a second completion is counted: {v}");

    // The recovery point: the newest acknowledged write was 20 s after the newest one the
    // database has (the last task is gone, as after a restore to an earlier moment).
    let newest: f64 = sqlx::query_scalar("SELECT extract(epoch FROM max(created_at))::float8 FROM tasks")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM tasks WHERE id = $1").bind(ids[2]).execute(&db.pool).await.unwrap();
    let summary = format!(r#"{{"sent":3,"failed":0,"told_to_retry":0,"last_acknowledged_at":{}}}"#, newest + 20.0);
    std::fs::write(dir.join("rpo.json"), summary).unwrap();
    let rpo = |within: &str| {
        let (ids, summary) = (dir.join("run.ids"), dir.join("rpo.json"));
        let args = ["drill", "rpo", "--ids", ids.to_str().unwrap(), "--summary", summary.to_str().unwrap()];
        let out = flowforge(&[&args[..], &["--within", within, "--json"]].concat(), &env);
        let v: Value = serde_json::from_str(text(&out.stdout).trim()).expect("one JSON recovery point");
        (out.status.success(), v)
    };
    let (ok, v) = rpo("15s");
    assert!(!ok && v["lost"] == 1 && v["rpo_seconds"].as_f64().is_some_and(|s| s >= 20.0), "{v}");
    assert!(rpo("1m").0, "within a minute");
    assert!(flowforge(&["drill", "counter", "remove"], &env).status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `roles sync` as a rotation uses it: the idle app role gets the login (created on first
/// use, with the app's privileges), then the other loses it; the owner's password follows
/// the owner URL. (The test server trusts every local connection, so the passwords are
/// checked as the verifiers PostgreSQL stores; the stack's rotation test logs in with them.)
#[tokio::test]
async fn roles_sync_moves_the_login_between_the_app_roles() {
    let db = TestDb::new(&[]).await;
    for role in ["flowforge_app", "flowforge_owner"] {
        let create = format!("DO $$ BEGIN CREATE ROLE {role}; EXCEPTION WHEN duplicate_object THEN NULL; END $$");
        sqlx::raw_sql(&create).execute(&db.pool).await.unwrap();
    }
    let dir = std::env::temp_dir().join(format!("flowforge-roles-{}", db.name));
    std::fs::create_dir_all(&dir).unwrap();
    let (app_file, owner_file) = (dir.join("app"), dir.join("owner"));
    let env = [
        ("FLOWFORGE_DATABASE_URL", db.url.as_str()),
        ("FLOWFORGE_APP_DATABASE_URL_FILE", app_file.to_str().unwrap()),
        ("FLOWFORGE_OWNER_DATABASE_URL_FILE", owner_file.to_str().unwrap()),
    ];
    let login = |role: &'static str| {
        let pool = db.pool.clone();
        async move {
            let row: Option<(bool, Option<String>)> =
                sqlx::query_as("SELECT rolcanlogin, rolpassword FROM pg_authid WHERE rolname = $1")
                    .bind(role)
                    .fetch_optional(&pool)
                    .await
                    .unwrap();
            row
        }
    };
    // Two-letter passwords: the secret scan takes longer ones in a URL for leaked credentials.
    std::fs::write(&owner_file, "postgres://flowforge_owner:o1@db/flowforge").unwrap();

    // The first half of a rotation: flowforge_app_alt is new, flowforge_app keeps its login.
    sqlx::raw_sql("ALTER ROLE flowforge_app LOGIN").execute(&db.pool).await.unwrap();
    std::fs::write(&app_file, "postgres://flowforge_app_alt:a1@db/flowforge?sslmode=verify-full").unwrap();
    // Logging everything, sqlx's statement log included: no password is in it.
    let verbose = [&env[..], &[("FLOWFORGE_LOG", "debug")]].concat();
    let out = flowforge(&["roles", "sync", "--keep-other-app-role"], &verbose);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let logged = text(&out.stdout) + &text(&out.stderr);
    assert!(logged.contains("ALTER ROLE") || logged.contains("DEBUG"), "debug logging on: {logged}");
    assert!(!logged.contains("PASSWORD '"), "a password logged: {logged}");
    let (can_login, verifier) = login("flowforge_app_alt").await.expect("created on first use");
    assert!(can_login && verifier.as_deref().is_some_and(|v| v.starts_with("SCRAM-SHA-256$")));
    assert!(login("flowforge_app").await.unwrap().0, "kept while the services move");
    let member: bool = sqlx::query_scalar("SELECT pg_has_role('flowforge_app_alt', 'flowforge_app', 'MEMBER')")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(member, "the second role has the app's privileges");
    let owner_before = login("flowforge_owner").await.unwrap().1;

    // The second half: flowforge_app loses its login; a new owner password.
    std::fs::write(&owner_file, "postgres://flowforge_owner:o2@db/flowforge").unwrap();
    let out = flowforge(&["roles", "sync"], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("flowforge_app may no longer log in"), "{}", text(&out.stderr));
    assert_eq!(login("flowforge_app").await.unwrap(), (false, None));
    assert!(login("flowforge_app_alt").await.unwrap().0);
    assert_ne!(login("flowforge_owner").await.unwrap().1, owner_before, "the owner's password changed");

    // Connection strings for roles it does not manage are refused, and change nothing.
    std::fs::write(&app_file, "postgres://postgres:x@db/flowforge").unwrap();
    let out = flowforge(&["roles", "sync"], &env);
    assert!(!out.status.success() && text(&out.stderr).contains("expected one of"), "{}", text(&out.stderr));
    assert!(login("flowforge_app_alt").await.unwrap().0);
    std::fs::remove_dir_all(&dir).unwrap();
}
