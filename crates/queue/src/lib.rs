//! FlowForge's queue engine on PostgreSQL.
//!
//! * [`Queue`] is the storage side: enqueue (inside the caller's transaction), batch
//!   claim with `FOR UPDATE SKIP LOCKED`, fenced outcomes, heartbeats, lease rescue,
//!   cancel/retry and retention.
//! * [`TaskArgs`] declares a task kind as a type (name and payload); a [`TaskHandler`]
//!   runs it with the payload parsed.
//! * [`Worker`] runs handlers from a [`Registry`] keyed by task `kind`, woken by
//!   `LISTEN/NOTIFY` with a polling fallback, and drains gracefully on shutdown.
//!
//! Guarantee: at-least-once execution, exactly-once recording of the outcome. A claim is
//! a lease carrying a fresh token; every write a worker makes names that token, so once
//! a lease has expired and been rescued, the old holder's writes match no row.

mod backoff;
mod claim;
mod feed;
mod handler;
mod metrics;
mod model;
mod records;
mod store;
mod timestamp;
#[cfg(feature = "otel")]
pub mod trace;
mod worker;

pub use backoff::Backoff;
pub use feed::FeedChanges;
pub use handler::{Handler, HandlerError, InvalidArgs, Registry, TaskArgs, TaskContext, TaskHandler};
#[cfg(feature = "prometheus")]
pub use metrics::DepthGauges;
pub use metrics::QueueMetrics;
pub use model::{ClaimedTask, NewTask, Task, TaskStatus};
pub use records::{DeleteOutcome, PageKey, TaskEdit, TaskOrder, TaskQuery};
pub use store::{CancelOutcome, Outcome, Queue, QueueDepth, RetryOutcome, BEGIN_NOTIFY_AFTER_COMMIT};
pub use worker::{Worker, WorkerConfig};

/// The engine's schema. Shares `_sqlx_migrations` with the services' own migrators,
/// so every migrator ignores versions it does not know.
pub static MIGRATOR: sqlx::migrate::Migrator = {
    let mut m = sqlx::migrate!("./migrations");
    m.ignore_missing = true;
    m
};

/// Channel on which inserts (and re-queues) wake idle workers.
pub const WAKE_CHANNEL: &str = "flowforge_tasks";
/// Channel of the change feed: what every statement did to which tasks (see the
/// `feed` module for the payload, [`FeedChanges`] to read it).
pub const EVENTS_CHANNEL: &str = "flowforge_task_events";
/// Channel carrying the id of a running task whose cancellation was requested.
pub const CANCEL_CHANNEL: &str = "flowforge_cancel";
