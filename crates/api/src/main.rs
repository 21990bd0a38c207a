use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flowforge_api::{ApiSettings, Application};
use flowforge_platform::probe;

#[derive(Parser)]
#[command(name = "api", version, about = "FlowForge task API service")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Exit 0 if the API on this host answers /health (the image's HEALTHCHECK: no shell, no curl).
    Healthcheck,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match ApiSettings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Healthcheck => probe::exit_code(settings.listen),
        Command::Serve => serve(settings),
    }
}

fn serve(settings: ApiSettings) -> ExitCode {
    flowforge_platform::telemetry::init("api", &settings.telemetry);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        let app = Application::build(settings).await?;
        app.run_until_stopped(flowforge_platform::shutdown::signal()).await?;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "api failed");
            ExitCode::FAILURE
        }
    }
}
