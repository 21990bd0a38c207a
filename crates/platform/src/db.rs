//! The PostgreSQL pool every service uses: bounded waits so a database outage turns
//! into fast, clear errors instead of hanging requests.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Connection;

use crate::config::{Secret, Source};

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: Secret,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    pub statement_timeout: Duration,
}

impl DatabaseSettings {
    /// Reads `DATABASE_URL` (or `DATABASE_URL_FILE`) and the pool settings. In staging and
    /// prod the URL must ask for TLS, unless it names a local socket.
    pub fn from_source(s: &mut Source, default_max_connections: u32) -> Option<Self> {
        let url: Option<Secret> = s.parse_dev_default("DATABASE_URL", "PostgreSQL connection URL", || {
            Secret::new("postgres://flowforge@localhost:5432/flowforge")
        });
        let max_connections = s.parse_or("DATABASE_MAX_CONNECTIONS", default_max_connections);
        if max_connections == 0 {
            s.problem("FLOWFORGE_DATABASE_MAX_CONNECTIONS must be at least 1");
        }
        let acquire_timeout = s.duration_or("DATABASE_ACQUIRE_TIMEOUT", Duration::from_secs(3));
        let statement_timeout = s.duration_or("DATABASE_STATEMENT_TIMEOUT", Duration::from_secs(10));
        let url = url?;
        match PgConnectOptions::from_str(url.expose()) {
            Err(e) => {
                s.problem(format!(
                    "FLOWFORGE_DATABASE_URL is not a valid PostgreSQL URL: {}",
                    redact(&e.to_string(), &url)
                ));
                return None;
            }
            // A local socket never leaves the host: TLS does not apply.
            Ok(options) if !s.profile().is_dev() && options.get_socket().is_none() && !asks_for_tls(url.expose()) => {
                s.problem(format!(
                    "FLOWFORGE_DATABASE_URL must use sslmode=require, verify-ca or verify-full in the {} profile",
                    s.profile()
                ));
            }
            Ok(_) => {}
        }
        Some(DatabaseSettings { url, max_connections, acquire_timeout, statement_timeout })
    }

    /// How each connection is opened: the URL, the application name PostgreSQL shows
    /// for it, the statement timeout, and generic plans for prepared statements.
    ///
    /// FlowForge's statements have fixed shapes. Left to choose, PostgreSQL plans the
    /// ones that take arrays (`INSERT … FROM unnest($1…)`, batch outcomes) and the claim
    /// anew at every execution, because a plan made for the actual array looks cheaper
    /// than the generic one; that planning took about 15 % of a task creation (see
    /// docs/benchmarks.md).
    pub fn connect_options(&self, application_name: &str) -> anyhow::Result<PgConnectOptions> {
        Ok(PgConnectOptions::from_str(self.url.expose())?.application_name(application_name).options([
            ("statement_timeout", format!("{}", self.statement_timeout.as_millis())),
            ("plan_cache_mode", "force_generic_plan".to_owned()),
        ]))
    }

    /// A pool that connects lazily: a service starts (and reports not-ready) even while
    /// the database is still coming up. Its idle connections give back the memory a
    /// burst made them take (see [`shrink_after_bursts`]). Needs a Tokio runtime.
    pub fn pool(&self, application_name: &str) -> anyhow::Result<PgPool> {
        let releases = Arc::new(AtomicU64::new(0));
        let counted = releases.clone();
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(Duration::from_secs(300))
            .after_release(move |_, _| {
                counted.fetch_add(1, Ordering::Relaxed);
                Box::pin(async { Ok(true) })
            })
            .connect_lazy_with(self.connect_options(application_name)?);
        tokio::spawn(shrink_after_bursts(pool.clone(), releases));
        Ok(pool)
    }
}

/// How long a pool must have been left alone before its idle connections are shrunk.
const SHRINK_AFTER: Duration = Duration::from_secs(5);

/// A connection's buffers grow to the largest message it has carried (a bulk insert, a
/// page of large payloads) and keep that size: about 1.7 MB per connection after mixed
/// load, so tens of MB resident across an idle pool of 20. Shrinking them on every
/// return to the pool would cost every request an allocation; instead, once a pool
/// that was used has been quiet for [`SHRINK_AFTER`], each idle connection is shrunk.
async fn shrink_after_bursts(pool: PgPool, releases: Arc<AtomicU64>) {
    let (mut last_seen, mut shrunk_at) = (0, 0);
    while !pool.is_closed() {
        tokio::time::sleep(SHRINK_AFTER).await;
        let seen = releases.load(Ordering::Relaxed);
        let busy = seen != last_seen;
        last_seen = seen;
        if busy || seen == shrunk_at {
            continue;
        }
        // Holding them all at once takes each idle connection exactly once. Their
        // returns count as releases: expected, not a new burst.
        let mut idle: Vec<_> = std::iter::from_fn(|| pool.try_acquire()).collect();
        idle.iter_mut().for_each(|conn| conn.shrink_buffers());
        shrunk_at = seen + idle.len() as u64;
        last_seen = shrunk_at;
    }
}

fn asks_for_tls(url: &str) -> bool {
    ["sslmode=require", "sslmode=verify-ca", "sslmode=verify-full"].iter().any(|m| url.contains(m))
}

fn redact(message: &str, url: &Secret) -> String {
    message.replace(url.expose(), "<url>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prod(url: &str) -> Result<(), crate::ConfigError> {
        let mut s = Source::from_vars([
            ("FLOWFORGE_PROFILE".to_owned(), "prod".to_owned()),
            ("FLOWFORGE_DATABASE_URL".to_owned(), url.to_owned()),
        ]);
        DatabaseSettings::from_source(&mut s, 4);
        s.finish()
    }

    #[test]
    fn outside_dev_a_network_url_must_ask_for_tls_and_a_local_socket_need_not() {
        assert!(prod("postgres://app:pw@db/flowforge").is_err());
        assert!(prod("postgres://app:pw@db/flowforge?sslmode=verify-full").is_ok());
        assert!(prod("postgres:///flowforge?host=/run/postgresql&user=postgres").is_ok());
    }
}
