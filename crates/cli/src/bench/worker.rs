//! One benchmark worker process (`flowforge bench worker`, started by the coordinator):
//! the engine's public API only (`Queue`, `Worker`, `Registry`, `WorkerConfig`, typed
//! kinds declared with `TaskArgs`), a pool of its own, and a handler that counts its
//! invocations.
//!
//! It talks to the coordinator over stdio: it prints `bench:ready` once its pool is
//! connected, starts the worker on a `go` line, stops on `stop` (or end of input),
//! drains, and prints `bench:report` and one JSON object: its handler runs, CPU time and,
//! for latency probes, each task's enqueue→start delay. Other lines on stdout are logs. With `--ids-out` it writes the id of every run, one per line, so
//! the coordinator can count tasks run more than once across processes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use async_trait::async_trait;
use flowforge_platform::db::DatabaseSettings;
use flowforge_queue::{
    HandlerError, Queue, QueueMetrics, Registry, TaskArgs, TaskContext, TaskHandler, Worker, WorkerConfig,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

/// What the burn-down enqueues: a task that does nothing.
#[derive(Serialize, Deserialize)]
pub struct Noop {}

impl TaskArgs for Noop {
    const KIND: &'static str = "bench.noop";
}

/// A latency probe: `t0` is its enqueue time in ns since the epoch; warm-up probes have none.
#[derive(Serialize, Deserialize)]
pub struct Probe {
    pub t0: Option<u64>,
}

impl TaskArgs for Probe {
    const KIND: &'static str = "bench.probe";
}

/// Protocol lines on stdout, told apart from log lines by their prefix.
pub const READY: &str = "bench:ready";
pub const REPORT: &str = "bench:report ";

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// The scratch database on the server FLOWFORGE_DATABASE_URL names.
    #[arg(long)]
    pub database: String,
    #[arg(long)]
    pub concurrency: usize,
    #[arg(long)]
    pub claim_batch: usize,
    /// Connections in this process's pool.
    #[arg(long, default_value_t = 20)]
    pub pool: u32,
    /// Write the id of every handler run here, one per line.
    #[arg(long)]
    pub ids_out: Option<PathBuf>,
}

#[derive(Default)]
struct Runs {
    ids: Vec<i64>,
    start_delays_ns: Vec<u64>,
}

/// Counts every invocation; for probes, also how long ago the task was enqueued.
struct Counting(Arc<Mutex<Runs>>);

pub fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}

impl Counting {
    fn count(&self, id: i64, t0: Option<u64>) {
        let started = now_nanos();
        let mut runs = self.0.lock().expect("runs");
        runs.ids.push(id);
        if let Some(t0) = t0 {
            runs.start_delays_ns.push(started.saturating_sub(t0));
        }
    }
}

#[async_trait]
impl TaskHandler<Noop> for Counting {
    async fn run(&self, _args: Noop, ctx: TaskContext) -> Result<Value, HandlerError> {
        self.count(ctx.id, None);
        Ok(Value::Null)
    }
}

#[async_trait]
impl TaskHandler<Probe> for Counting {
    async fn run(&self, args: Probe, ctx: TaskContext) -> Result<Value, HandlerError> {
        self.count(ctx.id, args.t0);
        Ok(Value::Null)
    }
}

pub async fn run(settings: DatabaseSettings, args: WorkerArgs) -> anyhow::Result<()> {
    let options = settings.connect_options("flowforge-bench-worker")?.database(&args.database);
    // Opens connections as they are needed, up to `--pool`, like a service's pool.
    let pool = PgPoolOptions::new()
        .max_connections(args.pool)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
        .context("connecting the worker's pool")?;
    let runs = Arc::new(Mutex::new(Runs::default()));
    let registry = Registry::new().handle::<Noop>(Counting(runs.clone())).handle::<Probe>(Counting(runs.clone()));
    let config = WorkerConfig {
        id: format!("bench-{}", std::process::id()),
        concurrency: args.concurrency,
        max_batch: args.claim_batch,
        retention: None,
        ..WorkerConfig::default()
    };
    let worker = Worker::new(Queue::new(pool.clone()), registry, config, QueueMetrics::unregistered());

    let mut stdout = tokio::io::stdout();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    stdout.write_all(format!("{READY}\n").as_bytes()).await?;
    stdout.flush().await?;
    match stdin.next_line().await?.as_deref() {
        Some("go") => {}
        other => anyhow::bail!("expected `go` from the coordinator, got {other:?}"),
    }
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    // `stop`, or the coordinator went away: either way, drain and report.
    let _ = stdin.next_line().await;
    stop.cancel();
    running.await?;
    pool.close().await;

    let runs = std::mem::take(&mut *runs.lock().expect("runs"));
    if let Some(path) = &args.ids_out {
        let text: String = runs.ids.iter().map(|id| format!("{id}\n")).collect();
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let (user, system) = cpu_seconds();
    let report = json!({
        "runs": runs.ids.len(),
        "cpu_user_s": user,
        "cpu_system_s": system,
        "start_delays_ns": runs.start_delays_ns,
    });
    stdout.write_all(format!("{REPORT}{report}\n").as_bytes()).await?;
    stdout.flush().await?;
    Ok(())
}

/// This process's user and system CPU time so far.
fn cpu_seconds() -> (f64, f64) {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            (secs(u.user_time()), secs(u.system_time()))
        }
        Err(_) => (f64::NAN, f64::NAN),
    }
}
