//! The live change feed behind the web UI: one LISTEN connection per replica on the
//! queue's change channel, turned into task snapshots and fanned out to every open
//! event stream (each filters what its caller may see).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use flowforge_queue::{Task, EVENTS_CHANNEL, TASK_COLUMNS};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Changes arriving this close together are fetched with one query.
const COALESCE: Duration = Duration::from_millis(50);
/// Above this many changed tasks in one window, streams are told to reload instead.
const MAX_FETCH: usize = 2000;

#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    Changed(Box<Task>),
    Deleted {
        id: i64,
        owner_id: Option<i64>,
    },
    /// Changes were missed or too many to send: reload.
    Resync,
}

/// What one notification says.
#[derive(Debug, Default, PartialEq)]
struct Change {
    changed: BTreeSet<i64>,
    deleted: Vec<(i64, Option<i64>)>,
    resync: bool,
}

impl Change {
    /// Adds a payload of the `task_events` trigger: `c<id>,...`, `d<id>:<owner>,...` or `r`.
    fn add(&mut self, payload: &str) {
        let (kind, rest) = payload.split_at(payload.len().min(1));
        match kind {
            "c" => self.changed.extend(rest.split(',').filter_map(|id| id.parse::<i64>().ok())),
            "d" => self.deleted.extend(rest.split(',').filter_map(|pair| {
                let (id, owner) = pair.split_once(':')?;
                Some((id.parse().ok()?, owner.parse().ok()))
            })),
            _ => self.resync = true,
        }
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
    pub async fn run(self, db: PgPool, stop: CancellationToken) {
        let mut first = true;
        loop {
            let connected = async {
                let mut l = PgListener::connect_with(&db).await?;
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
                    if self.relay(listener, &db, &stop).await.is_ok() {
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
    async fn relay(&self, mut listener: PgListener, db: &PgPool, stop: &CancellationToken) -> Result<(), ()> {
        loop {
            let first = tokio::select! {
                n = listener.try_recv() => n,
                _ = stop.cancelled() => return Ok(()),
            };
            let mut change = Change::default();
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
                self.publish(self.resolve(db, change).await);
            }
        }
    }

    async fn resolve(&self, db: &PgPool, change: Change) -> Vec<TaskEvent> {
        if change.resync || change.changed.len() > MAX_FETCH {
            return vec![TaskEvent::Resync];
        }
        let mut events: Vec<TaskEvent> =
            change.deleted.into_iter().map(|(id, owner_id)| TaskEvent::Deleted { id, owner_id }).collect();
        if !change.changed.is_empty() {
            let ids: Vec<i64> = change.changed.into_iter().collect();
            let rows: sqlx::Result<Vec<Task>> =
                sqlx::query_as(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ANY($1) ORDER BY id"))
                    .bind(&ids)
                    .fetch_all(db)
                    .await;
            match rows {
                Ok(rows) => events.extend(rows.into_iter().map(|t| TaskEvent::Changed(Box::new(t)))),
                Err(e) => {
                    tracing::warn!(error = %e, "task feed could not read changed tasks");
                    return vec![TaskEvent::Resync];
                }
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_payloads_parse() {
        let mut c = Change::default();
        c.add("c1,2,3");
        c.add("c3,4");
        c.add("d7:1,8:");
        assert_eq!(c.changed.into_iter().collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(c.deleted, [(7, Some(1)), (8, None)]);
        assert!(!c.resync);
        let mut r = Change::default();
        r.add("r");
        assert!(r.resync);
    }
}
