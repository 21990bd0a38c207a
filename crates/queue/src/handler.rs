use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
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

/// Runs tasks of one kind, whatever their payload. Prefer [`TaskHandler`], which
/// receives the payload already parsed and validated.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError>;
}

/// A task kind declared as a type: its name and its payload, parsed strictly. The same
/// type enqueues ([`crate::NewTask::from_args`]), validates a payload at the door
/// ([`TaskArgs::from_payload`]) and runs ([`TaskHandler`]), so the three cannot disagree.
pub trait TaskArgs: Serialize + DeserializeOwned + Send + 'static {
    /// The tasks' `kind`.
    const KIND: &'static str;

    /// Rules the type cannot express (ranges, formats). The error names the field.
    fn validate(&self) -> Result<(), InvalidArgs> {
        Ok(())
    }

    /// The payload as these arguments, or what is wrong with it and where.
    fn from_payload(payload: &Value) -> Result<Self, InvalidArgs> {
        let args: Self = serde_path_to_error::deserialize(payload).map_err(|e| {
            // The root shows as "." (a missing or unknown field is reported there).
            let path = e.path().to_string();
            let field = if path == "." { String::new() } else { path };
            InvalidArgs::new(field, e.into_inner().to_string())
        })?;
        args.validate()?;
        Ok(args)
    }
}

/// A payload that does not fit its kind: `field` is the path inside the payload
/// (`headers.x-token`, `items[2]`), empty when the payload as a whole is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct InvalidArgs {
    pub field: String,
    pub message: String,
}

impl InvalidArgs {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidArgs { field: field.into(), message: message.into() }
    }
}

/// Runs tasks of the kind `A` declares.
#[async_trait]
pub trait TaskHandler<A: TaskArgs>: Send + Sync + 'static {
    async fn run(&self, args: A, ctx: TaskContext) -> Result<Value, HandlerError>;
}

/// Parses the payload into `A` before `H` sees it; a payload that does not parse fails
/// the task at once, since retrying cannot fix it.
struct Typed<A, H> {
    handler: H,
    args: PhantomData<fn() -> A>,
}

#[async_trait]
impl<A: TaskArgs, H: TaskHandler<A>> Handler for Typed<A, H> {
    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError> {
        let args = A::from_payload(&ctx.payload)
            .map_err(|e| HandlerError::Permanent(format!("invalid {} payload: {e}", A::KIND)))?;
        self.handler.run(args, ctx).await
    }
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

    /// Runs tasks of `A::KIND` with `handler`, which receives parsed arguments.
    pub fn handle<A: TaskArgs>(self, handler: impl TaskHandler<A>) -> Self {
        self.register(A::KIND, Typed { handler, args: PhantomData })
    }

    /// Runs tasks of `kind` with a handler that parses the payload itself.
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

    /// `kind` as a metric label: a kind without a handler (a task enqueued by other
    /// means) is counted as `other`, so stored strings cannot grow the label set.
    pub(crate) fn metric_label<'a>(&self, kind: &'a str) -> &'a str {
        if self.handlers.contains_key(kind) {
            kind
        } else {
            "other"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Resize {
        width: u32,
        #[serde(default)]
        tags: Vec<String>,
    }

    impl TaskArgs for Resize {
        const KIND: &'static str = "resize";
        fn validate(&self) -> Result<(), InvalidArgs> {
            if self.width == 0 {
                return Err(InvalidArgs::new("width", "must be at least 1"));
            }
            Ok(())
        }
    }

    struct Double;

    #[async_trait]
    impl TaskHandler<Resize> for Double {
        async fn run(&self, args: Resize, _ctx: TaskContext) -> Result<Value, HandlerError> {
            Ok(json!(args.width * 2))
        }
    }

    fn context(payload: Value) -> TaskContext {
        TaskContext {
            id: 1,
            kind: Resize::KIND.into(),
            payload,
            attempt: 1,
            max_attempts: 1,
            owner_id: None,
            request_id: None,
            trace_id: None,
            cancelled: CancellationToken::new(),
        }
    }

    #[test]
    fn invalid_payloads_name_the_field() {
        let cases = [
            (json!({"width": "wide"}), "width"),
            (json!({"width": 3, "tags": ["a", 7]}), "tags[1]"),
            (json!({"width": 0}), "width"),
            (json!({}), ""),
            (json!({"width": 3, "height": 4}), "height"),
        ];
        for (payload, field) in cases {
            let e = Resize::from_payload(&payload).unwrap_err();
            assert_eq!(e.field, field, "{payload}: {e}");
        }
        assert_eq!(Resize::from_payload(&json!({"width": 3})).unwrap(), Resize { width: 3, tags: vec![] });
    }

    #[tokio::test]
    async fn a_typed_handler_gets_parsed_args_and_bad_payloads_fail_for_good() {
        let registry = Registry::new().handle(Double);
        assert_eq!(registry.kinds().collect::<Vec<_>>(), ["resize"]);
        let handler = registry.get("resize").unwrap();
        assert_eq!(handler.run(context(json!({"width": 21}))).await.unwrap(), json!(42));
        match handler.run(context(json!({"width": 0}))).await {
            Err(HandlerError::Permanent(m)) => assert_eq!(m, "invalid resize payload: width: must be at least 1"),
            other => panic!("{other:?}"),
        }
        assert_eq!(registry.metric_label("resize"), "resize");
        assert_eq!(registry.metric_label("anything a user typed"), "other");
    }
}
