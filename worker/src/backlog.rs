//! The broker's view of the bridge's queues, as metrics: every [`INTERVAL`] the worker asks
//! RabbitMQ (a passive `queue.declare` per queue) how many messages and consumers the work
//! queue, each delay tier, the DLQ and `xsolla.unrouted` have, and sets
//! `amqp_queue_messages{queue}` and `amqp_queue_consumers{queue}`. Backlog and DLQ depth are
//! what an operator watches during a sale; no management plugin or exporter is needed.

use std::{
    collections::HashSet,
    sync::{Arc, Weak},
    time::Duration,
};

use lapin::{Channel, options::QueueDeclareOptions, types::FieldTable};
use shared::{
    amqp::{Link, Session},
    topology::{self, Topology},
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the queues are looked at: a Prometheus scrape interval, and cheap for the
/// broker (one passive declare per queue and worker).
pub const INTERVAL: Duration = Duration::from_secs(15);

/// Longest wait for one passive declare; a broker that slow is reported by other means.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Reports the queues of `topology` every `every` (the worker uses [`INTERVAL`]) through
/// the supervised session of `link`, on a channel of its own, until `shutdown`. The first
/// report is made as soon as the session is up.
pub fn spawn(
    link: Link,
    topology: &Topology,
    every: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let mut reporter = Reporter {
        // Every quorum queue; the stream's depth is not a backlog.
        queues: topology::quorum_queues(topology),
        channel: None,
        missing: HashSet::new(),
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            // Waits (up to one interval) for a session, so the first numbers appear as soon
            // as the worker is connected rather than one interval later.
            let session = tokio::select! {
                _ = shutdown.cancelled() => break,
                session = link.wait_ready(every) => session,
            };
            // Not connected: the last numbers stay (amqp_connected says they are stale).
            if let Some(session) = session {
                reporter.report(&session).await;
            }
        }
        reporter.close().await;
    })
}

struct Reporter {
    queues: Vec<String>,
    /// Our channel and the session it belongs to (weak: the supervisor owns the session).
    channel: Option<(Weak<Session>, Channel)>,
    /// Queues found missing at the last look, so the warning is logged once per absence.
    missing: HashSet<String>,
}

impl Reporter {
    async fn report(&mut self, session: &Arc<Session>) {
        for queue in self.queues.clone() {
            let Some(channel) = self.channel_on(session).await else {
                return;
            };
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let declared = tokio::time::timeout(
                QUERY_TIMEOUT,
                channel.queue_declare(queue.as_str().into(), passive, FieldTable::default()),
            )
            .await;
            match declared {
                Ok(Ok(state)) => {
                    self.set(&queue, state.message_count(), state.consumer_count());
                    if self.missing.remove(&queue) {
                        tracing::info!(queue, "queue is back");
                    }
                }
                // The broker closed our channel with 404: the next queue gets a new one.
                Ok(Err(error)) if shared::amqp::is_not_found(&error) => {
                    self.channel = None;
                    // No queue, no messages in it; the warning says why.
                    self.set(&queue, 0, 0);
                    if self.missing.insert(queue.clone()) {
                        tracing::warn!(
                            queue,
                            "queue does not exist (deleted by hand?); it is declared again at the next reconnect"
                        );
                    }
                }
                Ok(Err(error)) => {
                    tracing::debug!(queue, %error, "cannot read the queue's state; trying again later");
                    self.channel = None;
                    return;
                }
                Err(_) => {
                    tracing::debug!(
                        queue,
                        "no answer to a passive declare within {QUERY_TIMEOUT:?}"
                    );
                    self.drop_channel().await;
                    return;
                }
            }
        }
    }

    fn set(&self, queue: &str, messages: u32, consumers: u32) {
        let label = queue.to_owned();
        metrics::gauge!("amqp_queue_messages", "queue" => label.clone()).set(f64::from(messages));
        metrics::gauge!("amqp_queue_consumers", "queue" => label).set(f64::from(consumers));
    }

    /// Our channel on `session`, opened again when it was closed or belongs to a session
    /// that is gone.
    async fn channel_on(&mut self, session: &Arc<Session>) -> Option<Channel> {
        if let Some((owner, channel)) = &self.channel
            && Weak::ptr_eq(owner, &Arc::downgrade(session))
            && channel.status().connected()
        {
            return Some(channel.clone());
        }
        self.drop_channel().await;
        match session.connection().create_channel().await {
            Ok(channel) => {
                self.channel = Some((Arc::downgrade(session), channel.clone()));
                Some(channel)
            }
            Err(error) => {
                tracing::debug!(%error, "cannot open a channel for the queue report");
                None
            }
        }
    }

    async fn drop_channel(&mut self) {
        if let Some((_, channel)) = self.channel.take()
            && channel.status().connected()
        {
            // Bounded: a broker too slow to answer must not stall the loop.
            let _ = tokio::time::timeout(
                QUERY_TIMEOUT,
                channel.close(200, "queue report done".into()),
            )
            .await;
        }
    }

    async fn close(&mut self) {
        self.drop_channel().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_work_queue_tiers_dlq_and_unrouted() {
        let topology = Topology {
            retry_delays: vec![Duration::from_secs(10), Duration::from_secs(60)],
            ..Topology::default()
        };
        assert_eq!(
            topology::quorum_queues(&topology),
            [
                "xsolla.fulfillment",
                "xsolla.fulfillment.retry.10s",
                "xsolla.fulfillment.retry.1m",
                "xsolla.fulfillment.dlq",
                "xsolla.unrouted",
            ]
        );
    }
}
