use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Where a task is in its life. `failed` is the dead letter: retries exhausted (or a
/// permanent error), kept with its last error for inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[sqlx(type_name = "task_status", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 5] =
        [TaskStatus::Pending, TaskStatus::Running, TaskStatus::Completed, TaskStatus::Failed, TaskStatus::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled)
    }
}

impl std::str::FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            format!("unknown status {s:?} (expected one of pending, running, completed, failed, cancelled)")
        })
    }
}

/// A task as stored (everything but the lease token, which never leaves the engine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Task {
    pub id: i64,
    pub title: String,
    pub description: String,
    pub kind: String,
    /// Any JSON, as its kind's payload schema allows.
    #[cfg_attr(feature = "openapi", schema(value_type = serde_json::Value))]
    pub payload: Value,
    pub status: TaskStatus,
    pub priority: i16,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub run_at: DateTime<Utc>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub timeout_secs: i32,
    pub last_error: Option<String>,
    /// One entry per failed attempt: `{attempt, at, error, worker}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub errors: Value,
    /// What the handler returned: any JSON.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<serde_json::Value>))]
    pub result: Option<Value>,
    pub owner_id: Option<i64>,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    pub version: i64,
    pub cancel_requested: bool,
    pub leased_by: Option<String>,
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub lease_expires_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub updated_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub completed_at: Option<DateTime<Utc>>,
}

/// The columns of [`Task`], for `SELECT`/`RETURNING` lists.
pub(crate) const TASK_COLUMNS: &str = "id, title, description, kind, payload, status, priority, run_at, attempts, \
     max_attempts, timeout_secs, last_error, errors, result, owner_id, request_id, trace_id, version, \
     cancel_requested, leased_by, lease_expires_at, created_at, updated_at, started_at, completed_at";

/// What it takes to enqueue a task. Validation of user input happens before this
/// (the api's request types); the database enforces the invariants again.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub title: String,
    pub description: String,
    pub kind: String,
    pub payload: Value,
    pub priority: i16,
    /// `None` means now.
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: i32,
    pub timeout_secs: i32,
    pub owner_id: Option<i64>,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
}

impl NewTask {
    /// A task of `kind` with defaults for everything else.
    pub fn new(kind: impl Into<String>, payload: Value) -> Self {
        let kind = kind.into();
        NewTask {
            title: kind.clone(),
            description: String::new(),
            kind,
            payload,
            priority: 0,
            run_at: None,
            max_attempts: 3,
            timeout_secs: 300,
            owner_id: None,
            request_id: None,
            trace_id: None,
        }
    }

    /// A task of `A`'s kind with `args` as its payload.
    pub fn from_args<A: crate::TaskArgs>(args: &A) -> serde_json::Result<Self> {
        Ok(NewTask::new(A::KIND, serde_json::to_value(args)?))
    }
}

/// A task a worker holds a lease on.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedTask {
    pub id: i64,
    pub kind: String,
    pub payload: Value,
    pub attempts: i32,
    pub max_attempts: i32,
    pub timeout_secs: i32,
    pub lease_token: Uuid,
    pub owner_id: Option<i64>,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub run_at: DateTime<Utc>,
}
