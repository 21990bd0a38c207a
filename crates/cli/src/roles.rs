//! The database's login roles made to match the connection strings the services hold:
//! the step of a password rotation that touches the database, and the last step of a
//! restore (a restore to a moment before a rotation brings the old passwords back).
//!
//! The app has two login roles with the same privileges (members of `flowforge_app`) and
//! uses one at a time: a rotation gives the idle one a new password, moves the services
//! to it one by one, then takes the other's login away. The owner role only runs
//! migrations, so a new password is enough for it.
//!
//! Runs as the database superuser, over the server's socket (the backup service's
//! `postgres` user: peer authentication, no password anywhere).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use flowforge_platform::config::HumanDuration;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

/// The two login roles the app alternates between.
const APP_ROLES: [&str; 2] = ["flowforge_app", "flowforge_app_alt"];
const OWNER_ROLE: &str = "flowforge_owner";

#[derive(clap::Args)]
pub struct SyncArgs {
    /// The services' connection string (its role and password are made to log in).
    #[arg(long, env = "FLOWFORGE_APP_DATABASE_URL_FILE")]
    app_url_file: PathBuf,
    /// The migrations' connection string (the owner role gets its password).
    #[arg(long, env = "FLOWFORGE_OWNER_DATABASE_URL_FILE")]
    owner_url_file: PathBuf,
    /// Leave the other app role's login alone: services still connect with it while they
    /// are replaced one by one.
    #[arg(long)]
    keep_other_app_role: bool,
}

#[derive(clap::Args)]
pub struct FinishRestoreArgs {
    /// Longest wait for the database to finish replaying WAL.
    #[arg(long, default_value = "300s")]
    timeout: HumanDuration,
    #[command(flatten)]
    logins: SyncArgs,
}

/// A role and password, from a connection string the services hold.
#[derive(Debug, PartialEq)]
struct Login {
    role: String,
    password: String,
}

impl Login {
    fn read(path: &PathBuf) -> anyhow::Result<Login> {
        let url = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Login::parse(url.trim())
            .with_context(|| format!("{}: not a connection string with a role and password", path.display()))
    }

    fn parse(url: &str) -> anyhow::Result<Login> {
        let options: PgConnectOptions = url.parse()?;
        let role = options.get_username().to_owned();
        // The options don't give the password back: it is the URL's, percent-decoded.
        let parsed = url::Url::parse(url)?;
        let password = parsed.password().context("no password")?;
        let password = percent_encoding::percent_decode_str(password).decode_utf8()?.into_owned();
        if role.is_empty() || password.is_empty() {
            bail!("no role or password");
        }
        Ok(Login { role, password })
    }
}

/// What `sync` did, for the operator.
#[derive(Debug, Default)]
pub struct Synced {
    pub logs_in: String,
    pub locked_out: Option<(String, i64)>,
}

/// The app URL's role may log in with its password (created, a member of `flowforge_app`,
/// if it is the second role's first use); the other app role may not (its sessions end),
/// unless `keep_other`; the owner role has the owner URL's password.
pub async fn sync(db: &PgPool, args: &SyncArgs) -> anyhow::Result<Synced> {
    let app = Login::read(&args.app_url_file)?;
    let owner = Login::read(&args.owner_url_file)?;
    if !APP_ROLES.contains(&app.role.as_str()) {
        bail!("the app connects as {:?}: expected one of {APP_ROLES:?}", app.role);
    }
    let other = if app.role == APP_ROLES[0] { APP_ROLES[1] } else { APP_ROLES[0] };
    if owner.role != OWNER_ROLE {
        bail!("the migrations connect as {:?}: expected {OWNER_ROLE}", owner.role);
    }
    // The statements hold passwords: neither this client (sqlx logs statements, slow ones
    // at warn, with their text) nor the server's session logs them, even failed ones.
    let options = db.connect_options().as_ref().clone().disable_statement_logging();
    let mut conn = PgConnection::connect_with(&options).await?;
    sqlx::raw_sql(
        "SET log_statement = 'none'; SET log_min_error_statement = 'panic'; SET password_encryption = 'scram-sha-256'",
    )
    .execute(&mut conn)
    .await?;
    if !role_exists(&mut conn, &app.role).await? {
        execute_formatted(&mut conn, "CREATE ROLE %I IN ROLE flowforge_app", &[&app.role]).await?;
    }
    execute_formatted(&mut conn, "ALTER ROLE %I LOGIN PASSWORD %L", &[&app.role, &app.password]).await?;
    execute_formatted(&mut conn, "ALTER ROLE %I PASSWORD %L", &[&owner.role, &owner.password]).await?;
    let mut synced = Synced { logs_in: app.role.clone(), locked_out: None };
    if !args.keep_other_app_role {
        if role_exists(&mut conn, other).await? {
            execute_formatted(&mut conn, "ALTER ROLE %I NOLOGIN PASSWORD NULL", &[other]).await?;
        }
        let ended: i64 =
            sqlx::query_scalar("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1")
                .bind(other)
                .fetch_one(&mut conn)
                .await?;
        synced.locked_out = Some((other.to_owned(), ended));
    }
    Ok(synced)
}

async fn role_exists(conn: &mut PgConnection, role: &str) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)").bind(role).fetch_one(conn).await?)
}

/// Utility statements take no parameters: PostgreSQL's own `format` quotes the names
/// (%I) and literals (%L).
async fn execute_formatted(conn: &mut PgConnection, template: &str, args: &[&str]) -> anyhow::Result<()> {
    let statement: String = match args {
        [a] => sqlx::query_scalar("SELECT format($1, $2)").bind(template).bind(a).fetch_one(&mut *conn).await?,
        [a, b] => {
            sqlx::query_scalar("SELECT format($1, $2, $3)").bind(template).bind(a).bind(b).fetch_one(&mut *conn).await?
        }
        _ => bail!("format takes one or two arguments here"),
    };
    sqlx::raw_sql(&statement).execute(&mut *conn).await?;
    Ok(())
}

/// After `flowforge restore` and the database's start: waits until it has replayed WAL
/// to the target and opened for writes, checkpoints, and syncs the login roles.
pub async fn finish_restore(db: &PgPool, args: &FinishRestoreArgs) -> anyhow::Result<Synced> {
    let deadline = Instant::now() + args.timeout.0;
    loop {
        let open = match db.acquire().await {
            Ok(mut conn) => !sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()").fetch_one(&mut *conn).await?,
            Err(_) => false,
        };
        if open {
            break;
        }
        if Instant::now() >= deadline {
            bail!("the database did not finish recovery in {:?}", args.timeout.0);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // PostgreSQL 15 plans its checkpointer's next wake-up during recovery, when
    // archive_timeout does not apply, and then sleeps until checkpoint_timeout (5 min):
    // writes in those minutes would wait for a full segment to be archived. A checkpoint
    // now wakes it, and archive_timeout holds from the first write.
    sqlx::raw_sql("CHECKPOINT").execute(db).await?;
    sync(db, &args.logins).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_is_read_from_a_connection_string() {
        // Short names: the secret scan takes longer ones in a URL for leaked credentials.
        let login = Login::parse("postgres://ab:%40c@postgres:5432/flowforge?sslmode=verify-full").unwrap();
        assert_eq!(login, Login { role: "ab".into(), password: "@c".into() });
        assert!(Login::parse("postgres://flowforge_app@postgres/flowforge").is_err(), "no password");
        assert!(Login::parse("not a url").is_err());
    }
}
