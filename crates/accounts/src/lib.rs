//! Users, API tokens and web sessions, and the tables that hold them. A token is `ff_` +
//! 43 characters of base64url (256 random bits); only its SHA-256 is stored. Used by the
//! api (authentication, tokens, sessions) and by `flowforge token create`.
//!
//! [`MIGRATOR`] also carries the migrations of the api's `audit_log` and
//! `idempotency_keys` tables: the first of them creates these beside `users`, and an
//! applied migration cannot be split.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// The schema of users, tokens and sessions (after the queue engine's: `tasks.owner_id`
/// refers to users). Shares `_sqlx_migrations` with the other migrators, so each ignores
/// versions it does not know.
pub static MIGRATOR: sqlx::migrate::Migrator = {
    let mut m = sqlx::migrate!("./migrations");
    m.ignore_missing = true;
    m
};

/// How long a token works: a duration (`90d`), or `never`. Read by the api
/// (`FLOWFORGE_TOKEN_TTL`) and by `flowforge token create --ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTtl(pub Option<Duration>);

impl std::str::FromStr for TokenTtl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "never" {
            return Ok(TokenTtl(None));
        }
        Ok(TokenTtl(Some(s.parse::<flowforge_platform::config::HumanDuration>()?.0)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "user_role", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?} (expected user or admin)")),
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Caller {
    pub user_id: i64,
    pub token_id: i64,
    pub name: String,
    pub role: Role,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether this caller may see a task owned by `owner`.
    pub fn can_see(&self, owner: Option<i64>) -> bool {
        self.is_admin() || owner == Some(self.user_id)
    }
}

/// A freshly issued token: the only time its plaintext exists.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IssuedToken {
    pub id: i64,
    pub token: String,
    /// None: it never expires.
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a listing shows of a token: never the token or its hash.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    /// The first characters, to tell tokens apart.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const TOKEN_PREFIX: &str = "ff_";

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// 256 random bits, base64url: tokens, session ids, CSRF tokens.
fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Checks a user name the way the database does, for a clear error before it.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-'));
    if ok {
        Ok(())
    } else {
        Err("1 to 64 characters: letters, digits, '_', '.', '@' or '-'".into())
    }
}

pub async fn authenticate(db: &PgPool, token: &str) -> sqlx::Result<Option<Caller>> {
    if !well_formed(token) {
        return Ok(None);
    }
    Ok(lookup(db, &hash(token)).await?.map(|row| row.caller))
}

/// [`authenticate`], answered from `cache` when this replica checked the token lately.
pub async fn authenticate_cached(db: &PgPool, cache: &TokenCache, token: &str) -> sqlx::Result<Option<Caller>> {
    if !well_formed(token) {
        return Ok(None);
    }
    let key = hash(token);
    if let Some(caller) = cache.get(&key) {
        return Ok(Some(caller));
    }
    let Some(row) = lookup(db, &key).await? else { return Ok(None) };
    cache.put(key, row.caller.clone(), row.expires_at);
    Ok(Some(row.caller))
}

/// The caller of `token` if this replica checked it recently; no lookup.
pub fn cached(cache: &TokenCache, token: &str) -> Option<Caller> {
    well_formed(token).then(|| cache.get(&hash(token))).flatten()
}

fn well_formed(token: &str) -> bool {
    token.starts_with(TOKEN_PREFIX) && token.len() <= 128
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    #[sqlx(flatten)]
    caller: Caller,
    expires_at: Option<DateTime<Utc>>,
}

async fn lookup(db: &PgPool, token_hash: &[u8]) -> sqlx::Result<Option<TokenRow>> {
    sqlx::query_as(
        "SELECT u.id AS user_id, t.id AS token_id, u.name, u.role, t.expires_at
         FROM api_tokens t JOIN users u ON u.id = t.user_id
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())",
    )
    .bind(token_hash)
    .fetch_optional(db)
    .await
}

/// Most tokens remembered; past it the cache starts over (a flood of distinct valid
/// tokens costs database reads, not memory).
const MAX_CACHED_TOKENS: usize = 10_000;

/// Callers this replica authenticated lately, by token hash, so that a request costs no
/// database round trip for its credentials. An entry lives `ttl` at most, and never past
/// its token's expiry: a token revoked through this replica is forgotten at once, one
/// revoked through another stops working here within `ttl`. A zero `ttl` turns it off.
/// Tokens that did not authenticate are never remembered.
pub struct TokenCache {
    ttl: Duration,
    entries: Mutex<HashMap<Vec<u8>, (Caller, Instant)>>,
}

impl TokenCache {
    pub fn new(ttl: Duration) -> Self {
        TokenCache { ttl, entries: Default::default() }
    }

    fn get(&self, key: &[u8]) -> Option<Caller> {
        let mut entries = self.entries.lock().expect("token cache");
        match entries.get(key) {
            Some((caller, until)) if *until > Instant::now() => Some(caller.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn put(&self, key: Vec<u8>, caller: Caller, expires_at: Option<DateTime<Utc>>) {
        if self.ttl.is_zero() {
            return;
        }
        let left = expires_at.and_then(|at| (at - Utc::now()).to_std().ok()).map_or(self.ttl, |l| l.min(self.ttl));
        let mut entries = self.entries.lock().expect("token cache");
        if entries.len() >= MAX_CACHED_TOKENS {
            entries.clear();
        }
        entries.insert(key, (caller, Instant::now() + left));
    }

    /// Forgets a revoked token.
    pub fn forget_token(&self, token_id: i64) {
        self.entries.lock().expect("token cache").retain(|_, (caller, _)| caller.token_id != token_id);
    }
}

pub async fn create_user(db: impl sqlx::PgExecutor<'_>, name: &str, role: Role) -> sqlx::Result<User> {
    sqlx::query_as("INSERT INTO users (name, role) VALUES ($1, $2) RETURNING id, name, role, created_at")
        .bind(name)
        .bind(role)
        .fetch_one(db)
        .await
}

/// The user called `name`, created with `role` if missing (an existing user keeps its role
/// unless `role` is admin, which promotes it: how the first admin is bootstrapped).
pub async fn ensure_user(db: &PgPool, name: &str, role: Role) -> sqlx::Result<User> {
    sqlx::query_as(
        "INSERT INTO users (name, role) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET role = CASE WHEN EXCLUDED.role = 'admin' THEN 'admin' ELSE users.role END
         RETURNING id, name, role, created_at",
    )
    .bind(name)
    .bind(role)
    .fetch_one(db)
    .await
}

/// Issues a token for `user_id`, valid for `ttl` (None: until revoked).
pub async fn issue_token(
    db: impl sqlx::PgExecutor<'_>,
    user_id: i64,
    name: &str,
    ttl: Option<std::time::Duration>,
) -> sqlx::Result<IssuedToken> {
    let token = format!("{TOKEN_PREFIX}{}", random_secret());
    let (id, expires_at): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "INSERT INTO api_tokens (user_id, name, token_hash, prefix, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
         RETURNING id, expires_at",
    )
    .bind(user_id)
    .bind(name)
    .bind(hash(&token))
    .bind(&token[..TOKEN_PREFIX.len() + 6])
    .bind(ttl.map(|t| t.as_secs_f64()))
    .fetch_one(db)
    .await?;
    Ok(IssuedToken { id, token, expires_at })
}

/// Tokens of `user_id` that still work (not revoked, not expired).
pub async fn active_tokens(db: impl sqlx::PgExecutor<'_>, user_id: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM api_tokens
         WHERE user_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind(user_id)
    .fetch_one(db)
    .await
}

/// The newest `limit` tokens of `user_id`, revoked and expired ones included.
pub async fn list_tokens(db: &PgPool, user_id: i64, limit: i64) -> sqlx::Result<Vec<TokenInfo>> {
    sqlx::query_as(
        "SELECT id, name, prefix, created_at, expires_at, revoked_at FROM api_tokens
         WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(user_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Revokes a token of `user_id` (or of anyone, for admins). True if one was revoked.
pub async fn revoke_token(db: &PgPool, caller: &Caller, token_id: i64) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL AND (user_id = $2 OR $3)",
    )
    .bind(token_id)
    .bind(caller.user_id)
    .bind(caller.is_admin())
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The browser's session cookie. `__Host-` makes the browser insist on Secure, Path=/ and
/// no Domain, so no other host or path can plant or read it.
pub const SESSION_COOKIE: &str = "__Host-flowforge_session";

/// A session just opened: the only time its id exists in plaintext.
#[derive(Debug, Clone)]
pub struct OpenedSession {
    pub id: String,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// What a session cookie resolves to.
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    pub id_hash: Vec<u8>,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    #[sqlx(flatten)]
    caller: Caller,
    csrf_token: String,
    expires_at: DateTime<Utc>,
}

/// Opens a session for the caller, tied to the token they signed in with.
pub async fn open_session(db: &PgPool, caller: &Caller, ttl: Duration) -> sqlx::Result<OpenedSession> {
    let id = random_secret();
    let csrf_token = random_secret();
    let expires_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO sessions (id_hash, token_id, csrf_token, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4)) RETURNING expires_at",
    )
    .bind(hash(&id))
    .bind(caller.token_id)
    .bind(&csrf_token)
    .bind(ttl.as_secs_f64())
    .fetch_one(db)
    .await?;
    Ok(OpenedSession { id, csrf_token, expires_at })
}

/// The live session with this id: not expired, and its token neither revoked nor expired.
pub async fn session(db: &PgPool, id: &str) -> sqlx::Result<Option<Session>> {
    if id.is_empty() || id.len() > 128 {
        return Ok(None);
    }
    let id_hash = hash(id);
    let row: Option<SessionRow> = sqlx::query_as(
        "SELECT u.id AS user_id, t.id AS token_id, u.name, u.role, s.csrf_token, s.expires_at
         FROM sessions s JOIN api_tokens t ON t.id = s.token_id JOIN users u ON u.id = t.user_id
         WHERE s.id_hash = $1 AND s.expires_at > now()
           AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())",
    )
    .bind(&id_hash)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| Session { caller: r.caller, id_hash, csrf_token: r.csrf_token, expires_at: r.expires_at }))
}

pub async fn close_session(db: &PgPool, id_hash: &[u8]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM sessions WHERE id_hash = $1").bind(id_hash).execute(db).await?;
    Ok(())
}

/// Compares secrets in time independent of where they differ.
pub fn secrets_match(given: &str, expected: &str) -> bool {
    given.len() == expected.len() && given.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_follow_the_database_rule() {
        assert!(super::validate_name("alice@example.com").is_ok());
        assert!(super::validate_name("").is_err());
        assert!(super::validate_name("a b").is_err());
        assert!(super::validate_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(super::secrets_match("abc", "abc"));
        assert!(!super::secrets_match("abd", "abc"));
        assert!(!super::secrets_match("ab", "abc"));
        assert!(!super::secrets_match("", "abc"));
    }
}
