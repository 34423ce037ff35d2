//! The `order-status` options: every one a flag and an environment variable (clap), with the
//! broker options flattened in so `AMQP_URL`, `STATUS_RETENTION` and `LOG_FORMAT` mean what
//! they mean everywhere.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use shared::config::{BrokerArgs, parse_duration};

use secrecy::{ExposeSecret as _, SecretString};

use crate::serve::{HttpTimeouts, ServerLimits};

/// Wraps a secret option's value as soon as clap has it (`Debug` shows no value, and it is
/// zeroed on drop), as the ingress does with its webhook secrets.
fn parse_secret(s: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(s))
}

/// Command line and environment of the `order-status` binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "order-status",
    version,
    about = "Serves players their orders' real delivery state (Centrifuge WebSocket + Get-order short-poll)"
)]
pub struct StatusArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,

    /// Address the HTTP/WebSocket server listens on.
    #[arg(long, env = "STATUS_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,

    /// HS256 secret(s) that sign player JWTs, comma-separated; during a rotation list the new
    /// and the old one. At least this or STATUS_JWT_PUBLIC_KEY_FILE is required.
    #[arg(
        long,
        env = "STATUS_JWT_HS256_SECRET",
        hide_env_values = true,
        value_delimiter = ',',
        value_parser = parse_secret
    )]
    pub jwt_hs256_secret: Vec<SecretString>,

    /// PEM public key that verifies player JWTs: RSA (RS256/384/512) or EC P-256 (ES256),
    /// detected from the key.
    #[arg(long, env = "STATUS_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// The JWT claim that holds the user id (string or number); it must equal the webhooks'
    /// `user.external_id`.
    #[arg(long, env = "STATUS_JWT_USER_CLAIM", default_value = "sub")]
    pub jwt_user_claim: String,

    /// Required `iss` of player JWTs (unset: not checked).
    #[arg(long, env = "STATUS_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of player JWTs (unset: not checked).
    #[arg(long, env = "STATUS_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Lifetime of one WebSocket connection; then it is closed with 4501 and the client
    /// falls back to short-polling, as Xsolla's SDKs do after 5 minutes.
    #[arg(long, env = "STATUS_TRACKING_WINDOW", default_value = "5m", value_parser = parse_duration)]
    pub tracking_window: Duration,

    /// Server ping (`{}`) interval, announced in the connect reply. A connection silent for
    /// longer than this plus 10 s is dropped.
    #[arg(long, env = "STATUS_PING_INTERVAL", default_value = "25s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// Delay between the final status of a user's last open order and the 4500 close, so
    /// the client sees the publication and can disconnect itself first.
    #[arg(long, env = "STATUS_FINAL_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub final_grace: Duration,

    /// Time a new WebSocket has to send `connect` before it is closed with 3502.
    #[arg(long, env = "STATUS_CONNECT_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Allowed `Origin` values of WebSocket upgrades, comma-separated (empty: not checked;
    /// auth is by token in the first message, not by cookie).
    #[arg(long, env = "STATUS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Open WebSocket connections at most; past it new ones are closed with 3013.
    #[arg(long, env = "STATUS_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,

    /// Open WebSocket connections per user at most; past it new ones are closed with 3013.
    #[arg(long, env = "STATUS_MAX_CONNECTIONS_PER_USER", default_value_t = 10)]
    pub max_connections_per_user: usize,

    /// Largest WebSocket message a client may send, in bytes (Centrifugo's default read limit).
    #[arg(long, env = "STATUS_MAX_FRAME_BYTES", default_value_t = 65_536)]
    pub max_frame_bytes: usize,

    /// Stream length (events) from which the start-up catch-up reads the stream with two
    /// readers at once: the second half is held decoded in memory until the first half is
    /// applied. Faster on two or more cores, at the cost of that memory; 0: one reader.
    #[arg(long, env = "STATUS_CATCH_UP_SPLIT", default_value_t = 100_000)]
    pub catch_up_split: u64,

    /// The HTTP timers, as on the ingress (slow or idle clients before a WebSocket upgrade
    /// or a poll). The socket cap follows from STATUS_MAX_CONNECTIONS: see [`Self::limits`].
    #[command(flatten)]
    pub http: HttpTimeouts,
}

/// Sockets beyond STATUS_MAX_CONNECTIONS for polls, probes and refused upgrades: a WebSocket
/// over the limit must still be accepted to be told 3013 (retry later), not left waiting.
pub const HTTP_HEADROOM: usize = 1024;

impl StatusArgs {
    /// Checks what the clap parsers leave out; the error names the option.
    pub fn validate(&self) -> Result<(), String> {
        self.broker.validate()?;
        let secrets = self
            .jwt_hs256_secret
            .iter()
            .filter(|s| !s.expose_secret().is_empty());
        if secrets.count() == 0 && self.jwt_public_key_file.is_none() {
            return Err(
                "no JWT key: set STATUS_JWT_HS256_SECRET (--jwt-hs256-secret) or STATUS_JWT_PUBLIC_KEY_FILE (--jwt-public-key-file)"
                    .into(),
            );
        }
        if self.jwt_user_claim.is_empty() {
            return Err("STATUS_JWT_USER_CLAIM (--jwt-user-claim) must not be empty".into());
        }
        if self.max_connections == 0 || self.max_connections_per_user == 0 {
            return Err(
                "STATUS_MAX_CONNECTIONS and STATUS_MAX_CONNECTIONS_PER_USER must be at least 1"
                    .into(),
            );
        }
        if self.max_frame_bytes < 1024 {
            return Err("STATUS_MAX_FRAME_BYTES (--max-frame-bytes) must be at least 1024".into());
        }
        Ok(())
    }

    /// The listener's limits: the HTTP timers and a socket cap of every allowed WebSocket
    /// plus [`HTTP_HEADROOM`]; past that the kernel's backlog holds new clients.
    pub fn limits(&self) -> ServerLimits {
        ServerLimits {
            timeouts: self.http,
            max_connections: u32::try_from(self.max_connections.saturating_add(HTTP_HEADROOM))
                .unwrap_or(u32::MAX),
        }
    }

    /// The origins to check, without blanks.
    pub fn origins(&self) -> Vec<String> {
        self.allowed_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let a = StatusArgs::try_parse_from(["order-status", "--jwt-hs256-secret", "a,b"]).unwrap();
        assert_eq!(a.listen.to_string(), "0.0.0.0:8081");
        let secrets: Vec<&str> = a
            .jwt_hs256_secret
            .iter()
            .map(|s| s.expose_secret())
            .collect();
        assert_eq!(secrets, ["a", "b"]);
        assert!(
            !format!("{a:?}").contains("\"a\""),
            "secrets stay out of Debug"
        );
        assert_eq!(a.jwt_user_claim, "sub");
        assert_eq!(a.tracking_window, Duration::from_secs(300));
        assert_eq!(a.ping_interval, Duration::from_secs(25));
        assert_eq!(a.final_grace, Duration::from_secs(5));
        assert_eq!(a.connect_timeout, Duration::from_secs(15));
        assert_eq!(a.max_frame_bytes, 65_536);
        assert_eq!(a.catch_up_split, 100_000);
        assert!(a.origins().is_empty());
        assert!(a.validate().is_ok());
    }

    #[test]
    fn refuses_to_start_without_a_jwt_key() {
        let a = StatusArgs::try_parse_from(["order-status"]).unwrap();
        let err = a.validate().unwrap_err();
        assert!(
            err.contains("STATUS_JWT_HS256_SECRET") && err.contains("STATUS_JWT_PUBLIC_KEY_FILE"),
            "{err}"
        );
    }
}
