//! The `webhook` handler through a real queue `Worker` on a real PostgreSQL, delivering
//! to a local receiver that records what it gets and answers from a script.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use flowforge_platform::Secret;
use flowforge_queue::{Backoff, NewTask, Queue, QueueMetrics, Task, TaskStatus, Worker, WorkerConfig};
use flowforge_testkit::{eventually, free_port, TestDb};
use flowforge_webhooks::{verify, Delivery, DeploymentKeySettings, SecretStore, SigningSecret, VerifyError};
use flowforge_worker::{registry, HandlerSettings, WebhookSettings};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// The owners of the tasks below: alice has a secret, bob another, carol none.
const ALICE: i64 = 1;
const BOB: i64 = 2;
const CAROL: i64 = 3;

struct Received {
    method: Method,
    headers: HeaderMap,
    body: Bytes,
}

/// Answers each request with the next scripted reply (status, delay); 200 once the
/// script is used up.
#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<(u16, Duration)>>>,
}

impl Receiver {
    async fn start(script: &[(u16, Duration)]) -> (Receiver, SocketAddr) {
        let receiver =
            Receiver { script: Arc::new(Mutex::new(script.iter().copied().collect())), ..Default::default() };
        let app = axum::Router::new().route("/hook", axum::routing::any(receive)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, addr)
    }

    fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

async fn receive(State(r): State<Receiver>, method: Method, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    r.received.lock().unwrap().push(Received { method, headers, body });
    let (status, delay) = r.script.lock().unwrap().pop_front().unwrap_or((200, Duration::ZERO));
    tokio::time::sleep(delay).await;
    (StatusCode::from_u16(status).unwrap(), "received".into())
}

fn ok(status: u16) -> (u16, Duration) {
    (status, Duration::ZERO)
}

struct Setup {
    _db: TestDb,
    queue: Queue,
    secrets: SecretStore,
    alice: SigningSecret,
    bob: SigningSecret,
    stop: CancellationToken,
    worker: tokio::task::JoinHandle<()>,
}

impl Setup {
    async fn new(allow_private: bool) -> Setup {
        let db = TestDb::new(&[&flowforge_queue::MIGRATOR, &flowforge_webhooks::MIGRATOR]).await;
        let queue = Queue::new(db.pool.clone());
        let webhook = WebhookSettings {
            secrets_keys: DeploymentKeySettings { current: Secret::new("deployment-key"), previous: None },
            timeout: Duration::from_millis(500),
            allow_private,
            allowed_ports: None,
        };
        let secrets = SecretStore::new(db.pool.clone(), webhook.deployment_keys());
        let (alice, _) = secrets.rotate(ALICE, Duration::ZERO).await.unwrap();
        let (bob, _) = secrets.rotate(BOB, Duration::ZERO).await.unwrap();
        let handlers = registry(&HandlerSettings { webhook, chaos_handlers: false }, db.pool.clone());
        let config = WorkerConfig {
            id: "webhook-test".into(),
            poll_interval: Duration::from_millis(100),
            rescue_interval: Duration::from_millis(200),
            backoff: Backoff { base: Duration::from_millis(20), max: Duration::from_millis(100) },
            retention: None,
            ..WorkerConfig::default()
        };
        let stop = CancellationToken::new();
        let worker = Worker::new(queue.clone(), handlers, config, QueueMetrics::unregistered());
        let worker = tokio::spawn(worker.run(stop.clone()));
        Setup { _db: db, queue, secrets, alice, bob, stop, worker }
    }

    /// A webhook task of alice's.
    async fn enqueue(&self, payload: Value, max_attempts: i32) -> i64 {
        self.enqueue_for(ALICE, payload, max_attempts).await
    }

    async fn enqueue_for(&self, owner: i64, payload: Value, max_attempts: i32) -> i64 {
        let mut task = NewTask::new("webhook", payload);
        task.owner_id = Some(owner);
        task.max_attempts = max_attempts;
        task.request_id = Some("req-123".into());
        self.queue.enqueue(&[task]).await.unwrap()[0].id
    }

    /// The task once it reached `status`.
    async fn finished(&self, id: i64, status: TaskStatus) -> Task {
        eventually(Duration::from_secs(15), &format!("task {id} to be {status:?}"), || async {
            self.queue.get(id).await.unwrap().filter(|t| t.status == status)
        })
        .await
    }

    async fn shutdown(self) {
        self.stop.cancel();
        self.worker.await.unwrap();
    }
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers.get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().unwrap()
}

/// What a Standard Webhooks receiver holding `secret` makes of the request, at `now`.
fn receiver_verdict(r: &Received, secret: &SigningSecret, now: i64) -> Result<(), VerifyError> {
    let delivery = Delivery {
        id: header(r, "webhook-id"),
        timestamp: header(r, "webhook-timestamp").parse().unwrap(),
        body: &r.body,
    };
    verify(secret, &delivery, header(r, "webhook-signature"), now, 300)
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test]
async fn delivers_a_request_signed_with_the_owners_secret_only() {
    let (receiver, addr) = Receiver::start(&[]).await;
    let setup = Setup::new(true).await;
    let payload = json!({
        "url": format!("http://{addr}/hook"),
        "method": "PUT",
        "body": {"order": 42},
        "headers": {"X-Custom": "yes", "X-FlowForge-Task-Id": "forged", "webhook-id": "forged"},
    });
    let id = setup.enqueue(payload, 3).await;
    let task = setup.finished(id, TaskStatus::Completed).await;
    let (alice, bob) = (setup.alice.clone(), setup.bob.clone());
    setup.shutdown().await;

    assert_eq!(task.result, Some(json!({"status": 200, "body": "received"})));
    let received = receiver.received.lock().unwrap();
    assert_eq!(received.len(), 1);
    let r = &received[0];
    assert_eq!(r.method, Method::PUT);
    assert_eq!(serde_json::from_slice::<Value>(&r.body).unwrap(), json!({"order": 42}));
    assert_eq!(header(r, "content-type"), "application/json");
    assert!(header(r, "webhook-id").starts_with(&format!("msg_{id}_1_")), "{}", header(r, "webhook-id"));
    assert_eq!(header(r, "x-flowforge-task-id"), id.to_string(), "a payload header overrode the task id");
    assert_eq!(header(r, "x-flowforge-attempt"), "1");
    assert_eq!(header(r, "x-request-id"), "req-123");
    assert_eq!(header(r, "x-custom"), "yes");
    let timestamp: i64 = header(r, "webhook-timestamp").parse().unwrap();
    assert!((now() - timestamp).abs() < 60, "timestamp {timestamp} is not now");
    assert_eq!(header(r, "webhook-signature").split(' ').count(), 1, "one secret, one signature");
    assert_eq!(receiver_verdict(r, &alice, now()), Ok(()));
    // Alice aimed her task at bob's receiver: it does not verify with bob's secret.
    assert_eq!(receiver_verdict(r, &bob, now()), Err(VerifyError::NoMatch));
    // A captured delivery replayed under another id, or another time, does not verify.
    let signed = |id: &str, timestamp: i64| {
        let d = Delivery { id, timestamp, body: &r.body };
        verify(&alice, &d, header(r, "webhook-signature"), now(), 300)
    };
    assert_eq!(signed(&format!("msg_{id}_2_0000000000000000"), timestamp), Err(VerifyError::NoMatch));
    assert_eq!(signed(header(r, "webhook-id"), timestamp + 1), Err(VerifyError::NoMatch));
    assert_eq!(receiver_verdict(r, &alice, now() + 3600), Err(VerifyError::Stale(300)));
}

#[tokio::test]
async fn during_a_rotation_both_secrets_sign_and_every_attempt_has_its_own_id() {
    let (receiver, addr) = Receiver::start(&[ok(500), ok(200)]).await;
    let setup = Setup::new(true).await;
    let (new_secret, listed) = setup.secrets.rotate(ALICE, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(listed.len(), 2);
    let id = setup.enqueue(json!({"url": format!("http://{addr}/hook"), "body": {"order": 42}}), 3).await;
    setup.finished(id, TaskStatus::Completed).await;
    let (alice, bob) = (setup.alice.clone(), setup.bob.clone());
    setup.shutdown().await;

    let received = receiver.received.lock().unwrap();
    assert_eq!(received.len(), 2, "a retried delivery is signed the same way");
    for r in received.iter() {
        assert_eq!(header(r, "webhook-signature").split(' ').count(), 2);
        assert_eq!(receiver_verdict(r, &new_secret, now()), Ok(()), "a receiver with the new secret refused");
        assert_eq!(receiver_verdict(r, &alice, now()), Ok(()), "a receiver with the old secret refused");
        assert_eq!(receiver_verdict(r, &bob, now()), Err(VerifyError::NoMatch));
    }
    assert_ne!(header(&received[0], "webhook-id"), header(&received[1], "webhook-id"));
    assert!(header(&received[1], "webhook-id").starts_with(&format!("msg_{id}_2_")));
}

#[tokio::test]
async fn an_owner_without_a_secret_is_told_how_to_get_one_and_nothing_is_sent() {
    let (receiver, addr) = Receiver::start(&[]).await;
    let setup = Setup::new(true).await;
    let id = setup.enqueue_for(CAROL, json!({"url": format!("http://{addr}/hook")}), 5).await;
    let task = setup.finished(id, TaskStatus::Failed).await;
    setup.shutdown().await;
    assert_eq!(task.attempts, 1);
    assert!(task.last_error.as_deref().unwrap().contains("POST /api/v1/webhook-secrets"), "{:?}", task.last_error);
    assert_eq!(receiver.count(), 0);
}

#[tokio::test]
async fn server_errors_are_retried_until_the_receiver_accepts() {
    let (receiver, addr) = Receiver::start(&[ok(500), ok(500), ok(200)]).await;
    let setup = Setup::new(true).await;
    let id = setup.enqueue(json!({"url": format!("http://{addr}/hook")}), 5).await;
    let task = setup.finished(id, TaskStatus::Completed).await;
    setup.shutdown().await;

    assert_eq!(task.attempts, 3);
    let errors = task.errors.as_array().unwrap();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().all(|e| e["error"].as_str().unwrap().contains("500")), "{errors:?}");
    let received = receiver.received.lock().unwrap();
    let attempts: Vec<&str> = received.iter().map(|r| header(r, "x-flowforge-attempt")).collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    // The default body is null, sent (and signed) as JSON.
    assert_eq!(&received[0].body[..], b"null");
}

#[tokio::test]
async fn a_slow_receiver_times_out_and_is_retried() {
    let (receiver, addr) = Receiver::start(&[(200, Duration::from_secs(3))]).await;
    let setup = Setup::new(true).await;
    let id = setup.enqueue(json!({"url": format!("http://{addr}/hook")}), 3).await;
    let task = setup.finished(id, TaskStatus::Completed).await;
    setup.shutdown().await;

    assert_eq!(task.attempts, 2);
    assert!(task.last_error.as_deref().unwrap().contains("webhook request failed"), "{:?}", task.last_error);
    assert_eq!(receiver.count(), 2);
}

#[tokio::test]
async fn a_client_error_fails_at_once() {
    let (receiver, addr) = Receiver::start(&[ok(400)]).await;
    let setup = Setup::new(true).await;
    let id = setup.enqueue(json!({"url": format!("http://{addr}/hook")}), 5).await;
    let task = setup.finished(id, TaskStatus::Failed).await;
    setup.shutdown().await;

    assert_eq!(task.attempts, 1);
    assert!(task.last_error.as_deref().unwrap().contains("400 Bad Request"), "{:?}", task.last_error);
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn an_unreachable_receiver_is_retried_until_attempts_run_out() {
    let setup = Setup::new(true).await;
    let id = setup.enqueue(json!({"url": format!("http://127.0.0.1:{}/hook", free_port())}), 2).await;
    let task = setup.finished(id, TaskStatus::Failed).await;
    setup.shutdown().await;

    assert_eq!(task.attempts, 2);
    assert!(task.last_error.as_deref().unwrap().contains("webhook request failed"), "{:?}", task.last_error);
}

#[tokio::test]
async fn a_non_http_url_fails_at_once() {
    let setup = Setup::new(true).await;
    let id = setup.enqueue(json!({"url": "ftp://127.0.0.1/hook"}), 5).await;
    let task = setup.finished(id, TaskStatus::Failed).await;
    setup.shutdown().await;

    assert_eq!(task.attempts, 1);
    assert!(task.last_error.as_deref().unwrap().contains("http or https"), "{:?}", task.last_error);
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let (receiver, addr) = Receiver::start(&[]).await;
    let setup = Setup::new(false).await;
    for url in [format!("http://{addr}/hook"), format!("http://localhost:{}/hook", addr.port())] {
        let id = setup.enqueue(json!({ "url": url }), 5).await;
        let task = setup.finished(id, TaskStatus::Failed).await;
        assert_eq!(task.attempts, 1, "{url}");
        assert!(task.last_error.as_deref().unwrap().contains("not a public address"), "{url}: {:?}", task.last_error);
    }
    setup.shutdown().await;
    assert_eq!(receiver.count(), 0, "a refused webhook reached the receiver");
}
