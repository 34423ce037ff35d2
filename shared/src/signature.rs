//! Xsolla's webhook signature: `Authorization: Signature <hex(SHA-1(body ‖ secret))>`.
//!
//! It is a plain SHA-1 over the raw body bytes followed by the project's secret (not an
//! HMAC); see `docs/xsolla-protocol.md` §1. The bytes are hashed exactly as received.

use sha1::{Digest, Sha1};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// Why a signature was refused. The messages never contain a secret or the expected value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("Authorization header not found")]
    Missing,
    #[error("Authorization header is not `Signature <40 lowercase hex>`")]
    Malformed,
    #[error("signature does not match any configured secret")]
    Mismatch,
}

/// The 20-byte digest Xsolla signs with: SHA-1 over `body` then `secret`.
fn digest(body: &[u8], secret: &[u8]) -> [u8; 20] {
    let mut hasher = Sha1::new();
    hasher.update(body);
    hasher.update(secret);
    hasher.finalize().into()
}

/// The signature Xsolla would send for `body` under `secret`, as 40 lowercase hex chars.
pub fn sign(body: &[u8], secret: &str) -> String {
    hex::encode(digest(body, secret.as_bytes()))
}

/// The full `Authorization` header value for `body` under `secret`.
pub fn authorization_header(body: &[u8], secret: &str) -> String {
    format!("Signature {}", sign(body, secret))
}

/// Extracts the 20 signature bytes from an `Authorization` header value, accepting only
/// the exact form the official SDK accepts: `^Signature ([0-9a-f]{40})$`.
pub fn parse_header(value: &str) -> Result<[u8; 20], SignatureError> {
    let hex_part = value
        .strip_prefix("Signature ")
        .ok_or(SignatureError::Malformed)?;
    let lowercase_hex = hex_part.len() == 40
        && hex_part
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !lowercase_hex {
        return Err(SignatureError::Malformed);
    }
    let mut out = [0u8; 20];
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| SignatureError::Malformed)?;
    Ok(out)
}

/// Verifies `header` (the `Authorization` value, if any) over `body` against every secret.
///
/// Every secret is checked, in constant time, even after a match, so the time taken does
/// not reveal which secret (old or new during a rotation) matched. Returns the position of
/// the first matching secret (0 = the first listed), for `ingress_signature_matches_total`.
pub fn verify<S: AsRef<str>>(
    header: Option<&str>,
    body: &[u8],
    secrets: &[S],
) -> Result<usize, SignatureError> {
    let given = parse_header(header.ok_or(SignatureError::Missing)?)?;
    // Every secret is tried, and the matching slot chosen without a branch on secret data,
    // so the time taken says nothing about which secret (if any) matched.
    let mut matched = subtle::Choice::from(0u8);
    let mut slot = 0u64;
    for (i, secret) in secrets.iter().enumerate() {
        let this = digest(body, secret.as_ref().as_bytes()).ct_eq(&given);
        slot = u64::conditional_select(&slot, &(i as u64), this & !matched);
        matched |= this;
    }
    if bool::from(matched) {
        Ok(slot as usize)
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_body_followed_by_secret_with_plain_sha1() {
        // Computed independently: `printf '{}secret' | sha1sum`.
        assert_eq!(
            sign(b"{}", "secret"),
            "f0a799cc94bf41334812f8acd4fb4eaa83741272"
        );
    }

    #[test]
    fn accepts_any_of_several_secrets() {
        let body = br#"{"notification_type":"order_paid"}"#;
        let header = authorization_header(body, "new");
        assert_eq!(
            verify(Some(&header), body, &["old", "new"]),
            Ok(1),
            "the second secret matched"
        );
        assert_eq!(
            verify(Some(&header), body, &["new", "new"]),
            Ok(0),
            "the first match wins"
        );
        assert_eq!(
            verify(Some(&header), body, &["old"]),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn rejects_missing_and_malformed_headers() {
        let body = b"{}";
        let good = sign(body, "s");
        assert_eq!(verify(None, body, &["s"]), Err(SignatureError::Missing));
        for bad in [
            good.clone(),
            format!("signature {good}"),
            format!("Signature {}", good.to_uppercase()),
            format!("Signature {good} "),
            format!("Signature {}", &good[..39]),
            format!("Signature {good}0"),
            "Signature zz".to_string(),
        ] {
            assert_eq!(
                verify(Some(&bad), body, &["s"]),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn one_changed_body_byte_fails() {
        let header = authorization_header(b"{\"a\":1}", "s");
        assert_eq!(
            verify(Some(&header), b"{\"a\":2}", &["s"]),
            Err(SignatureError::Mismatch)
        );
    }
}
