//! What can go wrong in `worker dlq`, and the exit code each failure maps to.

use std::time::Duration;

use shared::publish::PublishError;

use crate::ops_connection::BrokerFailure;

/// Exit codes of `worker dlq` (see the module documentation of [`crate::dlq`]).
pub mod exit {
    /// Done.
    pub const OK: u8 = 0;
    /// Ran, but not everything asked for was done: unknown ids (then nothing was changed),
    /// or messages that name no routing key and so cannot be replayed.
    pub const PARTIAL: u8 = 1;
    /// Bad flags or configuration, or `purge` without `--yes`; nothing was changed.
    pub const USAGE: u8 = 2;
    /// Broker unreachable, connection lost, an operation refused or timed out.
    pub const BROKER: u8 = 3;
    /// The DLQ (or the work exchange, for `replay`) does not exist on this vhost.
    pub const MISSING: u8 = 4;
}

/// A failure of a `worker dlq` operation. Whatever it is, no message is lost: what was not
/// acked is returned to the DLQ (by us, or by the broker when the connection goes).
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("cannot connect to RabbitMQ at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(
        "queue {queue} does not exist on this vhost: has the worker or ingress ever started here?"
    )]
    QueueMissing { queue: &'static str },
    #[error(
        "exchange {exchange} does not exist on this vhost: has the worker or ingress ever started here?"
    )]
    ExchangeMissing { exchange: &'static str },
    #[error("{what}: no answer from RabbitMQ within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("{what}: {source}")]
    Broker {
        what: &'static str,
        #[source]
        source: lapin::Error,
    },
    #[error("republishing {id} failed ({source}); it is still in the DLQ")]
    Publish {
        id: String,
        #[source]
        source: PublishError,
    },
}

impl DlqError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            DlqError::QueueMissing { .. } | DlqError::ExchangeMissing { .. } => exit::MISSING,
            _ => exit::BROKER,
        }
    }

    pub(crate) fn broker(what: &'static str) -> impl FnOnce(lapin::Error) -> DlqError {
        move |source| DlqError::Broker { what, source }
    }
}

impl BrokerFailure for DlqError {
    fn unreachable(url: String, reason: String) -> Self {
        DlqError::Unreachable { url, reason }
    }

    fn timeout(what: &'static str, after: Duration) -> Self {
        DlqError::Timeout { what, after }
    }

    fn broker(what: &'static str, source: lapin::Error) -> Self {
        DlqError::Broker { what, source }
    }
}
