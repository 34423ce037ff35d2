//! Reads the order-event stream into the [`State`]: from the start of retention at boot,
//! then live. At boot it publishes a sync marker and counts as caught up (ready) once it
//! reads that marker back. After a broker loss it resubscribes from the offset after the
//! last one it saw, so nothing is applied twice and nothing is missed.

use std::{sync::Arc, time::Duration};

use futures_lite::StreamExt as _;
use lapin::options::BasicAckOptions;
use shared::{
    amqp::Link,
    order_events::{self, StartAt, StreamMessage},
};
use tokio_util::sync::CancellationToken;

use super::{state::State, view::Applied};

/// Stream credit: how many deliveries may be in flight to us. Acks only give credit back.
const PREFETCH: u16 = 500;
/// Acknowledge (with `multiple`) every this many deliveries, well inside the prefetch.
const ACK_EVERY: u64 = 100;
/// How often orders past the stream's retention are dropped from the view.
const FORGET_EVERY: Duration = Duration::from_secs(600);
/// How long to wait for a broker session before looking at `shutdown` again.
const WAIT_FOR_BROKER: Duration = Duration::from_secs(1);

/// Feeds `state` until `shutdown`.
pub async fn run(
    link: Link,
    state: Arc<State>,
    publish_timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut next: Option<u64> = None;
    let mut marker: Option<String> = None;
    while !shutdown.is_cancelled() {
        let Some(session) = link.wait_ready(WAIT_FOR_BROKER).await else {
            continue;
        };
        if marker.is_none() {
            match order_events::publish_marker(session.channel(), publish_timeout).await {
                Ok(token) => marker = Some(token),
                Err(error) => {
                    tracing::warn!(%error, "cannot publish the catch-up marker; retrying");
                    link.report_error();
                    pause(&shutdown).await;
                    continue;
                }
            }
        }
        let start = next.map_or(StartAt::First, StartAt::Offset);
        tokio::select! {
            () = shutdown.cancelled() => return,
            // The supervisor gave the session up (its node went silent): its consumer would
            // wait for ever. `next` holds the offset to resume from.
            () = link.replaced(&session) => {
                tracing::warn!(?start, "the RabbitMQ session was replaced; resubscribing to the order-event stream");
            }
            result = consume(&session, start, &state, &mut next, marker.as_deref()) => {
                if let Err(error) = result {
                    tracing::warn!(%error, ?start, "order-event stream consumer stopped; resubscribing");
                }
                link.report_error();
                pause(&shutdown).await;
            }
        }
    }
}

/// Drops from the view, every [`FORGET_EVERY`], the orders whose events all left the
/// stream's retention: a long-running instance then answers like a fresh one, and its
/// memory follows the retention instead of growing for ever.
pub async fn forget_expired(state: Arc<State>, retention: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(FORGET_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let cutoff = time::OffsetDateTime::now_utc().unix_timestamp()
            - i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        let forgotten = state.forget_before(cutoff);
        if forgotten > 0 {
            tracing::info!(
                forgotten,
                "orders past STATUS_RETENTION dropped from the view"
            );
        }
    }
}

async fn pause(shutdown: &CancellationToken) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(Duration::from_millis(200)) => {}
    }
}

/// Consumes from `start` until the consumer ends; `next` tracks the offset to resume at.
async fn consume(
    session: &shared::amqp::Session,
    start: StartAt,
    state: &State,
    next: &mut Option<u64>,
    marker: Option<&str>,
) -> lapin::Result<()> {
    // A channel of its own: the session's is in confirm mode, for the marker.
    let channel = session.connection().create_channel().await?;
    let tag = format!("order-status-{}", std::process::id());
    let mut consumer = order_events::subscribe(&channel, start, PREFETCH, &tag).await?;
    tracing::info!(?start, "reading the order-event stream");
    let mut unacked = 0u64;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let offset = order_events::stream_offset(&delivery);
        // A numeric start offset is served from the start of its chunk: skip what we had.
        let seen_before = matches!((offset, *next), (Some(o), Some(n)) if o < n);
        if !seen_before {
            if let Some(o) = offset {
                *next = Some(o + 1);
                metrics::gauge!("status_stream_offset").set(o as f64);
            }
            handle(order_events::decode_delivery(&delivery), state, marker);
        }
        unacked += 1;
        if unacked >= ACK_EVERY {
            delivery
                .acker
                .ack(BasicAckOptions { multiple: true })
                .await?;
            unacked = 0;
        }
    }
    Ok(())
}

fn handle(message: StreamMessage, state: &State, marker: Option<&str>) {
    match message {
        StreamMessage::Event(event) => {
            let at = event.at_time();
            // A time we cannot read (a foreign writer) counts as now, not as 1970.
            let now = time::OffsetDateTime::now_utc();
            let at_unix = at.unwrap_or(now).unix_timestamp();
            let applied = state.apply(&event, at_unix);
            let outcome = match applied {
                Applied::Published(..) => "published",
                Applied::Unchanged => "unchanged",
                Applied::NoProject => "no_project",
            };
            metrics::counter!("status_events_applied_total", "outcome" => outcome).increment(1);
            if let Some(at) = at {
                let lag = (time::OffsetDateTime::now_utc() - at)
                    .as_seconds_f64()
                    .max(0.0);
                metrics::gauge!("status_catch_up_lag_seconds").set(lag);
            }
        }
        StreamMessage::Marker(token) => {
            if Some(token.as_str()) == marker && !state.is_caught_up() {
                state.set_caught_up();
                metrics::gauge!("status_caught_up").set(1.0);
                // Caught up: the last event's age now says how quiet the stream is, not lag.
                metrics::gauge!("status_catch_up_lag_seconds").set(0.0);
                tracing::info!(
                    orders = state.read(|v| v.order_count()),
                    "caught up with the order-event stream"
                );
            }
        }
        StreamMessage::Other => {
            metrics::counter!("status_events_applied_total", "outcome" => "skipped").increment(1);
        }
    }
}
