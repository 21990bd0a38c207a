//! The images and the running containers: small, labelled, free of secrets and shells,
//! failing fast on bad configuration, and hardened (non-root, read-only, no capabilities).

use std::process::Command;

use crate::harness::{inspect, run, Checks, Stack};
use crate::Scenario;

pub const SCENARIOS: &[(&str, Scenario)] = &[
    ("images::bare_compose", bare_compose),
    ("images::small_and_labelled", small_and_labelled),
    ("images::no_secrets", no_secrets),
    ("images::no_shell", no_shell),
    ("images::fail_fast", fail_fast),
    ("images::hardened_containers", hardened_containers),
];

/// The README's way without scripts/stack.sh: `docker compose build` and `docker compose
/// up --wait` on the stack's files and secrets. The revision label as stack.sh sets it,
/// so the build is the one just made (every layer cached) and nothing is recreated.
fn bare_compose(_stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let revision = run("git", ["rev-parse", "--short", "HEAD"])?;
    let compose = |args: &[&str]| {
        Command::new("docker")
            .arg("compose")
            .args(args)
            .env("FLOWFORGE_REVISION", revision.trim())
            .output()
            .map(|o| (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned()))
    };
    let (built, log) = compose(&["build"])?;
    let images: std::collections::BTreeSet<&str> =
        log.lines().filter_map(|l| l.trim().strip_prefix("Image ")?.strip_suffix(" Built")).collect();
    let expected =
        run("docker", ["compose", "config", "--images"])?.lines().collect::<std::collections::BTreeSet<_>>().len();
    checks.check(
        format!("`docker compose build` builds every image the stack runs ({} of {expected})", images.len()),
        built && images.len() >= expected,
    );
    let (up, log) = compose(&["up", "--wait", "--wait-timeout", "120"])?;
    if !up {
        println!("{}", log.lines().rev().take(10).collect::<Vec<_>>().join("\n"));
    }
    checks.check("`docker compose up --wait` returns with every service healthy", up);
    Ok(())
}

/// The stack's images at its tag.
fn images(stack: &Stack) -> anyhow::Result<Vec<String>> {
    let suffix = format!(":{}", stack.tag);
    let mut images: Vec<String> = run("docker", ["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])?
        .lines()
        .filter(|i| i.starts_with("flowforge-") && i.ends_with(&suffix))
        .filter(|i| {
            !i.trim_end_matches(&suffix)["flowforge-".len()..].contains(|c: char| !c.is_ascii_lowercase() && c != '-')
        })
        .map(str::to_owned)
        .collect();
    images.sort();
    Ok(images)
}

fn size(image: &str) -> anyhow::Result<u64> {
    Ok(inspect(image, "{{.Size}}")?.parse()?)
}

fn small_and_labelled(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let images = images(stack)?;
    println!("images:");
    for image in &images {
        println!("  {image:<36} {:6.1} MB", size(image)? as f64 / 1e6);
    }
    let mut large = vec![];
    for service in ["api", "worker", "web", "cli"] {
        let image = format!("flowforge-{service}:{}", stack.tag);
        if size(&image)? >= 20_000_000 {
            large.push(image);
        }
    }
    checks.check(format!("Rust service images under 20 MB {large:?}"), large.is_empty());
    let unlabelled: Vec<&String> = images
        .iter()
        .filter(|i| {
            inspect(i, r#"{{index .Config.Labels "org.opencontainers.image.title"}}"#).unwrap_or_default().is_empty()
        })
        .collect();
    checks.check(format!("every image carries OCI labels (without: {unlabelled:?})"), unlabelled.is_empty());
    Ok(())
}

/// Every generated secret: one value per file, and the passwords inside the connection
/// strings.
fn secret_values(stack: &Stack) -> anyhow::Result<Vec<String>> {
    let mut values = vec![];
    for entry in std::fs::read_dir(&stack.secrets)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let value = std::fs::read_to_string(&path).unwrap_or_default().trim().to_owned();
        if value.is_empty() {
            continue;
        }
        if name.starts_with("database_url_") {
            let password = value
                .split_once("://")
                .and_then(|(_, rest)| rest.split_once('@'))
                .and_then(|(auth, _)| auth.split_once(':'));
            values.extend(password.map(|(_, p)| p.to_owned()));
        } else if name.contains("password") || name.starts_with("webhook_secrets_key") || name == "backup_cipher_pass" {
            values.push(value);
        }
    }
    Ok(values)
}

fn no_secrets(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let values = secret_values(stack)?;
    let mut leaks = vec![];
    for image in images(stack)? {
        let history = run("docker", ["history", "--no-trunc", &image])?;
        if values.iter().any(|v| history.contains(v.as_str())) {
            leaks.push(format!("secret in {image} history"));
        }
    }
    for c in stack.all_containers(None) {
        let config = inspect(&c, "{{.Config.Env}} {{.Config.Cmd}}")?;
        if values.iter().any(|v| config.contains(v.as_str())) {
            leaks.push(format!("secret in the environment of {c}"));
        }
    }
    checks.check(
        format!("no secret ({} values) in any image history or container environment {leaks:?}", values.len()),
        !values.is_empty() && leaks.is_empty(),
    );
    Ok(())
}

/// The Rust and Go images have no shell and no package manager: nothing to exec into.
fn no_shell(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let forbidden = ["sh", "bash", "dash", "busybox", "apt", "apt-get", "dpkg"];
    let mut found = vec![];
    for image in [
        "api",
        "worker",
        "web",
        "cli",
        "prometheus",
        "alertmanager",
        "postgres-exporter",
        "redis-exporter",
        "node-exporter",
    ] {
        let c = run("docker", ["create", &format!("flowforge-{image}:{}", stack.tag)])?;
        let tar = stack.work.join("export.tar");
        let listed = run("docker", ["export", "-o", &tar.display().to_string(), &c])
            .and_then(|_| run("tar", ["-tf", &tar.display().to_string()]));
        run("docker", ["rm", &c])?;
        std::fs::remove_file(&tar).ok();
        for file in listed?.lines() {
            let file = file.trim_start_matches("./").trim_start_matches("usr/");
            if file.strip_prefix("bin/").is_some_and(|b| forbidden.contains(&b)) {
                found.push(format!("flowforge-{image}: {file}"));
            }
        }
    }
    checks.check(format!("no shell or package manager in the Rust and Go images {found:?}"), found.is_empty());
    Ok(())
}

/// A bad configuration stops a service at once, with every problem named (prod profile:
/// the database URL must ask for TLS; the worker count must be a number).
fn fail_fast(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "-e",
            "FLOWFORGE_DATABASE_URL=postgres://u:p@db/x",
            "-e",
            "FLOWFORGE_WORKER_CONCURRENCY=many",
        ])
        .arg(format!("flowforge-worker:{}", stack.tag))
        .output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    checks.check(
        "a misconfigured service exits 2 at start, naming every problem",
        out.status.code() == Some(2) && text.contains("sslmode") && text.contains("FLOWFORGE_WORKER_CONCURRENCY"),
    );
    Ok(())
}

/// Every container: healthy, non-root (its processes too, not just the configuration),
/// read-only root filesystem, all capabilities dropped.
fn hardened_containers(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let mut problems = vec![];
    let containers = stack.containers(None);
    for c in &containers {
        let name = inspect(c, "{{.Name}}")?;
        if inspect(c, "{{if .State.Health}}{{.State.Health.Status}}{{end}}")? != "healthy" {
            problems.push(format!("{name} has no passing health check"));
        }
        let user = inspect(c, "{{.Config.User}}")?;
        if user.is_empty() || user == "0" || user == "root" || user.starts_with("0:") || user.starts_with("root:") {
            problems.push(format!("{name} runs as root"));
        }
        if inspect(c, "{{.HostConfig.ReadonlyRootfs}}")? != "true" {
            problems.push(format!("{name}: root filesystem is writable"));
        }
        let caps = inspect(c, "{{.HostConfig.CapDrop}}")?;
        if caps != "[ALL]" {
            problems.push(format!("{name} keeps capabilities: {caps}"));
        }
        let top = run("docker", ["top", c, "-o", "pid,uid"])?;
        let uids: Vec<&str> = top.lines().skip(1).filter_map(|l| l.split_whitespace().nth(1)).collect();
        if uids.is_empty() || uids.contains(&"0") {
            problems.push(format!("{name}: a root process, or none listed ({uids:?})"));
        }
    }
    checks.check(
        format!(
            "all {} containers healthy, non-root, read-only, all capabilities dropped {problems:?}",
            containers.len()
        ),
        !containers.is_empty() && problems.is_empty(),
    );
    Ok(())
}
