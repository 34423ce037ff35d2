//! The same-run baselines: what plain lapin does on this machine and broker without any
//! of our code in the way. A confirmed publisher (for the ingress) and a consume-and-ack
//! loop (for the worker).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use futures_lite::StreamExt as _;
use hdrhistogram::Histogram;
use lapin::{
    Channel,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions},
    types::FieldTable,
};
use serde::Serialize;
use shared::{
    envelope,
    publish::publish_confirmed,
    signature,
    topology::{EXCHANGE, WORK_QUEUE},
};
use tests::sim::{Ids, Latency, Template};
use tokio::{task::JoinSet, time::Instant};

/// A publish run's result.
#[derive(Debug, Clone, Serialize)]
pub struct PublishRun {
    pub published: u64,
    pub failed: u64,
    pub elapsed_s: f64,
    /// Confirmed publishes per second.
    pub throughput: f64,
    /// Publish to confirm.
    pub latency_ms: Latency,
}

/// When a publish run stops.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    Elapsed(Duration),
    Count(u64),
}

/// Publish-to-confirm latencies (µs) and failures, shared by the publishing tasks.
#[derive(Clone)]
struct Record {
    histogram: Arc<Mutex<Histogram<u64>>>,
    failed: Arc<AtomicI64>,
}

impl Record {
    fn new() -> anyhow::Result<Record> {
        Ok(Record {
            histogram: Arc::new(Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?)),
            failed: Arc::new(AtomicI64::new(0)),
        })
    }

    fn add(&self, result: Result<(), shared::publish::PublishError>, since: Instant) {
        match result {
            Ok(()) => {
                let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.histogram
                    .lock()
                    .expect("lock")
                    .saturating_record(us.max(1));
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn finish(&self, started: Instant) -> PublishRun {
        let elapsed_s = started.elapsed().as_secs_f64();
        let histogram = self.histogram.lock().expect("lock");
        let published = histogram.len();
        PublishRun {
            published,
            failed: self.failed.load(Ordering::Relaxed) as u64,
            elapsed_s,
            throughput: published as f64 / elapsed_s,
            latency_ms: Latency::from_histogram(&histogram),
        }
    }
}

/// Publishes one body of `template` with id `id`, in the envelope the ingress would give
/// it (persistent, `mandatory`, the same headers), and waits for its confirm.
async fn publish_one(
    channel: &Channel,
    template: &Template,
    secret: &str,
    id: &str,
) -> Result<(), shared::publish::PublishError> {
    let body = template.body(id);
    let kind = template.kind().as_str();
    let properties = envelope::received_properties(&envelope::Received {
        notification_type: kind,
        message_id: &format!("{kind}:{id}"),
        signature: &signature::authorization_header(&body, secret),
        traceparent: &envelope::new_traceparent(),
        project_id: None,
    });
    publish_confirmed(
        channel,
        EXCHANGE,
        kind,
        &body,
        properties,
        Duration::from_secs(10),
    )
    .await
}

async fn confirm_channel(amqp_url: &str) -> anyhow::Result<(lapin::Connection, Channel)> {
    let connection = shared::amqp::connect(amqp_url, "xsolla-bench baseline publisher").await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((connection, channel))
}

/// Publishes the bodies the sim would send from `concurrency` tasks on ONE confirm-mode
/// channel, each awaiting its own confirm: the ingress's shape (one confirm channel per
/// process, one in-flight publish per request).
pub async fn publish(
    amqp_url: &str,
    template: &Template,
    secret: &str,
    ids: Arc<Ids>,
    concurrency: usize,
    until: Until,
) -> anyhow::Result<PublishRun> {
    let (connection, channel) = confirm_channel(amqp_url).await?;
    let record = Record::new()?;
    let remaining = Arc::new(AtomicI64::new(match until {
        Until::Count(n) => i64::try_from(n).unwrap_or(i64::MAX),
        Until::Elapsed(_) => i64::MAX,
    }));
    let started = Instant::now();
    let end = match until {
        Until::Elapsed(d) => started + d,
        Until::Count(_) => started + Duration::from_secs(3600),
    };
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (channel, template, secret) = (channel.clone(), template.clone(), secret.to_owned());
        let (ids, record, remaining) = (ids.clone(), record.clone(), remaining.clone());
        tasks.spawn(async move {
            while Instant::now() < end && remaining.fetch_sub(1, Ordering::Relaxed) > 0 {
                let sent = Instant::now();
                record.add(
                    publish_one(&channel, &template, &secret, &ids.next()).await,
                    sent,
                );
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let run = record.finish(started);
    let _ = connection.close(200, "done".into()).await;
    Ok(run)
}

/// Open loop: starts `rate` publishes per second for `duration`, at most `concurrency`
/// awaiting a confirm, latency counted from each planned start (as the load tool does
/// for the ingress), so both sides of the half-rate comparison are measured alike.
pub async fn publish_at_rate(
    amqp_url: &str,
    template: &Template,
    secret: &str,
    ids: Arc<Ids>,
    (rate, concurrency): (f64, usize),
    duration: Duration,
) -> anyhow::Result<PublishRun> {
    let (connection, channel) = confirm_channel(amqp_url).await?;
    let record = Record::new()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0u64.. {
        let at = started + tests::sim::planned_offset(i, rate);
        if at >= started + duration {
            break;
        }
        tokio::time::sleep_until(at).await;
        let (channel, template, secret) = (channel.clone(), template.clone(), secret.to_owned());
        let (id, record, slots) = (ids.next(), record.clone(), slots.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire().await.expect("never closed");
            record.add(publish_one(&channel, &template, &secret, &id).await, at);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let run = record.finish(started);
    let _ = connection.close(200, "done".into()).await;
    Ok(run)
}

/// A drain's result.
#[derive(Debug, Clone, Serialize)]
pub struct DrainRun {
    pub messages: u64,
    pub elapsed_s: f64,
    /// Messages settled per second, start to last.
    pub rate: f64,
    /// Messages per second between the 10 % and the 90 % marks: the steady state, without
    /// the start (connect, declare, prefetch filling) and the tail (the last few
    /// messages spread over fewer consumers).
    pub steady_rate: f64,
}

/// The two marks [`DrainRun::steady_rate`] is timed between, for `count` messages.
pub fn steady_marks(count: u64) -> (u64, u64) {
    (count / 10, count - count / 10)
}

impl DrainRun {
    /// `first`/`last`: when the [`steady_marks`] were reached.
    pub fn new(count: u64, started: Instant, (first, last): (Instant, Instant)) -> DrainRun {
        let elapsed_s = started.elapsed().as_secs_f64();
        let (a, b) = steady_marks(count);
        let window = (last - first).as_secs_f64();
        DrainRun {
            messages: count,
            elapsed_s,
            rate: count as f64 / elapsed_s,
            steady_rate: if window > 0.0 {
                (b - a) as f64 / window
            } else {
                0.0
            },
        }
    }
}

/// Consumes `count` messages from the work queue with manual acks and `prefetch`
/// unacknowledged at most (as the worker does with its concurrency), each acked at once
/// in a task of its own (the worker settles deliveries concurrently too). Timed from
/// before connecting, like the workers' drains are timed from their start.
pub async fn consume_and_ack(
    amqp_url: &str,
    prefetch: u16,
    count: u64,
) -> anyhow::Result<DrainRun> {
    let started = Instant::now();
    let connection = shared::amqp::connect(amqp_url, "xsolla-bench baseline consumer").await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            WORK_QUEUE.into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut acks = JoinSet::new();
    let marks = steady_marks(count);
    let (mut first, mut last) = (started, started);
    for received in 0..count {
        if received == marks.0 {
            first = Instant::now();
        } else if received == marks.1 {
            last = Instant::now();
        }
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .map_err(|_| anyhow::anyhow!("no delivery for 30 s after {received} of {count}"))?
            .ok_or_else(|| anyhow::anyhow!("consumer ended after {received} of {count}"))??;
        acks.spawn(async move { delivery.ack(BasicAckOptions::default()).await });
        while acks.try_join_next().is_some() {}
    }
    while let Some(acked) = acks.join_next().await {
        acked??;
    }
    let run = DrainRun::new(count, started, (first, last));
    let _ = connection.close(200, "done".into()).await;
    Ok(run)
}
