//! Task creation with group commit. Creations without an idempotency key are handed to
//! one batcher per replica: while a batch's transaction is on its way, the creations that
//! arrive meanwhile gather and go together in the next one — one transaction, one insert
//! of tasks, one of audit rows and one commit (one WAL flush) for many requests. At low
//! load a batch holds a single creation and nothing waits. Every creation still commits
//! with its audit row, and its answer goes out only after that commit.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use flowforge_queue::{NewTask, Queue, Task, BEGIN_NOTIFY_AFTER_COMMIT};
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::accounts::Caller;
use crate::audit::AuditRecord;
use crate::error::ApiError;

/// A batch closes once it holds this many tasks (a bulk creation larger than this goes
/// alone).
const MAX_BATCH_TASKS: usize = 1_000;
/// Batches in flight at once per replica: one being written while the next gathers,
/// and one more so a slow commit does not stall the replica.
const WRITERS: usize = 2;

/// One request's tasks, created together, and the audit record they commit with.
pub struct Creation {
    pub tasks: Vec<NewTask>,
    /// Whether the request was a bulk creation: it names its audit target differently.
    pub many: bool,
    pub audit: Option<(AuditRecord, Caller)>,
}

/// What the audit log names as a creation's change: the task, or the range a bulk made.
pub fn target(created: &[Task], many: bool) -> String {
    let (first, last) = (created[0].id, created[created.len() - 1].id);
    if many {
        format!("tasks:{first}..{last} ({})", created.len())
    } else {
        format!("task:{first}")
    }
}

/// Inserts each creation's tasks and audit row on `conn` (inside the caller's
/// transaction); the tasks of each, in input order.
pub async fn insert_on(conn: &mut PgConnection, creations: &[Creation]) -> sqlx::Result<Vec<Vec<Task>>> {
    // Collected first: a closure in the argument would make this future not `Send`.
    let tasks: Vec<&NewTask> = creations.iter().flat_map(|c| &c.tasks).collect();
    let mut created = Queue::enqueue_on(conn, tasks).await?.into_iter();
    let per_creation: Vec<Vec<Task>> =
        creations.iter().map(|c| created.by_ref().take(c.tasks.len()).collect()).collect();
    let audits: Vec<(&AuditRecord, &Caller, String)> = creations
        .iter()
        .zip(&per_creation)
        .filter_map(|(c, tasks)| c.audit.as_ref().map(|(record, caller)| (record, caller, target(tasks, c.many))))
        .collect();
    AuditRecord::write_all_on(conn, &audits, 201).await?;
    Ok(per_creation)
}

type Reply = oneshot::Sender<Result<Vec<Task>, ApiError>>;

/// A creation waiting for a batch. It is taken into a batch only once that batch holds a
/// connection, and the request gives up only while it has not been taken: so a request
/// either is answered after its batch's commit or is told nothing was done, never both.
struct Waiting {
    creation: Creation,
    reply: Reply,
    state: Arc<AtomicU8>,
}

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

impl Waiting {
    fn take(&self) -> bool {
        self.state.compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

/// The replica's batcher. Its writer starts with the first creation.
pub struct GroupCommit {
    db: PgPool,
    queue: Queue,
    /// How long a creation waits to be taken into a batch: the pool's acquire timeout,
    /// as long as it would have waited for a connection of its own.
    patience: Duration,
    sender: OnceLock<mpsc::UnboundedSender<Waiting>>,
}

impl GroupCommit {
    pub fn new(db: PgPool, queue: Queue, patience: Duration) -> Self {
        GroupCommit { db, queue, patience, sender: OnceLock::new() }
    }

    /// Creates the tasks, committed with their audit row, in the next batch. Unbounded
    /// in itself: the write gate bounds the creations in flight. Call it from within a
    /// Tokio runtime.
    pub async fn create(&self, creation: Creation) -> Result<Vec<Task>, ApiError> {
        let sender = self.sender.get_or_init(|| {
            let (sender, creations) = mpsc::unbounded_channel();
            tokio::spawn(gather(self.db.clone(), self.queue.clone(), creations));
            sender
        });
        let (reply, mut answer) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(QUEUED));
        sender.send(Waiting { creation, reply, state: state.clone() }).map_err(|_| ApiError::Unavailable)?;
        if let Ok(answered) = tokio::time::timeout(self.patience, &mut answer).await {
            return answered.map_err(|_| ApiError::Unavailable)?;
        }
        if state.compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            tracing::warn!(waited = ?self.patience, "no connection for a batch of creations");
            return Err(ApiError::Unavailable);
        }
        answer.await.map_err(|_| ApiError::Unavailable)?
    }
}

/// Whenever a writer is free and a creation waits: takes a connection, then every
/// creation waiting by then, and writes them as one batch.
async fn gather(db: PgPool, queue: Queue, mut waiting: mpsc::UnboundedReceiver<Waiting>) {
    let writers = Arc::new(Semaphore::new(WRITERS));
    loop {
        let Ok(writer) = writers.clone().acquire_owned().await else { return };
        let Some(first) = waiting.recv().await else { return };
        let conn = db.acquire().await;
        let mut size = 0;
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(w) = next.take() {
            // Requests that gave up (told nothing was done), or whose client left, are
            // not written.
            if w.take() && !w.reply.is_closed() {
                size += w.creation.tasks.len();
                batch.push(w);
            }
            if size < MAX_BATCH_TASKS {
                next = waiting.try_recv().ok();
            }
        }
        let conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                answer_failed(batch.into_iter().map(|w| w.reply), ApiError::from(e));
                continue;
            }
        };
        if batch.is_empty() {
            continue;
        }
        let queue = queue.clone();
        tokio::spawn(async move {
            write(conn, &queue, batch).await;
            drop(writer);
        });
    }
}

/// The first creation gets `error`; the others, which shared its batch, are told the
/// database is unavailable.
fn answer_failed(replies: impl IntoIterator<Item = Reply>, error: ApiError) {
    let mut replies = replies.into_iter();
    if let Some(first) = replies.next() {
        let _ = first.send(Err(error));
    }
    for reply in replies {
        let _ = reply.send(Err(ApiError::Unavailable));
    }
}

async fn write(mut conn: PoolConnection<Postgres>, queue: &Queue, batch: Vec<Waiting>) {
    let (creations, replies): (Vec<Creation>, Vec<Reply>) = batch.into_iter().map(|w| (w.creation, w.reply)).unzip();
    match commit(&mut conn, queue, &creations).await {
        Ok(created) => {
            for (reply, tasks) in replies.into_iter().zip(created) {
                let _ = reply.send(Ok(tasks));
            }
        }
        Err(e) => {
            let error = ApiError::from(e);
            if creations.len() > 1 && !matches!(error, ApiError::Unavailable) {
                // Something in one creation was refused: each goes alone, so the others
                // are not refused with it.
                for (creation, reply) in creations.into_iter().zip(replies) {
                    // Its request may have run out of time meanwhile, telling its client
                    // nothing was done.
                    if reply.is_closed() {
                        continue;
                    }
                    // On the batch's connection: the failed transaction was rolled back.
                    let result = commit(&mut conn, queue, std::slice::from_ref(&creation)).await;
                    let _ = reply.send(result.map(|mut c| c.remove(0)).map_err(ApiError::from));
                }
                return;
            }
            answer_failed(replies, error);
        }
    }
}

/// One transaction for `creations`; the workers and the change feed hear of the tasks
/// after the commit.
async fn commit(conn: &mut PgConnection, queue: &Queue, creations: &[Creation]) -> sqlx::Result<Vec<Vec<Task>>> {
    let mut tx = conn.begin_with(BEGIN_NOTIFY_AFTER_COMMIT).await?;
    let created = insert_on(&mut tx, creations).await?;
    tx.commit().await?;
    let ids: Vec<i64> = created.iter().flatten().map(|t| t.id).collect();
    queue.notify_inserted(&ids);
    Ok(created)
}
