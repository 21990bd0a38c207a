//! Test support. `scripts/test.sh` starts a private PostgreSQL and Redis on free ports
//! and exports their URLs; each test then gets a database of its own here, so tests run
//! in parallel without seeing each other's rows.

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

const PG_VAR: &str = "FLOWFORGE_TEST_DATABASE_URL";
const REDIS_VAR: &str = "FLOWFORGE_TEST_REDIS_URL";

fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests through scripts/test.sh, which starts PostgreSQL and Redis for them")
    })
}

/// A database created for one test.
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    pub name: String,
}

impl TestDb {
    /// Creates an empty database and applies the given migrators in order.
    pub async fn new(migrators: &[&Migrator]) -> TestDb {
        let admin_url = env(PG_VAR);
        let name = format!("ff_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url).await.expect("connect to the test PostgreSQL server");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create test database");
        admin.close().await.ok();
        let options = PgConnectOptions::from_str(&admin_url).expect("test database URL").database(&name);
        let url = with_database(&admin_url, &name);
        let pool =
            PgPoolOptions::new().max_connections(20).connect_with(options).await.expect("connect to test database");
        for m in migrators {
            m.run(&pool).await.expect("migrations apply");
        }
        TestDb { pool, url, name }
    }
}

/// Records every transition into `completed` in `completion_log`, so a test can prove
/// each task's completion was recorded exactly once, whoever recorded it.
pub async fn install_completion_log(pool: &PgPool) {
    for sql in [
        "CREATE TABLE completion_log (task_id BIGINT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())",
        "CREATE FUNCTION log_completion() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.status = 'completed' AND OLD.status IS DISTINCT FROM 'completed' THEN
                 INSERT INTO completion_log (task_id) VALUES (NEW.id);
             END IF;
             RETURN NEW;
         END $$",
        "CREATE TRIGGER log_completion AFTER UPDATE OF status ON tasks FOR EACH ROW EXECUTE FUNCTION log_completion()",
    ] {
        sqlx::query(sql).execute(pool).await.expect("install completion log");
    }
}

/// Tasks whose completion was recorded more than once (must be empty), and how many
/// distinct tasks were completed.
pub async fn completion_counts(pool: &PgPool) -> (Vec<(i64, i64)>, i64) {
    let twice: Vec<(i64, i64)> =
        sqlx::query_as("SELECT task_id, count(*) FROM completion_log GROUP BY task_id HAVING count(*) > 1")
            .fetch_all(pool)
            .await
            .expect("read completion log");
    let distinct: i64 = sqlx::query_scalar("SELECT count(DISTINCT task_id) FROM completion_log")
        .fetch_one(pool)
        .await
        .expect("read completion log");
    (twice, distinct)
}

/// `url` with its database path replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..].find('/').map(|i| i + scheme_end).unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..host_end], db);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The shared test Redis (each test uses its own key prefix or logical database).
pub fn redis_url() -> String {
    env(REDIS_VAR)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind port 0").local_addr().expect("local addr").port()
}

/// A Redis server of a test's own, so the test can stop it and watch the system cope.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = free_port();
        Self::spawn(port, &["--port", &port.to_string()])
    }

    /// A server that speaks only TLS, with `identity`'s certificate (clients need no
    /// certificate of their own, as in the stack).
    pub fn start_tls(identity: &TlsFiles) -> RedisServer {
        let port = free_port();
        let path = |p: &Path| p.to_str().expect("UTF-8 temp path").to_owned();
        let (cert, key, ca) = (path(&identity.cert), path(&identity.key), path(&identity.ca));
        Self::spawn(
            port,
            &["--port", "0", "--tls-port", &port.to_string(), "--tls-cert-file", &cert, "--tls-key-file", &key]
                .into_iter()
                .chain(["--tls-ca-cert-file", &ca, "--tls-auth-clients", "no"])
                .collect::<Vec<_>>(),
        )
    }

    fn spawn(port: u16, listen: &[&str]) -> RedisServer {
        let binary = std::env::var("FLOWFORGE_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&binary)
            .args(listen)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer { port, child: Some(child) }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The `rediss://` URL of a [`RedisServer::start_tls`] server, by the name its
    /// certificate carries.
    pub fn tls_url(&self) -> String {
        format!("rediss://localhost:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private CA made for one test, with a certificate it signed for `localhost` and
/// 127.0.0.1, as PEM files in a directory of their own (removed on drop).
pub struct TlsFiles {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn new() -> TlsFiles {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let dir = std::env::temp_dir().join(format!("flowforge-test-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the certificate directory");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "FlowForge test CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("params");
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("server certificate");
        let files = TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem"), dir };
        for (path, pem) in [(&files.ca, ca.pem()), (&files.cert, cert.pem()), (&files.key, key.serialize_pem())] {
            std::fs::write(path, pem).expect("write a PEM file");
        }
        files
    }
}

impl Default for TlsFiles {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout` with
/// `what` in the message. Tests wait on observable state, never on fixed sleeps.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_database_keeping_query() {
        assert_eq!(
            super::with_database("postgres://u@127.0.0.1:5433/postgres?sslmode=disable", "t1"),
            "postgres://u@127.0.0.1:5433/t1?sslmode=disable"
        );
        assert_eq!(super::with_database("postgres://u@h:1", "t2"), "postgres://u@h:1/t2");
    }
}
