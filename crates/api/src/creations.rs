//! Task creation with group commit. Creations without an idempotency key are handed to
//! one batcher per replica: while a batch's transaction is on its way, the creations that
//! arrive meanwhile gather and go together in the next one — one transaction, one insert
//! of tasks, one of audit rows and one commit (one WAL flush) for many requests. At low
//! load a batch holds a single creation and nothing waits. Every creation still commits
//! with its audit row, and its answer goes out only after that commit.

use std::sync::OnceLock;

use flowforge_queue::{NewTask, Queue, Task, BEGIN_NOTIFY_AFTER_COMMIT};
use sqlx::{PgConnection, PgPool};
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

/// The replica's batcher. Its writer starts with the first creation.
pub struct GroupCommit {
    db: PgPool,
    queue: Queue,
    sender: OnceLock<mpsc::UnboundedSender<(Creation, Reply)>>,
}

impl GroupCommit {
    pub fn new(db: PgPool, queue: Queue) -> Self {
        GroupCommit { db, queue, sender: OnceLock::new() }
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
        let (reply, answer) = oneshot::channel();
        sender.send((creation, reply)).map_err(|_| ApiError::Unavailable)?;
        answer.await.map_err(|_| ApiError::Unavailable)?
    }
}

/// Takes whatever has gathered whenever a writer is free, and writes it as one batch.
async fn gather(db: PgPool, queue: Queue, mut creations: mpsc::UnboundedReceiver<(Creation, Reply)>) {
    let writers = std::sync::Arc::new(Semaphore::new(WRITERS));
    loop {
        let Ok(writer) = writers.clone().acquire_owned().await else { return };
        let Some(first) = creations.recv().await else { return };
        let mut size = first.0.tasks.len();
        let mut batch = vec![first];
        while size < MAX_BATCH_TASKS {
            let Ok(next) = creations.try_recv() else { break };
            size += next.0.tasks.len();
            batch.push(next);
        }
        let (db, queue) = (db.clone(), queue.clone());
        tokio::spawn(async move {
            write(&db, &queue, batch).await;
            drop(writer);
        });
    }
}

async fn write(db: &PgPool, queue: &Queue, batch: Vec<(Creation, Reply)>) {
    // A request that stopped waiting (its client left, or it timed out and told the
    // client nothing was changed) is not written.
    let (creations, replies): (Vec<Creation>, Vec<Reply>) = batch.into_iter().filter(|(_, r)| !r.is_closed()).unzip();
    if creations.is_empty() {
        return;
    }
    match commit(db, queue, &creations).await {
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
                    let result = commit(db, queue, std::slice::from_ref(&creation)).await;
                    let _ = reply.send(result.map(|mut c| c.remove(0)).map_err(ApiError::from));
                }
                return;
            }
            let mut replies = replies.into_iter();
            if let Some(first) = replies.next() {
                let _ = first.send(Err(error));
            }
            for reply in replies {
                let _ = reply.send(Err(ApiError::Unavailable));
            }
        }
    }
}

/// One transaction for `creations`; the workers and the change feed hear of the tasks
/// after the commit.
async fn commit(db: &PgPool, queue: &Queue, creations: &[Creation]) -> sqlx::Result<Vec<Vec<Task>>> {
    let mut tx = db.begin_with(BEGIN_NOTIFY_AFTER_COMMIT).await?;
    let created = insert_on(&mut tx, creations).await?;
    tx.commit().await?;
    let ids: Vec<i64> = created.iter().flatten().map(|t| t.id).collect();
    queue.notify_inserted(&ids);
    Ok(created)
}
