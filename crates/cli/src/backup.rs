//! `flowforge backup` and `flowforge restore`: point-in-time backups with pgBackRest.
//!
//! They run where pgBackRest can reach the database's files and socket (the stack's
//! `backup` service, built on the database image). pgBackRest does the work; this adds the
//! schedule, the metrics the BackupTooOld alert reads, and restores that say what they did.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use flowforge_platform::config::HumanDuration;
use flowforge_platform::http::Listener;
use flowforge_platform::http::{Drain, Probes};
use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};
use serde::Deserialize;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackupType {
    /// Everything.
    Full,
    /// What changed since the last full backup.
    Diff,
    /// What changed since the last backup of any type.
    Incr,
}

impl BackupType {
    fn as_str(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Diff => "diff",
            BackupType::Incr => "incr",
        }
    }
}

#[derive(clap::Subcommand)]
pub enum BackupCommand {
    /// Take one backup now.
    Run {
        #[arg(long, value_enum, default_value = "full")]
        r#type: BackupType,
    },
    /// What the repository holds: backups, their times and sizes, the WAL range.
    Info,
    /// Take backups on a schedule, serving /metrics and /health, until stopped.
    Schedule(ScheduleArgs),
}

#[derive(clap::Args)]
pub struct ScheduleArgs {
    #[arg(long, default_value = "0.0.0.0:9097")]
    pub listen: SocketAddr,
    /// A full backup when the last one is this old.
    #[arg(long, default_value = "24h")]
    pub full_every: HumanDuration,
    /// A differential backup when the last full or differential one is this old.
    #[arg(long, default_value = "6h")]
    pub diff_every: HumanDuration,
    /// An incremental backup when the last backup of any type is this old.
    #[arg(long, default_value = "1h")]
    pub incr_every: HumanDuration,
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// Recover to this moment (RFC 3339, e.g. 2026-11-24T10:15:00Z): every transaction
    /// committed up to it, none after. Default: everything archived.
    #[arg(long)]
    pub to: Option<DateTime<Utc>>,
}

/// pgBackRest, found on PATH or at `FLOWFORGE_PGBACKREST`. Its config file and stanza come
/// from `PGBACKREST_CONFIG` and `PGBACKREST_STANZA`, as in the images.
async fn pgbackrest(args: &[&str]) -> anyhow::Result<String> {
    let program = std::env::var("FLOWFORGE_PGBACKREST").unwrap_or_else(|_| "pgbackrest".into());
    let output = Command::new(&program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        bail!("pgbackrest {} failed ({}): {}{}", args.join(" "), output.status, stderr.trim(), stdout.trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[derive(Debug, Deserialize)]
struct StanzaInfo {
    #[serde(default)]
    backup: Vec<BackupInfo>,
    #[serde(default)]
    archive: Vec<ArchiveInfo>,
}

#[derive(Debug, Deserialize)]
struct BackupInfo {
    label: String,
    r#type: String,
    timestamp: Times,
    info: Sizes,
    #[serde(default)]
    error: bool,
}

#[derive(Debug, Deserialize)]
struct Times {
    start: i64,
    stop: i64,
}

#[derive(Debug, Deserialize)]
struct Sizes {
    size: u64,
    repository: RepoSize,
}

#[derive(Debug, Deserialize)]
struct RepoSize {
    delta: u64,
}

#[derive(Debug, Deserialize)]
struct ArchiveInfo {
    min: Option<String>,
    max: Option<String>,
}

async fn info() -> anyhow::Result<StanzaInfo> {
    let text = pgbackrest(&["info", "--output=json"]).await?;
    let mut stanzas: Vec<StanzaInfo> = serde_json::from_str(&text).context("pgbackrest info output")?;
    stanzas.pop().context("pgbackrest info listed no stanza")
}

impl StanzaInfo {
    /// When the newest good backup of one of `types` finished.
    fn last(&self, types: &[&str]) -> Option<i64> {
        self.backup.iter().filter(|b| !b.error && types.contains(&b.r#type.as_str())).map(|b| b.timestamp.stop).max()
    }
}

/// Creates the stanza if it is new (idempotent), then checks that WAL archiving works.
async fn ensure_stanza() -> anyhow::Result<()> {
    pgbackrest(&["stanza-create"]).await?;
    pgbackrest(&["check"]).await?;
    Ok(())
}

async fn take(kind: BackupType) -> anyhow::Result<Duration> {
    let started = Instant::now();
    pgbackrest(&["backup", &format!("--type={}", kind.as_str())]).await?;
    Ok(started.elapsed())
}

pub async fn run(command: BackupCommand) -> anyhow::Result<()> {
    match command {
        BackupCommand::Run { r#type } => {
            ensure_stanza().await?;
            let took = take(r#type).await?;
            let info = info().await?;
            let last = info.backup.last().context("the backup is not in the repository")?;
            println!(
                "{} backup {} in {:.1} s: {} bytes of data, {} bytes stored",
                r#type.as_str(),
                last.label,
                took.as_secs_f64(),
                last.info.size,
                last.info.repository.delta
            );
            Ok(())
        }
        BackupCommand::Info => {
            let info = info().await?;
            for b in &info.backup {
                let stop = DateTime::from_timestamp(b.timestamp.stop, 0).unwrap_or_default();
                println!(
                    "{:<26} {:<4} finished {} in {:>4} s, {:>12} bytes stored{}",
                    b.label,
                    b.r#type,
                    stop.to_rfc3339(),
                    b.timestamp.stop - b.timestamp.start,
                    b.info.repository.delta,
                    if b.error { " (ERROR)" } else { "" }
                );
            }
            if let Some(a) = info.archive.first() {
                println!("WAL archived: {} .. {}", a.min.as_deref().unwrap_or("-"), a.max.as_deref().unwrap_or("-"));
            }
            Ok(())
        }
        BackupCommand::Schedule(args) => schedule(args).await,
    }
}

struct Metrics {
    registry: Registry,
    last_success: GaugeVec,
    duration: GaugeVec,
    runs: IntCounterVec,
    repo_bytes: GaugeVec,
}

impl Metrics {
    fn new() -> anyhow::Result<Self> {
        let m = Metrics {
            registry: Registry::new(),
            last_success: GaugeVec::new(
                Opts::new("backup_last_success_timestamp_seconds", "When the newest good backup of each type finished"),
                &["type"],
            )?,
            duration: GaugeVec::new(
                Opts::new("backup_last_duration_seconds", "How long the last backup took"),
                &["type"],
            )?,
            runs: IntCounterVec::new(
                Opts::new("backup_runs_total", "Backups attempted, by outcome"),
                &["type", "result"],
            )?,
            repo_bytes: GaugeVec::new(
                Opts::new("backup_repository_bytes", "Bytes the retained backups take in the repository"),
                &["type"],
            )?,
        };
        m.registry.register(Box::new(m.last_success.clone()))?;
        m.registry.register(Box::new(m.duration.clone()))?;
        m.registry.register(Box::new(m.runs.clone()))?;
        m.registry.register(Box::new(m.repo_bytes.clone()))?;
        Ok(m)
    }

    fn record(&self, info: &StanzaInfo) {
        for kind in ["full", "diff", "incr"] {
            if let Some(stop) = info.last(&[kind]) {
                self.last_success.with_label_values(&[kind]).set(stop as f64);
            }
            let bytes: u64 = info.backup.iter().filter(|b| b.r#type == kind).map(|b| b.info.repository.delta).sum();
            self.repo_bytes.with_label_values(&[kind]).set(bytes as f64);
        }
    }
}

/// Which backup is due `now`, given the repository's contents.
fn due(info: &StanzaInfo, args: &ScheduleArgs, now: i64) -> Option<BackupType> {
    let older = |last: Option<i64>, every: &HumanDuration| last.is_none_or(|t| now - t >= every.0.as_secs() as i64);
    if older(info.last(&["full"]), &args.full_every) {
        Some(BackupType::Full)
    } else if older(info.last(&["full", "diff"]), &args.diff_every) {
        Some(BackupType::Diff)
    } else if older(info.last(&["full", "diff", "incr"]), &args.incr_every) {
        Some(BackupType::Incr)
    } else {
        None
    }
}

async fn schedule(args: ScheduleArgs) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new()?);
    let listener = Listener::bind(args.listen, None).await?;
    tracing::info!(addr = %listener.local_addr(), "backup scheduler listening");
    let app = Probes::new().metrics(metrics.registry.clone()).router();
    let stop = CancellationToken::new();
    let signalled = stop.clone();
    tokio::spawn(async move {
        flowforge_platform::shutdown::signal().await;
        signalled.cancel();
    });
    let drain = Drain { deadline: Duration::from_secs(5), ..Drain::default() };
    let server = tokio::spawn(flowforge_platform::http::serve(listener, app, stop.clone().cancelled_owned(), drain));
    let mut ready = false;
    loop {
        if let Err(e) = tick(&args, &metrics, &mut ready).await {
            tracing::warn!(error = %format!("{e:#}"), "backup scheduler: retrying in a minute");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = stop.cancelled() => break,
        }
    }
    server.await??;
    Ok(())
}

async fn tick(args: &ScheduleArgs, metrics: &Metrics, ready: &mut bool) -> anyhow::Result<()> {
    if !*ready {
        ensure_stanza().await?;
        *ready = true;
    }
    let held = info().await?;
    metrics.record(&held);
    let Some(kind) = due(&held, args, Utc::now().timestamp()) else { return Ok(()) };
    match take(kind).await {
        Ok(took) => {
            metrics.runs.with_label_values(&[kind.as_str(), "ok"]).inc();
            metrics.duration.with_label_values(&[kind.as_str()]).set(took.as_secs_f64());
            tracing::info!(r#type = kind.as_str(), seconds = took.as_secs_f64(), "backup taken");
            metrics.record(&info().await?);
            Ok(())
        }
        Err(e) => {
            metrics.runs.with_label_values(&[kind.as_str(), "error"]).inc();
            Err(e)
        }
    }
}

/// Restores the database files from the repository: the database must be stopped. On its
/// next start PostgreSQL replays WAL up to the target and opens for writes (promotes).
pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let target;
    let mut command = vec!["restore", "--delta"];
    if let Some(to) = args.to {
        if to > Utc::now() {
            bail!("--to {to} is in the future");
        }
        target = format!("--target={}", to.format("%Y-%m-%d %H:%M:%S%.6f+00"));
        command.extend(["--type=time", &target, "--target-action=promote"]);
    }
    pgbackrest(&command).await?;
    match args.to {
        Some(to) => println!(
            "restored in {:.1} s; PostgreSQL recovers to {} when it starts",
            started.elapsed().as_secs_f64(),
            to.to_rfc3339()
        ),
        None => println!(
            "restored in {:.1} s; PostgreSQL replays all archived WAL when it starts",
            started.elapsed().as_secs_f64()
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(kind: &str, stop: i64) -> BackupInfo {
        BackupInfo {
            label: format!("{kind}-{stop}"),
            r#type: kind.into(),
            timestamp: Times { start: stop - 10, stop },
            info: Sizes { size: 1, repository: RepoSize { delta: 1 } },
            error: false,
        }
    }

    #[test]
    fn the_schedule_takes_the_biggest_backup_that_is_due() {
        let args = ScheduleArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            full_every: HumanDuration(Duration::from_secs(24 * 3600)),
            diff_every: HumanDuration(Duration::from_secs(6 * 3600)),
            incr_every: HumanDuration(Duration::from_secs(3600)),
        };
        let empty = StanzaInfo { backup: vec![], archive: vec![] };
        assert_eq!(due(&empty, &args, 100_000), Some(BackupType::Full));
        let h = 3600;
        let info = StanzaInfo { backup: vec![backup("full", 0)], archive: vec![] };
        assert_eq!(due(&info, &args, h / 2), None);
        assert_eq!(due(&info, &args, h), Some(BackupType::Incr));
        assert_eq!(due(&info, &args, 6 * h), Some(BackupType::Diff));
        assert_eq!(due(&info, &args, 24 * h), Some(BackupType::Full));
        let info = StanzaInfo {
            backup: vec![backup("full", 0), backup("diff", 6 * h), backup("incr", 7 * h)],
            archive: vec![],
        };
        assert_eq!(due(&info, &args, 7 * h + 10), None);
        assert_eq!(due(&info, &args, 8 * h), Some(BackupType::Incr));
        assert_eq!(due(&info, &args, 12 * h), Some(BackupType::Diff));
    }
}
