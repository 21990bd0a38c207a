//! Tasks as records, for the service that shows and edits them: list with filters and
//! keyset pages, read many, lock, edit, delete. Every statement that changes a task
//! bumps its `version` and `updated_at` here, so callers can rely on both.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, Postgres, QueryBuilder};

use crate::model::{Task, TaskStatus, TASK_COLUMNS};
use crate::store::Queue;

/// Which tasks to list, in what order, and from where.
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    /// Only this tenant's tasks.
    pub owner_id: Option<i64>,
    /// Only tasks in one of these states; `None` for all.
    pub statuses: Option<Vec<TaskStatus>>,
    pub kind: Option<String>,
    /// Case-insensitive substring of the title, taken literally (`%` and `_` too).
    pub title_contains: Option<String>,
    pub order: TaskOrder,
    /// Continue after this task of the previous page (in the same order).
    pub after: Option<PageKey>,
    pub limit: u32,
}

/// List orders. Each ends with the id, so pages never skip or repeat a task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TaskOrder {
    #[default]
    Newest,
    Oldest,
    HighestPriority,
    LowestPriority,
}

impl TaskOrder {
    pub fn by_priority(self) -> bool {
        matches!(self, TaskOrder::HighestPriority | TaskOrder::LowestPriority)
    }
}

/// Where a page ended: the last task's id, and its priority for the priority orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageKey {
    pub id: i64,
    pub priority: i16,
}

impl PageKey {
    pub fn of(task: &Task) -> Self {
        PageKey { id: task.id, priority: task.priority }
    }
}

/// Changes to a task's fields; `None` keeps a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskEdit {
    pub title: Option<String>,
    pub description: Option<String>,
    pub kind: Option<String>,
    pub payload: Option<Value>,
    pub priority: Option<i16>,
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: Option<i32>,
    pub timeout_secs: Option<i32>,
}

impl TaskEdit {
    /// True if a field that decides how the task runs is set; such fields should only
    /// change while the task is pending.
    pub fn touches_queue_fields(&self) -> bool {
        self.kind.is_some()
            || self.payload.is_some()
            || self.priority.is_some()
            || self.run_at.is_some()
            || self.max_attempts.is_some()
            || self.timeout_secs.is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.title.is_none() && self.description.is_none() && !self.touches_queue_fields()
    }
}

/// What became of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    NotFound,
    /// A running task is not deleted: its worker would record into nothing.
    Running,
    /// The task's version is not the one expected.
    VersionMismatch,
}

impl Queue {
    /// One page of tasks.
    pub async fn list(&self, q: &TaskQuery) -> sqlx::Result<Vec<Task>> {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE true"));
        if let Some(owner) = q.owner_id {
            qb.push(" AND owner_id = ").push_bind(owner);
        }
        if let Some(statuses) = &q.statuses {
            let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
            qb.push(" AND status = ANY(").push_bind(names).push("::text[]::task_status[])");
        }
        if let Some(kind) = &q.kind {
            qb.push(" AND kind = ").push_bind(kind.clone());
        }
        if let Some(text) = q.title_contains.as_deref().filter(|t| !t.is_empty()) {
            let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            qb.push(" AND title ILIKE ").push_bind(format!("%{escaped}%"));
        }
        if let Some(after) = q.after {
            match q.order {
                TaskOrder::Newest => qb.push(" AND id < ").push_bind(after.id),
                TaskOrder::Oldest => qb.push(" AND id > ").push_bind(after.id),
                TaskOrder::HighestPriority => qb
                    .push(" AND (priority, id) < (")
                    .push_bind(after.priority)
                    .push(", ")
                    .push_bind(after.id)
                    .push(")"),
                TaskOrder::LowestPriority => qb
                    .push(" AND (priority, id) > (")
                    .push_bind(after.priority)
                    .push(", ")
                    .push_bind(after.id)
                    .push(")"),
            };
        }
        qb.push(match q.order {
            TaskOrder::Newest => " ORDER BY id DESC",
            TaskOrder::Oldest => " ORDER BY id ASC",
            TaskOrder::HighestPriority => " ORDER BY priority DESC, id DESC",
            TaskOrder::LowestPriority => " ORDER BY priority ASC, id ASC",
        });
        qb.push(" LIMIT ").push_bind(i64::from(q.limit));
        qb.build_query_as().fetch_all(self.pool()).await
    }

    /// The tasks with these ids that exist, by id.
    pub async fn get_many(&self, ids: &[i64]) -> sqlx::Result<Vec<Task>> {
        sqlx::query_as(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ANY($1) ORDER BY id"))
            .bind(ids)
            .fetch_all(self.pool())
            .await
    }

    /// The task, locked until the caller's transaction ends: its state cannot change
    /// under the caller's decision (a worker's claim skips it meanwhile).
    pub async fn lock_on(conn: &mut PgConnection, id: i64) -> sqlx::Result<Option<Task>> {
        sqlx::query_as(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1 FOR UPDATE"))
            .bind(id)
            .fetch_optional(conn)
            .await
    }

    /// Applies `edit` inside the caller's transaction; `None` if the task is gone.
    pub async fn edit_on(conn: &mut PgConnection, id: i64, edit: &TaskEdit) -> sqlx::Result<Option<Task>> {
        sqlx::query_as(&format!(
            "UPDATE tasks SET
                 title = COALESCE($2, title), description = COALESCE($3, description), kind = COALESCE($4, kind),
                 payload = COALESCE($5, payload), priority = COALESCE($6, priority), run_at = COALESCE($7, run_at),
                 max_attempts = COALESCE($8, max_attempts), timeout_secs = COALESCE($9, timeout_secs),
                 updated_at = now(), version = version + 1
             WHERE id = $1
             RETURNING {TASK_COLUMNS}"
        ))
        .bind(id)
        .bind(&edit.title)
        .bind(&edit.description)
        .bind(&edit.kind)
        .bind(&edit.payload)
        .bind(edit.priority)
        .bind(edit.run_at)
        .bind(edit.max_attempts)
        .bind(edit.timeout_secs)
        .fetch_optional(conn)
        .await
    }

    /// Deletes a task that is not running, if its version is `expected` (any, for `None`).
    pub async fn delete_unless_running(&self, id: i64, expected: Option<i64>) -> sqlx::Result<DeleteOutcome> {
        let mut tx = self.pool().begin().await?;
        let Some(task) = Self::lock_on(&mut tx, id).await? else { return Ok(DeleteOutcome::NotFound) };
        let outcome = if task.status == TaskStatus::Running {
            DeleteOutcome::Running
        } else if expected.is_some_and(|v| v != task.version) {
            DeleteOutcome::VersionMismatch
        } else {
            sqlx::query("DELETE FROM tasks WHERE id = $1").bind(id).execute(&mut *tx).await?;
            DeleteOutcome::Deleted
        };
        tx.commit().await?;
        Ok(outcome)
    }
}
