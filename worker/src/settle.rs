//! Settling a delivery by its [`Outcome`]: publish its order event and, for a Retry or
//! Dead, the republish to a delay tier or the DLQ, both with a broker confirm (a retry's
//! concurrently, one round trip; a dead-letter's copy first, so its event never names a
//! copy that does not exist), and only then ack. If either is not confirmed the delivery is requeued,
//! never acked, so a failure at any step loses nothing: the effect is idempotent and the
//! redelivery publishes the event again.

use std::time::Duration;

use lapin::{
    BasicProperties,
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions},
    types::{FieldTable, ShortString},
};
use shared::{
    amqp::Link,
    envelope::{HeadersExt, header, now_rfc3339},
    publish::{PublishError, publish_confirmed},
    topology::{DLQ, RETRY_QUEUE_PREFIX, retry_queue_name},
    webhook::Fulfilment,
};

use crate::{
    classify::{Failure, truncate},
    order::Recorder,
    process::{DeadReason, Outcome},
};

/// Longest `x-last-error` we store: enough to diagnose, small enough for a header.
pub const LAST_ERROR_MAX: usize = 1024;

/// How long a delivery whose event was not confirmed is held before it is requeued: the
/// broker redelivers at once, and without a pause a stream that stays unreachable would
/// run the delivery through the work queue's delivery limit (into the DLQ) in a blink.
const EVENT_FAILED_PAUSE: Duration = Duration::from_secs(1);

/// What became of a delivery, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Acked (after its effect, or after its republish was confirmed).
    Acked,
    /// Handed back to the broker for redelivery (the republish or the order event was
    /// not confirmed).
    Requeued,
    /// The channel was gone; the broker redelivers it by itself.
    Abandoned,
}

/// Settles `delivery` according to `outcome`, publishing on the current session of `link`.
pub async fn settle(
    link: &Link,
    publish_timeout: Duration,
    delivery: &Delivery,
    outcome: &Outcome,
    fulfilment: Option<&Fulfilment>,
    recorder: &Recorder,
) -> Settled {
    // A delivery whose channel is gone will be redelivered anyway; publishing for it now
    // would only add a second copy.
    if !delivery.acker.usable() {
        return Settled::Abandoned;
    }
    let target = republish_target(delivery, outcome);
    // The event names the DLQ copy by the id its headers got (generated once, there).
    let dlq_id = match outcome {
        Outcome::Dead { .. } => target.as_ref().and_then(|(_, h)| h.get_str(header::DLQ_ID)),
        _ => None,
    };
    let event = recorder.event_for(delivery, outcome, fulfilment, dlq_id.as_deref());
    let publish_event = || async {
        match &event {
            Some(event) => recorder.publish(link, event, publish_timeout).await,
            None => Ok(()),
        }
    };
    let publish_copy = || async {
        match &target {
            Some((queue, headers)) => {
                let properties = republished(&delivery.properties, headers.clone());
                publish(link, queue, &delivery.data, properties, publish_timeout).await
            }
            None => Ok(()),
        }
    };
    let (event_published, republished) = if matches!(outcome, Outcome::Dead { .. }) {
        // The event names the DLQ copy: published only once the copy is confirmed, so
        // whoever reads it in a timeline can `worker dlq show` that id (dead-letters are
        // rare; the second round trip costs nothing that matters).
        let republished = publish_copy().await;
        let event_published = match republished {
            Ok(()) => publish_event().await,
            Err(_) => Ok(()),
        };
        (event_published, republished)
    } else {
        // Both confirmed before the ack; together, so the cost is one round trip.
        tokio::join!(publish_event(), publish_copy())
    };
    if let Err(error) = republished {
        let queue = target.as_ref().map(|(q, _)| q.as_str()).unwrap_or_default();
        tracing::warn!(%error, queue, "republish not confirmed; requeueing the delivery");
        link.report_error();
        return requeue(delivery, publish_timeout).await;
    }
    if let Err(error) = event_published {
        tracing::warn!(%error, kind = event.as_ref().map(|e| e.kind.as_str()), "order event not confirmed; requeueing the delivery");
        metrics::counter!("worker_order_event_failures_total", "error" => error.kind())
            .increment(1);
        link.report_error();
        tokio::time::sleep(EVENT_FAILED_PAUSE).await;
        return requeue(delivery, publish_timeout).await;
    }
    match (outcome, &target) {
        (Outcome::Retry { .. }, Some((queue, _))) => {
            let tier = queue
                .strip_prefix(RETRY_QUEUE_PREFIX)
                .unwrap_or(queue)
                .to_owned();
            metrics::counter!("worker_retries_total", "tier" => tier).increment(1);
        }
        (Outcome::Dead { reason, .. }, _) => {
            metrics::counter!("worker_dead_lettered_total", "reason" => reason.as_str())
                .increment(1);
        }
        _ => {}
    }
    ack(delivery, publish_timeout).await
}

/// Where a Retry or Dead outcome republishes the message, with which headers.
fn republish_target(delivery: &Delivery, outcome: &Outcome) -> Option<(String, FieldTable)> {
    let routing_key = delivery.routing_key.as_str();
    match outcome {
        Outcome::Done => None,
        Outcome::Retry {
            delay,
            attempts,
            failure,
        } => {
            let headers = retry_headers(headers_of(delivery), routing_key, *attempts, failure);
            Some((retry_queue_name(*delay), headers))
        }
        Outcome::Dead {
            reason,
            attempts,
            failure,
        } => {
            let headers = dead_headers(
                headers_of(delivery),
                routing_key,
                *reason,
                *attempts,
                failure,
            );
            Some((DLQ.to_owned(), headers))
        }
    }
}

async fn publish(
    link: &Link,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
    timeout: Duration,
) -> Result<(), PublishError> {
    let session = link.current().ok_or(PublishError::NotConnected)?;
    // Through the default exchange: the routing key is the queue's name.
    publish_confirmed(session.channel(), "", queue, body, properties, timeout).await
}

// Acks and nacks get a deadline too: when the connection dies under them, lapin's futures
// may never resolve, and a task stuck there would hold its prefetch slot (and the
// in-flight gauge) for the life of the process. On a deadline the delivery is left to the
// broker, which redelivers it once the channel is gone; the idempotency key makes that safe.
async fn ack(delivery: &Delivery, timeout: Duration) -> Settled {
    match tokio::time::timeout(timeout, delivery.acker.ack(BasicAckOptions::default())).await {
        Ok(Ok(true)) => Settled::Acked,
        Ok(Ok(false)) => Settled::Abandoned,
        Ok(Err(error)) => {
            // The effect happened; the broker will redeliver and the idempotency key makes
            // the repeat harmless.
            tracing::warn!(%error, "ack failed; the broker will redeliver");
            Settled::Abandoned
        }
        Err(_) => {
            tracing::warn!(?timeout, "no ack completion; the broker will redeliver");
            Settled::Abandoned
        }
    }
}

/// Hands the delivery back to the broker for redelivery (within `timeout`).
pub async fn requeue(delivery: &Delivery, timeout: Duration) -> Settled {
    let options = BasicNackOptions {
        requeue: true,
        ..Default::default()
    };
    match tokio::time::timeout(timeout, delivery.acker.nack(options)).await {
        Ok(Ok(true)) => Settled::Requeued,
        _ => Settled::Abandoned,
    }
}

fn headers_of(delivery: &Delivery) -> Option<&FieldTable> {
    delivery.properties.headers().as_ref()
}

/// The original properties (message id, timestamp, content type…) with new headers, and
/// persistent whatever the original said.
fn republished(original: &BasicProperties, headers: FieldTable) -> BasicProperties {
    original.clone().with_headers(headers).with_delivery_mode(2)
}

/// The original headers without the broker's, or `keep` wants dropped.
fn copied(original: Option<&FieldTable>, drop: &[&str]) -> FieldTable {
    let mut map = original.map(|h| h.inner().clone()).unwrap_or_default();
    map.retain(|k: &ShortString, _| {
        !header::BROKER_SET.contains(&k.as_str()) && !drop.contains(&k.as_str())
    });
    FieldTable::from(map)
}

/// Keeps the exchange's routing key (the notification type) once the message starts
/// travelling through the default exchange, where the routing key is a queue name.
fn keep_routing_key(headers: &mut FieldTable, routing_key: &str) {
    if headers.get_str(header::ROUTING_KEY).is_none() {
        headers.set_str(header::ROUTING_KEY, routing_key);
    }
}

fn set_last(headers: &mut FieldTable, attempts: u32, failure: &Failure) {
    headers
        .set_int(header::ATTEMPTS, i64::from(attempts))
        .set_str(
            header::LAST_ERROR,
            &truncate(&failure.error, LAST_ERROR_MAX),
        );
    if let Some(status) = failure.status {
        headers.set_int(header::LAST_STATUS, i64::from(status));
    }
}

/// Headers of the copy sent to a delay tier.
pub fn retry_headers(
    original: Option<&FieldTable>,
    routing_key: &str,
    attempts: u32,
    failure: &Failure,
) -> FieldTable {
    // A stale status would lie about this attempt; dead-letter marks belong to a parked copy.
    let mut h = copied(
        original,
        &[
            header::LAST_STATUS,
            header::DEAD_REASON,
            header::DEAD_LETTERED_AT,
            header::DLQ_ID,
        ],
    );
    keep_routing_key(&mut h, routing_key);
    set_last(&mut h, attempts, failure);
    h
}

/// Headers of the copy parked in the DLQ.
pub fn dead_headers(
    original: Option<&FieldTable>,
    routing_key: &str,
    reason: DeadReason,
    attempts: u32,
    failure: &Failure,
) -> FieldTable {
    let mut h = copied(original, &[header::LAST_STATUS]);
    keep_routing_key(&mut h, routing_key);
    set_last(&mut h, attempts, failure);
    h.set_str(header::DEAD_REASON, reason.as_str())
        .set_str(header::DEAD_LETTERED_AT, &now_rfc3339())
        .set_str(header::DLQ_ID, &uuid::Uuid::new_v4().to_string());
    h
}

#[cfg(test)]
mod tests {
    use lapin::types::AMQPValue;
    use shared::envelope::parse_time;

    use super::*;

    fn failure(status: Option<u16>, error: &str) -> Failure {
        Failure {
            status,
            error: error.to_owned(),
            retry_after: None,
        }
    }

    fn original() -> FieldTable {
        let mut h = FieldTable::default();
        h.set_str(header::NOTIFICATION_TYPE, "order_paid")
            .set_str(header::SIGNATURE, "Signature abc")
            .set_str(header::RECEIVED_AT, "2025-01-01T00:00:00Z")
            .set_int(header::ATTEMPTS, 0)
            .set_int(header::LAST_STATUS, 503)
            .set_int("x-delivery-count", 2);
        h.insert("x-death".into(), AMQPValue::FieldArray(Default::default()));
        h
    }

    #[test]
    fn retry_copies_headers_and_counts_the_attempt() {
        let h = retry_headers(
            Some(&original()),
            "order_paid",
            1,
            &failure(None, "no answer within 10s"),
        );
        assert_eq!(h.get_int(header::ATTEMPTS), Some(1));
        assert_eq!(
            h.get_str(header::ROUTING_KEY).as_deref(),
            Some("order_paid")
        );
        assert_eq!(
            h.get_str(header::SIGNATURE).as_deref(),
            Some("Signature abc")
        );
        assert_eq!(
            h.get_str(header::RECEIVED_AT).as_deref(),
            Some("2025-01-01T00:00:00Z")
        );
        assert_eq!(
            h.get_str(header::LAST_ERROR).as_deref(),
            Some("no answer within 10s")
        );
        assert_eq!(h.get_int(header::LAST_STATUS), None, "no stale status");
        assert!(!h.contains_key("x-death") && !h.contains_key("x-delivery-count"));
    }

    #[test]
    fn a_message_back_from_a_tier_keeps_its_first_routing_key() {
        let mut first = original();
        first.set_str(header::ROUTING_KEY, "order_canceled");
        let h = retry_headers(
            Some(&first),
            "xsolla.fulfillment",
            3,
            &failure(Some(409), "HTTP 409"),
        );
        assert_eq!(
            h.get_str(header::ROUTING_KEY).as_deref(),
            Some("order_canceled")
        );
        assert_eq!(h.get_int(header::LAST_STATUS), Some(409));
    }

    #[test]
    fn dead_letter_headers_say_why_when_and_which_copy() {
        let long = "x".repeat(5000);
        let h = dead_headers(
            Some(&original()),
            "order_paid",
            DeadReason::Permanent,
            2,
            &failure(Some(422), &long),
        );
        assert_eq!(h.get_str(header::DEAD_REASON).as_deref(), Some("permanent"));
        assert_eq!(h.get_int(header::LAST_STATUS), Some(422));
        assert_eq!(h.get_int(header::ATTEMPTS), Some(2));
        assert!(h.get_str(header::LAST_ERROR).unwrap().len() <= LAST_ERROR_MAX);
        assert!(parse_time(&h.get_str(header::DEAD_LETTERED_AT).unwrap()).is_some());
        let id = h.get_str(header::DLQ_ID).unwrap();
        assert!(uuid::Uuid::parse_str(&id).is_ok());
        let other = dead_headers(
            None,
            "order_paid",
            DeadReason::Unparsable,
            1,
            &failure(None, "bad"),
        );
        assert_ne!(
            other.get_str(header::DLQ_ID),
            Some(id),
            "each parked copy has its own id"
        );
        assert_eq!(
            other.get_str(header::ROUTING_KEY).as_deref(),
            Some("order_paid")
        );
    }

    #[test]
    fn republished_copies_keep_id_and_become_persistent() {
        let p = BasicProperties::default()
            .with_message_id("order_paid:1".into())
            .with_timestamp(42);
        let r = republished(&p, FieldTable::default());
        assert_eq!(
            r.message_id().as_ref().map(|s| s.as_str()),
            Some("order_paid:1")
        );
        assert_eq!(r.timestamp(), &Some(42));
        assert_eq!(r.delivery_mode(), &Some(2));
    }
}
