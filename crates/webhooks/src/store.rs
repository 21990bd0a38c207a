//! Each tenant's secrets in PostgreSQL, sealed with the deployment's key.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flowforge_platform::{Secret, Source};
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::signature::SigningSecret;

/// The longest a rotated-out secret keeps signing beside its successor.
pub const MAX_OVERLAP: Duration = Duration::from_secs(7 * 24 * 3600);

struct Key {
    id: [u8; 8],
    aead: LessSafeKey,
}

impl Key {
    /// A 256-bit key derived from the configured text (any length, any entropy the
    /// operator gave it), and its id: the first bytes of the key's own hash.
    fn derive(text: &str) -> Key {
        let bytes =
            Sha256::new().chain_update(b"flowforge webhook secrets v1\0").chain_update(text.as_bytes()).finalize();
        let id: [u8; 8] = Sha256::digest(bytes)[..8].try_into().expect("8 bytes");
        let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).expect("32 bytes is an AES-256 key"));
        Key { id, aead }
    }
}

/// Where the deployment keys come from: `FLOWFORGE_WEBHOOK_SECRETS_KEY` (required outside
/// dev) and `FLOWFORGE_WEBHOOK_SECRETS_KEY_PREVIOUS` (empty, or an empty file, unless the
/// key is being rotated). Read by every service that seals or opens secrets.
#[derive(Debug, Clone)]
pub struct DeploymentKeySettings {
    pub current: Secret,
    pub previous: Option<Secret>,
}

impl DeploymentKeySettings {
    /// `None` when the current key is missing (the problem is recorded in `s`).
    pub fn from_source(s: &mut Source) -> Option<DeploymentKeySettings> {
        let current = s.parse_dev_default("WEBHOOK_SECRETS_KEY", "key that seals webhook signing secrets", || {
            Secret::new("dev-webhook-secrets-key")
        });
        let previous = s.optional("WEBHOOK_SECRETS_KEY_PREVIOUS").map(Secret::new);
        current.map(|current| DeploymentKeySettings { current, previous })
    }

    /// The keys; a previous key equal to the current one is no rotation.
    pub fn keys(&self) -> DeploymentKeys {
        let previous = self.previous.as_ref().filter(|p| **p != self.current);
        DeploymentKeys::new(self.current.expose(), previous.map(Secret::expose))
    }
}

/// The deployment's key that seals every tenant's secret, and the previous one while
/// that key is being rotated (secrets sealed with it are resealed with the current one by
/// [`SecretStore::reseal`]).
pub struct DeploymentKeys {
    current: Key,
    previous: Option<Key>,
}

impl DeploymentKeys {
    pub fn new(current: &str, previous: Option<&str>) -> DeploymentKeys {
        DeploymentKeys { current: Key::derive(current), previous: previous.map(Key::derive) }
    }

    /// 2 while a rotation is under way, else 1.
    pub fn count(&self) -> usize {
        1 + usize::from(self.previous.is_some())
    }

    fn seal(&self, owner_id: i64, secret: &SigningSecret) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut data = secret.bytes().to_vec();
        self.current
            .aead
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), aad(owner_id), &mut data)
            .expect("sealing a short secret cannot fail");
        [nonce.as_slice(), &data].concat()
    }

    /// The secret, if one of our keys sealed it for this owner.
    fn open(&self, owner_id: i64, key_id: &[u8], sealed: &[u8]) -> Option<SigningSecret> {
        let key = [Some(&self.current), self.previous.as_ref()].into_iter().flatten().find(|k| k.id == key_id)?;
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, data) = sealed.split_at(NONCE_LEN);
        let mut data = data.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = key.aead.open_in_place(nonce, aad(owner_id), &mut data).ok()?;
        Some(SigningSecret::from_bytes(plain.to_vec()))
    }
}

/// The owner is bound into every seal: a sealed secret copied to another owner's row
/// does not open.
fn aad(owner_id: i64) -> Aad<[u8; 8]> {
    Aad::from(owner_id.to_be_bytes())
}

/// What may be shown about a secret after its creation.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(test, derive(PartialEq))]
pub struct SecretInfo {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    /// None for the current secret; when a rotated-out one stops signing.
    pub retires_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct ActiveSecret {
    #[sqlx(flatten)]
    info: SecretInfo,
    key_id: Vec<u8>,
    sealed: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("a webhook secret was sealed with a key this deployment no longer has")]
    UnknownKey,
}

#[derive(Clone)]
pub struct SecretStore {
    db: PgPool,
    keys: Arc<DeploymentKeys>,
}

impl SecretStore {
    pub fn new(db: PgPool, keys: DeploymentKeys) -> SecretStore {
        SecretStore { db, keys: Arc::new(keys) }
    }

    pub fn keys(&self) -> &DeploymentKeys {
        &self.keys
    }

    /// A new current secret for `owner_id`. The one it replaces keeps signing beside it for
    /// `overlap` (none: it stops at once), so receivers can switch without a gap; any
    /// older one stops now. Returns the new secret, the only time it is shown, and the
    /// owner's secrets as they now stand.
    pub async fn rotate(
        &self,
        owner_id: i64,
        overlap: Duration,
    ) -> Result<(SigningSecret, Vec<SecretInfo>), StoreError> {
        let overlap = overlap.min(MAX_OVERLAP);
        let secret = SigningSecret::generate();
        let mut tx = self.db.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('webhook_secrets', $1))")
            .bind(owner_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM webhook_secrets WHERE owner_id = $1 AND retires_at IS NOT NULL")
            .bind(owner_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE webhook_secrets SET retires_at = now() + make_interval(secs => $2)
             WHERE owner_id = $1 AND retires_at IS NULL",
        )
        .bind(owner_id)
        .bind(overlap.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO webhook_secrets (owner_id, sealed, key_id) VALUES ($1, $2, $3)")
            .bind(owner_id)
            .bind(self.keys.seal(owner_id, &secret))
            .bind(self.keys.current.id.as_slice())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((secret, self.list(owner_id).await?))
    }

    /// The owner's secrets that sign now, current first, sealed.
    async fn active(&self, owner_id: i64) -> Result<Vec<ActiveSecret>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, created_at, retires_at, key_id, sealed FROM webhook_secrets
             WHERE owner_id = $1 AND (retires_at IS NULL OR retires_at > now())
             ORDER BY retires_at IS NOT NULL, id DESC",
        )
        .bind(owner_id)
        .fetch_all(&self.db)
        .await?)
    }

    /// The owner's secrets that sign now, current first.
    pub async fn list(&self, owner_id: i64) -> Result<Vec<SecretInfo>, StoreError> {
        Ok(self.active(owner_id).await?.into_iter().map(|s| s.info).collect())
    }

    /// The secrets a delivery for `owner_id` is signed with, current first; empty when the
    /// owner has none.
    pub async fn signing_secrets(&self, owner_id: i64) -> Result<Vec<SigningSecret>, StoreError> {
        self.active(owner_id)
            .await?
            .iter()
            .map(|s| self.keys.open(owner_id, &s.key_id, &s.sealed).ok_or(StoreError::UnknownKey))
            .collect()
    }

    /// Reseals with the current deployment key every secret sealed with the previous one,
    /// and deletes retired secrets. Safe to run from every replica at once. Returns how
    /// many were resealed.
    pub async fn reseal(&self) -> Result<u64, StoreError> {
        sqlx::query("DELETE FROM webhook_secrets WHERE retires_at <= now()").execute(&self.db).await?;
        let stale: Vec<(i64, i64, Vec<u8>, Vec<u8>)> =
            sqlx::query_as("SELECT id, owner_id, key_id, sealed FROM webhook_secrets WHERE key_id <> $1")
                .bind(self.keys.current.id.as_slice())
                .fetch_all(&self.db)
                .await?;
        let mut resealed = 0;
        for (id, owner_id, key_id, sealed) in stale {
            let Some(secret) = self.keys.open(owner_id, &key_id, &sealed) else { continue };
            resealed +=
                sqlx::query("UPDATE webhook_secrets SET sealed = $2, key_id = $3 WHERE id = $1 AND key_id = $4")
                    .bind(id)
                    .bind(self.keys.seal(owner_id, &secret))
                    .bind(self.keys.current.id.as_slice())
                    .bind(&key_id)
                    .execute(&self.db)
                    .await?
                    .rows_affected();
        }
        Ok(resealed)
    }

    /// Secrets sealed with any key but the current one: zero once the previous key may go.
    pub async fn unsealable_with_current(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM webhook_secrets WHERE key_id <> $1")
            .bind(self.keys.current.id.as_slice())
            .fetch_one(&self.db)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_for_its_owner_and_with_a_key_we_have() {
        let keys = DeploymentKeys::new("deployment key", None);
        let secret = SigningSecret::generate();
        let sealed = keys.seal(7, &secret);
        assert_eq!(keys.open(7, &keys.current.id, &sealed), Some(secret.clone()));
        assert_eq!(keys.open(8, &keys.current.id, &sealed), None, "moved to another owner");
        let mut tampered = sealed.clone();
        tampered[NONCE_LEN] ^= 1;
        assert_eq!(keys.open(7, &keys.current.id, &tampered), None);
        let rotated = DeploymentKeys::new("new key", Some("deployment key"));
        assert_eq!(rotated.count(), 2);
        assert_eq!(rotated.open(7, &keys.current.id, &sealed), Some(secret.clone()), "the previous key still opens");
        assert_eq!(DeploymentKeys::new("new key", None).open(7, &keys.current.id, &sealed), None);
    }
}
