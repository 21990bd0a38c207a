//! `flowforge load`: steady client load against a running stack, for the chaos suite and
//! rolling updates. Every request is a task creation with its own Idempotency-Key; what
//! the API acknowledged is written out, so a test can check that nothing acknowledged was
//! lost. Outcomes are counted the way a client sees them.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use flowforge_platform::config::HumanDuration;
use serde_json::{json, Value};
use tokio::sync::Mutex;

#[derive(clap::Args)]
pub struct LoadArgs {
    /// The stack's base URL, e.g. https://localhost:8443.
    #[arg(long)]
    pub url: String,
    /// File holding an API token.
    #[arg(long)]
    pub token_file: PathBuf,
    /// CA certificate (PEM) to trust for the URL, e.g. secrets/ca.pem.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Task creations per second.
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
    /// How long to send for; SIGTERM or SIGINT ends the run sooner, with the summary.
    #[arg(long, default_value = "30s")]
    pub duration: HumanDuration,
    /// Kind of the tasks created.
    #[arg(long, default_value = "noop")]
    pub kind: String,
    /// Payload of the tasks created (JSON).
    #[arg(long, default_value = "{}")]
    pub payload: String,
    /// Longest wait for one answer.
    #[arg(long, default_value = "10s")]
    pub timeout: HumanDuration,
    /// Where to write the ids of the tasks the API acknowledged, one per line.
    #[arg(long)]
    pub ids_out: Option<PathBuf>,
}

#[derive(Default)]
struct Tally {
    created: Vec<i64>,
    /// 503 or 429 with Retry-After: the API said "not now" in time, as promised during
    /// outages (503) and when its writes are all busy (429).
    told_to_retry: u64,
    /// Anything else that was not a 201: other statuses, timeouts, connection errors.
    failed: u64,
    /// What went wrong, each kind once.
    failures: BTreeSet<String>,
    /// When the first and the last failed request were sent (seconds into the run): to
    /// line a burst up with what the test was doing then.
    failed_between: Option<(f64, f64)>,
    latencies_ms: Vec<f64>,
    /// When each 201 came (seconds into the run): the longest wait between two is how long
    /// writes stopped working (a database failover, say).
    acknowledged_s: Vec<f64>,
    /// When the last 201 came (seconds since the Unix epoch): what a restore must bring back
    /// for nothing acknowledged to be lost.
    last_acknowledged_at: Option<f64>,
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(&args.token_file).context("reading --token-file")?.trim().to_owned();
    let payload: Value = serde_json::from_str(&args.payload).context("--payload is not JSON")?;
    // Idle connections are dropped before the proxy's keep-alive (10 s, HAProxy's
    // `timeout http-request`) closes them: reusing one the proxy is closing at that moment
    // fails the request ("connection closed before message completed").
    let mut client = reqwest::Client::builder().timeout(args.timeout.0).pool_idle_timeout(Duration::from_secs(5));
    if let Some(ca) = &args.ca_file {
        let pem = std::fs::read(ca).context("reading --ca-file")?;
        client = client.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    let client = client.build()?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let started = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut requests = Vec::new();
    let mut n: u64 = 0;
    // Keys unique to this run: a replay of another run's key would be a 409.
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let mut stop = stop_signal()?;
    while started.elapsed() < args.duration.0 {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut stop => break,
        }
        n += 1;
        let (client, tally, token) = (client.clone(), tally.clone(), token.clone());
        let url = format!("{}/tasks", args.url.trim_end_matches('/'));
        let body = json!({ "title": format!("load {n}"), "kind": args.kind, "payload": payload });
        let key = format!("load-{run}-{n}");
        requests.push(tokio::spawn(async move {
            let sent = Instant::now();
            let at = started.elapsed().as_secs_f64();
            let answer = client.post(url).bearer_auth(token).header("Idempotency-Key", key).json(&body).send().await;
            let ms = sent.elapsed().as_secs_f64() * 1000.0;
            let mut t = tally.lock().await;
            t.latencies_ms.push(ms);
            match answer {
                Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                    match r.json::<Value>().await.ok().and_then(|v| v["data"]["id"].as_i64()) {
                        Some(id) => {
                            t.created.push(id);
                            t.acknowledged_s.push(started.elapsed().as_secs_f64());
                            t.last_acknowledged_at = Some(epoch_seconds());
                        }
                        None => t.fail("201 without a task id".into(), at),
                    }
                }
                Ok(r)
                    if matches!(
                        r.status(),
                        reqwest::StatusCode::SERVICE_UNAVAILABLE | reqwest::StatusCode::TOO_MANY_REQUESTS
                    ) && r.headers().contains_key("retry-after") =>
                {
                    t.told_to_retry += 1
                }
                Ok(r) => t.fail(r.status().to_string(), at),
                // The whole chain: reqwest's own line names the URL, not the cause.
                Err(e) if e.is_timeout() => t.fail("timeout".into(), at),
                Err(e) => t.fail(format!("{:#}", anyhow::Error::new(e)), at),
            }
        }));
    }
    for r in requests {
        r.await?;
    }
    let mut t = Arc::try_unwrap(tally).map_err(|_| anyhow::anyhow!("requests still running"))?.into_inner();
    if let Some(path) = &args.ids_out {
        let text: String = t.created.iter().map(|id| format!("{id}\n")).collect();
        std::fs::write(path, text).context("writing --ids-out")?;
    }
    t.latencies_ms.sort_by(f64::total_cmp);
    let gap = longest_gap(&mut t.acknowledged_s);
    let pct = |p: f64| t.latencies_ms.get(((t.latencies_ms.len() as f64 - 1.0) * p).round() as usize).copied();
    println!(
        "{}",
        json!({
            "sent": n,
            "created": t.created.len(),
            "told_to_retry": t.told_to_retry,
            "failed": t.failed,
            "failure_kinds": t.failures,
            "failed_between_s": t.failed_between.map(|(first, last)| [first, last]),
            "latency_ms": { "p50": pct(0.5), "p99": pct(0.99), "max": t.latencies_ms.last() },
            "seconds": started.elapsed().as_secs_f64(),
            "longest_write_gap": gap.map(|(from, seconds)| json!({ "from_s": from, "seconds": seconds })),
            "last_acknowledged_at": t.last_acknowledged_at,
        })
    );
    Ok(())
}

/// The longest time between two consecutive moments, and when it began.
fn longest_gap(moments: &mut [f64]) -> Option<(f64, f64)> {
    moments.sort_by(f64::total_cmp);
    moments.windows(2).map(|w| (w[0], w[1] - w[0])).max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Resolves at the first SIGTERM (`docker stop`) or SIGINT (Ctrl-C).
fn stop_signal() -> anyhow::Result<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    Ok(Box::pin(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }))
}

impl Tally {
    fn fail(&mut self, kind: String, at: f64) {
        self.failed += 1;
        self.failures.insert(kind);
        self.failed_between = Some(self.failed_between.map_or((at, at), |(first, last)| (first.min(at), last.max(at))));
    }
}

/// Now, in seconds since the Unix epoch (what PostgreSQL's `extract(epoch …)` gives).
fn epoch_seconds() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_longest_gap_is_found_whatever_the_order() {
        assert_eq!(super::longest_gap(&mut [3.0, 0.0, 1.0, 7.5, 8.0]), Some((3.0, 4.5)));
        assert_eq!(super::longest_gap(&mut [1.0]), None);
    }
}
