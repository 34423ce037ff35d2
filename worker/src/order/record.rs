//! Publishing the worker's order events, and putting the stream back when it is gone.
//!
//! A missing stream makes every event publish come back unroutable (`mandatory`), so every
//! delivery would be requeued until the work queue's delivery limit parked it in the DLQ.
//! Deleting a queue does not cancel the work-queue consumer, so the re-declaration that
//! comes with each re-subscription never happens by itself: the recorder declares the
//! topology again as soon as the broker returns an event, and the redelivery then succeeds.

use std::time::{Duration, Instant};

use lapin::message::Delivery;
use shared::{
    amqp::Link,
    order_events::{self, OrderEvent},
    publish::PublishError,
    topology::{self, Topology},
    webhook::Fulfilment,
};
use tokio::sync::Mutex;

use crate::process::Outcome;

/// At most one re-declaration per this long, however many deliveries see the stream gone.
const HEAL_EVERY: Duration = Duration::from_secs(1);

/// What the worker needs to publish order events.
#[derive(Debug)]
pub struct Recorder {
    topology: Topology,
    last_heal: Mutex<Option<Instant>>,
}

impl Recorder {
    pub fn new(topology: Topology) -> Recorder {
        Recorder {
            topology,
            last_heal: Mutex::new(None),
        }
    }

    /// The event `outcome` of `delivery` stands for (see [`super::event`]).
    pub fn event_for(
        &self,
        delivery: &Delivery,
        outcome: &Outcome,
        fulfilment: Option<&Fulfilment>,
        dlq_id: Option<&str>,
    ) -> Option<OrderEvent> {
        super::event::for_outcome(delivery, outcome, fulfilment, dlq_id)
    }

    /// Publishes `event` with a confirm on the current session of `link`. When the broker
    /// returns it (no stream to route to), declares the topology again before answering.
    pub async fn publish(
        &self,
        link: &Link,
        event: &OrderEvent,
        timeout: Duration,
    ) -> Result<(), PublishError> {
        let session = link.current().ok_or(PublishError::NotConnected)?;
        let result = order_events::publish(session.channel(), event, timeout).await;
        if let Err(PublishError::Returned { .. }) = &result {
            self.heal(link, timeout).await;
        }
        result
    }

    /// Declares the topology on a channel of its own (a failed declaration closes its
    /// channel, and the session's must stay usable).
    async fn heal(&self, link: &Link, timeout: Duration) {
        let mut last = self.last_heal.lock().await;
        if last.is_some_and(|t| t.elapsed() < HEAL_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let Some(session) = link.current() else {
            return;
        };
        let declared = tokio::time::timeout(timeout, async {
            let channel = topology::declare_on(session.connection(), &self.topology).await?;
            channel.close(200, "topology declared".into()).await
        })
        .await;
        match declared {
            Ok(Ok(())) => tracing::warn!(
                stream = order_events::STREAM,
                "the broker returned an order event: the topology is declared again"
            ),
            Ok(Err(error)) => tracing::error!(%error, "cannot declare the topology again"),
            Err(_) => tracing::error!(?timeout, "declaring the topology again timed out"),
        }
    }
}
