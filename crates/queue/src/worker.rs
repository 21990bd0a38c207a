//! The worker runtime: claims tasks in batches, runs their handlers concurrently and
//! records outcomes in batches.
//!
//! A claim locks a batch of tasks in a transaction that stays open while their handlers
//! run, for up to `inline_window` (see the `claim` module). When every handler of the
//! batch is done, or the window is over, the claim closes: one statement records the
//! outcomes that are in and leases the tasks still running, and the commit releases the
//! locks. Leased tasks go on under a fenced lease: heartbeats extend it, and their
//! outcomes are written by the completer.
//!
//! Loops, each its own tokio task:
//! * fetch: opens a claim for as many tasks as there are free slots; when the queue
//!   looked empty it sleeps until a `NOTIFY`, the poll interval, or shutdown. Each claim
//!   then runs as a task of its own;
//! * completer: writes leased tasks' outcomes in batches (whatever accumulated while the
//!   previous write ran), one fenced statement per batch;
//! * heartbeat: extends the leases of running tasks and stops those whose cancellation
//!   was requested or whose lease was lost;
//! * listener (`LISTEN`), lease rescue (with the count of claims that died with their
//!   worker), queue-depth gauge and retention cleanup.
//!
//! A slot is held from claim until the task's outcome is written, so a worker never
//! holds more unrecorded work than it has slots.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::FutureExt;
use sqlx::postgres::PgListener;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, info_span, warn, Instrument};
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::claim::{status_after, Claim, LockedTask};
use crate::handler::{HandlerError, Registry, TaskContext};
use crate::metrics::{Ended, QueueMetrics};
use crate::model::TaskStatus;
use crate::store::{Outcome, Queue};
use crate::{CANCEL_CHANNEL, WAKE_CHANNEL};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Names this worker in leases and logs.
    pub id: String,
    /// Tasks held at once: running, or finished with the outcome not yet written.
    pub concurrency: usize,
    /// Most tasks claimed by one query.
    pub max_batch: usize,
    /// How long a claimed batch runs under its claim's row locks before the tasks still
    /// running are leased. A task that finishes within it costs one write instead of two,
    /// but while it runs it still shows as `pending`, and changes to it (cancel, edit)
    /// wait for the window to close. Zero leases every task when it is claimed.
    pub inline_window: Duration,
    /// Claims open at once, each holding a database connection for up to
    /// `inline_window`. A claim beyond these leases its tasks at once.
    pub max_open_claims: usize,
    /// How long a claim is valid without a heartbeat.
    pub lease: Duration,
    pub heartbeat: Duration,
    /// Fallback wake-up when no NOTIFY arrives (e.g. scheduled tasks becoming due).
    pub poll_interval: Duration,
    pub rescue_interval: Duration,
    pub depth_interval: Duration,
    /// On shutdown, how long running tasks may finish before they are released.
    pub shutdown_timeout: Duration,
    pub backoff: Backoff,
    /// Finished tasks older than this are deleted; `None` keeps them forever.
    pub retention: Option<Duration>,
    pub retention_interval: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: default_worker_id(),
            concurrency: 64,
            max_batch: 500,
            inline_window: Duration::from_millis(250),
            max_open_claims: 4,
            lease: Duration::from_secs(15),
            heartbeat: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            rescue_interval: Duration::from_secs(5),
            depth_interval: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(20),
            backoff: Backoff::default(),
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_interval: Duration::from_secs(3600),
        }
    }
}

/// `host-pid-random`: unique per process, readable in `leased_by`.
fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    format!("{host}-{}-{}", std::process::id(), &Uuid::new_v4().simple().to_string()[..6])
}

/// Why the runtime stops a running handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Cancelled,
    LeaseLost,
    Shutdown,
}

struct Running {
    token: Uuid,
    cancel: CancellationToken,
    reason: Arc<OnceLock<StopReason>>,
}

impl Running {
    fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.cancel.cancel();
    }
}

/// An attempt's outcome on its way to the database. It keeps the attempt's concurrency
/// slot until it is written: a worker never holds more claimed-but-unrecorded tasks than
/// it has slots, so fast handlers cannot outrun the completer and let leases expire on
/// work that is already done.
struct Reported {
    id: i64,
    token: Uuid,
    kind: String,
    outcome: Outcome,
    _slot: OwnedSemaphorePermit,
}

struct Shared {
    queue: Queue,
    config: WorkerConfig,
    registry: Registry,
    metrics: QueueMetrics,
    /// Leased tasks running here, by id.
    running: Mutex<HashMap<i64, Running>>,
    wake: Notify,
    outcomes: mpsc::UnboundedSender<Reported>,
    /// Cancelled when the worker starts draining: open claims close without waiting
    /// out their windows.
    draining: CancellationToken,
    /// Set when the drain deadline has passed: tasks leased from then on are released.
    releasing: AtomicBool,
}

impl Shared {
    /// Removes the task's entry if it is still this attempt's (a newer attempt of the same
    /// task may have replaced it).
    fn forget(&self, id: i64, token: Uuid) {
        let mut running = self.running.lock().expect("running map");
        if running.get(&id).is_some_and(|r| r.token == token) {
            running.remove(&id);
        }
    }

    fn stop(&self, id: i64, token: Option<Uuid>, reason: StopReason) {
        if let Some(r) = self.running.lock().expect("running map").get(&id) {
            if token.is_none_or(|t| t == r.token) {
                r.stop(reason);
            }
        }
    }

    /// Counts a recorded outcome by kind and by what became of the task.
    fn count(&self, kind: &str, outcome: &Outcome, status: TaskStatus) {
        let ended = match (status, outcome) {
            (TaskStatus::Completed, _) => Ended::Completed,
            (TaskStatus::Failed, _) => Ended::Failed,
            (TaskStatus::Pending, Outcome::Released) => Ended::Released,
            (TaskStatus::Pending, _) => Ended::Retried,
            (TaskStatus::Cancelled, _) => Ended::Cancelled,
            (TaskStatus::Running, _) => Ended::Running,
        };
        self.metrics.outcome(self.registry.metric_label(kind), ended);
    }
}

/// A worker process's queue runtime.
pub struct Worker {
    queue: Queue,
    config: WorkerConfig,
    registry: Registry,
    metrics: QueueMetrics,
}

impl Worker {
    pub fn new(queue: Queue, registry: Registry, config: WorkerConfig, metrics: QueueMetrics) -> Self {
        Worker { queue, config, registry, metrics }
    }

    /// Runs until `shutdown` is cancelled, then drains: no new claims, running tasks get
    /// `shutdown_timeout` to finish, the rest are released back to the queue, and every
    /// outcome is written before this returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            queue: self.queue,
            config: self.config,
            registry: self.registry,
            metrics: self.metrics,
            running: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            outcomes: tx,
            draining: shutdown.clone(),
            releasing: AtomicBool::new(false),
        });
        let mut kinds: Vec<&str> = shared.registry.kinds().collect();
        kinds.sort_unstable();
        shared.metrics.export_kinds(&kinds);
        info!(worker = %shared.config.id, concurrency = shared.config.concurrency,
              inline_window = ?shared.config.inline_window, ?kinds, "worker started");
        // A fleet restarting after a crash counts the attempts its dead claims made before
        // it claims anything again.
        count_abandoned_claims(&shared).await;

        let background = CancellationToken::new();
        let completer_close = CancellationToken::new();
        let loops = TaskTracker::new();
        loops.spawn(listen(shared.clone(), background.clone()));
        loops.spawn(heartbeat(shared.clone(), background.clone()));
        loops.spawn(rescue(shared.clone(), background.clone()));
        loops.spawn(shared.metrics.clone().refresh_depth(
            shared.queue.clone(),
            shared.config.depth_interval,
            background.clone(),
        ));
        if shared.config.retention.is_some() {
            loops.spawn(retention(shared.clone(), background.clone()));
        }
        let completer = tokio::spawn(complete(shared.clone(), rx, completer_close.clone()));

        // Claims and handlers: the drain waits for both.
        let work = TaskTracker::new();
        fetch(&shared, &work, &shutdown).await;

        work.close();
        let in_flight = shared.running.lock().expect("running map").len();
        info!(in_flight, timeout = ?shared.config.shutdown_timeout, "draining: no new claims");
        if tokio::time::timeout(shared.config.shutdown_timeout, work.wait()).await.is_err() {
            shared.releasing.store(true, Ordering::SeqCst);
            {
                let running = shared.running.lock().expect("running map");
                warn!(released = running.len(), "drain deadline reached; releasing unfinished tasks");
                running.values().for_each(|r| r.stop(StopReason::Shutdown));
            }
            work.wait().await;
        }
        completer_close.cancel();
        if let Err(e) = completer.await {
            error!(error = %e, "completer ended abnormally");
        }
        background.cancel();
        loops.close();
        loops.wait().await;
        info!(worker = %shared.config.id, "worker stopped");
    }
}

async fn fetch(shared: &Arc<Shared>, work: &TaskTracker, shutdown: &CancellationToken) {
    let slots = Arc::new(Semaphore::new(shared.config.concurrency));
    let windows = Arc::new(Semaphore::new(shared.config.max_open_claims));
    let mut more_likely = true;
    loop {
        if !more_likely {
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = tokio::time::sleep(shared.config.poll_interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = shutdown.cancelled() => return,
        };
        if shutdown.is_cancelled() {
            return;
        }
        let mut permits = vec![first];
        while permits.len() < shared.config.max_batch {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let window =
            if shared.config.inline_window.is_zero() { None } else { windows.clone().try_acquire_owned().ok() };
        let wanted = permits.len();
        match shared.queue.open_claim(wanted).await {
            Ok(None) => more_likely = false,
            Ok(Some(claim)) => {
                let n = claim.tasks.len();
                more_likely = n == wanted;
                shared.metrics.claimed(n);
                permits.truncate(n);
                work.spawn(run_claim(shared.clone(), work.clone(), claim, permits, window));
            }
            Err(e) => {
                more_likely = false;
                warn!(error = %e, "claim failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// One claimed task as the claim that holds it sees it.
struct Held {
    id: i64,
    attempt: i32,
    max_attempts: i32,
    kind: String,
    cancel: CancellationToken,
    reason: Arc<OnceLock<StopReason>>,
    slot: OwnedSemaphorePermit,
    /// Set once the task is leased.
    token: Option<Uuid>,
}

impl Held {
    fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.cancel.cancel();
    }
}

/// What a handler reports to its claim: the task's place in the claim and how the
/// attempt ended (`None`: the lease was lost, nothing to record).
type Finished = (usize, Option<Outcome>);

/// Runs a claim: its handlers start under the claim's locks when it has an inline
/// `window` (a permit of the open-claims limit), or after their leases otherwise. Closes
/// the claim, then passes the outcomes of leased tasks on to the completer.
async fn run_claim(
    shared: Arc<Shared>,
    work: TaskTracker,
    mut claim: Claim,
    slots: Vec<OwnedSemaphorePermit>,
    window: Option<OwnedSemaphorePermit>,
) {
    let (report, mut finished_rx) = mpsc::unbounded_channel::<Finished>();
    let tasks = std::mem::take(&mut claim.tasks);
    let mut held: Vec<Option<Held>> = tasks
        .iter()
        .zip(slots)
        .map(|(task, slot)| {
            Some(Held {
                id: task.id,
                attempt: task.attempt,
                max_attempts: task.max_attempts,
                kind: task.kind.clone(),
                cancel: CancellationToken::new(),
                reason: Arc::new(OnceLock::new()),
                slot,
                token: None,
            })
        })
        .collect();
    let n = tasks.len();
    let mut waiting = Some(tasks);
    // Per task: `None` until its handler reported, then how it ended.
    let mut outcomes: Vec<Option<Option<Outcome>>> = vec![None; n];

    if window.is_some() {
        let ids: Vec<i64> = held.iter().flatten().map(|h| h.id).collect();
        let mark = shared.queue.mark_claim(claim.xid, &ids, &shared.config.id);
        tokio::pin!(mark);
        // The first poll puts the marker on the wire (from an idle connection), and once
        // sent the database commits it even if this process dies: the handlers need not
        // wait for the answer, which would add a round trip to every task's start.
        let sent = futures::poll!(&mut mark);
        start_all(&shared, &work, waiting.take().unwrap_or_default(), &held, &report, false);
        let marked = match sent {
            std::task::Poll::Ready(result) => result,
            std::task::Poll::Pending => mark.await,
        };
        if let Err(e) = marked {
            // Only the attempt count after a crash depends on it: the tasks run anyway.
            warn!(error = %e, "could not mark a claim");
        }
        let deadline = tokio::time::Instant::now() + shared.config.inline_window;
        let mut reported = 0;
        while reported < n {
            tokio::select! {
                biased;
                f = finished_rx.recv() => {
                    let (i, outcome) = f.expect("the claim holds a sender");
                    outcomes[i] = Some(outcome);
                    reported += 1;
                }
                _ = tokio::time::sleep_until(deadline) => break,
                _ = shared.draining.cancelled() => break,
            }
        }
    }
    drop(window);

    // Released (or lost) inside the window: in neither list, so the task is simply due
    // again when the locks go, its attempt not counted.
    let mut recorded: Vec<(i64, TaskStatus, &Outcome)> = Vec::with_capacity(n);
    let mut leased: Vec<(i64, Uuid)> = Vec::new();
    for (h, outcome) in held.iter().zip(&outcomes) {
        let h = h.as_ref().expect("every task is held until the claim closes");
        match outcome {
            None => leased.push((h.id, Uuid::new_v4())),
            Some(Some(o)) => {
                if let Some(status) = status_after(o, h.attempt, h.max_attempts) {
                    recorded.push((h.id, status, o));
                }
            }
            Some(None) => {}
        }
    }
    let closed = Queue::close_claim(claim, &recorded, &leased, shared.config.lease, &shared.config.id).await;
    if let Err(e) = closed {
        // Nothing was written and the locks are gone: every task of the claim is due
        // again and will run again. Stop the ones still running here.
        warn!(error = %e, tasks = n, "could not close a claim; its tasks will run again");
        for (h, outcome) in held.iter().zip(&outcomes) {
            if outcome.is_none() {
                h.as_ref().expect("held").stop(StopReason::LeaseLost);
            }
        }
        return;
    }
    let statuses: Vec<TaskStatus> = recorded.iter().map(|(_, status, _)| *status).collect();
    let changed: Vec<i64> = recorded.iter().map(|(id, ..)| *id).chain(leased.iter().map(|(id, _)| *id)).collect();
    drop(recorded);
    let queue = shared.queue.clone();
    // Off the claim's path: live views only.
    tokio::spawn(async move { queue.notify_changed(&changed).await });
    let mut statuses = statuses.into_iter();
    let mut tokens = leased.into_iter();
    let releasing = shared.releasing.load(Ordering::SeqCst);
    let mut still_held = 0;
    for (slot, outcome) in held.iter_mut().zip(outcomes) {
        match outcome {
            // In the order the lists were built: the claim's.
            Some(Some(o)) if o != Outcome::Released => {
                let h = slot.take().expect("held");
                if let Some(status) = statuses.next() {
                    shared.count(&h.kind, &o, status);
                }
            }
            Some(_) => *slot = None,
            None => {
                let h = slot.as_mut().expect("held");
                let (_, token) = tokens.next().expect("a token per unfinished task");
                h.token = Some(token);
                let entry = Running { token, cancel: h.cancel.clone(), reason: h.reason.clone() };
                if releasing {
                    entry.stop(StopReason::Shutdown);
                }
                if let Some(old) = shared.running.lock().expect("running map").insert(h.id, entry) {
                    // Claimed again while an older attempt still runs here: that one's lease is gone.
                    old.stop(StopReason::LeaseLost);
                }
                still_held += 1;
            }
        }
    }
    if let Some(tasks) = waiting {
        start_all(&shared, &work, tasks, &held, &report, true);
    }
    drop(report);

    // The rest finish under their leases: pass their outcomes on to the completer.
    while still_held > 0 {
        let Some((i, outcome)) = finished_rx.recv().await else { break };
        let Some(h) = held[i].take() else { continue };
        still_held -= 1;
        let Some(token) = h.token else { continue };
        match outcome {
            Some(outcome) => {
                let _ = shared.outcomes.send(Reported { id: h.id, token, kind: h.kind, outcome, _slot: h.slot });
            }
            None => shared.forget(h.id, token),
        }
    }
}

/// Starts the handlers of a claim's tasks (in the claim's order, as `held`): all of them
/// under the claim's locks, or only the leased ones once it has closed.
fn start_all(
    shared: &Arc<Shared>,
    work: &TaskTracker,
    tasks: Vec<LockedTask>,
    held: &[Option<Held>],
    report: &mpsc::UnboundedSender<Finished>,
    leased_only: bool,
) {
    for (i, (task, h)) in tasks.into_iter().zip(held).enumerate() {
        let Some(h) = h.as_ref().filter(|h| !leased_only || h.token.is_some()) else { continue };
        start(shared, work, task, i, h.cancel.clone(), h.reason.clone(), report.clone());
    }
}

fn start(
    shared: &Arc<Shared>,
    work: &TaskTracker,
    task: LockedTask,
    index: usize,
    cancel: CancellationToken,
    reason: Arc<OnceLock<StopReason>>,
    report: mpsc::UnboundedSender<Finished>,
) {
    shared.metrics.started();
    let span = info_span!("task", task_id = task.id, kind = %task.kind, attempt = task.attempt,
                          request_id = task.request_id.as_deref().unwrap_or(""),
                          trace_id = task.trace_id.as_deref().unwrap_or(""));
    #[cfg(feature = "otel")]
    if let Some(trace_id) = task.trace_id.as_deref() {
        crate::trace::continue_trace(&span, trace_id);
    }
    let shared = shared.clone();
    work.spawn(
        async move {
            let started = std::time::Instant::now();
            let outcome = execute(&shared, task, cancel, &reason).await;
            shared.metrics.finished();
            // A line per attempt, in the task's span (task, request and trace ids). A quick
            // completion is the bulk of them and the metrics count it: through a container
            // log driver a line costs more than a no-op task, so it is logged at debug
            // (FLOWFORGE_LOG=info,flowforge::attempts=debug shows it). The rest are info.
            let elapsed = started.elapsed();
            let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
            match &outcome {
                Some(Outcome::Completed(_)) if elapsed < SLOW_ATTEMPT => {
                    debug!(target: "flowforge::attempts", outcome = "completed", elapsed_ms, "attempt finished")
                }
                Some(o) => info!(target: "flowforge::attempts", outcome = o.label(), elapsed_ms, "attempt finished"),
                None => info!(target: "flowforge::attempts", outcome = "lease lost", elapsed_ms, "attempt finished"),
            }
            let _ = report.send((index, outcome));
        }
        .instrument(span),
    );
}

/// Runs one attempt. `None` means there is nothing to record (the lease was lost).
async fn execute(
    shared: &Shared,
    task: LockedTask,
    cancel: CancellationToken,
    reason: &OnceLock<StopReason>,
) -> Option<Outcome> {
    let delay = (Utc::now() - task.due).to_std().unwrap_or_default();
    shared.metrics.start_delay(delay);
    let Some(handler) = shared.registry.get(&task.kind) else {
        warn!("no handler for this kind");
        return Some(Outcome::Failed {
            error: format!("no handler registered for kind {:?}", task.kind),
            retry_in: None,
        });
    };
    debug!("started");
    // Drawn only when an attempt fails: most succeed.
    let attempt = task.attempt;
    let retry_in = || Some(shared.config.backoff.delay(attempt));
    let timeout = Duration::from_secs(task.timeout_secs.max(1) as u64);
    let ctx = TaskContext {
        id: task.id,
        kind: task.kind.clone(),
        payload: task.payload,
        attempt: task.attempt,
        max_attempts: task.max_attempts,
        owner_id: task.owner_id,
        request_id: task.request_id,
        trace_id: task.trace_id,
        cancelled: cancel.clone(),
    };
    let started = Instant::now();
    // A panic in the handler unwinds to here and becomes a failed attempt, not a dead
    // worker. Dropping `run` (cancellation, timeout) stops the handler.
    let run = AssertUnwindSafe(handler.run(ctx)).catch_unwind();
    tokio::pin!(run);
    // Biased, cancellation first: a handler that returns because it saw the cancellation
    // must still be recorded as cancelled/released, not as its own result.
    let finished = tokio::select! {
        biased;
        _ = cancel.cancelled() => {
            return match reason.get() {
                Some(StopReason::Cancelled) => { info!("cancelled while running"); Some(Outcome::Cancelled) }
                Some(StopReason::Shutdown) => { info!("released at shutdown"); Some(Outcome::Released) }
                Some(StopReason::LeaseLost) | None => { warn!("lease lost; abandoning attempt"); None }
            };
        }
        r = &mut run => Some(r),
        _ = tokio::time::sleep(timeout) => None,
    };
    shared.metrics.processing(&task.kind, started.elapsed());
    let outcome = match finished {
        None => {
            cancel.cancel();
            Outcome::Failed { error: format!("timed out after {}s", timeout.as_secs()), retry_in: retry_in() }
        }
        Some(Ok(Ok(value))) => Outcome::Completed(value),
        Some(Ok(Err(HandlerError::Retryable(error)))) => Outcome::Failed { error, retry_in: retry_in() },
        Some(Ok(Err(HandlerError::Permanent(error)))) => Outcome::Failed { error, retry_in: None },
        Some(Err(payload)) => {
            shared.metrics.panicked();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            Outcome::Failed { error: format!("handler panicked: {message}"), retry_in: retry_in() }
        }
    };
    match &outcome {
        Outcome::Completed(_) => debug!(elapsed_ms = started.elapsed().as_millis() as u64, "completed"),
        Outcome::Failed { error, .. } => warn!(%error, "attempt failed"),
        _ => {}
    }
    Some(outcome)
}

/// Most outcomes written by one statement.
const MAX_RECORD_BATCH: usize = 1000;

/// A completed attempt at least this long is logged at info, like one that did not complete.
const SLOW_ATTEMPT: Duration = Duration::from_secs(1);

async fn complete(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Reported>, close: CancellationToken) {
    let mut batch = Vec::with_capacity(MAX_RECORD_BATCH);
    loop {
        let next = tokio::select! {
            biased;
            m = rx.recv() => m,
            _ = close.cancelled() => None,
        };
        let Some(first) = next else {
            while let Ok(m) = rx.try_recv() {
                batch.push(m);
            }
            if !batch.is_empty() {
                record(&shared, &mut batch).await;
            }
            return;
        };
        batch.push(first);
        while batch.len() < MAX_RECORD_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        record(&shared, &mut batch).await;
    }
}

/// Writes a batch of outcomes, retrying while the database is unreachable. Past the
/// lease duration the leases are gone anyway (the tasks will be rescued and rerun), so
/// the batch is dropped rather than held forever.
async fn record(shared: &Shared, batch: &mut Vec<Reported>) {
    let rows: Vec<(i64, Uuid, Outcome)> = batch.iter().map(|r| (r.id, r.token, r.outcome.clone())).collect();
    let started = Instant::now();
    let mut wait = Duration::from_millis(100);
    let changed = loop {
        match shared.queue.record(&rows).await {
            Ok(changed) => break changed,
            Err(e) if started.elapsed() < shared.config.lease => {
                warn!(error = %e, outcomes = rows.len(), "cannot record outcomes; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                error!(error = %e, outcomes = rows.len(), "giving up recording outcomes; their tasks will be rescued");
                for r in batch.drain(..) {
                    shared.forget(r.id, r.token);
                }
                return;
            }
        }
    };
    for r in batch.iter() {
        shared.forget(r.id, r.token);
    }
    let status: HashMap<i64, TaskStatus> = changed.into_iter().collect();
    for r in batch.drain(..) {
        match status.get(&r.id) {
            Some(st) => shared.count(&r.kind, &r.outcome, *st),
            None => {
                shared.metrics.stale_outcome();
                info!(task_id = r.id, "outcome dropped: lease no longer held");
            }
        }
    }
}

async fn heartbeat(shared: Arc<Shared>, close: CancellationToken) {
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(shared.config.heartbeat) => {}
            _ = close.cancelled() => return,
        }
        let leases: Vec<(i64, Uuid)> =
            shared.running.lock().expect("running map").iter().map(|(id, r)| (*id, r.token)).collect();
        if leases.is_empty() {
            last_ok = Instant::now();
            continue;
        }
        match shared.queue.heartbeat(&leases, shared.config.lease).await {
            Ok(held) => {
                last_ok = Instant::now();
                let held: HashMap<i64, bool> = held.into_iter().collect();
                for (id, token) in leases {
                    match held.get(&id) {
                        Some(true) => shared.stop(id, Some(token), StopReason::Cancelled),
                        Some(false) => {}
                        None => shared.stop(id, Some(token), StopReason::LeaseLost),
                    }
                }
            }
            Err(e) if last_ok.elapsed() < shared.config.lease => warn!(error = %e, "heartbeat failed"),
            Err(e) => {
                // Our leases have run out and the tasks may already run elsewhere:
                // stop them here rather than race the new holders.
                error!(error = %e, tasks = leases.len(), "no heartbeat for a whole lease; abandoning running tasks");
                for (id, token) in leases {
                    shared.stop(id, Some(token), StopReason::LeaseLost);
                }
            }
        }
    }
}

async fn listen(shared: Arc<Shared>, close: CancellationToken) {
    let mut listener = loop {
        let attempt = async {
            let mut l = PgListener::connect_with(shared.queue.pool()).await?;
            l.listen_all([WAKE_CHANNEL, CANCEL_CHANNEL]).await?;
            Ok::<_, sqlx::Error>(l)
        };
        match attempt.await {
            Ok(l) => break l,
            Err(e) => {
                warn!(error = %e, "cannot LISTEN yet; polling meanwhile");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = close.cancelled() => return,
                }
            }
        }
    };
    loop {
        let message = tokio::select! {
            m = listener.try_recv() => m,
            _ = close.cancelled() => return,
        };
        match message {
            Ok(Some(n)) if n.channel() == CANCEL_CHANNEL => {
                if let Ok(id) = n.payload().parse::<i64>() {
                    shared.stop(id, None, StopReason::Cancelled);
                }
            }
            Ok(Some(_)) => shared.wake.notify_one(),
            // The connection dropped and was re-established: notifications may have been
            // missed, so look for work now.
            Ok(None) => shared.wake.notify_one(),
            Err(e) => {
                warn!(error = %e, "LISTEN connection failed; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = close.cancelled() => return,
                }
            }
        }
    }
}

async fn rescue(shared: Arc<Shared>, close: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(shared.config.rescue_interval) => {}
            _ = close.cancelled() => return,
        }
        match shared.queue.rescue_expired(1000).await {
            Ok(rescued) => {
                for (id, status) in &rescued {
                    warn!(task_id = id, now = status.as_str(), "rescued task with expired lease");
                }
                shared.metrics.lease_expiries(rescued.len());
            }
            Err(e) => warn!(error = %e, "lease rescue failed"),
        }
        count_abandoned_claims(&shared).await;
    }
}

/// Counts the attempts of claims that died with their worker (see the `claim` module).
async fn count_abandoned_claims(shared: &Shared) {
    match shared.queue.count_abandoned_claims().await {
        Ok(counted) => {
            for (id, status) in &counted {
                warn!(task_id = id, now = status.as_str(), "counted the attempt of a claim whose worker died");
            }
            shared.metrics.lease_expiries(counted.len());
        }
        Err(e) => warn!(error = %e, "counting abandoned claims failed"),
    }
}

async fn retention(shared: Arc<Shared>, close: CancellationToken) {
    let Some(keep) = shared.config.retention else { return };
    loop {
        let cutoff = Utc::now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        match shared.queue.purge_finished(cutoff).await {
            Ok(0) => {}
            Ok(deleted) => info!(deleted, %cutoff, "retention: deleted finished tasks"),
            Err(e) => warn!(error = %e, "retention cleanup failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(shared.config.retention_interval) => {}
            _ = close.cancelled() => return,
        }
    }
}
