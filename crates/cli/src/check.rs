//! `flowforge check`: is a running stack healthy, end to end?

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Base URL of the stack (the proxy), e.g. https://localhost:8443.
    #[arg(long, env = "FLOWFORGE_URL", default_value = "https://localhost")]
    url: String,
    /// File holding an API token: enables the authenticated round trip (create a task, wait for a worker to complete it).
    #[arg(long, env = "FLOWFORGE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) to trust, for a self-signed deployment.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Skip TLS certificate verification (testing only).
    #[arg(long)]
    insecure: bool,
    /// How long to wait for the round-trip task to complete.
    #[arg(long, default_value = "30")]
    timeout_secs: u64,
}

struct Report {
    failures: usize,
}

impl Report {
    fn line(&mut self, ok: bool, what: &str, detail: impl std::fmt::Display) {
        if !ok {
            self.failures += 1;
        }
        println!("{} {what:<22} {detail}", if ok { "ok  " } else { "FAIL" });
    }
}

pub async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut builder =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).danger_accept_invalid_certs(args.insecure);
    if let Some(path) = &args.ca_cert {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(path)?)?);
    }
    let client = builder.build()?;
    let base = args.url.trim_end_matches('/');
    let mut report = Report { failures: 0 };

    match client.get(format!("{base}/health")).send().await {
        Ok(r) => {
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            report.line(status.is_success() && body["database"] == "connected", "health", body);
        }
        Err(e) => report.line(false, "health", e),
    }
    match client.get(format!("{base}/ready")).send().await {
        Ok(r) => report.line(r.status().is_success(), "ready", r.status()),
        Err(e) => report.line(false, "ready", e),
    }
    if let Some(path) = &args.token_file {
        let token = std::fs::read_to_string(path)?.trim().to_string();
        round_trip(&client, base, &token, Duration::from_secs(args.timeout_secs), &mut report).await;
    }
    Ok(if report.failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Creates a no-op task and waits until a worker has completed it.
async fn round_trip(client: &reqwest::Client, base: &str, token: &str, timeout: Duration, report: &mut Report) {
    let me = client.get(format!("{base}/api/v1/me")).bearer_auth(token).send().await;
    match me {
        Ok(r) if r.status().is_success() => {
            let body: Value = r.json().await.unwrap_or(Value::Null);
            report.line(true, "authenticated", format!("as {}", body["data"]["name"]));
        }
        Ok(r) => return report.line(false, "authenticated", r.status()),
        Err(e) => return report.line(false, "authenticated", e),
    }
    let started = Instant::now();
    let created = client
        .post(format!("{base}/tasks"))
        .bearer_auth(token)
        .json(&json!({"title": "flowforge check", "kind": "noop"}))
        .send()
        .await;
    let id = match created {
        Ok(r) if r.status().as_u16() == 201 => r.json::<Value>().await.ok().and_then(|b| b["data"]["id"].as_i64()),
        _ => None,
    };
    let Some(id) = id else { return report.line(false, "task created", "POST /tasks did not answer 201") };
    report.line(true, "task created", format!("id {id}"));
    while started.elapsed() < timeout {
        let status = match client.get(format!("{base}/tasks/{id}")).bearer_auth(token).send().await {
            Ok(r) => r.json::<Value>().await.ok().map(|b| b["data"]["status"].clone()),
            Err(_) => None,
        };
        if status.as_ref().and_then(Value::as_str) == Some("completed") {
            let _ = client.delete(format!("{base}/tasks/{id}")).bearer_auth(token).send().await;
            return report.line(true, "task completed", format!("in {} ms", started.elapsed().as_millis()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report.line(false, "task completed", format!("not within {timeout:?}: are workers running?"));
}
