//! The live change feed behind the web UI: one LISTEN connection per replica on the
//! queue's change channel, turned into task snapshots and fanned out to every open
//! event stream (each filters what its caller may see).

use std::sync::Arc;
use std::time::Duration;

use flowforge_queue::{FeedChanges, Queue, Task, EVENTS_CHANNEL};
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Changes arriving this close together are fetched with one query.
const COALESCE: Duration = Duration::from_millis(50);
/// Above this many changed tasks in one window, streams are told to reload instead.
const MAX_FETCH: usize = 2000;

#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    Changed(TaskChange),
    Deleted {
        id: i64,
        owner_id: Option<i64>,
    },
    /// Changes were missed or too many to send: reload.
    Resync,
}

/// A changed task as the streams send it: what the board shows, without the payload, the
/// result and the attempts' errors, which can be large (the UI reads them with the task
/// when it opens it). Serialised once, whatever the number of streams.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskChange {
    pub owner_id: Option<i64>,
    pub json: Arc<str>,
}

impl TaskChange {
    pub fn of(task: &Task) -> TaskChange {
        let mut summary = serde_json::to_value(task).expect("a task serialises");
        if let Some(fields) = summary.as_object_mut() {
            for large in ["payload", "result", "errors"] {
                fields.remove(large);
            }
        }
        TaskChange { owner_id: task.owner_id, json: summary.to_string().into() }
    }
}

#[derive(Clone)]
pub struct TaskFeed {
    tx: broadcast::Sender<Arc<Vec<TaskEvent>>>,
}

impl Default for TaskFeed {
    fn default() -> Self {
        TaskFeed { tx: broadcast::channel(256).0 }
    }
}

impl TaskFeed {
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<TaskEvent>>> {
        self.tx.subscribe()
    }

    fn publish(&self, events: Vec<TaskEvent>) {
        if !events.is_empty() {
            let _ = self.tx.send(Arc::new(events)); // no subscriber is fine
        }
    }

    /// Listens until `stop`, reconnecting after failures; after each reconnect streams
    /// are told to reload, since changes in between were not seen.
    pub async fn run(self, queue: Queue, stop: CancellationToken) {
        let mut first = true;
        loop {
            let connected = async {
                let mut l = PgListener::connect_with(queue.pool()).await?;
                l.listen(EVENTS_CHANNEL).await?;
                Ok::<_, sqlx::Error>(l)
            };
            let listener = tokio::select! {
                l = connected => l,
                _ = stop.cancelled() => return,
            };
            match listener {
                Ok(listener) => {
                    if !std::mem::take(&mut first) {
                        self.publish(vec![TaskEvent::Resync]);
                    }
                    if self.relay(listener, &queue, &stop).await.is_ok() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "task feed cannot LISTEN; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Relays notifications until `stop` (Ok) or a connection failure (Err).
    async fn relay(&self, mut listener: PgListener, queue: &Queue, stop: &CancellationToken) -> Result<(), ()> {
        loop {
            let first = tokio::select! {
                n = listener.try_recv() => n,
                _ = stop.cancelled() => return Ok(()),
            };
            let mut change = FeedChanges::default();
            match first {
                Ok(Some(n)) => change.add(n.payload()),
                // Reconnected by sqlx: notifications in between are lost.
                Ok(None) => change.resync = true,
                Err(e) => {
                    tracing::warn!(error = %e, "task feed lost its connection");
                    return Err(());
                }
            }
            let deadline = tokio::time::Instant::now() + COALESCE;
            while let Ok(Ok(Some(n))) = tokio::time::timeout_at(deadline, listener.try_recv()).await {
                change.add(n.payload());
            }
            if self.tx.receiver_count() > 0 {
                self.publish(self.resolve(queue, change).await);
            }
        }
    }

    async fn resolve(&self, queue: &Queue, change: FeedChanges) -> Vec<TaskEvent> {
        if change.resync || change.changed.len() > MAX_FETCH {
            return vec![TaskEvent::Resync];
        }
        let mut events: Vec<TaskEvent> =
            change.deleted.into_iter().map(|(id, owner_id)| TaskEvent::Deleted { id, owner_id }).collect();
        if !change.changed.is_empty() {
            let ids: Vec<i64> = change.changed.into_iter().collect();
            match queue.get_many(&ids).await {
                Ok(rows) => events.extend(rows.iter().map(|t| TaskEvent::Changed(TaskChange::of(t)))),
                Err(e) => {
                    tracing::warn!(error = %e, "task feed could not read changed tasks");
                    return vec![TaskEvent::Resync];
                }
            }
        }
        events
    }
}
