use flowforge_api::accounts::{self, Role};
use flowforge_api::state::AppState;
use flowforge_api::{ApiSettings, Application};
use flowforge_platform::Source;
use flowforge_testkit::TestDb;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub base: String,
    pub db: TestDb,
    pub client: reqwest::Client,
    pub admin: String,
    /// The running api's state (shared with it).
    pub state: AppState,
    stop: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(&[]).await
    }

    /// Starts the api on port 0 with a fresh database, its own Redis key prefix, and
    /// `overrides` on top of the test defaults.
    pub async fn spawn_with(overrides: &[(&str, &str)]) -> TestApp {
        let db =
            TestDb::new(&[&flowforge_queue::MIGRATOR, &flowforge_accounts::MIGRATOR, &flowforge_webhooks::MIGRATOR])
                .await;
        let app = Application::build(settings(&db, overrides)).await.expect("api builds");
        let base = format!("http://{}", app.local_addr());
        let state = app.state().clone();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(app.run_until_stopped(async move { stopped.cancelled().await }));
        let mut test = TestApp { base, db, client: reqwest::Client::new(), admin: String::new(), state, stop };
        test.admin = test.token_for("admin", Role::Admin).await;
        test
    }

    /// Sends the shutdown signal (as SIGTERM would).
    pub fn begin_shutdown(&self) {
        self.stop.cancel();
    }

    /// A token for user `name` (created if needed).
    pub async fn token_for(&self, name: &str, role: Role) -> String {
        let user = accounts::ensure_user(&self.db.pool, name, role).await.unwrap();
        accounts::issue_token(&self.db.pool, user.id, "test", None).await.unwrap().token
    }

    pub async fn user(&self, name: &str) -> String {
        self.token_for(name, Role::User).await
    }

    pub fn request(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base)).bearer_auth(token)
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, token).send().await.unwrap()
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Response {
        self.request(Method::POST, path, token).json(body).send().await.unwrap()
    }

    pub async fn patch(&self, path: &str, token: &str, body: &Value) -> Response {
        self.request(Method::PATCH, path, token).json(body).send().await.unwrap()
    }

    /// Creates a task and returns its JSON.
    pub async fn create(&self, token: &str, body: &Value) -> Value {
        let r = self.post("/tasks", token, body).await;
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        r.json::<Value>().await.unwrap()["data"].clone()
    }

    pub async fn task_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM tasks").fetch_one(&self.db.pool).await.unwrap()
    }

    /// Sets a task's state directly, as a worker would have.
    pub async fn finish(&self, id: i64, status: &str) {
        sqlx::query(
            "UPDATE tasks SET status = $2::task_status, completed_at = now(), version = version + 1 WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .execute(&self.db.pool)
        .await
        .unwrap();
    }

    pub async fn metric(&self, name_and_labels: &str) -> f64 {
        let text = self.client.get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| l.starts_with(name_and_labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// Test settings for an api on `db`, with `overrides` on top.
pub fn settings(db: &TestDb, overrides: &[(&str, &str)]) -> ApiSettings {
    let prefix = format!("{}:", db.name);
    let mut vars: Vec<(String, String)> = vec![
        ("PROFILE".into(), "dev".into()),
        ("API_ADDR".into(), "127.0.0.1:0".into()),
        ("DATABASE_URL".into(), db.url.clone()),
        ("DATABASE_ACQUIRE_TIMEOUT".into(), "2s".into()),
        ("REDIS_URL".into(), flowforge_testkit::redis_url()),
        ("REDIS_KEY_PREFIX".into(), prefix),
        ("LOG".into(), "warn".into()),
    ];
    for (k, v) in overrides {
        vars.retain(|(key, _)| key != k);
        vars.push((k.to_string(), v.to_string()));
    }
    ApiSettings::from_source(Source::from_vars(vars.into_iter().map(|(k, v)| (format!("FLOWFORGE_{k}"), v))))
        .expect("test settings are valid")
}

/// Asserts a JSON error response: status, `success: false` and the error code.
pub async fn assert_error(r: Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status, "wrong status for expected {code}");
    let body: Value = r.json().await.expect("error bodies are JSON");
    assert_eq!(body["success"], Value::Bool(false), "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    body
}
