//! The `worker order` command line.

use std::time::Duration;

use shared::config::parse_duration;

use crate::dlq::args::DlqBrokerArgs;

/// Options of `worker order`.
#[derive(Debug, Clone, clap::Args)]
pub struct OrderArgs {
    /// Same broker options as `worker dlq` (`AMQP_URL`, `--timeout`).
    #[command(flatten)]
    pub broker: DlqBrokerArgs,
    /// Xsolla order ids (`order.id`).
    #[arg(value_name = "ORDER_ID", required = true)]
    pub order_ids: Vec<String>,
    /// How far back to read the order-event stream (at most its retention).
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub since: Duration,
    /// One JSON document on stdout: the order's object, or an array of them for several ids.
    #[arg(long)]
    pub json: bool,
}
