//! Options shared by the ingress and the worker (clap flags with environment variables).

use std::time::Duration;

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
    /// RabbitMQ URL (vhost URL-encoded: `/` is `%2f`).
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_url: String,

    /// Delay tiers for retries, comma-separated durations (`10s,1m,10m,1h`). One quorum queue
    /// is declared per tier; the last tier repeats until the retry budget is spent.
    #[arg(long, env = "RETRY_DELAYS", default_value = "10s,1m,10m,1h", value_parser = parse_delays)]
    pub retry_delays: Delays,

    /// Also fulfil `payment` (grant) and `refund` (revoke), for integrations without the
    /// in-game store. Set it the same on the ingress and the worker: it decides bindings.
    #[arg(long, env = "FULFIL_PAYMENTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub fulfil_payments: bool,

    /// Longest wait for a publisher confirm before the publish counts as failed.
    #[arg(long, env = "PUBLISH_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub publish_timeout: Duration,

    /// How long the order-event stream (`xsolla.order-events`) keeps events: what
    /// `order-status` and `worker order` can show. Set it the same on every process: it is
    /// fixed when the stream is first declared.
    #[arg(long, env = "STATUS_RETENTION", default_value = "7days", value_parser = parse_duration)]
    pub status_retention: Duration,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl BrokerArgs {
    /// Checks what the clap parsers leave out; the error names the option.
    pub fn validate(&self) -> Result<(), String> {
        parse_amqp_url(&self.amqp_url)
            .map(drop)
            .map_err(|e| format!("AMQP_URL (--amqp-url): {e}"))
    }

    pub fn topology(&self) -> Topology {
        Topology {
            retry_delays: self.retry_delays.0.clone(),
            mode: FulfilmentMode {
                payments: self.fulfil_payments,
            },
            status_retention: self.status_retention,
            unrouted_ttl: crate::topology::UNROUTED_TTL,
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

/// Parses a comma-separated list of durations.
pub fn parse_delays(s: &str) -> Result<Delays, String> {
    let delays = s
        .split(',')
        .map(parse_duration)
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

/// Accepts `amqp://` and `amqps://` URLs that lapin can parse.
pub fn parse_amqp_url(s: &str) -> Result<String, String> {
    if !(s.starts_with("amqp://") || s.starts_with("amqps://")) {
        return Err(format!(
            "`{}` must start with amqp:// or amqps://",
            crate::amqp::redact_url(s)
        ));
    }
    s.parse::<lapin::uri::AMQPUri>().map_err(|e| {
        format!(
            "`{}` is not a valid AMQP URL: {e}",
            crate::amqp::redact_url(s)
        )
    })?;
    Ok(s.to_owned())
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
    }

    #[test]
    fn checks_amqp_urls() {
        assert!(parse_amqp_url("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        let err = parse_amqp_url("http://guest:pw@x").unwrap_err();
        assert!(err.contains("amqp://") && !err.contains("pw"), "{err}");
    }
}
