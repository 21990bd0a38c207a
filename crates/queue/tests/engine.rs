//! The queue engine against a real PostgreSQL (a fresh database per test).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use flowforge_queue::{
    Backoff, CancelOutcome, Handler, HandlerError, NewTask, Outcome, Queue, QueueMetrics, Registry, RetryOutcome,
    TaskContext, TaskStatus, Worker, WorkerConfig, MIGRATOR,
};
use flowforge_testkit::{completion_counts, eventually, install_completion_log, TestDb};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

fn fast(id: &str) -> WorkerConfig {
    WorkerConfig {
        id: id.to_string(),
        concurrency: 16,
        max_batch: 100,
        inline_window: Duration::from_millis(100),
        max_open_claims: 2,
        lease: Duration::from_secs(2),
        heartbeat: Duration::from_millis(400),
        poll_interval: Duration::from_millis(100),
        rescue_interval: Duration::from_millis(200),
        depth_interval: Duration::from_millis(200),
        shutdown_timeout: Duration::from_secs(5),
        backoff: Backoff { base: Duration::from_millis(20), max: Duration::from_millis(200) },
        retention: None,
        retention_interval: Duration::from_secs(3600),
    }
}

struct Running {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn shutdown(self) -> Duration {
        let started = Instant::now();
        self.stop.cancel();
        self.handle.await.expect("worker task");
        started.elapsed()
    }
}

fn spawn(queue: &Queue, registry: Registry, config: WorkerConfig) -> Running {
    let stop = CancellationToken::new();
    let worker = Worker::new(queue.clone(), registry, config, QueueMetrics::unregistered());
    let handle = tokio::spawn(worker.run(stop.clone()));
    Running { stop, handle }
}

/// Records the ids it ran, in order.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<i64>>>);

#[async_trait]
impl Handler for Recorder {
    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError> {
        self.0.lock().unwrap().push(ctx.id);
        Ok(json!({"ran": ctx.id}))
    }
}

struct Sleep;

#[async_trait]
impl Handler for Sleep {
    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError> {
        let ms = ctx.payload["ms"].as_u64().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(json!({"slept_ms": ms}))
    }
}

struct AlwaysFails {
    permanent: bool,
}

#[async_trait]
impl Handler for AlwaysFails {
    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError> {
        let msg = format!("boom on attempt {}", ctx.attempt);
        Err(if self.permanent { HandlerError::Permanent(msg) } else { HandlerError::Retryable(msg) })
    }
}

struct Panics;

#[async_trait]
impl Handler for Panics {
    async fn run(&self, _ctx: TaskContext) -> Result<Value, HandlerError> {
        panic!("handler bug")
    }
}

async fn setup() -> (TestDb, Queue) {
    let db = TestDb::new(&[&MIGRATOR]).await;
    install_completion_log(&db.pool).await;
    let queue = Queue::new(db.pool.clone());
    (db, queue)
}

async fn status_of(queue: &Queue, id: i64) -> TaskStatus {
    queue.get(id).await.unwrap().unwrap().status
}

async fn wait_status(queue: &Queue, id: i64, want: TaskStatus, timeout: Duration) {
    eventually(timeout, &format!("task {id} to be {want:?}"), || async {
        (status_of(queue, id).await == want).then_some(())
    })
    .await
}

fn tasks(kind: &str, n: usize, payload: Value) -> Vec<NewTask> {
    (0..n).map(|_| NewTask::new(kind, payload.clone())).collect()
}

#[tokio::test]
async fn many_workers_complete_every_task_exactly_once() {
    let (db, queue) = setup().await;
    const TASKS: usize = 3000;
    for chunk in tasks("record", TASKS, json!({})).chunks(500) {
        queue.enqueue(chunk).await.unwrap();
    }
    let recorder = Recorder::default();
    let workers: Vec<Running> = (0..4)
        .map(|i| spawn(&queue, Registry::new().register("record", recorder.clone()), fast(&format!("w{i}"))))
        .collect();
    eventually(Duration::from_secs(60), "all tasks completed", || async {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE status = 'completed'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        (done == TASKS as i64).then_some(())
    })
    .await;
    for w in workers {
        w.shutdown().await;
    }
    let (twice, distinct) = completion_counts(&db.pool).await;
    assert!(twice.is_empty(), "completions recorded twice: {twice:?}");
    assert_eq!(distinct, TASKS as i64);
    // Nothing crashed, so nothing should have run twice either.
    let ran = recorder.0.lock().unwrap().clone();
    assert_eq!(ran.len(), TASKS);
    // Several workers really shared the work.
    let per_worker: Vec<(String, i64)> =
        sqlx::query_as("SELECT leased_by, count(*) FROM tasks GROUP BY leased_by").fetch_all(&db.pool).await.unwrap();
    assert!(per_worker.len() >= 2, "only one worker did anything: {per_worker:?}");
}

#[tokio::test]
async fn failures_retry_with_backoff_then_dead_letter_keeps_last_error() {
    let (_db, queue) = setup().await;
    let mut t = NewTask::new("fails", json!({}));
    t.max_attempts = 3;
    let id = queue.enqueue(&[t]).await.unwrap()[0].id;
    let w = spawn(&queue, Registry::new().register("fails", AlwaysFails { permanent: false }), fast("w"));
    wait_status(&queue, id, TaskStatus::Failed, Duration::from_secs(10)).await;
    w.shutdown().await;
    let task = queue.get(id).await.unwrap().unwrap();
    assert_eq!(task.attempts, 3);
    assert_eq!(task.last_error.as_deref(), Some("boom on attempt 3"));
    let errors = task.errors.as_array().unwrap();
    assert_eq!(errors.len(), 3, "{errors:?}");
    for (i, e) in errors.iter().enumerate() {
        assert_eq!(e["attempt"], json!(i + 1));
        assert_eq!(e["worker"], json!("w"));
    }
    // Backoff: the gap before attempt 3 is at least half of base * 2 = 20 ms.
    let at = |i: usize| chrono::DateTime::parse_from_rfc3339(errors[i]["at"].as_str().unwrap()).unwrap();
    assert!((at(2) - at(1)).num_milliseconds() >= 20, "{errors:?}");
    assert!(task.completed_at.is_some());
}

#[tokio::test]
async fn permanent_errors_and_unknown_kinds_fail_without_retry() {
    let (_db, queue) = setup().await;
    let ids: Vec<i64> = queue
        .enqueue(&[NewTask::new("fails", json!({})), NewTask::new("no-such-kind", json!({}))])
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    #[cfg(feature = "prometheus")]
    let prometheus = prometheus::Registry::new();
    #[cfg(feature = "prometheus")]
    let metrics = QueueMetrics::new(&prometheus).unwrap();
    #[cfg(not(feature = "prometheus"))]
    let metrics = QueueMetrics::unregistered();
    let stop = CancellationToken::new();
    let registry = Registry::new().register("fails", AlwaysFails { permanent: true });
    let worker = tokio::spawn(Worker::new(queue.clone(), registry, fast("w"), metrics).run(stop.clone()));
    for id in &ids {
        wait_status(&queue, *id, TaskStatus::Failed, Duration::from_secs(10)).await;
        assert_eq!(queue.get(*id).await.unwrap().unwrap().attempts, 1);
    }
    stop.cancel();
    worker.await.unwrap();
    let unknown = queue.get(ids[1]).await.unwrap().unwrap();
    assert!(unknown.last_error.unwrap().contains("no handler registered"));
    // A stored kind without a handler is counted, but as `other`: it never becomes a label.
    #[cfg(feature = "prometheus")]
    {
        let failed = prometheus.gather().into_iter().find(|f| f.name() == "tasks_failed_total").unwrap();
        let mut labels: Vec<&str> = failed.get_metric().iter().map(|m| m.get_label()[0].value()).collect();
        labels.sort_unstable();
        assert_eq!(labels, ["fails", "other"]);
    }
}

#[tokio::test]
async fn cancel_pending_never_runs_and_cancel_running_stops_the_handler() {
    let (_db, queue) = setup().await;
    let finished = Arc::new(AtomicUsize::new(0));
    struct LongRunning(Arc<AtomicUsize>);
    #[async_trait]
    impl Handler for LongRunning {
        async fn run(&self, _ctx: TaskContext) -> Result<Value, HandlerError> {
            tokio::time::sleep(Duration::from_secs(30)).await;
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Value::Null)
        }
    }
    let mut later = NewTask::new("long", json!({}));
    later.run_at = Some(Utc::now() + chrono::Duration::seconds(60));
    let pending = queue.enqueue(&[later]).await.unwrap()[0].id;
    assert!(
        matches!(queue.cancel(pending).await.unwrap(), CancelOutcome::Cancelled(t) if t.status == TaskStatus::Cancelled)
    );

    let running = queue.enqueue(&[NewTask::new("long", json!({}))]).await.unwrap()[0].id;
    // A long heartbeat: the NOTIFY, not the heartbeat, must deliver the cancellation.
    let mut config = fast("w");
    config.heartbeat = Duration::from_secs(10);
    config.lease = Duration::from_secs(30);
    let w = spawn(&queue, Registry::new().register("long", LongRunning(finished.clone())), config);
    wait_status(&queue, running, TaskStatus::Running, Duration::from_secs(10)).await;
    let asked = Instant::now();
    assert!(matches!(queue.cancel(running).await.unwrap(), CancelOutcome::Requested(_)));
    wait_status(&queue, running, TaskStatus::Cancelled, Duration::from_secs(5)).await;
    assert!(asked.elapsed() < Duration::from_secs(3), "cancellation took {:?}", asked.elapsed());
    assert!(matches!(queue.cancel(running).await.unwrap(), CancelOutcome::AlreadyFinished(_)));
    assert!(matches!(queue.cancel(i64::MAX).await.unwrap(), CancelOutcome::NotFound));
    w.shutdown().await;
    assert_eq!(finished.load(Ordering::SeqCst), 0, "the handler ran to its end despite cancellation");
    assert_eq!(queue.get(pending).await.unwrap().unwrap().attempts, 0, "a cancelled pending task ran");
}

#[tokio::test]
async fn scheduled_tasks_wait_until_due() {
    let (_db, queue) = setup().await;
    let mut t = NewTask::new("record", json!({}));
    let due = Utc::now() + chrono::Duration::milliseconds(1500);
    t.run_at = Some(due);
    let id = queue.enqueue(&[t]).await.unwrap()[0].id;
    let w = spawn(&queue, Registry::new().register("record", Recorder::default()), fast("w"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(status_of(&queue, id).await, TaskStatus::Pending);
    wait_status(&queue, id, TaskStatus::Completed, Duration::from_secs(10)).await;
    w.shutdown().await;
    let task = queue.get(id).await.unwrap().unwrap();
    assert!(task.started_at.unwrap() >= due, "started {:?} before due {:?}", task.started_at, due);
}

#[tokio::test]
async fn claims_by_priority_then_age() {
    let (_db, queue) = setup().await;
    let mut batch = Vec::new();
    for (i, p) in [0i16, 5, 0, 10, 5].into_iter().enumerate() {
        let mut t = NewTask::new("record", json!({ "i": i }));
        t.priority = p;
        batch.push(t);
    }
    let ids: Vec<i64> = queue.enqueue(&batch).await.unwrap().iter().map(|t| t.id).collect();
    let recorder = Recorder::default();
    let mut config = fast("w");
    config.concurrency = 1;
    let w = spawn(&queue, Registry::new().register("record", recorder.clone()), config);
    eventually(Duration::from_secs(10), "all five ran", || async {
        (recorder.0.lock().unwrap().len() == 5).then_some(())
    })
    .await;
    w.shutdown().await;
    let order = recorder.0.lock().unwrap().clone();
    assert_eq!(order, vec![ids[3], ids[1], ids[4], ids[0], ids[2]]);
}

/// A task's id and owner, and when its handler started.
type Start = (i64, Option<i64>, Instant);

/// Records when each task started, then sleeps for the payload's `ms`.
#[derive(Clone, Default)]
struct StartTimes(Arc<Mutex<Vec<Start>>>);

#[async_trait]
impl Handler for StartTimes {
    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError> {
        self.0.lock().unwrap().push((ctx.id, ctx.owner_id, Instant::now()));
        Sleep.run(ctx).await
    }
}

fn owned(owner: i64, n: usize, ms: u64) -> Vec<NewTask> {
    (0..n).map(|_| NewTask { owner_id: Some(owner), ..NewTask::new("slow", json!({ "ms": ms })) }).collect()
}

#[tokio::test]
async fn a_second_owner_starts_within_seconds_beside_another_owners_backlog() {
    let (db, queue) = setup().await;
    // Owner 1 fills the queue with slow tasks, even at a higher priority: in the order of
    // arrival alone, owner 2 would wait 5,000 × 0.5 s / 16 slots ≈ 2.6 minutes.
    let mut backlog = owned(1, 5000, 500);
    backlog.iter_mut().for_each(|t| t.priority = 10);
    for chunk in backlog.chunks(1000) {
        queue.enqueue(chunk).await.unwrap();
    }
    let starts = StartTimes::default();
    let w = spawn(&queue, Registry::new().register("slow", starts.clone()), fast("w"));
    eventually(Duration::from_secs(10), "owner 1 running in every slot", || async {
        let running: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE status = 'running'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        (running == 16).then_some(())
    })
    .await;
    let enqueued = Instant::now();
    let second: Vec<i64> = queue.enqueue(&owned(2, 10, 500)).await.unwrap().iter().map(|t| t.id).collect();
    eventually(Duration::from_secs(10), "owner 2's tasks all started", || async {
        let started = starts.0.lock().unwrap().iter().filter(|(_, owner, _)| *owner == Some(2)).count();
        (started == second.len()).then_some(())
    })
    .await;
    let last_start = starts.0.lock().unwrap().iter().filter(|(_, owner, _)| *owner == Some(2)).map(|s| s.2).max();
    let waited = last_start.unwrap() - enqueued;
    let first_owner_started = starts.0.lock().unwrap().iter().filter(|(_, owner, _)| *owner == Some(1)).count();
    w.shutdown().await;
    // Slots free every half second; the next claims go to owner 2 first.
    assert!(waited < Duration::from_secs(3), "owner 2's last task started {waited:?} after it was enqueued");
    assert!(first_owner_started < 100, "owner 1 had {first_owner_started} tasks started meanwhile");
}

#[tokio::test]
async fn owners_with_backlogs_share_the_slots_and_none_idle() {
    let (db, queue) = setup().await;
    queue.enqueue(&owned(1, 300, 300)).await.unwrap();
    queue.enqueue(&owned(2, 300, 300)).await.unwrap();
    // A few without an owner: one more group, with its share.
    queue.enqueue(&tasks("slow", 3, json!({ "ms": 300 }))).await.unwrap();
    let starts = StartTimes::default();
    let w = spawn(&queue, Registry::new().register("slow", starts.clone()), fast("w"));
    eventually(Duration::from_secs(10), "96 tasks started", || async {
        (starts.0.lock().unwrap().len() >= 96).then_some(())
    })
    .await;
    w.shutdown().await;
    // Every claim counted whole: within one, tasks start in id order (owner 1's first), so
    // a cut at the 96th start would favour owner 1.
    let all: Vec<Option<i64>> = starts.0.lock().unwrap().iter().map(|s| s.1).collect();
    let of = |owner: i64| all.iter().filter(|o| **o == Some(owner)).count();
    // Six rounds of 16 slots, split evenly between the two owners but for the first (the
    // three without an owner leave three slots to one of them) and odd slots later: the
    // water-filling keeps them within half a round of each other.
    assert!(of(1).abs_diff(of(2)) <= 8, "owner 1 got {}, owner 2 {} of {} starts: {all:?}", of(1), of(2), all.len());
    let (_, distinct) = completion_counts(&db.pool).await;
    assert!(distinct >= 80, "only {distinct} completed: slots idled");
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_cannot_overwrite_the_newer_outcome() {
    let (db, queue) = setup().await;
    let id = queue.enqueue(&[NewTask::new("x", json!({}))]).await.unwrap()[0].id;
    let first = queue.claim(1, Duration::from_millis(200), "zombie").await.unwrap().remove(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rescued = queue.rescue_expired(10).await.unwrap();
    assert_eq!(rescued, vec![(id, TaskStatus::Pending)]);
    let second = queue.claim(1, Duration::from_secs(30), "healthy").await.unwrap().remove(0);
    assert_eq!(second.id, id);
    assert_eq!(second.attempts, 2);
    assert_ne!(first.lease_token, second.lease_token);

    // The zombie wakes up and reports success, then a heartbeat: neither lands.
    let applied = queue.record(&[(id, first.lease_token, Outcome::Completed(json!("stale")))]).await.unwrap();
    assert!(applied.is_empty());
    assert!(queue.heartbeat(&[(id, first.lease_token)], Duration::from_secs(60)).await.unwrap().is_empty());
    assert_eq!(status_of(&queue, id).await, TaskStatus::Running);

    let applied = queue.record(&[(id, second.lease_token, Outcome::Completed(json!("fresh")))]).await.unwrap();
    assert_eq!(applied, vec![(id, TaskStatus::Completed)]);
    // A replay of the same outcome is not recorded again.
    assert!(queue.record(&[(id, second.lease_token, Outcome::Completed(json!("again")))]).await.unwrap().is_empty());
    let task = queue.get(id).await.unwrap().unwrap();
    assert_eq!(task.result, Some(json!("fresh")));
    assert_eq!(task.leased_by.as_deref(), Some("healthy"));
    let (twice, distinct) = completion_counts(&db.pool).await;
    assert!(twice.is_empty());
    assert_eq!(distinct, 1);
}

#[tokio::test]
async fn an_abandoned_lease_is_rescued_within_seconds_and_completed_by_another_worker() {
    let (_db, queue) = setup().await;
    let id = queue.enqueue(&[NewTask::new("record", json!({}))]).await.unwrap()[0].id;
    // A worker claims it and dies (never heartbeats, never reports).
    queue.claim(1, Duration::from_millis(500), "dead-worker").await.unwrap();
    let started = Instant::now();
    let w = spawn(&queue, Registry::new().register("record", Recorder::default()), fast("survivor"));
    wait_status(&queue, id, TaskStatus::Completed, Duration::from_secs(10)).await;
    let took = started.elapsed();
    w.shutdown().await;
    assert!(took < Duration::from_secs(3), "rescue took {took:?}");
    let task = queue.get(id).await.unwrap().unwrap();
    assert_eq!(task.attempts, 2);
    assert_eq!(task.leased_by.as_deref(), Some("survivor"));
    assert!(task.last_error.unwrap().contains("lease expired: worker dead-worker"));
}

#[tokio::test]
async fn expired_lease_on_the_last_attempt_dead_letters() {
    let (_db, queue) = setup().await;
    let mut t = NewTask::new("x", json!({}));
    t.max_attempts = 1;
    let id = queue.enqueue(&[t]).await.unwrap()[0].id;
    queue.claim(1, Duration::from_millis(50), "dead").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(queue.rescue_expired(10).await.unwrap(), vec![(id, TaskStatus::Failed)]);
}

#[tokio::test]
async fn heartbeats_keep_a_long_task_leased() {
    let (_db, queue) = setup().await;
    let id = queue.enqueue(&[NewTask::new("sleep", json!({"ms": 2000}))]).await.unwrap()[0].id;
    let mut config = fast("w");
    config.lease = Duration::from_millis(600);
    config.heartbeat = Duration::from_millis(150);
    let w = spawn(&queue, Registry::new().register("sleep", Sleep), config);
    wait_status(&queue, id, TaskStatus::Completed, Duration::from_secs(10)).await;
    w.shutdown().await;
    let task = queue.get(id).await.unwrap().unwrap();
    assert_eq!(task.attempts, 1, "the lease lapsed during a healthy run: {:?}", task.errors);
}

#[tokio::test]
async fn per_task_timeout_fails_the_attempt() {
    let (_db, queue) = setup().await;
    let mut t = NewTask::new("sleep", json!({"ms": 10_000}));
    t.timeout_secs = 1;
    t.max_attempts = 1;
    let id = queue.enqueue(&[t]).await.unwrap()[0].id;
    let w = spawn(&queue, Registry::new().register("sleep", Sleep), fast("w"));
    wait_status(&queue, id, TaskStatus::Failed, Duration::from_secs(10)).await;
    w.shutdown().await;
    assert_eq!(queue.get(id).await.unwrap().unwrap().last_error.as_deref(), Some("timed out after 1s"));
}

#[tokio::test]
async fn a_panicking_handler_fails_its_task_and_the_worker_lives_on() {
    let (_db, queue) = setup().await;
    let mut t = NewTask::new("panics", json!({}));
    t.max_attempts = 1;
    let bad = queue.enqueue(&[t]).await.unwrap()[0].id;
    let registry = Registry::new().register("panics", Panics).register("record", Recorder::default());
    let w = spawn(&queue, registry, fast("w"));
    wait_status(&queue, bad, TaskStatus::Failed, Duration::from_secs(10)).await;
    assert!(queue.get(bad).await.unwrap().unwrap().last_error.unwrap().contains("handler panicked: handler bug"));
    let good = queue.enqueue(&[NewTask::new("record", json!({}))]).await.unwrap()[0].id;
    wait_status(&queue, good, TaskStatus::Completed, Duration::from_secs(10)).await;
    w.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_short_tasks_and_releases_long_ones() {
    let (_db, queue) = setup().await;
    let short = queue.enqueue(&[NewTask::new("sleep", json!({"ms": 300}))]).await.unwrap()[0].id;
    let long = queue.enqueue(&[NewTask::new("sleep", json!({"ms": 60_000}))]).await.unwrap()[0].id;
    let mut config = fast("w");
    config.shutdown_timeout = Duration::from_millis(1000);
    let w = spawn(&queue, Registry::new().register("sleep", Sleep), config);
    wait_status(&queue, long, TaskStatus::Running, Duration::from_secs(10)).await;
    wait_status(&queue, short, TaskStatus::Running, Duration::from_secs(10)).await;
    let waiting = queue.enqueue(&[NewTask::new("sleep", json!({"ms": 1}))]).await.unwrap()[0].id;
    let took = w.shutdown().await;
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    assert_eq!(status_of(&queue, short).await, TaskStatus::Completed);
    let released = queue.get(long).await.unwrap().unwrap();
    assert_eq!(released.status, TaskStatus::Pending);
    assert_eq!(released.attempts, 0, "a release must not use up an attempt");
    // Tasks that arrived during the drain are left for other workers... unless claimed
    // before the shutdown began; either way none is left running.
    assert_ne!(status_of(&queue, waiting).await, TaskStatus::Running);
}

#[tokio::test]
async fn retry_requeues_failed_and_cancelled_tasks_only() {
    let (_db, queue) = setup().await;
    let mut t = NewTask::new("fails", json!({}));
    t.max_attempts = 1;
    let id = queue.enqueue(&[t]).await.unwrap()[0].id;
    let w = spawn(&queue, Registry::new().register("fails", AlwaysFails { permanent: false }), fast("w"));
    wait_status(&queue, id, TaskStatus::Failed, Duration::from_secs(10)).await;
    w.shutdown().await;
    match queue.retry(id).await.unwrap() {
        RetryOutcome::Requeued(t) => {
            assert_eq!(t.status, TaskStatus::Pending);
            assert_eq!(t.attempts, 0);
            assert_eq!(t.errors.as_array().unwrap().len(), 1, "history is kept");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(queue.retry(id).await.unwrap(), RetryOutcome::NotRetryable(_)));
    assert!(matches!(queue.retry(i64::MAX).await.unwrap(), RetryOutcome::NotFound));
}

#[tokio::test]
async fn enqueue_is_part_of_the_callers_transaction() {
    let (db, _queue) = setup().await;
    let mut tx = db.pool.begin().await.unwrap();
    Queue::enqueue_on(&mut tx, &[NewTask::new("x", json!({}))]).await.unwrap();
    tx.rollback().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks").fetch_one(&db.pool).await.unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn retention_purges_only_old_finished_tasks() {
    let (db, queue) = setup().await;
    let ids: Vec<i64> = queue.enqueue(&tasks("x", 3, json!({}))).await.unwrap().iter().map(|t| t.id).collect();
    sqlx::query("UPDATE tasks SET status = 'completed', completed_at = now() - interval '10 days' WHERE id = $1")
        .bind(ids[0])
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE tasks SET status = 'failed', completed_at = now() - interval '1 hour' WHERE id = $1")
        .bind(ids[1])
        .execute(&db.pool)
        .await
        .unwrap();
    let deleted = queue.purge_finished(Utc::now() - chrono::Duration::days(7)).await.unwrap();
    assert_eq!(deleted, 1);
    assert!(queue.get(ids[0]).await.unwrap().is_none());
    assert!(queue.get(ids[1]).await.unwrap().is_some());
    assert!(queue.get(ids[2]).await.unwrap().is_some());
}

#[tokio::test]
async fn depth_counts_ready_scheduled_and_running() {
    let (_db, queue) = setup().await;
    let mut later = NewTask::new("x", json!({}));
    later.run_at = Some(Utc::now() + chrono::Duration::hours(1));
    queue.enqueue(&[NewTask::new("x", json!({})), NewTask::new("x", json!({})), later]).await.unwrap();
    queue.claim(1, Duration::from_secs(30), "w").await.unwrap();
    let d = queue.depth().await.unwrap();
    assert_eq!((d.ready, d.scheduled, d.running), (1, 1, 1));
}

#[tokio::test]
async fn a_cancel_committed_while_an_outcome_waits_for_the_row_wins() {
    let (db, queue) = setup().await;
    let id = queue.enqueue(&[NewTask::new("x", json!({}))]).await.unwrap()[0].id;
    let claimed = queue.claim(1, Duration::from_secs(30), "w").await.unwrap().remove(0);
    // The API's cancel, held open so the worker's write has to wait for the row.
    let mut cancel = db.pool.begin().await.unwrap();
    sqlx::query("UPDATE tasks SET cancel_requested = true WHERE id = $1").bind(id).execute(&mut *cancel).await.unwrap();
    let recording = {
        let queue = queue.clone();
        let failed = Outcome::Failed { error: "boom".into(), retry_in: Some(Duration::from_millis(1)) };
        tokio::spawn(async move { queue.record(&[(id, claimed.lease_token, failed)]).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!recording.is_finished(), "the outcome should be waiting for the row lock");
    cancel.commit().await.unwrap();
    let applied = recording.await.unwrap().unwrap();
    assert_eq!(applied, vec![(id, TaskStatus::Cancelled)], "the retry must not resurrect a cancelled task");

    // The same race against the lease rescue.
    let id = queue.enqueue(&[NewTask::new("x", json!({}))]).await.unwrap()[0].id;
    queue.claim(1, Duration::from_millis(50), "dead").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut cancel = db.pool.begin().await.unwrap();
    sqlx::query("UPDATE tasks SET cancel_requested = true WHERE id = $1").bind(id).execute(&mut *cancel).await.unwrap();
    // SKIP LOCKED: the rescue passes over the locked row instead of deciding from a stale copy.
    assert!(queue.rescue_expired(10).await.unwrap().is_empty());
    cancel.commit().await.unwrap();
    assert_eq!(queue.rescue_expired(10).await.unwrap(), vec![(id, TaskStatus::Cancelled)]);
}

/// Tells the test it started, then runs for a minute (until its worker stops it).
#[derive(Clone)]
struct Hangs(tokio::sync::mpsc::UnboundedSender<i64>);

#[async_trait]
impl Handler for Hangs {
    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError> {
        let _ = self.0.send(ctx.id);
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(Value::Null)
    }
}

/// One worker that runs one task at a time under a long inline window.
fn window_worker(id: &str) -> WorkerConfig {
    WorkerConfig {
        concurrency: 1,
        inline_window: Duration::from_secs(3),
        lease: Duration::from_secs(10),
        heartbeat: Duration::from_secs(2),
        ..fast(id)
    }
}

/// Ends the connections that hold a claim open, as the death of their worker would.
async fn kill_claims(db: &TestDb) -> i64 {
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND state = 'idle in transaction') k",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    // The backends take a moment to go, and their locks with them.
    eventually(Duration::from_secs(5), "claim connections gone", || async {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        (left == 0).then_some(())
    })
    .await;
    killed
}

#[tokio::test]
async fn a_task_finished_inside_its_inline_window_is_written_once() {
    let (_db, queue) = setup().await;
    let id = queue.enqueue(&[NewTask::new("record", json!({}))]).await.unwrap()[0].id;
    let w = spawn(&queue, Registry::new().register("record", Recorder::default()), fast("w"));
    wait_status(&queue, id, TaskStatus::Completed, Duration::from_secs(10)).await;
    w.shutdown().await;
    let task = queue.get(id).await.unwrap().unwrap();
    // Inserted at version 1, then one update: no separate claim write.
    assert_eq!(task.version, 2);
    assert_eq!((task.attempts, task.leased_by.as_deref()), (1, Some("w")));
    assert_eq!(task.result, Some(json!({"ran": id})));
    assert!(task.started_at.is_some() && task.started_at <= task.completed_at);
}

#[tokio::test]
async fn a_task_outliving_the_inline_window_is_leased_and_finishes_under_its_lease() {
    let (_db, queue) = setup().await;
    let id = queue.enqueue(&[NewTask::new("sleep", json!({"ms": 1500}))]).await.unwrap()[0].id;
    let config = WorkerConfig { inline_window: Duration::from_millis(200), ..fast("w") };
    let w = spawn(&queue, Registry::new().register("sleep", Sleep), config);
    wait_status(&queue, id, TaskStatus::Running, Duration::from_secs(5)).await;
    let running = queue.get(id).await.unwrap().unwrap();
    assert_eq!((running.attempts, running.leased_by.as_deref()), (1, Some("w")));
    assert!(running.lease_expires_at.is_some());
    wait_status(&queue, id, TaskStatus::Completed, Duration::from_secs(10)).await;
    w.shutdown().await;
    let task = queue.get(id).await.unwrap().unwrap();
    assert_eq!(task.attempts, 1);
    assert_eq!(task.result, Some(json!({"slept_ms": 1500})));
}

#[tokio::test]
async fn a_claim_whose_worker_dies_frees_its_task_at_once_and_counts_the_attempt() {
    let (db, queue) = setup().await;
    let id = queue.enqueue(&[NewTask::new("hangs", json!({}))]).await.unwrap()[0].id;
    let (started, mut starts) = tokio::sync::mpsc::unbounded_channel();
    let w = spawn(&queue, Registry::new().register("hangs", Hangs(started)), window_worker("doomed"));
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), starts.recv()).await.unwrap(), Some(id));
    // Inside its window the task is held by row locks only: still pending, no lease.
    let held = queue.get(id).await.unwrap().unwrap();
    assert_eq!((held.status, held.attempts, held.lease_expires_at), (TaskStatus::Pending, 0, None));
    // The claim's marker goes out as the handlers start, from another connection (which
    // may still be connecting): the attempt is counted once it is in.
    eventually(Duration::from_secs(5), "the claim's marker written", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM task_claims").fetch_one(&db.pool).await.unwrap();
        (n == 1).then_some(())
    })
    .await;

    assert_eq!(kill_claims(&db).await, 1);
    // No lease to wait out: the task is due again the moment the claim is gone.
    let freed = queue.get(id).await.unwrap().unwrap();
    assert_eq!((freed.status, freed.attempts), (TaskStatus::Pending, 0));
    assert_eq!(queue.count_abandoned_claims().await.unwrap(), vec![(id, TaskStatus::Pending)]);
    let counted = queue.get(id).await.unwrap().unwrap();
    assert_eq!(counted.attempts, 1);
    assert!(counted.last_error.unwrap().contains("worker doomed stopped during the attempt"));
    assert_eq!(counted.errors[0]["attempt"], 1);
    // Counted once, however often it is asked.
    assert!(queue.count_abandoned_claims().await.unwrap().is_empty());
    // The dead claim's worker finds out when its window closes and stops the handler.
    let took = w.shutdown().await;
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
}

#[tokio::test]
async fn a_task_that_kills_its_worker_every_time_still_runs_out_of_attempts() {
    let (db, queue) = setup().await;
    let mut t = NewTask::new("hangs", json!({}));
    t.max_attempts = 2;
    let id = queue.enqueue(&[t]).await.unwrap()[0].id;
    let (started, mut starts) = tokio::sync::mpsc::unbounded_channel();
    // Each round a fresh worker (counting the dead claims of the last at start) takes the
    // task, and its claim dies under it.
    for round in 1..=2 {
        let w = spawn(
            &queue,
            Registry::new().register("hangs", Hangs(started.clone())),
            window_worker(&format!("w{round}")),
        );
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), starts.recv()).await.unwrap(), Some(id));
        assert_eq!(kill_claims(&db).await, 1);
        w.shutdown().await;
    }
    let w = spawn(&queue, Registry::new().register("hangs", Hangs(started)), window_worker("w3"));
    wait_status(&queue, id, TaskStatus::Failed, Duration::from_secs(5)).await;
    w.shutdown().await;
    let task = queue.get(id).await.unwrap().unwrap();
    assert_eq!(task.attempts, 2);
    assert_eq!(task.errors.as_array().map(Vec::len), Some(2), "{:?}", task.errors);
    assert!(starts.try_recv().is_err(), "it ran a third time");
}

/// The next notification within half a second, as (channel, payload).
async fn next(listener: &mut sqlx::postgres::PgListener) -> Option<(String, String)> {
    let n = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await.ok()?.unwrap();
    Some((n.channel().to_owned(), n.payload().to_owned()))
}

#[tokio::test]
async fn a_writer_can_send_its_inserts_notifications_after_commit_with_the_triggers_payloads() {
    let (db, queue) = setup().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&db.pool).await.unwrap();
    listener.listen_all([flowforge_queue::WAKE_CHANNEL, flowforge_queue::EVENTS_CHANNEL]).await.unwrap();

    // Through the triggers: a wake-up and the ids, sent by the inserting transaction.
    let by_trigger: Vec<i64> = queue.enqueue(&tasks("x", 2, json!({}))).await.unwrap().iter().map(|t| t.id).collect();
    let expected = format!("c{},{}", by_trigger[0], by_trigger[1]);
    let mut heard = vec![next(&mut listener).await.unwrap(), next(&mut listener).await.unwrap()];
    heard.sort();
    assert_eq!(heard, [("flowforge_task_events".into(), expected), ("flowforge_tasks".into(), String::new())]);

    // Deferred: nothing at commit, then the same notifications from notify_inserted.
    let mut tx = db.pool.begin_with(flowforge_queue::BEGIN_NOTIFY_AFTER_COMMIT).await.unwrap();
    let deferred: Vec<i64> =
        Queue::enqueue_on(&mut tx, &tasks("x", 2, json!({}))).await.unwrap().iter().map(|t| t.id).collect();
    tx.commit().await.unwrap();
    assert_eq!(next(&mut listener).await, None, "the deferring transaction notified at commit");
    queue.notify_inserted(&deferred);
    let mut heard = vec![next(&mut listener).await.unwrap(), next(&mut listener).await.unwrap()];
    heard.sort();
    let expected = format!("c{},{}", deferred[0], deferred[1]);
    assert_eq!(heard, [("flowforge_task_events".into(), expected), ("flowforge_tasks".into(), String::new())]);
    // The setting ended with the transaction: the next insert notifies by itself again.
    queue.enqueue(&tasks("x", 1, json!({}))).await.unwrap();
    assert!(next(&mut listener).await.is_some());
}

#[tokio::test]
async fn the_change_feed_hears_of_what_workers_do() {
    let (db, queue) = setup().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&db.pool).await.unwrap();
    listener.listen(flowforge_queue::EVENTS_CHANNEL).await.unwrap();
    let fast_one = queue.enqueue(&[NewTask::new("record", json!({}))]).await.unwrap()[0].id;
    let slow_one = queue.enqueue(&[NewTask::new("sleep", json!({"ms": 400}))]).await.unwrap()[0].id;
    let config = WorkerConfig { inline_window: Duration::from_millis(100), ..fast("w") };
    let registry = Registry::new().register("record", Recorder::default()).register("sleep", Sleep);
    let w = spawn(&queue, registry, config);
    wait_status(&queue, slow_one, TaskStatus::Completed, Duration::from_secs(10)).await;
    w.shutdown().await;
    // Each insert, the claim's close (one done, one leased) and the leased one's outcome.
    let mut heard = Vec::new();
    while let Some((_, payload)) = next(&mut listener).await {
        heard.push(payload);
    }
    let mentions = |id: i64| heard.iter().filter(|p| p[1..].split(',').any(|x| x == id.to_string())).count();
    assert!(mentions(fast_one) >= 2, "{heard:?}");
    assert!(mentions(slow_one) >= 3, "{heard:?}");
}
