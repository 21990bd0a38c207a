//! What an operator watches: Prometheus and its targets, every dashboard panel and alert
//! rule, an alert delivered end to end; the web UI in a real browser; the footprint of
//! the services and the API load command.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Instant;

use serde_json::{json, Value};

use crate::harness::{rss_mb, run, set_mode, wait_for, Checks, Stack};
use crate::Scenario;

pub const SCENARIOS: &[(&str, Scenario)] = &[
    ("observability::prometheus", prometheus),
    ("observability::browser", browser),
    ("observability::alert_rules", alert_rules),
    ("observability::dashboards", dashboards),
    ("observability::alert_delivery", alert_delivery),
    ("observability::footprint", footprint),
    ("observability::api_load", api_load),
];

fn prometheus(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let unauthenticated = stack.client().get(format!("{}/prometheus/graph", stack.base)).send()?.status().as_u16();
    checks.check(format!("Prometheus asks for the operator password ({unauthenticated})"), unauthenticated == 401);
    let id = stack.create_task(&json!({"title": "counted", "kind": "echo", "payload": {"n": 1}}))?;
    let counted = wait_for(30, || stack.task_field(id, "status") == "completed")
        && wait_for(30, || {
            stack.promql(r#"sum(tasks_completed_total{kind="echo"})"#).parse::<f64>().is_ok_and(|n| n >= 1.0)
        });
    checks.check(r#"Prometheus shows the completed task (tasks_completed_total{kind="echo"} ≥ 1)"#, counted);
    let mut up = (String::new(), String::new());
    let all_up = wait_for(30, || {
        up = (stack.promql("count(up == 1)"), stack.promql("count(up)"));
        up.0 == up.1 && up.1.parse::<u32>().is_ok_and(|n| n >= 10)
    });
    checks.check(format!("Prometheus scrapes every target: {} of {} up", up.0, up.1), all_up);
    Ok(())
}

/// The web UI in headless Chromium, through the proxy. Screenshots of every main screen
/// stay in artifacts/e2e/ as CI artifacts.
fn browser(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let artifacts = std::env::current_dir()?.join("artifacts/e2e");
    let out = Command::new("tests/e2e/run.sh")
        .env("FLOWFORGE_E2E_URL", &stack.base)
        .env("FLOWFORGE_E2E_TOKEN", stack.token())
        .env("FLOWFORGE_E2E_ARTIFACTS", &artifacts)
        .output()?;
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    print!("{log}");
    let summary = log.lines().rev().find_map(|l| {
        let words: Vec<&str> = l.strip_prefix("e2e: ")?.split_whitespace().collect();
        Some((words.first()?.parse::<u32>().ok()?, words.get(2)?.parse::<u32>().ok()?))
    });
    let (passed, failed) = summary.unwrap_or((0, 1));
    // scripts/test.sh adds this line to the run's totals.
    println!("browser: {passed} passed, {failed} failed");
    checks.check(
        format!("browser tests through the proxy: {passed} passed, {failed} failed"),
        failed == 0 && passed >= 10,
    );
    let screenshots = std::fs::read_dir(&artifacts)
        .map(|d| d.filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|x| x == "png")).count())
        .unwrap_or(0);
    checks.check(format!("screenshots saved as artifacts ({screenshots} in artifacts/e2e)"), screenshots >= 5);
    Ok(())
}

/// The names of the alerts the rules define.
fn alert_names() -> anyhow::Result<Vec<String>> {
    let mut names = vec![];
    for entry in std::fs::read_dir("deploy/images/prometheus/rules")? {
        let text = std::fs::read_to_string(entry?.path())?;
        names.extend(
            text.lines()
                .filter_map(|l| l.trim().strip_prefix("- alert: ").or(l.trim().strip_prefix("alert: ")))
                .map(str::to_owned),
        );
    }
    Ok(names)
}

/// promtool from the Prometheus image's build stage runs deploy/images/prometheus/tests;
/// every alert in the rules must appear there.
fn alert_rules(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let image = format!("{}-promtool:latest", stack.project);
    stack.stack(["docker-build", "-q", "--target", "pkg", "-t", &image, "deploy/images/prometheus"])?;
    let mount = format!("{}/deploy/images/prometheus:/p:ro", std::env::current_dir()?.display());
    let tested = run(
        "docker",
        [
            "run",
            "--rm",
            "-v",
            &mount,
            "-w",
            "/p/tests",
            "--entrypoint",
            "promtool",
            &image,
            "test",
            "rules",
            "alerts.test.yml",
        ],
    );
    if let Err(e) = &tested {
        println!("     {e:#}");
    }
    let tests = std::fs::read_to_string("deploy/images/prometheus/tests/alerts.test.yml")?;
    let names = alert_names()?;
    let untested: Vec<&String> =
        names.iter().filter(|a| !tests.lines().any(|l| l.trim() == format!("alertname: {a}"))).collect();
    checks.check(
        format!("all {} alert rules pass their promtool unit tests (untested: {untested:?})", names.len()),
        tested.is_ok() && untested.is_empty() && !names.is_empty(),
    );
    Ok(())
}

/// A task that fails once, is retried, fails again and is dead-lettered; a completed task
/// read twice (the second read is a cache hit): the series the queue and cache panels show.
fn dashboards(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    stack
        .create_task(&json!({"title": "doomed", "kind": "fail", "max_attempts": 2, "payload": {"message": "drill"}}))?;
    let id = stack.create_task(&json!({"title": "read twice", "kind": "noop"}))?;
    wait_for(30, || stack.task_field(id, "status") == "completed");
    stack.get(&format!("/tasks/{id}"))?;
    stack.get(&format!("/tasks/{id}"))?;
    let queries = run("python3", ["deploy/grafana/generate.py", "--check", "--queries"])?;
    let panels: Vec<(String, String, String)> = queries
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            Some((f.next()?.to_owned(), f.next()?.to_owned(), f.next()?.to_owned()))
        })
        .collect();
    let mut empty = vec![];
    let all = wait_for(90, || {
        empty = panels
            .iter()
            .filter(|(_, _, expr)| stack.promql(expr).is_empty())
            .map(|(u, t, _)| format!("{u}: {t}"))
            .collect();
        empty.is_empty()
    });
    checks.check(
        format!("all {} dashboard panel queries return series (empty: {empty:?})", panels.len()),
        all && !panels.is_empty(),
    );
    Ok(())
}

/// What the stack's receiver got, as "status alertname" (curl from the proxy, which
/// shares the monitoring network with it).
fn notifications(stack: &Stack) -> BTreeSet<String> {
    let Ok(proxy) = stack.container("proxy", 1) else { return BTreeSet::new() };
    let Ok(body) =
        run("docker", ["exec", &proxy, "curl", "-s", "--max-time", "5", "http://alert-receiver:9095/alerts"])
    else {
        return BTreeSet::new();
    };
    let notifications: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let empty = vec![];
    notifications
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
        .map(|a| format!("{} {}", a["status"].as_str().unwrap_or(""), a["labels"]["alertname"].as_str().unwrap_or("")))
        .collect()
}

/// Workers stopped, a backlog forms, the (shortened) QueueBacklog alert reaches the
/// receiver through Alertmanager; workers back, the resolution does too.
fn alert_delivery(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    stack.compose(["stop", "worker"])?;
    let outcome = (|| -> anyhow::Result<()> {
        for i in 1..=10 {
            stack.create_task(&json!({"title": format!("backlog {i}"), "kind": "noop"}))?;
        }
        let started = Instant::now();
        let fired = wait_for(120, || notifications(stack).contains("firing QueueBacklog"));
        checks.check("workers stopped, 10 tasks waiting: QueueBacklog reached the receiver", fired);
        println!("     notified {} s after the backlog formed", started.elapsed().as_secs());
        Ok(())
    })();
    stack.compose(["start", "worker"])?;
    outcome?;
    let started = Instant::now();
    let resolved = wait_for(180, || notifications(stack).contains("resolved QueueBacklog"));
    checks.check("workers started: the resolution reached the receiver", resolved);
    println!("     resolved {} s after the workers came back", started.elapsed().as_secs());
    Ok(())
}

fn footprint(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let mut figures = vec![];
    let mut small = true;
    for service in ["api", "worker"] {
        for n in 1..=2 {
            let mb = rss_mb(&stack.container(service, n)?)?;
            figures.push(format!("{service}-{n} {mb:.1} MB"));
            small &= mb < 30.0;
        }
    }
    checks.check(format!("resident memory of the api and worker processes under 30 MB: {}", figures.join(", ")), small);
    Ok(())
}

/// `flowforge bench api` from the CLI image, through the proxy, as its own user (so its
/// requests count against a rate limit of their own).
fn api_load(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let name = format!("loadtest{}", std::process::id());
    let user = stack.post("/api/v1/users", &json!({"name": name}))?;
    let token = user.body["data"]["token"]["token"].as_str().unwrap_or_default().to_owned();
    let token_file = stack.work.join("loadtest-token");
    std::fs::write(&token_file, token)?;
    set_mode(&token_file, 0o644)?;
    // The bench appends to --out: a file left by an earlier run would double the steps.
    let out_file = stack.work.join("api.jsonl");
    if out_file.exists() {
        std::fs::remove_file(&out_file)?;
    }
    let mut args = stack.cli_client();
    args.extend(
        [
            "bench",
            "api",
            "--url",
            &stack.base,
            "--token-file",
            "/load/loadtest-token",
            "--ca-file",
            "/load/ca.pem",
            "--routes",
            "get,create,list",
            "--connections",
            "1,4",
            "--duration",
            "2s",
            "--closed-loop-only",
            "--out",
            "/load/api.jsonl",
        ]
        .map(str::to_owned),
    );
    let out = run("docker", args);
    match &out {
        Ok(text) => text.lines().for_each(|l| println!("     {l}")),
        Err(e) => println!("     {e:#}"),
    }
    let steps: Vec<Value> = std::fs::read_to_string(&out_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let routes: BTreeSet<&str> = steps.iter().filter_map(|s| s["route"].as_str()).collect();
    let expected: BTreeSet<&str> = ["GET /tasks/{id}", "POST /tasks", "GET /tasks?limit=50"].into();
    // The user's rate limit (1200/min) may answer some with 429, counted apart from errors.
    let n = |s: &Value, k: &str| s[k].as_u64().unwrap_or(0);
    let clean = steps
        .iter()
        .all(|s| n(s, "errors") == 0 && n(s, "requests") > 0 && n(s, "ok") + n(s, "rate_limited") == n(s, "requests"));
    let measured = steps.first().is_some_and(|s| n(s, "ok") > 0 && s["p99_ms"].as_f64().is_some_and(|p| p > 0.0));
    checks.check(
        "flowforge bench api: 3 routes at 1 and 4 connections through the proxy, no errors",
        out.is_ok() && routes == expected && steps.len() == 6 && clean && measured,
    );
    Ok(())
}
