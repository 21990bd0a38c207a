use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flowforge_platform::probe;
use flowforge_platform::{service, shutdown};
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match service::settings_or_exit(WorkerSettings::from_env()) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Healthcheck => probe::exit_code(settings.metrics_addr),
        Command::Run => service::run("worker", &settings.telemetry.clone(), async {
            let app = WorkerApp::build(settings).await?;
            app.run_until_stopped(shutdown::token_on_signal()).await
        }),
    }
}
