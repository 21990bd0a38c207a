use std::process::ExitCode;

use clap::Parser;
use flowforge_platform::probe;
use flowforge_platform::service::{self, ServiceCommand};
use flowforge_platform::shutdown;
use flowforge_worker::{WorkerApp, WorkerSettings};

/// FlowForge worker: runs queued tasks. Configured through FLOWFORGE_* variables.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<ServiceCommand>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match service::settings_or_exit(WorkerSettings::from_env()) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    match cli.command.unwrap_or(ServiceCommand::Run) {
        ServiceCommand::Healthcheck => probe::exit_code(settings.metrics_addr, None),
        ServiceCommand::Run => service::run("worker", &settings.telemetry.clone(), async {
            let app = WorkerApp::build(settings).await?;
            app.run_until_stopped(shutdown::token_on_signal()).await
        }),
    }
}
