//! The consume loop: one consumer on `xsolla.fulfillment` per connected session, each
//! delivery handled in its own task, re-subscribed after any loss, drained on shutdown.

use std::{
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_lite::{FutureExt, StreamExt};
use lapin::{
    BasicProperties, Channel, Consumer,
    message::Delivery,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
};
use shared::{
    amqp::{Link, Session},
    envelope::{HeadersExt, header, is_valid_traceparent, new_traceparent},
    topology::{self, Topology, WORK_QUEUE},
    webhook::{self, Fulfilment, WebhookError},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument as _;

use crate::{
    order::Recorder,
    process::{Context, Message, process_read},
    settle::{Settled, requeue, settle},
};

/// Longest wait for the broker to confirm the consumer's cancellation at shutdown.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// Prefetch, and so the most deliveries in flight at once.
    pub concurrency: u16,
    pub publish_timeout: Duration,
    /// Declared again before every subscription, so a work queue deleted under a running
    /// worker (the broker then cancels the consumer) is recreated instead of waited for.
    pub topology: Topology,
    /// How long in-flight deliveries get to finish after `shutdown`.
    pub shutdown_timeout: Duration,
}

/// Consumes until `shutdown`, then cancels the consumer, waits (at most
/// `shutdown_timeout`) for in-flight deliveries to be settled and closes its channel.
/// `consuming` is true exactly while a consumer is subscribed (half of `/readyz`).
pub async fn consume(
    link: Link,
    ctx: Arc<Context>,
    options: ConsumeOptions,
    consuming: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let handler = Arc::new(Handler {
        recorder: Recorder::new(options.topology.clone()),
        ctx,
        link: link.clone(),
        publish_timeout: options.publish_timeout,
    });
    let resubscribe_backoff = shared::amqp::reconnect_backoff;
    let mut backoff = resubscribe_backoff();
    let mut draining: Option<Channel> = None;
    while !shutdown.is_cancelled() {
        let session = tokio::select! {
            _ = shutdown.cancelled() => break,
            session = link.wait_ready(Duration::from_secs(1)) => session,
        };
        let Some(session) = session else { continue };
        let (channel, consumer) = match subscribe(&session, &options).await {
            Ok(subscribed) => subscribed,
            Err(error) => {
                let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(%error, retry_in = ?shared::telemetry::to_millis(delay), "cannot subscribe to {WORK_QUEUE}");
                link.report_error();
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        backoff = resubscribe_backoff();
        consuming.store(true, Ordering::SeqCst);
        tracing::info!(
            queue = WORK_QUEUE,
            prefetch = options.concurrency,
            "consuming"
        );
        let stopped = tokio::select! {
            stopped = run_consumer(&channel, consumer, &handler, &tracker, &shutdown) => stopped,
            // The supervisor gave the session up (its node went silent): the consumer on it
            // would wait for ever, so subscribe on the next one.
            () = link.replaced(&session) => false,
        };
        consuming.store(false, Ordering::SeqCst);
        if stopped {
            draining = Some(channel);
            break;
        }
        tracing::warn!("consumer lost; subscribing again");
        link.report_error();
    }
    consuming.store(false, Ordering::SeqCst);
    drain(&tracker, options.shutdown_timeout).await;
    if let Some(channel) = draining {
        let _ = channel.close(200, "worker stopping".into()).await;
    }
}

/// Opens the consumer's own channel (acks travel on it), makes sure the topology is there, sets the
/// prefetch, subscribes.
async fn subscribe(
    session: &Session,
    options: &ConsumeOptions,
) -> lapin::Result<(Channel, Consumer)> {
    // The session declared the topology (or, on a reconnect, checked it): declaring its
    // bindings again would wait out a silent cluster node.
    let channel = topology::ensure_on(session.connection(), &options.topology).await?;
    channel
        .basic_qos(options.concurrency, BasicQosOptions::default())
        .await?;
    let tag = format!("worker-{}-{}", std::process::id(), channel.id());
    let consumer = channel
        .basic_consume(
            WORK_QUEUE.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer))
}

/// Hands each delivery to a task until the consumer ends (false) or `shutdown` (true,
/// after cancelling the consumer so the broker sends no more).
async fn run_consumer(
    channel: &Channel,
    mut consumer: Consumer,
    handler: &Arc<Handler>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> bool {
    loop {
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                let cancel = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default());
                match tokio::time::timeout(CANCEL_TIMEOUT, cancel).await {
                    Ok(Ok(())) => tracing::info!("stopped consuming"),
                    Ok(Err(error)) => tracing::warn!(%error, "basic.cancel failed"),
                    Err(_) => tracing::warn!("no basic.cancel-ok within {CANCEL_TIMEOUT:?}"),
                }
                return true;
            }
            next = consumer.next() => next,
        };
        match next {
            Some(Ok(delivery)) => {
                tracker.spawn(handle(handler.clone(), delivery));
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "consumer error");
                return false;
            }
            None => {
                tracing::warn!("the broker cancelled the consumer");
                return false;
            }
        }
    }
}

/// What every delivery's task needs.
struct Handler {
    ctx: Arc<Context>,
    recorder: Recorder,
    link: Link,
    publish_timeout: Duration,
}

/// One delivery, start to finish, in its `delivery` span: every line logged for it (an
/// unparsable body, settle's requeue and ack warnings, a panic) carries its `message_id`,
/// `traceparent`, `type`, `order_id`, `user_id` and `attempt`.
async fn handle(handler: Arc<Handler>, delivery: Delivery) {
    let Handler {
        ctx,
        recorder,
        link,
        publish_timeout,
    } = &*handler;
    let publish_timeout = *publish_timeout;
    let in_flight = metrics::gauge!("worker_in_flight");
    in_flight.increment(1.0);
    let traced = with_traceparent(&delivery.properties);
    let message = Message {
        properties: traced.as_ref().unwrap_or(&delivery.properties),
        ..Message::from(&delivery)
    };
    let kind = type_label(ctx, &message);
    let read = ctx.mode.read(message.body);
    let span = delivery_span(&message, &read);
    let label = async {
        // A bug must not strand the delivery unacked (and its prefetch slot taken) for the
        // life of the channel: requeue it, and the work queue's delivery limit parks it in
        // the DLQ if it keeps failing this way.
        match AssertUnwindSafe(process_read(ctx, &message, &read))
            .catch_unwind()
            .await
        {
            Ok(outcome) => match settle(
                link,
                publish_timeout,
                &delivery,
                &outcome,
                read.as_ref().ok(),
                recorder,
            )
            .await
            {
                Settled::Acked => outcome.label(),
                Settled::Requeued | Settled::Abandoned => "requeued",
            },
            Err(_) => {
                tracing::error!("processing panicked; requeueing the delivery");
                requeue(&delivery, publish_timeout).await;
                "requeued"
            }
        }
    }
    .instrument(span)
    .await;
    metrics::counter!("worker_deliveries_total", "type" => kind, "outcome" => label).increment(1);
    in_flight.decrement(1.0);
}

/// The delivery's properties with a new `traceparent` when it has none (or a malformed
/// one), so that the trace id its lines log is the one its inventory call sends. `None`
/// (nothing copied) for every message the ingress published.
fn with_traceparent(properties: &BasicProperties) -> Option<BasicProperties> {
    let headers = properties.headers().as_ref();
    let valid = headers
        .and_then(|h| h.get_str(header::TRACEPARENT))
        .is_some_and(|t| is_valid_traceparent(&t));
    if valid {
        return None;
    }
    let mut headers = headers.cloned().unwrap_or_default();
    headers.set_str(header::TRACEPARENT, &new_traceparent());
    Some(properties.clone().with_headers(headers))
}

/// The span of one delivery. Ids come from the fulfilment read; for a body that cannot be
/// fulfilled, from as much of it as can be read (`-` where nothing can).
fn delivery_span(msg: &Message<'_>, read: &Result<Fulfilment, WebhookError>) -> tracing::Span {
    let headers = msg.headers();
    let traceparent = headers.and_then(|h| h.get_str(header::TRACEPARENT));
    let message_id = msg.properties.message_id().as_ref().map(|id| id.as_str());
    let summary;
    let (kind, order_id, user_id) = match read {
        Ok(f) => (
            Some(f.notification_type.clone()),
            f.order_id.as_deref(),
            Some(f.user_id.as_str()),
        ),
        Err(_) => {
            summary = webhook::summarize(msg.body).ok();
            let kind = headers
                .and_then(|h| h.get_str(header::NOTIFICATION_TYPE))
                .or_else(|| summary.as_ref().map(|s| s.notification_type.clone()));
            let s = summary.as_ref();
            (
                kind,
                s.and_then(|s| s.order_id.as_deref()),
                s.and_then(|s| s.user_id.as_deref()),
            )
        }
    };
    tracing::info_span!(
        "delivery",
        message_id = message_id.unwrap_or("-"),
        traceparent = traceparent.as_deref().unwrap_or("-"),
        r#type = kind.as_deref().unwrap_or(msg.routing_key),
        order_id = order_id.unwrap_or("-"),
        user_id = user_id.unwrap_or("-"),
        attempt = msg.prior_attempts().saturating_add(1),
    )
}

/// The `type` label: a fulfilled type, or `other`, so a stray type cannot grow the label set.
fn type_label(ctx: &Context, msg: &Message<'_>) -> &'static str {
    let named = msg
        .headers()
        .and_then(|h| {
            h.get_str(header::NOTIFICATION_TYPE)
                .or_else(|| h.get_str(header::ROUTING_KEY))
        })
        .unwrap_or_else(|| msg.routing_key.to_owned());
    ctx.mode
        .fulfilled_types()
        .iter()
        .find(|t| **t == named)
        .copied()
        .unwrap_or("other")
}

async fn drain(tracker: &TaskTracker, timeout: Duration) {
    tracker.close();
    if tracker.is_empty() {
        return;
    }
    tracing::info!(
        in_flight = tracker.len(),
        ?timeout,
        "waiting for in-flight deliveries"
    );
    if tokio::time::timeout(timeout, tracker.wait()).await.is_err() {
        tracing::warn!(
            in_flight = tracker.len(),
            "shutdown timeout: closing with deliveries unsettled (the broker redelivers them)"
        );
    }
}
