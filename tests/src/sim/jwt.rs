//! Player JWTs as a game backend signs them for `order-status` (`xsolla-sim jwt`): HS256
//! with `STATUS_JWT_HS256_SECRET`, the user id in `sub` (or the claim `order-status` reads,
//! `STATUS_JWT_USER_CLAIM`), `exp` required, `iss`/`aud` when the server checks them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};

/// What goes into a player token.
#[derive(Debug, Clone)]
pub struct PlayerClaims {
    /// The user id: the `user.external_id` Xsolla puts in the webhooks.
    pub user: String,
    /// Claim that carries `user` (`order-status`'s `STATUS_JWT_USER_CLAIM`, default `sub`).
    pub user_claim: String,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: i64,
    /// `iss`, when the server is configured with `STATUS_JWT_ISSUER`.
    pub issuer: Option<String>,
    /// `aud`, when the server is configured with `STATUS_JWT_AUDIENCE`.
    pub audience: Option<String>,
}

impl PlayerClaims {
    /// Claims for `user` in `sub`, valid for `ttl` from now.
    pub fn new(user: impl Into<String>, ttl: Duration) -> PlayerClaims {
        PlayerClaims {
            user: user.into(),
            user_claim: "sub".into(),
            expires_at: unix_now() + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
            issuer: None,
            audience: None,
        }
    }

    /// Claims that expired `ago` before now.
    pub fn expired(user: impl Into<String>, ago: Duration) -> PlayerClaims {
        let mut claims = PlayerClaims::new(user, Duration::ZERO);
        claims.expires_at -= i64::try_from(ago.as_secs()).unwrap_or(0);
        claims
    }

    /// The JSON payload.
    pub fn to_json(&self) -> Value {
        let now = unix_now();
        let mut claims = Map::new();
        claims.insert(self.user_claim.clone(), json!(self.user));
        claims.insert("iat".into(), json!(now.min(self.expires_at)));
        claims.insert("exp".into(), json!(self.expires_at));
        if let Some(iss) = &self.issuer {
            claims.insert("iss".into(), json!(iss));
        }
        if let Some(aud) = &self.audience {
            claims.insert("aud".into(), json!(aud));
        }
        Value::Object(claims)
    }
}

/// Signs `claims` with HS256 and `secret` (the first one of a rotation list).
pub fn mint_hs256(secret: &str, claims: &PlayerClaims) -> anyhow::Result<String> {
    anyhow::ensure!(!secret.is_empty(), "the HS256 secret is empty");
    let header = Header::new(Algorithm::HS256);
    let key = EncodingKey::from_secret(secret.as_bytes());
    Ok(jsonwebtoken::encode(&header, &claims.to_json(), &key)?)
}

fn unix_now() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX / 2)
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation, decode};

    use super::*;

    #[test]
    fn minted_token_verifies_with_the_same_secret_and_carries_sub_and_exp() {
        let token = mint_hs256(
            "s3cret",
            &PlayerClaims::new("player-1", Duration::from_secs(600)),
        )
        .unwrap();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data =
            decode::<Value>(&token, &DecodingKey::from_secret(b"s3cret"), &validation).unwrap();
        assert_eq!(data.claims["sub"], "player-1");
        let exp = data.claims["exp"].as_i64().unwrap();
        assert!((exp - unix_now() - 600).abs() <= 2, "exp {exp}");
        assert!(decode::<Value>(&token, &DecodingKey::from_secret(b"other"), &validation).is_err());
    }

    #[test]
    fn custom_claim_issuer_and_audience_are_set_when_asked() {
        let mut claims = PlayerClaims::new("42", Duration::from_secs(60));
        claims.user_claim = "user_id".into();
        claims.issuer = Some("game-backend".into());
        claims.audience = Some("order-status".into());
        let json = claims.to_json();
        assert_eq!(json["user_id"], "42");
        assert_eq!(json["iss"], "game-backend");
        assert_eq!(json["aud"], "order-status");
        assert!(json.get("sub").is_none());
    }

    #[test]
    fn expired_claims_lie_in_the_past() {
        let claims = PlayerClaims::expired("u", Duration::from_secs(3600));
        assert!(claims.expires_at < unix_now() - 3000);
    }
}
