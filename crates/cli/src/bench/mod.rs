//! `flowforge bench`: the queue measured the way a user comparing queues would.
//!
//! Every run gets a fresh scratch database on the server FLOWFORGE_DATABASE_URL names
//! (created and dropped here, so the role needs CREATEDB) with the product's schema.
//! The workers are separate OS processes (`flowforge bench worker`) using only the
//! engine's public API, and completion is seen from outside: a connection of the
//! coordinator's own polls the tasks table every 5 ms until no task is pending or
//! running. Each worker counts its handler invocations, so a task run twice shows up as
//! a duplicate run even when its outcome was recorded once.

pub mod api;
mod stats;
pub mod worker;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use flowforge_platform::config::HumanDuration;
use flowforge_platform::db::DatabaseSettings;
use flowforge_queue::{NewTask, Queue, WorkerConfig};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use stats::{ms, percentile, Spread};
use worker::{now_nanos, Noop, Probe};

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Burn down a backlog of no-op tasks with worker processes; jobs/s and duplicate runs.
    BurnDown(BurnDownArgs),
    /// Enqueue→start latency: single tasks, spaced out, one idle worker process.
    Latency(LatencyArgs),
    /// The API under load through its real entry point: throughput and latency per route
    /// at rising concurrency, a spike, and the breaking point.
    Api(api::ApiArgs),
    /// One worker process (started by the other subcommands).
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
}

#[derive(clap::Args, Debug)]
pub struct BurnDownArgs {
    /// Tasks in the backlog.
    #[arg(long, default_value_t = 200_000)]
    tasks: usize,
    /// Worker processes; a list runs each configuration.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    processes: Vec<usize>,
    /// Handlers running at once per process; a list runs each configuration.
    #[arg(long, value_delimiter = ',')]
    concurrency: Option<Vec<usize>>,
    /// Most tasks one claim takes (default: the engine's).
    #[arg(long)]
    claim_batch: Option<usize>,
    /// Owners the backlog is spread over, round robin (0: tasks without an owner, the
    /// engine used directly); a list runs each. With two or more, every claim shares its
    /// batch between them (the fair claim).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    owners: Vec<usize>,
    /// Connections per worker process.
    #[arg(long, default_value_t = 20)]
    pool: u32,
    /// Runs of each configuration, interleaved (A B A B …) so drift hits all alike.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Tasks per enqueue transaction.
    #[arg(long, default_value_t = 1000)]
    enqueue_batch: usize,
    /// Longest burn-down before a run counts as failed.
    #[arg(long, default_value = "10m")]
    timeout: HumanDuration,
    /// Append every run as a JSON line here (the chart script reads it).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the scratch databases (for inspection) instead of dropping them.
    #[arg(long)]
    keep: bool,
    /// Exit non-zero if any run had a duplicate handler run or an unfinished task.
    #[arg(long)]
    check_once: bool,
}

#[derive(clap::Args, Debug)]
pub struct LatencyArgs {
    /// Tasks enqueued one at a time.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Pause between two enqueues.
    #[arg(long, default_value = "20ms")]
    interval: HumanDuration,
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Handlers running at once in the worker process (default: the engine's).
    #[arg(long)]
    concurrency: Option<usize>,
    #[arg(long)]
    out: Option<PathBuf>,
}

pub async fn run(settings: DatabaseSettings, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::BurnDown(args) => burn_down(&settings, args).await,
        BenchCommand::Latency(args) => latency(&settings, args).await,
        BenchCommand::Worker(args) => worker::run(settings, args).await,
        BenchCommand::Api(args) => api::run(args).await,
    }
}

/// A database of its own for one run, dropped afterwards.
struct Scratch {
    settings: DatabaseSettings,
    name: String,
    pool: PgPool,
    keep: bool,
}

impl Scratch {
    async fn create(settings: &DatabaseSettings, keep: bool) -> anyhow::Result<Scratch> {
        let name = format!("flowforge_bench_{}_{}", std::process::id(), now_nanos() % 1_000_000_000);
        let mut admin = admin(settings).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .context("creating a scratch database (the role needs CREATEDB)")?;
        admin.close().await?;
        let options = settings.connect_options("flowforge-bench")?.database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            // VACUUM and CHECKPOINT of a large backlog outlast a service's statement timeout.
            .after_connect(|c, _| {
                Box::pin(async move { sqlx::query("SET statement_timeout = 0").execute(c).await.map(|_| ()) })
            })
            .connect_with(options)
            .await?;
        flowforge_queue::MIGRATOR.run(&pool).await?;
        Ok(Scratch { settings: settings.clone(), name, pool, keep })
    }

    async fn observer(&self) -> anyhow::Result<PgConnection> {
        let options = self.settings.connect_options("flowforge-bench-observer")?.database(&self.name);
        Ok(PgConnection::connect_with(&options).await?)
    }

    /// Any task pending or running? Each half walks a partial index of the engine's in
    /// its order and stops at the first row; an `EXISTS` would be planned as a table scan
    /// (the statistics say every row is pending) that grows as the backlog burns down.
    async fn unfinished(conn: &mut PgConnection) -> sqlx::Result<bool> {
        sqlx::query_scalar(
            "SELECT (SELECT 1 FROM tasks WHERE status = 'pending' ORDER BY COALESCE(owner_id, 0), priority DESC, run_at, id LIMIT 1) IS NOT NULL
                 OR (SELECT 1 FROM tasks WHERE status = 'running' ORDER BY lease_expires_at LIMIT 1) IS NOT NULL",
        )
        .fetch_one(conn)
        .await
    }

    /// Starts from a table as a freshly loaded backlog would be: statistics known, dead
    /// rows gone, nothing dirty in shared buffers.
    async fn settle(&self) -> anyhow::Result<()> {
        sqlx::query("VACUUM (ANALYZE) tasks").execute(&self.pool).await?;
        sqlx::query("CHECKPOINT").execute(&self.pool).await?;
        Ok(())
    }

    async fn drop(self) -> anyhow::Result<()> {
        self.pool.close().await;
        if self.keep {
            eprintln!("kept scratch database {}", self.name);
            return Ok(());
        }
        let mut admin = admin(&self.settings).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&mut admin).await?;
        Ok(())
    }
}

async fn admin(settings: &DatabaseSettings) -> anyhow::Result<PgConnection> {
    PgConnection::connect_with(&settings.connect_options("flowforge-bench")?)
        .await
        .context("connecting to FLOWFORGE_DATABASE_URL")
}

/// A `flowforge bench worker` child process.
struct WorkerProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    ids_out: PathBuf,
}

#[derive(Debug, Default, serde::Deserialize)]
struct WorkerReport {
    runs: u64,
    cpu_user_s: Option<f64>,
    cpu_system_s: Option<f64>,
    start_delays_ns: Vec<u64>,
}

impl WorkerProcess {
    async fn spawn(
        database: &str,
        concurrency: usize,
        claim_batch: usize,
        pool: u32,
        n: usize,
    ) -> anyhow::Result<Self> {
        let ids_out = std::env::temp_dir().join(format!("{database}-{n}.ids"));
        let mut child = Command::new(std::env::current_exe()?)
            .args(["bench", "worker", "--database", database])
            .args(["--concurrency", &concurrency.to_string(), "--claim-batch", &claim_batch.to_string()])
            .args(["--pool", &pool.to_string()])
            .arg("--ids-out")
            .arg(&ids_out)
            .env("FLOWFORGE_LOG", std::env::var("FLOWFORGE_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker process")?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut process = WorkerProcess { child, stdin, stdout, ids_out };
        tokio::time::timeout(Duration::from_secs(60), process.expect(worker::READY))
            .await
            .context("worker process did not get ready within 60 s")??;
        Ok(process)
    }

    /// Reads stdout up to the protocol line starting with `prefix` and returns the rest
    /// of it. Log lines on the way are passed on to stderr.
    async fn expect(&mut self, prefix: &str) -> anyhow::Result<String> {
        while let Some(line) = self.stdout.next_line().await? {
            match line.strip_prefix(prefix) {
                Some(rest) => return Ok(rest.to_owned()),
                None => eprintln!("worker {}: {line}", self.child.id().unwrap_or(0)),
            }
        }
        anyhow::bail!("worker process ended before {prefix:?}")
    }

    async fn say(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        Ok(self.stdin.flush().await?)
    }

    /// Stops the worker (it drains first) and reads its report and run ids.
    async fn finish(mut self) -> anyhow::Result<(WorkerReport, Vec<i64>)> {
        self.say("stop").await?;
        let line = tokio::time::timeout(Duration::from_secs(120), self.expect(worker::REPORT))
            .await
            .context("worker process did not report within 120 s of stop")??;
        let report: WorkerReport = serde_json::from_str(&line).with_context(|| format!("worker report {line:?}"))?;
        let status = self.child.wait().await?;
        anyhow::ensure!(status.success(), "worker process exited with {status}");
        let ids = read_ids(&self.ids_out)?;
        let _ = std::fs::remove_file(&self.ids_out);
        Ok((report, ids))
    }
}

fn read_ids(path: &Path) -> anyhow::Result<Vec<i64>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines().map(|l| l.parse::<i64>().map_err(Into::into)).collect()
}

/// One burn-down run's figures.
#[derive(Debug, Clone, Serialize)]
struct BurnDownRun {
    bench: &'static str,
    system: &'static str,
    /// The scratch database the run used (dropped afterwards unless `--keep`).
    database: String,
    processes: usize,
    concurrency: usize,
    claim_batch: usize,
    owners: usize,
    tasks: usize,
    enqueue_per_sec: f64,
    seconds: f64,
    jobs_per_sec: f64,
    handler_runs: u64,
    /// Handler runs beyond one per task.
    duplicate_runs: u64,
    /// Tasks whose handler ran more than once (across all processes).
    tasks_run_more_than_once: u64,
    /// Tasks the table says were attempted more than once.
    attempts_over_one: i64,
    completed: i64,
    worker_cpu_seconds: f64,
}

async fn burn_down(settings: &DatabaseSettings, args: BurnDownArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.tasks > 0 && args.repeat > 0, "--tasks and --repeat must be positive");
    anyhow::ensure!(args.processes.iter().all(|&p| p > 0), "--processes must be positive");
    let defaults = WorkerConfig::default();
    let concurrencies = args.concurrency.clone().unwrap_or_else(|| vec![defaults.concurrency]);
    anyhow::ensure!(concurrencies.iter().all(|&c| c > 0), "--concurrency must be positive");
    let claim_batch = args.claim_batch.unwrap_or(defaults.max_batch);
    let mut configs: Vec<(usize, usize, usize)> = Vec::new();
    for &p in &args.processes {
        for &c in &concurrencies {
            configs.extend(args.owners.iter().map(|&o| (p, c, o)));
        }
    }
    print_machine(settings).await?;
    println!(
        "burn-down: {} no-op tasks per run, fresh database each run, claim batch {claim_batch}, pool {} per process",
        args.tasks, args.pool
    );
    let mut results: Vec<BurnDownRun> = Vec::new();
    let mut failed = false;
    for rep in 1..=args.repeat {
        for &(processes, concurrency, owners) in &configs {
            let run = burn_down_once(settings, &args, processes, concurrency, claim_batch, owners).await?;
            println!(
                "  run {rep}: {processes} × {concurrency:>4}  {}  {:>8.0} jobs/s  ({:.2} s)  runs {}  duplicates {}  \
                 attempts>1 {}  worker CPU {:.1} s  enqueue {:.0}/s",
                owners_label(owners),
                run.jobs_per_sec,
                run.seconds,
                run.handler_runs,
                run.duplicate_runs,
                run.attempts_over_one,
                run.worker_cpu_seconds,
                run.enqueue_per_sec
            );
            failed |= run.duplicate_runs > 0 || run.completed != args.tasks as i64;
            append_json(args.out.as_deref(), &run)?;
            results.push(run);
        }
    }
    println!("summary (jobs/s over {} runs each):", args.repeat);
    println!("  processes × concurrency  owners          min     median        max   spread   duplicate runs");
    for &(processes, concurrency, owners) in &configs {
        let mine: Vec<&BurnDownRun> = results
            .iter()
            .filter(|r| r.processes == processes && r.concurrency == concurrency && r.owners == owners)
            .collect();
        let rates: Vec<f64> = mine.iter().map(|r| r.jobs_per_sec).collect();
        let dups: u64 = mine.iter().map(|r| r.duplicate_runs).sum();
        if let Some(s) = Spread::of(&rates) {
            println!(
                "  {processes:>9} × {concurrency:<11}  {:<9} {:>10.0} {:>10.0} {:>10.0}   ±{:>4.1} %   {dups}",
                owners_label(owners),
                s.min,
                s.median,
                s.max,
                s.deviation_pct()
            );
        }
    }
    if args.check_once && failed {
        anyhow::bail!("a run had duplicate handler runs or unfinished tasks");
    }
    Ok(())
}

fn owners_label(owners: usize) -> String {
    match owners {
        0 => "no owner".into(),
        1 => "1 owner".into(),
        n => format!("{n} owners"),
    }
}

async fn burn_down_once(
    settings: &DatabaseSettings,
    args: &BurnDownArgs,
    processes: usize,
    concurrency: usize,
    claim_batch: usize,
    owners: usize,
) -> anyhow::Result<BurnDownRun> {
    let scratch = Scratch::create(settings, args.keep).await?;
    let queue = Queue::new(scratch.pool.clone());
    let started = Instant::now();
    let task = NewTask::from_args(&Noop {})?;
    let mut owner_of = (1..=owners as i64).cycle();
    let mut remaining = args.tasks;
    while remaining > 0 {
        let n = remaining.min(args.enqueue_batch.max(1));
        let batch: Vec<NewTask> = (0..n).map(|_| NewTask { owner_id: owner_of.next(), ..task.clone() }).collect();
        queue.enqueue(&batch).await?;
        remaining -= n;
    }
    let enqueue_per_sec = args.tasks as f64 / started.elapsed().as_secs_f64();
    scratch.settle().await?;

    let mut workers = Vec::with_capacity(processes);
    for n in 0..processes {
        workers.push(WorkerProcess::spawn(&scratch.name, concurrency, claim_batch, args.pool, n).await?);
    }
    let mut observer = scratch.observer().await?;
    let t0 = Instant::now();
    for w in &mut workers {
        w.say("go").await?;
    }
    let seconds = observe_until_done(&mut observer, t0, args.timeout.0).await?;

    let mut runs_per_task: HashMap<i64, u32> = HashMap::with_capacity(args.tasks);
    let (mut handler_runs, mut cpu) = (0, 0.0);
    for w in workers {
        let (report, ids) = w.finish().await?;
        handler_runs += report.runs;
        cpu += report.cpu_user_s.unwrap_or(0.0) + report.cpu_system_s.unwrap_or(0.0);
        for id in ids {
            *runs_per_task.entry(id).or_default() += 1;
        }
    }
    let (completed, attempts_over_one): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE attempts > 1) FROM tasks",
    )
    .fetch_one(&mut observer)
    .await?;
    observer.close().await?;
    let database = scratch.name.clone();
    scratch.drop().await?;
    Ok(BurnDownRun {
        bench: "burn-down",
        system: "flowforge",
        database,
        processes,
        concurrency,
        claim_batch,
        owners,
        tasks: args.tasks,
        enqueue_per_sec: enqueue_per_sec.round(),
        seconds: (seconds * 1000.0).round() / 1000.0,
        jobs_per_sec: (args.tasks as f64 / seconds).round(),
        handler_runs,
        duplicate_runs: handler_runs.saturating_sub(runs_per_task.len() as u64),
        tasks_run_more_than_once: runs_per_task.values().filter(|&&n| n > 1).count() as u64,
        attempts_over_one,
        completed,
        worker_cpu_seconds: (cpu * 10.0).round() / 10.0,
    })
}

/// Polls every 5 ms from `t0` until no task is pending or running; seconds since `t0`.
async fn observe_until_done(observer: &mut PgConnection, t0: Instant, timeout: Duration) -> anyhow::Result<f64> {
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !Scratch::unfinished(observer).await? {
            return Ok(t0.elapsed().as_secs_f64());
        }
        anyhow::ensure!(t0.elapsed() < timeout, "the backlog was not burnt down within {timeout:?}");
    }
}

#[derive(Debug, Clone, Serialize)]
struct LatencyRun {
    bench: &'static str,
    system: &'static str,
    samples: usize,
    interval_ms: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Probes sent before the measured ones: the first tasks a worker process starts pay for
/// its new connections (statements prepared, catalogs loaded in the new backends), once
/// in its life rather than once per task.
const WARM_UP: usize = 10;

async fn latency(settings: &DatabaseSettings, args: LatencyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.samples > 0 && args.repeat > 0, "--samples and --repeat must be positive");
    let concurrency = args.concurrency.unwrap_or(WorkerConfig::default().concurrency);
    print_machine(settings).await?;
    println!(
        "enqueue→start: {} single tasks {:?} apart (after {WARM_UP} to warm up), one idle worker process \
         ({concurrency} slots), from just before the INSERT to the handler's first instruction",
        args.samples, args.interval.0
    );
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    for rep in 1..=args.repeat {
        let scratch = Scratch::create(settings, false).await?;
        // A checkpoint of whatever ran before would otherwise land among the samples.
        scratch.settle().await?;
        let queue = Queue::new(scratch.pool.clone());
        let mut worker = WorkerProcess::spawn(&scratch.name, concurrency, 1000, 4, 0).await?;
        worker.say("go").await?;
        // Let the worker finish its first (empty) claim and sit waiting for a NOTIFY.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut tick = tokio::time::interval(args.interval.0);
        for n in 0..WARM_UP + args.samples {
            tick.tick().await;
            // Warm-up probes carry no t0, so they are not counted.
            let probe = Probe { t0: (n >= WARM_UP).then(now_nanos) };
            queue.enqueue(&[NewTask::from_args(&probe)?]).await?;
        }
        let mut observer = scratch.observer().await?;
        observe_until_done(&mut observer, Instant::now(), Duration::from_secs(30)).await?;
        observer.close().await?;
        let (report, _) = worker.finish().await?;
        scratch.drop().await?;
        anyhow::ensure!(
            report.start_delays_ns.len() == args.samples,
            "{} of {} probes ran",
            report.start_delays_ns.len(),
            args.samples
        );
        let mut samples: Vec<Duration> = report.start_delays_ns.iter().map(|&n| Duration::from_nanos(n)).collect();
        samples.sort();
        let run = LatencyRun {
            bench: "latency",
            system: "flowforge",
            samples: samples.len(),
            interval_ms: ms(args.interval.0),
            p50_ms: ms(percentile(&samples, 50.0)),
            p95_ms: ms(percentile(&samples, 95.0)),
            p99_ms: ms(percentile(&samples, 99.0)),
            max_ms: ms(*samples.last().expect("samples")),
        };
        println!(
            "  run {rep}: p50 {:.3} ms  p95 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            run.p50_ms, run.p95_ms, run.p99_ms, run.max_ms
        );
        p50s.push(run.p50_ms);
        p99s.push(run.p99_ms);
        append_json(args.out.as_deref(), &run)?;
    }
    if let (Some(p50), Some(p99)) = (Spread::of(&p50s), Spread::of(&p99s)) {
        println!(
            "summary: p50 {:.3} / {:.3} / {:.3} ms, p99 {:.3} / {:.3} / {:.3} ms (min / median / max of {} runs)",
            p50.min, p50.median, p50.max, p99.min, p99.median, p99.max, args.repeat
        );
    }
    Ok(())
}

/// One line on what is being measured against: the server and its durability settings.
async fn print_machine(settings: &DatabaseSettings) -> anyhow::Result<()> {
    let mut conn = admin(settings).await?;
    let (version, sync_commit, fsync): (String, String, String) = sqlx::query_as(
        "SELECT current_setting('server_version'), current_setting('synchronous_commit'), current_setting('fsync')",
    )
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!(
        "machine: {cores} cores; PostgreSQL {version} (synchronous_commit={sync_commit}, fsync={fsync}); flowforge {}",
        env!("CARGO_PKG_VERSION")
    );
    Ok(())
}

fn append_json(path: Option<&Path>, record: &impl Serialize) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{}", serde_json::to_string(record)?)?;
    Ok(())
}
