//! The secret store on a real PostgreSQL.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use flowforge_testkit::TestDb;
use flowforge_webhooks::{sign, verify, Delivery, DeploymentKeys, SecretStore, StoreError, MIGRATOR};

async fn store(db: &TestDb, key: &str, previous: Option<&str>) -> SecretStore {
    SecretStore::new(db.pool.clone(), DeploymentKeys::new(key, previous))
}

#[tokio::test]
async fn rotation_overlaps_then_retires_and_tenants_never_share_a_secret() {
    let db = TestDb::new(&[&MIGRATOR]).await;
    let store = store(&db, "k1", None).await;
    assert!(store.signing_secrets(1).await.unwrap().is_empty());

    let (first, listed) = store.rotate(1, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].retires_at.is_none());
    let (bob, _) = store.rotate(2, Duration::ZERO).await.unwrap();
    assert_ne!(first, bob);

    // Rotated with an hour's overlap: both sign, the new one first.
    let (second, listed) = store.rotate(1, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed[0].retires_at.is_none() && listed[1].retires_at.is_some());
    assert_eq!(store.signing_secrets(1).await.unwrap(), [second.clone(), first.clone()]);
    let d = Delivery { id: "msg_1_1_00", timestamp: 1_700_000_000, body: b"{}" };
    let header = sign(&store.signing_secrets(1).await.unwrap(), &d);
    assert!(verify(&first, &d, &header, d.timestamp, 300).is_ok());
    assert!(verify(&second, &d, &header, d.timestamp, 300).is_ok());
    assert!(verify(&bob, &d, &header, d.timestamp, 300).is_err(), "alice's delivery verified with bob's secret");

    // A third rotation ends the oldest at once; no overlap ends the previous too.
    let (third, _) = store.rotate(1, Duration::ZERO).await.unwrap();
    assert_eq!(store.signing_secrets(1).await.unwrap(), std::slice::from_ref(&third));
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT sealed FROM webhook_secrets").fetch_all(&db.pool).await.unwrap();
    let raw = BASE64.decode(&third.expose()["whsec_".len()..]).unwrap();
    assert!(stored.iter().all(|s| !s.windows(8).any(|w| w == &raw[..8])), "stored in clear");
}

#[tokio::test]
async fn a_new_deployment_key_reseals_every_secret_and_the_old_key_can_then_go() {
    let db = TestDb::new(&[&MIGRATOR]).await;
    let (alice, _) = store(&db, "old", None).await.rotate(1, Duration::ZERO).await.unwrap();
    let rotating = store(&db, "new", Some("old")).await;
    assert_eq!(rotating.signing_secrets(1).await.unwrap(), std::slice::from_ref(&alice));
    assert_eq!(rotating.unsealable_with_current().await.unwrap(), 1);
    assert_eq!(rotating.reseal().await.unwrap(), 1);
    assert_eq!(rotating.reseal().await.unwrap(), 0);
    assert_eq!(rotating.unsealable_with_current().await.unwrap(), 0);
    let retired = store(&db, "new", None).await;
    assert_eq!(retired.signing_secrets(1).await.unwrap(), [alice]);
    // Retired too early (before the reseal): said plainly, not a wrong signature.
    let elsewhere = store(&db, "other", None).await;
    assert!(matches!(elsewhere.signing_secrets(1).await, Err(StoreError::UnknownKey)));
    assert_eq!(elsewhere.unsealable_with_current().await.unwrap(), 1);
}
