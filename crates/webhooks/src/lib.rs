//! Webhook signatures as [Standard Webhooks](https://www.standardwebhooks.com/) defines
//! them, with a signing secret per tenant, so that a receiver's secret verifies only what
//! was sent on behalf of the tenant it belongs to.
//!
//! A delivery carries three headers:
//! - `webhook-id`: unique per delivery attempt (the task id and attempt are in it);
//! - `webhook-timestamp`: unix seconds;
//! - `webhook-signature`: `v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`,
//!   space-separated when the tenant's secret is being rotated (current secret first).
//!
//! Secrets (`whsec_<base64>`) are created and rotated by [`SecretStore`], which keeps them
//! sealed with the deployment's key.

mod signature;
mod store;

pub use signature::{
    sign, verify, Delivery, SigningSecret, VerifyError, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
pub use store::{DeploymentKeySettings, DeploymentKeys, SecretInfo, SecretStore, StoreError, MAX_OVERLAP};

/// The table's schema. Shares `_sqlx_migrations` with the other migrators, so every
/// migrator ignores versions it does not know.
pub static MIGRATOR: sqlx::migrate::Migrator = {
    let mut m = sqlx::migrate!("./migrations");
    m.ignore_missing = true;
    m
};
