//! Order events: every step of an order's life, kept in one RabbitMQ stream
//! (`xsolla.order-events`) that `order-status` and `worker order` read.
//!
//! Two kinds of message live in the stream:
//! - the **raw webhooks** of `order_paid` / `order_canceled`: the stream is bound to
//!   `xsolla.webhooks` for those two types, so the ingress's one confirmed publish lands in
//!   the work queue and here at once, and an acceptance is visible with no worker running.
//!   Read through [`OrderEvent::from_webhook`], which keeps ids, items and prices only
//!   (never the e-mail address the body carries);
//! - **worker events** (a failed attempt, granted, revoked, dead-lettered, replayed): a
//!   small JSON [`OrderEvent`] with AMQP `type` = [`EVENT_TYPE`], published with a confirm
//!   before the delivery behind it is acked.
//!
//! Plus **sync markers** ([`MARKER_TYPE`]): a reader that must know when it has read
//! everything (a booting `order-status`, `worker order`) publishes a marker with a fresh
//! token and reads until it sees it. Everyone else skips markers.

use std::time::Duration;

use futures_lite::StreamExt as _;
use lapin::{
    BasicProperties, Channel, Connection, Consumer,
    message::Delivery,
    options::{BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable, LongString},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::{
    envelope::{HeadersExt, header, now_rfc3339},
    publish::{PublishError, publish_confirmed},
    webhook::{Effect, id_at, project_id},
};

/// The stream queue (`x-queue-type: stream`).
pub const STREAM: &str = "xsolla.order-events";
/// AMQP `type` property of a worker event.
pub const EVENT_TYPE: &str = "xsolla.order-event";
/// AMQP `type` property of a sync marker.
pub const MARKER_TYPE: &str = "xsolla.order-event.marker";
/// Notification types whose raw webhooks the stream keeps (its bindings).
pub const WEBHOOK_TYPES: &[&str] = &["order_paid", "order_canceled"];
/// Default `STATUS_RETENTION`.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// One step of an order's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// `order_paid` made durable by the ingress.
    Accepted,
    /// `order_canceled` made durable by the ingress.
    CancelAccepted,
    /// A grant or revocation attempt failed; another follows (`next_retry_at`).
    AttemptFailed,
    /// The game's inventory answered 2xx to the grant.
    Granted,
    /// The game's inventory answered 2xx to the revocation.
    Revoked,
    /// Parked in the DLQ (`reason`, `dlq_id`).
    DeadLettered,
    /// Put back from the DLQ by an operator (`worker dlq replay`).
    Replayed,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Accepted => "accepted",
            EventKind::CancelAccepted => "cancel_accepted",
            EventKind::AttemptFailed => "attempt_failed",
            EventKind::Granted => "granted",
            EventKind::Revoked => "revoked",
            EventKind::DeadLettered => "dead_lettered",
            EventKind::Replayed => "replayed",
        }
    }
}

/// An item line as the status surfaces show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventItem {
    pub sku: String,
    pub quantity: i64,
    /// The line's price as the webhook gives it (`items[].amount`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
}

/// The order's price as the webhook gives it (`order.amount`, `order.currency`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub amount: String,
    pub currency: String,
}

/// One order event. Never carries a secret or an e-mail address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEvent {
    pub kind: EventKind,
    /// The order's project: the ingress route's, else the body's, else `XSOLLA_PROJECT_ID`.
    #[serde(default)]
    pub project_id: Option<u64>,
    pub order_id: String,
    pub user_id: String,
    /// RFC 3339.
    pub at: String,
    /// Grant or revocation, for attempt/dead-letter/replay events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<Effect>,
    /// The attempt this event reports (1 = first delivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339, when the next attempt is due (attempt_failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<String>,
    /// Why it was dead-lettered (`permanent`, `retry_budget_exhausted`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The id `worker dlq show` takes (dead_lettered, replayed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlq_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<EventItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
    /// Sandbox order (`order.mode = sandbox`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sandbox: bool,
}

impl OrderEvent {
    /// A worker event for `order_id` of `user_id`, now; fill in the rest.
    pub fn new(kind: EventKind, project_id: Option<u64>, order_id: &str, user_id: &str) -> Self {
        OrderEvent {
            kind,
            project_id,
            order_id: order_id.to_owned(),
            user_id: user_id.to_owned(),
            at: now_rfc3339(),
            effect: None,
            attempt: None,
            http_status: None,
            error: None,
            next_retry_at: None,
            reason: None,
            dlq_id: None,
            items: Vec::new(),
            price: None,
            sandbox: false,
        }
    }

    /// The acceptance an `order_paid`/`order_canceled` webhook stands for, as it sits in the
    /// stream (raw body + the ingress's headers). `None` for any other body, or one that
    /// names no order or user: nothing to show for it. `None` too for a copy `worker dlq
    /// replay` put back on the exchange (it carries `x-replayed-at`, and the binding files
    /// it here as well): that is no new acceptance, and its `replayed` event follows.
    pub fn from_webhook(body: &[u8], headers: Option<&FieldTable>) -> Option<OrderEvent> {
        if headers.is_some_and(|h| h.contains_key(header::REPLAYED_AT)) {
            return None;
        }
        // Only the paths read below, in one pass: order-status decodes every acceptance of
        // the retention window this way at boot, and a whole tree per 2–4 kB body was most
        // of its catch-up time.
        let v = crate::webhook::order_view(body)?;
        let kind = match v.get("notification_type")?.as_str()? {
            "order_paid" => EventKind::Accepted,
            "order_canceled" => EventKind::CancelAccepted,
            _ => return None,
        };
        let order_id = id_at(&v, &["order", "id"])?;
        let user_id = id_at(&v, &["user", "external_id"]).or_else(|| id_at(&v, &["user", "id"]))?;
        let route_project = headers
            .and_then(|h| h.get_int(header::PROJECT_ID))
            .and_then(|p| u64::try_from(p).ok());
        let at = headers
            .and_then(|h| h.get_str(header::RECEIVED_AT))
            .unwrap_or_else(now_rfc3339);
        let items = v
            .get("items")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|it| {
                        let sku = it
                            .get("sku")
                            .or_else(|| it.get("sku_drm"))
                            .and_then(Value::as_str)?;
                        Some(EventItem {
                            sku: sku.to_owned(),
                            quantity: it.get("quantity").and_then(Value::as_i64).unwrap_or(0),
                            amount: it.get("amount").and_then(Value::as_str).map(str::to_owned),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let price = match (
            v.pointer("/order/amount").and_then(Value::as_str),
            v.pointer("/order/currency").and_then(Value::as_str),
        ) {
            (Some(amount), Some(currency)) => Some(Price {
                amount: amount.to_owned(),
                currency: currency.to_owned(),
            }),
            _ => None,
        };
        let mut event = OrderEvent::new(
            kind,
            route_project.or_else(|| project_id(&v)),
            &order_id,
            &user_id,
        );
        event.at = at;
        event.items = items;
        event.price = price;
        event.sandbox = v.pointer("/order/mode").and_then(Value::as_str) == Some("sandbox");
        Some(event)
    }

    /// The AMQP message of a worker event.
    pub fn to_message(&self) -> (Vec<u8>, BasicProperties) {
        let body = serde_json::to_vec(self).expect("an OrderEvent always serialises");
        let message_id = format!(
            "{}:{}:{}:{}",
            self.kind.as_str(),
            self.order_id,
            self.attempt.unwrap_or(0),
            self.at
        );
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_type(EVENT_TYPE.into())
            .with_message_id(message_id.into())
            .with_app_id("xsolla-bridge".into());
        (body, properties)
    }

    /// Parsed back from the stream: `None` if the time is not RFC 3339 (a foreign writer).
    pub fn at_time(&self) -> Option<OffsetDateTime> {
        crate::envelope::parse_time(&self.at)
    }
}

/// What one message of the stream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamMessage {
    Event(Box<OrderEvent>),
    /// A sync marker with this token.
    Marker(String),
    /// Anything else (a webhook that names no order, a foreign message): skipped.
    Other,
}

/// Reads one stream message (raw webhook, worker event or marker).
pub fn decode(body: &[u8], properties: &BasicProperties) -> StreamMessage {
    match properties.kind().as_ref().map(|k| k.as_str()) {
        Some(EVENT_TYPE) => serde_json::from_slice(body)
            .map(|e| StreamMessage::Event(Box::new(e)))
            .unwrap_or(StreamMessage::Other),
        Some(MARKER_TYPE) => StreamMessage::Marker(String::from_utf8_lossy(body).into_owned()),
        _ => OrderEvent::from_webhook(body, properties.headers().as_ref())
            .map(|e| StreamMessage::Event(Box::new(e)))
            .unwrap_or(StreamMessage::Other),
    }
}

/// Decodes a delivery from the stream.
pub fn decode_delivery(delivery: &Delivery) -> StreamMessage {
    decode(&delivery.data, &delivery.properties)
}

/// The stream offset of a delivery (`x-stream-offset`, set by RabbitMQ).
pub fn stream_offset(delivery: &Delivery) -> Option<u64> {
    let h = delivery.properties.headers().as_ref()?;
    h.get_int("x-stream-offset")
        .and_then(|o| u64::try_from(o).ok())
}

/// Publishes a worker event into the stream and waits for the broker's confirm.
pub async fn publish(
    channel: &Channel,
    event: &OrderEvent,
    timeout: Duration,
) -> Result<(), PublishError> {
    let (body, properties) = event.to_message();
    publish_confirmed(channel, "", STREAM, &body, properties, timeout).await
}

/// Publishes a sync marker with a fresh token (returned) and waits for the confirm.
pub async fn publish_marker(channel: &Channel, timeout: Duration) -> Result<String, PublishError> {
    let token = uuid_like();
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_type(MARKER_TYPE.into());
    publish_confirmed(channel, "", STREAM, token.as_bytes(), properties, timeout).await?;
    Ok(token)
}

fn uuid_like() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Where a stream reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The first message still retained.
    First,
    /// The first message stored at or after this time (chunk precision: a few earlier
    /// ones may come too, so filter by [`OrderEvent::at`] when it matters).
    Since(OffsetDateTime),
    /// This offset.
    Offset(u64),
    /// The last chunk: its first offset says how far the stream reaches.
    Last,
}

/// Subscribes to the stream on `channel` (which must not be in confirm mode for acks to
/// stay simple; any channel works). Stream consumers need a prefetch and manual acks:
/// acks only grant credit, they remove nothing.
/// <https://www.rabbitmq.com/docs/streams#consuming>
pub async fn subscribe(
    channel: &Channel,
    start: StartAt,
    prefetch: u16,
    tag: &str,
) -> lapin::Result<Consumer> {
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut args = FieldTable::default();
    let offset = match start {
        StartAt::First => AMQPValue::LongString(LongString::from("first")),
        StartAt::Last => AMQPValue::LongString(LongString::from("last")),
        StartAt::Since(t) => AMQPValue::Timestamp(t.unix_timestamp().max(0) as u64),
        StartAt::Offset(o) => AMQPValue::LongLongInt(i64::try_from(o).unwrap_or(i64::MAX)),
    };
    args.insert("x-stream-offset".into(), offset);
    channel
        .basic_consume(
            STREAM.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
}

/// The offset of the first message a reader from `start` gets (subscribed on a channel of
/// its own, closed after): `None` if none comes within `within`, as from an empty stream.
pub async fn first_offset(
    connection: &Connection,
    start: StartAt,
    within: Duration,
) -> lapin::Result<Option<u64>> {
    let channel = connection.create_channel().await?;
    let mut consumer = subscribe(&channel, start, 1, "offset-probe").await?;
    let offset = match tokio::time::timeout(within, consumer.next()).await {
        Ok(Some(delivery)) => stream_offset(&delivery?),
        Ok(None) | Err(_) => None,
    };
    let _ = channel.close(200, "probed".into()).await;
    Ok(offset)
}

/// `x-max-age` for a retention: whole seconds (`604800s`), at least one.
pub fn max_age(retention: Duration) -> String {
    format!("{}s", retention.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::tests::fixture;

    #[test]
    fn reads_an_acceptance_from_the_raw_webhook_without_the_email() {
        let mut h = FieldTable::default();
        h.set_int(header::PROJECT_ID, 18404)
            .set_str(header::RECEIVED_AT, "2026-01-01T00:00:00Z");
        let body = fixture("order_paid_combined");
        let e = OrderEvent::from_webhook(&body, Some(&h)).unwrap();
        assert_eq!(e.kind, EventKind::Accepted);
        assert_eq!(e.project_id, Some(18404));
        assert_eq!(e.user_id, "id_xsolla_login_1");
        assert_eq!(e.at, "2026-01-01T00:00:00Z");
        assert!(!e.items.is_empty());
        let text = serde_json::to_string(&e).unwrap();
        assert!(!text.contains('@'), "no e-mail in an event: {text}");
        let cancel = OrderEvent::from_webhook(&fixture("order_canceled_separate"), None).unwrap();
        assert_eq!(cancel.kind, EventKind::CancelAccepted);
        assert!(OrderEvent::from_webhook(&fixture("payment"), None).is_none());
        h.set_str(header::REPLAYED_AT, "2026-01-02T00:00:00Z");
        assert!(
            OrderEvent::from_webhook(&body, Some(&h)).is_none(),
            "a replayed copy is no new acceptance"
        );
        assert!(OrderEvent::from_webhook(b"not json", None).is_none());
    }

    #[test]
    fn worker_events_round_trip_through_the_message() {
        let mut e = OrderEvent::new(EventKind::AttemptFailed, Some(7), "571134", "u1");
        e.effect = Some(Effect::Grant);
        e.attempt = Some(2);
        e.http_status = Some(503);
        e.error = Some("HTTP 503".into());
        let (body, props) = e.to_message();
        assert_eq!(decode(&body, &props), StreamMessage::Event(Box::new(e)));
        let marker = BasicProperties::default().with_type(MARKER_TYPE.into());
        assert_eq!(decode(b"tok", &marker), StreamMessage::Marker("tok".into()));
        assert_eq!(
            decode(b"{}", &BasicProperties::default()),
            StreamMessage::Other
        );
    }

    #[test]
    fn retention_is_whole_seconds() {
        assert_eq!(max_age(DEFAULT_RETENTION), "604800s");
        assert_eq!(max_age(Duration::from_millis(10)), "1s");
    }
}
