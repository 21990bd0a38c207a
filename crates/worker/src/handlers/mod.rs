//! Handlers for the built-in task kinds. Each receives its payload already parsed into
//! the kind's type from `flowforge_kinds`, the same type the api validated it with; a
//! payload that cannot work fails the task at once (`Permanent`) instead of burning retries.

mod webhook;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use flowforge_kinds as kinds;
use flowforge_queue::{HandlerError, Registry, TaskContext, TaskHandler};
use flowforge_webhooks::SecretStore;
use serde_json::{json, Value};

pub use webhook::Webhook;

use crate::config::HandlerSettings;

/// A handler for every kind of `flowforge_kinds::Catalogue::all(chaos_handlers)`.
/// Webhooks are signed with secrets read from `db`.
pub fn registry(settings: &HandlerSettings, db: sqlx::PgPool) -> Registry {
    let secrets = SecretStore::new(db, settings.webhook.deployment_keys());
    let registry = Registry::new()
        .handle(Noop)
        .handle(Echo)
        .handle(Sleep)
        .handle(Fail)
        .handle(Webhook::new(&settings.webhook, secrets));
    if settings.chaos_handlers {
        registry.handle(Panic).handle(FillScratch::new(std::env::temp_dir()))
    } else {
        registry
    }
}

pub struct Noop;

#[async_trait]
impl TaskHandler<kinds::Noop> for Noop {
    async fn run(&self, _args: kinds::Noop, _ctx: TaskContext) -> Result<Value, HandlerError> {
        Ok(Value::Null)
    }
}

pub struct Echo;

#[async_trait]
impl TaskHandler<kinds::Echo> for Echo {
    async fn run(&self, kinds::Echo(payload): kinds::Echo, _ctx: TaskContext) -> Result<Value, HandlerError> {
        Ok(payload)
    }
}

/// It does not watch `ctx.cancelled`: on cancellation, a lost lease or the shutdown
/// deadline the runtime drops this future, which ends the sleep at once, and records
/// the outcome itself. Returning early here would race with that decision (the engine
/// could record a shutdown release as a failed attempt).
pub struct Sleep;

#[async_trait]
impl TaskHandler<kinds::Sleep> for Sleep {
    async fn run(&self, args: kinds::Sleep, _ctx: TaskContext) -> Result<Value, HandlerError> {
        tokio::time::sleep(Duration::from_millis(args.duration_ms)).await;
        Ok(json!({ "slept_ms": args.duration_ms }))
    }
}

pub struct Fail;

#[async_trait]
impl TaskHandler<kinds::Fail> for Fail {
    async fn run(&self, args: kinds::Fail, ctx: TaskContext) -> Result<Value, HandlerError> {
        if args.fail_attempts.is_none_or(|n| ctx.attempt <= n) {
            return Err(HandlerError::Retryable(format!("{} (attempt {})", args.message, ctx.attempt)));
        }
        Ok(json!({ "succeeded_on_attempt": ctx.attempt }))
    }
}

pub struct Panic;

#[async_trait]
impl TaskHandler<kinds::Panic> for Panic {
    async fn run(&self, _args: kinds::Panic, ctx: TaskContext) -> Result<Value, HandlerError> {
        panic!("chaos: panic handler ran task {}", ctx.id)
    }
}

/// Writes into the worker's scratch space (its tmpfs) under `dir`.
pub struct FillScratch {
    dir: PathBuf,
}

impl FillScratch {
    pub fn new(dir: PathBuf) -> Self {
        FillScratch { dir }
    }
}

/// Deletes the scratch file however the write ends: an error, a panic, or (when the task
/// is cancelled) once the blocking write it can no longer stop has finished.
struct ScratchFile(PathBuf);

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[async_trait]
impl TaskHandler<kinds::FillScratch> for FillScratch {
    async fn run(
        &self,
        kinds::FillScratch { bytes }: kinds::FillScratch,
        ctx: TaskContext,
    ) -> Result<Value, HandlerError> {
        let file = ScratchFile(self.dir.join(format!("flowforge-scratch-{}-{}", ctx.id, ctx.attempt)));
        tokio::task::spawn_blocking(move || {
            let chunk = vec![0u8; 1 << 20];
            let mut out = std::fs::File::create(&file.0)?;
            let mut written = 0u64;
            while written < bytes {
                let n = chunk.len().min(usize::try_from(bytes - written).unwrap_or(usize::MAX));
                out.write_all(&chunk[..n])?;
                written += n as u64;
            }
            out.sync_all()?;
            Ok::<_, std::io::Error>(written)
        })
        .await
        .map_err(|e| HandlerError::Retryable(format!("scratch writer stopped: {e}")))?
        .map(|written| json!({ "written_bytes": written }))
        .map_err(|e| HandlerError::Retryable(format!("scratch space: {e}")))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use flowforge_queue::TaskArgs;
    use tokio_util::sync::CancellationToken;

    pub(crate) fn context(kind: &str, payload: Value, attempt: i32) -> TaskContext {
        TaskContext {
            id: 7,
            kind: kind.into(),
            payload,
            attempt,
            max_attempts: 3,
            owner_id: Some(1),
            request_id: None,
            trace_id: None,
            cancelled: CancellationToken::new(),
        }
    }

    /// Runs `payload` through `handler` as the worker does: parsed first.
    pub(crate) async fn run<A: TaskArgs>(
        handler: impl TaskHandler<A>,
        payload: Value,
        attempt: i32,
    ) -> Result<Value, HandlerError> {
        let registry = Registry::new().handle(handler);
        registry.get(A::KIND).expect("registered").run(context(A::KIND, payload, attempt)).await
    }

    fn permanent_error(result: Result<Value, HandlerError>) -> String {
        match result {
            Err(HandlerError::Permanent(message)) => message,
            other => panic!("expected a permanent error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn noop_and_echo() {
        assert_eq!(run(Noop, json!({"a": 1}), 1).await.unwrap(), Value::Null);
        assert_eq!(run(Echo, json!({"a": [1, 2]}), 1).await.unwrap(), json!({"a": [1, 2]}));
    }

    #[tokio::test]
    async fn sleep_sleeps_and_reports() {
        assert_eq!(run(Sleep, json!({"duration_ms": 5}), 1).await.unwrap(), json!({"slept_ms": 5}));
    }

    #[tokio::test]
    async fn bad_payloads_fail_permanently_naming_the_field() {
        for bad in
            [json!({}), json!({"duration_ms": -1}), json!({"duration_ms": "5"}), json!({"duration_ms": 3_600_001})]
        {
            let message = permanent_error(run(Sleep, bad.clone(), 1).await);
            assert!(message.starts_with("invalid sleep payload: "), "{bad}: {message}");
            assert!(message.contains("duration_ms"), "{bad}: {message}");
        }
        permanent_error(run(Fail, json!({"fail_attempts": "two"}), 1).await);
    }

    #[tokio::test]
    async fn fail_fails_the_first_attempts_then_succeeds() {
        let payload = json!({"fail_attempts": 2, "message": "downstream down"});
        for attempt in [1, 2] {
            match run(Fail, payload.clone(), attempt).await {
                Err(HandlerError::Retryable(m)) => assert_eq!(m, format!("downstream down (attempt {attempt})")),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(run(Fail, payload, 3).await.unwrap(), json!({"succeeded_on_attempt": 3}));
        assert!(matches!(run(Fail, json!({}), 50).await, Err(HandlerError::Retryable(_))));
    }

    fn settings(chaos_handlers: bool) -> HandlerSettings {
        HandlerSettings {
            webhook: crate::config::WebhookSettings {
                secrets_keys: flowforge_webhooks::DeploymentKeySettings {
                    current: flowforge_platform::Secret::new("k"),
                    previous: None,
                },
                timeout: Duration::from_secs(1),
                allow_private: false,
                allowed_ports: None,
            },
            chaos_handlers,
        }
    }

    /// The api accepts exactly the kinds the catalogue lists; a kind without a handler
    /// would pass the api and fail in every worker.
    #[tokio::test]
    async fn a_handler_for_every_kind_of_the_catalogue_and_no_other() {
        // Never connected: registering reads nothing.
        let db = sqlx::PgPool::connect_lazy("postgres://nowhere.invalid/x").unwrap();
        for chaos in [false, true] {
            let mut handled: Vec<&str> = Vec::new();
            let registry = registry(&settings(chaos), db.clone());
            handled.extend(registry.kinds());
            handled.sort_unstable();
            let mut declared: Vec<&str> = kinds::Catalogue::all(chaos).names().collect();
            declared.sort_unstable();
            assert_eq!(handled, declared, "chaos kinds enabled: {chaos}");
        }
        assert!(registry(&settings(false), db).get("panic").is_none());
    }

    #[tokio::test]
    async fn fill_scratch_writes_then_removes_its_file() {
        let dir = std::env::temp_dir().join(format!("flowforge-scratch-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let result = run(FillScratch::new(dir.clone()), json!({"bytes": 3_000_000}), 1).await;
        assert_eq!(result.unwrap(), json!({"written_bytes": 3_000_000}));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "the scratch file is removed");
        // A scratch space that cannot be written fails the attempt (retryably), it does not panic.
        let missing = run(FillScratch::new(dir.join("gone")), json!({"bytes": 1}), 1).await;
        assert!(matches!(missing, Err(HandlerError::Retryable(m)) if m.starts_with("scratch space: ")));
        permanent_error(run(FillScratch::new(dir.clone()), json!({"bytes": "1"}), 1).await);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
