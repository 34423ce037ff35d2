//! Reading the DLQ without taking anything away: the connection, one *pass* over the queue
//! (the primitive every command is built on), `list` and `show`.
//!
//! AMQP 0-9-1 cannot browse a quorum queue, so a pass takes the count of ready messages
//! from a passive `queue.declare`, `basic.get`s that many without auto-ack (each stays the
//! broker's until acked), and at the end returns everything it did not ack with one
//! `basic.nack(multiple, requeue)`. Measured on RabbitMQ 3.10 quorum queues: requeued
//! messages go *behind* the ones still ready, so returning a whole pass restores the order
//! exactly, while returning part of the queue rotates it. That is why every pass reads the
//! whole queue, even for `list --limit 5`. If the connection drops mid-pass the broker
//! returns the unacked messages itself: nothing is lost, though the order may change.

use std::{collections::BTreeSet, time::Duration};

use lapin::{
    Channel, Connection, ExchangeKind,
    options::{
        BasicAckOptions, BasicGetOptions, BasicNackOptions, ExchangeDeclareOptions,
        QueueDeclareOptions,
    },
    types::FieldTable,
};
use shared::{
    amqp::{self, is_not_found},
    topology,
};

use crate::ops_connection::{open_confirmed, within};

use super::{error::DlqError, message::DeadLetter};

/// A connection for `worker dlq`, with one confirm-mode channel.
pub struct DlqConnection {
    pub connection: Connection,
    pub channel: Channel,
}

impl DlqConnection {
    /// Connects within `timeout`; the error names the URL with its password hidden.
    pub async fn open(
        brokers: impl Into<amqp::Brokers>,
        timeout: Duration,
    ) -> Result<DlqConnection, DlqError> {
        let (connection, channel) = open_confirmed(brokers, "worker-dlq", timeout).await?;
        Ok(DlqConnection {
            connection,
            channel,
        })
    }

    /// Closes politely; errors are irrelevant at that point.
    pub async fn close(self) {
        let _ = self.connection.close(200, "done".into()).await;
    }
}

/// Ready messages in the DLQ (not counting any handed out and not yet acked), by passive
/// declare. A missing queue is [`DlqError::QueueMissing`]; the channel is closed then.
pub async fn queue_count(channel: &Channel, timeout: Duration) -> Result<u32, DlqError> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match tokio::time::timeout(
        timeout,
        channel.queue_declare(topology::DLQ.into(), passive, FieldTable::default()),
    )
    .await
    {
        Ok(Ok(queue)) => Ok(queue.message_count()),
        Ok(Err(e)) if is_not_found(&e) => Err(DlqError::QueueMissing {
            queue: topology::DLQ,
        }),
        Ok(Err(e)) => Err(DlqError::broker("reading the DLQ's message count")(e)),
        Err(_) => Err(DlqError::Timeout {
            what: "reading the DLQ's message count",
            after: timeout,
        }),
    }
}

/// Checks that the work exchange exists (passive declare), before a replay publishes to it.
pub async fn check_work_exchange(channel: &Channel, timeout: Duration) -> Result<(), DlqError> {
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let declare = channel.exchange_declare(
        topology::EXCHANGE.into(),
        ExchangeKind::Topic,
        passive,
        FieldTable::default(),
    );
    match tokio::time::timeout(timeout, declare).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if is_not_found(&e) => Err(DlqError::ExchangeMissing {
            exchange: topology::EXCHANGE,
        }),
        Ok(Err(e)) => Err(DlqError::broker("checking the work exchange")(e)),
        Err(_) => Err(DlqError::Timeout {
            what: "checking the work exchange",
            after: timeout,
        }),
    }
}

/// One message taken by a [`Pass`], not yet acked.
#[derive(Debug)]
pub struct Taken {
    pub delivery_tag: u64,
    pub letter: DeadLetter,
}

/// One pass over the DLQ, in queue order; see the module documentation.
pub struct Pass<'c> {
    channel: &'c Channel,
    timeout: Duration,
    /// Ready messages when the pass began: it takes no more than these, so messages parked
    /// meanwhile are left alone.
    total: u32,
    taken: u32,
    acked: u32,
    held: BTreeSet<u64>,
}

impl<'c> Pass<'c> {
    /// Starts a pass; fails with [`DlqError::QueueMissing`] if there is no DLQ.
    pub async fn begin(channel: &'c Channel, timeout: Duration) -> Result<Pass<'c>, DlqError> {
        let total = queue_count(channel, timeout).await?;
        Ok(Pass {
            channel,
            timeout,
            total,
            taken: 0,
            acked: 0,
            held: BTreeSet::new(),
        })
    }

    /// Messages in the queue when the pass began.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// The next message, or `None` when the pass has seen the whole queue.
    pub async fn next(&mut self) -> Result<Option<Taken>, DlqError> {
        if self.taken >= self.total {
            return Ok(None);
        }
        let get = self
            .channel
            .basic_get(topology::DLQ.into(), BasicGetOptions { no_ack: false });
        let Some(message) = within(self.timeout, "reading the DLQ", get).await? else {
            return Ok(None);
        };
        self.taken += 1;
        let delivery = message.delivery;
        self.held.insert(delivery.delivery_tag);
        Ok(Some(Taken {
            delivery_tag: delivery.delivery_tag,
            letter: DeadLetter::new(delivery.properties, delivery.data),
        }))
    }

    /// Removes a taken message from the DLQ for good.
    pub async fn ack(&mut self, delivery_tag: u64) -> Result<(), DlqError> {
        let ack = self
            .channel
            .basic_ack(delivery_tag, BasicAckOptions::default());
        within(self.timeout, "removing a message from the DLQ", ack).await?;
        self.held.remove(&delivery_tag);
        self.acked += 1;
        Ok(())
    }

    /// Returns every message taken and not acked, in order, and waits (up to the timeout)
    /// until the broker has put them back, so a command run right after sees them.
    pub async fn finish(mut self) -> Result<(), DlqError> {
        let Some(&last) = self.held.last() else {
            return Ok(());
        };
        let nack = self.channel.basic_nack(
            last,
            BasicNackOptions {
                multiple: true,
                requeue: true,
            },
        );
        within(self.timeout, "returning messages to the DLQ", nack).await?;
        self.held.clear();
        // A quorum queue applies returns asynchronously; the ready count shows when they are in.
        let expected = self.taken - self.acked;
        let deadline = tokio::time::Instant::now() + self.timeout;
        while queue_count(self.channel, self.timeout).await? < expected
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

/// What `list` reads.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Keep at most this many messages (all are still read).
    pub limit: Option<usize>,
    /// Only messages of this notification type.
    pub notification_type: Option<String>,
}

/// The result of `list`.
#[derive(Debug, Clone)]
pub struct Listing {
    /// Ready messages in the whole DLQ when the listing began.
    pub queue_count: u32,
    /// Messages that matched the type filter (all of them without one).
    pub matched: usize,
    /// The first `limit` matching messages, in queue order.
    pub messages: Vec<DeadLetter>,
}

/// Lists the DLQ in queue order; changes nothing.
pub async fn list(
    channel: &Channel,
    timeout: Duration,
    options: &ListOptions,
) -> Result<Listing, DlqError> {
    let mut pass = Pass::begin(channel, timeout).await?;
    let mut listing = Listing {
        queue_count: pass.total(),
        matched: 0,
        messages: Vec::new(),
    };
    while let Some(taken) = pass.next().await? {
        let wanted = options
            .notification_type
            .as_deref()
            .is_none_or(|t| taken.letter.is_type(t));
        if wanted {
            listing.matched += 1;
            if options
                .limit
                .is_none_or(|limit| listing.messages.len() < limit)
            {
                listing.messages.push(taken.letter);
            }
        }
    }
    pass.finish().await?;
    Ok(listing)
}

/// Every copy with this id (one, except for byte-identical copies the broker parked in the
/// same second); empty if there is none. Changes nothing.
pub async fn find(
    channel: &Channel,
    timeout: Duration,
    id: &str,
) -> Result<Vec<DeadLetter>, DlqError> {
    let mut pass = Pass::begin(channel, timeout).await?;
    let mut found = Vec::new();
    while let Some(taken) = pass.next().await? {
        if taken.letter.id == id {
            found.push(taken.letter);
        }
    }
    pass.finish().await?;
    Ok(found)
}
