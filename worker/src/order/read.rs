//! Reading an order's events out of the stream for `worker order`.
//!
//! A stream has no "end": a reader that wants *everything up to now* publishes a sync
//! marker with a fresh token first and reads until it meets that token, so every event
//! confirmed before the command started is seen, and the command never waits on an idle
//! stream. The read starts at `--since` ago (`x-stream-offset` as a timestamp, which the
//! broker resolves to a chunk, so a few older messages come too: they are filtered by
//! their `at`).

use std::{collections::BTreeMap, time::Duration};

use futures_lite::StreamExt;
use lapin::{
    Channel, Connection,
    options::{BasicAckOptions, BasicCancelOptions, QueueDeclareOptions},
    types::FieldTable,
};
use shared::{
    amqp,
    order_events::{self, OrderEvent, StartAt, StreamMessage},
};
use time::OffsetDateTime;

use super::error::OrderError;
use crate::ops_connection::{open_confirmed, within};

/// Stream consumers need a prefetch (credit); acks only return credit.
const PREFETCH: u16 = 1000;
/// Credit is returned once per this many messages (one `basic.ack multiple`).
const ACK_EVERY: u64 = 250;
/// The stream resolves the start time with the broker's clock, events carry their
/// writer's: starting this much earlier (and filtering by `at`) keeps a broker clock that
/// is behind ours from skipping events, or our own marker with a short `--since`.
const CLOCK_MARGIN: time::Duration = time::Duration::minutes(5);

/// A connection for `worker order`: a confirm-mode channel for the marker, and a plain
/// one for the stream consumer (acks there only return credit).
pub struct StreamConnection {
    connection: Connection,
    confirm: Channel,
    timeout: Duration,
}

impl StreamConnection {
    /// Connects within `timeout`; the error names the URL with its password hidden.
    pub async fn open(
        brokers: impl Into<amqp::Brokers>,
        timeout: Duration,
    ) -> Result<StreamConnection, OrderError> {
        let (connection, confirm) = open_confirmed(brokers, "worker-order", timeout).await?;
        Ok(StreamConnection {
            connection,
            confirm,
            timeout,
        })
    }

    /// Closes politely, within the timeout; errors are irrelevant at that point.
    pub async fn close(self) {
        let close = self.connection.close(200, "done".into());
        let _ = tokio::time::timeout(self.timeout, close).await;
    }

    /// Every event that names one of `order_ids`, stored at or after `since`, in stream
    /// order (the order they were published in), per order id.
    pub async fn events(
        &self,
        order_ids: &[String],
        since: OffsetDateTime,
    ) -> Result<BTreeMap<String, Vec<OrderEvent>>, OrderError> {
        self.check_stream().await?;
        let token = order_events::publish_marker(&self.confirm, self.timeout)
            .await
            .map_err(OrderError::Marker)?;
        let channel = within(
            self.timeout,
            "opening a channel",
            self.connection.create_channel(),
        )
        .await?;
        let tag = format!("worker-order-{}", std::process::id());
        let mut consumer = within(
            self.timeout,
            "subscribing to the stream",
            order_events::subscribe(
                &channel,
                StartAt::Since(since - CLOCK_MARGIN),
                PREFETCH,
                &tag,
            ),
        )
        .await?;
        let mut found: BTreeMap<String, Vec<OrderEvent>> = BTreeMap::new();
        let mut read = 0u64;
        loop {
            let delivery = match tokio::time::timeout(self.timeout, consumer.next()).await {
                Ok(Some(Ok(delivery))) => delivery,
                Ok(Some(Err(e))) => return Err(OrderError::broker("reading the stream")(e)),
                Ok(None) => return Err(OrderError::Cancelled),
                Err(_) => {
                    return Err(OrderError::Timeout {
                        what: "reading the stream",
                        after: self.timeout,
                    });
                }
            };
            read += 1;
            if read.is_multiple_of(ACK_EVERY) {
                let ack = delivery.acker.ack(BasicAckOptions { multiple: true });
                within(self.timeout, "acknowledging stream messages", ack).await?;
            }
            match order_events::decode_delivery(&delivery) {
                StreamMessage::Marker(t) if t == token => break,
                // Chunk precision: a few older events come too.
                StreamMessage::Event(event)
                    if order_ids.contains(&event.order_id)
                        && event.at_time().is_none_or(|at| at >= since) =>
                {
                    found
                        .entry(event.order_id.clone())
                        .or_default()
                        .push(*event);
                }
                _ => {}
            }
        }
        let cancel = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default());
        let _ = tokio::time::timeout(self.timeout, cancel).await;
        Ok(found)
    }

    /// The stream exists (passive declare on a channel of its own: a 404 closes it).
    async fn check_stream(&self) -> Result<(), OrderError> {
        let channel = within(
            self.timeout,
            "opening a channel",
            self.connection.create_channel(),
        )
        .await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declare =
            channel.queue_declare(order_events::STREAM.into(), passive, FieldTable::default());
        match tokio::time::timeout(self.timeout, declare).await {
            Ok(Ok(_)) => {
                let close = channel.close(200, "checked".into());
                let _ = tokio::time::timeout(self.timeout, close).await;
                Ok(())
            }
            Ok(Err(e)) if amqp::is_not_found(&e) => Err(OrderError::StreamMissing),
            Ok(Err(e)) => Err(OrderError::broker("checking the stream")(e)),
            Err(_) => Err(OrderError::Timeout {
                what: "checking the stream",
                after: self.timeout,
            }),
        }
    }
}

/// `now - since`, or the epoch for a `--since` longer than that.
pub fn start_time(now: OffsetDateTime, since: Duration) -> OffsetDateTime {
    time::Duration::try_from(since)
        .ok()
        .and_then(|d| now.checked_sub(d))
        .filter(|t| *t >= OffsetDateTime::UNIX_EPOCH)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_starts_since_ago_and_never_before_the_epoch() {
        let now = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        assert_eq!(
            start_time(now, Duration::from_secs(3600)).unix_timestamp(),
            1_000_000 - 3600
        );
        assert_eq!(
            start_time(now, Duration::from_secs(u64::MAX)),
            OffsetDateTime::UNIX_EPOCH
        );
    }
}
