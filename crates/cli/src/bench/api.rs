//! `flowforge bench api`: the API under load, from the outside, as clients see it.
//!
//! 1. **closed loop** at rising concurrency: N connections, each sending its next request
//!    as soon as the last is answered, for each route: throughput and p50/p95/p99;
//! 2. **spike**: task creations at a steady rate, then ten times that rate for a while,
//!    then the steady rate again, arrivals on a clock (open loop: a slow answer does not
//!    slow the arrivals, so queueing shows in the latency);
//! 3. **breaking point**: open-loop creations at a rate rising step by step until answers
//!    fail or p99 passes a second.
//!
//! 429s are counted apart from errors: refusing politely under overload is the intended
//! behaviour. Every phase is a JSON line in `--out`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use flowforge_platform::config::HumanDuration;
use serde::Serialize;
use serde_json::{json, Value};

use super::append_json;
use super::stats::{ms, percentile};

#[derive(clap::Args, Debug)]
pub struct ApiArgs {
    /// The stack's base URL (the proxy), e.g. https://localhost:8443.
    #[arg(long)]
    url: String,
    /// File holding an API token (its user's rate limit applies).
    #[arg(long)]
    token_file: PathBuf,
    /// CA certificate (PEM) to trust for the URL, e.g. secrets/ca.pem.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Routes for the closed-loop phase: get (GET /tasks/{id}), create (POST /tasks),
    /// list (GET /tasks?limit=50).
    #[arg(long, value_delimiter = ',', default_value = "get,create,list")]
    routes: Vec<Route>,
    /// Connection counts of the closed-loop phase.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64,256")]
    connections: Vec<usize>,
    /// How long each closed-loop step lasts.
    #[arg(long, default_value = "15s")]
    duration: HumanDuration,
    /// Steady creation rate before and after the spike (requests/s); by default a tenth
    /// of the creations/s the closed loop reached at 64 connections.
    #[arg(long)]
    steady_rate: Option<f64>,
    #[arg(long, default_value = "30s")]
    spike: HumanDuration,
    /// Skip the spike and the breaking point.
    #[arg(long)]
    closed_loop_only: bool,
    /// Longest wait for one answer.
    #[arg(long, default_value = "10s")]
    timeout: HumanDuration,
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Route {
    Get,
    Create,
    List,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Get => "GET /tasks/{id}",
            Route::Create => "POST /tasks",
            Route::List => "GET /tasks?limit=50",
        }
    }
}

/// What the requests of one step came to.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    ok: u64,
    rate_limited: u64,
    errors: u64,
    error_kinds: std::collections::BTreeSet<String>,
}

impl Tally {
    fn add(&mut self, latency: Duration, outcome: Result<u16, String>) {
        self.latencies.push(latency);
        match outcome {
            Ok(s) if (200..300).contains(&s) => self.ok += 1,
            Ok(429) => self.rate_limited += 1,
            Ok(s) => {
                self.errors += 1;
                self.error_kinds.insert(format!("HTTP {s}"));
            }
            Err(e) => {
                self.errors += 1;
                self.error_kinds.insert(e);
            }
        }
    }
}

#[derive(Serialize)]
struct Step {
    bench: &'static str,
    phase: &'static str,
    route: &'static str,
    /// Closed loop: connections. Open loop: the target rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_rate: Option<f64>,
    seconds: f64,
    requests: u64,
    requests_per_sec: f64,
    ok: u64,
    rate_limited: u64,
    errors: u64,
    error_kinds: Vec<String>,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Step {
    fn of(phase: &'static str, route: Route, mut t: Tally, seconds: f64) -> Step {
        t.latencies.sort();
        let requests = t.latencies.len() as u64;
        Step {
            bench: "api",
            phase,
            route: route.label(),
            connections: None,
            target_rate: None,
            seconds: (seconds * 1000.0).round() / 1000.0,
            requests,
            requests_per_sec: (requests as f64 / seconds).round(),
            ok: t.ok,
            rate_limited: t.rate_limited,
            errors: t.errors,
            error_kinds: t.error_kinds.into_iter().collect(),
            p50_ms: ms(percentile(&t.latencies, 50.0)),
            p95_ms: ms(percentile(&t.latencies, 95.0)),
            p99_ms: ms(percentile(&t.latencies, 99.0)),
            max_ms: ms(t.latencies.last().copied().unwrap_or_default()),
        }
    }

    fn print(&self) {
        let at = match (self.connections, self.target_rate) {
            (Some(c), _) => format!("{c:>4} conn"),
            (_, Some(r)) => format!("{r:>6.0}/s"),
            _ => String::new(),
        };
        println!(
            "  {:<14} {:<20} {at:>10} {:>8.0} req/s  p50 {:>7.2}  p95 {:>7.2}  p99 {:>7.2} ms  429 {:>6}  errors {}{}",
            self.phase,
            self.route,
            self.requests_per_sec,
            self.p50_ms,
            self.p95_ms,
            self.p99_ms,
            self.rate_limited,
            self.errors,
            if self.error_kinds.is_empty() { String::new() } else { format!(" {:?}", self.error_kinds) }
        );
    }
}

/// Everything a request needs: a client, where to send, and ids of tasks to read.
#[derive(Clone)]
struct Target {
    base: String,
    token: Arc<str>,
    ids: Arc<[i64]>,
    next: Arc<AtomicU64>,
    tls: Option<reqwest::Certificate>,
    timeout: Duration,
}

impl Target {
    /// A client with its own connection: one per closed-loop connection, so the count is real.
    fn client(&self, max_connections: usize) -> anyhow::Result<reqwest::Client> {
        let mut builder =
            reqwest::Client::builder().timeout(self.timeout).pool_max_idle_per_host(max_connections).http1_only();
        if let Some(ca) = &self.tls {
            builder = builder.add_root_certificate(ca.clone());
        }
        Ok(builder.build()?)
    }

    async fn send(&self, client: &reqwest::Client, route: Route) -> Result<u16, String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let request = match route {
            Route::Get => client.get(format!("{}/tasks/{}", self.base, self.ids[n as usize % self.ids.len()])),
            Route::List => client.get(format!("{}/tasks?limit=50", self.base)),
            Route::Create => client
                .post(format!("{}/tasks", self.base))
                .json(&json!({ "title": format!("load {n}"), "kind": "noop", "payload": {} })),
        };
        match request.bearer_auth(&self.token).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                // Read the whole body: the answer is not in until it is.
                response.bytes().await.map(|_| status).map_err(|e| kind(&e))
            }
            Err(e) => Err(kind(&e)),
        }
    }
}

fn kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.connections.iter().all(|&c| c > 0), "--connections must be positive");
    let token = std::fs::read_to_string(&args.token_file).context("reading --token-file")?.trim().to_owned();
    let tls = match &args.ca_file {
        Some(path) => Some(reqwest::Certificate::from_pem(&std::fs::read(path).context("reading --ca-file")?)?),
        None => None,
    };
    let mut target = Target {
        base: args.url.trim_end_matches('/').to_owned(),
        token: token.into(),
        ids: Arc::from(Vec::new()),
        next: Arc::default(),
        tls,
        timeout: args.timeout.0,
    };
    target.ids = seed(&target).await?.into();
    println!("API load: {} (tasks to read: {})", target.base, target.ids.len());

    let mut create_at_64 = None;
    for &route in &args.routes {
        for &connections in &args.connections {
            let (tally, seconds) = closed_loop(&target, route, connections, args.duration.0).await?;
            let mut step = Step::of("closed-loop", route, tally, seconds);
            step.connections = Some(connections);
            step.print();
            if route == Route::Create && connections == 64 {
                create_at_64 = Some(step.requests_per_sec);
            }
            append_json(args.out.as_deref(), &step)?;
        }
    }
    if args.closed_loop_only {
        return Ok(());
    }

    let steady = match (args.steady_rate, create_at_64) {
        (Some(r), _) => r,
        (None, Some(max)) => (max / 10.0).max(1.0),
        (None, None) => anyhow::bail!("give --steady-rate, or include create and 64 connections in the closed loop"),
    };
    let quiet = Duration::from_secs(10);
    for (phase, rate, duration) in
        [("steady", steady, quiet), ("spike", steady * 10.0, args.spike.0), ("after", steady, quiet)]
    {
        let mut step = open_loop(&target, Route::Create, rate, duration).await?;
        step.phase = phase;
        step.print();
        append_json(args.out.as_deref(), &step)?;
    }

    // Breaking point: +50 % per 10 s step from twice the steady rate (the spike's rate may
    // already be past it), until errors or p99 > 1 s.
    let mut rate = steady * 2.0;
    let mut last_good = None;
    for _ in 0..12 {
        let mut step = open_loop(&target, Route::Create, rate, quiet).await?;
        step.phase = "breaking-point";
        step.print();
        append_json(args.out.as_deref(), &step)?;
        let broke = step.errors as f64 > step.requests as f64 * 0.01 || step.p99_ms > 1000.0;
        if broke {
            println!(
                "breaking point: {rate:.0} creations/s (p99 {:.0} ms, {} errors); last rate held: {}",
                step.p99_ms,
                step.errors,
                last_good.map_or("none".into(), |r: f64| format!("{r:.0}/s"))
            );
            return Ok(());
        }
        last_good = Some(rate);
        rate *= 1.5;
    }
    println!("no breaking point up to {rate:.0} creations/s");
    Ok(())
}

/// A hundred tasks to read, created through the API (waiting out a rate limit).
async fn seed(target: &Target) -> anyhow::Result<Vec<i64>> {
    let client = target.client(1)?;
    let mut ids = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(120);
    while ids.len() < 100 {
        let response = client
            .post(format!("{}/tasks", target.base))
            .bearer_auth(&target.token)
            .json(&json!({ "title": format!("read me {}", ids.len()), "kind": "noop", "payload": {} }))
            .send()
            .await?;
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS && Instant::now() < give_up {
            let wait = response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait)).await;
            continue;
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let id = body["data"]["id"].as_i64().with_context(|| format!("creating a task to read: {status} {body}"))?;
        ids.push(id);
    }
    Ok(ids)
}

async fn closed_loop(
    target: &Target,
    route: Route,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<(Tally, f64)> {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let deadline = started + duration;
    let mut users = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (target, tally, client) = (target.clone(), tally.clone(), target.client(1)?);
        users.push(tokio::spawn(async move {
            let mut mine = Tally::default();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let outcome = target.send(&client, route).await;
                mine.add(sent.elapsed(), outcome);
            }
            let mut all = tally.lock().expect("tally");
            all.latencies.extend(mine.latencies);
            all.ok += mine.ok;
            all.rate_limited += mine.rate_limited;
            all.errors += mine.errors;
            all.error_kinds.extend(mine.error_kinds);
        }));
    }
    for user in users {
        user.await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let tally = Arc::try_unwrap(tally).map_err(|_| anyhow::anyhow!("a user still holds the tally"))?;
    Ok((tally.into_inner().expect("tally"), seconds))
}

/// Requests at `rate` per second for `duration`, each sent on its tick whatever the
/// answers before it are doing; latency runs from the tick.
async fn open_loop(target: &Target, route: Route, rate: f64, duration: Duration) -> anyhow::Result<Step> {
    let client = target.client(1024)?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let mut requests = Vec::with_capacity(total as usize);
    for n in 0..total {
        let due = started + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let (target, tally, client) = (target.clone(), tally.clone(), client.clone());
        requests.push(tokio::spawn(async move {
            let outcome = target.send(&client, route).await;
            tally.lock().expect("tally").add(due.elapsed(), outcome);
        }));
    }
    for r in requests {
        r.await?;
    }
    let seconds = duration.as_secs_f64();
    let tally = Arc::try_unwrap(tally).map_err(|_| anyhow::anyhow!("a request still holds the tally"))?;
    let mut step = Step::of("open-loop", route, tally.into_inner().expect("tally"), seconds);
    step.target_rate = Some(rate);
    Ok(step)
}
