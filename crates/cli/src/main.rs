//! `flowforge`: operate a FlowForge deployment.

mod alert_receiver;
mod backup;
mod bench;
mod check;
mod drill;
mod load;
mod roles;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flowforge_accounts::{self as accounts, Role, TokenTtl};
use flowforge_platform::config::HumanDuration;
use flowforge_platform::db::DatabaseSettings;
use flowforge_platform::telemetry::{self, TelemetrySettings};
use flowforge_platform::Source;
use flowforge_webhooks::{DeploymentKeySettings, SecretStore};
use sqlx::PgPool;

#[derive(Parser)]
#[command(
    name = "flowforge",
    version,
    about = "Operate a FlowForge deployment",
    long_about = "Database commands read FLOWFORGE_DATABASE_URL (or FLOWFORGE_DATABASE_URL_FILE), like the services."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply every database migration (idempotent).
    Migrate,
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Check a running stack: health, readiness, and (with a token) an authenticated round trip.
    Check(check::CheckArgs),
    /// Delete finished tasks older than a given age.
    Retention {
        /// e.g. 7d, 12h.
        #[arg(long, default_value = "7d")]
        older_than: HumanDuration,
    },
    /// Benchmark the queue with separate worker processes: burn-down throughput and
    /// duplicate runs, enqueue→start latency. Needs a server where it may create databases.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Point-in-time backups (pgBackRest): take one, list them, or run the schedule.
    Backup {
        #[command(subcommand)]
        command: backup::BackupCommand,
    },
    /// Restore the database files from the backup repository, to a moment or to the
    /// newest archived WAL. The database must be stopped; it recovers when it starts.
    Restore(backup::RestoreArgs),
    /// After a restore, once the database is started: wait until it has replayed WAL and
    /// opened for writes, checkpoint, and sync the login roles (as `roles sync`). Run as
    /// the database superuser.
    FinishRestore(roles::FinishRestoreArgs),
    /// The database's login roles, made to match the connection strings the services hold
    /// (password rotation). Run as the database superuser.
    Roles {
        #[command(subcommand)]
        command: RolesCommand,
    },
    /// Create tasks at a steady rate against a running stack, counting what the client sees.
    Load(load::LoadArgs),
    /// The verdict of a failure drill on a load run's tasks: lost, completed twice, ran
    /// again, failed requests.
    Drill {
        #[command(subcommand)]
        command: drill::DrillCommand,
    },
    /// Serve the stack's Alertmanager webhook receiver (records what it gets).
    AlertReceiver(alert_receiver::ReceiverArgs),
    /// Reseal every user's webhook signing secret with the current deployment key
    /// (FLOWFORGE_WEBHOOK_SECRETS_KEY, the previous one in ..._PREVIOUS). Fails while any
    /// secret is still sealed with another key, so a key is only retired once unused.
    ResealWebhookSecrets,
    /// Exit 0 if the HTTP service at IP:PORT answers /health (a HEALTHCHECK without a shell).
    Healthcheck {
        #[arg(long, default_value = "127.0.0.1:9095")]
        addr: SocketAddr,
    },
}

#[derive(Subcommand)]
enum RolesCommand {
    /// The app URL's role logs in with its password, the other app role no longer does
    /// (unless --keep-other-app-role), the owner role gets the owner URL's password.
    Sync(roles::SyncArgs),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token (and the user, if new); prints only the token on stdout.
    Create {
        /// User name; created if missing.
        #[arg(long)]
        user: String,
        /// Role for a new user; `admin` also promotes an existing one (bootstrapping the first admin).
        #[arg(long, default_value = "user")]
        role: Role,
        /// A label to recognise the token by.
        #[arg(long, default_value = "cli")]
        name: String,
        /// How long it works, e.g. 90d; `never` for a token that works until revoked.
        #[arg(long, default_value = "90d")]
        ttl: TokenTtl,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            // Like the services: a configuration problem is exit status 2.
            if e.downcast_ref::<flowforge_platform::ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn report_logins(synced: roles::Synced) {
    eprintln!("database: {} may log in", synced.logs_in);
    if let Some((role, ended)) = synced.locked_out {
        eprintln!("database: {role} may no longer log in ({ended} of its sessions ended)");
    }
}

/// Log settings only, for the commands that need no database.
fn logging(service: &'static str) -> anyhow::Result<()> {
    let mut source = Source::from_env();
    let log = TelemetrySettings::from_source(&mut source);
    source.finish()?;
    telemetry::init(service, &log);
    Ok(())
}

/// Reads the database settings (and log settings) the way the services do.
fn database() -> anyhow::Result<PgPool> {
    database_from(Source::from_env())
}

fn database_from(source: Source) -> anyhow::Result<PgPool> {
    database_settings(source)?.pool("flowforge-cli")
}

fn database_settings(mut source: Source) -> anyhow::Result<DatabaseSettings> {
    let settings = DatabaseSettings::from_source(&mut source, 32);
    let log = TelemetrySettings::from_source(&mut source);
    source.finish()?;
    telemetry::init("flowforge", &log);
    Ok(settings.expect("checked by finish"))
}

/// Every schema FlowForge has, in order: the queue's `tasks` first, since the accounts'
/// migrations refer to it.
async fn migrate(db: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    for migrator in [&flowforge_queue::MIGRATOR, &flowforge_accounts::MIGRATOR, &flowforge_webhooks::MIGRATOR] {
        migrator.run(db).await?;
    }
    Ok(())
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Migrate => {
            let db = database()?;
            migrate(&db).await?;
            eprintln!("migrations applied");
        }
        Command::Token { command: TokenCommand::Create { user, role, name, ttl } } => {
            accounts::validate_name(&user).map_err(|m| anyhow::anyhow!("--user: {m}"))?;
            let db = database()?;
            let user = accounts::ensure_user(&db, &user, role).await?;
            let token = accounts::issue_token(&db, user.id, &name, ttl.0).await?;
            eprintln!("token {} for user {} ({:?})", token.id, user.name, user.role);
            println!("{}", token.token);
        }
        Command::ResealWebhookSecrets => {
            let mut source = Source::from_env();
            let keys = DeploymentKeySettings::from_source(&mut source);
            let db = database_from(source)?;
            let store = SecretStore::new(db, keys.expect("checked by finish").keys());
            let resealed = store.reseal().await?;
            let left = store.unsealable_with_current().await?;
            eprintln!("webhook secrets resealed with the current key: {resealed}; sealed with another key: {left}");
            if left > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Check(args) => return check::run(args).await,
        Command::Drill { command } => return drill::run(&database()?, command).await,
        Command::Retention { older_than } => {
            let db = database()?;
            let cutoff = chrono::Utc::now() - chrono::Duration::from_std(older_than.0)?;
            let deleted = flowforge_queue::Queue::new(db).purge_finished(cutoff).await?;
            eprintln!("deleted {deleted} finished task(s) older than {:?}", older_than.0);
        }
        Command::Bench { command: bench::BenchCommand::Api(args) } => {
            logging("bench")?;
            bench::api::run(args).await?;
        }
        Command::Bench { command } => {
            // The engine logs every attempt at info; a benchmark of 200,000 tasks wants
            // only warnings unless FLOWFORGE_LOG says otherwise.
            let mut vars: Vec<(String, String)> = std::env::vars().collect();
            if !vars.iter().any(|(k, _)| k == "FLOWFORGE_LOG") {
                vars.push(("FLOWFORGE_LOG".into(), "warn".into()));
            }
            bench::run(database_settings(Source::from_vars(vars))?, command).await?;
        }
        Command::AlertReceiver(args) => {
            logging("alert-receiver")?;
            alert_receiver::run(args).await?;
        }
        Command::Backup { command } => {
            logging("backup")?;
            backup::run(command).await?;
        }
        Command::Restore(args) => {
            logging("restore")?;
            backup::restore(args).await?;
        }
        Command::Load(args) => load::run(args).await?,
        Command::FinishRestore(args) => report_logins(roles::finish_restore(&database()?, &args).await?),
        Command::Roles { command: RolesCommand::Sync(args) } => report_logins(roles::sync(&database()?, &args).await?),
        Command::Healthcheck { addr } => return Ok(flowforge_platform::probe::exit_code(addr, None)),
    }
    Ok(ExitCode::SUCCESS)
}
