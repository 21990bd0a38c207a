//! Chaos: each scenario breaks the stack on purpose while `flowforge load` creates tasks
//! through the proxy, then reports what a client and an operator would count:
//!   lost             acknowledged (201) by the API, never completed;
//!   completed twice  a completion recorded more than once for one task (counted by the
//!                    trigger `flowforge drill counter install` adds: every transition into
//!                    `completed`);
//!   ran again        completed on a later attempt, because the worker running it died
//!                    (at-least-once execution; not an error, but a number to know);
//!   failed           requests answered with anything but 201 or, where the scenario allows
//!                    it, 503 or 429 with Retry-After; timeouts (10 s) count as failed;
//!   recovered        how long until the stack served (or finished the work) again.
//! `flowforge drill verdict` counts the first four; every wait here is bounded.
//!
//! Each scenario stands alone on a running stack, and one that stops a service starts it
//! again before anything can end the scenario early.

use std::hash::BuildHasher;
use std::time::Instant;

use anyhow::Context;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{inspect, kill9, since, sleep, wait_for, Checks, LoadRun, Stack};
use crate::Scenario;

pub const SCENARIOS: &[(&str, Scenario)] = &[
    ("chaos::worker_kill", worker_kill),
    ("chaos::api_kill", api_kill),
    ("chaos::retry_rule", retry_rule),
    ("chaos::postgres_outage", postgres_outage),
    ("chaos::terminated_connections", terminated_connections),
    ("chaos::pool_exhaustion", pool_exhaustion),
    ("chaos::redis_outage", redis_outage),
    ("chaos::handler_failures", handler_failures),
];

/// kill -9 a worker mid-task, repeatedly, while tasks flow. Tasks take 1 s, so each worker
/// always holds several; its leases expire (15 s) and the rescue gives them to another
/// worker: those are the tasks that "ran again".
fn worker_kill(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    stack.install_completion_counter()?;
    let load = stack.load("workers", 45, 12, "sleep", r#"{"duration_ms": 1000}"#);
    let before = stack.restarts(&["worker"]);
    let mut kills = 0;
    let mut last_kill = epoch_now();
    for _ in 0..5 {
        sleep(7.0);
        // Either of the two workers, at random.
        let n = 1 + (std::collections::hash_map::RandomState::new().hash_one(kills) % 2) as usize;
        if stack.container("worker", n).is_ok_and(|c| kill9(&c)) {
            kills += 1;
        }
        last_kill = epoch_now();
    }
    let run = load.join()?;
    checks.check(format!("chaos: 5 kills of a worker under load ({kills} done)"), kills == 5);
    // The verdict waits (bounded) for every task; the last completion ends the recovery.
    let recovered = |verdict: &Value| match verdict["last_completed_at"].as_f64() {
        Some(at) if verdict["lost"] == 0 => format!("every task completed {:.1} s after the last kill", at - last_kill),
        _ => "not every task completed".to_owned(),
    };
    let verdict = judge(stack, checks, &run, &format!("kill -9 of a worker x{kills}"), &recovered, false)?;
    let ran_again = number(&verdict, "ran_again");
    checks.check(
        format!("chaos: the kills caught tasks mid-run ({} rescued and run again)", shown(ran_again)),
        ran_again.is_some_and(|n| n >= kills),
    );
    checks.check(
        "chaos: the killed workers restarted by themselves",
        wait_for(60, || stack.restarts(&["worker"]) == before + kills as u64),
    );
    Ok(())
}

/// kill -9 each api replica in turn under load: the proxy sends to the other one, and the
/// killed one comes back healthy by itself.
fn api_kill(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    stack.install_completion_counter()?;
    let load = stack.load("api", 30, 12, "noop", "{}");
    let mut back_in = Vec::new();
    // "" when missing: the kill then fails and the check below says so.
    let replicas: Vec<String> = (1..=2).map(|n| stack.container("api", n).unwrap_or_default()).collect();
    for victim in &replicas {
        sleep(6.0);
        let before = inspect(victim, "{{.RestartCount}}").ok().and_then(|n| n.parse::<u64>().ok());
        let killed = Instant::now();
        if !kill9(victim) {
            continue;
        }
        let healthy_again = || {
            let state = inspect(victim, "{{.State.Health.Status}} {{.RestartCount}}").unwrap_or_default();
            before.is_some_and(|b| state == format!("healthy {}", b + 1))
        };
        if wait_for(60, healthy_again) {
            back_in.push(format!("{} s", since(killed)));
        }
    }
    let run = load.join()?;
    let recovery = format!("replicas healthy again after {}", back_in.join(" "));
    judge(stack, checks, &run, "kill -9 of each api replica", &|_| recovery.to_string(), false)?;
    checks.check(
        "chaos: both api replicas, killed in turn, came back by themselves",
        back_in.len() == 2 && replicas[0] != replicas[1],
    );
    Ok(())
}

/// What the proxy does with requests a replica held when it died. It cannot know whether
/// a change went through, so it answers 502 rather than send it again (a plain `POST`
/// retried elsewhere could create the task twice); a read is repeated on the other
/// replica. The requests are held in the replicas by a lock on `tasks` (6 s, under every
/// timeout on the way) while one replica is killed; the database says which requests
/// that replica held, so the checks below cannot pass for want of any.
fn retry_rule(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    const EACH: usize = 12;
    let victim = stack.container("api", 1)?;
    let before = inspect(&victim, "{{.RestartCount}}")?.parse::<u64>()?;
    let data = format!("{}_data", stack.project);
    let victim_ip =
        inspect(&victim, "{{range $name, $n := .NetworkSettings.Networks}}{{$name}}={{$n.IPAddress}} {{end}}")?
            .split_whitespace()
            .find_map(|n| n.strip_prefix(&format!("{data}=")).map(str::to_owned))
            .context("the replica's address on the data network")?;
    let run = format!("{:x}", std::hash::RandomState::new().hash_one(Instant::now()));
    let title = |i: usize| format!("retry rule {run} {i}");
    let (posts, reads, held) = std::thread::scope(|s| {
        let lock =
            s.spawn(|| stack.psql("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(6); COMMIT"));
        sleep(1.5);
        let mut posts = Vec::new();
        let mut reads = Vec::new();
        for i in 0..EACH {
            let body = json!({"title": title(i), "kind": "noop"});
            posts.push(s.spawn(move || stack.post("/tasks", &body).map(|r| r.status).unwrap_or(0)));
            reads.push(s.spawn(|| stack.get("/tasks?limit=1").map(|r| r.status).unwrap_or(0)));
        }
        sleep(1.5);
        // What the victim holds, waiting for the lock: creations (in batches) and reads.
        let held = stack.psql(&format!(
            "SELECT count(*) FILTER (WHERE query LIKE 'INSERT INTO tasks%'), count(*) FILTER (WHERE query LIKE 'SELECT%')
             FROM pg_stat_activity WHERE client_addr = '{victim_ip}' AND wait_event_type = 'Lock'"
        ));
        kill9(&victim);
        let _ = lock.join();
        let join = |v: Vec<std::thread::ScopedJoinHandle<'_, u16>>| -> Vec<u16> {
            v.into_iter().map(|h| h.join().unwrap_or(0)).collect()
        };
        (join(posts), join(reads), held)
    });
    let held = held.unwrap_or_default();
    let (batches, held_reads) = held.trim().split_once('|').unwrap_or(("0", "0"));
    let mut created = Vec::new();
    for i in 0..posts.len() {
        created.push(stack.psql_count(&format!("SELECT count(*) FROM tasks WHERE title = '{}'", title(i)))?);
    }
    println!("     the killed replica held {batches} creation batches and {held_reads} reads");
    println!("     creations answered {posts:?}, tasks made {created:?}; reads answered {reads:?}");
    checks.check(
        "retry rule: the killed replica held both creations and reads when it died",
        batches != "0" && held_reads != "0",
    );
    // The other replica answers its own: 201, or 503 for those that waited past the
    // pool's acquire timeout behind the lock (nothing done; the client retries).
    checks.check(
        "retry rule: changes the killed replica held were answered 502, not sent again",
        posts.contains(&502) && posts.iter().all(|s| [201, 502, 503].contains(s)),
    );
    checks.check(
        "retry rule: each creation answered 201 made one task, each 502 or 503 none",
        posts.iter().zip(&created).all(|(status, n)| *n == i64::from(*status == 201)),
    );
    checks.check(
        "retry rule: reads the killed replica held were repeated on the other (all 200)",
        reads.iter().all(|s| *s == 200),
    );
    let back = wait_for(60, || {
        inspect(&victim, "{{.State.Health.Status}} {{.RestartCount}}").unwrap_or_default()
            == format!("healthy {}", before + 1)
    });
    checks.check("retry rule: the killed replica came back by itself", back);
    Ok(())
}

/// PostgreSQL stopped and started under load. While it is down the API must answer at
/// once: 503 with Retry-After, never a 500 and never a hang; when it is back, everything
/// recovers by itself.
fn postgres_outage(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    stack.install_completion_counter()?;
    let load = stack.load("postgres", 40, 10, "noop", "{}");
    sleep(8.0);
    let before = stack.restarts(&["api", "worker"]);
    let stopped = Instant::now();
    say(stack.compose(["stop", "postgres"]));
    // Nothing below may end the scenario before PostgreSQL is started again.
    sleep(2.0);
    let mut probes = Vec::new();
    for _ in 0..5 {
        let request =
            stack.request(Method::POST, "/tasks").json(&json!({"title": "during the outage", "kind": "noop"}));
        probes.push(stack.send(request).ok());
        sleep(1.0);
    }
    let told_to_retry = probes.iter().all(|p| {
        p.as_ref().is_some_and(|r| {
            r.status == 503
                && ["retry-after", "strict-transport-security", "x-request-id"]
                    .iter()
                    .all(|h| r.headers.contains_key(*h))
        })
    });
    let statuses: Vec<String> = probes
        .iter()
        .map(|p| match p {
            Some(r) => format!("{} in {:.3} s", r.status, r.elapsed.as_secs_f64()),
            None => "no answer".to_owned(),
        })
        .collect();
    println!("     during the outage: {}", statuses.join(", "));
    let slowest = probes.iter().flatten().map(|r| r.elapsed.as_secs_f64()).fold(0.0, f64::max);
    checks.check(
        format!(
            "chaos: PostgreSQL down: the API answers 503 with Retry-After, HSTS and its request id ({slowest:.3} s at most)"
        ),
        told_to_retry,
    );
    let down_for = since(stopped);
    say(stack.compose(["start", "postgres"]));
    let served = served_within(stack, 120);
    let run = load.join()?;
    let verdict = judge(
        stack,
        checks,
        &run,
        &format!("PostgreSQL stopped for {down_for} s under load"),
        &|_| format!("tasks accepted again {served} after it started"),
        true,
    )?;
    // The pool's acquire timeout (3 s) bounds the wait for an answer, with room for the machine.
    let slowest_ms = verdict["slowest_ms"].as_f64();
    checks.check(
        format!(
            "chaos: PostgreSQL down: no client waited over 5 s for its answer ({} ms at most)",
            slowest_ms.map_or("unknown".to_owned(), |ms| format!("{ms:.0}"))
        ),
        slowest_ms.is_some_and(|ms| ms < 5000.0),
    );
    no_restart_since(stack, checks, "PostgreSQL back", before);
    Ok(())
}

/// Every app connection to the database terminated, three times under load: the pools
/// reconnect by themselves.
fn terminated_connections(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    stack.install_completion_counter()?;
    let load = stack.load("backends", 30, 12, "noop", "{}");
    let before = stack.restarts(&["api", "worker"]);
    let mut terminated = 0;
    for _ in 0..3 {
        sleep(6.0);
        let sql = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                   WHERE datname = 'flowforge' AND usename LIKE 'flowforge_app%'";
        terminated += say(stack.psql_count(sql)).unwrap_or(0);
    }
    let served = served_within(stack, 60);
    let run = load.join()?;
    checks.check(format!("chaos: app connections were there to terminate ({terminated})"), terminated > 0);
    judge(
        stack,
        checks,
        &run,
        &format!("pg_terminate_backend of all {terminated} app connections, 3 times"),
        &|_| format!("tasks accepted {served} after the last termination"),
        true,
    )?;
    no_restart_since(stack, checks, "terminated connections", before);
    Ok(())
}

/// A lock that blocks every query on tasks for 8 s (a migration gone wrong): each request
/// holds a pooled connection while it waits, until every pool is exhausted.
fn pool_exhaustion(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    stack.install_completion_counter()?;
    let load = stack.load("pool", 30, 12, "noop", "{}");
    let before = stack.restarts(&["api", "worker"]);
    sleep(5.0);
    say(stack.psql("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(6); COMMIT"));
    let served = served_within(stack, 60);
    let run = load.join()?;
    let verdict = judge(
        stack,
        checks,
        &run,
        "every pool exhausted by an 8 s table lock",
        &|_| format!("tasks accepted {served} after the lock went"),
        true,
    )?;
    let told_to_retry = number(&verdict, "told_to_retry");
    checks.check(
        format!(
            "chaos: the pools were exhausted: {} requests told to retry (503/429 + Retry-After)",
            shown(told_to_retry)
        ),
        told_to_retry.is_some_and(|n| n > 0),
    );
    no_restart_since(stack, checks, "exhausted pools", before);
    Ok(())
}

/// Redis stopped under load: the API stays ready, keeps reading tasks from PostgreSQL and
/// keeps answering correctly; it reconnects when Redis is back.
fn redis_outage(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    stack.install_completion_counter()?;
    // A task of this scenario's own, to read back while Redis is down.
    let read_back_id = stack.create_task(&json!({"title": "read back without Redis", "kind": "noop"}))?;
    let load = stack.load("redis", 30, 12, "noop", "{}");
    sleep(5.0);
    let stopped = Instant::now();
    say(stack.compose(["stop", "redis"]));
    // Nothing below may end the scenario before Redis is started again.
    let redis_state = || {
        stack
            .get("/ready")
            .map(|r| format!("{} {}", r.body["status"].as_str().unwrap_or(""), r.body["redis"].as_str().unwrap_or("")))
            .unwrap_or_default()
    };
    checks.check(
        "chaos: Redis stopped: the api reports it unavailable and stays ready",
        wait_for(20, || redis_state() == "ready unavailable"),
    );
    let read_back = stack.get(&format!("/tasks/{read_back_id}")).map(|r| r.status).unwrap_or(0);
    let what = format!("chaos: Redis stopped: tasks are still read (from PostgreSQL): {read_back}");
    checks.check(what, read_back == 200);
    sleep(10.0);
    let down_for = since(stopped);
    let started = Instant::now();
    say(stack.compose(["start", "redis"]));
    let reconnected = if wait_for(60, || redis_state() == "ready connected") {
        format!("the api reconnected {} s after Redis started", since(started))
    } else {
        "never".to_owned()
    };
    let run = load.join()?;
    judge(
        stack,
        checks,
        &run,
        &format!("Redis stopped for {down_for} s under load"),
        &|_| reconnected.to_string(),
        false,
    )?;
    Ok(())
}

/// A full scratch space and a panicking handler, under load: the task fails, the worker
/// lives on.
fn handler_failures(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    stack.install_completion_counter()?;
    let workers_started = worker_starts(stack);
    let load = stack.load("handlers", 20, 10, "noop", "{}");
    let create = |task: Value| say(stack.create_task(&task));
    let is_status = |id: Option<i64>, status: &str| id.is_some_and(|id| stack.task_field(id, "status") == status);
    let error_of = |id: Option<i64>| id.map(|id| stack.task_field(id, "last_error")).unwrap_or_default();
    // The worker's /tmp is a 16 MB tmpfs: 64 MB cannot fit.
    let filler = create(json!({"title": "fill the scratch space", "kind": "fill_scratch", "max_attempts": 1,
                               "payload": {"bytes": 67_108_864}}));
    let panicker = create(json!({"title": "panic", "kind": "panic", "max_attempts": 1}));
    checks.check(
        "chaos: a task that fills the worker's scratch tmpfs fails",
        wait_for(30, || is_status(filler, "failed")),
    );
    let filler_error = error_of(filler);
    println!("     its error: {filler_error}");
    checks.check(
        "chaos: the scratch task's error says the space ran out",
        filler_error.contains("No space left on device"),
    );
    checks.check("chaos: a task whose handler panics fails", wait_for(30, || is_status(panicker, "failed")));
    checks.check("chaos: the panic is its error", error_of(panicker).contains("handler panicked"));
    // The failed write's file was removed: half that worker's tmpfs takes a task again. (Tasks
    // go to whichever worker claims them first: a few tries land one on the same worker.)
    let filled = filler.map(|id| stack.task_field(id, "leased_by")).unwrap_or_default();
    let freed_on_the_same_worker = || {
        for _ in 0..12 {
            let Some(id) = create(json!({"title": "scratch after", "kind": "fill_scratch", "max_attempts": 1,
                                         "payload": {"bytes": 8_388_608}}))
            else {
                return false;
            };
            if !wait_for(30, || is_status(Some(id), "completed")) {
                return false;
            }
            if stack.task_field(id, "leased_by") == filled {
                return true;
            }
        }
        false
    };
    checks.check(
        format!("chaos: the scratch space was freed: an 8 MB scratch task completes on the same worker ({filled})"),
        !filled.is_empty() && freed_on_the_same_worker(),
    );
    let run = load.join()?;
    judge(
        stack,
        checks,
        &run,
        "a full scratch tmpfs and a panicking handler",
        &|_| "nothing to recover: no worker went down".to_string(),
        false,
    )?;
    checks.check(
        "chaos: both workers lived on (same containers, same processes, no restart)",
        worker_starts(stack) == workers_started,
    );
    Ok(())
}

/// The verdict of a load run: prints the scenario's line and checks 0 lost, 0 completed
/// twice and 0 failed requests (503/429 with Retry-After allowed with `allow_retry`). The
/// verdict's JSON, for the checks a scenario adds.
fn judge(
    stack: &Stack,
    checks: &mut Checks,
    run: &LoadRun,
    what: &str,
    recovery: &dyn Fn(&Value) -> String,
    allow_retry: bool,
) -> anyhow::Result<Value> {
    let verdict = stack.verdict(run, allow_retry)?;
    println!("chaos | {what} | {} | recovered: {}", verdict["line"].as_str().unwrap_or_default(), recovery(&verdict));
    let failed = number(&verdict, "failed");
    let told_to_retry = number(&verdict, "told_to_retry");
    if failed != Some(0) {
        let kinds: Vec<&str> =
            verdict["failure_kinds"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        println!("     failures: {}", kinds.join(", "));
    }
    let acknowledged = number(&verdict, "acknowledged");
    let lost = number(&verdict, "lost");
    checks.check(format!("chaos: {what}: 0 of {} tasks lost", shown(acknowledged)), lost == Some(0));
    // The counter must have seen every completion for its 0 to mean anything.
    let twice = number(&verdict, "completed_twice");
    let counted = number(&verdict, "completions_counted");
    let completed = acknowledged.zip(lost).map(|(a, l)| a - l);
    checks.check(
        format!("chaos: {what}: 0 tasks completed twice ({} completions counted)", shown(counted)),
        twice == Some(0) && counted.is_some() && counted == completed,
    );
    if allow_retry {
        checks.check(
            format!(
                "chaos: {what}: no request failed or hung ({} told to retry with 503/429 + Retry-After)",
                shown(told_to_retry)
            ),
            failed == Some(0),
        );
    } else {
        checks.check(format!("chaos: {what}: 0 failed requests"), failed == Some(0) && told_to_retry == Some(0));
    }
    Ok(verdict)
}

/// A count from the verdict (None when absent or null: completions not counted).
fn number(verdict: &Value, key: &str) -> Option<i64> {
    verdict[key].as_i64()
}

fn shown(n: Option<i64>) -> String {
    n.map_or("no".to_owned(), |n| n.to_string())
}

/// "N s" until a task creation is acknowledged again, or "never (over SECONDS s)".
fn served_within(stack: &Stack, seconds: u64) -> String {
    stack.until_served(seconds).map_or_else(|| format!("never (over {seconds} s)"), |s| format!("{s} s"))
}

/// The api and worker containers restarted no more since `before` was counted.
fn no_restart_since(stack: &Stack, checks: &mut Checks, what: &str, before: u64) {
    checks.check(
        format!("chaos: {what}: api and workers recovered without a restart"),
        stack.restarts(&["api", "worker"]) == before,
    );
}

/// Each running worker container with its start time, sorted: a restart or a new
/// container changes it.
fn worker_starts(stack: &Stack) -> Vec<String> {
    let mut starts: Vec<String> = stack
        .containers(Some("worker"))
        .iter()
        .map(|c| format!("{c} {}", inspect(c, "{{.State.StartedAt}}").unwrap_or_default()))
        .collect();
    starts.sort();
    starts
}

/// A step whose failure the checks after it will show: its error printed, not raised
/// (raising could end a scenario with a service stopped or a load still running).
fn say<T>(result: anyhow::Result<T>) -> Option<T> {
    result.map_err(|e| println!("     {e:#}")).ok()
}

/// Now, in seconds since the Unix epoch, to compare with the times the verdict reports.
fn epoch_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}
