//! Request bodies and their validation. Each request type parses into the engine's own
//! types or a list of every field that is wrong (never just the first).

use chrono::{DateTime, Utc};
use flowforge_kinds::{Catalogue, Refusal};
use flowforge_queue::{NewTask, TaskEdit, TaskStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::FieldError;

pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 10_000;
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
pub const DEFAULT_KIND: &str = "echo";
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -100..=100;
pub const MAX_ATTEMPTS_RANGE: std::ops::RangeInclusive<i32> = 1..=100;
pub const TIMEOUT_RANGE: std::ops::RangeInclusive<i32> = 1..=86_400;

// The OpenAPI document gets the bounds of the task bodies' fields from the constants
// above (`openapi::declare_task_bounds`): attributes cannot name a constant.

/// A new task. Only `title` is required; `status` is accepted for compatibility with the
/// original task-manager contract and must be `pending` when given.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// 1..=200 characters, not all whitespace, no control characters.
    #[schema(example = "Send the weekly report")]
    pub title: String,
    /// At most 10,000 characters, no NUL.
    pub description: Option<String>,
    #[schema(example = "pending", pattern = "^pending$")]
    pub status: Option<String>,
    /// Which handler runs it (default `echo`): one of `GET /api/v1/kinds`, whose payload
    /// schema `payload` must fit.
    #[schema(example = "sleep")]
    pub kind: Option<String>,
    /// Any JSON that fits the kind's payload schema (absent or null: `{}`).
    #[schema(value_type = Option<serde_json::Value>, example = json!({"duration_ms": 250}))]
    pub payload: Option<Value>,
    /// -100..=100, higher runs first (default 0). Above `FLOWFORGE_USER_MAX_PRIORITY`
    /// (default 10) only for admins.
    pub priority: Option<i32>,
    /// When to run it (default now; a time in the past means now).
    pub run_at: Option<DateTime<Utc>>,
    /// 1..=100 (default 3).
    pub max_attempts: Option<i32>,
    /// Per-attempt time limit, 1..=86400 seconds (default 300).
    pub timeout_secs: Option<i32>,
}

/// Changes to a task. `PUT` requires `title`; `PATCH` takes any subset. `kind`, `payload`,
/// `priority`, `run_at`, `max_attempts` and `timeout_secs` can change only while the task is
/// pending. `status` may be set to `cancelled` (cancel) or `pending` (retry a failed or
/// cancelled task).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTask {
    pub title: Option<String>,
    pub description: Option<String>,
    /// `cancelled` or `pending`.
    #[schema(pattern = "^(cancelled|pending)$")]
    pub status: Option<String>,
    pub kind: Option<String>,
    #[schema(value_type = Option<serde_json::Value>)]
    pub payload: Option<Value>,
    /// As at creation: above `FLOWFORGE_USER_MAX_PRIORITY` only for admins.
    pub priority: Option<i32>,
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: Option<i32>,
    pub timeout_secs: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkCreate {
    pub tasks: Vec<CreateTask>,
}

/// A validated update: field changes for the queue, and what to do about the status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskChanges {
    pub edit: TaskEdit,
    pub status: Option<StatusChange>,
}

impl TaskChanges {
    /// Whether the task's payload fits its kind once these changes are made to a task of
    /// `kind` with `payload`.
    pub fn fits(&self, kinds: &Catalogue, kind: &str, payload: &Value) -> Result<(), Vec<FieldError>> {
        let edit = &self.edit;
        if edit.kind.is_none() && edit.payload.is_none() {
            return Ok(());
        }
        let mut errors = Vec::new();
        let kind = edit.kind.as_deref().unwrap_or(kind);
        Check { prefix: "", errors: &mut errors }.fits(kinds, kind, edit.payload.as_ref().unwrap_or(payload));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChange {
    Cancel,
    Retry,
}

const UNKNOWN_KIND: &str = "not a kind this deployment runs (GET /api/v1/kinds lists them)";

/// Collects field errors under a prefix (`tasks[3].` for bulk items).
struct Check<'a> {
    prefix: &'a str,
    errors: &'a mut Vec<FieldError>,
}

impl Check<'_> {
    fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(format!("{}{field}", self.prefix), message));
    }

    fn title(&mut self, raw: &str) -> Option<String> {
        let title = raw.trim();
        if title.is_empty() {
            self.fail("title", "must not be empty");
            None
        } else if raw.chars().count() > MAX_TITLE_CHARS {
            self.fail("title", format!("must be at most {MAX_TITLE_CHARS} characters"));
            None
        } else if title.chars().any(char::is_control) {
            self.fail("title", "must not contain control characters");
            None
        } else {
            Some(title.to_owned())
        }
    }

    fn description(&mut self, raw: String) -> Option<String> {
        if raw.chars().count() > MAX_DESCRIPTION_CHARS {
            self.fail("description", format!("must be at most {MAX_DESCRIPTION_CHARS} characters"));
            None
        } else if raw.contains('\0') {
            self.fail("description", "must not contain NUL characters");
            None
        } else {
            Some(raw)
        }
    }

    /// A kind this deployment runs. The value is not echoed: it is the caller's own, and
    /// may be long.
    fn kind(&mut self, kinds: &Catalogue, raw: &str) -> Option<String> {
        if kinds.get(raw).is_some() {
            Some(raw.to_owned())
        } else {
            self.fail("kind", UNKNOWN_KIND);
            None
        }
    }

    /// Whether `payload` fits `kind`; a misfit is reported at the field inside the payload.
    fn fits(&mut self, kinds: &Catalogue, kind: &str, payload: &Value) -> bool {
        match kinds.check(kind, payload) {
            Ok(()) => true,
            Err(Refusal::UnknownKind) => {
                self.fail("kind", UNKNOWN_KIND);
                false
            }
            Err(Refusal::Payload(e)) => {
                let field = match e.field.as_str() {
                    "" => "payload".to_owned(),
                    index if index.starts_with('[') => format!("payload{index}"),
                    inner => format!("payload.{inner}"),
                };
                self.fail(&field, e.message);
                false
            }
        }
    }

    fn payload(&mut self, mut value: Value) -> Option<Value> {
        // As for the body's own fields: `1500.0` is the integer its kind may ask for.
        crate::extract::integral_floats_as_integers(&mut value);
        let size = serde_json::to_vec(&value).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > MAX_PAYLOAD_BYTES {
            self.fail("payload", format!("must be at most {MAX_PAYLOAD_BYTES} bytes as JSON"));
            None
        } else if let Some(problem) = unstorable(&value) {
            self.fail("payload", problem);
            None
        } else {
            Some(value)
        }
    }

    fn in_range(&mut self, field: &str, value: i32, range: std::ops::RangeInclusive<i32>) -> Option<i32> {
        if range.contains(&value) {
            Some(value)
        } else {
            self.fail(field, format!("must be between {} and {}", range.start(), range.end()));
            None
        }
    }
}

/// Why PostgreSQL's jsonb would not keep `value` as it is, in one pass: U+0000 in a string
/// or key (refused by jsonb; reported first), or a number beyond ±1e308 (kept as written,
/// but handed back as a 309-digit integer that no f64 parser here reads: the task could
/// never be read again).
fn unstorable(value: &Value) -> Option<&'static str> {
    /// Whether there is a NUL; notes a huge number on the way.
    fn nul(value: &Value, huge: &mut bool) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Number(n) => {
                *huge |= n.as_f64().is_some_and(|f| f.abs() > 1e308);
                false
            }
            Value::Array(items) => items.iter().any(|v| nul(v, huge)),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || nul(v, huge)),
            _ => false,
        }
    }
    let mut huge = false;
    if nul(value, &mut huge) {
        Some("must not contain NUL characters (\\u0000) in strings or keys")
    } else if huge {
        Some("numbers must be within ±1e308")
    } else {
        None
    }
}

/// Who is creating, for the task's bookkeeping columns.
pub struct Origin {
    pub owner_id: i64,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
}

impl CreateTask {
    /// Validates into a [`NewTask`], or returns every problem (fields named `prefix` + name).
    pub fn parse(
        self,
        kinds: &Catalogue,
        origin: &Origin,
        prefix: &str,
        errors: &mut Vec<FieldError>,
    ) -> Option<NewTask> {
        let before = errors.len();
        let mut c = Check { prefix, errors };
        let title = c.title(&self.title);
        let description = c.description(self.description.unwrap_or_default());
        if let Some(status) = &self.status {
            if status != TaskStatus::Pending.as_str() {
                c.fail("status", "new tasks start as pending; omit status or set it to \"pending\"");
            }
        }
        let kind = c.kind(kinds, self.kind.as_deref().unwrap_or(DEFAULT_KIND));
        let payload = c.payload(self.payload.unwrap_or_else(|| Value::Object(Default::default())));
        if let (Some(kind), Some(payload)) = (&kind, &payload) {
            c.fits(kinds, kind, payload);
        }
        let priority = c.in_range("priority", self.priority.unwrap_or(0), PRIORITY_RANGE);
        let run_at = self.run_at;
        let max_attempts = c.in_range("max_attempts", self.max_attempts.unwrap_or(3), MAX_ATTEMPTS_RANGE);
        let timeout_secs = c.in_range("timeout_secs", self.timeout_secs.unwrap_or(300), TIMEOUT_RANGE);
        if errors.len() > before {
            return None;
        }
        Some(NewTask {
            title: title?,
            description: description?,
            kind: kind?,
            payload: payload?,
            priority: priority? as i16,
            run_at,
            max_attempts: max_attempts?,
            timeout_secs: timeout_secs?,
            owner_id: Some(origin.owner_id),
            request_id: origin.request_id.clone(),
            trace_id: origin.trace_id.clone(),
        })
    }
}

impl UpdateTask {
    /// Validates into [`TaskChanges`]. `full` (PUT) requires a title. Whether a new
    /// payload fits the kind is checked against the task ([`TaskChanges::fits`]).
    pub fn parse(self, kinds: &Catalogue, full: bool) -> Result<TaskChanges, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut c = Check { prefix: "", errors: &mut errors };
        if full && self.title.is_none() {
            c.fail("title", "is required with PUT (use PATCH to change only some fields)");
        }
        let edit = TaskEdit {
            title: self.title.and_then(|t| c.title(&t)),
            description: self.description.and_then(|d| c.description(d)),
            kind: self.kind.and_then(|k| c.kind(kinds, &k)),
            payload: self.payload.and_then(|p| c.payload(p)),
            priority: self.priority.and_then(|p| c.in_range("priority", p, PRIORITY_RANGE)).map(|p| p as i16),
            run_at: self.run_at,
            max_attempts: self.max_attempts.and_then(|m| c.in_range("max_attempts", m, MAX_ATTEMPTS_RANGE)),
            timeout_secs: self.timeout_secs.and_then(|t| c.in_range("timeout_secs", t, TIMEOUT_RANGE)),
        };
        let status = match self.status.as_deref() {
            None => None,
            Some("cancelled") => Some(StatusChange::Cancel),
            Some("pending") => Some(StatusChange::Retry),
            Some(other) => {
                c.fail(
                    "status",
                    format!("cannot set status to {other:?}: use \"cancelled\" to cancel or \"pending\" to retry; workers set the rest"),
                );
                None
            }
        };
        let changes = TaskChanges { edit, status };
        if errors.is_empty() {
            Ok(changes)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn origin() -> Origin {
        Origin { owner_id: 1, request_id: None, trace_id: None }
    }

    fn kinds() -> Catalogue {
        Catalogue::all(false)
    }

    fn create(v: Value) -> CreateTask {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn seed_contract_body_is_valid() {
        let mut errors = Vec::new();
        let t = create(json!({"title": " Critical Data ", "description": "must survive", "status": "pending"}))
            .parse(&kinds(), &origin(), "", &mut errors)
            .unwrap();
        assert_eq!(t.title, "Critical Data");
        assert_eq!(t.kind, DEFAULT_KIND);
        assert_eq!(t.owner_id, Some(1));
    }

    #[test]
    fn every_bad_field_is_reported() {
        let mut errors = Vec::new();
        let parsed = create(json!({
            "title": "", "status": "completed", "kind": "Bad Kind", "priority": 1000,
            "max_attempts": 0, "timeout_secs": 0
        }))
        .parse(&kinds(), &origin(), "tasks[2].", &mut errors);
        assert!(parsed.is_none());
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "tasks[2].title",
                "tasks[2].status",
                "tasks[2].kind",
                "tasks[2].priority",
                "tasks[2].max_attempts",
                "tasks[2].timeout_secs"
            ]
        );
    }

    #[test]
    fn kinds_and_payloads_are_checked_against_the_catalogue() {
        let refused = |body: Value| {
            let mut errors = Vec::new();
            assert!(create(body.clone()).parse(&kinds(), &origin(), "", &mut errors).is_none(), "{body}");
            errors.into_iter().map(|e| e.field).collect::<Vec<_>>()
        };
        assert_eq!(refused(json!({"title": "t", "kind": "no-such-kind"})), ["kind"]);
        assert_eq!(refused(json!({"title": "t", "kind": "panic"})), ["kind"], "chaos kinds are off");
        assert_eq!(refused(json!({"title": "t", "kind": "sleep"})), ["payload"]);
        assert_eq!(
            refused(json!({"title": "t", "kind": "sleep", "payload": {"duration_ms": -1}})),
            ["payload.duration_ms"]
        );
        assert_eq!(refused(json!({"title": "t", "kind": "webhook", "payload": {"url": "x"}})), ["payload.url"]);
        let mut errors = Vec::new();
        let sleep = create(json!({"title": "t", "kind": "sleep", "payload": {"duration_ms": 5}}));
        assert!(sleep.parse(&kinds(), &origin(), "", &mut errors).is_some(), "{errors:?}");

        // A change is checked against the task it changes.
        let payload_only = UpdateTask { payload: Some(json!({"duration_ms": "soon"})), ..Default::default() };
        let changes = payload_only.parse(&kinds(), false).unwrap();
        assert_eq!(
            changes.fits(&kinds(), "sleep", &json!({"duration_ms": 1})).unwrap_err()[0].field,
            "payload.duration_ms"
        );
        assert!(changes.fits(&kinds(), "echo", &json!({})).is_ok());
        let kind_only = UpdateTask { kind: Some("sleep".into()), ..Default::default() };
        let changes = kind_only.parse(&kinds(), false).unwrap();
        assert_eq!(changes.fits(&kinds(), "echo", &json!({"any": 1})).unwrap_err()[0].field, "payload.any");
        let unknown = UpdateTask { kind: Some("nope".into()), ..Default::default() };
        assert_eq!(unknown.parse(&kinds(), false).unwrap_err()[0].field, "kind");
    }

    #[test]
    fn oversized_payload_is_refused() {
        let mut errors = Vec::new();
        let big = "x".repeat(MAX_PAYLOAD_BYTES);
        assert!(create(json!({"title": "t", "payload": {"blob": big}}))
            .parse(&kinds(), &origin(), "", &mut errors)
            .is_none());
        assert_eq!(errors[0].field, "payload");
    }

    #[test]
    fn an_empty_update_is_no_change_and_put_needs_a_title() {
        assert_eq!(UpdateTask::default().parse(&kinds(), false).unwrap(), TaskChanges::default());
        let put = UpdateTask { description: Some("d".into()), ..Default::default() };
        assert_eq!(put.clone().parse(&kinds(), true).unwrap_err()[0].field, "title");
        assert!(put.parse(&kinds(), false).is_ok());
        let status = UpdateTask { status: Some("running".into()), ..Default::default() };
        assert_eq!(status.parse(&kinds(), false).unwrap_err()[0].field, "status");
        let cancel = UpdateTask { status: Some("cancelled".into()), ..Default::default() };
        assert_eq!(cancel.parse(&kinds(), false).unwrap().status, Some(StatusChange::Cancel));
    }

    /// Any JSON value, a few levels deep.
    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
            ".{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(".{0,12}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// A creation body of any shape, with any values in the known fields: refused with
        /// named fields or accepted whole, never a panic.
        #[test]
        fn any_creation_body_is_accepted_or_refused_field_by_field(
            fields in proptest::collection::btree_map(
                proptest::sample::select(vec!["title", "description", "status", "kind", "payload", "priority",
                                              "run_at", "max_attempts", "timeout_secs"]),
                any_json(), 0..9),
        ) {
            let body = Value::Object(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
            if let Ok(create) = serde_json::from_value::<CreateTask>(body) {
                let mut errors = Vec::new();
                match create.parse(&kinds(), &origin(), "tasks[0].", &mut errors) {
                    Some(task) => {
                        proptest::prop_assert!(errors.is_empty());
                        proptest::prop_assert!(!task.title.is_empty());
                    }
                    None => {
                        proptest::prop_assert!(!errors.is_empty());
                        proptest::prop_assert!(errors.iter().all(|e| e.field.starts_with("tasks[0].")));
                    }
                }
            }
        }

        /// The same for changes.
        #[test]
        fn any_change_body_is_accepted_or_refused(body in any_json()) {
            if let Ok(update) = serde_json::from_value::<UpdateTask>(body) {
                for full in [false, true] {
                    if let Err(errors) = update.clone().parse(&kinds(), full) {
                        proptest::prop_assert!(!errors.is_empty());
                    }
                }
            }
        }
    }
}
