//! One telemetry set-up for every binary: structured logs through `tracing`, JSON in
//! staging/prod (one object per line, what log shippers expect), human-readable in dev.
//! Panics are logged through the same pipeline so they stay machine-readable. With
//! `FLOWFORGE_OTLP_ENDPOINT` set, spans are also exported over OTLP/HTTP (protobuf).

use std::str::FromStr;
use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

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
    /// Base URL of an OTLP/HTTP collector (`http://collector:4318`); spans are exported
    /// only when set.
    pub otlp_endpoint: Option<String>,
}

impl TelemetrySettings {
    pub fn from_source(s: &mut Source) -> Self {
        let default_format = if s.profile() == Profile::Dev { LogFormat::Pretty } else { LogFormat::Json };
        let format = s.parse_or("LOG_FORMAT", default_format);
        let filter: String = s.parse_or("LOG", "info,sqlx=warn,tower_http=warn".to_string());
        if let Err(e) = EnvFilter::try_new(&filter) {
            s.problem(format!("FLOWFORGE_LOG: {e}"));
        }
        let otlp: String = s.parse_or("OTLP_ENDPOINT", String::new());
        let otlp_endpoint = match otlp.trim() {
            "" => None,
            url if url.starts_with("http://") => Some(url.trim_end_matches('/').to_string()),
            url => {
                s.problem(format!(
                    "FLOWFORGE_OTLP_ENDPOINT must be an http:// URL of an OTLP/HTTP collector, not {url:?}"
                ));
                None
            }
        };
        TelemetrySettings { format, filter, otlp_endpoint }
    }
}

/// Installs the global subscriber and the panic hook. Safe to call more than once
/// (later calls are ignored), which tests rely on.
pub fn init(service: &'static str, settings: &TelemetrySettings) {
    let filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = settings.otlp_endpoint.as_deref().and_then(|endpoint| match otlp_provider(service, endpoint) {
        Ok(provider) => Some(provider),
        Err(e) => {
            eprintln!("OTLP export to {endpoint} disabled: {e}");
            None
        }
    });
    let spans = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
    let registry = tracing_subscriber::registry().with(filter).with(spans);
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
        if let Some(provider) = provider {
            let _ = PROVIDER.set(provider);
        }
        std::panic::set_hook(Box::new(move |info| {
            let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
            let message = info.payload_as_str().unwrap_or("non-string panic payload");
            tracing::error!(service, panic = %message, %location, "panic");
        }));
    }
}

/// The span exporter, when OTLP export is on: kept to flush it before the process exits.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

fn otlp_provider(service: &'static str, endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build())
}

/// Sends every span recorded so far (no-op without OTLP export).
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.force_flush() {
            eprintln!("OTLP flush failed: {e}");
        }
    }
}
