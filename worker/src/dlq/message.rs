//! One dead-lettered message as `worker dlq` sees it: its id, what it is about and why it
//! was parked, read from the headers the worker (or the broker) put on it and from the body.

use std::collections::BTreeMap;

use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable, ShortString},
};
use sha1::{Digest, Sha1};
use shared::{
    envelope::{DeadReason, HeadersExt, header, value_to_string},
    webhook,
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Headers a dead-lettering adds (the worker's and RabbitMQ's); `replay` removes them all so
/// the replayed message looks like a fresh one from the ingress. `x-delivery-count` and
/// `x-acquired-count` are the DLQ's own redelivery counters, which must not follow the
/// message into the work queue.
pub fn dead_letter_headers() -> impl Iterator<Item = &'static str> {
    header::DEAD_LETTER
        .iter()
        .chain(header::BROKER_SET)
        .copied()
}

/// A message read from the DLQ.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// `x-dlq-id` when the worker parked it; otherwise derived (see [`derived_id`]).
    pub id: String,
    /// Whether [`Self::id`] was derived rather than read from `x-dlq-id`.
    pub id_derived: bool,
    /// AMQP `message_id`: the webhook's dedup id (not unique in the DLQ).
    pub message_id: Option<String>,
    pub notification_type: Option<String>,
    /// The work exchange routing key `replay` publishes with; `None` if nothing names one.
    pub routing_key: Option<String>,
    pub order_id: Option<String>,
    pub user_id: Option<String>,
    /// Fulfilment attempts the worker made (`x-attempts`).
    pub attempts: Option<i64>,
    /// Why it is parked.
    pub reason: Option<ParkReason>,
    /// Last HTTP status from the inventory API.
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    /// RFC 3339.
    pub dead_lettered_at: Option<String>,
    /// How often the DLQ itself has handed this message out (each `worker dlq` pass counts).
    pub delivery_count: Option<i64>,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

impl DeadLetter {
    /// Reads a message as delivered from the DLQ.
    pub fn new(properties: BasicProperties, body: Vec<u8>) -> DeadLetter {
        let headers = properties.headers().clone().unwrap_or_default();
        let death = latest_death(&headers);
        let summary = webhook::parse(&body).ok().map(|(_, s)| s);
        let message_id = properties.message_id().as_ref().map(|m| m.to_string());

        let (id, id_derived) = match headers.get_str(header::DLQ_ID).filter(|s| !s.is_empty()) {
            Some(id) => (id, false),
            None => {
                let time = death.as_ref().and_then(|d| d.time);
                (derived_id(message_id.as_deref(), time, &body), true)
            }
        };
        let notification_type = headers
            .get_str(header::NOTIFICATION_TYPE)
            .or_else(|| summary.as_ref().map(|s| s.notification_type.clone()));
        let routing_key = headers
            .get_str(header::ROUTING_KEY)
            .or_else(|| notification_type.clone())
            .or_else(|| death.as_ref().and_then(|d| d.routing_key.clone()))
            .filter(|rk| is_routing_key(rk));
        let reason = headers
            .get_str(header::DEAD_REASON)
            .or_else(|| death.as_ref().and_then(|d| d.reason.clone()))
            .or_else(|| headers.get_str("x-last-death-reason"))
            .map(|r| ParkReason::read(&r));
        let dead_lettered_at = headers.get_str(header::DEAD_LETTERED_AT).or_else(|| {
            death
                .as_ref()
                .and_then(|d| d.time)
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
                .and_then(|t| t.format(&Rfc3339).ok())
        });

        DeadLetter {
            id,
            id_derived,
            message_id,
            notification_type,
            routing_key,
            order_id: summary.as_ref().and_then(|s| s.order_id.clone()),
            user_id: summary.as_ref().and_then(|s| s.user_id.clone()),
            attempts: headers.get_int(header::ATTEMPTS),
            reason,
            last_status: headers.get_int(header::LAST_STATUS),
            last_error: headers.get_str(header::LAST_ERROR),
            dead_lettered_at,
            delivery_count: headers.get_int("x-delivery-count"),
            properties,
            body,
        }
    }

    /// The message's headers (empty if it has none).
    pub fn headers(&self) -> FieldTable {
        self.properties.headers().clone().unwrap_or_default()
    }

    /// The properties `replay` publishes with: the original ones, minus every dead-letter
    /// header, with `x-attempts` = 0 (the retry budget starts again) and `x-replayed-at` = `now`.
    pub fn replay_properties(&self, now: &str) -> BasicProperties {
        let mut headers: BTreeMap<ShortString, AMQPValue> = self.headers().inner().clone();
        for name in dead_letter_headers() {
            headers.remove(name);
        }
        let mut headers = FieldTable::from(headers);
        headers
            .set_int(header::ATTEMPTS, 0)
            .set_str(header::REPLAYED_AT, now);
        if let Some(rk) = &self.routing_key {
            headers.set_str(header::ROUTING_KEY, rk);
        }
        self.properties.clone().with_headers(headers)
    }

    /// Whether this message is of `notification_type`.
    pub fn is_type(&self, notification_type: &str) -> bool {
        self.notification_type.as_deref() == Some(notification_type)
    }
}

/// Longest routing key AMQP can carry (a `shortstr`); lapin panics on a longer one.
pub const ROUTING_KEY_MAX: usize = 255;

/// Whether `rk` can be published with. A longer one (a hostile or corrupted header) makes
/// the message unroutable, left in the DLQ, rather than guessed from another source.
pub fn is_routing_key(rk: &str) -> bool {
    !rk.is_empty() && rk.len() <= ROUTING_KEY_MAX
}

/// Id of a message that has no `x-dlq-id` (RabbitMQ parked it, e.g. when the work queue's
/// `x-delivery-limit` ran out): the first 16 hex digits of
/// SHA-1(`message_id` ‖ `\n` ‖ x-death `time` in Unix seconds ‖ `\n` ‖ body), absent parts
/// empty. Stable for as long as the message sits in the DLQ; byte-identical copies parked in
/// the same second share it, and `worker dlq` then acts on all of them.
pub fn derived_id(message_id: Option<&str>, death_time: Option<i64>, body: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(message_id.unwrap_or_default().as_bytes());
    hasher.update(b"\n");
    hasher.update(
        death_time
            .map(|t| t.to_string())
            .unwrap_or_default()
            .as_bytes(),
    );
    hasher.update(b"\n");
    hasher.update(body);
    let mut id = hex::encode(hasher.finalize());
    id.truncate(16);
    id
}

/// Why a message is in the DLQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParkReason {
    /// The worker's `x-dead-reason`.
    Worker(DeadReason),
    /// Any other: RabbitMQ's own `x-death` reason for a message it parked itself
    /// (`delivery_limit`, `rejected`, `expired`), or an `x-dead-reason` this version does
    /// not write. Shown as found.
    Other(String),
}

impl ParkReason {
    fn read(value: &str) -> ParkReason {
        DeadReason::from_header(value)
            .map_or_else(|| ParkReason::Other(value.to_owned()), ParkReason::Worker)
    }

    pub fn as_str(&self) -> &str {
        match self {
            ParkReason::Worker(reason) => reason.as_str(),
            ParkReason::Other(text) => text,
        }
    }
}

impl serde::Serialize for ParkReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The parts of RabbitMQ's newest `x-death` entry that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Death {
    reason: Option<String>,
    /// Unix seconds.
    time: Option<i64>,
    /// The first routing key that is not one of our queue names (retries and the DLQ are
    /// reached through the default exchange, whose routing key is a queue name).
    routing_key: Option<String>,
}

/// `x-death` is an array of tables, newest first.
fn latest_death(headers: &FieldTable) -> Option<Death> {
    let AMQPValue::FieldArray(entries) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(entry) = entries.as_slice().first()? else {
        return None;
    };
    let time = match entry.inner().get("time") {
        Some(AMQPValue::Timestamp(t)) => i64::try_from(*t).ok(),
        Some(_) => entry.get_int("time"),
        None => None,
    };
    let routing_key = match entry.inner().get("routing-keys") {
        Some(AMQPValue::FieldArray(keys)) => keys
            .as_slice()
            .iter()
            .map(value_to_string)
            .find(|k| !k.is_empty() && !k.starts_with("xsolla.")),
        _ => None,
    };
    Some(Death {
        reason: entry.get_str("reason"),
        time,
        routing_key,
    })
}

#[cfg(test)]
mod tests {
    use lapin::types::{FieldArray, LongString};

    use super::*;

    const BODY: &[u8] =
        br#"{"notification_type":"order_paid","order":{"id":42},"user":{"external_id":"u-7"}}"#;

    fn worker_parked() -> BasicProperties {
        let mut h = FieldTable::default();
        h.set_str(header::NOTIFICATION_TYPE, "order_paid")
            .set_str(header::ROUTING_KEY, "order_paid")
            .set_str(header::DLQ_ID, "0b7c6d3e-0000-4000-8000-000000000001")
            .set_str(header::DEAD_REASON, "permanent")
            .set_int(header::LAST_STATUS, 422)
            .set_str(header::LAST_ERROR, "unknown sku")
            .set_int(header::ATTEMPTS, 1)
            .set_str(header::DEAD_LETTERED_AT, "2025-01-02T03:04:05Z")
            .set_str(
                header::TRACEPARENT,
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            );
        BasicProperties::default()
            .with_message_id("order_paid:42".into())
            .with_delivery_mode(2)
            .with_headers(h)
    }

    fn broker_parked() -> BasicProperties {
        let mut death = FieldTable::default();
        death
            .set_str("reason", "delivery_limit")
            .set_str("queue", "xsolla.fulfillment")
            .insert("time".into(), AMQPValue::Timestamp(1_700_000_000));
        death.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(
                LongString::from("xsolla.fulfillment"),
            )])),
        );
        let mut h = FieldTable::default();
        h.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        h.set_int(header::ATTEMPTS, 2);
        BasicProperties::default()
            .with_message_id("order_paid:42".into())
            .with_headers(h)
    }

    #[test]
    fn reads_what_the_worker_wrote() {
        let m = DeadLetter::new(worker_parked(), BODY.to_vec());
        assert_eq!(m.id, "0b7c6d3e-0000-4000-8000-000000000001");
        assert!(!m.id_derived);
        assert_eq!(m.notification_type.as_deref(), Some("order_paid"));
        assert_eq!(m.routing_key.as_deref(), Some("order_paid"));
        assert_eq!(m.order_id.as_deref(), Some("42"));
        assert_eq!(m.user_id.as_deref(), Some("u-7"));
        assert_eq!(m.reason, Some(ParkReason::Worker(DeadReason::Permanent)));
        assert_eq!(m.last_status, Some(422));
        assert_eq!(m.attempts, Some(1));
        assert_eq!(m.dead_lettered_at.as_deref(), Some("2025-01-02T03:04:05Z"));
    }

    #[test]
    fn derives_a_stable_id_for_messages_the_broker_parked() {
        let m = DeadLetter::new(broker_parked(), BODY.to_vec());
        assert!(m.id_derived);
        assert_eq!(m.id.len(), 16);
        assert_eq!(
            m.id,
            derived_id(Some("order_paid:42"), Some(1_700_000_000), BODY)
        );
        assert_eq!(m.id, DeadLetter::new(broker_parked(), BODY.to_vec()).id);
        assert_ne!(
            m.id,
            derived_id(Some("order_paid:42"), Some(1_700_000_001), BODY)
        );
        assert_eq!(m.reason, Some(ParkReason::Other("delivery_limit".into())));
        assert_eq!(m.dead_lettered_at.as_deref(), Some("2023-11-14T22:13:20Z"));
        // No header names the type: the body does; the queue-name routing key is ignored.
        assert_eq!(m.routing_key.as_deref(), Some("order_paid"));
    }

    #[test]
    fn falls_back_to_the_x_death_routing_key() {
        let mut props = broker_parked();
        let mut h = props.headers().clone().unwrap();
        let AMQPValue::FieldArray(deaths) = h.inner()["x-death"].clone() else {
            unreachable!()
        };
        let AMQPValue::FieldTable(mut death) = deaths.as_slice()[0].clone() else {
            unreachable!()
        };
        death.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(
                LongString::from("order_canceled"),
            )])),
        );
        h.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        props = props.with_headers(h);
        let m = DeadLetter::new(props, b"not json".to_vec());
        assert_eq!(m.notification_type, None);
        assert_eq!(m.routing_key.as_deref(), Some("order_canceled"));
    }

    #[test]
    fn a_routing_key_longer_than_amqp_allows_makes_it_unroutable() {
        let mut h = worker_parked().headers().clone().unwrap();
        h.set_str(header::ROUTING_KEY, &"k".repeat(256));
        let m = DeadLetter::new(worker_parked().with_headers(h.clone()), BODY.to_vec());
        assert_eq!(m.routing_key, None, "not guessed from the type either");
        h.set_str(header::ROUTING_KEY, &"k".repeat(255));
        let m = DeadLetter::new(worker_parked().with_headers(h), BODY.to_vec());
        assert_eq!(m.routing_key.map(|k| k.len()), Some(255));
    }

    #[test]
    fn replay_properties_reset_attempts_and_drop_dead_letter_headers() {
        let m = DeadLetter::new(worker_parked(), BODY.to_vec());
        let props = m.replay_properties("2025-02-03T04:05:06Z");
        let h = props.headers().clone().unwrap();
        for name in dead_letter_headers() {
            assert!(!h.contains_key(name), "{name} kept");
        }
        assert_eq!(h.get_int(header::ATTEMPTS), Some(0));
        assert_eq!(
            h.get_str(header::REPLAYED_AT).as_deref(),
            Some("2025-02-03T04:05:06Z")
        );
        assert_eq!(
            h.get_str(header::NOTIFICATION_TYPE).as_deref(),
            Some("order_paid")
        );
        assert!(h.contains_key(header::TRACEPARENT));
        assert_eq!(props.message_id(), m.properties.message_id());
        assert_eq!(props.delivery_mode(), &Some(2));

        let broker = DeadLetter::new(broker_parked(), BODY.to_vec());
        let h = broker.replay_properties("now").headers().clone().unwrap();
        assert!(!h.contains_key("x-death"));
        assert_eq!(
            h.get_str(header::ROUTING_KEY).as_deref(),
            Some("order_paid")
        );
    }
}
