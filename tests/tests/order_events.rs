//! The worker's order events against the real RabbitMQ and the real demo inventory: a paid
//! order shows `accepted` (the ingress's publish, through the stream's binding) then
//! `granted`; an outage shows `attempt_failed` events then `granted`; a permanent refusal
//! shows `dead_lettered` with the id `worker dlq show` takes; an event the broker refuses
//! keeps its delivery unacked (redelivered, granted once the stream is back); and `worker
//! dlq replay` publishes `replayed` before a message leaves the DLQ.
//!
//! Needs RabbitMQ on 127.0.0.1:5672 and the binaries built (`cargo build --workspace --bins`).

use std::time::Duration;

use lapin::options::QueueDeleteOptions;
use shared::{
    envelope::{header, parse_time},
    order_events::{EventKind, OrderEvent, STREAM},
    topology::{DLQ, WORK_QUEUE},
    webhook::Effect,
};
use tests::{
    inventory::{Endpoint, Faults, InventoryConfig},
    worker_harness::{Broker, WorkerSetup, order_paid, worker_binary},
};
use worker::order::StreamConnection;

/// Generous: CI machines are slow and share two cores with compilers.
const WITHIN: Duration = Duration::from_secs(45);
const TIMEOUT: Duration = Duration::from_secs(10);

async fn setup(faults: Faults) -> WorkerSetup {
    WorkerSetup::start(InventoryConfig::default().with_faults(faults)).await
}

/// Reading a suite's vhost's order-event stream.
trait StreamEvents {
    async fn events(&self, order: u64) -> Vec<OrderEvent>;
    async fn wait_events(
        &self,
        order: u64,
        what: &str,
        done: impl Fn(&[OrderEvent]) -> bool,
    ) -> Vec<OrderEvent>;
}

impl StreamEvents for WorkerSetup {
    /// Every event of `order` in the stream right now (read up to a sync marker).
    async fn events(&self, order: u64) -> Vec<OrderEvent> {
        let conn = StreamConnection::open(&self.vhost.amqp_url(), TIMEOUT)
            .await
            .expect("stream connection");
        let id = order.to_string();
        let since = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        let mut found = conn
            .events(std::slice::from_ref(&id), since)
            .await
            .expect("read the stream");
        conn.close().await;
        found.remove(&id).unwrap_or_default()
    }

    /// Waits until the events of `order` satisfy `done`; returns them.
    async fn wait_events(
        &self,
        order: u64,
        what: &str,
        done: impl Fn(&[OrderEvent]) -> bool,
    ) -> Vec<OrderEvent> {
        tests::wait::value(WITHIN, what, || async {
            let events = self.events(order).await;
            if done(&events) {
                Ok(events)
            } else {
                Err(format!("the stream holds {:?}", kinds(&events)))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

fn kinds(events: &[OrderEvent]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

fn has(events: &[OrderEvent], kind: EventKind) -> bool {
    events.iter().any(|e| e.kind == kind)
}

#[tokio::test]
async fn a_paid_order_is_accepted_then_granted_in_the_stream() {
    let s = setup(Faults::none()).await;
    let worker = s.worker().await;
    s.broker.publish_webhook(&order_paid(41)).await.unwrap();
    let events = s
        .wait_events(41, "accepted then granted", |e| has(e, EventKind::Granted))
        .await;
    assert_eq!(kinds(&events), [EventKind::Accepted, EventKind::Granted]);
    let granted = &events[1];
    assert_eq!(granted.order_id, "41");
    assert_eq!(granted.user_id, "user-41");
    assert_eq!(granted.project_id, Some(18404), "the body's project");
    assert_eq!(granted.effect, Some(Effect::Grant));
    assert_eq!(granted.attempt, Some(1));
    assert_eq!(granted.items.len(), 3);
    assert!(parse_time(&granted.at).is_some());
    for e in &events {
        let json = serde_json::to_string(e).unwrap();
        assert!(!json.contains('@'), "no e-mail in an event: {json}");
        assert!(!json.contains("Signature"), "no signature: {json}");
    }
    s.broker
        .wait_queue_len(WORK_QUEUE, 0, WITHIN)
        .await
        .unwrap();
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn an_outage_shows_failed_attempts_then_the_grant() {
    let s = setup(Faults {
        down: true,
        ..Faults::none()
    })
    .await;
    let worker = s.worker().await;
    s.broker.publish_webhook(&order_paid(42)).await.unwrap();
    let failing = s
        .wait_events(42, "two failed attempts", |e| {
            e.iter()
                .filter(|e| e.kind == EventKind::AttemptFailed)
                .count()
                >= 2
        })
        .await;
    let first = failing
        .iter()
        .find(|e| e.kind == EventKind::AttemptFailed)
        .unwrap();
    assert_eq!(first.http_status, Some(503));
    assert_eq!(first.attempt, Some(1));
    assert_eq!(first.effect, Some(Effect::Grant));
    assert!(first.error.is_some());
    let next = parse_time(first.next_retry_at.as_deref().expect("next retry")).unwrap();
    assert!(next >= parse_time(&first.at).unwrap());

    s.inventory.set_faults(Faults::none()).unwrap();
    let events = s
        .wait_events(42, "granted after the outage", |e| {
            has(e, EventKind::Granted)
        })
        .await;
    assert_eq!(events[0].kind, EventKind::Accepted);
    assert_eq!(events.last().unwrap().kind, EventKind::Granted);
    let attempts: Vec<u32> = events
        .iter()
        .filter(|e| e.kind == EventKind::AttemptFailed)
        .filter_map(|e| e.attempt)
        .collect();
    assert!(
        attempts.windows(2).all(|w| w[0] < w[1]),
        "attempts count up: {attempts:?}"
    );
    let granted = events.last().unwrap();
    assert_eq!(granted.attempt, Some(attempts.last().unwrap() + 1));
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_permanent_refusal_is_dead_lettered_with_the_id_worker_dlq_show_takes() {
    let s = setup(Faults {
        rejected_skus: ["com.xsolla.item_1".to_owned()].into(),
        ..Faults::none()
    })
    .await;
    let worker = s.worker().await;
    s.broker.publish_webhook(&order_paid(43)).await.unwrap();
    let events = s
        .wait_events(43, "dead-lettered", |e| has(e, EventKind::DeadLettered))
        .await;
    let dead = events.last().unwrap();
    assert_eq!(dead.kind, EventKind::DeadLettered);
    assert_eq!(dead.http_status, Some(422));
    assert_eq!(dead.reason.as_deref(), Some("permanent"));
    assert_eq!(dead.attempt, Some(1));
    assert!(dead.error.as_deref().unwrap().contains("unknown_sku"));
    let dlq_id = dead.dlq_id.clone().expect("a DLQ id");
    worker.stop().await.unwrap();

    let show = tokio::process::Command::new(worker_binary().unwrap())
        .args(["dlq", "show", &dlq_id, "--json"])
        .args(["--amqp-url", &s.vhost.amqp_url()])
        .env_clear()
        .output()
        .await
        .unwrap();
    assert_eq!(
        show.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(doc["id"], dlq_id.as_str(), "{doc}");
    let parked = s.broker.take_all(DLQ).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].header(header::DLQ_ID), Some(dlq_id));
}

#[tokio::test]
async fn an_event_the_broker_refuses_keeps_the_delivery_unacked_and_no_grant_is_lost() {
    let s = setup(Faults::none()).await;
    let worker = s.worker().await;
    // The stream goes away under the running worker: every event publish (mandatory)
    // comes back unroutable, while the work queue and its consumer are untouched.
    let conn = s.vhost.connect().await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_delete(STREAM.into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    assert!(s.vhost.queue_len(STREAM).await.is_none(), "stream deleted");
    s.broker.publish_webhook(&order_paid(44)).await.unwrap();

    // The delivery was granted, but its `granted` was refused: it was not acked, so it
    // came back and was granted again (the same idempotency key: one effect).
    let state = s
        .inventory
        .wait_for(|st| st.answered_total(Endpoint::Grants) >= 2, WITHIN)
        .await
        .expect("the delivery is redelivered, not acked");
    let grant = state.grant("44").unwrap();
    assert_eq!(grant.times_applied, 1, "{}", state.summary());
    // The worker declared the stream again; the redelivery's `granted` is in it (the
    // acceptance is not: the stream did not exist when the webhook was published).
    let events = s
        .wait_events(44, "granted once the stream is back", |e| {
            has(e, EventKind::Granted)
        })
        .await;
    assert_eq!(kinds(&events), [EventKind::Granted]);
    let text = tests::worker_harness::metrics(worker.ops).await.unwrap();
    assert!(
        tests::worker_harness::metric_sum(
            &text,
            "worker_order_event_failures_total",
            &[("error", "returned")]
        ) >= 1.0,
        "{text}"
    );
    s.broker
        .wait_queue_len(WORK_QUEUE, 0, WITHIN)
        .await
        .unwrap();
    assert_eq!(s.broker.queue_len(DLQ).await.unwrap(), 0, "nothing parked");
    // And the stream's binding is back: the next order is accepted into it again.
    s.broker.publish_webhook(&order_paid(45)).await.unwrap();
    let events = s
        .wait_events(45, "the next order, accepted and granted", |e| {
            has(e, EventKind::Granted)
        })
        .await;
    assert_eq!(kinds(&events), [EventKind::Accepted, EventKind::Granted]);
    let _ = conn.close(200, "done".into()).await;
    worker.stop().await.unwrap();
}

/// Parks `order_paid(order)` in the DLQ through the worker (the game refuses a SKU);
/// returns its DLQ id. The worker is stopped again.
async fn park(s: &WorkerSetup, order: u64) -> String {
    s.inventory
        .set_faults(Faults {
            rejected_skus: ["com.xsolla.item_1".to_owned()].into(),
            ..Faults::none()
        })
        .unwrap();
    let worker = s.worker().await;
    s.broker.publish_webhook(&order_paid(order)).await.unwrap();
    let events = s
        .wait_events(order, "dead-lettered", |e| has(e, EventKind::DeadLettered))
        .await;
    worker.stop().await.unwrap();
    s.inventory.set_faults(Faults::none()).unwrap();
    events.last().unwrap().dlq_id.clone().unwrap()
}

async fn replay(s: &WorkerSetup, id: &str) -> std::process::Output {
    tokio::process::Command::new(worker_binary().unwrap())
        .args(["dlq", "replay", id])
        .args(["--amqp-url", &s.vhost.amqp_url(), "--timeout", "10s"])
        .env_clear()
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_replay_publishes_replayed_before_the_message_leaves_the_dlq() {
    let s = setup(Faults::none()).await;
    let id = park(&s, 46).await;

    // With the stream gone the `replayed` event is refused: the message stays in the DLQ.
    let conn = s.vhost.connect().await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_delete(STREAM.into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let refused = replay(&s, &id).await;
    assert_eq!(
        refused.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(s.broker.queue_len(DLQ).await.unwrap(), 1, "still parked");
    // The copy already republished is a duplicate the idempotency key absorbs.
    s.broker.take_all(WORK_QUEUE).await.unwrap();
    let _ = conn.close(200, "done".into()).await;

    // Stream back (the suite's topology declaration), replay again: event, then removal.
    let broker = Broker::for_worker(&s.args).await.unwrap();
    let done = replay(&s, &id).await;
    assert_eq!(
        done.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(s.broker.queue_len(DLQ).await.unwrap(), 0);
    let events = s.events(46).await;
    // The stream was deleted with the order's earlier events. The replayed copy lands in
    // it too (the exchange's binding), but as no second acceptance.
    assert_eq!(kinds(&events), [EventKind::Replayed]);
    let replayed = events.last().expect("events");
    assert_eq!(replayed.kind, EventKind::Replayed);
    assert_eq!(replayed.dlq_id.as_deref(), Some(id.as_str()));
    assert_eq!(replayed.effect, Some(Effect::Grant));
    assert_eq!(replayed.user_id, "user-46");

    // The worker takes it from there.
    let worker = s.worker().await;
    s.wait_events(46, "granted after the replay", |e| {
        e.last().is_some_and(|e| e.kind == EventKind::Granted)
    })
    .await;
    worker.stop().await.unwrap();
    broker.close().await;
}
