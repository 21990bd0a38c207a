//! What every service binary's `main` does around its own application: settings or
//! exit 2, telemetry, the async runtime, and one error line on failure.

use std::future::Future;
use std::process::ExitCode;

use crate::config::ConfigError;
use crate::telemetry::{self, TelemetrySettings};

/// Exit status of a service whose configuration is invalid (the message lists every problem).
pub const CONFIG_ERROR: u8 = 2;

/// The settings, or the exit status after printing every configuration problem.
pub fn settings_or_exit<S>(settings: Result<S, ConfigError>) -> Result<S, ExitCode> {
    settings.map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(CONFIG_ERROR)
    })
}

/// Tunes the allocator, installs telemetry, then runs `app` to completion on a multi-threaded runtime.
pub fn run<F>(service: &'static str, telemetry: &TelemetrySettings, app: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    crate::allocator::release_freed_memory_at_once();
    telemetry::init(service, telemetry);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(app);
    if let Err(e) = &outcome {
        tracing::error!(error = format!("{e:#}"), "{service} failed");
    }
    telemetry::flush();
    if outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The subcommands of every service binary (api, worker, web), the same in each.
#[derive(clap::Subcommand, Clone, Copy)]
pub enum ServiceCommand {
    /// Run until SIGTERM or Ctrl-C (the default).
    #[command(alias = "serve")]
    Run,
    /// Exit 0 if the service on this host answers /health (the image's HEALTHCHECK: no shell, no curl).
    Healthcheck,
}
