//! The built-in task kinds. Payloads are parsed strictly: a payload that cannot work
//! fails the task at once (`Permanent`) instead of burning retries.

mod webhook;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use flowforge_queue::{Handler, HandlerError, Registry, TaskContext};
use flowforge_webhooks::SecretStore;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

pub use webhook::Webhook;

use crate::config::HandlerSettings;

/// Every built-in handler, keyed by kind. `panic` and `fill_scratch` only with
/// `chaos_handlers`. Webhooks are signed with secrets read from `db`.
pub fn registry(settings: &HandlerSettings, db: sqlx::PgPool) -> Registry {
    let secrets = SecretStore::new(db, settings.webhook.deployment_keys());
    let registry = Registry::new()
        .register("noop", Noop)
        .register("echo", Echo)
        .register("sleep", Sleep)
        .register("fail", Fail)
        .register("webhook", Webhook::new(&settings.webhook, secrets));
    if settings.chaos_handlers {
        registry.register("panic", Panic).register("fill_scratch", FillScratch::new(std::env::temp_dir()))
    } else {
        registry
    }
}

/// The payload as `T`, or a permanent error showing the `expected` shape and what is wrong.
fn payload<T: DeserializeOwned>(ctx: &TaskContext, expected: &str) -> Result<T, HandlerError> {
    T::deserialize(&ctx.payload)
        .map_err(|e| HandlerError::Permanent(format!("invalid {} payload (expected {expected}): {e}", ctx.kind)))
}

/// Does nothing; measures the queue's own overhead.
pub struct Noop;

#[async_trait]
impl Handler for Noop {
    async fn run(&self, _ctx: TaskContext) -> Result<Value, HandlerError> {
        Ok(Value::Null)
    }
}

/// Returns its payload as the result.
pub struct Echo;

#[async_trait]
impl Handler for Echo {
    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError> {
        Ok(ctx.payload)
    }
}

/// Simulated work: `{"duration_ms": N}` with N up to an hour.
///
/// It does not watch `ctx.cancelled`: on cancellation, a lost lease or the shutdown
/// deadline the runtime drops this future, which ends the sleep at once, and records
/// the outcome itself. Returning early here would race with that decision (the engine
/// could record a shutdown release as a failed attempt).
pub struct Sleep;

const MAX_SLEEP_MS: u64 = 3_600_000;
const SLEEP_SHAPE: &str = r#"{"duration_ms": 0..=3600000}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepPayload {
    duration_ms: u64,
}

#[async_trait]
impl Handler for Sleep {
    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError> {
        let SleepPayload { duration_ms } = payload(&ctx, SLEEP_SHAPE)?;
        if duration_ms > MAX_SLEEP_MS {
            return Err(HandlerError::Permanent(format!(
                "invalid sleep payload (expected {SLEEP_SHAPE}): {duration_ms} is too long"
            )));
        }
        tokio::time::sleep(Duration::from_millis(duration_ms)).await;
        Ok(json!({ "slept_ms": duration_ms }))
    }
}

/// Fails (retryably) while `attempt <= fail_attempts` (always, when absent), then
/// succeeds: a way to watch retries, backoff and dead letters.
pub struct Fail;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailPayload {
    fail_attempts: Option<i32>,
    #[serde(default = "default_failure_message")]
    message: String,
}

fn default_failure_message() -> String {
    "simulated failure".into()
}

#[async_trait]
impl Handler for Fail {
    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError> {
        let FailPayload { fail_attempts, message } =
            payload(&ctx, r#"{"fail_attempts": N (optional), "message": "..." (optional)}"#)?;
        if fail_attempts.is_none_or(|n| ctx.attempt <= n) {
            return Err(HandlerError::Retryable(format!("{message} (attempt {})", ctx.attempt)));
        }
        Ok(json!({ "succeeded_on_attempt": ctx.attempt }))
    }
}

/// Panics, to prove a handler bug costs one attempt and never the worker.
pub struct Panic;

#[async_trait]
impl Handler for Panic {
    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError> {
        panic!("chaos: panic handler ran task {}", ctx.id)
    }
}

/// Writes `{"bytes": N}` to a file in the worker's scratch space (its tmpfs) and removes it
/// again: to prove that a full scratch space fails the task that hit it, frees what it
/// wrote, and leaves the worker serving.
pub struct FillScratch {
    dir: PathBuf,
}

impl FillScratch {
    pub fn new(dir: PathBuf) -> Self {
        FillScratch { dir }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FillScratchPayload {
    bytes: u64,
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
impl Handler for FillScratch {
    async fn run(&self, ctx: TaskContext) -> Result<Value, HandlerError> {
        let FillScratchPayload { bytes } = payload(&ctx, r#"{"bytes": N}"#)?;
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

    fn permanent_error(result: Result<Value, HandlerError>) -> String {
        match result {
            Err(HandlerError::Permanent(message)) => message,
            other => panic!("expected a permanent error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn noop_and_echo() {
        assert_eq!(Noop.run(context("noop", json!({"a": 1}), 1)).await.unwrap(), Value::Null);
        assert_eq!(Echo.run(context("echo", json!({"a": [1, 2]}), 1)).await.unwrap(), json!({"a": [1, 2]}));
    }

    #[tokio::test]
    async fn sleep_sleeps_and_reports() {
        let result = Sleep.run(context("sleep", json!({"duration_ms": 5}), 1)).await.unwrap();
        assert_eq!(result, json!({"slept_ms": 5}));
    }

    #[tokio::test]
    async fn sleep_rejects_bad_payloads_permanently() {
        for bad in
            [json!({}), json!({"duration_ms": -1}), json!({"duration_ms": "5"}), json!({"duration_ms": 3_600_001})]
        {
            let message = permanent_error(Sleep.run(context("sleep", bad.clone(), 1)).await);
            assert!(message.contains("duration_ms"), "{bad}: {message}");
        }
    }

    #[tokio::test]
    async fn fail_fails_the_first_attempts_then_succeeds() {
        let payload = json!({"fail_attempts": 2, "message": "downstream down"});
        for attempt in [1, 2] {
            match Fail.run(context("fail", payload.clone(), attempt)).await {
                Err(HandlerError::Retryable(m)) => assert_eq!(m, format!("downstream down (attempt {attempt})")),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(Fail.run(context("fail", payload, 3)).await.unwrap(), json!({"succeeded_on_attempt": 3}));
        assert!(matches!(Fail.run(context("fail", json!({}), 50)).await, Err(HandlerError::Retryable(_))));
        permanent_error(Fail.run(context("fail", json!({"fail_attempts": "two"}), 1)).await);
    }

    #[tokio::test]
    async fn panic_handler_only_with_chaos_enabled() {
        let mut settings = HandlerSettings {
            webhook: crate::config::WebhookSettings {
                secrets_keys: flowforge_webhooks::DeploymentKeySettings {
                    current: flowforge_platform::Secret::new("k"),
                    previous: None,
                },
                timeout: Duration::from_secs(1),
                allow_private: false,
                allowed_ports: None,
            },
            chaos_handlers: false,
        };
        // Never connected: registering reads nothing.
        let db = sqlx::PgPool::connect_lazy("postgres://nowhere.invalid/x").unwrap();
        let mut kinds: Vec<String> = registry(&settings, db.clone()).kinds().map(String::from).collect();
        kinds.sort();
        assert_eq!(kinds, ["echo", "fail", "noop", "sleep", "webhook"]);
        settings.chaos_handlers = true;
        assert!(registry(&settings, db.clone()).get("panic").is_some());
        assert!(registry(&settings, db).get("fill_scratch").is_some());
    }

    #[tokio::test]
    async fn fill_scratch_writes_then_removes_its_file() {
        let dir = std::env::temp_dir().join(format!("flowforge-scratch-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let result = FillScratch::new(dir.clone()).run(context("fill_scratch", json!({"bytes": 3_000_000}), 1)).await;
        assert_eq!(result.unwrap(), json!({"written_bytes": 3_000_000}));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "the scratch file is removed");
        // A scratch space that cannot be written fails the attempt (retryably), it does not panic.
        let missing = FillScratch::new(dir.join("gone")).run(context("fill_scratch", json!({"bytes": 1}), 1)).await;
        assert!(matches!(missing, Err(HandlerError::Retryable(m)) if m.starts_with("scratch space: ")));
        permanent_error(FillScratch::new(dir.clone()).run(context("fill_scratch", json!({"bytes": "1"}), 1)).await);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
