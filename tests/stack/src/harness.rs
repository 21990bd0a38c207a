//! What every scenario uses: the running stack (project, addresses, secrets), commands
//! against it, bounded waits, client load through the proxy, and checks that print one
//! line each. Everything goes through the real entry points: `scripts/stack.sh`, the
//! Docker CLI, HTTPS through the proxy, and the `flowforge` image.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::Method;
use serde_json::Value;

pub static PASSED: AtomicUsize = AtomicUsize::new(0);
pub static FAILED: AtomicUsize = AtomicUsize::new(0);

/// The checks of one scenario: each prints `ok` or `FAIL` with what it checked.
#[derive(Default)]
pub struct Checks {
    failed: Vec<String>,
}

impl Checks {
    pub fn check(&mut self, what: impl AsRef<str>, ok: bool) -> bool {
        let what = what.as_ref();
        if ok {
            println!("ok   {what}");
            PASSED.fetch_add(1, Ordering::Relaxed);
        } else {
            println!("FAIL {what}");
            FAILED.fetch_add(1, Ordering::Relaxed);
            self.failed.push(what.to_owned());
        }
        ok
    }

    /// The scenario's outcome: an error that stopped it counts as one more failure.
    pub fn finish(mut self, outcome: anyhow::Result<()>) -> Result<(), libtest_mimic::Failed> {
        if let Err(e) = outcome {
            self.check(format!("the scenario ran to its end: {e:#}"), false);
        }
        if self.failed.is_empty() {
            Ok(())
        } else {
            Err(format!("{} failed: {}", self.failed.len(), self.failed.join("; ")).into())
        }
    }
}

/// `wait_for(seconds, f)`: true once `f` is, false after that many seconds.
pub fn wait_for(seconds: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn sleep(seconds: f64) {
    std::thread::sleep(Duration::from_secs_f64(seconds));
}

/// Runs a program; its standard output, trimmed, or an error with its standard error.
pub fn run<I, S>(program: &str, args: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    run_with_input(program, args, None)
}

pub fn run_with_input<I, S>(program: &str, args: I, input: Option<&str>) -> anyhow::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new(program);
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = command.spawn().with_context(|| format!("starting {program}"))?;
    if let Some(input) = input {
        use std::io::Write;
        child.stdin.take().expect("piped").write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{program} failed ({}): {}", out.status, tail.join(" | "));
    }
    Ok(stdout)
}

/// Whether a program exits 0 (its output thrown away).
pub fn succeeds<I, S>(program: &str, args: I) -> bool
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    run(program, args).is_ok()
}

/// Seconds since `t`, to a tenth.
pub fn since(t: Instant) -> String {
    format!("{:.1}", t.elapsed().as_secs_f64())
}

/// An HTTP answer: status, headers and the body as JSON (Null if it is not JSON).
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub elapsed: Duration,
}

impl Reply {
    pub fn data(&self, field: &str) -> &Value {
        &self.body["data"][field]
    }
}

pub struct Stack {
    pub project: String,
    pub tag: String,
    pub base: String,
    pub http_port: u16,
    pub https_port: u16,
    /// The stack's own secrets (the test rotates them): never a developer's ./secrets.
    pub secrets: PathBuf,
    /// Scratch space shared with throwaway containers (load runs, logs, drill files).
    pub work: PathBuf,
    token: Mutex<String>,
    client: Client,
}

impl Stack {
    /// Settings for every command this process starts, a scratch directory and the
    /// override file with the drill's settings. Nothing is started yet.
    pub fn configure() -> anyhow::Result<Stack> {
        let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        let project = env("COMPOSE_PROJECT_NAME", "ffsystest");
        let http_port: u16 = env("FLOWFORGE_HTTP_PORT", "18080").parse()?;
        let https_port: u16 = env("FLOWFORGE_HTTPS_PORT", "18443").parse()?;
        let work = PathBuf::from(format!("/tmp/{project}-work"));
        let secrets = match std::env::var("FLOWFORGE_SECRETS") {
            Ok(dir) => PathBuf::from(dir),
            Err(_) => work.join("secrets"),
        };
        std::fs::create_dir_all(&work)?;
        set_mode(&work, 0o777)?;
        let override_file = work.join("compose.system-test.yaml");
        std::fs::write(work.join("queue.yml"), shortened_backlog_rule()?)?;
        std::fs::write(&override_file, system_test_override(&work))?;
        for file in ["queue.yml", "compose.system-test.yaml"] {
            set_mode(&work.join(file), 0o644)?;
        }
        let vars = [
            ("COMPOSE_PROJECT_NAME", project.clone()),
            ("FLOWFORGE_HTTP_PORT", http_port.to_string()),
            ("FLOWFORGE_HTTPS_PORT", https_port.to_string()),
            ("FLOWFORGE_LOG_PORT", env("FLOWFORGE_LOG_PORT", "15514")),
            ("FLOWFORGE_SECRETS", secrets.display().to_string()),
            ("COMPOSE_FILE", format!("compose.yaml:{}", override_file.display())),
        ];
        for (name, value) in vars {
            // Single-threaded still: nothing else reads the environment yet.
            std::env::set_var(name, value);
        }
        Ok(Stack {
            project,
            tag: env("FLOWFORGE_TAG", "dev"),
            base: format!("https://localhost:{https_port}"),
            http_port,
            https_port,
            secrets,
            work,
            token: Mutex::new(String::new()),
            client: Client::builder().build()?,
        })
    }

    /// `scripts/stack.sh up`, then an admin token and a client that trusts the stack's CA.
    pub fn up(&mut self) -> anyhow::Result<()> {
        if !self.step("up", ["up"]) {
            bail!("scripts/stack.sh up failed (see {})", self.work.join("up.log").display());
        }
        self.connect()
    }

    /// An HTTPS client that trusts the stack's CA, and a new admin token.
    pub fn connect(&mut self) -> anyhow::Result<()> {
        let pem = std::fs::read(self.secrets.join("ca.pem")).context("reading the stack's CA")?;
        self.client = Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
        std::fs::copy(self.secrets.join("ca.pem"), self.work.join("ca.pem"))?;
        set_mode(&self.work.join("ca.pem"), 0o644)?;
        self.new_token()
    }

    /// A new admin token (the stack was brought up anew), also in `work/token` for the
    /// load runs.
    pub fn new_token(&self) -> anyhow::Result<()> {
        let token = self.stack(["token"])?;
        let token = token.lines().last().unwrap_or_default().to_owned();
        std::fs::write(self.work.join("token"), &token)?;
        set_mode(&self.work.join("token"), 0o644)?;
        *self.token.lock().expect("token lock") = token;
        Ok(())
    }

    pub fn token(&self) -> String {
        self.token.lock().expect("token lock").clone()
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn operator(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.secrets.join("operator_password"))?.trim().to_owned())
    }

    /// `scripts/stack.sh ARGS`: its standard output.
    pub fn stack<I, S>(&self, args: I) -> anyhow::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        run("scripts/stack.sh", args)
    }

    /// A stack operation whose output goes to `work/NAME.log`: prints its last line, or
    /// its last 20 when it fails (a failed check, not an aborted scenario).
    pub fn step<const N: usize>(&self, name: &str, args: [&str; N]) -> bool {
        self.step_with_env(name, &[], args)
    }

    /// The same, with these environment variables set for it.
    pub fn step_with_env<const N: usize>(&self, name: &str, envs: &[(&str, &str)], args: [&str; N]) -> bool {
        let log = self.work.join(format!("{name}.log"));
        let Ok(file) = std::fs::File::create(&log) else { return false };
        let Ok(err) = file.try_clone() else { return false };
        let ok = Command::new("scripts/stack.sh")
            .args(args)
            .envs(envs.iter().copied())
            .stdout(file)
            .stderr(err)
            .status()
            .is_ok_and(|s| s.success());
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let keep = if ok { 1 } else { 20 };
        for line in &lines[lines.len().saturating_sub(keep)..] {
            println!("     {line}");
        }
        ok
    }

    /// One SQL statement as the database superuser: bare values, `|` between columns.
    pub fn psql(&self, sql: &str) -> anyhow::Result<String> {
        self.stack(["psql", "-c", sql])
    }

    /// One SQL statement with this connection string, the way a service connects: over TLS
    /// from the data network. The string stays off every command line: it goes in a file
    /// readable by the container's user, removed afterwards. What psql said, errors included.
    pub fn psql_with(&self, url: &str, sql: &str) -> anyhow::Result<String> {
        let file = self.work.join("connection-url");
        std::fs::write(&file, url)?;
        set_mode(&file, 0o644)?;
        let out = Command::new("docker")
            .args(["run", "--rm", "--network", &format!("{}_data", self.project), "-e", &format!("SQL={sql}"), "-v"])
            .arg(format!("{}:/url:ro", file.display()))
            .arg("-v")
            .arg(format!("{}:/run/secrets/ca.pem:ro", self.secrets.join("ca.pem").display()))
            .args(["--entrypoint", "sh", &format!("flowforge-postgres:{}", self.tag), "-c"])
            .arg(r#"psql "$(cat /url)" -XAtqc "$SQL""#)
            .output();
        std::fs::remove_file(&file).ok();
        let out = out?;
        Ok(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }

    /// A number from one SQL statement.
    pub fn psql_count(&self, sql: &str) -> anyhow::Result<i64> {
        let out = self.psql(sql)?;
        out.parse().with_context(|| format!("not a number: {out:?}"))
    }

    pub fn compose<I, S>(&self, args: I) -> anyhow::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut all = vec![std::ffi::OsString::from("compose")];
        all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self.stack(all)
    }

    /// The running containers of a service (all the project's with `None`).
    pub fn containers(&self, service: Option<&str>) -> Vec<String> {
        self.containers_filtered(service, false)
    }

    /// The same, stopped and exited ones included.
    pub fn all_containers(&self, service: Option<&str>) -> Vec<String> {
        self.containers_filtered(service, true)
    }

    fn containers_filtered(&self, service: Option<&str>, all: bool) -> Vec<String> {
        let mut args = vec!["ps".to_owned(), "-q".to_owned()];
        if all {
            args.push("-a".into());
        }
        args.extend(["--filter".into(), format!("label=com.docker.compose.project={}", self.project)]);
        if let Some(service) = service {
            args.extend(["--filter".into(), format!("label=com.docker.compose.service={service}")]);
        }
        run("docker", args).map(|out| out.lines().map(str::to_owned).collect()).unwrap_or_default()
    }

    /// The n-th (from 1) running container of a service; docker lists the newest first.
    pub fn container(&self, service: &str, n: usize) -> anyhow::Result<String> {
        let all = self.containers(Some(service));
        all.get(n - 1).cloned().with_context(|| format!("no container {n} of {service} ({} running)", all.len()))
    }

    /// The restarts of these services' containers, summed.
    pub fn restarts(&self, services: &[&str]) -> u64 {
        services
            .iter()
            .flat_map(|s| self.all_containers(Some(s)))
            .filter_map(|c| inspect(&c, "{{.RestartCount}}").ok()?.parse::<u64>().ok())
            .sum()
    }

    /// A request through the proxy with the admin token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base)).bearer_auth(self.token())
    }

    pub fn send(&self, request: RequestBuilder) -> anyhow::Result<Reply> {
        let started = Instant::now();
        let r = request.send()?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.json().unwrap_or(Value::Null);
        Ok(Reply { status, headers, body, elapsed: started.elapsed() })
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.send(self.request(Method::GET, path))
    }

    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Reply> {
        self.send(self.request(Method::POST, path).json(body))
    }

    /// Status code of a POST (0 when there was no answer).
    pub fn post_status(&self, path: &str, body: &Value) -> u16 {
        self.post(path, body).map(|r| r.status).unwrap_or(0)
    }

    /// Creates a task; its id.
    pub fn create_task(&self, task: &Value) -> anyhow::Result<i64> {
        let reply = self.post("/tasks", task)?;
        reply.data("id").as_i64().with_context(|| format!("no task created ({}): {}", reply.status, reply.body))
    }

    /// A field of a task, as text ("" when absent or null).
    pub fn task_field(&self, id: i64, field: &str) -> String {
        match self.get(&format!("/tasks/{id}")) {
            Ok(r) => match r.data(field) {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            },
            Err(_) => String::new(),
        }
    }

    /// Seconds until a task creation is acknowledged again (bounded), or None.
    pub fn until_served(&self, seconds: u64) -> Option<String> {
        let started = Instant::now();
        let probe = serde_json::json!({"title": "chaos probe", "kind": "noop"});
        let ok = wait_for(seconds, || self.post_status("/tasks", &probe) == 201);
        ok.then(|| since(started))
    }

    /// The value of an instant PromQL query through the proxy ("" when it has no series).
    pub fn promql(&self, query: &str) -> String {
        let answer = self
            .client
            .get(format!("{}/prometheus/api/v1/query", self.base))
            .basic_auth("operator", self.operator().ok())
            .query(&[("query", query)])
            .send()
            .and_then(|r| r.json::<Value>());
        match answer {
            Ok(v) => v["data"]["result"][0]["value"][1].as_str().unwrap_or_default().to_owned(),
            Err(_) => String::new(),
        }
    }

    /// `docker run` arguments for the CLI image as a client from outside: on the host's
    /// network, with the scratch space (token, CA, results) at /load. The `flowforge`
    /// command and its arguments follow.
    pub fn cli_client(&self) -> Vec<String> {
        let mount = format!("{}:/load", self.work.display());
        ["run", "--rm", "--network", "host", "-v", &mount, &format!("flowforge-cli:{}", self.tag)]
            .map(str::to_owned)
            .to_vec()
    }

    /// `flowforge load` from the CLI image on the host's network, through the proxy like
    /// any client, for `seconds` at `rate` creations a second (keep it under the per-user
    /// limit, 20/s). Runs in the background; `join` gives what the client saw.
    pub fn load(&self, name: &str, seconds: u64, rate: u32, kind: &str, payload: &str) -> Load {
        let mut args = self.cli_client();
        let ids = format!("/load/{name}.ids");
        args.extend(
            [
                "load",
                "--url",
                &self.base,
                "--token-file",
                "/load/token",
                "--ca-file",
                "/load/ca.pem",
                "--duration",
                &format!("{seconds}s"),
                "--rate",
                &rate.to_string(),
                "--kind",
                kind,
                "--payload",
                payload,
                "--ids-out",
                &ids,
            ]
            .map(str::to_owned),
        );
        let name = name.to_owned();
        let work = self.work.clone();
        Load {
            handle: std::thread::spawn(move || {
                let summary = run("docker", args)?;
                std::fs::write(work.join(format!("{name}.json")), &summary)?;
                Ok(LoadRun { name, summary: serde_json::from_str(&summary)? })
            }),
        }
    }

    /// `flowforge drill verdict` on a load run: waits (bounded) for its tasks, then what
    /// happened to them, counted in the database by the CLI image on the data network.
    pub fn verdict(&self, run: &LoadRun, allow_retry: bool) -> anyhow::Result<Value> {
        self.drill("verdict", run, if allow_retry { &["--allow-retry"] } else { &[] })
    }

    /// `flowforge drill WHAT` on a load run's ids and summary, from the CLI image on the
    /// data network: its JSON (it exits 1 on a bad outcome; the JSON says which part).
    pub fn drill(&self, what: &str, run: &LoadRun, options: &[&str]) -> anyhow::Result<Value> {
        let out = Command::new("scripts/stack.sh")
            .args(["compose", "run", "--rm", "-T", "-v", &format!("{}:/load:ro", self.work.display()), "migrate"])
            .args(["drill", what, "--ids", &format!("/load/{}.ids", run.name)])
            .args(["--summary", &format!("/load/{}.json", run.name), "--json"])
            .args(options)
            .stderr(Stdio::inherit())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().last().unwrap_or_default();
        serde_json::from_str(line).with_context(|| format!("no JSON from flowforge drill {what}: {text}"))
    }

    /// `flowforge drill counter install`: a trigger that records every write setting a
    /// task `completed`, so a verdict can count tasks completed twice. Idempotent.
    pub fn install_completion_counter(&self) -> anyhow::Result<()> {
        self.compose(["run", "--rm", "-T", "migrate", "drill", "counter", "install"]).map(drop)
    }
}

pub struct Load {
    handle: JoinHandle<anyhow::Result<LoadRun>>,
}

impl Load {
    pub fn join(self) -> anyhow::Result<LoadRun> {
        self.handle.join().map_err(|_| anyhow::anyhow!("the load thread panicked"))?
    }
}

/// What `flowforge load` reported: sent, created, failed, told_to_retry, latency_ms, ...
pub struct LoadRun {
    pub name: String,
    pub summary: Value,
}

impl LoadRun {
    pub fn field(&self, key: &str) -> i64 {
        self.summary[key].as_i64().unwrap_or(-1)
    }
}

/// `docker inspect -f FORMAT ID`.
pub fn inspect(id: &str, format: &str) -> anyhow::Result<String> {
    run("docker", ["inspect", "-f", format, id])
}

/// SIGKILL to a container's process from the host, like a crash (`docker kill` counts as
/// a manual stop, and the restart policy would leave it down). A restarting container
/// has no process (pid 0).
pub fn kill9(id: &str) -> bool {
    match inspect(id, "{{.State.Pid}}").ok().and_then(|p| p.parse::<i32>().ok()) {
        Some(pid) if pid > 0 => succeeds("kill", ["-9", &pid.to_string()]),
        _ => false,
    }
}

/// Resident memory of a container's main process, in MB.
pub fn rss_mb(container: &str) -> anyhow::Result<f64> {
    status_mb(container, "VmRSS")
}

/// The most resident memory a container's main process has held, in MB: since it started,
/// or since [`reset_peak_rss`].
pub fn peak_rss_mb(container: &str) -> anyhow::Result<f64> {
    status_mb(container, "VmHWM")
}

/// Lowers a container's main process's peak resident memory to what it holds now (the
/// kernel's `clear_refs` 5), so that a later [`peak_rss_mb`] covers only what came after.
pub fn reset_peak_rss(container: &str) -> anyhow::Result<()> {
    let pid = inspect(container, "{{.State.Pid}}")?;
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("resetting the peak resident memory of {container} (pid {pid})"))
}

/// A memory figure of /proc/PID/status (kB there), in MB.
fn status_mb(container: &str, field: &str) -> anyhow::Result<f64> {
    let pid = inspect(container, "{{.State.Pid}}")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {field} for {container}"))?;
    Ok(kb / 1024.0)
}

pub fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The real QueueBacklog rule (over 100 due tasks for 15 minutes) shortened to over 5 for
/// 10 seconds, for the alert drill.
fn shortened_backlog_rule() -> anyhow::Result<String> {
    let rules = std::fs::read_to_string("deploy/images/prometheus/rules/queue.yml")?;
    let shortened = rules
        .replace("flowforge:queue_depth:max > 100", "flowforge:queue_depth:max > 5")
        .replace("for: 15m", "for: 10s");
    if shortened == rules {
        bail!("the QueueBacklog rule changed: the alert drill no longer shortens it");
    }
    Ok(shortened)
}

/// The edge network's addresses, chosen here so that each abuse scenario's client has an
/// address of its own (Docker hands a freed address to the next container, and refusals
/// are counted per address).
pub const EDGE_SUBNET: &str = "10.213.47";

/// Shortened alert rules; the chaos kinds (panic, fill_scratch) accepted by the api and
/// run by the workers; a low limit of refused credentials for the abuse scenarios, and an
/// edge network whose addresses they can pick.
fn system_test_override(work: &Path) -> String {
    format!(
        r#"services:
  prometheus:
    volumes: ["{}/queue.yml:/etc/prometheus/rules/queue.yml:ro"]
  worker:
    environment:
      FLOWFORGE_CHAOS_HANDLERS: "true"
  api:
    environment:
      FLOWFORGE_AUTH_FAILURES_PER_MINUTE: "${{FLOWFORGE_AUTH_FAILURES_PER_MINUTE:-10}}"
      FLOWFORGE_CHAOS_HANDLERS: "true"
networks:
  edge:
    ipam:
      config: [{{ subnet: "{EDGE_SUBNET}.0/24" }}]
"#,
        work.display()
    )
}
