//! The real `worker` binary, configured through the environment like in production,
//! against a fresh database: crash recovery, graceful drain, fail-fast configuration,
//! metrics and the container health check.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use flowforge_queue::{NewTask, Queue, TaskStatus, MIGRATOR};
use flowforge_testkit::{completion_counts, eventually, install_completion_log, TestDb};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

/// The worker binary with none of this process's environment but where a coverage run
/// (cargo-tarpaulin) wants its profile written: without that, the profile would land in
/// the crate's directory, and from there in the images' build context.
fn worker_binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_worker"));
    command.env_clear().kill_on_drop(true);
    if let Some(profile) = std::env::var_os("LLVM_PROFILE_FILE") {
        command.env("LLVM_PROFILE_FILE", profile);
    }
    command
}

/// What every worker in these tests runs with: short leases so a crash is noticed in
/// seconds, JSON logs to find the bound metrics address in.
fn worker_command(db: &TestDb, id: &str, extra: &[(&str, &str)]) -> Command {
    let mut command = worker_binary();
    let base = [
        ("PROFILE", "dev"),
        ("LOG_FORMAT", "json"),
        ("DATABASE_URL", db.url.as_str()),
        ("WORKER_ID", id),
        ("WORKER_LEASE", "2s"),
        ("WORKER_HEARTBEAT", "500ms"),
        ("WORKER_RESCUE_INTERVAL", "500ms"),
        ("WORKER_POLL_INTERVAL", "200ms"),
        ("METRICS_ADDR", "127.0.0.1:0"),
        ("RETENTION", "off"),
    ];
    for (key, value) in base.iter().chain(extra) {
        command.env(format!("FLOWFORGE_{key}"), value);
    }
    command
}

/// A running worker process; killed when dropped, and its log printed if the test failed.
struct WorkerProcess {
    child: Child,
    log: PathBuf,
}

impl WorkerProcess {
    fn start(db: &TestDb, id: &str, extra: &[(&str, &str)]) -> WorkerProcess {
        let log = std::env::temp_dir().join(format!("{}-{id}.log", db.name));
        let file = std::fs::File::create(&log).unwrap();
        let child = worker_command(db, id, extra)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start the worker binary");
        WorkerProcess { child, log }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id().expect("still running") as i32)
    }

    /// The address it serves metrics on, from its startup log line.
    async fn metrics_addr(&self) -> SocketAddr {
        eventually(Duration::from_secs(10), "the worker's startup log line", || async {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            log.lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|line| line["message"] == "worker starting")
                .map(|line| line["metrics_addr"].as_str().unwrap().parse().unwrap())
        })
        .await
    }

    async fn exit(&mut self, within: Duration) -> ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the worker did not exit within {within:?}"))
            .unwrap()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- worker log {} ---\n{log}", self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Runs the binary to completion (bounded), for commands that exit on their own.
async fn run_to_exit(mut command: Command) -> Output {
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("the command exits within 10s")
        .unwrap()
}

async fn setup() -> (TestDb, Queue) {
    let db = TestDb::new(&[&MIGRATOR]).await;
    install_completion_log(&db.pool).await;
    let queue = Queue::new(db.pool.clone());
    (db, queue)
}

fn sleep_task(ms: u64) -> NewTask {
    NewTask::new("sleep", json!({ "duration_ms": ms }))
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

async fn status(queue: &Queue, id: i64) -> TaskStatus {
    queue.get(id).await.unwrap().unwrap().status
}

async fn http_status(url: &str) -> Option<u16> {
    reqwest::get(url).await.ok().map(|r| r.status().as_u16())
}

#[tokio::test]
async fn sigkill_mid_task_loses_no_task_and_completes_none_twice() {
    let (db, queue) = setup().await;
    const TASKS: i64 = 40;
    let tasks: Vec<NewTask> = (0..TASKS as u64).map(|i| sleep_task(300 + i * 37 % 500)).collect();
    queue.enqueue(&tasks).await.unwrap();
    // Small slots, so both workers get a share of the work.
    let few_slots = [("WORKER_CONCURRENCY", "8")];
    let mut a = WorkerProcess::start(&db, "worker-a", &few_slots);
    let _b = WorkerProcess::start(&db, "worker-b", &few_slots);

    eventually(Duration::from_secs(15), "worker-a to hold a running task", || async {
        (count(&db, "SELECT count(*) FROM tasks WHERE status = 'running' AND leased_by = 'worker-a'").await > 0)
            .then_some(())
    })
    .await;
    a.child.start_kill().unwrap();
    assert_eq!(a.exit(Duration::from_secs(5)).await.signal(), Some(Signal::SIGKILL as i32));

    eventually(Duration::from_secs(30), "every task to complete", || async {
        (count(&db, "SELECT count(*) FROM tasks WHERE status = 'completed'").await == TASKS).then_some(())
    })
    .await;
    let (twice, distinct) = completion_counts(&db.pool).await;
    assert!(twice.is_empty(), "completions recorded twice: {twice:?}");
    assert_eq!(distinct, TASKS);
    let rescued = count(
        &db,
        "SELECT count(*) FROM tasks WHERE attempts = 2 AND last_error LIKE 'lease expired: worker worker-a %'",
    )
    .await;
    assert!(rescued >= 1, "no task of the killed worker was rescued and rerun");
}

#[tokio::test]
async fn sigkill_inside_an_inline_window_frees_the_tasks_at_once_and_counts_the_attempt() {
    let (db, queue) = setup().await;
    let ids: Vec<i64> =
        queue.enqueue(&[sleep_task(1_000), sleep_task(1_000)]).await.unwrap().iter().map(|t| t.id).collect();
    // Long enough a window that the tasks are still inside it when the worker dies.
    let mut a = WorkerProcess::start(&db, "worker-a", &[("WORKER_INLINE_WINDOW", "1500ms")]);
    eventually(Duration::from_secs(15), "worker-a's claim on both tasks", || async {
        (count(&db, "SELECT coalesce(sum(cardinality(task_ids)), 0)::int8 FROM task_claims").await == 2).then_some(())
    })
    .await;
    a.child.start_kill().unwrap();
    assert_eq!(a.exit(Duration::from_secs(5)).await.signal(), Some(Signal::SIGKILL as i32));

    // Its locks died with its connection: the tasks are due again now, not after a
    // lease, and the attempt it made is counted.
    eventually(Duration::from_secs(2), "the dead claim's attempt counted", || async {
        let counted = queue.count_abandoned_claims().await.unwrap();
        (counted.len() == 2).then_some(())
    })
    .await;
    let _b = WorkerProcess::start(&db, "worker-b", &[]);
    eventually(Duration::from_secs(15), "both tasks to complete", || async {
        (count(&db, "SELECT count(*) FROM tasks WHERE status = 'completed'").await == 2).then_some(())
    })
    .await;
    for id in ids {
        let task = queue.get(id).await.unwrap().unwrap();
        assert_eq!((task.attempts, task.leased_by.as_deref()), (2, Some("worker-b")), "task {id}");
        assert!(task.errors[0]["error"].as_str().unwrap().contains("worker worker-a stopped during the attempt"));
    }
    let (twice, distinct) = completion_counts(&db.pool).await;
    assert!(twice.is_empty(), "completions recorded twice: {twice:?}");
    assert_eq!(distinct, 2);
}

#[tokio::test]
async fn sigterm_drains_finishes_short_tasks_and_releases_long_ones() {
    let (db, queue) = setup().await;
    let ids: Vec<i64> = queue
        .enqueue(&[sleep_task(60_000), sleep_task(60_000), sleep_task(800), sleep_task(800), sleep_task(800)])
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    let (long, short) = ids.split_at(2);
    let mut worker = WorkerProcess::start(&db, "drainer", &[("WORKER_SHUTDOWN_TIMEOUT", "2s")]);
    let metrics_addr = worker.metrics_addr().await;
    eventually(Duration::from_secs(15), "all five tasks running", || async {
        (count(&db, "SELECT count(*) FROM tasks WHERE status = 'running'").await == 5).then_some(())
    })
    .await;

    let asked = Instant::now();
    kill(worker.pid(), Signal::SIGTERM).unwrap();
    // Not ready as soon as the drain begins, while still alive.
    eventually(Duration::from_secs(2), "/ready to answer 503 during the drain", || async {
        (http_status(&format!("http://{metrics_addr}/ready")).await == Some(503)).then_some(())
    })
    .await;
    assert_eq!(http_status(&format!("http://{metrics_addr}/health")).await, Some(200));
    let exit = worker.exit(Duration::from_secs(10)).await;
    assert!(exit.success(), "{exit:?}");
    assert!(asked.elapsed() < Duration::from_secs(6), "the drain took {:?}", asked.elapsed());

    for id in short {
        assert_eq!(status(&queue, *id).await, TaskStatus::Completed, "short task {id}");
    }
    for id in long {
        let task = queue.get(*id).await.unwrap().unwrap();
        assert_eq!((task.status, task.attempts), (TaskStatus::Pending, 0), "long task {id} was not released");
        assert_eq!(task.errors, json!([]), "the release of long task {id} was recorded as a failure");
    }
}

#[tokio::test]
async fn bad_configuration_exits_2_naming_every_bad_key() {
    let mut command = worker_binary();
    command.envs([
        ("FLOWFORGE_PROFILE", "prod"),
        ("FLOWFORGE_WORKER_CONCURRENCY", "zero"),
        ("FLOWFORGE_WORKER_LEASE", "soon"),
        ("FLOWFORGE_METRICS_ADDR", "nowhere"),
        ("FLOWFORGE_RETENTION", "forever"),
    ]);
    let output = run_to_exit(command).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for key in [
        "FLOWFORGE_WORKER_CONCURRENCY",
        "FLOWFORGE_WORKER_LEASE",
        "FLOWFORGE_METRICS_ADDR",
        "FLOWFORGE_RETENTION",
        "FLOWFORGE_DATABASE_URL",
        "FLOWFORGE_WEBHOOK_SECRETS_KEY",
    ] {
        assert!(stderr.contains(key), "{key} is not named in:\n{stderr}");
    }
}

#[tokio::test]
async fn a_running_worker_serves_metrics_readiness_and_passes_its_healthcheck() {
    let (db, queue) = setup().await;
    let mut worker = WorkerProcess::start(&db, "observed", &[]);
    let metrics_addr = worker.metrics_addr().await;
    let id = queue.enqueue(&[NewTask::new("noop", json!({}))]).await.unwrap()[0].id;
    eventually(Duration::from_secs(10), "the noop task to complete", || async {
        (status(&queue, id).await == TaskStatus::Completed).then_some(())
    })
    .await;

    // A completion counts once it is recorded: the row may show it a moment before the
    // counter does.
    let scrape = || async { reqwest::get(format!("http://{metrics_addr}/metrics")).await.ok()?.text().await.ok() };
    let metrics = eventually(Duration::from_secs(10), "the completion to be counted", || async {
        scrape().await.filter(|m| m.contains(r#"tasks_completed_total{kind="noop"} 1"#))
    })
    .await;
    assert!(metrics.contains(r#"tasks_completed_total{kind="noop"} 1"#), "{metrics}");
    assert!(metrics.contains("\nqueue_depth "), "{metrics}");
    let ready = reqwest::get(format!("http://{metrics_addr}/ready")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap(), json!({"status": "ready"}));
    let health = reqwest::get(format!("http://{metrics_addr}/health")).await.unwrap();
    assert_eq!(health.json::<Value>().await.unwrap(), json!({"status": "healthy"}));

    let addr = metrics_addr.to_string();
    let mut healthcheck = worker_command(&db, "probe", &[("METRICS_ADDR", &addr)]);
    healthcheck.arg("healthcheck");
    let output = run_to_exit(healthcheck).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    kill(worker.pid(), Signal::SIGTERM).unwrap();
    assert!(worker.exit(Duration::from_secs(10)).await.success());
    let mut healthcheck = worker_command(&db, "probe", &[("METRICS_ADDR", &addr)]);
    healthcheck.arg("healthcheck");
    assert_eq!(run_to_exit(healthcheck).await.status.code(), Some(1), "healthy after the worker stopped");
}

#[tokio::test]
async fn every_log_line_about_a_task_carries_its_request_and_trace_ids() {
    let db = TestDb::new(&[&MIGRATOR]).await;
    let queue = Queue::new(db.pool.clone());
    let mut task = NewTask::new("fail", json!({"fail_attempts": 1}));
    task.request_id = Some("req-log-trail-1".into());
    task.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
    task.max_attempts = 2;
    let id = queue.enqueue(&[task]).await.unwrap()[0].id;
    let worker = WorkerProcess::start(&db, "logs", &[("LOG", "debug,sqlx=warn"), ("WORKER_BACKOFF_BASE", "50ms")]);
    eventually(Duration::from_secs(15), "the task to complete on its second attempt", || async {
        let task = queue.get(id).await.unwrap().unwrap();
        (task.status == TaskStatus::Completed).then_some(())
    })
    .await;
    let log = std::fs::read_to_string(&worker.log).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["span"]["task_id"] == json!(id))
        .collect();
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(messages.contains(&"attempt failed") && messages.contains(&"completed"), "{messages:?}");
    for line in &lines {
        assert_eq!(line["span"]["request_id"], "req-log-trail-1", "{line}");
        assert_eq!(line["span"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{line}");
    }
}
