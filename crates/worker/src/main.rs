use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flowforge_platform::probe;
use flowforge_platform::{shutdown, telemetry};
use flowforge_worker::{WorkerApp, WorkerSettings};

/// FlowForge worker: runs queued tasks. Configured through FLOWFORGE_* variables.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker until SIGTERM or Ctrl-C (the default).
    Run,
    /// Exit 0 if the worker on this host answers GET /health with 200, else 1.
    Healthcheck,
}

/// Exit code of a configuration error, distinct from a runtime failure (1).
const CONFIG_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match WorkerSettings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(settings),
        Command::Healthcheck => probe::exit_code(settings.metrics_addr),
    }
}

fn run(settings: WorkerSettings) -> ExitCode {
    telemetry::init("worker", &settings.telemetry);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let app = WorkerApp::build(settings).await?;
        app.run_until_stopped(shutdown::token_on_signal()).await
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "worker failed");
            ExitCode::FAILURE
        }
    }
}
