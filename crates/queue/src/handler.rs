use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// What a handler sees of the task it runs.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub id: i64,
    pub kind: String,
    pub payload: Value,
    /// 1 on the first run.
    pub attempt: i32,
    pub max_attempts: i32,
    /// The tenant that created the task, if the service that did gave one.
    pub owner_id: Option<i64>,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    /// Cancelled when the task is cancelled, its lease is lost or its time is up. The
    /// runtime also drops the handler's future, so observing it is only needed for
    /// clean-up.
    pub cancelled: CancellationToken,
}

/// Why a handler failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth another attempt (network error, 5xx, ...): retried with backoff until
    /// `max_attempts`.
    #[error("{0}")]
    Retryable(String),
    /// Retrying cannot help (bad payload, 4xx): the task fails at once.
    #[error("{0}")]
    Permanent(String),
}

/// Runs tasks of one kind.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError>;
}

/// Handlers keyed by task `kind`.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(mut self, kind: impl Into<String>, handler: impl Handler) -> Self {
        self.handlers.insert(kind.into(), Arc::new(handler));
        self
    }

    pub fn get(&self, kind: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(kind).cloned()
    }

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }
}
