//! KIE's callback signature ("webhook verification").
//!
//! When the account enables it, KIE signs each callback: `X-Webhook-Timestamp`
//! (unix seconds) and `X-Webhook-Signature` = base64(HMAC-SHA256(key,
//! `taskId + "." + timestamp`)), the key being the account's webhook HMAC key.
//! A signed callback is still only a hint (the task is read back from KIE
//! before anything is decided); the signature keeps strangers who learnt the
//! URL from making us poll on their say-so.

use base64::Engine as _;
use hmac::{KeyInit, Mac};

/// The header carrying the unix-seconds timestamp.
pub const TIMESTAMP_HEADER: &str = "X-Webhook-Timestamp";
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Webhook-Signature";
/// How far a timestamp may be from now, either way.
pub const MAX_SKEW_SECS: i64 = 300;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Why a callback's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A header is missing.
    #[error("the callback is not signed")]
    Missing,
    /// The timestamp is not a number, or too far from now (a replay).
    #[error("the callback's timestamp is stale or malformed")]
    Stale,
    /// The signature does not match.
    #[error("the callback's signature does not match")]
    Mismatch,
}

/// The signature KIE computes for `task_id` at `timestamp`.
pub fn sign(key: &str, task_id: &str, timestamp: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(task_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks a callback's signature headers against the key, in constant time.
pub fn verify(
    key: &str,
    task_id: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    now_secs: i64,
) -> Result<(), SignatureError> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(SignatureError::Missing);
    };
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::Stale)?;
    if (now_secs - ts).abs() > MAX_SKEW_SECS {
        return Err(SignatureError::Stale);
    }
    let given = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| SignatureError::Mismatch)?;
    let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(task_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.trim().as_bytes());
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_made_with_the_key_verifies_and_nothing_else_does() {
        let sig = sign("k3y", "task_1", "1700000000");
        assert_eq!(
            verify(
                "k3y",
                "task_1",
                Some("1700000000"),
                Some(&sig),
                1_700_000_010
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                "other",
                "task_1",
                Some("1700000000"),
                Some(&sig),
                1_700_000_010
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                "k3y",
                "task_2",
                Some("1700000000"),
                Some(&sig),
                1_700_000_010
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                "k3y",
                "task_1",
                Some("1700000000"),
                Some(&sig),
                1_700_009_999
            ),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify("k3y", "task_1", None, Some(&sig), 1_700_000_010),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(
                "k3y",
                "task_1",
                Some("1700000000"),
                Some("!!"),
                1_700_000_010
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_signature_is_base64_of_hmac_sha256_over_task_dot_timestamp() {
        // Computed apart from this code (Python's hmac and base64 modules).
        assert_eq!(
            sign("key", "task_1", "1700000000"),
            "ID58Rce2nAwtIpfn+sD7iUUJ8ZOCNyiML2w9xRpkngg="
        );
    }
}
