//! What every FlowForge HTTP server shares: the probes and metrics routes, and serving
//! with podinfo's shutdown order (not ready → wait for load balancers → drain → close),
//! bounded by a deadline so one slow client cannot hold a stopping replica forever.
//! Plain HTTP, or HTTPS when the service has a certificate ([`ServerTls`]).

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::tls::ServerTls;

/// Whether a service can take work now; `Err` says why not (logged, and in the body).
pub type ReadinessCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// The probe routes of a service: `/health` (liveness: answering is the signal),
/// `/ready` (not draining, and the service's own check) and `/metrics` when it has a
/// registry.
#[derive(Clone, Default)]
pub struct Probes {
    metrics: Option<prometheus::Registry>,
    ready: Option<ReadinessCheck>,
    draining: CancellationToken,
}

impl Probes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `/metrics` from `registry`.
    pub fn metrics(mut self, registry: prometheus::Registry) -> Self {
        self.metrics = Some(registry);
        self
    }

    /// Serves `/ready`: 503 once `draining` is cancelled or while `check` fails.
    pub fn ready(mut self, draining: CancellationToken, check: ReadinessCheck) -> Self {
        self.draining = draining;
        self.ready = Some(check);
        self
    }

    pub fn router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        let mut router = Router::new().route("/health", get(|| async { Json(json!({ "status": "healthy" })) }));
        if let Some(registry) = self.metrics.clone() {
            router = router.route("/metrics", get(move || std::future::ready(metrics_response(&registry))));
        }
        if self.ready.is_some() {
            router = router.route("/ready", get(ready).with_state(self));
        }
        router
    }
}

/// Whether PostgreSQL answers a query within a second: what every probe asks of it.
pub async fn database_answers(pool: &sqlx::PgPool) -> bool {
    matches!(tokio::time::timeout(Duration::from_secs(1), sqlx::query("SELECT 1").execute(pool)).await, Ok(Ok(_)))
}

/// A readiness check that PostgreSQL answers ([`database_answers`]).
pub fn database_ready(pool: sqlx::PgPool) -> ReadinessCheck {
    Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move {
            if database_answers(&pool).await {
                Ok(())
            } else {
                Err("database unreachable".into())
            }
        })
    })
}

async fn ready(State(probes): State<Probes>) -> Response {
    if probes.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "draining" }))).into_response();
    }
    let check = probes.ready.as_ref().expect("routed only with a check");
    match check().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable", "reason": reason })))
                .into_response()
        }
    }
}

/// `registry` in Prometheus' text format.
pub fn metrics_response(registry: &prometheus::Registry) -> Response {
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], crate::metrics::render(registry)).into_response()
}

/// How a server stops once told to.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    /// Cancelled when the stop begins: `/ready` fails from then on.
    pub draining: CancellationToken,
    /// How long to keep serving while load balancers notice.
    pub delay: Duration,
    /// How long requests in flight (and open streams) may take after that. Then `serve`
    /// returns, and what is still open ends with the process.
    pub deadline: Duration,
}

/// A bound listening socket that hands out plain TCP connections, or TLS ones whose
/// handshake is done.
pub struct Listener {
    local: SocketAddr,
    accepting: Accepting,
}

enum Accepting {
    Plain(TcpListener),
    /// Handshakes run in tasks of their own, so a slow or silent client delays nobody
    /// else's; the accept loop ends when the listener is dropped.
    Tls {
        handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
        _accept_loop: AbortOnDropHandle<()>,
    },
}

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Listener {
    /// Binds `addr` (port 0 picks a free port), with TLS when `tls` is given.
    pub async fn bind(addr: SocketAddr, tls: Option<&ServerTls>) -> std::io::Result<Listener> {
        let tcp = TcpListener::bind(addr).await?;
        let local = tcp.local_addr()?;
        let accepting = match tls {
            None => Accepting::Plain(tcp),
            Some(tls) => {
                let (sender, handshaken) = mpsc::channel(64);
                let accept_loop = AbortOnDropHandle::new(tokio::spawn(accept_tls(tcp, tls.acceptor(), sender)));
                Accepting::Tls { handshaken, _accept_loop: accept_loop }
            }
        };
        Ok(Listener { local, accepting })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.accepting, Accepting::Tls { .. })
    }
}

impl axum::serve::Listener for Listener {
    type Io = Either<TcpStream, TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match &mut self.accepting {
            Accepting::Plain(tcp) => {
                let (stream, addr) = axum::serve::Listener::accept(tcp).await;
                (Either::Left(stream), addr)
            }
            Accepting::Tls { handshaken, .. } => match handshaken.recv().await {
                Some((stream, addr)) => (Either::Right(stream), addr),
                // The accept loop only ends with the listener.
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

async fn accept_tls(
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handshaken: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, addr) = match tcp.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors, most likely: wait for some to close.
            Err(e) => {
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Small TLS records must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let handshaken = handshaken.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = handshaken.send((stream, addr)).await;
                }
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        });
    }
}

/// Serves `app` until `stop` resolves, then drains as `drain` says. Handlers see the
/// client's address through `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: Listener,
    app: Router,
    stop: impl Future<Output = ()> + Send + 'static,
    drain: Drain,
) -> std::io::Result<()> {
    let closing = CancellationToken::new();
    let Drain { draining, delay, deadline } = drain;
    let graceful = {
        let closing = closing.clone();
        async move {
            stop.await;
            draining.cancel();
            tracing::info!(?delay, ?deadline, "draining: /ready now fails; closing after the delay");
            tokio::time::sleep(delay).await;
            closing.cancel();
        }
    };
    // Through `tap_io`, whose connection info axum knows for any listener's address.
    let listener = axum::serve::ListenerExt::tap_io(listener, |_| {});
    let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(graceful)
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result,
        _ = async { closing.cancelled().await; tokio::time::sleep(deadline).await } => {
            tracing::warn!(?deadline, "drain deadline passed: closing the connections still open");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start(
        app: Router,
        drain: Drain,
    ) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<std::io::Result<()>>) {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), None).await.unwrap();
        let addr = listener.local_addr();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, app, stop.clone().cancelled_owned(), drain));
        (addr, stop, server)
    }

    #[tokio::test]
    async fn serves_tls_with_the_clients_address_and_nothing_in_plain_text() {
        use axum::extract::ConnectInfo;
        let files = flowforge_testkit::TlsFiles::new();
        let pem = |path: &std::path::Path| std::fs::read(path).unwrap();
        let tls = ServerTls::from_pem(&pem(&files.cert), &pem(&files.key)).unwrap();
        let app = Router::new()
            .route("/peer", get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }))
            .merge(Probes::new().router());
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), Some(&tls)).await.unwrap();
        let addr = listener.local_addr();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, app, stop.clone().cancelled_owned(), Drain::default()));

        // A client that connects and never starts its handshake holds up nobody.
        let _silent = TcpStream::connect(addr).await.unwrap();
        let ca = reqwest::Certificate::from_pem(&pem(&files.ca)).unwrap();
        let client = reqwest::Client::builder().add_root_certificate(ca).build().unwrap();
        let url = format!("https://localhost:{}/peer", addr.port());
        let peer = tokio::time::timeout(Duration::from_secs(5), client.get(url).send()).await.unwrap().unwrap();
        assert_eq!(peer.text().await.unwrap(), "127.0.0.1", "handlers see the client's address");
        // A client offering HTTP/2 as well (as Prometheus does) is told HTTP/1.1.
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        roots.add(rustls::pki_types::CertificateDer::from_pem_slice(&pem(&files.ca)).unwrap()).unwrap();
        let mut offer = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        offer.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls_stream = tokio_rustls::TlsConnector::from(Arc::new(offer)).connect(name, tcp).await.unwrap();
        assert_eq!(tls_stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let plain = reqwest::get(format!("http://{addr}/health")).await;
        assert!(plain.is_err(), "plain HTTP gets no HTTP answer: {plain:?}");

        // The container's health probe speaks TLS to it, trusting only its certificate.
        let other_files = flowforge_testkit::TlsFiles::new();
        let other = ServerTls::from_pem(&pem(&other_files.cert), &pem(&other_files.key)).unwrap();
        let probe = |tls: ServerTls| {
            tokio::task::spawn_blocking(move || crate::probe::health(addr, Some(&tls), Duration::from_secs(3)))
        };
        assert_eq!(probe(tls.clone()).await.unwrap(), Ok(()));
        let refused = probe(other).await.unwrap().unwrap_err();
        assert!(refused.contains("own certificate"), "{refused}");
        let plain_probe = tokio::task::spawn_blocking(move || crate::probe::health(addr, None, Duration::from_secs(3)));
        assert!(plain_probe.await.unwrap().is_err(), "a plain probe fails against TLS");
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn probes_answer_and_ready_fails_while_draining() {
        let registry = prometheus::Registry::new();
        let counter = prometheus::IntCounter::new("probe_test_total", "a counter").unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.inc();
        let draining = CancellationToken::new();
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = healthy.clone();
        let check: ReadinessCheck = Arc::new(move || {
            let ok = flag.load(std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                if ok {
                    Ok(())
                } else {
                    Err("backend down".into())
                }
            })
        });
        let app = Probes::new().metrics(registry).ready(draining.clone(), check).router();
        let drain =
            Drain { draining: draining.clone(), delay: Duration::from_millis(300), deadline: Duration::from_secs(1) };
        let (addr, stop, server) = start(app, drain).await;
        let get = |path: &'static str| async move {
            let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        };
        assert_eq!(get("/health").await.0, 200);
        assert!(get("/metrics").await.1.contains("probe_test_total 1"));
        assert_eq!(get("/ready").await.0, 200);
        healthy.store(false, std::sync::atomic::Ordering::SeqCst);
        let (status, body) = get("/ready").await;
        assert_eq!((status, body.contains("backend down")), (503, true));
        healthy.store(true, std::sync::atomic::Ordering::SeqCst);
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, body) = get("/ready").await;
        assert_eq!((status, body.contains("draining")), (503, true), "not ready during the delay, still answering");
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_request_that_outlives_the_deadline_does_not_hold_the_stop() {
        let app = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        );
        let drain =
            Drain { draining: CancellationToken::new(), delay: Duration::ZERO, deadline: Duration::from_millis(500) };
        let (addr, stop, server) = start(app, drain).await;
        let slow = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        stop.cancel();
        server.await.unwrap().unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(5), "stopped after {took:?}");
        assert!(!slow.is_finished(), "the slow request was still running: it did not hold the stop");
        slow.abort();
    }
}
