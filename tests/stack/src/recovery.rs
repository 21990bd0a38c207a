//! Backups, secret rotation and updates, each on the running stack:
//! - the restore drill: write tasks, back up, write more, note the moment T and a checksum
//!   of every row, write more, destroy the database container and its volume, restore to
//!   T: the task table must be exactly as it was at T;
//! - the same disaster without a target, to measure what continuous archiving loses (RPO);
//! - secret rotation with no downtime, under steady client load: the database passwords
//!   (the app moves to its second login role, the old one loses its login; the owner gets
//!   a new password), then the webhook deployment key (new key, every user's secret
//!   resealed, previous kept, then retired). No request may fail, no task be lost. Then a
//!   restore to a moment T before the rotation: the old passwords come back with the data,
//!   and the restore must re-apply the new ones.
//!
//! Rolling updates and rollbacks under load are the release test's (tests/release/run.sh),
//! through the same rolling_update of scripts/lib/operations.sh.

use std::process::Command;
use std::time::Instant;

use serde_json::{json, Value};

use crate::harness::{run, since, sleep, wait_for, Checks, LoadRun, Stack};
use crate::Scenario;

pub const SCENARIOS: &[(&str, Scenario)] =
    &[("recovery::restore_drill", restore_drill), ("recovery::rpo", rpo), ("recovery::rotation", rotation)];

/// The moment to restore to, as `restore --to` takes it.
const NOW_UTC: &str = r#"SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#;

/// What a refused login of the old app role says (no login any more, or a new password).
const REFUSED: [&str; 2] = ["not permitted to log in", "password authentication failed"];

fn restore_drill(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    checks.check(
        "the backup service took its first full backup and Prometheus has its age",
        wait_for(90, || backup_age(stack)),
    );
    checks.check("drill: 200 tasks written (phase A)", write_tasks(stack, 200, "A") == 201);
    checks.check("drill: a full backup is taken", stack.step("backup-full", ["backup", "--type", "full"]));
    checks.check("drill: 200 more tasks written (phase B)", write_tasks(stack, 200, "B") == 201);
    checks.check("drill: the workers finished phases A and B", wait_for(60, || settled(stack)));
    let target = stack.psql(NOW_UTC)?;
    let at_target = row_sums(stack)?;
    sleep(2.0);
    checks.check(
        format!("drill: 200 more tasks written after T={target} (phase C)"),
        write_tasks(stack, 200, "C") == 201,
    );
    wait_for(60, || settled(stack));
    // Continuous archiving: close the current WAL segment so phase C is in the archive, as
    // it would be within archive_timeout anyway.
    let segment = stack.psql("SELECT pg_walfile_name(pg_switch_wal())")?;
    let archived = || {
        stack.psql(&format!("SELECT last_archived_wal >= '{segment}' FROM pg_stat_archiver")).is_ok_and(|a| a == "t")
    };
    checks.check(format!("drill: WAL through phase C archived ({segment})"), wait_for(30, archived));

    let disaster = Instant::now();
    destroy_database(stack);
    let volume = run("docker", ["volume", "ls", "-q", "--filter", &format!("name={}_pgdata", stack.project)]);
    checks.check("drill: database container and volume destroyed", volume.is_ok_and(|v| v.is_empty()));
    stack.step("restore-to-t", ["restore", "--to", &target]);
    wait_for(120, || serving(stack));
    let rto = since(disaster);
    let restored = row_sums(stack);
    let rows = at_target.lines().count();
    checks.check(
        format!("drill: restored to T, all {rows} rows equal their checksums at T (RTO {rto} s)"),
        restored.is_ok_and(|r| r == at_target),
    );
    println!("RTO (destroy → restored and serving): {rto} s");
    Ok(())
}

/// A stream of single task writes, then the disaster of the restore drill with no target.
/// What the archive had is back; what only the destroyed WAL held is lost.
fn rpo(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    // A restore needs a backup to start from: the backup service takes its first full one
    // soon after the stack starts.
    checks.check(
        "drill: a full backup to restore from exists (Prometheus has its age)",
        wait_for(90, || backup_age(stack)),
    );
    // Single writes, two a second, as clients make them; then the disaster.
    let run = stack.load("rpo", 20, 2, "noop", "{}").join()?;
    // What the archiver had done when the disaster struck (for the RPO figure below).
    let archiver = stack.stack([
        "psql",
        "-F",
        " ",
        "-c",
        "SELECT archived_count, last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver",
    ]);
    println!("archiver: {}", archiver.unwrap_or_else(|e| format!("unknown ({e:#})")));
    destroy_database(stack);
    stack.step("restore-latest", ["restore"]);
    wait_for(120, || serving(stack));
    // archive_timeout (10 s) bounds what only the lost WAL held, plus a few seconds to push.
    let point = stack.drill("rpo", &run, &["--within", "15s"]);
    let (line, rpo) = match &point {
        Ok(p) => (p["line"].as_str().unwrap_or_default().to_owned(), p["rpo_seconds"].as_f64()),
        Err(e) => (format!("no recovery point: {e:#}"), None),
    };
    println!("RPO: {line} (archive_timeout 10 s)");
    checks.check("drill: restore to the newest archived WAL brings the stack back", serving(stack));
    checks.check(
        format!(
            "drill: RPO {} s is within archive_timeout (10 s) and the push (under 15 s)",
            rpo.map_or("unknown".into(), |r| format!("{r:.1}"))
        ),
        point.is_ok_and(|p| p["ok"] == true),
    );
    Ok(())
}

fn rotation(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    // The moment T to restore to at the end, before the rotation: a full backup older than
    // it (after the backup service's own first one, which holds pgBackRest's lock), and
    // nothing pending or running, so that the rows at T are the rows the restore brings back.
    wait_for(90, || backup_age(stack));
    checks.check(
        "rotation: a full backup is taken before T",
        stack.step("backup-before-rotation", ["backup", "--type", "full"]),
    );
    checks.check("rotation: no task pending or running at T", wait_for(60, || settled(stack)));
    let target = stack.psql(NOW_UTC)?;
    let at_target = row_sums(stack)?;
    let rows = at_target.lines().count();
    println!("     T={target}, {rows} rows");
    sleep(2.0);

    let old_url = std::fs::read_to_string(stack.secrets.join("database_url_app"))?;
    let old_role = url_role(&old_url);
    let load = stack.load("rotation", 150, 12, "noop", "{}");
    sleep(5.0);
    let started = Instant::now();
    checks.check("rotation: rotate database", stack.step("rotate-database", ["rotate", "database"]));
    println!("     database passwords rotated in {} s", since(started));
    let started = Instant::now();
    // A user's webhook secret exists, so the reseal has something to do.
    let webhook_secret = stack.post("/api/v1/webhook-secrets", &json!({}));
    checks.check("rotation: rotate webhook-key", stack.step("rotate-webhook-key", ["rotate", "webhook-key"]));
    checks.check(
        "rotation: a second rotate webhook-key is refused while one is under way",
        stack.stack(["rotate", "webhook-key"]).is_err(),
    );
    let keys = signing_keys(stack);
    checks.check(
        format!("rotation: every worker holds the new and the previous deployment key ({})", keys.join(",")),
        !keys.is_empty() && keys.iter().all(|k| k == "2"),
    );
    checks.check("rotation: retire-webhook-key", stack.step("retire-webhook-key", ["rotate", "retire-webhook-key"]));
    let one_key = stack.psql("SELECT count(DISTINCT key_id) FROM webhook_secrets").is_ok_and(|n| n == "1");
    let had_secret = webhook_secret.is_ok_and(|r| r.data("secret").as_str().is_some_and(|s| s.starts_with("whsec_")));
    checks.check("rotation: every webhook secret resealed with the new key", one_key && had_secret);
    let keys = signing_keys(stack);
    checks.check(
        format!("rotation: after the retirement every worker holds the new key only ({})", keys.join(",")),
        !keys.is_empty() && keys.iter().all(|k| k == "1"),
    );
    println!("     webhook deployment key rotated and the previous one retired in {} s", since(started));
    no_failures_no_losses(stack, checks, load.join(), "secret rotation under load");

    let new_role = url_role(&std::fs::read_to_string(stack.secrets.join("database_url_app"))?);
    let app_roles = stack
        .psql(
            "SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_activity
             WHERE datname = 'flowforge' AND usename LIKE 'flowforge_app%'",
        )
        .unwrap_or_default();
    checks.check(
        format!("rotation: api and workers connect as {new_role} only (were {old_role}): {app_roles}"),
        app_roles == new_role && new_role != old_role,
    );
    let refused = stack.psql_with(&old_url, "SELECT 1")?;
    checks.check(
        format!("rotation: the old database password no longer logs in ({})", fatal_line(&refused)),
        REFUSED.iter().any(|r| refused.contains(r)),
    );
    checks.check(
        "rotation: migrations run with the new owner password",
        stack.compose(["run", "--rm", "-T", "migrate"]).is_ok(),
    );

    let started = Instant::now();
    checks.check("restore over the live volume to T", stack.step("restore-live", ["restore", "--to", &target]));
    wait_for(120, || serving(stack));
    let restored = row_sums(stack);
    checks.check(
        format!(
            "restore over the live volume to T, before the rotation: serving with the new passwords ({} s)",
            since(started)
        ),
        serving(stack),
    );
    checks.check(
        format!("restore over the live volume to T: all {rows} rows equal their checksums at T"),
        restored.is_ok_and(|r| r == at_target),
    );
    // The restored data had the old role able to log in, with its old password: not any more.
    let refused = stack.psql_with(&old_url, "SELECT 1")?;
    checks.check(
        "restore to before the rotation: the old password still does not log in",
        REFUSED.iter().any(|r| refused.contains(r)),
    );
    Ok(())
}

/// What the client saw and what became of its tasks (`flowforge drill verdict`, which
/// waits for them, bounded): no request failed (a 503 counts) and no task was lost.
fn no_failures_no_losses(stack: &Stack, checks: &mut Checks, run: anyhow::Result<LoadRun>, what: &str) {
    let verdict = run.and_then(|run| Ok((stack.verdict(&run, false)?, run.summary["failed_between_s"].clone())));
    let (verdict, failed_between) = match verdict {
        Ok(v) => v,
        Err(e) => {
            println!("     {what}: no verdict: {e:#}");
            checks.check(format!("{what}: 0 of ? requests failed"), false);
            checks.check(format!("{what}: 0 of ? tasks lost"), false);
            return;
        }
    };
    let number = |key: &str| verdict[key].as_i64();
    let show = |n: Option<i64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
    let sent = number("sent");
    let failures = number("failed").zip(number("told_to_retry")).map(|(f, r)| f + r);
    let acknowledged = number("acknowledged");
    let lost = number("lost");
    println!(
        "{what}: {} requests, {} failed, {} tasks acknowledged, {} lost",
        show(sent),
        show(failures),
        show(acknowledged),
        show(lost)
    );
    if failures != Some(0) {
        println!("     failures, sent between {failed_between} s into the load: {}", verdict["failure_kinds"]);
        proxy_state(stack);
    }
    checks.check(format!("{what}: 0 of {} requests failed", show(sent)), failures == Some(0));
    checks.check(format!("{what}: 0 of {} tasks lost", show(acknowledged)), lost == Some(0));
}

/// When clients failed: whether the proxy restarted, and what it logged last (every
/// answer but a successful read).
fn proxy_state(stack: &Stack) {
    for c in stack.all_containers(Some("proxy")) {
        let state = run(
            "docker",
            ["inspect", "-f", "{{.State.Status}} since {{.State.StartedAt}}, restarts {{.RestartCount}}, OOM killed {{.State.OOMKilled}}", &c],
        );
        println!("     proxy {}: {}", &c[..12.min(c.len())], state.unwrap_or_default().trim());
        let logs = Command::new("docker").args(["logs", "--tail", "15", &c]).output();
        for line in logs
            .iter()
            .flat_map(|o| [&o.stdout, &o.stderr])
            .flat_map(|b| String::from_utf8_lossy(b).lines().map(str::to_owned).collect::<Vec<_>>())
        {
            println!("       {line}");
        }
    }
}

/// The newest good backup is less than an hour old, as Prometheus has it.
fn backup_age(stack: &Stack) -> bool {
    let age = stack.promql("time() - max(backup_last_success_timestamp_seconds)");
    age.parse::<f64>().is_ok_and(|age| (0.0..3600.0).contains(&age))
}

/// One line per task: its id and the MD5 of the whole row.
fn row_sums(stack: &Stack) -> anyhow::Result<String> {
    stack.psql("SELECT id, md5(t::text) FROM tasks t ORDER BY id")
}

/// COUNT noop tasks titled "LABEL i" in one bulk request: its status code.
fn write_tasks(stack: &Stack, count: usize, label: &str) -> u16 {
    let tasks: Vec<Value> = (0..count).map(|i| json!({"title": format!("{label} {i}"), "kind": "noop"})).collect();
    stack.post_status("/tasks/bulk", &json!({ "tasks": tasks }))
}

fn settled(stack: &Stack) -> bool {
    stack.psql_count("SELECT count(*) FROM tasks WHERE status IN ('pending', 'running')").is_ok_and(|n| n == 0)
}

fn serving(stack: &Stack) -> bool {
    stack.get("/tasks?limit=1").is_ok_and(|r| r.status == 200)
}

/// The backup service mounts the data volume too (read-only, for pgBackRest): it goes
/// with it, and holds no state of its own. What is left is checked by the caller.
fn destroy_database(stack: &Stack) {
    let _ = stack.compose(["kill", "postgres", "backup"]);
    let _ = stack.compose(["rm", "-f", "postgres", "backup"]);
    let _ = run("docker", ["volume", "rm", &format!("{}_pgdata", stack.project)]);
}

/// The role a connection string logs in as (`postgres://ROLE:PASSWORD@...`).
fn url_role(url: &str) -> String {
    let rest = url.trim().strip_prefix("postgres://").unwrap_or_default();
    rest.split_once(':').map_or("", |(role, _)| role).to_owned()
}

/// How many deployment keys each running worker said it holds when it started, one entry
/// per worker ("none" for a worker without the line).
fn signing_keys(stack: &Stack) -> Vec<String> {
    const FIELD: &str = "\"webhook_secrets_keys\":";
    stack
        .containers(Some("worker"))
        .iter()
        .map(|c| {
            // Its log lines go to standard output or error, whichever the service uses.
            let logs = Command::new("docker").args(["logs", c]).output().map_or_else(
                |_| String::new(),
                |o| format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
            );
            let keys = logs
                .rfind(FIELD)
                .map(|at| logs[at + FIELD.len()..].chars().take_while(char::is_ascii_digit).collect::<String>());
            keys.filter(|k| !k.is_empty()).unwrap_or_else(|| "none".to_owned())
        })
        .collect()
}

/// The first `FATAL: ...` in what psql said, for the check's line.
fn fatal_line(said: &str) -> &str {
    said.lines().find_map(|l| l.find("FATAL: ").map(|at| &l[at..])).unwrap_or_default()
}
