//! Signing and verifying one delivery.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

const PREFIX: &str = "whsec_";
const SECRET_BYTES: usize = 32;

/// A tenant's signing secret: random bytes, written `whsec_<base64>`.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl SigningSecret {
    pub fn generate() -> SigningSecret {
        let mut bytes = vec![0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        SigningSecret(bytes)
    }

    /// `whsec_<base64>`, as receivers configure it. Shown once, when created.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", BASE64.encode(&self.0))
    }

    /// Parses `whsec_<base64>` (the prefix is optional, as the specification allows).
    pub fn parse(text: &str) -> Option<SigningSecret> {
        let bytes = BASE64.decode(text.strip_prefix(PREFIX).unwrap_or(text)).ok()?;
        (bytes.len() >= 24 && bytes.len() <= 64).then_some(SigningSecret(bytes))
    }

    pub(crate) fn from_bytes(bytes: Vec<u8>) -> SigningSecret {
        SigningSecret(bytes)
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

/// What is signed: the delivery's id, when it was sent and the exact body bytes.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub id: &'a str,
    pub timestamp: i64,
    pub body: &'a [u8],
}

impl Delivery<'_> {
    /// A delivery id unique per attempt, naming the task and attempt it belongs to.
    pub fn id_for(task_id: i64, attempt: i32) -> String {
        let mut nonce = [0u8; 8];
        rand::rng().fill_bytes(&mut nonce);
        format!("msg_{task_id}_{attempt}_{}", hex_lower(&nonce))
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn mac(secret: &SigningSecret, delivery: &Delivery<'_>) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.bytes()).expect("HMAC takes keys of any length");
    mac.update(delivery.id.as_bytes());
    mac.update(b".");
    mac.update(delivery.timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(delivery.body);
    mac
}

/// The `webhook-signature` header: one `v1,<base64>` per secret, in the order given.
pub fn sign(secrets: &[SigningSecret], delivery: &Delivery<'_>) -> String {
    let signatures: Vec<String> =
        secrets.iter().map(|s| format!("v1,{}", BASE64.encode(mac(s, delivery).finalize().into_bytes()))).collect();
    signatures.join(" ")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the timestamp is more than {0} s away from now")]
    Stale(i64),
    #[error("no signature matches")]
    NoMatch,
}

/// What a receiver does: accepts the delivery if any `v1` signature in `header` is the
/// HMAC of `delivery` with `secret` (compared in constant time) and its timestamp is
/// within `tolerance_secs` of `now`.
pub fn verify(
    secret: &SigningSecret,
    delivery: &Delivery<'_>,
    header: &str,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    if (now - delivery.timestamp).abs() > tolerance_secs {
        return Err(VerifyError::Stale(tolerance_secs));
    }
    let matches = header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| BASE64.decode(s).ok())
        .any(|sig| mac(secret, delivery).verify_slice(&sig).is_ok());
    matches.then_some(()).ok_or(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_specification_example() {
        // The example of the Standard Webhooks specification (spec/standard-webhooks.md).
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let delivery =
            Delivery { id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1614265330, body: br#"{"test": 2432232314}"# };
        assert_eq!(sign(&[secret], &delivery), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_receiver_accepts_only_its_secret_fresh_and_unchanged() {
        let (mine, other) = (SigningSecret::generate(), SigningSecret::generate());
        let d = Delivery { id: "msg_1_1_00", timestamp: 1_700_000_000, body: b"{}" };
        let header = sign(std::slice::from_ref(&mine), &d);
        assert_eq!(verify(&mine, &d, &header, d.timestamp + 10, 300), Ok(()));
        assert_eq!(verify(&other, &d, &header, d.timestamp, 300), Err(VerifyError::NoMatch));
        assert_eq!(verify(&mine, &d, &header, d.timestamp + 301, 300), Err(VerifyError::Stale(300)));
        let replayed = Delivery { id: "msg_1_1_01", ..d };
        assert_eq!(verify(&mine, &replayed, &header, d.timestamp, 300), Err(VerifyError::NoMatch));
        let retimed = Delivery { timestamp: d.timestamp + 1, ..d };
        assert_eq!(verify(&mine, &retimed, &header, d.timestamp, 300), Err(VerifyError::NoMatch));
        // During a rotation both secrets verify.
        let both = sign(&[other.clone(), mine.clone()], &d);
        assert_eq!(both.split(' ').count(), 2);
        assert!(
            verify(&mine, &d, &both, d.timestamp, 300).is_ok() && verify(&other, &d, &both, d.timestamp, 300).is_ok()
        );
    }

    #[test]
    fn secrets_round_trip_and_bad_ones_are_refused() {
        let s = SigningSecret::generate();
        assert!(s.expose().starts_with("whsec_"));
        assert_eq!(SigningSecret::parse(&s.expose()), Some(s.clone()));
        assert_eq!(SigningSecret::parse("whsec_short"), None);
        assert_eq!(format!("{s:?}"), "SigningSecret(..)");
        let id = Delivery::id_for(42, 3);
        assert!(id.starts_with("msg_42_3_") && id.len() == "msg_42_3_".len() + 16, "{id}");
    }
}
