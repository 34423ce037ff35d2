//! What an inventory answer means for the event: done, try again later, or give up. Pure functions,
//! so the whole table is unit-tested (`deploy/INVENTORY_API.md`, "What your answer means to the
//! worker").

use std::time::{Duration, SystemTime};

use shared::webhook::Effect;

/// What one inventory call came to, before any judgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The API answered with this status.
    Answered {
        status: u16,
        /// `Retry-After`, already turned into a delay.
        retry_after: Option<Duration>,
        /// The start of the answer's body, for logs and `x-last-error`.
        body: String,
    },
    /// No answer: the request timed out, or no connection could be made.
    Timeout(String),
    /// Connecting failed or the connection broke.
    Connection(String),
}

/// Why a call did not succeed, as carried into logs and message headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// A short description (`x-last-error`).
    pub error: String,
    /// How long the API asked us to wait, if it said.
    pub retry_after: Option<Duration>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error)
    }
}

/// The worker's error: its kind alone decides between delay and dead-letter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FulfilError {
    /// Worth trying again later: outages, overload, a revocation ahead of its grant.
    #[error("transient: {0}")]
    Transient(Failure),
    /// Will never succeed as is: the DLQ, for an operator.
    #[error("permanent: {0}")]
    Permanent(Failure),
}

impl FulfilError {
    pub fn failure(&self) -> &Failure {
        match self {
            FulfilError::Transient(f) | FulfilError::Permanent(f) => f,
        }
    }
}

/// Added to the error of a 401/403: the configuration is at fault, not the event.
pub const AUTH_REFUSED: &str = " (the inventory API refused INVENTORY_TOKEN)";

/// Whether `status` says the inventory API refused our credentials.
pub fn is_auth_refusal(status: u16) -> bool {
    matches!(status, 401 | 403)
}

/// Judges one reply to a grant or revocation call.
pub fn classify(effect: Effect, reply: &Reply) -> Result<(), FulfilError> {
    let (status, retry_after, body) = match reply {
        Reply::Answered {
            status,
            retry_after,
            body,
        } => (*status, *retry_after, body),
        Reply::Timeout(e) | Reply::Connection(e) => {
            return Err(FulfilError::Transient(Failure {
                status: None,
                error: e.clone(),
                retry_after: None,
            }));
        }
    };
    let failure = |what: &str| Failure {
        status: Some(status),
        error: if body.is_empty() {
            format!("HTTP {status}{what}")
        } else {
            format!("HTTP {status}{what}: {body}")
        },
        retry_after,
    };
    match status {
        200..=299 => Ok(()),
        // The contract's "grant not seen yet": the cancel overtook the payment.
        409 if effect == Effect::Revoke => {
            Err(FulfilError::Transient(failure(" (grant not seen yet)")))
        }
        408 | 425 | 429 | 500..=599 => Err(FulfilError::Transient(failure(""))),
        // The game refused our credentials, not this order: a rotated or mistyped
        // INVENTORY_TOKEN would otherwise park every order as permanent. Retried through
        // the tiers until the configuration is fixed (or the budget runs out).
        401 | 403 => Err(FulfilError::Transient(failure(AUTH_REFUSED))),
        // Other 4xx (including 409 on a grant: the game says this key conflicts) and
        // anything outside the contract (1xx, 3xx: we do not follow redirects for a POST).
        _ => Err(FulfilError::Permanent(failure(""))),
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP date (a date in the past is no delay).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// At most `max` bytes of `s`, cut on a character boundary, marked when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16) -> Reply {
        Reply::Answered {
            status,
            retry_after: None,
            body: String::new(),
        }
    }

    fn kind(effect: Effect, reply: &Reply) -> &'static str {
        match classify(effect, reply) {
            Ok(()) => "done",
            Err(FulfilError::Transient(_)) => "transient",
            Err(FulfilError::Permanent(_)) => "permanent",
        }
    }

    #[test]
    fn follows_the_contract_table() {
        use Effect::{Grant, Revoke};
        let table: &[(Effect, u16, &str)] = &[
            (Grant, 200, "done"),
            (Grant, 201, "done"),
            (Revoke, 204, "done"),
            (Grant, 409, "permanent"),
            (Revoke, 409, "transient"),
            (Grant, 408, "transient"),
            (Grant, 425, "transient"),
            (Grant, 429, "transient"),
            (Revoke, 500, "transient"),
            (Grant, 502, "transient"),
            (Grant, 503, "transient"),
            (Grant, 504, "transient"),
            (Grant, 400, "permanent"),
            (Grant, 401, "transient"),
            (Grant, 403, "transient"),
            (Revoke, 401, "transient"),
            (Revoke, 403, "transient"),
            (Grant, 404, "permanent"),
            (Revoke, 422, "permanent"),
            (Grant, 301, "permanent"),
        ];
        for (effect, status, want) in table {
            assert_eq!(
                kind(*effect, &answered(*status)),
                *want,
                "{effect:?} {status}"
            );
        }
        assert_eq!(
            kind(Effect::Grant, &Reply::Timeout("timed out".into())),
            "transient"
        );
        assert_eq!(
            kind(Effect::Grant, &Reply::Connection("refused".into())),
            "transient"
        );
    }

    #[test]
    fn carries_status_body_and_retry_after() {
        let reply = Reply::Answered {
            status: 429,
            retry_after: Some(Duration::from_secs(7)),
            body: r#"{"error":"slow down"}"#.into(),
        };
        let err = classify(Effect::Grant, &reply).unwrap_err();
        let f = err.failure();
        assert_eq!(f.status, Some(429));
        assert_eq!(f.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(f.error, r#"HTTP 429: {"error":"slow down"}"#);
    }

    #[test]
    fn an_auth_refusal_blames_the_token_not_the_event() {
        let err = classify(Effect::Grant, &answered(401)).unwrap_err();
        assert!(matches!(err, FulfilError::Transient(_)));
        assert_eq!(
            err.failure().error,
            "HTTP 401 (the inventory API refused INVENTORY_TOKEN)"
        );
        assert!(is_auth_refusal(403) && !is_auth_refusal(404));
    }

    #[test]
    fn reads_retry_after_as_seconds_or_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn truncates_on_character_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        let long = "é".repeat(600);
        let t = truncate(&long, 1024);
        assert!(t.len() <= 1024 && t.ends_with("..."));
    }
}
