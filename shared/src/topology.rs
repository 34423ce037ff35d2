//! The AMQP topology, declared identically (and idempotently) by the ingress and the worker
//! at every (re)connect, so either can start first and a wiped broker heals itself.
//!
//! ```text
//! ingress ──► xsolla.webhooks (topic, rk = notification_type) ──► xsolla.fulfillment (quorum)
//!                   │ alternate-exchange                              ▲        │ worker
//!                   ▼                                                 │ TTL    ├─► xsolla.fulfillment.retry.<d> (quorum)
//!             xsolla.unrouted (fanout) ──► xsolla.unrouted            └────────┘
//!                                                                              └─► xsolla.fulfillment.dlq (quorum)
//! ```
//!
//! On a cluster every quorum queue and the order-event stream get [`REPLICAS`] members.

mod replicas;

pub use replicas::{QUORUM_SIZE_ARG, REPLICAS, STREAM_SIZE_ARG};

use std::{
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::Duration,
};

use lapin::{
    Channel, Connection, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString},
};

use crate::{order_events, webhook::FulfilmentMode};

/// Topic exchange the ingress publishes every verified webhook to; routing key = type.
pub const EXCHANGE: &str = "xsolla.webhooks";
/// Alternate exchange of [`EXCHANGE`]: catches what no binding routes, so nothing is dropped.
pub const UNROUTED_EXCHANGE: &str = "xsolla.unrouted";
/// Where webhooks of types nobody fulfils are kept for inspection.
pub const UNROUTED_QUEUE: &str = "xsolla.unrouted";
/// The worker's queue.
pub const WORK_QUEUE: &str = "xsolla.fulfillment";
/// Parked messages, for `worker dlq`.
pub const DLQ: &str = "xsolla.fulfillment.dlq";
/// Prefix of the delay-tier queues: `xsolla.fulfillment.retry.<delay>`.
pub const RETRY_QUEUE_PREFIX: &str = "xsolla.fulfillment.retry.";
/// Redeliveries of one message (worker crashes on it, connection losses) before the broker
/// itself parks it in the DLQ: a poison message must not loop forever. Retries through the
/// delay tiers are new messages and do not count. Fixed, because changing a queue argument
/// makes re-declaration fail (`PRECONDITION_FAILED`).
pub const WORK_QUEUE_DELIVERY_LIMIT: i64 = 20;

/// Handouts of one DLQ message before the broker would drop it. `worker dlq list` reads by
/// taking and returning every message, and each return counts as a delivery; RabbitMQ 4.x
/// gives quorum queues a default limit of 20 and *drops* a message past it (the DLQ has no
/// dead-letter target), so the DLQ states a limit no operator will ever reach.
pub const DLQ_DELIVERY_LIMIT: i64 = 1_000_000;

/// How long `xsolla.unrouted` keeps a message (`UNROUTED_TTL`): a week to notice and look at
/// an unexpected type, while a type nobody fulfils (say `payment` in separate delivery mode)
/// cannot grow the queue until the broker's disk alarm stops every publish.
pub const UNROUTED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The policy name the start-up warning tells operators to use for an unrouted queue that
/// was declared without a retention limit.
pub const UNROUTED_POLICY: &str = "xsolla-unrouted-ttl";

/// What to declare besides the fixed parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// One delay-tier queue per entry, in the order the retries walk them.
    pub retry_delays: Vec<Duration>,
    /// Which notification types the work queue is bound to.
    pub mode: FulfilmentMode,
    /// How long the order-event stream keeps events (`x-max-age`, `STATUS_RETENTION`).
    pub status_retention: Duration,
    /// How long `xsolla.unrouted` keeps a message (`x-message-ttl`, `UNROUTED_TTL`); zero
    /// means no limit. Applies when the queue is first declared, see [`declare`].
    pub unrouted_ttl: Duration,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            retry_delays: default_retry_delays(),
            mode: FulfilmentMode::default(),
            status_retention: order_events::DEFAULT_RETENTION,
            unrouted_ttl: UNROUTED_TTL,
        }
    }
}

/// 10 s, 1 min, 10 min, 1 h: short enough to ride out a blip, long enough not to hammer a
/// game that is down for maintenance (the last tier then repeats until the budget is spent).
pub fn default_retry_delays() -> Vec<Duration> {
    [10, 60, 600, 3600].map(Duration::from_secs).to_vec()
}

/// `xsolla.fulfillment.retry.10s`, `…retry.1m`, `…retry.1h`, `…retry.1500ms`.
pub fn retry_queue_name(delay: Duration) -> String {
    let ms = delay.as_millis();
    let label = match ms {
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    };
    format!("{RETRY_QUEUE_PREFIX}{label}")
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn quorum_args(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long("quorum"));
    for (k, v) in extra {
        args.insert((*k).into(), v.clone());
    }
    args
}

/// Dead-letter arguments that send expired/rejected messages to `target` through the default
/// exchange. `at-least-once` (RabbitMQ ≥ 3.10, quorum queues) keeps a message in the source
/// queue until the target confirmed it; it requires `reject-publish` overflow.
/// <https://www.rabbitmq.com/docs/quorum-queues#dead-lettering>
fn dead_letter_to(target: &str) -> [(&'static str, AMQPValue); 4] {
    [
        ("x-dead-letter-exchange", long("")),
        ("x-dead-letter-routing-key", long(target)),
        ("x-dead-letter-strategy", long("at-least-once")),
        ("x-overflow", long("reject-publish")),
    ]
}

/// Declares everything. Idempotent; fails with `PRECONDITION_FAILED` if a queue already
/// exists with other arguments (for instance, a classic queue of the same name).
///
/// Two exceptions are tolerated, both queues declared by an older version: an
/// `xsolla.unrouted` without [`Topology::unrouted_ttl`], and any queue without its member
/// count ([`REPLICAS`]). The first declaration that meets one fails (the broker closes the
/// channel, and a `Channel` cannot open another); the process remembers the queue, logs
/// what an operator can do about it, and every later declaration declares that queue as it
/// is. [`declare_on`] declares again at once on a fresh channel; a plain `declare` leaves it
/// to the caller's retry (the supervisor's reconnect).
pub async fn declare(channel: &Channel, topology: &Topology) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            UNROUTED_EXCHANGE.into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    declare_unrouted_queue(channel, topology.unrouted_ttl).await?;
    bind(channel, UNROUTED_QUEUE, UNROUTED_EXCHANGE, "").await?;

    let mut exchange_args = FieldTable::default();
    exchange_args.insert("alternate-exchange".into(), long(UNROUTED_EXCHANGE));
    channel
        .exchange_declare(EXCHANGE.into(), ExchangeKind::Topic, durable, exchange_args)
        .await?;

    let dlq_args = quorum_args(&[(
        "x-delivery-limit",
        AMQPValue::LongLongInt(DLQ_DELIVERY_LIMIT),
    )]);
    declare_quorum(channel, DLQ, dlq_args).await?;
    let mut work_args = dead_letter_to(DLQ).to_vec();
    work_args.push((
        "x-delivery-limit",
        AMQPValue::LongLongInt(WORK_QUEUE_DELIVERY_LIMIT),
    ));
    declare_quorum(channel, WORK_QUEUE, quorum_args(&work_args)).await?;
    for routing_key in topology.mode.fulfilled_types() {
        bind(channel, WORK_QUEUE, EXCHANGE, routing_key).await?;
    }

    for delay in &topology.retry_delays {
        let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        let mut args = dead_letter_to(WORK_QUEUE).to_vec();
        args.push(("x-message-ttl", AMQPValue::LongLongInt(ttl)));
        declare_quorum(channel, &retry_queue_name(*delay), quorum_args(&args)).await?;
    }
    declare_order_events(channel, topology.status_retention).await
}

/// [`declare`] on a channel of its own, opened on `connection`, and again on a fresh one
/// after each refusal that a fallback of [`declare`] now handles: a broker whose queues all
/// predate an argument costs this one connection a channel per queue, instead of a
/// reconnect per queue. Returns the channel the declaration succeeded on.
pub async fn declare_on(connection: &Connection, topology: &Topology) -> lapin::Result<Channel> {
    loop {
        // Every fallback is recorded once per queue, so this loop ends.
        let handled = FALLBACKS.load(Ordering::SeqCst);
        let channel = connection.create_channel().await?;
        match declare(&channel, topology).await {
            Ok(()) => return Ok(channel),
            Err(_) if FALLBACKS.load(Ordering::SeqCst) > handled => continue,
            Err(error) => return Err(error),
        }
    }
}

/// Checks without changing anything that the exchanges and quorum queues [`declare`] makes
/// are there (passive declares, on a channel of its own, returned on success); `Err` with
/// `404 NOT_FOUND` (see [`crate::amqp::is_not_found`]) when one is missing.
///
/// What a session opened again after [`declare`] succeeded once uses instead of declaring
/// again: declaring a binding takes a lock on every node of a cluster, so a declare waits
/// for as long as one node is silent without being gone (a frozen VM, a partition: 74 s on
/// RabbitMQ 3.10, until the cluster drops the node), while passive declares answer at
/// once. So a reconnect away from such a node costs seconds, not a minute. A binding
/// removed by hand is not noticed by this check; the next process start restores it.
pub async fn check_on(connection: &Connection, topology: &Topology) -> lapin::Result<Channel> {
    let channel = connection.create_channel().await?;
    let passive_exchange = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    // A passive declare checks the name only: the kind given is not compared.
    for exchange in [UNROUTED_EXCHANGE, EXCHANGE] {
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                passive_exchange,
                FieldTable::default(),
            )
            .await?;
    }
    let passive_queue = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    // Not the order-event stream: a passive declare of a stream asks its leader for its
    // size, and waits as long as that leader's node is silent (64 s here); a quorum
    // queue's answers from any member.
    for queue in quorum_queues(topology) {
        channel
            .queue_declare(queue.as_str().into(), passive_queue, FieldTable::default())
            .await?;
    }
    Ok(channel)
}

/// The quorum queues [`declare`] makes: the work queue, the delay tiers (in walking order),
/// the DLQ and `xsolla.unrouted` (every queue but the order-event stream).
pub fn quorum_queues(topology: &Topology) -> Vec<String> {
    let mut queues = vec![WORK_QUEUE.to_owned()];
    queues.extend(topology.retry_delays.iter().map(|d| retry_queue_name(*d)));
    queues.push(DLQ.to_owned());
    queues.push(UNROUTED_QUEUE.to_owned());
    queues
}

/// [`check_on`], and [`declare_on`] if a part is missing (a vhost deleted and made again,
/// say): what a process that declared the topology once uses for every later channel that
/// needs it (a reconnect, a consumer subscribing again).
pub async fn ensure_on(connection: &Connection, topology: &Topology) -> lapin::Result<Channel> {
    match check_on(connection, topology).await {
        Ok(channel) => Ok(channel),
        Err(error) if crate::amqp::is_not_found(&error) => {
            tracing::warn!(%error, "part of the RabbitMQ topology is gone; declaring it again");
            declare_on(connection, topology).await
        }
        Err(error) => Err(error),
    }
}

/// Fallbacks recorded so far in this process (a queue found to predate an argument).
static FALLBACKS: AtomicUsize = AtomicUsize::new(0);

/// Declares a durable quorum queue with `args` plus its member count (see [`REPLICAS`]).
async fn declare_quorum(channel: &Channel, queue: &str, args: FieldTable) -> lapin::Result<()> {
    declare_replicated(channel, queue, args, QUORUM_SIZE_ARG).await
}

/// Declares a durable queue with `args` plus `size_key` = [`REPLICAS`], or without the
/// latter when the queue's broker copy predates it (remembered from an earlier refusal).
async fn declare_replicated(
    channel: &Channel,
    queue: &str,
    mut args: FieldTable,
    size_key: &'static str,
) -> lapin::Result<()> {
    let sized = replicas::size_arg(queue, size_key);
    if let Some((key, value)) = &sized {
        args.insert((*key).into(), value.clone());
    }
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let declared = channel.queue_declare(queue.into(), durable, args).await;
    if let Err(error) = &declared
        && sized.is_some()
        && let Some(text) = precondition_failed(error)
        && replicas::note_refusal(queue, size_key, &text)
    {
        FALLBACKS.fetch_add(1, Ordering::SeqCst);
    }
    declared.map(drop)
}

/// Set once a broker refused `x-message-ttl` on `xsolla.unrouted` (the queue predates it).
/// Process-wide because the retry that must see it runs on a new channel or connection; a process
/// talks to one vhost, whose queue does not change arguments while the process runs.
static UNROUTED_WITHOUT_TTL: AtomicBool = AtomicBool::new(false);

/// `x-message-ttl` on a quorum queue needs RabbitMQ >= 3.10.
/// <https://www.rabbitmq.com/docs/ttl#per-queue-message-ttl>
async fn declare_unrouted_queue(channel: &Channel, ttl: Duration) -> lapin::Result<()> {
    let legacy = UNROUTED_WITHOUT_TTL.load(Ordering::SeqCst);
    let ttl_ms = ttl_millis(ttl);
    let args = match ttl_ms {
        Some(ms) if !legacy => quorum_args(&[("x-message-ttl", AMQPValue::LongLongInt(ms))]),
        _ => quorum_args(&[]),
    };
    let declared = declare_quorum(channel, UNROUTED_QUEUE, args).await;
    let refusal = match &declared {
        Err(error) if ttl_ms.is_some() && !legacy => precondition_failed(error),
        _ => None,
    };
    match refusal {
        // RabbitMQ's words for a queue that has no TTL at all: one declared before it existed.
        Some(text) if text.contains("'x-message-ttl'") && text.contains("current is none") => {
            UNROUTED_WITHOUT_TTL.store(true, Ordering::SeqCst);
            FALLBACKS.fetch_add(1, Ordering::SeqCst);
            tracing::warn!(
                "{UNROUTED_QUEUE} exists without a retention limit (declared by an older \
                 version); it is kept as it is and unknown webhook types pile up in it. \
                 Bound it once per vhost with: {}",
                unrouted_policy_command(vhost_of(&text).as_deref(), ttl)
            );
        }
        Some(text) if text.contains("'x-message-ttl'") => tracing::error!(
            refused = text,
            "{UNROUTED_QUEUE} has another retention: set UNROUTED_TTL the same on every \
             process (it is fixed when the queue is first declared)"
        ),
        // Another argument (say a classic queue of that name): the broker's text says which.
        Some(_) | None => {}
    }
    declared.map(drop)
}

/// The TTL in milliseconds as RabbitMQ takes it (at most 2^32-1), `None` for no limit.
fn ttl_millis(ttl: Duration) -> Option<i64> {
    (!ttl.is_zero())
        .then(|| i64::try_from(ttl.as_millis().min(u128::from(u32::MAX))).unwrap_or(i64::MAX))
}

/// The `rabbitmqctl` command that gives an existing `xsolla.unrouted` the retention
/// `ttl` by policy (the pattern matches that one queue only); `<vhost>` when unknown.
pub fn unrouted_policy_command(vhost: Option<&str>, ttl: Duration) -> String {
    let ms = ttl_millis(ttl).unwrap_or(i64::from(u32::MAX));
    let vhost = match vhost {
        Some(v)
            if v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c)) =>
        {
            v.to_owned()
        }
        Some(v) => format!("'{}'", v.replace('\'', r"'\''")),
        None => "<vhost>".to_owned(),
    };
    format!(
        r#"rabbitmqctl set_policy -p {vhost} --apply-to queues {UNROUTED_POLICY} '^xsolla\.unrouted$' '{{"message-ttl":{ms}}}'"#
    )
}

/// The broker's text of a `PRECONDITION_FAILED` (406) refusal.
fn precondition_failed(error: &lapin::Error) -> Option<String> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(e) if e.get_id() == 406 => {
            Some(e.get_message().as_str().to_owned())
        }
        _ => None,
    }
}

/// The vhost named in a refusal: `… for queue 'q' in vhost 'v': …`.
fn vhost_of(refusal: &str) -> Option<String> {
    let rest = refusal.split_once("in vhost '")?.1;
    Some(rest.split_once("':")?.0.to_owned())
}

/// The order-event stream, bound to the webhook exchange for the order types so the
/// ingress's one confirmed publish makes an acceptance visible (no worker needed).
/// `x-max-age` is fixed at declaration: every process must use the same
/// `STATUS_RETENTION`, or the later one fails with `PRECONDITION_FAILED`. Its members
/// ([`REPLICAS`]) are `x-initial-cluster-size`; without it RabbitMQ would put a replica on
/// every node of a cluster of any size.
/// <https://www.rabbitmq.com/docs/streams#retention>
async fn declare_order_events(channel: &Channel, retention: Duration) -> lapin::Result<()> {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long("stream"));
    args.insert("x-max-age".into(), long(&order_events::max_age(retention)));
    declare_replicated(channel, order_events::STREAM, args, STREAM_SIZE_ARG).await?;
    for routing_key in order_events::WEBHOOK_TYPES {
        bind(channel, order_events::STREAM, EXCHANGE, routing_key).await?;
    }
    Ok(())
}

async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    routing_key: &str,
) -> lapin::Result<()> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_the_policy_command_for_exactly_the_unrouted_queue() {
        assert_eq!(
            unrouted_policy_command(None, UNROUTED_TTL),
            r#"rabbitmqctl set_policy -p <vhost> --apply-to queues xsolla-unrouted-ttl '^xsolla\.unrouted$' '{"message-ttl":604800000}'"#
        );
        let refusal = "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue \
            'xsolla.unrouted' in vhost 'game prod': received the value '604800000' of type \
            'long' but current is none";
        assert_eq!(vhost_of(refusal).as_deref(), Some("game prod"));
        assert!(
            unrouted_policy_command(Some("game prod"), UNROUTED_TTL).contains("-p 'game prod' ")
        );
        assert!(unrouted_policy_command(Some("/"), UNROUTED_TTL).contains("-p / "));
        assert_eq!(ttl_millis(Duration::ZERO), None);
        assert_eq!(
            ttl_millis(Duration::from_secs(100 * 86_400)),
            Some(i64::from(u32::MAX))
        );
    }

    #[test]
    fn names_retry_tiers_by_their_delay() {
        let names: Vec<_> = [10_000, 60_000, 600_000, 3_600_000, 1_500, 90_000]
            .map(|ms| retry_queue_name(Duration::from_millis(ms)))
            .to_vec();
        assert_eq!(
            names,
            [
                "xsolla.fulfillment.retry.10s",
                "xsolla.fulfillment.retry.1m",
                "xsolla.fulfillment.retry.10m",
                "xsolla.fulfillment.retry.1h",
                "xsolla.fulfillment.retry.1500ms",
                "xsolla.fulfillment.retry.90s",
            ]
        );
    }
}
