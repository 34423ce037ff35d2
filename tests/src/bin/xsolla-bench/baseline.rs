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
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions},
    types::FieldTable,
};
use serde::Serialize;
use shared::{
    envelope::{self, HeadersExt, header},
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

/// Publishes the bodies the sim would send, with the envelope the ingress would add
/// (persistent, `mandatory`, same headers), from `concurrency` tasks on ONE confirm-mode
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
    let connection = shared::amqp::connect(amqp_url, "xsolla-bench baseline publisher").await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let failed = Arc::new(AtomicI64::new(0));
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
        let (ids, histogram, failed, remaining) = (
            ids.clone(),
            histogram.clone(),
            failed.clone(),
            remaining.clone(),
        );
        tasks.spawn(async move {
            while Instant::now() < end && remaining.fetch_sub(1, Ordering::Relaxed) > 0 {
                let id = ids.next();
                let body = template.body(&id);
                let kind = template.kind().as_str();
                let mut headers = FieldTable::default();
                headers
                    .set_str(header::NOTIFICATION_TYPE, kind)
                    .set_str(header::ROUTING_KEY, kind)
                    .set_str(header::SIGNATURE, &signature::sign(&body, &secret))
                    .set_str(header::RECEIVED_AT, &envelope::now_rfc3339())
                    .set_int(header::ATTEMPTS, 0)
                    .set_str(header::TRACEPARENT, &envelope::new_traceparent());
                let properties = envelope::properties(&format!("{kind}:{id}"), headers);
                let sent = Instant::now();
                let result = publish_confirmed(
                    &channel,
                    EXCHANGE,
                    kind,
                    &body,
                    properties,
                    Duration::from_secs(10),
                )
                .await;
                match result {
                    Ok(()) => {
                        let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                        histogram.lock().expect("lock").saturating_record(us.max(1));
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed_s = started.elapsed().as_secs_f64();
    let _ = connection.close(200, "done".into()).await;
    let histogram = histogram.lock().expect("lock");
    let published = histogram.len();
    Ok(PublishRun {
        published,
        failed: failed.load(Ordering::Relaxed) as u64,
        elapsed_s,
        throughput: published as f64 / elapsed_s,
        latency_ms: Latency::from_histogram(&histogram),
    })
}

/// A drain's result.
#[derive(Debug, Clone, Serialize)]
pub struct DrainRun {
    pub messages: u64,
    pub elapsed_s: f64,
    /// Messages settled per second.
    pub rate: f64,
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
    for received in 0..count {
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
    let elapsed_s = started.elapsed().as_secs_f64();
    let _ = connection.close(200, "done".into()).await;
    Ok(DrainRun {
        messages: count,
        elapsed_s,
        rate: count as f64 / elapsed_s,
    })
}
