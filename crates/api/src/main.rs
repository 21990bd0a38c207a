use std::process::ExitCode;

use clap::Parser;
use flowforge_api::{ApiSettings, Application};
use flowforge_platform::probe;
use flowforge_platform::service::{self, ServiceCommand};

#[derive(Parser)]
#[command(name = "api", version, about = "FlowForge task API service")]
struct Cli {
    #[command(subcommand)]
    command: Option<ServiceCommand>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match service::settings_or_exit(ApiSettings::from_env()) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    match cli.command.unwrap_or(ServiceCommand::Run) {
        ServiceCommand::Healthcheck => probe::exit_code(settings.listen, settings.tls.as_ref()),
        ServiceCommand::Run => service::run("api", &settings.telemetry.clone(), async {
            let app = Application::build(settings).await?;
            app.run_until_stopped(flowforge_platform::shutdown::signal()).await?;
            Ok(())
        }),
    }
}
