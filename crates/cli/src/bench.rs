//! `flowforge bench`: how fast does the queue burn down no-op tasks, and how long from
//! enqueue to handler start? Runs the real engine in-process against the configured
//! PostgreSQL, with durable commits as configured there. Uses its own task kinds
//! (`bench.*`), deletes them afterwards and vacuums `tasks` before starting: meant for a
//! scratch database.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use flowforge_queue::{
    Handler, HandlerError, NewTask, Queue, QueueMetrics, Registry, TaskContext, Worker, WorkerConfig,
};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Tasks to enqueue and burn down.
    #[arg(long, default_value_t = 50_000)]
    tasks: usize,
    /// Worker runtimes (each with its own fetcher and completer).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Handlers running at once per worker.
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// Most tasks one claim query takes.
    #[arg(long, default_value_t = 1000)]
    claim_batch: usize,
    /// Tasks per enqueue transaction.
    #[arg(long, default_value_t = 1000)]
    enqueue_batch: usize,
    /// Enqueue→start samples, taken one at a time on idle workers.
    #[arg(long, default_value_t = 1000)]
    latency_samples: usize,
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
}

const NOOP: &str = "bench.noop";
const PROBE: &str = "bench.latency";

struct Noop;

#[async_trait]
impl Handler for Noop {
    async fn run(&self, _ctx: TaskContext) -> Result<Value, HandlerError> {
        Ok(Value::Null)
    }
}

/// Reports how long ago (wall clock) the task's payload says it was enqueued.
struct LatencyProbe(mpsc::UnboundedSender<Duration>);

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}

#[async_trait]
impl Handler for LatencyProbe {
    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError> {
        let sent = ctx.payload["t0"].as_u64().unwrap_or(0);
        let _ = self.0.send(Duration::from_nanos(now_nanos().saturating_sub(sent)));
        Ok(Value::Null)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub async fn run(db: PgPool, args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.tasks > 0 && args.workers > 0 && args.concurrency > 0,
        "tasks, workers and concurrency must be positive"
    );
    let queue = Queue::new(db.clone());
    sqlx::query("DELETE FROM tasks WHERE kind LIKE 'bench.%'").execute(&db).await?;
    // Start every run from a table without the previous runs' dead rows, or each run is
    // slower than the last and runs cannot be compared.
    sqlx::query("VACUUM (ANALYZE) tasks").execute(&db).await?;
    let (pg_version, sync_commit, fsync): (String, String, String) = sqlx::query_as(
        "SELECT current_setting('server_version'), current_setting('synchronous_commit'), current_setting('fsync')",
    )
    .fetch_one(&db)
    .await?;

    // 1. Enqueue.
    let started = Instant::now();
    let mut remaining = args.tasks;
    while remaining > 0 {
        let n = remaining.min(args.enqueue_batch);
        let batch: Vec<NewTask> = (0..n).map(|_| NewTask::new(NOOP, json!({}))).collect();
        queue.enqueue(&batch).await?;
        remaining -= n;
    }
    let enqueue = started.elapsed();

    // 2. Burn down with fresh workers.
    let metrics = QueueMetrics::unregistered();
    let (probe_tx, mut probe_rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let started = Instant::now();
    let mut handles = Vec::new();
    for i in 0..args.workers {
        let config = WorkerConfig {
            id: format!("bench-{i}"),
            concurrency: args.concurrency,
            max_batch: args.claim_batch,
            retention: None,
            ..WorkerConfig::default()
        };
        let registry = Registry::new().register(NOOP, Noop).register(PROBE, LatencyProbe(probe_tx.clone()));
        let worker = Worker::new(queue.clone(), registry, config, metrics.clone());
        handles.push(tokio::spawn(worker.run(stop.clone())));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while (metrics.completed.with_label_values(&[NOOP]).get() as usize) < args.tasks {
        anyhow::ensure!(Instant::now() < deadline, "burn-down did not finish within 10 minutes");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let burn_down = started.elapsed();

    // 3. Enqueue→start latency, one task at a time, workers idle and listening.
    let mut samples = Vec::with_capacity(args.latency_samples);
    for _ in 0..args.latency_samples {
        queue.enqueue(&[NewTask::new(PROBE, json!({ "t0": now_nanos() }))]).await?;
        match tokio::time::timeout(Duration::from_secs(5), probe_rx.recv()).await {
            Ok(Some(d)) => samples.push(d),
            _ => anyhow::bail!("a latency probe did not start within 5 s"),
        }
    }
    samples.sort();
    stop.cancel();
    for h in handles {
        h.await?;
    }
    sqlx::query("DELETE FROM tasks WHERE kind LIKE 'bench.%'").execute(&db).await?;

    let enqueue_rate = args.tasks as f64 / enqueue.as_secs_f64();
    let burn_rate = args.tasks as f64 / burn_down.as_secs_f64();
    let (p50, p95, p99) = (percentile(&samples, 50.0), percentile(&samples, 95.0), percentile(&samples, 99.0));
    let max = samples.last().copied().unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    if args.json {
        println!(
            "{}",
            json!({
                "tasks": args.tasks, "workers": args.workers, "concurrency": args.concurrency,
                "claim_batch": args.claim_batch, "cores": cores, "postgres": pg_version,
                "synchronous_commit": sync_commit, "fsync": fsync,
                "enqueue_per_sec": enqueue_rate.round(), "burn_down_per_sec": burn_rate.round(),
                "latency_ms": { "samples": samples.len(), "p50": ms(p50), "p95": ms(p95), "p99": ms(p99), "max": ms(max) }
            })
        );
    } else {
        println!("FlowForge queue benchmark ({cores} cores; PostgreSQL {pg_version}, synchronous_commit={sync_commit}, fsync={fsync})");
        println!(
            "  enqueue    {:>8} tasks in {:>7.3} s = {:>8.0} tasks/s (transactions of {})",
            args.tasks,
            enqueue.as_secs_f64(),
            enqueue_rate,
            args.enqueue_batch
        );
        println!(
            "  burn-down  {:>8} tasks in {:>7.3} s = {:>8.0} jobs/s ({} workers x {} concurrency, claim batch {})",
            args.tasks,
            burn_down.as_secs_f64(),
            burn_rate,
            args.workers,
            args.concurrency,
            args.claim_batch
        );
        println!(
            "  enqueue->start ({} samples, idle workers): p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            samples.len(),
            ms(p50),
            ms(p95),
            ms(p99),
            ms(max)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
