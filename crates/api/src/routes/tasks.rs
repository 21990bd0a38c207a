//! `/tasks`: the task contract (served at `/` and under `/api/v1`).

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use flowforge_queue::{
    CancelOutcome, DeleteOutcome, NewTask, PageKey, Queue, RetryOutcome, Task, TaskOrder, TaskQuery, TaskStatus,
    BEGIN_NOTIFY_AFTER_COMMIT,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::accounts::Caller;
use crate::audit::{AuditRecord, Audited};
use crate::creations::{self, Creation};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::extract::{ApiJson, ApiQuery, Id};
use crate::idempotency::{self, IdempotencyKey};
use crate::middleware::{AuditTarget, RequestId, TraceId};
use crate::requests::{BulkCreate, CreateTask, Origin, StatusChange, TaskChanges, UpdateTask, PRIORITY_RANGE};
use crate::routes::{ErrorBody, Pagination, TaskEnvelope, TaskListEnvelope};
use crate::state::AppState;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

/// `bulk_body_limit`: bulk creation accepts larger bodies than everything else.
pub fn router(bulk_body_limit: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_task, list_tasks))
        .routes(routes!(create_tasks).layer(DefaultBodyLimit::max(bulk_body_limit)))
        .routes(routes!(get_task, edit_task, delete_task))
        .routes(routes!(cancel_task))
        .routes(routes!(retry_task))
}

/// `{"success": true, "data": task}` with the task's version as its ETag.
/// `{"success": true, "data": …}`, serialized straight from the task (no `Value` between).
#[derive(serde::Serialize)]
struct Envelope<'a, T> {
    success: bool,
    data: &'a T,
}

fn task_response(status: StatusCode, task: &Task) -> Response {
    let mut r = (status, Json(Envelope { success: true, data: task })).into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", task.version)) {
        r.headers_mut().insert(header::ETAG, etag);
    }
    r.extensions_mut().insert(AuditTarget(format!("task:{}", task.id)));
    r
}

/// Who creates tasks in a request: the caller, the request's ids for the tasks'
/// bookkeeping, and the audit record the creation is written with.
pub struct Creator {
    caller: Caller,
    origin: Origin,
    audit: Option<AuditRecord>,
}

impl<S: Send + Sync> FromRequestParts<S> for Creator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let extensions = &parts.extensions;
        // Set by the authentication and request-id layers every task route sits behind.
        let caller = extensions.get::<Caller>().cloned().ok_or_else(|| anyhow::anyhow!("no caller"))?;
        let origin = Origin {
            owner_id: caller.user_id,
            request_id: extensions.get::<RequestId>().map(|r| r.0.clone()),
            trace_id: extensions.get::<TraceId>().map(|t| t.0.clone()),
        };
        Ok(Creator { caller, origin, audit: extensions.get::<AuditRecord>().cloned() })
    }
}

/// The version named by `If-Match` (`"3"`, `W/"3"` or `*` for any).
fn if_match(headers: &HeaderMap) -> ApiResult<Option<i64>> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse::<i64>()
        .map(Some)
        .map_err(|_| ApiError::bad_request("invalid_if_match", "If-Match must be an ETag from this API, like \"3\""))
}

/// The task if it exists and the caller may see it; 404 otherwise (never 403, which would
/// reveal that someone else's task exists).
async fn load_visible(state: &AppState, caller: &Caller, id: i64) -> ApiResult<Task> {
    state.queue.get(id).await?.filter(|t| caller.can_see(t.owner_id)).ok_or(ApiError::NotFound)
}

/// Create a task (and enqueue it, atomically).
#[utoipa::path(post, path = "/tasks", tag = "tasks", request_body = CreateTask,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for retries of the same request")),
    responses((status = 201, body = TaskEnvelope), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_task(
    State(state): State<AppState>,
    creator: Creator,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateTask>,
) -> ApiResult<Response> {
    let key = IdempotencyKey::from_headers(&headers)?.map(|k| (k, idempotency::fingerprint("POST /tasks", &body)));
    let mut errors = Vec::new();
    above_priority_cap(&state, &creator.caller, [("priority".to_owned(), body.priority)], &mut errors);
    let task = body.parse(&state.kinds, &creator.origin, "", &mut errors);
    match task {
        Some(task) if errors.is_empty() => create(&state, creator, key, vec![task], false).await,
        _ => Err(ApiError::Validation(errors)),
    }
}

/// Create up to `FLOWFORGE_BULK_MAX_TASKS` tasks in one transaction: all or none. The body
/// may be 8 × `FLOWFORGE_MAX_BODY_BYTES` (8 MiB by default) and hold 200,000 JSON values.
#[utoipa::path(post, path = "/tasks/bulk", tag = "tasks", request_body = BulkCreate,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for retries of the same request")),
    responses((status = 201, body = TaskListEnvelope), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_tasks(
    State(state): State<AppState>,
    creator: Creator,
    headers: HeaderMap,
    ApiJson(body): ApiJson<BulkCreate>,
) -> ApiResult<Response> {
    let max = state.settings.bulk_max_tasks;
    if body.tasks.is_empty() || body.tasks.len() > max {
        return Err(ApiError::invalid("tasks", format!("must hold between 1 and {max} tasks")));
    }
    let key = IdempotencyKey::from_headers(&headers)?.map(|k| (k, idempotency::fingerprint("POST /tasks/bulk", &body)));
    let mut errors = Vec::new();
    let priorities = body.tasks.iter().enumerate().map(|(i, t)| (format!("tasks[{i}].priority"), t.priority));
    above_priority_cap(&state, &creator.caller, priorities, &mut errors);
    let tasks: Vec<Option<NewTask>> = body
        .tasks
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.parse(&state.kinds, &creator.origin, &format!("tasks[{i}]."), &mut errors))
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    create(&state, creator, key, tasks.into_iter().flatten().collect(), true).await
}

async fn create(
    state: &AppState,
    Creator { caller, audit, .. }: Creator,
    key: Option<(IdempotencyKey, Vec<u8>)>,
    tasks: Vec<NewTask>,
    many: bool,
) -> ApiResult<Response> {
    let audited = audit.is_some();
    let creation = Creation { tasks, many, audit: audit.map(|record| (record, caller.clone())) };
    let created = match &key {
        Some((key, fingerprint)) => match create_once(state, &caller, key, fingerprint, &creation).await? {
            Ok(created) => created,
            Err(replay) => return Ok(replay),
        },
        None => {
            state.quota.admit(&state.db, &caller, creation.tasks.len()).await?;
            state.creations.create(creation).await?
        }
    };
    for t in &created {
        state.metrics.tasks_created.with_label_values(&[&t.kind]).inc();
    }
    let mut r = if many {
        let target = creations::target(&created, true);
        let mut r = (StatusCode::CREATED, Json(answer(&created, true))).into_response();
        r.extensions_mut().insert(AuditTarget(target));
        r
    } else {
        let mut r = task_response(StatusCode::CREATED, &created[0]);
        if let Ok(location) = HeaderValue::from_str(&format!("/tasks/{}", created[0].id)) {
            r.headers_mut().insert(header::LOCATION, location);
        }
        r
    };
    if audited {
        r.extensions_mut().insert(Audited);
    }
    Ok(r)
}

/// A creation's answer body, which an idempotent retry replays.
fn answer(created: &[Task], many: bool) -> serde_json::Value {
    if many {
        json!({ "success": true, "data": created })
    } else {
        json!({ "success": true, "data": created[0] })
    }
}

/// A creation under an idempotency key, in a transaction of its own with the key's
/// claim and stored answer: the tasks, or the replay of the first request's answer.
async fn create_once(
    state: &AppState,
    caller: &Caller,
    key: &IdempotencyKey,
    fingerprint: &[u8],
    creation: &Creation,
) -> ApiResult<Result<Vec<Task>, Response>> {
    let mut tx = state.db.begin_with(BEGIN_NOTIFY_AFTER_COMMIT).await?;
    if let Some(replay) = idempotency::claim(&mut tx, caller.user_id, key, fingerprint).await? {
        tx.rollback().await?;
        let status = StatusCode::from_u16(replay.status).unwrap_or(StatusCode::OK);
        let mut r = (status, Json(replay.body)).into_response();
        r.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(Err(r));
    }
    state.quota.admit(&mut *tx, caller, creation.tasks.len()).await?;
    let created = creations::insert_on(&mut tx, std::slice::from_ref(creation)).await?.remove(0);
    let body = answer(&created, creation.many);
    idempotency::store(&mut tx, caller.user_id, key, StatusCode::CREATED.as_u16(), &body).await?;
    tx.commit().await?;
    state.queue.notify_inserted(&created.iter().map(|t| t.id).collect::<Vec<_>>());
    Ok(Ok(created))
}

/// Query parameters of `GET /tasks`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// One status or several, comma-separated (`failed,cancelled`).
    #[param(
        pattern = "^((pending|running|completed|failed|cancelled)(,(pending|running|completed|failed|cancelled))*)?$"
    )]
    status: Option<String>,
    #[param(pattern = r"^[^\u0000]*$")]
    kind: Option<String>,
    /// Owner's user id (admins only: another user's id is 403 for the rest).
    #[param(minimum = 1)]
    owner: Option<i64>,
    /// Case-insensitive text search in titles.
    #[param(pattern = r"^[^\u0000]*$")]
    q: Option<String>,
    /// `-created_at` (default), `created_at`, `-priority` or `priority`.
    #[param(pattern = "^-?(created_at|priority)$")]
    sort: Option<String>,
    /// 1..=200, default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page (opaque: one this API did not hand out is 400).
    #[param(min_length = 1)]
    cursor: Option<String>,
}

/// The `sort` parameter's names for the queue's list orders.
const SORTS: [(&str, TaskOrder); 4] = [
    ("-created_at", TaskOrder::Newest),
    ("created_at", TaskOrder::Oldest),
    ("-priority", TaskOrder::HighestPriority),
    ("priority", TaskOrder::LowestPriority),
];

fn parse_sort(s: &str) -> ApiResult<TaskOrder> {
    SORTS.iter().find(|(name, _)| *name == s).map(|(_, order)| *order).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_sort",
            format!("cannot sort by {s:?}; use -created_at, created_at, -priority or priority"),
        )
    })
}

fn sort_name(order: TaskOrder) -> &'static str {
    SORTS.iter().find(|(_, o)| *o == order).map_or("-created_at", |(name, _)| name)
}

/// Keyset position: the last row of the previous page, opaque to clients.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Cursor {
    s: String,
    id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<i16>,
}

impl Cursor {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(text: &str, sort: TaskOrder) -> ApiResult<Cursor> {
        let bad =
            || ApiError::bad_request("invalid_cursor", "cursor is not one this API issued; start again without it");
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if cursor.s != sort_name(sort) || cursor.p.is_some() != sort.by_priority() {
            return Err(ApiError::bad_request("invalid_cursor", "cursor belongs to a different sort order"));
        }
        Ok(cursor)
    }
}

const MAX_PAGE: u32 = 200;

impl ListParams {
    /// The queue query these parameters ask for on `caller`'s behalf, and the page size;
    /// or a 400 naming the first bad parameter (403 for another user's tasks). Apart from
    /// the handler so that every query string can be checked without a database.
    fn query_for(self, caller: &Caller) -> ApiResult<(TaskQuery, u32)> {
        let sort = parse_sort(self.sort.as_deref().unwrap_or("-created_at"))?;
        let limit = self.limit.unwrap_or(50);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::bad_request("invalid_limit", format!("limit must be between 1 and {MAX_PAGE}")));
        }
        let cursor = self.cursor.as_deref().map(|c| Cursor::decode(c, sort)).transpose()?;
        let statuses = match self.status.as_deref() {
            None | Some("") => None,
            Some(list) => Some(
                list.split(',')
                    .map(|s| s.parse::<TaskStatus>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ApiError::bad_request("invalid_status", e))?,
            ),
        };
        let owner_id = match (caller.is_admin(), self.owner) {
            (false, Some(owner)) if owner != caller.user_id => {
                return Err(ApiError::Forbidden("only admins can list other users' tasks"))
            }
            (false, _) => Some(caller.user_id),
            (true, owner) => owner,
        };
        if [&self.kind, &self.q].into_iter().flatten().any(|s| s.contains('\0')) {
            return Err(ApiError::bad_request("invalid_query", "query parameters must not contain NUL characters"));
        }
        let query = TaskQuery {
            owner_id,
            statuses,
            kind: self.kind,
            title_contains: self.q,
            order: sort,
            after: cursor.map(|c| PageKey { id: c.id, priority: c.p.unwrap_or_default() }),
            // One more than a page tells whether another page follows.
            limit: limit + 1,
        };
        Ok((query, limit))
    }
}

/// List tasks (yours; admins see all), filtered and keyset-paginated.
#[utoipa::path(get, path = "/tasks", tag = "tasks", params(ListParams),
    responses((status = 200, body = TaskListEnvelope), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_tasks(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Response> {
    let (query, limit) = params.query_for(&caller)?;
    let sort = query.order;
    let mut rows = state.queue.list(&query).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last())
        .flatten()
        .map(|t| Cursor { s: sort_name(sort).into(), id: t.id, p: sort.by_priority().then_some(t.priority) }.encode());
    // Serialised straight from the rows: a page is the api's largest answer, and a JSON
    // tree built first would double its cost.
    Ok(Json(TaskListEnvelope { success: true, data: rows, pagination: Some(Pagination { limit, next_cursor }) })
        .into_response())
}

/// One task, with its version as ETag.
#[utoipa::path(get, path = "/tasks/{id}", tag = "tasks", params(("id" = i64, Path)),
    responses((status = 200, body = TaskEnvelope), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_task(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id,
) -> ApiResult<Response> {
    if let Some(task) = state.cache.get(id).await {
        return if caller.can_see(task.owner_id) {
            Ok(task_response(StatusCode::OK, &task))
        } else {
            Err(ApiError::NotFound)
        };
    }
    let read_started = Instant::now();
    let task = load_visible(&state, &caller, id).await?;
    state.cache.fill(&task, read_started).await;
    Ok(task_response(StatusCode::OK, &task))
}

/// Change a task: PUT replaces its editable fields (`title` required), PATCH changes
/// those given. Honours `If-Match`.
#[utoipa::path(method(put, patch), path = "/tasks/{id}", tag = "tasks", params(("id" = i64, Path)),
    request_body = UpdateTask,
    responses((status = 200, body = TaskEnvelope), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody),
              (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn edit_task(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id,
    method: Method,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateTask>,
) -> ApiResult<Response> {
    let mut errors = Vec::new();
    above_priority_cap(&state, &caller, [("priority".to_owned(), body.priority)], &mut errors);
    let changes = match body.parse(&state.kinds, method == Method::PUT) {
        Ok(changes) if errors.is_empty() => changes,
        Ok(_) => return Err(ApiError::Validation(errors)),
        Err(mut parsed) => {
            parsed.extend(errors);
            return Err(ApiError::Validation(parsed));
        }
    };
    update(&state, &caller, id, &headers, changes).await
}

/// Priorities above `FLOWFORGE_USER_MAX_PRIORITY` are for admins: a user who could set
/// the highest would jump every other user's tasks. Adds a problem for each requested
/// priority over the cap (one outside the valid range gets its own problem from parsing).
fn above_priority_cap(
    state: &AppState,
    caller: &Caller,
    priorities: impl IntoIterator<Item = (String, Option<i32>)>,
    errors: &mut Vec<FieldError>,
) {
    let cap = state.settings.user_max_priority;
    if caller.is_admin() {
        return;
    }
    errors.extend(
        priorities
            .into_iter()
            .filter(|&(_, p)| p.is_some_and(|p| p > cap && p <= *PRIORITY_RANGE.end()))
            .map(|(field, _)| FieldError::new(field, format!("above {cap} can be set only by an admin"))),
    );
}

/// All of a PUT/PATCH in one transaction on the locked row: either every requested
/// change is made or none is.
async fn update(
    state: &AppState,
    caller: &Caller,
    id: i64,
    headers: &HeaderMap,
    changes: TaskChanges,
) -> ApiResult<Response> {
    let expected = if_match(headers)?;
    let mut tx = state.db.begin().await?;
    let current =
        Queue::lock_on(&mut tx, id).await?.filter(|t| caller.can_see(t.owner_id)).ok_or(ApiError::NotFound)?;
    if expected.is_some_and(|v| v != current.version) {
        return Err(ApiError::PreconditionFailed);
    }
    if changes.edit.touches_queue_fields() && current.status != TaskStatus::Pending {
        return Err(ApiError::conflict(
            "task_not_pending",
            format!(
                "the task is {}: only title and description can change once it has left pending",
                current.status.as_str()
            ),
        ));
    }
    changes.fits(&state.kinds, &current.kind, &current.payload).map_err(|errors| {
        if changes.edit.kind.is_some() && changes.edit.payload.is_some() {
            ApiError::Validation(errors)
        } else {
            ApiError::Misfit(errors)
        }
    })?;
    let mut task = current;
    if !changes.edit.is_empty() {
        // The row is locked: it is still there.
        task = Queue::edit_on(&mut tx, id, &changes.edit).await?.ok_or(ApiError::NotFound)?;
    }
    let mut status = StatusCode::OK;
    match changes.status {
        None => {}
        Some(StatusChange::Cancel) => (task, status) = cancel_outcome(Queue::cancel_on(&mut tx, id).await?)?,
        Some(StatusChange::Retry) if task.status == TaskStatus::Pending => {}
        Some(StatusChange::Retry) => task = retry_outcome(Queue::retry_on(&mut tx, id).await?)?,
    }
    tx.commit().await?;
    state.cache.invalidate(id).await;
    Ok(task_response(status, &task))
}

fn cancel_outcome(outcome: CancelOutcome) -> ApiResult<(Task, StatusCode)> {
    match outcome {
        CancelOutcome::Cancelled(t) => Ok((t, StatusCode::OK)),
        CancelOutcome::Requested(t) => Ok((t, StatusCode::ACCEPTED)),
        CancelOutcome::AlreadyFinished(t) if t.status == TaskStatus::Cancelled => Ok((t, StatusCode::OK)),
        CancelOutcome::AlreadyFinished(t) => Err(ApiError::conflict(
            "task_finished",
            format!("the task is already {}; nothing to cancel", t.status.as_str()),
        )),
        CancelOutcome::NotFound => Err(ApiError::NotFound),
    }
}

fn retry_outcome(outcome: RetryOutcome) -> ApiResult<Task> {
    match outcome {
        RetryOutcome::Requeued(t) => Ok(t),
        RetryOutcome::NotRetryable(t) => Err(ApiError::conflict(
            "task_not_retryable",
            format!("only failed or cancelled tasks can be retried; this one is {}", t.status.as_str()),
        )),
        RetryOutcome::NotFound => Err(ApiError::NotFound),
    }
}

/// Cancel: a pending task at once (200), a running one by telling its worker (202).
#[utoipa::path(post, path = "/tasks/{id}/cancel", tag = "tasks", params(("id" = i64, Path)),
    responses((status = 200, body = TaskEnvelope), (status = 202, body = TaskEnvelope), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel_task(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id,
) -> ApiResult<Response> {
    load_visible(&state, &caller, id).await?;
    let outcome = state.queue.cancel(id).await;
    state.cache.invalidate(id).await;
    let (task, status) = cancel_outcome(outcome?)?;
    Ok(task_response(status, &task))
}

/// Retry a failed or cancelled task with a fresh set of attempts.
#[utoipa::path(post, path = "/tasks/{id}/retry", tag = "tasks", params(("id" = i64, Path)),
    responses((status = 200, body = TaskEnvelope), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn retry_task(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id,
) -> ApiResult<Response> {
    load_visible(&state, &caller, id).await?;
    let outcome = state.queue.retry(id).await;
    state.cache.invalidate(id).await;
    Ok(task_response(StatusCode::OK, &retry_outcome(outcome?)?))
}

/// Delete a task that is not running. Honours `If-Match`.
#[utoipa::path(delete, path = "/tasks/{id}", tag = "tasks", params(("id" = i64, Path)),
    responses((status = 200, description = "Deleted"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 412, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_task(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Id(id): Id,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let expected = if_match(&headers)?;
    load_visible(&state, &caller, id).await?;
    let outcome = state.queue.delete_unless_running(id, expected).await?;
    state.cache.invalidate(id).await;
    match outcome {
        DeleteOutcome::Deleted => {}
        DeleteOutcome::NotFound => return Err(ApiError::NotFound),
        DeleteOutcome::Running => {
            return Err(ApiError::conflict("task_running", "the task is running; cancel it first, then delete it"))
        }
        DeleteOutcome::VersionMismatch => return Err(ApiError::PreconditionFailed),
    }
    let mut r = Json(json!({ "success": true, "message": "Task deleted", "data": { "id": id, "deleted": true } }))
        .into_response();
    r.extensions_mut().insert(AuditTarget(format!("task:{id}")));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_tampering() {
        let c = Cursor { s: "-priority".into(), id: 42, p: Some(5) };
        assert_eq!(Cursor::decode(&c.encode(), TaskOrder::HighestPriority).unwrap(), c);
        assert!(Cursor::decode(&c.encode(), TaskOrder::Newest).is_err());
        assert!(Cursor::decode("not-base64!", TaskOrder::Newest).is_err());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode(b"{}"), TaskOrder::Newest).is_err());
    }

    #[test]
    fn if_match_accepts_strong_weak_and_star() {
        let mut h = HeaderMap::new();
        assert_eq!(if_match(&h).unwrap(), None);
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"7\""));
        assert_eq!(if_match(&h).unwrap(), Some(7));
        h.insert(header::IF_MATCH, HeaderValue::from_static("W/\"8\""));
        assert_eq!(if_match(&h).unwrap(), Some(8));
        h.insert(header::IF_MATCH, HeaderValue::from_static("*"));
        assert_eq!(if_match(&h).unwrap(), None);
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"abc\""));
        assert!(if_match(&h).is_err());
    }

    use crate::accounts::Role;
    use crate::extract::query_tests::{extract, query_string, refusal, Refusal, RAW_QUERY};
    use proptest::prelude::*;

    const LIST_KEYS: [&str; 7] = ["status", "kind", "owner", "q", "sort", "limit", "cursor"];

    fn caller(admin: bool) -> Caller {
        Caller { user_id: 7, token_id: 1, name: "alice".into(), role: if admin { Role::Admin } else { Role::User } }
    }

    /// A value for any list parameter: near misses of valid ones as well as anything at all.
    fn list_value() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,40}",
            proptest::num::i64::ANY.prop_map(|n| n.to_string()),
            proptest::num::u64::ANY.prop_map(|n| n.to_string()),
            proptest::sample::select(vec![
                "",
                "0",
                "1",
                "7",
                "200",
                "201",
                "-1",
                "4294967296",
                "1.5",
                " 5",
                "pending",
                "failed,cancelled",
                "pending,",
                ",",
                "RUNNING",
                "-created_at",
                "created_at",
                "-priority",
                "priority",
                "--priority",
                "\0",
                "a\0b",
            ])
            .prop_map(str::to_owned),
            cursor_value(),
        ]
    }

    /// A cursor this API could have issued, for any sort.
    fn cursor_value() -> impl Strategy<Value = String> {
        (proptest::num::i64::ANY, proptest::num::i16::ANY, 0usize..4).prop_map(|(id, p, which)| {
            let (name, sort) = SORTS[which];
            Cursor { s: name.into(), id, p: sort.by_priority().then_some(p) }.encode()
        })
    }

    /// A value of the kind this key takes, mostly in range, or else any list value.
    fn value_for(key: &'static str) -> BoxedStrategy<String> {
        let typed: BoxedStrategy<String> = match key {
            "status" => proptest::collection::vec(
                proptest::sample::select(vec!["pending", "running", "completed", "failed", "cancelled", "done", ""]),
                1..5,
            )
            .prop_map(|s| s.join(","))
            .boxed(),
            "sort" => proptest::sample::select(SORTS.map(|(name, _)| name).to_vec()).prop_map(str::to_owned).boxed(),
            "limit" => (0u32..260).prop_map(|n| n.to_string()).boxed(),
            "owner" => (-2i64..12).prop_map(|n| n.to_string()).boxed(),
            "cursor" => cursor_value().boxed(),
            _ => ".{0,20}".boxed(),
        };
        prop_oneof![3 => typed, 1 => list_value()].boxed()
    }

    /// A query parameter: one of the list's keys with a value, or another key.
    fn list_pair() -> impl Strategy<Value = (String, String)> {
        prop_oneof![
            6 => proptest::sample::select(LIST_KEYS.to_vec()).prop_flat_map(|k| (Just(k.to_owned()), value_for(k))),
            1 => (".{0,8}", list_value()),
        ]
    }

    /// What a list request brings to the handler: the query and page size, or the refusal a
    /// client reads.
    type ListOutcome = Result<(TaskQuery, u32), Refusal>;

    fn list_outcome(query: &str, admin: bool) -> Option<ListOutcome> {
        let caller = caller(admin);
        extract::<ListParams>(query).map(|r| r.and_then(|p| p.query_for(&caller)).map_err(refusal))
    }

    /// An accepted list query holds only what the API can run; a refused one is a 400
    /// naming the problem (403 for a user asking for another owner's tasks).
    fn check_list_outcome(outcome: ListOutcome, pairs: &[(String, String)], admin: bool) -> Result<(), TestCaseError> {
        let given = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        match outcome {
            Ok((query, limit)) => {
                prop_assert!((1..=MAX_PAGE).contains(&limit));
                prop_assert_eq!(query.limit, limit + 1);
                if !admin {
                    prop_assert_eq!(query.owner_id, Some(7));
                }
                prop_assert!(query.statuses.as_ref().is_none_or(|s| !s.is_empty()));
                prop_assert!([&query.kind, &query.title_contains].into_iter().flatten().all(|s| !s.contains('\0')));
                if let Some(sort) = given("sort") {
                    prop_assert_eq!(sort_name(query.order), sort);
                }
            }
            Err((status, code, message)) => {
                let forbidden = status == StatusCode::FORBIDDEN && !admin && given("owner").is_some();
                prop_assert!(status == StatusCode::BAD_REQUEST || forbidden, "{status} {code}: {message}");
                prop_assert!(code.starts_with("invalid_") || forbidden, "{code}");
                prop_assert!(!message.is_empty());
            }
        }
        Ok(())
    }

    #[test]
    fn list_query_strings_are_read_as_a_client_means_them() {
        let taken = |query: &str, admin: bool| match list_outcome(query, admin) {
            Some(Ok((q, limit))) => (q.owner_id, q.statuses, q.kind, q.title_contains, sort_name(q.order), limit),
            other => panic!("{query:?} was not taken: {other:?}"),
        };
        assert_eq!(taken("", false), (Some(7), None, None, None, "-created_at", 50));
        assert_eq!(
            taken("status=failed,cancelled&kind=sleep&q=a%20b%25&sort=-priority&limit=200&owner=7", false),
            (
                Some(7),
                Some(vec![TaskStatus::Failed, TaskStatus::Cancelled]),
                Some("sleep".to_owned()),
                Some("a b%".to_owned()),
                "-priority",
                200
            )
        );
        assert_eq!(taken("owner=9&status=", true), (Some(9), None, None, None, "-created_at", 50));
        // Bytes that are not UTF-8 are read as U+FFFD, as browsers do: a search for it.
        assert_eq!(taken("q=%FF", false).3.as_deref(), Some("\u{FFFD}"));
        let next = Cursor { s: "priority".into(), id: 3, p: Some(-2) }.encode();
        assert_eq!(
            list_outcome(&format!("sort=priority&cursor={next}"), false).unwrap().unwrap().0.after.unwrap().id,
            3
        );

        let refused = |query: &str, admin: bool| match list_outcome(query, admin) {
            Some(Err((status, code, _))) => (status.as_u16(), code),
            other => panic!("{query:?} was not refused: {other:?}"),
        };
        for (query, code) in [
            ("limit=0", "invalid_limit"),
            ("limit=201", "invalid_limit"),
            ("limit=-1", "invalid_query"),
            ("limit=x", "invalid_query"),
            ("owner=1.5", "invalid_query"),
            ("status=done", "invalid_status"),
            ("status=pending,", "invalid_status"),
            ("sort=title", "invalid_sort"),
            ("cursor=abc", "invalid_cursor"),
            (&format!("cursor={next}"), "invalid_cursor"),
            ("q=a%00b", "invalid_query"),
            ("kind=%00", "invalid_query"),
            ("limit=1&limit=2", "invalid_query"),
            ("page=2", "invalid_query"),
        ] {
            assert_eq!(refused(query, true), (400, code.to_owned()), "{query}");
        }
        assert_eq!(refused("owner=8", false), (403, "forbidden".to_owned()));
    }

    proptest::proptest! {
        /// Any query string on `GET /tasks` is taken or refused with a 400 before the
        /// database is asked anything.
        #[test]
        fn any_list_query_string_is_parsed_or_refused(query in RAW_QUERY, admin in proptest::bool::ANY) {
            if let Some(outcome) = list_outcome(&query, admin) {
                check_list_outcome(outcome, &[], admin)?;
            }
        }

        /// Any value, percent-encoded, for any of the list's keys (repeated or unknown keys
        /// too): taken only when every parameter is valid, otherwise a clear refusal.
        #[test]
        fn any_list_parameter_values_are_parsed_or_refused(
            pairs in proptest::collection::vec(list_pair(), 0..6),
            admin in proptest::bool::ANY,
        ) {
            let outcome = list_outcome(&query_string(&pairs), admin);
            prop_assert!(outcome.is_some(), "percent-encoded pairs always make a valid URI");
            let unique = pairs.iter().all(|(k, _)| pairs.iter().filter(|(o, _)| o == k).count() == 1);
            let outcome = outcome.unwrap();
            if outcome.is_ok() {
                prop_assert!(unique && pairs.iter().all(|(k, _)| LIST_KEYS.contains(&k.as_str())));
            }
            check_list_outcome(outcome, if unique { &pairs } else { &[] }, admin)?;
        }

        /// Any text as a cursor: decoded only if this API could have issued it for that sort.
        #[test]
        fn any_cursor_text_is_decoded_or_refused(text in ".{0,120}") {
            for (name, sort) in SORTS {
                if let Ok(c) = Cursor::decode(&text, sort) {
                    proptest::prop_assert_eq!(c.s.as_str(), name);
                }
            }
        }

        /// Every cursor the API issues comes back as it was, for its own sort only.
        #[test]
        fn issued_cursors_round_trip(id in proptest::num::i64::ANY, p in proptest::num::i16::ANY, which in 0usize..4) {
            let (name, sort) = SORTS[which];
            let c = Cursor { s: name.into(), id, p: sort.by_priority().then_some(p) };
            proptest::prop_assert_eq!(Cursor::decode(&c.encode(), sort).unwrap(), c);
        }

        /// Any If-Match header: a version, none (`*`), or a clear refusal.
        #[test]
        fn any_if_match_is_parsed_or_refused(text in "[ -~]{0,40}") {
            let mut h = HeaderMap::new();
            h.insert(header::IF_MATCH, HeaderValue::from_str(&text).unwrap());
            if let Ok(Some(version)) = if_match(&h) {
                proptest::prop_assert!(text.contains(&version.abs().to_string()));
            }
        }
    }
}
