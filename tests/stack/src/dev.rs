//! The dev override (host-built binaries, reload after a change), and the teardown that
//! must leave nothing behind.

use std::time::Instant;

use serde_json::json;

use crate::harness::{inspect, run, wait_for, Checks, Stack};
use crate::Scenario;

pub const SCENARIOS: &[(&str, Scenario)] = &[("dev::override_and_reload", override_and_reload)];

/// Takes the stack down and brings it up in dev mode: a new cluster, from the (possibly
/// rotated) secrets. Last in a full run.
fn override_and_reload(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    stack.stack(["down", "--purge"])?;
    let up = stack.step("dev-up", ["dev"]);
    checks.check("dev override: the stack comes up healthy (a new cluster, from the rotated secrets)", up);
    if !up {
        return Ok(());
    }
    let api = stack.container("api", 1)?;
    checks
        .check("dev override: the api runs the host-built binary", inspect(&api, "{{.Path}}")? == "/opt/flowforge/api");
    let before = inspect(&api, "{{.State.StartedAt}}")?;
    run("touch", ["crates/api/src/lib.rs"])?;
    let started = Instant::now();
    let reloaded = stack.step("reload", ["reload"]) && inspect(&api, "{{.State.StartedAt}}")? != before;
    checks.check("dev override: reload rebuilds and restarts the api", reloaded);
    println!("     reload took {} s", started.elapsed().as_secs());
    stack.new_token()?;
    let id = stack.create_task(&json!({"title": "dev", "kind": "noop"}))?;
    let completed = wait_for(30, || stack.task_field(id, "status") == "completed");
    checks.check("dev override: a task through HTTPS is completed after the reload", completed);
    Ok(())
}

/// `scripts/stack.sh down --purge` leaves no container, network, volume or firewall rule.
/// A network with nothing attached that Docker refuses to remove is moby/moby#43286 (a
/// stale endpoint only a dockerd restart clears): reported, not counted.
pub fn teardown(stack: &Stack, checks: &mut Checks) {
    if let Err(e) = stack.stack(["down", "--purge"]) {
        println!("     {e:#}");
    }
    let project = format!("label=com.docker.compose.project={}", stack.project);
    let list = |args: &[&str]| -> Vec<String> {
        run("docker", args).map(|o| o.lines().map(str::to_owned).collect()).unwrap_or_default()
    };
    let mut leftovers = stack.all_containers(None).len();
    for net in list(&["network", "ls", "-q", "--filter", &project]) {
        if run("docker", ["network", "inspect", "-f", "{{range .Containers}}{{.Name}} {{end}}", &net])
            .unwrap_or_default()
            .is_empty()
        {
            println!("     note: Docker kept network {net} (stale endpoint, moby/moby#43286)");
        } else {
            leftovers += 1;
        }
    }
    leftovers += list(&["volume", "ls", "-q", "--filter", &project]).len();
    let rule = format!("flowforge:{}", stack.project);
    leftovers += run("iptables", ["-S", "INPUT"]).unwrap_or_default().lines().filter(|l| l.contains(&rule)).count();
    checks.check(
        format!("teardown leaves no container, network, volume or firewall rule ({leftovers} left)"),
        leftovers == 0,
    );
    std::fs::remove_dir_all(&stack.work).ok();
}
