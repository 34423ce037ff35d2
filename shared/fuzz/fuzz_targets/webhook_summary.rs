//! `shared::webhook::summarize` (the edge's head reader) on any bytes. Never panics; when it
//! accepts a body, that body is one JSON object whose `notification_type` is the string the
//! summary names, and the ids it read are the ones the full tree holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shared::webhook::{id_at, summarize};

fuzz_target!(|data: &[u8]| {
    let Ok(summary) = summarize(data) else {
        return;
    };
    let v: Value = serde_json::from_slice(data).unwrap_or_else(|e| {
        panic!("summarize accepted a body that is not JSON ({e}): {summary:?}")
    });
    let object = v.as_object().expect("summarize accepted a non-object");
    assert_eq!(
        object.get("notification_type").and_then(Value::as_str),
        Some(summary.notification_type.as_str())
    );
    assert!(!summary.notification_type.is_empty() && summary.notification_type.len() <= 64);
    assert_eq!(summary.order_id, id_at(&v, &["order", "id"]));
    assert_eq!(
        summary.user_id,
        id_at(&v, &["user", "external_id"]).or_else(|| id_at(&v, &["user", "id"]))
    );
    assert_eq!(summary.account_id, id_at(&v, &["user", "id"]));
    assert_eq!(
        summary.transaction_id,
        id_at(&v, &["billing", "transaction", "id"]).or_else(|| id_at(&v, &["transaction", "id"]))
    );
    assert!(
        summary.dedup_id.len() <= 255,
        "AMQP message_id is a short string"
    );
});
