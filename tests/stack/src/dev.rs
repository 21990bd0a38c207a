//! The dev override (host-built binaries, restarted by `docker compose watch` after a
//! change), and the teardown that must leave nothing behind.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{inspect, run, wait_for, Checks, Stack};
use crate::Scenario;

pub const SCENARIOS: &[(&str, Scenario)] = &[("dev::override_and_watch", override_and_watch)];

/// Takes the stack down and brings it up in dev mode: a new cluster, from the (possibly
/// rotated) secrets. Last in a full run.
fn override_and_watch(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    // Control: the stack as deployed publishes on every interface, so the check below can
    // tell the two apart.
    let deployed = published_ports(stack)?;
    println!("     published before (scripts/stack.sh up): {}", deployed.join(" "));
    if std::env::var_os("FLOWFORGE_PUBLISH_ADDR").is_none() {
        checks.check(
            "(control) scripts/stack.sh up publishes the proxy on every interface",
            deployed.iter().any(|p| p == &format!("0.0.0.0:{}", stack.https_port)),
        );
    }
    stack.stack(["down", "--purge"])?;
    let up = stack.step("dev-up", ["dev"]);
    checks.check("dev override: the stack comes up healthy (a new cluster, from the rotated secrets)", up);
    if !up {
        return Ok(());
    }
    let ports = published_ports(stack)?;
    println!("     published by the dev stack: {}", ports.join(" "));
    let proxy_ports = [stack.http_port, stack.https_port].map(|p| format!("127.0.0.1:{p}"));
    checks.check(
        "dev override: every published port is bound to 127.0.0.1 only (the proxy's HTTP and HTTPS included)",
        proxy_ports.iter().all(|p| ports.contains(p))
            && ports.iter().all(|p| p.rsplit_once(':').is_some_and(|(ip, _)| ip == "127.0.0.1")),
    );
    let api = stack.container("api", 1)?;
    checks
        .check("dev override: the api runs the host-built binary", inspect(&api, "{{.Path}}")? == "/opt/flowforge/api");
    let before = inspect(&api, "{{.State.StartedAt}}")?;
    let restarted = watch_restarts_after_a_build(|| inspect(&api, "{{.State.StartedAt}}").is_ok_and(|t| t != before))?;
    checks.check("dev override: `scripts/stack.sh watch` restarts the api when cargo build changes it", restarted);
    stack.new_token()?;
    stack.until_served(60);
    let id = stack.create_task(&json!({"title": "dev", "kind": "noop"}))?;
    let completed = wait_for(30, || stack.task_field(id, "status") == "completed");
    checks.check("dev override: a task through HTTPS is completed after the restart", completed);
    Ok(())
}

/// Every host port the project's running containers publish, as `HostIp:HostPort` (an
/// IPv6 address as Docker writes it, `:::18443` for every interface).
fn published_ports(stack: &Stack) -> anyhow::Result<Vec<String>> {
    let format = "{{range $port, $bindings := .NetworkSettings.Ports}}{{range $bindings}}{{.HostIp}}:{{.HostPort}} {{end}}{{end}}";
    let mut ports = Vec::new();
    for container in stack.containers(None) {
        ports.extend(inspect(&container, format)?.split_whitespace().map(str::to_owned));
    }
    ports.sort();
    ports.dedup();
    Ok(ports)
}

/// Starts `scripts/stack.sh watch`, and once it watches, changes the api's source and runs
/// `cargo build` as a developer would; true when `restarted` says so within a minute of
/// the build.
fn watch_restarts_after_a_build(restarted: impl FnMut() -> bool) -> anyhow::Result<bool> {
    // Its own process group, so that stopping it stops Compose too; both outputs in one pipe.
    let mut watch = Command::new("bash")
        .args(["-c", "exec scripts/stack.sh watch 2>&1"])
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let output = watch.stdout.take().expect("piped");
    let (enabled, watching) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if line.contains("Watch enabled") {
                enabled.send(()).ok();
            }
        }
    });
    let watching = watching.recv_timeout(Duration::from_secs(30)).is_ok();
    let started = Instant::now();
    let restarted = watching
        && run("touch", ["crates/api/src/lib.rs"]).is_ok()
        // The packages scripts/stack.sh dev builds: another set would unify features
        // differently and rebuild dependencies.
        && run("cargo", ["build", "--locked", "-p", "flowforge-api", "-p", "flowforge-worker", "-p", "flowforge-web", "-p", "flowforge-cli", "--bins"]).is_ok()
        && wait_for(60, restarted);
    println!("     watching: {watching}; from the change to the restart {} s", started.elapsed().as_secs());
    run("kill", ["-TERM", "--", &format!("-{}", watch.id())]).ok();
    watch.wait().ok();
    Ok(restarted)
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
