//! Defence in depth: what a stolen credential or a compromised helper container could
//! reach beyond its job, what someone listening on an internal network would see, and
//! what whoever gets hold of the backup repository would read.

use crate::harness::{inspect, run, run_with_input, wait_for, Checks, Stack};
use crate::Scenario;

pub const SCENARIOS: &[(&str, Scenario)] = &[
    ("defence::audit_log_append_only", audit_log_append_only),
    ("defence::node_exporter_mounts", node_exporter_mounts),
    ("defence::redis_exporter_user", redis_exporter_user),
    ("defence::internal_tls", internal_tls),
    ("defence::backup_repository_encrypted", backup_repository_encrypted),
];

/// With the app's own connection string: it may add audit records, but not rewrite or
/// delete them (expired ones go through a function that keeps the last week).
fn audit_log_append_only(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let url = std::fs::read_to_string(stack.secrets.join("database_url_app"))?;
    let url = url.trim();
    let inserts = stack.psql_with(url, "SELECT has_table_privilege(current_user, 'audit_log', 'INSERT')")?;
    checks.check(format!("the app role may add audit records ({})", inserts.trim()), inserts.trim() == "t");
    for statement in
        ["DELETE FROM audit_log WHERE false", "UPDATE audit_log SET status = status WHERE false", "TRUNCATE audit_log"]
    {
        let said = stack.psql_with(url, statement)?;
        checks.check(
            format!("the app role may not `{statement}`: {}", said.lines().next().unwrap_or_default()),
            said.contains("permission denied"),
        );
    }
    Ok(())
}

/// node-exporter reads the host's /proc (CPU, memory) and the free space of the disk the
/// volumes live on (a volume of its own): no other host path, so none of the host's
/// files, the stack's secrets included.
fn node_exporter_mounts(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let exporter = stack.container("node-exporter", 1)?;
    let mounts = inspect(&exporter, "{{range .Mounts}}{{.Type}}:{{.Source}}:{{.Destination}}:{{.RW}} {{end}}")?;
    let host_paths: Vec<&str> = mounts.split_whitespace().filter(|m| m.starts_with("bind:")).collect();
    checks.check(
        format!("node-exporter mounts only the host's /proc, read-only ({mounts})"),
        host_paths == ["bind:/proc:/host/proc:false"] && !mounts.contains(":true"),
    );
    let free = stack.promql(r#"node_filesystem_avail_bytes{mountpoint="/"}"#);
    checks.check(
        format!("it still reports the free disk space ({free} bytes)"),
        free.parse::<f64>().is_ok_and(|b| b > 0.0),
    );
    Ok(())
}

/// The metrics exporter logs in to Redis as a user of its own that reads server
/// statistics and nothing else: no key, no write.
fn redis_exporter_user(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let redis = stack.container("redis", 1)?;
    let password = std::fs::read_to_string(stack.secrets.join("redis_exporter_password"))?;
    // The password goes in on standard input, never on a command line.
    let as_exporter = |command: &str| {
        run_with_input(
            "docker",
            [
                "exec",
                "-i",
                &redis,
                "sh",
                "-c",
                &format!("read -r p; REDISCLI_AUTH=$p redis-cli --tls --cacert /run/secrets/ca.pem --no-auth-warning --user exporter {command} 2>&1"),
            ],
            Some(&format!("{}\n", password.trim())),
        )
        .unwrap_or_else(|e| e.to_string())
    };
    let info = as_exporter("INFO server");
    checks.check("the exporter's Redis user reads server statistics", info.contains("redis_version"));
    for command in ["GET some-key", "SET some-key x", "SCAN 0", "FLUSHDB"] {
        let said = as_exporter(command);
        checks.check(format!("the exporter's Redis user may not {command}: {said}"), said.contains("NOPERM"));
    }
    let up = stack.promql(r#"redis_up"#);
    checks.check(format!("Prometheus still reads Redis through it (redis_up {up})"), up == "1");
    Ok(())
}

/// Inside the stack, tokens and tasks cross the networks encrypted too: the api and web
/// replicas answer HTTPS only, with a certificate for their service name that the
/// stack's CA signed (what the proxy and Prometheus check), and Redis gives a plain-text
/// client nothing. Asked from a throwaway container on the proxy's side of the app
/// network, and from inside the Redis container.
fn internal_tls(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let script = r#"for s in api web; do
        printf '%s http %s\n' $s "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://$s:8080/health)"
        printf '%s https %s\n' $s "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert /ca.pem https://$s:8080/health)"
    done"#;
    let ca = format!("{}:/ca.pem:ro", stack.secrets.join("ca.pem").display());
    let network = format!("{}_app", stack.project);
    let image = format!("flowforge-proxy:{}", stack.tag);
    let out =
        run("docker", ["run", "--rm", "--network", &network, "-v", &ca, "--entrypoint", "sh", &image, "-c", script])?;
    for service in ["api", "web"] {
        checks.check(
            format!("{service} answers HTTPS, its certificate naming `{service}`, signed by the stack's CA"),
            out.contains(&format!("{service} https 200")),
        );
        checks.check(format!("{service} gives plain HTTP no answer"), out.contains(&format!("{service} http 000")));
    }
    let redis = stack.container("redis", 1)?;
    let plain = run("docker", ["exec", &redis, "redis-cli", "-h", "127.0.0.1", "-p", "6379", "PING"])
        .unwrap_or_else(|e| e.to_string());
    let said = plain.lines().last().unwrap_or_default().trim();
    checks.check(
        format!("Redis gives a plain-text client no answer ({said})"),
        !plain.contains("PONG") && !plain.contains("NOAUTH"),
    );
    Ok(())
}

/// The backup repository (the `backups` volume here; an S3 bucket gets the same files)
/// holds only ciphertext: pgBackRest encrypts every file with the `backup_cipher_pass`
/// secret, in OpenSSL's salted format (a `Salted__` header). Unencrypted, the info files
/// would start `[backrest]` and the data files with zstd's magic number. The first full
/// backup is taken when the backup service first starts.
fn backup_repository_encrypted(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let backup = stack.container("backup", 1)?;
    let script = r#"cd /var/lib/pgbackrest || exit 1
        find backup archive -type f \( -name '*.info' -o -name '*.zst' \) | sort | while read -r f; do
            printf '%s %s\n' "$(head -c 8 "$f" | tr -c '[:print:]' '.')" "$f"
        done"#;
    let mut files = String::new();
    // A backup with its data files, and archived WAL.
    let found = wait_for(120, || {
        files = run("docker", ["exec", &backup, "sh", "-c", script]).unwrap_or_default();
        files.contains("backup.info") && files.contains("/pg_data/") && files.contains("archive.info")
    });
    let lines: Vec<&str> = files.lines().collect();
    let plain: Vec<&&str> = lines.iter().filter(|l| !l.starts_with("Salted__ ")).collect();
    let count = |part: &str| lines.iter().filter(|l| l.contains(part)).count();
    println!(
        "     repository: {} files ({} of a backup's data, {} of archived WAL); not encrypted: {plain:?}",
        lines.len(),
        count("/pg_data/"),
        count("archive/") - count("archive.info")
    );
    checks.check(
        "every file of the backup repository (info files, backed-up data, archived WAL) is encrypted",
        found && plain.is_empty(),
    );
    Ok(())
}
