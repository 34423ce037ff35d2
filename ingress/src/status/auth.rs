//! Player JWTs: verified locally with the configured keys (HS256 secrets tried in order for
//! a rotation, or one PEM public key), `exp` required with 60 s leeway, `iss`/`aud` when
//! configured. The user id is one claim (`STATUS_JWT_USER_CLAIM`), a string or a number.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use secrecy::ExposeSecret as _;
use serde_json::Value;

use super::config::StatusArgs;

/// Clock skew tolerated on `exp` and `nbf`, as Centrifugo does.
const LEEWAY_SECS: u64 = 60;

/// Why a token is refused. Never carries the token or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("invalid token")]
    Invalid,
    #[error("token expired")]
    Expired,
}

/// Verifies player JWTs.
pub struct Verifier {
    keys: Vec<(DecodingKey, Validation)>,
    user_claim: String,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .field("user_claim", &self.user_claim)
            .finish()
    }
}

impl Verifier {
    /// Loads the keys the options name; the error names the option (never the secret).
    pub fn from_args(args: &StatusArgs) -> Result<Verifier, String> {
        let validation = |algorithms: &[Algorithm]| {
            let mut v = Validation::new(algorithms[0]);
            v.algorithms = algorithms.to_vec();
            v.leeway = LEEWAY_SECS;
            v.validate_nbf = true;
            v.set_required_spec_claims(&["exp"]);
            if let Some(iss) = &args.jwt_issuer {
                v.set_issuer(&[iss]);
            }
            match &args.jwt_audience {
                Some(aud) => v.set_audience(&[aud]),
                None => v.validate_aud = false,
            }
            v
        };
        let mut keys = Vec::new();
        for secret in args
            .jwt_hs256_secret
            .iter()
            .filter(|s| !s.expose_secret().is_empty())
        {
            keys.push((
                DecodingKey::from_secret(secret.expose_secret().as_bytes()),
                validation(&[Algorithm::HS256]),
            ));
        }
        if let Some(path) = &args.jwt_public_key_file {
            let pem = std::fs::read(path).map_err(|e| {
                format!(
                    "STATUS_JWT_PUBLIC_KEY_FILE (--jwt-public-key-file) {}: {e}",
                    path.display()
                )
            })?;
            keys.push(public_key(&pem).map(|(key, algs)| (key, validation(algs))).ok_or_else(|| {
                format!(
                    "STATUS_JWT_PUBLIC_KEY_FILE (--jwt-public-key-file) {}: not a PEM RSA or EC public key",
                    path.display()
                )
            })?);
        }
        if keys.is_empty() {
            return Err(
                "no JWT key configured (STATUS_JWT_HS256_SECRET or STATUS_JWT_PUBLIC_KEY_FILE)"
                    .into(),
            );
        }
        Ok(Verifier {
            keys,
            user_claim: args.jwt_user_claim.clone(),
        })
    }

    /// The user id the token names, if it verifies with one of the keys.
    pub fn verify(&self, token: &str) -> Result<String, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let mut last = AuthError::Invalid;
        for (key, validation) in &self.keys {
            match jsonwebtoken::decode::<Value>(token, key, validation) {
                Ok(data) => return user_id(&data.claims, &self.user_claim),
                // The signature is checked before the claims, so this key is the right one.
                Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => {
                    return Err(AuthError::Expired);
                }
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                Err(_) => last = AuthError::Invalid,
            }
        }
        Err(last)
    }
}

/// An RSA key verifies RS256/384/512, an EC P-256 key ES256.
fn public_key(pem: &[u8]) -> Option<(DecodingKey, &'static [Algorithm])> {
    const RSA: &[Algorithm] = &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];
    const EC: &[Algorithm] = &[Algorithm::ES256];
    let text = std::str::from_utf8(pem).ok()?;
    // `from_rsa_pem` accepts any well-formed PEM, so the type is read from the key itself.
    if text.contains("BEGIN RSA PUBLIC KEY") {
        return DecodingKey::from_rsa_pem(pem).ok().map(|k| (k, RSA));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return Some((k, EC));
    }
    DecodingKey::from_rsa_pem(pem).ok().map(|k| (k, RSA))
}

/// The user claim as a string: a non-empty string, or an integer written out.
fn user_id(claims: &Value, claim: &str) -> Result<String, AuthError> {
    match claims.get(claim) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        _ => Err(AuthError::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    fn verifier(extra: &[&str]) -> Verifier {
        let mut argv = vec!["order-status", "--jwt-hs256-secret", "new,old"];
        argv.extend_from_slice(extra);
        Verifier::from_args(&StatusArgs::try_parse_from(argv).unwrap()).unwrap()
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn token(secret: &str, claims: Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn accepts_either_secret_of_a_rotation() {
        let v = verifier(&[]);
        for secret in ["new", "old"] {
            let t = token(secret, json!({"sub": "u1", "exp": now() + 60}));
            assert_eq!(v.verify(&t).unwrap(), "u1");
        }
        let t = token("other", json!({"sub": "u1", "exp": now() + 60}));
        assert_eq!(v.verify(&t), Err(AuthError::Invalid));
    }

    #[test]
    fn requires_exp_with_a_minute_of_leeway() {
        let v = verifier(&[]);
        assert_eq!(
            v.verify(&token("new", json!({"sub": "u1"}))),
            Err(AuthError::Invalid)
        );
        let slightly_late = token("new", json!({"sub": "u1", "exp": now() - 30}));
        assert!(v.verify(&slightly_late).is_ok());
        let expired = token("new", json!({"sub": "u1", "exp": now() - 120}));
        assert_eq!(v.verify(&expired), Err(AuthError::Expired));
        let string_exp = token("new", json!({"sub": "u1", "exp": "never"}));
        assert_eq!(v.verify(&string_exp), Err(AuthError::Invalid));
        assert_eq!(v.verify(""), Err(AuthError::Missing));
        assert_eq!(v.verify("not.a.jwt"), Err(AuthError::Invalid));
    }

    #[test]
    fn reads_the_configured_user_claim_as_string_or_number() {
        let v = verifier(&["--jwt-user-claim", "uid"]);
        let t = token("new", json!({"sub": "x", "uid": 42, "exp": now() + 60}));
        assert_eq!(v.verify(&t).unwrap(), "42");
        let t = token("new", json!({"sub": "x", "exp": now() + 60}));
        assert_eq!(v.verify(&t), Err(AuthError::Invalid));
    }

    fn key_file(name: &str) -> String {
        format!("{}/src/status/testdata/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn signed_with(alg: Algorithm, private: &str, claims: &Value) -> String {
        let pem = std::fs::read(key_file(private)).unwrap();
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
            _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
        };
        encode(&Header::new(alg), claims, &key).unwrap()
    }

    #[test]
    fn detects_rsa_and_ec_public_keys() {
        let claims = json!({"sub": "u1", "exp": now() + 60});
        let public = |name: &str| {
            let argv = ["order-status", "--jwt-public-key-file", &key_file(name)];
            Verifier::from_args(&StatusArgs::try_parse_from(argv).unwrap()).unwrap()
        };
        let rsa = public("rsa-public.pem");
        let ec = public("ec-public.pem");
        let rs256 = signed_with(Algorithm::RS256, "rsa-private.pem", &claims);
        let es256 = signed_with(Algorithm::ES256, "ec-private.pem", &claims);
        assert_eq!(rsa.verify(&rs256).unwrap(), "u1");
        assert_eq!(ec.verify(&es256).unwrap(), "u1");
        assert_eq!(rsa.verify(&es256), Err(AuthError::Invalid));
        assert_eq!(ec.verify(&rs256), Err(AuthError::Invalid));
        // An HS256 token made with the public key as its secret (alg confusion) fails.
        let pem = std::fs::read_to_string(key_file("rsa-public.pem")).unwrap();
        assert_eq!(rsa.verify(&token(&pem, claims)), Err(AuthError::Invalid));
        let bad = [
            "order-status",
            "--jwt-public-key-file",
            &key_file("README.md"),
        ];
        let err = Verifier::from_args(&StatusArgs::try_parse_from(bad).unwrap()).unwrap_err();
        assert!(err.contains("STATUS_JWT_PUBLIC_KEY_FILE"), "{err}");
    }

    #[test]
    fn checks_issuer_and_audience_when_configured() {
        let v = verifier(&[
            "--jwt-issuer",
            "https://login.xsolla.com",
            "--jwt-audience",
            "game",
        ]);
        let good = json!({"sub": "u", "exp": now() + 60, "iss": "https://login.xsolla.com", "aud": "game"});
        assert!(v.verify(&token("new", good)).is_ok());
        let bad = json!({"sub": "u", "exp": now() + 60, "iss": "https://evil", "aud": "game"});
        assert_eq!(v.verify(&token("new", bad)), Err(AuthError::Invalid));
        // Without an audience configured, a token that has one is still accepted.
        let plain = verifier(&[]);
        let with_aud = json!({"sub": "u", "exp": now() + 60, "aud": "anything"});
        assert!(plain.verify(&token("new", with_aud)).is_ok());
    }
}
