//! The worker's options: every one a flag and an environment variable, with its default.

use std::{net::SocketAddr, time::Duration};

use reqwest::Url;
use shared::{
    config::{BrokerArgs, Delays, parse_duration},
    telemetry::LogFormat,
};

/// Options of `worker` (the consumer). `worker dlq …` has its own.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,

    /// Base URL of the game's inventory API; the worker POSTs to `{url}/grants` and
    /// `{url}/revocations`. Required to run the consumer.
    #[arg(long, env = "INVENTORY_URL", value_parser = parse_inventory_url)]
    pub inventory_url: Option<Url>,

    /// Bearer token sent as `Authorization: Bearer …` to the inventory API (never logged).
    #[arg(long, env = "INVENTORY_TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub inventory_token: Option<Token>,

    /// Deadline of one inventory call (connect, send, answer).
    #[arg(long, env = "INVENTORY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub inventory_timeout: Duration,

    /// Deliveries handled at once; also the prefetch (`basic.qos`) of the consumer.
    #[arg(long, env = "WORKER_CONCURRENCY", value_name = "WORKER_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub concurrency: u16,

    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(
        long,
        env = "WORKER_LISTEN",
        value_name = "WORKER_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub listen: SocketAddr,

    /// How long an event may keep failing transiently (counted from when the ingress
    /// received it, or from its replay) before it is dead-lettered. About a day, so a
    /// game's maintenance window does not fill the DLQ.
    #[arg(long, env = "RETRY_BUDGET", default_value = "24h", value_parser = parse_duration)]
    pub retry_budget: Duration,

    /// In-process retries (jittered, ~0.2 s to 2 s apart) of a transient failure before the
    /// event goes to the delay tiers. 0 sends it to the first tier at once.
    #[arg(long, env = "QUICK_RETRIES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub quick_retries: u32,

    /// On SIGTERM, how long in-flight deliveries may take to finish and be acked before
    /// the connection is closed (unacked ones are then redelivered to another worker).
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

impl WorkerArgs {
    /// The documented defaults with the given broker and inventory, ignoring the
    /// environment: for tests and embedding (a unit test keeps it equal to clap's defaults).
    pub fn new(amqp_url: &str, inventory_url: Url) -> WorkerArgs {
        WorkerArgs {
            broker: BrokerArgs {
                amqp_url: amqp_url.to_owned(),
                retry_delays: Delays::default(),
                fulfil_payments: false,
                publish_timeout: Duration::from_secs(5),
                status_retention: shared::order_events::DEFAULT_RETENTION,
                log_format: LogFormat::Text,
            },
            inventory_url: Some(inventory_url),
            inventory_token: None,
            inventory_timeout: Duration::from_secs(10),
            concurrency: 16,
            listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
            retry_budget: Duration::from_secs(24 * 3600),
            quick_retries: 3,
            shutdown_timeout: Duration::from_secs(30),
        }
    }

    /// The inventory URL, or the one line that says it is missing.
    pub fn require_inventory_url(&self) -> Result<&Url, String> {
        self.inventory_url
            .as_ref()
            .ok_or_else(|| "INVENTORY_URL (--inventory-url) is required: the base URL of the game's inventory API".into())
    }
}

/// A secret that `Debug` does not print.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

fn parse_token(s: &str) -> Result<Token, String> {
    let s = s.trim();
    // A header value must be visible ASCII; refusing here beats a failing request later.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be non-empty visible ASCII (no spaces)".into());
    }
    Ok(Token(s.to_owned()))
}

/// Accepts absolute `http://` and `https://` URLs; a trailing `/` is ignored.
pub fn parse_inventory_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s.trim()).map_err(|e| format!("`{s}` is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "`{s}` must be an http:// or https:// URL with a host"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{s}` must not have a query or fragment"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_urls_only() {
        assert!(parse_inventory_url("http://127.0.0.1:8081").is_ok());
        assert!(parse_inventory_url("https://game.example/api/").is_ok());
        assert!(parse_inventory_url("ftp://x").unwrap_err().contains("http"));
        assert!(parse_inventory_url("game.example").is_err());
        assert!(parse_inventory_url("http://x/?a=1").is_err());
    }

    #[test]
    fn new_matches_the_documented_defaults() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: WorkerArgs,
        }
        let url = "http://127.0.0.1:1/";
        let parsed = <Cli as clap::Parser>::try_parse_from(["worker", "--inventory-url", url])
            .unwrap()
            .args;
        let built = WorkerArgs::new(&parsed.broker.amqp_url, parse_inventory_url(url).unwrap());
        assert_eq!(format!("{parsed:?}"), format!("{built:?}"));
        assert_eq!(built.concurrency, 16);
        assert_eq!(built.retry_budget, Duration::from_secs(24 * 3600));
    }

    #[test]
    fn never_prints_the_token() {
        let t = parse_token("s3cret").unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(parse_token("a b").is_err());
    }
}
