//! One telemetry set-up for every binary: structured logs through `tracing`, JSON in
//! staging/prod (one object per line, what log shippers expect), human-readable in dev.
//! Panics are logged through the same pipeline so they stay machine-readable.

use std::str::FromStr;

use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};

use crate::config::{Profile, Source};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(LogFormat::Json),
            "pretty" | "text" => Ok(LogFormat::Pretty),
            other => Err(format!("unknown log format {other:?} (expected json or pretty)")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    pub format: LogFormat,
    pub filter: String,
}

impl TelemetrySettings {
    pub fn from_source(s: &mut Source) -> Self {
        let default_format = if s.profile() == Profile::Dev { LogFormat::Pretty } else { LogFormat::Json };
        let format = s.parse_or("LOG_FORMAT", default_format);
        let filter: String = s.parse_or("LOG", "info,sqlx=warn,tower_http=warn".to_string());
        if let Err(e) = EnvFilter::try_new(&filter) {
            s.problem(format!("FLOWFORGE_LOG: {e}"));
        }
        TelemetrySettings { format, filter }
    }
}

/// Installs the global subscriber and the panic hook. Safe to call more than once
/// (later calls are ignored), which tests rely on.
pub fn init(service: &'static str, settings: &TelemetrySettings) {
    let filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match settings.format {
        LogFormat::Json => registry
            .with(
                fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false).with_target(true),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().with_target(false).with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())))
            .try_init(),
    };
    if installed.is_ok() {
        std::panic::set_hook(Box::new(move |info| {
            let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            tracing::error!(service, panic = %message, %location, "panic");
        }));
    }
}
