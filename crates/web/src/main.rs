use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flowforge_platform::probe;
use flowforge_web::{Application, WebSettings};

#[derive(Parser)]
#[command(name = "web", version, about = "FlowForge web UI (static assets)")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the UI (the default).
    Serve,
    /// Exit 0 if the service on this host answers /health (the image's HEALTHCHECK).
    Healthcheck,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match WebSettings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Healthcheck => probe::exit_code(settings.listen),
        Command::Serve => serve(&settings),
    }
}

fn serve(settings: &WebSettings) -> ExitCode {
    flowforge_platform::telemetry::init("web", &settings.telemetry);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        let app = Application::build(settings).await?;
        app.run_until_stopped(flowforge_platform::shutdown::signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "web failed");
            ExitCode::FAILURE
        }
    }
}
