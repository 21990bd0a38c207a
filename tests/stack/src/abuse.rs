//! The data network's isolation, and one address abusing the entry point: bad
//! credentials, forged X-Forwarded-For, guessing the operator password, bodies of tiny
//! JSON values, more connections at once than the proxy allows one address. The api allows 10 refused credentials per address a minute (the harness's
//! override). Each client scenario runs its requests from a throwaway container of its own
//! on the edge network, straight at the proxy, so it has a source address (and earns a
//! penalty) of its own and no other check is refused because of it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::Method;

use crate::harness::{
    inspect, peak_rss_mb, reset_peak_rss, rss_mb, run, succeeds, wait_for, Checks, Stack, EDGE_SUBNET,
};
use crate::Scenario;

pub const SCENARIOS: &[(&str, Scenario)] = &[
    ("abuse::network_isolation", network_isolation),
    ("abuse::bad_credentials", bad_credentials),
    ("abuse::forged_forwarded_for", forged_forwarded_for),
    ("abuse::operator_guesses", operator_guesses),
    ("abuse::tiny_values", tiny_values),
    ("abuse::connection_cap", connection_cap),
];

/// The proxy's HTTPS entry point as the edge clients name it (resolved to its edge address).
const PROXY: &str = "https://localhost:8443";

/// `internal` networks get no forwarding: nothing on another network (nor beyond the host)
/// is reachable. The probe: the proxy's HTTP port on the edge network, from a throwaway
/// container on each network.
fn network_isolation(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let proxy_ip = proxy_edge_ip(stack)?;
    checks.check(
        format!("from the edge network the proxy ({proxy_ip}) answers (control)"),
        reach(stack, "edge", &proxy_ip, 8080),
    );
    checks.check("from the data network nothing on another network answers", !reach(stack, "data", &proxy_ip, 8080));
    // The host itself: its main address and the data network's own gateway, at the
    // published HTTPS port. Reachable from the edge network (control); dropped from the
    // data network.
    let host_ip = host_ip()?;
    let gateway = run(
        "docker",
        ["network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", &format!("{}_data", stack.project)],
    )?;
    if gateway.is_empty() {
        bail!("the data network has no gateway address");
    }
    checks.check(
        "from the edge network the host's published port answers (control)",
        reach(stack, "edge", &host_ip, stack.https_port),
    );
    checks.check(
        format!("from the data network the host ({host_ip}, gateway {gateway}) does not answer"),
        !reach(stack, "data", &host_ip, stack.https_port) && !reach(stack, "data", &gateway, stack.https_port),
    );
    Ok(())
}

/// A change with a 2 kB path, then 20 with bad or missing bearer tokens: refused (401) up
/// to the limit, then 429 before any lookup; audited as a handful of counted rows.
fn bad_credentials(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let started = now(stack)?;
    let mut requests = vec![curl(&["-X", "PATCH", &format!("{PROXY}/tasks/{:0>2000}", 9)])];
    for i in 1..=20 {
        let token = format!("Authorization: Bearer ff_guess{i}");
        let auth: &[&str] = if i % 2 == 0 { &["-H", &token] } else { &[] };
        let rest = ["-H", "content-type: application/json", "-d", r#"{"title":"x"}"#, &format!("{PROXY}/tasks")];
        requests.push(curl(&[&["-X", "POST"], auth, &rest].concat()));
    }
    let client = from_edge(stack, 201, &requests)?;
    println!("     from {}: {}", client.source, tally(&client.codes));
    // The two api replicas learn each other's counts every 100 ms, so a few more than the
    // limit may be looked up.
    let refused = client.codes.iter().filter(|c| *c == "401").count();
    checks.check(
        "21 changes with bad or no token from one address: 401, then 429 past the limit",
        refused_then_limited(&client.codes) && refused <= 15,
    );

    let mut seen = "audit: no answer from the database".to_owned();
    let tallied = wait_for(25, || {
        let sql = format!(
            "SELECT count(*), coalesce(sum(occurrences), 0), coalesce(max(length(path)), 0) FROM audit_log \
             WHERE client_ip = '{}' AND at >= '{started}'",
            client.source
        );
        let Some((rows, total, longest)) = stack.psql(&sql).ok().and_then(|out| three_numbers(&out)) else {
            return false;
        };
        seen = format!("audit rows: {rows} for {total} refusals, longest path {longest} bytes");
        // Each api replica writes a row per kind (401 POST, 429 POST, PATCH) every 10 s.
        total == 21 && rows <= 8 && longest <= 512
    });
    println!("     {seen}");
    checks.check("... audited as a handful of rows with their counts, paths capped at 512 bytes", tallied);
    Ok(())
}

/// Failed sign-ins, each claiming another address in X-Forwarded-For: limited as one
/// address all the same, and the audit names the real one.
fn forged_forwarded_for(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let started = now(stack)?;
    let requests: Vec<String> = (1..=20)
        .map(|i| {
            curl(&[
                "-X",
                "POST",
                "-H",
                &format!("X-Forwarded-For: 198.51.100.{i}"),
                "-H",
                "content-type: application/json",
                "-d",
                &format!(r#"{{"token":"ff_guess{i}"}}"#),
                &format!("{PROXY}/api/v1/session"),
            ])
        })
        .collect();
    let client = from_edge(stack, 202, &requests)?;
    let mut seen = "audit: no answer from the database".to_owned();
    let not_escaped = wait_for(25, || {
        let forged = stack.psql_count(&format!(
            "SELECT count(*) FROM audit_log WHERE client_ip LIKE '198.51.100.%' AND at >= '{started}'"
        ));
        let real = stack.psql_count(&format!(
            "SELECT coalesce(sum(occurrences), 0) FROM audit_log WHERE client_ip = '{}' AND at >= '{started}'",
            client.source
        ));
        let (Ok(forged), Ok(real)) = (forged, real) else { return false };
        seen = format!(
            "from {}: {}; audited: {real} under the real address, {forged} forged",
            client.source,
            tally(&client.codes)
        );
        refused_then_limited(&client.codes) && forged == 0 && real == 20
    });
    println!("     {seen}");
    checks.check(
        "20 sign-ins with rotating forged X-Forwarded-For: limited as one address, audited as the real one",
        not_escaped,
    );
    Ok(())
}

/// Guessing the operator password: past 60 a minute the proxy refuses before checking.
fn operator_guesses(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let requests: Vec<String> =
        (1..=70).map(|i| curl(&["-u", &format!("operator:guess{i}"), &format!("{PROXY}/prometheus/")])).collect();
    let client = from_edge(stack, 203, &requests)?;
    println!("     from {}: {}", client.source, tally(&client.codes));
    checks.check(
        "70 operator password guesses from one address: 429 from the proxy past 60 a minute",
        refused_then_limited(&client.codes),
    );
    Ok(())
}

/// Memory: two bulk bodies at the size limit (8 MiB) made of tiny JSON values at once.
/// Refused after a count of their values, before any is parsed; no replica restarts, and
/// no replica's resident memory comes near its limit.
fn tiny_values(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let n = (8 * 1024 * 1024 - 64) / 2;
    let mut body = String::with_capacity(2 * n + 64);
    body.push_str(r#"{"tasks": [{"title": "x", "payload": {"a": ["#);
    body.push_str(&"0,".repeat(n - 1));
    body.push_str("0]}}]}");
    let replicas = stack.containers(Some("api"));
    if replicas.is_empty() {
        bail!("no api replica is running");
    }
    // compose.yaml's mem_limit for the api, as the engine applied it.
    let limit_mb = inspect(&replicas[0], "{{.HostConfig.Memory}}")?.parse::<f64>()? / (1024.0 * 1024.0);
    if limit_mb <= 0.0 {
        bail!("the api replicas have no memory limit");
    }
    // Half the limit. Parsed, each of a body's ~4.2 million values would take at least a
    // 32-byte serde_json::Value: over 128 MiB for one body, the whole limit for two. Counted
    // before parsing, a replica holds the two bodies' 16 MiB of bytes beside its usual
    // 20-50 MB. So a peak under half the limit shows that no body was parsed, and leaves the
    // other half for the replica's ordinary work.
    let bound_mb = limit_mb / 2.0;
    // The peak covers this scenario only where the kernel lets it be reset; otherwise it
    // covers the replica's whole life, a stricter bound.
    let reset = replicas.iter().all(|c| reset_peak_rss(c).is_ok());
    let rss_before = replicas.iter().map(|c| rss_mb(c)).collect::<anyhow::Result<Vec<_>>>()?;
    let restarts_before = stack.restarts(&["api"]);
    let answers: Vec<String> = std::thread::scope(|s| {
        let sent: Vec<_> = (0..2)
            .map(|_| {
                let request = stack
                    .request(Method::POST, "/tasks/bulk")
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
                    .timeout(Duration::from_secs(60));
                s.spawn(move || stack.send(request))
            })
            .collect();
        sent.into_iter()
            .map(|t| match t.join() {
                Ok(Ok(reply)) => reply.status.to_string(),
                Ok(Err(e)) => format!("no answer ({e:#})"),
                Err(_) => "no answer (the thread panicked)".to_owned(),
            })
            .collect()
    });
    let restarts_after = stack.restarts(&["api"]);
    // A replica that restarted is caught by the count; its figures would be its new process's.
    let rss_after = replicas.iter().map(|c| rss_mb(c)).collect::<anyhow::Result<Vec<_>>>()?;
    let peaks = replicas.iter().map(|c| peak_rss_mb(c)).collect::<anyhow::Result<Vec<_>>>()?;
    println!("     answers: {}; api restarts: {restarts_before} before, {restarts_after} after", answers.join(" "));
    let figures: Vec<String> = (0..replicas.len())
        .map(|i| {
            format!(
                "api-{}: {:.1} MB before, {:.1} MB after, peak {:.1} MB",
                i + 1,
                rss_before[i],
                rss_after[i],
                peaks[i]
            )
        })
        .collect();
    println!(
        "     resident memory (limit {limit_mb:.0} MB, bound {bound_mb:.0} MB; peak {}): {}",
        if reset { "since just before the bodies" } else { "since each replica started" },
        figures.join("; ")
    );
    checks.check(
        "two 8 MiB bodies of tiny JSON values at once: 413, no api replica restarts",
        answers.iter().all(|a| a == "413") && restarts_after == restarts_before,
    );
    checks.check(
        format!(
            "... and every api replica's resident memory, peak included, stays under {bound_mb:.0} MB (half its limit)"
        ),
        rss_after.iter().chain(&peaks).all(|mb| *mb < bound_mb),
    );
    Ok(())
}

/// Connections per source: past the proxy's cap (`MAX_CONNECTIONS_PER_SOURCE`, 200 unless
/// configured) one client's further connections are closed as they open, before any TLS
/// work, and its requests refused; under the cap it is served, and again once it lets go.
/// The client holds bare TCP connections (no TLS handshake) from an address of its own.
fn connection_cap(stack: &Stack, checks: &mut Checks) -> anyhow::Result<()> {
    let proxy = stack.container("proxy", 1)?;
    let env = inspect(&proxy, "{{range .Config.Env}}{{println .}}{{end}}")?;
    let cap: usize = env
        .lines()
        .find_map(|l| l.strip_prefix("MAX_CONNECTIONS_PER_SOURCE="))
        .context("the proxy has no MAX_CONNECTIONS_PER_SOURCE")?
        .trim()
        .parse()?;
    // Each held connection is a file descriptor in one bash: keep the count modest.
    if !(2..=2000).contains(&cap) {
        bail!("a cap of {cap} connections per source is outside what this scenario opens (2..=2000)");
    }
    let extra = 20;
    // A held connection the proxy closed reads as end of file (or reset) at once; an open
    // one times out (status over 128), as the proxy says nothing before a ClientHello.
    let script = format!(
        r#"held=()
hold() {{ local fd; exec {{fd}}<>"/dev/tcp/$PROXY_IP/8443" && held+=("$fd"); }}
request() {{ curl -sk --max-time 5 --resolve "localhost:8443:$PROXY_IP" -o /dev/null -w '%{{http_code}}' https://localhost:8443/health; }}
hostname -i
for _ in $(seq 1 {under}); do hold; done
echo "held ${{#held[@]}}"
sleep 1
echo "under $(request)"
sleep 1
for _ in $(seq 1 {extra}); do hold 2>/dev/null; done
echo "over $(request)"
sleep 0.5
open=0
for fd in "${{held[@]}}"; do read -r -t 0.01 -u "$fd" _; [ $? -gt 128 ] && open=$((open + 1)); done
echo "open $open of ${{#held[@]}}"
for fd in "${{held[@]}}"; do exec {{fd}}>&-; done
sleep 1
echo "after $(request)"
"#,
        under = cap - 1,
    );
    let started = std::time::Instant::now();
    let out = on_edge(stack, 204, &script, 90)?;
    let field = |key: &str| -> String {
        out.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')).unwrap_or_default().trim().to_owned()
    };
    let number = |text: &str| text.split_whitespace().next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
    let (held, under, over, after) = (number(&field("held")), field("under"), field("over"), field("after"));
    let open_line = field("open");
    let open = number(&open_line);
    let total = open_line.rsplit(' ').next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
    println!(
        "     cap {cap}: {held} held, a request beside them {under}; {extra} more: {open} of {total} still open, a \
         request {over}; after letting go {after}; {} s",
        started.elapsed().as_secs()
    );
    checks.check(
        format!("{} connections from one address, one under the proxy's cap of {cap}: its request is served", cap - 1),
        held == cap - 1 && under == "200",
    );
    checks.check(
        format!("{extra} more: the proxy closes all past the cap ({cap} held at most) and refuses its request"),
        total == held + extra && open <= cap && total - open >= extra - 1 && over == "000",
    );
    checks.check("once the client closes them, its requests are served again", after == "200");
    Ok(())
}

/// The database's clock: audit rows from before (an address Docker hands out again) are
/// not the scenario's.
fn now(stack: &Stack) -> anyhow::Result<String> {
    stack.psql("SELECT now()")
}

/// The proxy's address on the edge network.
fn proxy_edge_ip(stack: &Stack) -> anyhow::Result<String> {
    let proxy = stack.container("proxy", 1)?;
    let format = format!("{{{{(index .NetworkSettings.Networks \"{}_edge\").IPAddress}}}}", stack.project);
    let ip = inspect(&proxy, &format)?;
    if ip.is_empty() {
        bail!("the proxy has no address on the edge network");
    }
    Ok(ip)
}

/// The host's main address: the source of its route out.
fn host_ip() -> anyhow::Result<String> {
    let route = run("ip", ["-4", "route", "get", "1.1.1.1"])?;
    let mut words = route.split_whitespace();
    words.find(|w| *w == "src");
    words.next().map(str::to_owned).with_context(|| format!("no source address in the host's route: {route}"))
}

/// Whether a TCP connection to `ip:port` opens from a throwaway container on the stack's
/// network `net` (edge or data).
fn reach(stack: &Stack, net: &str, ip: &str, port: u16) -> bool {
    succeeds(
        "docker",
        [
            "run",
            "--rm",
            "--network",
            &format!("{}_{net}", stack.project),
            "flowforge-base-debian:bookworm-slim",
            "timeout",
            "3",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{ip}/{port}"),
        ],
    )
}

/// One request of an edge client: a curl command line that prints the status code ("000"
/// when there was no answer), with these arguments quoted for sh.
fn curl(args: &[&str]) -> String {
    let mut line =
        String::from(r#"curl -sk --max-time 5 --resolve "localhost:8443:$PROXY_IP" -o /dev/null -w '%{http_code}\n'"#);
    for arg in args {
        line.push_str(" '");
        line.push_str(&arg.replace('\'', r"'\''"));
        line.push('\'');
    }
    line
}

/// What an edge client saw: its own address, then the status code of each request.
struct EdgeClient {
    source: Ipv4Addr,
    codes: Vec<String>,
}

/// Runs these curl lines, one after the other, from a throwaway container at this
/// address (last byte) of the edge network, straight at the proxy. Each scenario has its
/// own address: refusals are counted per address.
fn from_edge(stack: &Stack, address: u8, requests: &[String]) -> anyhow::Result<EdgeClient> {
    // A request without an answer is a "000" line: the rest still run.
    let script = format!("hostname -i\n{}\nexit 0\n", requests.join("\n"));
    // Each curl gives up after 5 s.
    let out = on_edge(stack, address, &script, 30 + 6 * requests.len() as u64)?;
    let mut lines = out.lines();
    let first = lines.next().unwrap_or_default();
    // The proxy's edge address is IPv4, so the requests come from the client's IPv4 one.
    let source = first
        .split_whitespace()
        .find_map(|w| w.parse::<Ipv4Addr>().ok())
        .with_context(|| format!("the edge client printed no address of its own: {first:?}"))?;
    let codes: Vec<String> = lines.map(|l| l.trim().to_owned()).collect();
    if codes.len() != requests.len() {
        bail!("the edge client printed {} status codes for {} requests: {out}", codes.len(), requests.len());
    }
    Ok(EdgeClient { source, codes })
}

/// Runs this bash script, for at most `seconds`, in a throwaway container at this address
/// (last byte) of the edge network (the proxy's image has bash and curl), with the proxy's
/// edge address in `PROXY_IP`; its output.
fn on_edge(stack: &Stack, address: u8, script: &str, seconds: u64) -> anyhow::Result<String> {
    let proxy_ip = proxy_edge_ip(stack)?;
    run(
        "docker",
        [
            "run",
            "--rm",
            "--network",
            &format!("{}_edge", stack.project),
            "--ip",
            &format!("{EDGE_SUBNET}.{address}"),
            "-e",
            &format!("PROXY_IP={proxy_ip}"),
            "--entrypoint",
            "timeout",
            &format!("flowforge-proxy:{}", stack.tag),
            &seconds.to_string(),
            "bash",
            "-c",
            script,
        ],
    )
}

/// "N code M code ..." of status codes, by code.
fn tally(codes: &[String]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for code in codes {
        *counts.entry(code).or_default() += 1;
    }
    counts.iter().map(|(code, n)| format!("{n} {code}")).collect::<Vec<_>>().join(" ")
}

/// The first request refused (401), the last five limited (429).
fn refused_then_limited(codes: &[String]) -> bool {
    codes.first().is_some_and(|c| c == "401") && codes.len() >= 5 && codes[codes.len() - 5..].iter().all(|c| c == "429")
}

/// Three numbers from `a|b|c`.
fn three_numbers(out: &str) -> Option<(i64, i64, i64)> {
    let mut parts = out.split('|').map(|p| p.trim().parse::<i64>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}
