//! `Idempotency-Key` on create requests: the first response under a key is stored in the
//! same transaction as the tasks it created; a retry with the same key and body gets that
//! response again (and creates nothing), a reuse with a different body is refused.

use axum::http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::error::ApiError;

pub const HEADER: &str = "idempotency-key";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The key from the request headers, if any; malformed keys are an error.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, ApiError> {
        let Some(value) = headers.get(HEADER) else { return Ok(None) };
        match value.to_str() {
            Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => {
                Ok(Some(IdempotencyKey(k.to_owned())))
            }
            _ => Err(ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )),
        }
    }
}

/// A fingerprint of the request a key was first used with.
pub fn fingerprint(route: &str, body: &impl serde::Serialize) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    h.update([0]);
    h.update(serde_json::to_vec(body).unwrap_or_default());
    h.finalize().to_vec()
}

/// What an earlier request under the same key answered.
pub struct Replay {
    pub status: u16,
    pub body: Value,
}

/// Claims `key` for this request inside `conn`'s transaction. `Ok(None)`: first use, go
/// ahead. `Ok(Some(replay))`: answer with the stored response. A concurrent request with the
/// same key waits on the primary key until the first one commits, then replays it.
pub async fn claim(
    conn: &mut PgConnection,
    owner: i64,
    key: &IdempotencyKey,
    fingerprint: &[u8],
) -> Result<Option<Replay>, ApiError> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (owner_id, key, request_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(owner)
    .bind(&key.0)
    .bind(fingerprint)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(None);
    }
    let (hash, status, body): (Vec<u8>, Option<i16>, Option<Value>) =
        sqlx::query_as("SELECT request_hash, status, response FROM idempotency_keys WHERE owner_id = $1 AND key = $2")
            .bind(owner)
            .bind(&key.0)
            .fetch_one(&mut *conn)
            .await?;
    if hash != fingerprint {
        return Err(ApiError::conflict(
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request",
        ));
    }
    match (status, body) {
        (Some(status), Some(body)) => Ok(Some(Replay { status: status as u16, body })),
        _ => {
            Err(ApiError::conflict("idempotency_key_in_progress", "a request with this Idempotency-Key is in progress"))
        }
    }
}

/// Stores the response of the request that claimed `key`, in the same transaction.
pub async fn store(
    conn: &mut PgConnection,
    owner: i64,
    key: &IdempotencyKey,
    status: u16,
    body: &Value,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE idempotency_keys SET status = $3, response = $4 WHERE owner_id = $1 AND key = $2")
        .bind(owner)
        .bind(&key.0)
        .bind(status as i16)
        .bind(body)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
