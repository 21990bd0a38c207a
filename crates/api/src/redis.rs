//! Redis is an accelerator here, never a dependency: every command has a short deadline
//! and callers treat failure as "no Redis" (serve from PostgreSQL, skip the limit).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

use crate::metrics::ApiMetrics;

/// How often to retry connecting while Redis is unreachable.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Redis {
    // Shared: a client holds the server's address and credentials as owned strings, and a
    // `Redis` is cloned on every request.
    client: Arc<redis::Client>,
    timeout: Duration,
    prefix: Arc<str>,
    conn: Arc<Mutex<Connection>>,
    metrics: Arc<ApiMetrics>,
}

enum Connection {
    Up(ConnectionManager),
    Down { retry_at: Instant },
}

#[derive(Debug, thiserror::Error)]
#[error("redis unavailable")]
pub struct Unavailable;

/// A client for `url`. With `ca_pem`, a `rediss://` server must present a certificate
/// signed by that CA (the stack's own) rather than one the system trusts.
pub fn client(url: &str, ca_pem: Option<&str>) -> redis::RedisResult<redis::Client> {
    match ca_pem {
        None => redis::Client::open(url),
        Some(ca) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates { client_tls: None, root_cert: Some(ca.as_bytes().to_vec()) },
        ),
    }
}

impl Redis {
    pub fn new(client: redis::Client, prefix: &str, timeout: Duration, metrics: Arc<ApiMetrics>) -> Self {
        Redis {
            client: Arc::new(client),
            timeout,
            prefix: prefix.into(),
            conn: Arc::new(Mutex::new(Connection::Down { retry_at: Instant::now() })),
            metrics,
        }
    }

    /// `prefix + rest`: every key this deployment uses.
    pub fn key(&self, rest: impl std::fmt::Display) -> String {
        format!("{}{rest}", self.prefix)
    }

    async fn connection(&self) -> Option<ConnectionManager> {
        {
            let mut guard = self.conn.lock().await;
            match &*guard {
                Connection::Up(c) => return Some(c.clone()),
                Connection::Down { retry_at } if Instant::now() < *retry_at => return None,
                // This request tries; everyone else carries on without Redis meanwhile.
                Connection::Down { .. } => *guard = Connection::Down { retry_at: Instant::now() + RECONNECT_EVERY },
            }
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1);
        match tokio::time::timeout(self.timeout * 2, self.client.get_connection_manager_with_config(config)).await {
            Ok(Ok(c)) => {
                tracing::info!("connected to redis");
                *self.conn.lock().await = Connection::Up(c.clone());
                Some(c)
            }
            _ => None,
        }
    }

    /// Runs `op` with a deadline. Any failure is counted, logged at debug level and
    /// reported as [`Unavailable`].
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let Some(conn) = self.connection().await else {
            self.metrics.redis_errors.inc();
            return Err(Unavailable);
        };
        match tokio::time::timeout(self.timeout, op(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.metrics.redis_errors.inc();
                tracing::debug!(error = %e, "redis command failed");
                Err(Unavailable)
            }
            Err(_) => {
                self.metrics.redis_errors.inc();
                tracing::debug!("redis command timed out");
                Err(Unavailable)
            }
        }
    }

    pub async fn ping(&self) -> bool {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await }).await.is_ok()
    }
}
