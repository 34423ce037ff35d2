//! Options shared by the ingress and the worker (clap flags with environment variables).

use std::{path::PathBuf, time::Duration};

use crate::{
    telemetry::LogFormat,
    topology::{Topology, default_retry_delays},
    webhook::FulfilmentMode,
};

/// Broker and topology options; both binaries declare the same topology from these.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    // Checked by `BrokerArgs::validate` rather than a clap parser: clap would echo a bad
    // value, password included.
    /// RabbitMQ URL (vhost URL-encoded: `/` is `%2f`), or a comma-separated list of the
    /// nodes of one cluster, tried in turn (`amqps://` for TLS).
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = DEFAULT_AMQP_URL,
        hide_env_values = true
    )]
    pub amqp_url: String,

    /// How long each node gets to accept the connection (TCP, TLS, AMQP handshake) before
    /// the next one in `AMQP_URL` is tried; also how long a connected node gets to answer
    /// the liveness probe (every 5 s, and after a failed publish) before it is left.
    #[arg(long, env = "AMQP_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub amqp_connect_timeout: Duration,

    /// PEM file of the CA (or CAs) that signed the brokers' certificates, for `amqps://`;
    /// trusted in addition to the system roots. Host names are still checked.
    #[arg(long, env = "AMQP_CA_FILE")]
    pub amqp_ca_file: Option<PathBuf>,

    /// Delay tiers for retries, comma-separated durations (`10s,1m,10m,1h`), each at least
    /// 100ms. One quorum queue is declared per tier; the last tier repeats until the retry
    /// budget is spent.
    #[arg(long, env = "RETRY_DELAYS", default_value = "10s,1m,10m,1h", value_parser = parse_delays)]
    pub retry_delays: Delays,

    /// Also fulfil `payment` (grant) and `refund` (revoke), for integrations without the
    /// in-game store. Set it the same on the ingress and the worker: it decides bindings.
    #[arg(long, env = "FULFIL_PAYMENTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub fulfil_payments: bool,

    /// Longest wait for a publisher confirm before the publish counts as failed; at least
    /// 100ms (a confirm from a quorum queue takes a few ms on a quiet local broker).
    #[arg(long, env = "PUBLISH_TIMEOUT", default_value = "5s", value_parser = parse_publish_timeout)]
    pub publish_timeout: Duration,

    /// How long the order-event stream (`xsolla.order-events`) keeps events: what
    /// `order-status` and `worker order` can show. Set it the same on every process: it is
    /// fixed when the stream is first declared.
    #[arg(long, env = "STATUS_RETENTION", default_value = "7days", value_parser = parse_duration)]
    pub status_retention: Duration,

    /// How long `xsolla.unrouted` keeps a webhook of a type nobody fulfils (`x-message-ttl`).
    /// Set it the same on every process: it is fixed when the queue is first declared.
    #[arg(long, env = "UNROUTED_TTL", default_value = "7days", value_parser = parse_duration)]
    pub unrouted_ttl: Duration,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl BrokerArgs {
    /// Checks what the clap parsers leave out; the error names the option.
    pub fn validate(&self) -> Result<(), String> {
        self.brokers().map(drop)
    }

    /// The nodes of `AMQP_URL` with the connect timeout and CA file; the error is the one
    /// [`BrokerArgs::validate`] gives.
    pub fn brokers(&self) -> Result<crate::amqp::Brokers, String> {
        brokers(
            &self.amqp_url,
            self.amqp_connect_timeout,
            self.amqp_ca_file.as_deref(),
        )
    }

    pub fn topology(&self) -> Topology {
        Topology {
            retry_delays: self.retry_delays.0.clone(),
            mode: FulfilmentMode {
                payments: self.fulfil_payments,
            },
            status_retention: self.status_retention,
            unrouted_ttl: self.unrouted_ttl,
        }
    }
}

/// A non-empty list of positive durations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delays(pub Vec<Duration>);

impl Default for Delays {
    fn default() -> Self {
        Delays(default_retry_delays())
    }
}

/// Parses `30s`, `5m`, `1h30m`, `250ms`, `1day` (humantime syntax); zero is refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration like 500ms, 10s, 5m or 24h ({e})"))?;
    if d.is_zero() {
        return Err(format!("`{s}` must be longer than zero"));
    }
    Ok(d)
}

/// Shortest delay tier. Below it a "delay" is a hot loop between the work queue and the
/// tier (`1ns` became a 0 ms TTL), and RabbitMQ's TTLs are whole milliseconds anyway. Not
/// a second: the suites walk 200 ms tiers to stay fast.
pub const MIN_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Shortest `PUBLISH_TIMEOUT`: below it ordinary confirms (a quorum queue's take a few ms,
/// more under load) would count as failures and every publish would be retried or 503.
pub const MIN_PUBLISH_TIMEOUT: Duration = Duration::from_millis(100);

/// A duration of at least `min`.
fn at_least(s: &str, min: Duration) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < min {
        return Err(format!(
            "`{}` is shorter than the minimum of {min:?}",
            s.trim()
        ));
    }
    Ok(d)
}

/// Parses `PUBLISH_TIMEOUT`: a duration of at least [`MIN_PUBLISH_TIMEOUT`].
pub fn parse_publish_timeout(s: &str) -> Result<Duration, String> {
    at_least(s, MIN_PUBLISH_TIMEOUT)
}

/// Parses a comma-separated list of durations, each at least [`MIN_RETRY_DELAY`].
pub fn parse_delays(s: &str) -> Result<Delays, String> {
    let delays = s
        .split(',')
        .map(|d| at_least(d, MIN_RETRY_DELAY))
        .collect::<Result<Vec<_>, _>>()?;
    if delays.is_empty() {
        return Err("at least one delay is needed".into());
    }
    // A message TTL is a 32-bit count of milliseconds on the broker side.
    if let Some(d) = delays.iter().find(|d| d.as_millis() > u128::from(u32::MAX)) {
        return Err(format!(
            "{d:?} is longer than RabbitMQ's TTL limit (~49 days)"
        ));
    }
    Ok(Delays(delays))
}

/// `AMQP_URL`'s default, for every binary and `worker dlq`.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Checks an `AMQP_URL` value (one URL or a comma-separated list); the one-line error names
/// the option and the entry, and hides the password. `AMQP_URL` is taken as a plain string
/// and checked here, not by a clap value parser, because clap would echo the bad value,
/// password included.
pub fn check_amqp_url(url: &str) -> Result<(), String> {
    parse_amqp_url(url)
        .map(drop)
        .map_err(|e| format!("AMQP_URL (--amqp-url): {e}"))
}

/// Accepts `amqp://` and `amqps://` URLs that lapin can parse, or a comma-separated list of
/// them (the error names the bad entry's position).
pub fn parse_amqp_url(s: &str) -> Result<String, String> {
    crate::amqp::Brokers::parse(s)?;
    Ok(s.to_owned())
}

/// `AMQP_URL`, `AMQP_CONNECT_TIMEOUT` and `AMQP_CA_FILE` together; each error is one line
/// naming its option.
pub fn brokers(
    url: &str,
    connect_timeout: Duration,
    ca_file: Option<&std::path::Path>,
) -> Result<crate::amqp::Brokers, String> {
    let brokers = crate::amqp::Brokers::parse(url)
        .map_err(|e| format!("AMQP_URL (--amqp-url): {e}"))?
        .with_connect_timeout(connect_timeout);
    match ca_file {
        Some(path) => brokers
            .with_ca_file(path)
            .map_err(|e| format!("AMQP_CA_FILE (--amqp-ca-file): {e}")),
        None => Ok(brokers),
    }
}

/// Answers a clap parse failure the way the README promises: `--help`/`--version` print as
/// usual (exit 0); any other error is one line, `<binary>: bad configuration: <what>`, exit
/// 2 (clap's own rendering adds a blank line, the usage and a hint).
pub fn refuse_options(binary: &str, e: clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return std::process::ExitCode::from(if e.use_stderr() { 2 } else { 0 });
    }
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("invalid options");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("{binary}: bad configuration: {first} (see {binary} --help)");
    std::process::ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_delay_lists() {
        assert_eq!(
            parse_delays("10s, 1m,1h").unwrap().0,
            [10, 60, 3600].map(Duration::from_secs).to_vec()
        );
        assert!(parse_delays("10s,,1m").is_err());
        assert!(parse_delays("0s").is_err());
        assert!(parse_delays("ten").unwrap_err().contains("`ten`"));
        assert_eq!(
            parse_delays("100ms,200ms").unwrap().0,
            [100, 200].map(Duration::from_millis).to_vec()
        );
    }

    #[test]
    fn refuses_delays_and_timeouts_below_their_minimums() {
        for tiny in ["1ns", "99ms", "10s,1us"] {
            let err = parse_delays(tiny).unwrap_err();
            assert!(err.contains("minimum of 100ms"), "{tiny}: {err}");
        }
        assert!(parse_publish_timeout("1ns").unwrap_err().contains("100ms"));
        assert!(parse_publish_timeout("50ms").is_err());
        assert_eq!(
            parse_publish_timeout("100ms"),
            Ok(Duration::from_millis(100))
        );
    }

    #[test]
    fn checks_amqp_urls() {
        assert!(parse_amqp_url("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        let err = parse_amqp_url("http://guest:pw@x").unwrap_err();
        assert!(err.contains("amqp://") && !err.contains("pw"), "{err}");
        let err = check_amqp_url("amqp://u:pw@a/,amqp://u:pw@b:x/").unwrap_err();
        assert!(
            err.starts_with("AMQP_URL (--amqp-url): entry 2 of 2: `amqp://u:***@b:x/`"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_ca_file_names_the_option() {
        let err = brokers(
            DEFAULT_AMQP_URL,
            Duration::from_secs(1),
            Some(std::path::Path::new("/nonexistent/ca.pem")),
        )
        .unwrap_err();
        assert!(
            err.starts_with("AMQP_CA_FILE (--amqp-ca-file): cannot read `/nonexistent/ca.pem`"),
            "{err}"
        );
    }
}
