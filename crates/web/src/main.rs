use std::process::ExitCode;

use clap::Parser;
use flowforge_platform::probe;
use flowforge_platform::service::{self, ServiceCommand};
use flowforge_web::{Application, WebSettings};

#[derive(Parser)]
#[command(name = "web", version, about = "FlowForge web UI (static assets)")]
struct Cli {
    #[command(subcommand)]
    command: Option<ServiceCommand>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match service::settings_or_exit(WebSettings::from_env()) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    match cli.command.unwrap_or(ServiceCommand::Run) {
        ServiceCommand::Healthcheck => probe::exit_code(settings.listen, settings.tls.as_ref()),
        ServiceCommand::Run => service::run("web", &settings.telemetry, async {
            Application::build(&settings).await?.run_until_stopped(flowforge_platform::shutdown::signal()).await
        }),
    }
}
