//! The `worker dlq` command line (clap derive): global broker options and one subcommand per
//! operation.

use std::{path::PathBuf, time::Duration};

use shared::config::{DEFAULT_AMQP_URL, parse_duration};

use super::Selection;

/// Options of `worker dlq`.
#[derive(Debug, Clone, clap::Args)]
pub struct DlqArgs {
    #[command(flatten)]
    pub broker: DlqBrokerArgs,
    #[command(subcommand)]
    pub command: DlqCommand,
}

/// Where the DLQ lives and how long to wait for the broker. Global, so they may be given
/// before or after the subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct DlqBrokerArgs {
    // The same option as `shared::config::BrokerArgs::amqp_url` (default and check shared),
    // declared again only because here it must be `global` (accepted after the subcommand),
    // which the worker's top-level copy cannot be without clashing with this one.
    /// RabbitMQ URL (vhost URL-encoded: `/` is `%2f`), or a comma-separated list of the
    /// nodes of one cluster, tried in turn (`amqps://` for TLS).
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = DEFAULT_AMQP_URL,
        hide_env_values = true,
        global = true
    )]
    pub amqp_url: String,

    /// How long each node gets to accept the connection before the next is tried.
    #[arg(long, env = "AMQP_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration, global = true)]
    pub amqp_connect_timeout: Duration,

    /// PEM file of the CA that signed the brokers' certificates (`amqps://`), trusted in
    /// addition to the system roots.
    #[arg(long, env = "AMQP_CA_FILE", global = true)]
    pub amqp_ca_file: Option<PathBuf>,

    /// Deadline for each broker operation: connecting, each read, each publisher confirm.
    #[arg(long, env = "DLQ_TIMEOUT", default_value = "10s", value_parser = parse_duration, global = true)]
    pub timeout: Duration,
}

impl DlqBrokerArgs {
    /// Checks the URL and CA file; the error names the option and hides the password.
    pub fn validate(&self) -> Result<(), String> {
        self.brokers().map(drop)
    }

    /// The nodes to try, with their connect timeout and CA (see `validate`).
    pub fn brokers(&self) -> Result<shared::amqp::Brokers, String> {
        shared::config::brokers(
            &self.amqp_url,
            self.amqp_connect_timeout,
            self.amqp_ca_file.as_deref(),
        )
    }
}

/// The operations.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered messages, oldest first. Changes nothing.
    List(ListArgs),
    /// Show one message: every property and header, and the body.
    Show(ShowArgs),
    /// Put messages back on the work exchange, attempts reset, marked as replayed.
    Replay(ReplayArgs),
    /// Delete messages from the DLQ for good.
    Purge(PurgeArgs),
}

/// `worker dlq list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Show at most N messages (the whole queue is still read, to keep its order).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Only messages of this notification type (`order_paid`, …).
    #[arg(long = "type", value_name = "TYPE")]
    pub notification_type: Option<String>,
    /// One JSON document on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `worker dlq show`.
#[derive(Debug, Clone, clap::Args)]
pub struct ShowArgs {
    /// The message's id, as `list` prints it.
    pub id: String,
    /// One JSON document on stdout, with the body both parsed and as stored.
    #[arg(long, conflicts_with = "raw")]
    pub json: bool,
    /// Only the body, byte for byte as stored (for piping).
    #[arg(long)]
    pub raw: bool,
}

/// Which messages `replay` and `purge` act on: ids, or everything (optionally of one type).
#[derive(Debug, Clone, clap::Args)]
pub struct SelectArgs {
    /// Ids as `list` prints them.
    #[arg(
        value_name = "ID",
        required_unless_present_any = ["all", "notification_type"],
        conflicts_with_all = ["all", "notification_type"]
    )]
    pub ids: Vec<String>,
    /// Every message in the DLQ.
    #[arg(long)]
    pub all: bool,
    /// Every message of this notification type (alone or with `--all`).
    #[arg(long = "type", value_name = "TYPE")]
    pub notification_type: Option<String>,
}

impl SelectArgs {
    pub fn selection(&self) -> Selection {
        if self.ids.is_empty() {
            Selection::All {
                notification_type: self.notification_type.clone(),
            }
        } else {
            Selection::Ids(self.ids.clone())
        }
    }
}

/// `worker dlq replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Print what would move; move nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// At most N messages per second (spaced evenly, no bursts), to spare the game's API.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: Option<u32>,
    /// One JSON document on stdout instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// `worker dlq purge`.
#[derive(Debug, Clone, clap::Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Confirm the deletion; without it nothing is changed.
    #[arg(long)]
    pub yes: bool,
    /// One JSON document on stdout instead of lines.
    #[arg(long)]
    pub json: bool,
}
