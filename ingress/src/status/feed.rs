//! Reads the order-event stream into the [`State`]: from the start of retention at boot,
//! then live. At boot it publishes a sync marker and counts as caught up (ready) once it
//! reads that marker back. After a broker loss it resubscribes from the offset after the
//! last one it saw, so nothing is applied twice and nothing is missed.
//!
//! A long stream is caught up with two readers (see [`FirstPart`]): the broker delivers a
//! stream to one AMQP consumer at about one core's worth of work, so a second consumer on
//! the second half halves the wall time on two cores. Events are still applied one at a
//! time in stream order, by this task alone: the view, its channel offsets and the marker
//! come out exactly as with one reader.

use std::{sync::Arc, time::Duration};

use futures_lite::StreamExt as _;
use lapin::{
    Channel,
    message::Delivery,
    options::{BasicAckOptions, BasicCancelOptions},
};
use shared::{
    amqp::Link,
    order_events::{self, StartAt, StreamMessage},
};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};

use super::{state::State, view::Applied};

/// Stream credit: how many deliveries may be in flight to us. Acks only give credit back.
const PREFETCH: u16 = 500;
/// Acknowledge (with `multiple`) every this many deliveries, well inside the prefetch.
const ACK_EVERY: u64 = 100;
/// How often orders past the stream's retention are dropped from the view.
const FORGET_EVERY: Duration = Duration::from_secs(600);
/// How long to wait for a broker session before looking at `shutdown` again.
const WAIT_FOR_BROKER: Duration = Duration::from_secs(1);
/// How long a probe of the stream's extent waits for its delivery: past it the catch-up
/// reads with one reader.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Decoded events of the first part in flight to the applying task.
const FIRST_PART_QUEUE: usize = 4096;

/// Feeds `state` until `shutdown`. A boot catch-up over at least `split_from` events (0:
/// never) reads the stream with two readers.
pub async fn run(
    link: Link,
    state: Arc<State>,
    publish_timeout: Duration,
    split_from: u64,
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
            result = async {
                // Only a catch-up from the start is split; a resume after a broker loss reads
                // on from `next` with one reader.
                let split = if next.is_none() && split_from > 0 {
                    split_point(&session, split_from).await
                } else {
                    None
                };
                consume(&session, start, split, &state, &mut next, marker.as_deref()).await
            } => {
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
/// With a `split` offset, the offsets below it are read by a [`FirstPart`] and this reader
/// starts at `split`, holding what it reads until the first part is applied.
async fn consume(
    session: &shared::amqp::Session,
    start: StartAt,
    split: Option<u64>,
    state: &State,
    next: &mut Option<u64>,
    marker: Option<&str>,
) -> anyhow::Result<()> {
    let tag = format!("order-status-{}", std::process::id());
    let mut first = match split {
        Some(until) => {
            let channel = session.connection().create_channel().await?;
            Some(FirstPart::start(channel, until, format!("{tag}-first")))
        }
        None => None,
    };
    let start = split.map_or(start, StartAt::Offset);
    // A channel of its own: the session's is in confirm mode, for the marker.
    let channel = session.connection().create_channel().await?;
    let mut consumer = order_events::subscribe(&channel, start, PREFETCH, &tag).await?;
    tracing::info!(?start, ?split, "reading the order-event stream");
    let mut held: Vec<(Option<u64>, StreamMessage)> = Vec::new();
    let mut unacked = 0u64;
    loop {
        tokio::select! {
            part = FirstPart::next(&mut first) => match part {
                Some(Part::Read(offset, message)) => apply(offset, message, state, next, marker),
                Some(Part::Done) => {
                    first = None;
                    metrics::counter!("status_catch_up_read_ahead_total")
                        .increment(held.len() as u64);
                    tracing::info!(read_ahead = held.len(), "first part of the order-event stream applied");
                    for (offset, message) in held.drain(..) {
                        apply(offset, message, state, next, marker);
                    }
                    held.shrink_to_fit();
                }
                Some(Part::Failed(error)) => return Err(error.context("first part of the catch-up")),
                None => anyhow::bail!("the first part of the catch-up stopped"),
            },
            delivery = consumer.next() => {
                let Some(delivery) = delivery else { break };
                let delivery = delivery?;
                let offset = order_events::stream_offset(&delivery);
                match &first {
                    // Served from the start of the split's chunk: those are the first part's.
                    Some(part) if offset.is_some_and(|o| o < part.until) => {}
                    Some(_) => held.push((offset, order_events::decode_delivery(&delivery))),
                    None => apply(offset, order_events::decode_delivery(&delivery), state, next, marker),
                }
                unacked += 1;
                if unacked >= ACK_EVERY {
                    ack_up_to(&delivery).await?;
                    unacked = 0;
                }
            }
        }
    }
    Ok(())
}

/// Acks `delivery` and everything before it: for a stream that only gives credit back.
async fn ack_up_to(delivery: &Delivery) -> lapin::Result<()> {
    delivery
        .acker
        .ack(BasicAckOptions { multiple: true })
        .await
        .map(drop)
}

/// Applies one message of the stream unless its offset was applied already.
fn apply(
    offset: Option<u64>,
    message: StreamMessage,
    state: &State,
    next: &mut Option<u64>,
    marker: Option<&str>,
) {
    // A numeric start offset is served from the start of its chunk: skip what we had.
    if matches!((offset, *next), (Some(o), Some(n)) if o < n) {
        return;
    }
    if let Some(o) = offset {
        *next = Some(o + 1);
        metrics::gauge!("status_stream_offset").set(o as f64);
    }
    handle(message, state, marker);
}

/// Where to split a catch-up from the start: half-way between the first retained offset
/// and the last chunk's, if they are at least `split_from` apart. `None` (one reader) when
/// the stream is shorter or either end cannot be read in time.
async fn split_point(session: &shared::amqp::Session, split_from: u64) -> Option<u64> {
    let connection = session.connection();
    let ends = async {
        let first = order_events::first_offset(connection, StartAt::First, PROBE_TIMEOUT).await?;
        let last = order_events::first_offset(connection, StartAt::Last, PROBE_TIMEOUT).await?;
        lapin::Result::Ok(first.zip(last))
    };
    // Each probe gives up waiting for its delivery after PROBE_TIMEOUT; this bounds a broker
    // that does not answer the channel's open or close either.
    match tokio::time::timeout(PROBE_TIMEOUT * 3, ends).await {
        Ok(Ok(Some((first, last)))) if last.saturating_sub(first) >= split_from => {
            Some(first + (last - first) / 2)
        }
        Ok(Ok(_)) => None,
        Ok(Err(error)) => {
            tracing::warn!(%error, "cannot see how long the order-event stream is; reading it with one reader");
            None
        }
        Err(_) => None,
    }
}

/// What the first part's reader sends, in stream order.
enum Part {
    Read(Option<u64>, StreamMessage),
    /// Every offset below the split was sent.
    Done,
    Failed(anyhow::Error),
}

/// The offsets below a split, read and decoded by a task of its own (the second core's
/// share of a catch-up) and sent in order to the task that applies them. Dropped, it stops
/// its task: what was not applied is read again from `next`.
struct FirstPart {
    /// The split: this part reads the offsets below it.
    until: u64,
    rx: mpsc::Receiver<Part>,
    _task: AbortOnDropHandle<()>,
}

impl FirstPart {
    fn start(channel: Channel, until: u64, tag: String) -> FirstPart {
        let (tx, rx) = mpsc::channel(FIRST_PART_QUEUE);
        let task = tokio::spawn(async move {
            let end = match read_below(&channel, until, &tag, &tx).await {
                Ok(()) => Part::Done,
                Err(error) => Part::Failed(error),
            };
            // Closed before the end is told: the receiver drops this task when it hears it.
            let _ = channel.close(200, "first part read".into()).await;
            let _ = tx.send(end).await;
        });
        FirstPart {
            until,
            rx,
            _task: AbortOnDropHandle::new(task),
        }
    }

    /// The next part of `first`; never ready once there is none.
    async fn next(first: &mut Option<FirstPart>) -> Option<Part> {
        match first {
            Some(part) => part.rx.recv().await,
            None => std::future::pending().await,
        }
    }
}

/// Sends every message below `until` from the start of the stream, then returns.
async fn read_below(
    channel: &Channel,
    until: u64,
    tag: &str,
    tx: &mpsc::Sender<Part>,
) -> anyhow::Result<()> {
    let mut consumer = order_events::subscribe(channel, StartAt::First, PREFETCH, tag).await?;
    let mut unacked = 0u64;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let offset = order_events::stream_offset(&delivery);
        if offset.is_some_and(|o| o >= until) {
            let _ = channel
                .basic_cancel(tag.into(), BasicCancelOptions::default())
                .await;
            return Ok(());
        }
        let message = order_events::decode_delivery(&delivery);
        if tx.send(Part::Read(offset, message)).await.is_err() {
            return Ok(()); // the applying side is gone
        }
        unacked += 1;
        if unacked >= ACK_EVERY {
            ack_up_to(&delivery).await?;
            unacked = 0;
        }
    }
    anyhow::bail!("the broker ended the consumer before offset {until}")
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
