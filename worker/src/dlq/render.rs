//! Output of `worker dlq`: aligned text for people, one JSON document for `jq`.
//!
//! JSON field names are part of the CLI's contract (documented in the README's ops guide): fields are
//! always present, `null` when unknown, and new fields may be added but none renamed.

use lapin::{BasicProperties, types::AMQPValue};
use serde_json::{Map, Value, json};
use shared::{envelope::value_to_string, topology};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{escape, message::DeadLetter, purge::PurgeReport, read::Listing, replay::ReplayReport};

/// The summary of one message, as `list` and the other commands print it in JSON.
pub fn entry_json(m: &DeadLetter) -> Value {
    json!({
        "id": m.id,
        "id_derived": m.id_derived,
        "message_id": m.message_id,
        "notification_type": m.notification_type,
        "routing_key": m.routing_key,
        "order_id": m.order_id,
        "user_id": m.user_id,
        "attempts": m.attempts,
        "reason": m.reason,
        "last_status": m.last_status,
        "last_error": m.last_error,
        "dead_lettered_at": m.dead_lettered_at,
        "delivery_count": m.delivery_count,
    })
}

/// `list --json`.
pub fn listing_json(listing: &Listing) -> Value {
    json!({
        "queue": topology::DLQ,
        "count": listing.queue_count,
        "matched": listing.matched,
        "messages": listing.messages.iter().map(entry_json).collect::<Vec<_>>(),
    })
}

/// `list`: a table, then a line with the counts.
pub fn listing_text(listing: &Listing) -> String {
    let header = [
        "ID",
        "TYPE",
        "ORDER",
        "USER",
        "ATTEMPTS",
        "DEAD-LETTERED AT",
        "REASON",
        "LAST",
    ];
    let rows: Vec<[String; 8]> = listing
        .messages
        .iter()
        .map(|m| {
            [
                escape::line(&m.id).into_owned(),
                or_dash(m.notification_type.as_deref()),
                or_dash(m.order_id.as_deref()),
                or_dash(m.user_id.as_deref()),
                m.attempts.map_or_else(|| "-".into(), |a| a.to_string()),
                or_dash(m.dead_lettered_at.as_deref()),
                or_dash(m.reason.as_ref().map(|r| r.as_str())),
                last_outcome(m),
            ]
        })
        .collect();
    let mut out = String::new();
    if !rows.is_empty() {
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut s = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(cell);
                } else {
                    s.push_str(&format!("{cell:<w$}  "));
                }
            }
            s.trim_end().to_owned() + "\n"
        };
        out.push_str(&line(header.to_vec()));
        for row in &rows {
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "{} shown of {} matching; {} messages in {}\n",
        listing.messages.len(),
        listing.matched,
        listing.queue_count,
        topology::DLQ
    ));
    out
}

/// `HTTP 422: {"error":"unknown_sku"}`, `connection refused`, `HTTP 503`, or `-`; one line,
/// at most 80 characters.
fn last_outcome(m: &DeadLetter) -> String {
    let error = m
        .last_error
        .as_deref()
        .map(|e| e.split_whitespace().collect::<Vec<_>>().join(" "));
    let text = match (m.last_status, error) {
        // The worker's errors already name the status (`HTTP 422: {"error":…}`).
        (Some(status), Some(e)) if e.starts_with(&format!("HTTP {status}")) => e,
        (Some(status), Some(e)) if !e.is_empty() => format!("HTTP {status}: {e}"),
        (Some(status), _) => format!("HTTP {status}"),
        (None, Some(e)) if !e.is_empty() => e,
        _ => "-".into(),
    };
    let text = escape::line(&text).into_owned();
    if text.chars().count() > 80 {
        text.chars().take(79).collect::<String>() + "…"
    } else {
        text
    }
}

/// The text, escaped for a terminal, or `-` when there is none.
fn or_dash(s: Option<&str>) -> String {
    escape::line(s.filter(|s| !s.is_empty()).unwrap_or("-")).into_owned()
}

/// `show --json`: the summary fields, `copies`, `properties`, `headers`, and the body three
/// ways: `body` (parsed JSON, or `null`), `body_raw` (the stored bytes as a string, exactly,
/// when they are UTF-8) and `body_hex` (only when they are not).
pub fn show_json(m: &DeadLetter, copies: usize) -> Value {
    let mut doc = entry_json(m);
    let utf8 = std::str::from_utf8(&m.body).ok();
    let fields = [
        ("copies", json!(copies)),
        ("properties", properties_json(&m.properties)),
        ("headers", headers_json(m)),
        (
            "body",
            serde_json::from_slice::<Value>(&m.body).unwrap_or(Value::Null),
        ),
        ("body_raw", json!(utf8)),
        (
            "body_hex",
            json!(utf8.is_none().then(|| hex::encode(&m.body))),
        ),
    ];
    if let Value::Object(map) = &mut doc {
        for (k, v) in fields {
            map.insert(k.into(), v);
        }
    }
    doc
}

/// `show`: properties, headers, then the body pretty-printed (keys and numbers as stored).
pub fn show_text(m: &DeadLetter, copies: usize) -> String {
    let mut out = format!(
        "id: {}{}\n",
        escape::line(&m.id),
        if m.id_derived { " (derived)" } else { "" }
    );
    if copies > 1 {
        out.push_str(&format!(
            "copies: {copies} identical messages share this id\n"
        ));
    }
    out.push_str("\nproperties:\n");
    if let Value::Object(props) = properties_json(&m.properties) {
        for (k, v) in props {
            out.push_str(&format!("  {k}: {}\n", escape::line(&scalar_text(&v))));
        }
    }
    out.push_str("\nheaders:\n");
    for (k, v) in m.headers().inner() {
        out.push_str(&format!(
            "  {}: {}\n",
            escape::line(k.as_str()),
            escape::line(&header_text(v))
        ));
    }
    out.push_str(&format!("\nbody ({} bytes):\n", m.body.len()));
    match std::str::from_utf8(&m.body) {
        Ok(text) if serde_json::from_str::<Value>(text).is_ok() => {
            out.push_str(&escape::block(&super::pretty::pretty_json(text)))
        }
        Ok(text) => out.push_str(&escape::block(text)),
        Err(_) => out.push_str(&format!("(not UTF-8) {}", hex::encode(&m.body))),
    }
    out.push('\n');
    out
}

/// A header value for `show`'s text: tables and arrays as compact JSON.
fn header_text(v: &AMQPValue) -> String {
    scalar_text(&header_value_json(v))
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn properties_json(p: &BasicProperties) -> Value {
    let mut map = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            map.insert(k.into(), v);
        }
    };
    let s = |v: &Option<lapin::types::ShortString>| v.as_ref().map(|v| json!(v.as_str()));
    put("content_type", s(p.content_type()));
    put("content_encoding", s(p.content_encoding()));
    put("delivery_mode", p.delivery_mode().map(|v| json!(v)));
    put("priority", p.priority().map(|v| json!(v)));
    put("correlation_id", s(p.correlation_id()));
    put("reply_to", s(p.reply_to()));
    put("expiration", s(p.expiration()));
    put("message_id", s(p.message_id()));
    put("timestamp", p.timestamp().map(|t| json!(timestamp_text(t))));
    put("type", s(p.kind()));
    put("user_id", s(p.user_id()));
    put("app_id", s(p.app_id()));
    put("cluster_id", s(p.cluster_id()));
    Value::Object(map)
}

fn headers_json(m: &DeadLetter) -> Value {
    Value::Object(
        m.headers()
            .inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), header_value_json(v)))
            .collect(),
    )
}

/// An AMQP header value as JSON: numbers and booleans as such, timestamps as RFC 3339
/// strings, tables as objects, arrays as arrays, byte arrays as hex.
pub fn header_value_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(x) => json!(x),
        AMQPValue::ShortShortUInt(x) => json!(x),
        AMQPValue::ShortInt(x) => json!(x),
        AMQPValue::ShortUInt(x) => json!(x),
        AMQPValue::LongInt(x) => json!(x),
        AMQPValue::LongUInt(x) => json!(x),
        AMQPValue::LongLongInt(x) => json!(x),
        AMQPValue::Float(x) => json!(x),
        AMQPValue::Double(x) => json!(x),
        AMQPValue::Timestamp(t) => json!(timestamp_text(*t)),
        AMQPValue::FieldArray(a) => {
            Value::Array(a.as_slice().iter().map(header_value_json).collect())
        }
        AMQPValue::FieldTable(t) => Value::Object(
            t.inner()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), header_value_json(v)))
                .collect(),
        ),
        AMQPValue::ByteArray(b) => json!(hex::encode(b.as_slice())),
        AMQPValue::Void => Value::Null,
        other => json!(value_to_string(other)),
    }
}

fn timestamp_text(t: u64) -> String {
    i64::try_from(t)
        .ok()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

/// One line of `replay`'s output.
pub fn replay_line(m: &DeadLetter, dry_run: bool) -> String {
    let verb = if dry_run { "would replay" } else { "replayed" };
    format!("{verb} {}", describe(m))
}

/// One line of `purge`'s output.
pub fn purge_line(m: &DeadLetter) -> String {
    format!("purged {}", describe(m))
}

/// `<id> <type> order <order> user <user>`.
pub fn describe(m: &DeadLetter) -> String {
    format!(
        "{}  {}  order {}  user {}",
        escape::line(&m.id),
        or_dash(m.notification_type.as_deref()),
        or_dash(m.order_id.as_deref()),
        or_dash(m.user_id.as_deref())
    )
}

/// `replay --json`: `dry_run`, `replayed` (entries), `unknown_ids`, `unroutable` (entries),
/// `remaining`.
pub fn replay_json(report: &ReplayReport) -> Value {
    json!({
        "dry_run": report.dry_run,
        "replayed": report.replayed.iter().map(entry_json).collect::<Vec<_>>(),
        "unknown_ids": report.unknown_ids,
        "unroutable": report.unroutable.iter().map(entry_json).collect::<Vec<_>>(),
        "remaining": report.remaining,
    })
}

/// `purge --json`: `purged` (entries), `unknown_ids`, `remaining`.
pub fn purge_json(report: &PurgeReport) -> Value {
    json!({
        "purged": report.purged.iter().map(entry_json).collect::<Vec<_>>(),
        "unknown_ids": report.unknown_ids,
        "remaining": report.remaining,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_outcome_names_the_status_once() {
        let mut m = DeadLetter::new(BasicProperties::default(), Vec::new());
        assert_eq!(last_outcome(&m), "-");
        m.last_status = Some(422);
        assert_eq!(last_outcome(&m), "HTTP 422");
        m.last_error = Some("HTTP 422: {\"error\":\"unknown_sku\"}".into());
        assert_eq!(last_outcome(&m), "HTTP 422: {\"error\":\"unknown_sku\"}");
        m.last_error = Some("unknown\nsku".into());
        assert_eq!(last_outcome(&m), "HTTP 422: unknown sku");
        m.last_status = None;
        m.last_error = Some("x".repeat(200));
        assert_eq!(last_outcome(&m).chars().count(), 80);
    }

    #[test]
    fn header_values_become_plain_json() {
        use lapin::types::{FieldArray, FieldTable, LongString};
        let mut t = FieldTable::default();
        t.insert(
            "reason".into(),
            AMQPValue::LongString(LongString::from("delivery_limit")),
        );
        t.insert("time".into(), AMQPValue::Timestamp(0));
        t.insert("count".into(), AMQPValue::LongLongInt(3));
        let v = AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(t)]));
        assert_eq!(
            header_value_json(&v),
            json!([{"reason": "delivery_limit", "time": "1970-01-01T00:00:00Z", "count": 3}])
        );
    }
}
