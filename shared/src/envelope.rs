//! The AMQP message around a webhook: body = the raw webhook bytes, unchanged; everything
//! the bridge adds travels in properties and headers, so the body stays verifiable.

use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Why the worker parked a message in the DLQ: written as `x-dead-reason` by the worker and
/// read back by `worker dlq`, so both sides spell it from this one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadReason {
    /// The inventory API refused it (a 4xx outside the retryable ones).
    Permanent,
    /// It kept failing transiently for longer than `RETRY_BUDGET`.
    RetryBudgetExhausted,
    /// The body is not a webhook we can read a grant or revocation from.
    Unparsable,
    /// A type this worker does not fulfil (should not be routed here at all).
    NotFulfilled,
}

impl DeadReason {
    pub const ALL: [DeadReason; 4] = [
        DeadReason::Permanent,
        DeadReason::RetryBudgetExhausted,
        DeadReason::Unparsable,
        DeadReason::NotFulfilled,
    ];

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::Permanent => "permanent",
            DeadReason::RetryBudgetExhausted => "retry_budget_exhausted",
            DeadReason::Unparsable => "unparsable",
            DeadReason::NotFulfilled => "not_fulfilled",
        }
    }

    /// The reason a header value names, if it is one the worker writes.
    pub fn from_header(value: &str) -> Option<DeadReason> {
        DeadReason::ALL.into_iter().find(|r| r.as_str() == value)
    }
}

impl std::fmt::Display for DeadReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Header names. `x-` names are ours; `traceparent` is W3C Trace Context.
pub mod header {
    pub const NOTIFICATION_TYPE: &str = "x-notification-type";
    /// The `Authorization: Signature …` value Xsolla sent, so any consumer can re-verify.
    pub const SIGNATURE: &str = "x-xsolla-signature";
    /// RFC 3339 time the ingress accepted the webhook.
    pub const RECEIVED_AT: &str = "x-received-at";
    /// Project from the URL (`/webhooks/xsolla/{project_id}`), when the route names one.
    pub const PROJECT_ID: &str = "x-project-id";
    /// Fulfilment attempts made so far (0 when fresh from the ingress).
    pub const ATTEMPTS: &str = "x-attempts";
    pub const TRACEPARENT: &str = "traceparent";
    /// The work exchange's routing key, kept because retries and the DLQ go through the
    /// default exchange (routing key = queue name).
    pub const ROUTING_KEY: &str = "x-original-routing-key";
    /// Why the worker dead-lettered the message: a [`super::DeadReason`].
    pub const DEAD_REASON: &str = "x-dead-reason";
    /// Last error text (parse error, HTTP body excerpt, connection error).
    pub const LAST_ERROR: &str = "x-last-error";
    /// Last HTTP status from the inventory API, when there was one.
    pub const LAST_STATUS: &str = "x-last-status";
    pub const DEAD_LETTERED_AT: &str = "x-dead-lettered-at";
    /// Unique id of one dead-lettered copy (a UUID), the id `worker dlq` shows and takes:
    /// `message_id` is not unique there, since duplicates of one webhook may all be parked.
    pub const DLQ_ID: &str = "x-dlq-id";
    /// Set by `worker dlq replay`: when the operator put it back. Restarts the retry budget.
    pub const REPLAYED_AT: &str = "x-replayed-at";

    /// What the worker adds when it parks a message in the DLQ.
    pub const DEAD_LETTER: &[&str] = &[
        DEAD_REASON,
        LAST_ERROR,
        LAST_STATUS,
        DEAD_LETTERED_AT,
        DLQ_ID,
    ];

    /// Headers RabbitMQ sets on dead-lettering and redelivery. They describe one copy, so
    /// a republish drops them (`x-death` would otherwise grow with every retry).
    pub const BROKER_SET: &[&str] = &[
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-delivery-count",
        "x-acquired-count",
    ];
}

/// `application/json`, persistent (delivery mode 2), with `message_id` and our headers.
pub fn properties(message_id: &str, headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(message_id.into())
        .with_timestamp(OffsetDateTime::now_utc().unix_timestamp().max(0) as u64)
        .with_app_id("xsolla-bridge".into())
        .with_headers(headers)
}

/// What the ingress knows about a verified webhook when it publishes it.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub notification_type: &'a str,
    pub message_id: &'a str,
    /// The `Authorization` header as received, so consumers can re-verify.
    pub signature: &'a str,
    pub traceparent: &'a str,
    /// The project of the route (`/webhooks/xsolla/{project_id}`), if any.
    pub project_id: Option<u64>,
}

/// The properties a fresh webhook is published with: received now, no attempts yet. The
/// ingress publishes through this, and so do the benchmarks' baselines, so both carry the
/// same envelope.
pub fn received_properties(r: &Received<'_>) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers
        .set_str(header::NOTIFICATION_TYPE, r.notification_type)
        .set_str(header::ROUTING_KEY, r.notification_type)
        .set_str(header::SIGNATURE, r.signature)
        .set_str(header::RECEIVED_AT, &now_rfc3339())
        .set_int(header::ATTEMPTS, 0)
        .set_str(header::TRACEPARENT, r.traceparent);
    if let Some(project) = r.project_id {
        headers.set_int(header::PROJECT_ID, project as i64);
    }
    properties(r.message_id, headers)
}

/// Builder-style helpers over a header table.
pub trait HeadersExt {
    fn set_str(&mut self, key: &str, value: &str) -> &mut Self;
    fn set_int(&mut self, key: &str, value: i64) -> &mut Self;
    fn get_str(&self, key: &str) -> Option<String>;
    fn get_int(&self, key: &str) -> Option<i64>;
}

impl HeadersExt for FieldTable {
    fn set_str(&mut self, key: &str, value: &str) -> &mut Self {
        self.insert(
            ShortString::from(key),
            AMQPValue::LongString(LongString::from(value)),
        );
        self
    }

    fn set_int(&mut self, key: &str, value: i64) -> &mut Self {
        self.insert(ShortString::from(key), AMQPValue::LongLongInt(value));
        self
    }

    fn get_str(&self, key: &str) -> Option<String> {
        match self.inner().get(key)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            other => Some(value_to_string(other)),
        }
    }

    fn get_int(&self, key: &str) -> Option<i64> {
        match self.inner().get(key)? {
            AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
            AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
            AMQPValue::ShortInt(v) => Some(i64::from(*v)),
            AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
            AMQPValue::LongInt(v) => Some(i64::from(*v)),
            AMQPValue::LongUInt(v) => Some(i64::from(*v)),
            AMQPValue::LongLongInt(v) => Some(*v),
            AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).parse().ok(),
            _ => None,
        }
    }
}

/// Any header value as text, for listings (`worker dlq show`).
pub fn value_to_string(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(x) => x.to_string(),
        AMQPValue::ShortShortUInt(x) => x.to_string(),
        AMQPValue::ShortInt(x) => x.to_string(),
        AMQPValue::ShortUInt(x) => x.to_string(),
        AMQPValue::LongInt(x) => x.to_string(),
        AMQPValue::LongUInt(x) => x.to_string(),
        AMQPValue::LongLongInt(x) => x.to_string(),
        AMQPValue::Float(x) => x.to_string(),
        AMQPValue::Double(x) => x.to_string(),
        AMQPValue::Timestamp(t) => OffsetDateTime::from_unix_timestamp(*t as i64)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| t.to_string()),
        AMQPValue::FieldTable(t) => format!("{t:?}"),
        AMQPValue::FieldArray(a) => format!("{a:?}"),
        other => format!("{other:?}"),
    }
}

/// The current time as RFC 3339, the form time headers use.
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Parses an RFC 3339 header value.
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// A new W3C `traceparent` (version 00, sampled), for requests that arrive without one.
pub fn new_traceparent() -> String {
    let trace: u128 = rand::random::<u128>() | 1;
    let span: u64 = rand::random::<u64>() | 1;
    format!("00-{trace:032x}-{span:016x}-01")
}

/// Whether `s` is a well-formed W3C `traceparent` we may propagate.
pub fn is_valid_traceparent(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_round_trip() {
        let mut h = FieldTable::default();
        h.set_str(header::NOTIFICATION_TYPE, "order_paid")
            .set_int(header::ATTEMPTS, 3);
        assert_eq!(
            h.get_str(header::NOTIFICATION_TYPE).as_deref(),
            Some("order_paid")
        );
        assert_eq!(h.get_int(header::ATTEMPTS), Some(3));
        assert_eq!(h.get_int("absent"), None);
    }

    #[test]
    fn received_properties_carry_the_documented_envelope() {
        let tp = new_traceparent();
        let p = received_properties(&Received {
            notification_type: "order_paid",
            message_id: "order_paid:7",
            signature: "Signature abc",
            traceparent: &tp,
            project_id: Some(18404),
        });
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(
            p.message_id().as_ref().map(|m| m.as_str()),
            Some("order_paid:7")
        );
        let h = p.headers().as_ref().unwrap();
        assert_eq!(
            h.get_str(header::NOTIFICATION_TYPE).as_deref(),
            Some("order_paid")
        );
        assert_eq!(
            h.get_str(header::ROUTING_KEY).as_deref(),
            Some("order_paid")
        );
        assert_eq!(
            h.get_str(header::SIGNATURE).as_deref(),
            Some("Signature abc")
        );
        assert_eq!(h.get_str(header::TRACEPARENT).as_deref(), Some(tp.as_str()));
        assert_eq!(h.get_int(header::ATTEMPTS), Some(0));
        assert_eq!(h.get_int(header::PROJECT_ID), Some(18404));
        assert!(parse_time(&h.get_str(header::RECEIVED_AT).unwrap()).is_some());
        let p = received_properties(&Received {
            notification_type: "payment",
            message_id: "m",
            signature: "s",
            traceparent: &tp,
            project_id: None,
        });
        assert_eq!(
            p.headers().as_ref().unwrap().get_int(header::PROJECT_ID),
            None
        );
    }

    #[test]
    fn generated_traceparents_are_valid() {
        for _ in 0..100 {
            assert!(is_valid_traceparent(&new_traceparent()));
        }
        assert!(!is_valid_traceparent("00-0000-00-01"));
        assert!(!is_valid_traceparent(
            "00-00000000000000000000000000000000-0000000000000001-01"
        ));
    }

    #[test]
    fn properties_are_persistent_json_with_id() {
        let p = properties("order_paid:1", FieldTable::default());
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(
            p.message_id().as_ref().map(|s| s.as_str()),
            Some("order_paid:1")
        );
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
    }
}
