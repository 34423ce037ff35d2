//! The ingress's options: every one a flag and an environment variable (clap), checked at
//! start-up so a bad value stops the process with one line naming the option.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use secrecy::{ExposeSecret as _, SecretString};
use shared::config::{BrokerArgs, parse_duration};

use crate::{
    allowlist::{CidrList, IpAllowlist, parse_allowlist, parse_trusted_proxies},
    secrets::Secrets,
    serve::ServerLimits,
};

/// Command line and environment of the `ingress` binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "ingress",
    version,
    about = "Receives Xsolla webhooks and makes them durable in RabbitMQ"
)]
pub struct IngressArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,

    #[command(flatten)]
    pub limits: ServerLimits,

    /// Address the HTTP server listens on.
    #[arg(long, env = "INGRESS_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Serve `/metrics` on this address (with `/healthz` and `/readyz`) instead of on
    /// INGRESS_LISTEN, so that the public port need not expose it. Unset: `/metrics` is on
    /// INGRESS_LISTEN.
    #[arg(long, env = "METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Secret key(s) for `POST /webhooks/xsolla`, comma-separated. During a rotation list the
    /// new and the old key; a webhook signed with either is accepted.
    #[arg(
        long,
        env = "XSOLLA_WEBHOOK_SECRET",
        hide_env_values = true,
        value_delimiter = ',',
        value_parser = parse_secret
    )]
    pub webhook_secret: Vec<SecretString>,

    /// The Xsolla project of `POST /webhooks/xsolla`, for webhooks that do not name theirs
    /// (separate-mode `order_paid` has no `settings`): published as header `x-project-id`.
    #[arg(long, env = "XSOLLA_PROJECT_ID")]
    pub project_id: Option<u64>,

    /// JSON file of per-project secrets for `POST /webhooks/xsolla/{project_id}`:
    /// `{"18404": ["new-key", "old-key"], "18405": ["key"]}`.
    #[arg(long, env = "XSOLLA_PROJECTS_FILE")]
    pub projects_file: Option<PathBuf>,

    /// The game's user lookup for `user_validation`: a URL template with `{user_id}`;
    /// 2xx = the user exists, 404 = unknown. Unset: every user is accepted (with a warning).
    #[arg(long, env = "USER_CHECK_URL")]
    pub user_check_url: Option<String>,

    /// Bearer token sent to USER_CHECK_URL, if the game's API needs one.
    #[arg(long, env = "USER_CHECK_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub user_check_token: Option<SecretString>,

    /// Deadline for one user lookup; past it the answer is 503 and Xsolla may ask again.
    #[arg(long, env = "USER_CHECK_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub user_check_timeout: Duration,

    /// Also answer `user_search` synchronously through USER_CHECK_URL (200 with the user).
    #[arg(long, env = "USER_SEARCH_ENABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub user_search: bool,

    /// Source-IP allowlist: `off`, `xsolla` (Xsolla's published ranges) or CIDRs.
    #[arg(long, env = "XSOLLA_IP_ALLOWLIST", default_value = "off", value_parser = parse_allowlist)]
    pub ip_allowlist: IpAllowlist,

    /// Proxies (CIDRs) whose `X-Forwarded-For` is believed. Empty: the TCP peer is the client.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "", value_parser = parse_trusted_proxies)]
    pub trusted_proxies: CidrList,

    /// Largest accepted body; larger ones get 413 and are never truncated.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 262_144, value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub max_body_bytes: u32,

    /// Publishes awaiting a broker confirm at once; beyond it the answer is 503 at once.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_in_flight: u32,

    /// `Retry-After` seconds sent with every 503.
    #[arg(long, env = "RETRY_AFTER_SECS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub retry_after_secs: u32,

    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

/// The ingress's configuration once checked: what `run` serves with. Built once, by
/// [`IngressArgs::check`], so the projects file is read once and nothing is checked twice.
#[derive(Debug)]
pub struct IngressConfig {
    pub args: IngressArgs,
    pub secrets: Secrets,
}

impl IngressArgs {
    /// Checks what clap cannot (that some secret exists, that URLs are usable) and loads
    /// the secrets; the error is one line naming the option.
    pub fn check(self) -> Result<IngressConfig, String> {
        self.broker.validate()?;
        if self.metrics_listen == Some(self.listen) && self.listen.port() != 0 {
            return Err(format!(
                "METRICS_LISTEN (--metrics-listen) {} must differ from INGRESS_LISTEN (--listen)",
                self.listen
            ));
        }
        let blank = |s: &SecretString| s.expose_secret().trim().is_empty();
        if self.webhook_secret.iter().all(blank) && self.projects_file.is_none() {
            return Err("XSOLLA_WEBHOOK_SECRET (--webhook-secret) or XSOLLA_PROJECTS_FILE (--projects-file) must be set".into());
        }
        if self.webhook_secret.iter().any(blank) && !self.webhook_secret.is_empty() {
            return Err("XSOLLA_WEBHOOK_SECRET (--webhook-secret) contains an empty secret".into());
        }
        if let Some(url) = &self.user_check_url {
            crate::user_check::validate_template(url)
                .map_err(|e| format!("USER_CHECK_URL (--user-check-url): {e}"))?;
        }
        if self.user_search && self.user_check_url.is_none() {
            return Err("USER_SEARCH_ENABLED (--user-search) needs USER_CHECK_URL".into());
        }
        // Past the request deadline the answer is 408 whatever the handler was doing; a
        // broker or user API slower than their own deadlines must still get its 503.
        let slowest = self.user_check_timeout.max(self.broker.publish_timeout);
        if self.limits.timeouts.request_timeout <= slowest {
            return Err(format!(
                "REQUEST_TIMEOUT (--request-timeout) {:?} must be longer than PUBLISH_TIMEOUT and USER_CHECK_TIMEOUT ({slowest:?})",
                self.limits.timeouts.request_timeout
            ));
        }
        let secrets = Secrets::load(&self.webhook_secret, self.projects_file.as_deref())?;
        Ok(IngressConfig {
            args: self,
            secrets,
        })
    }
}

/// Wraps a secret option's value as soon as clap has it, so it is never a plain `String`.
fn parse_secret(s: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(s))
}
