//! The worker's options: every one a flag and an environment variable, with its default.

use std::{net::SocketAddr, time::Duration};

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
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
    #[arg(long, env = "INVENTORY_URL", value_parser = INVENTORY_URL)]
    pub inventory_url: Option<Url>,

    /// Bearer token sent as `Authorization: Bearer …` to the inventory API (never logged).
    #[arg(long, env = "INVENTORY_TOKEN", hide_env_values = true, value_parser = INVENTORY_TOKEN)]
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
                amqp_connect_timeout: shared::amqp::DEFAULT_CONNECT_TIMEOUT,
                amqp_ca_file: None,
                retry_delays: Delays::default(),
                fulfil_payments: false,
                publish_timeout: Duration::from_secs(5),
                status_retention: shared::order_events::DEFAULT_RETENTION,
                unrouted_ttl: shared::topology::UNROUTED_TTL,
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

/// The inventory bearer token, held as a [`SecretString`] from parsing on: `Debug` prints
/// `[REDACTED]`, the memory is zeroed on drop, and reading it takes an explicit
/// [`Token::expose`].
#[derive(Clone)]
pub struct Token(SecretString);

impl Token {
    pub fn new(token: &str) -> Token {
        Token(SecretString::from(token))
    }

    /// The token itself, for the `Authorization` header and nothing else.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A clap value parser that never echoes the value it refuses. A plain `value_parser`
/// function cannot do that: clap prints `invalid value '<the value>' for …` around its
/// error, which for `INVENTORY_TOKEN` is the token and for `INVENTORY_URL` may hold a
/// password. This one builds the whole one-line error itself, naming the option.
#[derive(Clone, Copy)]
struct Quiet<T: 'static> {
    option: &'static str,
    parse: fn(&str) -> Result<T, String>,
}

impl<T: Clone + Send + Sync + 'static> clap::builder::TypedValueParser for Quiet<T> {
    type Value = T;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_str().ok_or_else(|| {
            quiet_error(self.option, "is not valid UTF-8 (its value is not shown)")
        })?;
        (self.parse)(text).map_err(|problem| quiet_error(self.option, &problem))
    }
}

fn quiet_error(option: &str, problem: &str) -> clap::Error {
    clap::Error::raw(
        clap::error::ErrorKind::ValueValidation,
        format!("{option} {problem}\n"),
    )
}

const INVENTORY_TOKEN: Quiet<Token> = Quiet {
    option: "INVENTORY_TOKEN (--inventory-token)",
    parse: parse_token,
};

const INVENTORY_URL: Quiet<Url> = Quiet {
    option: "INVENTORY_URL (--inventory-url)",
    parse: parse_inventory_url,
};

fn parse_token(s: &str) -> Result<Token, String> {
    let s = s.trim();
    // A header value must be visible ASCII; refusing here beats a failing request later.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be non-empty visible ASCII, no spaces (its value is not shown)".into());
    }
    Ok(Token::new(s))
}

/// Accepts absolute `http://` and `https://` URLs; a trailing `/` is ignored. Errors show
/// the URL with any password hidden.
pub fn parse_inventory_url(s: &str) -> Result<Url, String> {
    let shown = || shared::amqp::redact_url(s.trim());
    let url = Url::parse(s.trim()).map_err(|e| format!("`{}` is not a URL ({e})", shown()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "`{}` must be an http:// or https:// URL with a host",
            shown()
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{}` must not have a query or fragment", shown()));
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
        assert_eq!(t.expose(), "s3cret");
        assert!(parse_token("a b").is_err());
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: WorkerArgs,
        }
        let err = <Cli as clap::Parser>::try_parse_from([
            "worker",
            "--inventory-token",
            "S3CR3T-with space",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("INVENTORY_TOKEN") && !err.contains("S3CR3T"),
            "{err}"
        );
    }
}
