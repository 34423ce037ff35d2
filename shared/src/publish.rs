//! Publishing with a broker confirm: the only way anything in the bridge publishes.
//!
//! Success means exactly one thing: the broker sent `basic.ack` for this message *and* did
//! not return it as unroutable (`mandatory`). Everything else — nack, return, a closed
//! channel, no confirm within the deadline — is an error, so callers never answer 2xx or
//! ack a delivery on a maybe.

use std::time::Duration;

use lapin::{BasicProperties, Channel, Confirmation, options::BasicPublishOptions};

/// Why a publish is not known to be durable.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to the broker")]
    NotConnected,
    #[error("the broker refused the message (basic.nack)")]
    Nacked,
    #[error("the broker returned the message: {code} {text}")]
    Returned { code: u16, text: String },
    #[error("no publisher confirm within {0:?}")]
    Timeout(Duration),
    #[error("the channel is not in confirm mode")]
    NotConfirmMode,
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
}

impl PublishError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PublishError::NotConnected => "not_connected",
            PublishError::Nacked => "nack",
            PublishError::Returned { .. } => "returned",
            PublishError::Timeout(_) => "timeout",
            PublishError::NotConfirmMode => "not_confirm_mode",
            PublishError::Amqp(_) => "amqp_error",
        }
    }
}

/// Publishes `body` as `mandatory` on a confirm-mode `channel` and waits for the confirm,
/// at most `timeout` for the whole exchange (lapin's own futures have no deadline).
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    timeout: Duration,
) -> Result<(), PublishError> {
    let confirmed = async {
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                properties,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) => Err(PublishError::Returned {
                code: returned.reply_code,
                text: returned.reply_text.to_string(),
            }),
            Confirmation::Nack(_) => Err(PublishError::Nacked),
            // A channel not in confirm mode proves nothing about durability.
            Confirmation::NotRequested => Err(PublishError::NotConfirmMode),
        }
    };
    tokio::time::timeout(timeout, confirmed)
        .await
        .map_err(|_| PublishError::Timeout(timeout))?
}
