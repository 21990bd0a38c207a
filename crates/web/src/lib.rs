//! The `web` service: the browser UI's static assets (`assets/`), compiled into the
//! binary so the image holds nothing but one file. The UI talks to the API on the same
//! origin, through the reverse proxy; this service never sees a token or a task.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use flowforge_platform::http::{Drain, Listener, Probes};
use flowforge_platform::telemetry::TelemetrySettings;
use flowforge_platform::tls::ServerTls;
use flowforge_platform::{ConfigError, Source};
use rust_embed::{EmbeddedFile, RustEmbed};
use tower_http::compression::CompressionLayer;
use tower_http::set_header::SetResponseHeaderLayer;

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

/// No inline script or style, nothing from another origin: an injected `<script>` has
/// nowhere to come from.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

#[derive(Debug, Clone)]
pub struct WebSettings {
    pub listen: SocketAddr,
    /// HTTPS with this certificate; plain HTTP without one.
    pub tls: Option<ServerTls>,
    pub telemetry: TelemetrySettings,
}

impl WebSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(Source::from_env())
    }

    pub fn from_source(mut s: Source) -> Result<Self, ConfigError> {
        let listen = s.parse_or("WEB_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080)));
        let tls = ServerTls::from_source(&mut s);
        let telemetry = TelemetrySettings::from_source(&mut s);
        s.finish()?;
        Ok(WebSettings { listen, tls, telemetry })
    }
}

pub struct Application {
    listener: Listener,
}

impl Application {
    pub async fn build(settings: &WebSettings) -> anyhow::Result<Self> {
        let listener = Listener::bind(settings.listen, settings.tls.as_ref()).await?;
        tracing::info!(addr = %listener.local_addr(), tls = listener.is_tls(), "web listening");
        Ok(Application { listener })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().port()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // Static files answer at once: a short deadline is plenty.
        let drain = Drain { deadline: Duration::from_secs(5), ..Drain::default() };
        flowforge_platform::http::serve(self.listener, router(), shutdown, drain).await?;
        Ok(())
    }
}

pub fn router() -> Router {
    Router::new()
        .merge(Probes::new().router())
        .fallback(get(asset))
        .layer(CompressionLayer::new())
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
}

async fn asset(request: Request) -> Response {
    let path = match request.uri().path().trim_start_matches('/') {
        "" => "index.html",
        path => path,
    };
    match Assets::get(path) {
        Some(file) => serve(file, request.headers().get(header::IF_NONE_MATCH)),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// Every response carries the content's hash as its ETag and must be revalidated, so a
/// new release is picked up at once and an unchanged file costs a 304.
fn serve(file: EmbeddedFile, if_none_match: Option<&HeaderValue>) -> Response {
    let etag = format!("\"{}\"", file.metadata.sha256_hash().iter().map(|b| format!("{b:02x}")).collect::<String>());
    let mut builder = Response::builder().header(header::ETAG, &etag).header(header::CACHE_CONTROL, "no-cache");
    if if_none_match.is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        return builder.status(StatusCode::NOT_MODIFIED).body(Body::empty()).unwrap_or_default();
    }
    builder = builder.header(header::CONTENT_TYPE, file.metadata.mimetype());
    builder.body(Body::from(file.data)).unwrap_or_default()
}
