//! What can go wrong in `worker order`, and the exit code each failure maps to (the same
//! table as `worker dlq`: [`crate::dlq::exit`]).

use std::time::Duration;

use shared::{order_events::STREAM, publish::PublishError};

use crate::{dlq::exit, ops_connection::BrokerFailure};

/// A failure of `worker order`. It only reads (and publishes one sync marker), so no
/// failure changes anything.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("cannot connect to RabbitMQ at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(
        "stream {STREAM} does not exist on this vhost: has the worker or ingress ever started here?"
    )]
    StreamMissing,
    #[error("{what}: no answer from RabbitMQ within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("{what}: {source}")]
    Broker {
        what: &'static str,
        #[source]
        source: lapin::Error,
    },
    #[error("publishing the sync marker into {STREAM} failed: {0}")]
    Marker(#[source] PublishError),
    #[error("the broker cancelled the stream consumer (was {STREAM} deleted?)")]
    Cancelled,
}

impl OrderError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            OrderError::StreamMissing => exit::MISSING,
            _ => exit::BROKER,
        }
    }

    pub(crate) fn broker(what: &'static str) -> impl FnOnce(lapin::Error) -> OrderError {
        move |source| OrderError::Broker { what, source }
    }
}

impl BrokerFailure for OrderError {
    fn unreachable(url: String, reason: String) -> Self {
        OrderError::Unreachable { url, reason }
    }

    fn timeout(what: &'static str, after: Duration) -> Self {
        OrderError::Timeout { what, after }
    }

    fn broker(what: &'static str, source: lapin::Error) -> Self {
        OrderError::Broker { what, source }
    }
}
