//! The worker's settings, read from `FLOWFORGE_*` (see `flowforge_platform::config`).
//! Every bad value is collected, so a misconfigured deployment fails with the full list.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use flowforge_platform::config::HumanDuration;
use flowforge_platform::db::DatabaseSettings;
use flowforge_platform::telemetry::TelemetrySettings;
use flowforge_platform::{ConfigError, Profile, Source};
use flowforge_queue::{Backoff, WorkerConfig};
use flowforge_webhooks::{DeploymentKeySettings, DeploymentKeys};

/// Pool size default: enough for claims, outcome batches, heartbeats, LISTEN and probes
/// without one starving the others.
const DEFAULT_MAX_CONNECTIONS: u32 = 20;

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub profile: Profile,
    pub database: DatabaseSettings,
    pub telemetry: TelemetrySettings,
    /// The queue engine's settings: id, concurrency, lease, intervals, backoff, retention.
    pub runtime: WorkerConfig,
    /// Where `/metrics`, `/health` and `/ready` are served.
    pub metrics_addr: SocketAddr,
    pub handlers: HandlerSettings,
}

/// What the built-in handlers need.
#[derive(Debug, Clone)]
pub struct HandlerSettings {
    pub webhook: WebhookSettings,
    /// Registers the `panic` and `fill_scratch` handlers, for chaos tests.
    pub chaos_handlers: bool,
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The deployment key that seals each user's signing secret, and the previous one
    /// while it is being rotated.
    pub secrets_keys: DeploymentKeySettings,
    /// Whole-request limit: connect, send and read the response.
    pub timeout: Duration,
    /// Whether webhook URLs may point at loopback, private or link-local addresses.
    /// Off outside dev: otherwise any task author could reach internal services (SSRF).
    pub allow_private: bool,
    /// The ports a webhook URL may name; `None`: any.
    pub allowed_ports: Option<Vec<u16>>,
}

impl WebhookSettings {
    pub fn deployment_keys(&self) -> DeploymentKeys {
        self.secrets_keys.keys()
    }
}

/// `FLOWFORGE_WEBHOOK_ALLOWED_PORTS`: `any`, or ports separated by commas.
#[derive(Debug, Clone)]
struct Ports(Option<Vec<u16>>);

impl FromStr for Ports {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "any" {
            return Ok(Ports(None));
        }
        let ports: Result<Vec<u16>, _> = s.split(',').map(|p| p.trim().parse::<u16>()).collect();
        match ports {
            Ok(p) if !p.is_empty() && !p.contains(&0) => Ok(Ports(Some(p))),
            _ => Err("expected `any` or ports separated by commas, like 80,443".into()),
        }
    }
}

impl WorkerSettings {
    /// Reads the process environment (and `FLOWFORGE_CONFIG_FILE`, `*_FILE` secrets).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(Source::from_env())
    }

    /// Reads every setting, then reports all problems at once. Takes the source by value
    /// because only [`Source::finish`] turns the recorded problems into the error.
    pub fn from_source(mut s: Source) -> Result<Self, ConfigError> {
        let profile = s.profile();
        let database = DatabaseSettings::from_source(&mut s, DEFAULT_MAX_CONNECTIONS);
        let telemetry = TelemetrySettings::from_source(&mut s);
        let runtime = runtime_settings(&mut s);
        let metrics_addr = s.parse_or("METRICS_ADDR", SocketAddr::from(([0, 0, 0, 0], 9090)));
        let secrets_keys = DeploymentKeySettings::from_source(&mut s);
        let webhook_timeout = positive_duration(&mut s, "WEBHOOK_TIMEOUT", Duration::from_secs(10));
        let allow_private = s.parse_or("WEBHOOK_ALLOW_PRIVATE", profile.is_dev());
        let default_ports = if profile.is_dev() { Ports(None) } else { Ports(Some(vec![80, 443])) };
        let allowed_ports = s.parse_or("WEBHOOK_ALLOWED_PORTS", default_ports).0;
        let chaos_handlers = s.parse_or("CHAOS_HANDLERS", false);
        s.finish()?;
        // `finish` succeeded, so nothing required is missing.
        let missing = "a missing required value is reported by finish()";
        Ok(WorkerSettings {
            profile,
            database: database.expect(missing),
            telemetry,
            runtime,
            metrics_addr,
            handlers: HandlerSettings {
                webhook: WebhookSettings {
                    secrets_keys: secrets_keys.expect(missing),
                    timeout: webhook_timeout,
                    allow_private,
                    allowed_ports,
                },
                chaos_handlers,
            },
        })
    }
}

/// The engine's settings; its own defaults (including the `host-pid-random` worker id)
/// are the worker's defaults.
fn runtime_settings(s: &mut Source) -> WorkerConfig {
    let defaults = WorkerConfig::default();
    let id: String = s.parse_or("WORKER_ID", defaults.id.clone());
    if id.trim().is_empty() {
        s.problem("FLOWFORGE_WORKER_ID must not be empty");
    }
    let concurrency = at_least_one(s, "WORKER_CONCURRENCY", defaults.concurrency);
    let max_batch = at_least_one(s, "WORKER_MAX_BATCH", defaults.max_batch);
    let lease = positive_duration(s, "WORKER_LEASE", defaults.lease);
    let heartbeat = positive_duration(s, "WORKER_HEARTBEAT", defaults.heartbeat);
    // Two heartbeats per lease: one lost heartbeat must not cost the lease.
    if heartbeat >= lease / 2 {
        s.problem(format!(
            "FLOWFORGE_WORKER_HEARTBEAT ({heartbeat:?}) must be less than half of FLOWFORGE_WORKER_LEASE ({lease:?})"
        ));
    }
    let inline_window = s.duration_or("WORKER_INLINE_WINDOW", defaults.inline_window);
    // The window is a transaction held open while handlers run: keep it well inside a lease.
    if inline_window >= lease {
        s.problem(format!(
            "FLOWFORGE_WORKER_INLINE_WINDOW ({inline_window:?}) must be less than FLOWFORGE_WORKER_LEASE ({lease:?})"
        ));
    }
    let max_open_claims = at_least_one(s, "WORKER_MAX_OPEN_CLAIMS", defaults.max_open_claims);
    let poll_interval = positive_duration(s, "WORKER_POLL_INTERVAL", defaults.poll_interval);
    let rescue_interval = positive_duration(s, "WORKER_RESCUE_INTERVAL", defaults.rescue_interval);
    let shutdown_timeout = s.duration_or("WORKER_SHUTDOWN_TIMEOUT", defaults.shutdown_timeout);
    let backoff = Backoff {
        base: positive_duration(s, "WORKER_BACKOFF_BASE", defaults.backoff.base),
        max: positive_duration(s, "WORKER_BACKOFF_MAX", defaults.backoff.max),
    };
    if backoff.base > backoff.max {
        s.problem(format!(
            "FLOWFORGE_WORKER_BACKOFF_BASE ({:?}) must not exceed FLOWFORGE_WORKER_BACKOFF_MAX ({:?})",
            backoff.base, backoff.max
        ));
    }
    let retention = s.parse_or("RETENTION", Retention(defaults.retention)).0;
    let retention_interval = positive_duration(s, "RETENTION_INTERVAL", defaults.retention_interval);
    WorkerConfig {
        id,
        concurrency,
        max_batch,
        inline_window,
        max_open_claims,
        lease,
        heartbeat,
        poll_interval,
        rescue_interval,
        shutdown_timeout,
        backoff,
        retention,
        retention_interval,
        ..defaults
    }
}

fn at_least_one(s: &mut Source, key: &str, default: usize) -> usize {
    let value = s.parse_or(key, default);
    if value == 0 {
        s.problem(format!("FLOWFORGE_{key} must be at least 1"));
    }
    value
}

/// A duration that drives a loop or a deadline, where zero would spin or fail everything.
fn positive_duration(s: &mut Source, key: &str, default: Duration) -> Duration {
    let value = s.duration_or(key, default);
    if value.is_zero() {
        s.problem(format!("FLOWFORGE_{key} must be greater than zero"));
    }
    value
}

/// How long finished tasks are kept: a duration, or `off` to keep them forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retention(Option<Duration>);

impl FromStr for Retention {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "off" {
            return Ok(Retention(None));
        }
        match s.parse::<HumanDuration>()?.0 {
            d if d.is_zero() => Err("must be greater than zero, or off to keep finished tasks".into()),
            d => Ok(Retention(Some(d))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowforge_platform::Secret;

    /// The dev profile unless `pairs` names one.
    fn settings(pairs: &[(&str, &str)]) -> Result<WorkerSettings, ConfigError> {
        let dev = (!pairs.iter().any(|(k, _)| *k == "PROFILE")).then_some(("PROFILE", "dev"));
        WorkerSettings::from_source(Source::from_vars(
            pairs.iter().copied().chain(dev).map(|(k, v)| (format!("FLOWFORGE_{k}"), v.to_string())),
        ))
    }

    #[test]
    fn dev_profile_runs_on_defaults() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.profile, Profile::Dev);
        assert_eq!(s.database.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(s.runtime.concurrency, 64);
        assert_eq!(s.runtime.max_batch, 500);
        assert_eq!(s.runtime.lease, Duration::from_secs(15));
        assert_eq!(s.runtime.heartbeat, Duration::from_secs(5));
        assert_eq!(s.runtime.shutdown_timeout, Duration::from_secs(20));
        assert_eq!(s.runtime.backoff, Backoff { base: Duration::from_secs(1), max: Duration::from_secs(3600) });
        assert_eq!(s.runtime.retention, Some(Duration::from_secs(7 * 24 * 3600)));
        assert_eq!(s.runtime.retention_interval, Duration::from_secs(3600));
        assert!(s.runtime.id.contains(&format!("-{}-", std::process::id())), "{}", s.runtime.id);
        assert_eq!(s.metrics_addr, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(s.handlers.webhook.secrets_keys.current.expose(), "dev-webhook-secrets-key");
        assert_eq!(s.handlers.webhook.secrets_keys.previous, None);
        assert_eq!(s.handlers.webhook.allowed_ports, None);
        assert_eq!(s.handlers.webhook.timeout, Duration::from_secs(10));
        assert!(s.handlers.webhook.allow_private);
        assert!(!s.handlers.chaos_handlers);
    }

    #[test]
    fn values_from_the_environment_win() {
        let s = settings(&[
            ("PROFILE", "prod"),
            ("DATABASE_URL", "postgres://w@db/flowforge?sslmode=require"),
            ("WEBHOOK_SECRETS_KEY", "k"),
            ("WORKER_ID", "w-1"),
            ("WORKER_CONCURRENCY", "8"),
            ("WORKER_LEASE", "2s"),
            ("WORKER_HEARTBEAT", "500ms"),
            ("RETENTION", "off"),
            ("METRICS_ADDR", "127.0.0.1:0"),
            ("CHAOS_HANDLERS", "true"),
        ])
        .unwrap();
        assert_eq!(s.runtime.id, "w-1");
        assert_eq!(s.runtime.concurrency, 8);
        assert_eq!((s.runtime.lease, s.runtime.heartbeat), (Duration::from_secs(2), Duration::from_millis(500)));
        assert_eq!(s.runtime.retention, None);
        assert_eq!(s.metrics_addr.port(), 0);
        assert!(s.handlers.chaos_handlers);
        assert!(!s.handlers.webhook.allow_private, "private webhook targets are refused outside dev");
        assert_eq!(s.handlers.webhook.allowed_ports, Some(vec![80, 443]));
        assert!(!format!("{s:?}").contains("sslmode"), "the database URL leaked into Debug output");
    }

    #[test]
    fn a_bad_config_lists_every_problem() {
        let err = settings(&[
            ("PROFILE", "prod"),
            ("WORKER_CONCURRENCY", "zero"),
            ("WORKER_MAX_BATCH", "0"),
            ("WORKER_LEASE", "soon"),
            ("WORKER_HEARTBEAT", "10s"),
            ("WORKER_POLL_INTERVAL", "0s"),
            ("WORKER_BACKOFF_BASE", "2h"),
            ("RETENTION", "forever"),
            ("METRICS_ADDR", "nowhere"),
            ("WEBHOOK_ALLOW_PRIVATE", "maybe"),
            ("WEBHOOK_ALLOWED_PORTS", "80,http"),
            ("CHAOS_HANDLERS", "yes"),
        ])
        .unwrap_err();
        let text = err.to_string();
        let keys = [
            "FLOWFORGE_DATABASE_URL",
            "FLOWFORGE_WORKER_CONCURRENCY",
            "FLOWFORGE_WORKER_MAX_BATCH",
            "FLOWFORGE_WORKER_LEASE",
            "FLOWFORGE_WORKER_HEARTBEAT",
            "FLOWFORGE_WORKER_POLL_INTERVAL",
            "FLOWFORGE_WORKER_BACKOFF_BASE",
            "FLOWFORGE_RETENTION",
            "FLOWFORGE_METRICS_ADDR",
            "FLOWFORGE_WEBHOOK_SECRETS_KEY",
            "FLOWFORGE_WEBHOOK_ALLOW_PRIVATE",
            "FLOWFORGE_WEBHOOK_ALLOWED_PORTS",
            "FLOWFORGE_CHAOS_HANDLERS",
        ];
        for key in keys {
            assert!(text.contains(key), "{key} missing from:\n{text}");
        }
        assert_eq!(err.problems.len(), keys.len(), "{text}");
    }

    #[test]
    fn previous_secrets_key_from_the_environment() {
        let s = settings(&[("WEBHOOK_SECRETS_KEY", "new-key"), ("WEBHOOK_SECRETS_KEY_PREVIOUS", "old-key")]).unwrap();
        assert_eq!(s.handlers.webhook.secrets_keys.current.expose(), "new-key");
        assert_eq!(s.handlers.webhook.secrets_keys.previous.as_ref().map(Secret::expose), Some("old-key"));
        let debug = format!("{s:?}");
        assert!(!debug.contains("old-key") && !debug.contains("new-key"), "a secrets key leaked: {debug}");
        for empty in ["", "  "] {
            let s = settings(&[("WEBHOOK_SECRETS_KEY_PREVIOUS", empty)]).unwrap();
            assert_eq!(s.handlers.webhook.secrets_keys.previous, None, "{empty:?}");
        }
    }

    #[test]
    fn previous_secrets_key_from_a_file_where_an_empty_file_means_none() {
        let dir = std::env::temp_dir().join(format!("ff-worker-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.to_str().unwrap().to_owned()
        };
        let key = file("key", "new-key\n");
        let previous = file("previous", "old-key\n");
        let s = settings(&[
            ("PROFILE", "prod"),
            ("DATABASE_URL", "postgres://w@db/flowforge?sslmode=require"),
            ("WEBHOOK_SECRETS_KEY_FILE", &key),
            ("WEBHOOK_SECRETS_KEY_PREVIOUS_FILE", &previous),
        ])
        .unwrap();
        assert_eq!(s.handlers.webhook.secrets_keys.current.expose(), "new-key");
        assert_eq!(s.handlers.webhook.secrets_keys.previous.as_ref().map(Secret::expose), Some("old-key"));
        for (name, text) in [("empty", ""), ("newline", "\n"), ("blank", " \r\n\t\n")] {
            let path = file(name, text);
            let s = settings(&[("WEBHOOK_SECRETS_KEY_PREVIOUS_FILE", &path)]).unwrap();
            assert_eq!(s.handlers.webhook.secrets_keys.previous, None, "{text:?}");
        }
        // The same rules as every `_FILE` setting: both forms, or an unreadable file, are problems.
        let err =
            settings(&[("WEBHOOK_SECRETS_KEY_PREVIOUS", "old-key"), ("WEBHOOK_SECRETS_KEY_PREVIOUS_FILE", &previous)])
                .unwrap_err();
        assert!(err.to_string().contains("both set"), "{err}");
        let missing = dir.join("missing");
        let err = settings(&[("WEBHOOK_SECRETS_KEY_PREVIOUS_FILE", missing.to_str().unwrap())]).unwrap_err();
        assert!(err.to_string().contains("FLOWFORGE_WEBHOOK_SECRETS_KEY_PREVIOUS_FILE"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn heartbeat_must_fit_twice_in_the_lease() {
        let err = settings(&[("WORKER_LEASE", "2s"), ("WORKER_HEARTBEAT", "1s")]).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(err.problems[0].contains("less than half"), "{err}");
        settings(&[("WORKER_LEASE", "2s"), ("WORKER_HEARTBEAT", "999ms")]).unwrap();
    }

    #[test]
    fn retention_is_a_duration_or_off() {
        assert_eq!("7d".parse(), Ok(Retention(Some(Duration::from_secs(7 * 24 * 3600)))));
        assert_eq!("off".parse(), Ok(Retention(None)));
        assert!("0s".parse::<Retention>().is_err());
        assert!("later".parse::<Retention>().is_err());
    }
}
