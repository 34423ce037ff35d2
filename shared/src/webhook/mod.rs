//! What the bridge reads out of an Xsolla webhook body.
//!
//! The body itself is never re-serialised: it travels through RabbitMQ byte for byte so any
//! consumer can re-verify the signature. This module only *reads* it: the summary the
//! ingress needs (type, ids for logs and the dedup id) and the fulfilment the worker needs
//! (who gets which items for which order), from both of Xsolla's delivery modes
//! (`docs/xsolla-protocol.md` §3).

use serde_json::Value;
use sha1::{Digest, Sha1};

mod fulfilment;
mod pruned;

pub use fulfilment::{Effect, Fulfilment, FulfilmentMode, Item};

/// Why a body cannot be read as a webhook (answered `400 INVALID_PARAMETER` at the edge, or
/// dead-lettered at once by the worker).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("body is not a JSON object: {0}")]
    NotJson(String),
    #[error("`notification_type` is missing or not a non-empty string")]
    NoNotificationType,
    #[error("`notification_type` must be at most 64 letters, digits, `_`, `-` or `.`")]
    BadNotificationType,
    #[error("`{0}` is missing or not an id (string or integer)")]
    MissingField(&'static str),
    #[error("no items to fulfil (`{0}` is empty or missing)")]
    NoItems(&'static str),
    /// An item line names no SKU: `field` is its path (`items[0].sku`).
    #[error("`{field}` is missing or not a non-empty string")]
    BadSku { field: String },
    /// An item's count is absent or not a positive integer. Never guessed: a paid order
    /// granted as 1 of something the player bought 50 of is money lost, so it is parked.
    #[error("`{field}` {problem}")]
    BadQuantity { field: String, problem: String },
    #[error("notification type `{0}` is not fulfilled by this worker")]
    NotFulfilled(String),
}

/// The parts of a webhook the ingress logs, keys on and answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub notification_type: String,
    pub order_id: Option<String>,
    pub transaction_id: Option<String>,
    /// The player: `user.external_id` (order webhooks), else `user.id`.
    pub user_id: Option<String>,
    /// `user.id`, what `user_validation` asks about.
    pub account_id: Option<String>,
    /// `user.public_id`, else `user.id`: what `user_search` asks about.
    pub search_id: Option<String>,
    pub project_id: Option<u64>,
    /// Stable across Xsolla's re-sends of the same event; used as the AMQP `message_id`.
    pub dedup_id: String,
}

/// Parses `body` as a JSON object that names its `notification_type`, into both the full
/// tree (the worker reads items from it) and the [`Summary`].
pub fn parse(body: &[u8]) -> Result<(Value, Summary), WebhookError> {
    let summary = summarize(body)?;
    Ok((parse_value(body)?, summary))
}

/// Parses `body` as a JSON object into the full tree only (what the worker reads items
/// from), without the [`Summary`]: one pass over the bytes instead of two.
pub fn parse_value(body: &[u8]) -> Result<Value, WebhookError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::NotJson(e.to_string()))?;
    if !value.is_object() {
        return Err(WebhookError::NotJson("top level is not an object".into()));
    }
    Ok(value)
}

/// Reads only the [`Summary`] (what the ingress needs), checking that `body` is one
/// well-formed JSON object with a usable `notification_type`.
pub fn summarize(body: &[u8]) -> Result<Summary, WebhookError> {
    // Checked first, so an array or a scalar is refused as such, not as a missing type.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(WebhookError::NotJson("top level is not an object".into()));
    }
    // One pass: the pruned reader checks the whole body as a `Value` would (UTF-8, `\u`
    // surrogates, number range, nesting) and keeps only the paths the summary reads, so
    // the ids below are read exactly as `id_at` reads them on the full tree.
    let head =
        pruned::parse(body, &pruned::SUMMARY).map_err(|e| WebhookError::NotJson(e.to_string()))?;
    let notification_type = match head.get("notification_type") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        _ => return Err(WebhookError::NoNotificationType),
    };
    // It becomes an AMQP routing key and a metrics label: keep it short and plain.
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
    if notification_type.len() > 64 || !notification_type.bytes().all(plain) {
        return Err(WebhookError::BadNotificationType);
    }
    let order_id = id_at(&head, &["order", "id"]);
    let transaction_id = transaction_id(&head);
    let project_id = project_id(&head);
    let account_id = id_at(&head, &["user", "id"]);
    let dedup_id = dedup_id(
        &notification_type,
        order_id.as_deref(),
        transaction_id.as_deref(),
        body,
    );
    Ok(Summary {
        order_id,
        transaction_id,
        user_id: id_at(&head, &["user", "external_id"]).or_else(|| account_id.clone()),
        search_id: id_at(&head, &["user", "public_id"]).or_else(|| account_id.clone()),
        account_id,
        project_id,
        dedup_id,
        notification_type,
    })
}

/// The parts of an order webhook an order event shows (type, order, user, items, project),
/// with the same shape as the full tree along those paths; the rest is checked as a
/// `Value` would check it and dropped. `None` if the body is not JSON.
pub fn order_view(body: &[u8]) -> Option<Value> {
    pruned::parse(body, &pruned::ORDER_VIEW).ok()
}

/// The `order.id` an *unverified* body claims, for the log line that refuses it (logged as
/// `claimed_order_id`): read without building a tree, and kept only when it looks like an id
/// (at most 64 ASCII letters, digits, `-`, `_`, `.` or `:`), so that nothing else a sender
/// writes there (an e-mail address, terminal escapes, a megabyte) reaches the log. `None`
/// for anything else, bodies that are not JSON included.
pub fn claimed_order_id(body: &[u8]) -> Option<String> {
    let claim = pruned::parse(body, &pruned::CLAIM).ok()?;
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':');
    id_at(&claim, &["order", "id"]).filter(|id| id.len() <= 64 && id.bytes().all(plain))
}

/// `order_paid:<order>`, `<type>:tx:<transaction>`, else `<type>:sha1:<body hash>` (the
/// body's own hash is stable across Xsolla's re-sends of an event with no natural id).
fn dedup_id(kind: &str, order: Option<&str>, transaction: Option<&str>, body: &[u8]) -> String {
    let id = match (kind, order, transaction) {
        ("order_paid" | "order_canceled", Some(order), _) => format!("{kind}:{order}"),
        (_, _, Some(tx)) => format!("{kind}:tx:{tx}"),
        _ => format!("{kind}:sha1:{}", hex::encode(Sha1::digest(body))),
    };
    // AMQP's message_id is a short string (≤ 255 bytes); absurdly long ids are hashed.
    if id.len() > 200 {
        format!("{kind}:sha1:{}", hex::encode(Sha1::digest(id.as_bytes())))
    } else {
        id
    }
}

/// Reads an id that Xsolla sends as a string in some payloads and an integer in others.
/// Integers are read as such, never through `f64`, so 19-digit ids survive.
pub fn id_at(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    match cur {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

/// `billing.transaction.id` in combined mode, `transaction.id` in separate mode.
pub(crate) fn transaction_id(v: &Value) -> Option<String> {
    id_at(v, &["billing", "transaction", "id"]).or_else(|| id_at(v, &["transaction", "id"]))
}

pub(crate) fn project_id(v: &Value) -> Option<u64> {
    let from = |path: &[&str]| id_at(v, path).and_then(|s| s.parse().ok());
    from(&["billing", "settings", "project_id"]).or_else(|| from(&["settings", "project_id"]))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every file in `tests/fixtures` (the `tests` crate's list cannot be used from here).
    const FIXTURES: [&str; 6] = [
        "order_paid_combined",
        "order_paid_separate",
        "order_canceled_separate",
        "payment",
        "refund",
        "user_validation",
    ];

    /// A payload of `tests/fixtures` (Xsolla's examples), for this crate's unit tests.
    pub(crate) fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../tests/fixtures/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(path).unwrap()
    }

    fn fulfil(name: &str, mode: FulfilmentMode) -> Result<Fulfilment, WebhookError> {
        let (v, _) = parse(&fixture(name)).unwrap();
        mode.fulfilment(&v)
    }

    #[test]
    fn reads_combined_mode_order_paid() {
        let f = fulfil("order_paid_combined", FulfilmentMode::default()).unwrap();
        assert_eq!(f.effect, Effect::Grant);
        assert_eq!(f.user_id, "id_xsolla_login_1");
        assert_eq!(f.order_id.as_deref(), Some("1"));
        assert_eq!(f.transaction_id.as_deref(), Some("1"));
        assert_eq!(f.project_id, Some(18404));
        assert_eq!(f.items.len(), 3);
        assert_eq!(f.items[0].sku, "com.xsolla.item_1");
        assert_eq!(f.items[0].quantity, 3);
        assert_eq!(f.items[2].quantity, 1500);
        assert_eq!(f.idempotency_key(), "xsolla:order:1:grant");
    }

    #[test]
    fn reads_separate_mode_order_paid_and_canceled() {
        let paid = fulfil("order_paid_separate", FulfilmentMode::default()).unwrap();
        assert_eq!(paid.transaction_id, None);
        assert_eq!(paid.project_id, None);
        assert_eq!(paid.items[2].sku, "gold");
        let canceled = fulfil("order_canceled_separate", FulfilmentMode::default()).unwrap();
        assert_eq!(canceled.effect, Effect::Revoke);
        assert_eq!(canceled.idempotency_key(), "xsolla:order:1:revoke");
    }

    #[test]
    fn payments_are_fulfilled_only_in_payments_mode() {
        assert_eq!(
            fulfil("payment", FulfilmentMode::default()),
            Err(WebhookError::NotFulfilled("payment".into()))
        );
        let mode = FulfilmentMode { payments: true };
        let grant = fulfil("payment", mode).unwrap();
        assert_eq!(grant.effect, Effect::Grant);
        assert_eq!(grant.user_id, "1234567");
        assert!(grant.sandbox, "dry_run = 1 is a sandbox payment");
        let skus: Vec<_> = grant.items.iter().map(|i| i.sku.as_str()).collect();
        assert_eq!(skus, ["test_item1", "Coins"]);
        assert_eq!(grant.idempotency_key(), "xsolla:transaction:1:grant");
        assert_eq!(fulfil("refund", mode).unwrap().effect, Effect::Revoke);
    }

    #[test]
    fn summary_keys_orders_by_type_and_order_id() {
        let (_, s) = parse(&fixture("order_paid_combined")).unwrap();
        assert_eq!(s.dedup_id, "order_paid:1");
        let (_, s) = parse(&fixture("payment")).unwrap();
        assert_eq!(s.dedup_id, "payment:tx:1");
        let (_, s) = parse(&fixture("user_validation")).unwrap();
        assert_eq!(s.user_id.as_deref(), Some("1234567"));
        assert!(s.dedup_id.starts_with("user_validation:sha1:"));
    }

    #[test]
    fn rejects_bodies_that_are_not_webhooks() {
        assert!(matches!(parse(b"not json"), Err(WebhookError::NotJson(_))));
        assert!(matches!(parse(b"[1]"), Err(WebhookError::NotJson(_))));
        assert_eq!(parse(b"{}").unwrap_err(), WebhookError::NoNotificationType);
        assert_eq!(
            parse(br#"{"notification_type":""}"#).unwrap_err(),
            WebhookError::NoNotificationType
        );
        assert_eq!(
            parse(br#"{"notification_type":"a#b"}"#).unwrap_err(),
            WebhookError::BadNotificationType
        );
    }

    #[test]
    fn reads_fields_of_unexpected_types_as_absent() {
        let body = br#"{"notification_type":"order_paid","order":"x","user":{"id":1.5,"external_id":null},"billing":[1],"items":[{"a":{"b":[]}}]}"#;
        let s = summarize(body).unwrap();
        assert_eq!(
            (s.order_id, s.user_id, s.transaction_id),
            (None, None, None)
        );
        let s =
            summarize(br#"{"notification_type":"user_search","user":{"public_id":"p","id":7}}"#)
                .unwrap();
        assert_eq!(s.search_id.as_deref(), Some("p"));
        assert_eq!(s.account_id.as_deref(), Some("7"));
        assert!(matches!(
            summarize(br#"{"notification_type":"a""#),
            Err(WebhookError::NotJson(_))
        ));
        assert!(matches!(
            summarize(br#"{"notification_type":"a"} x"#),
            Err(WebhookError::NotJson(_))
        ));
        assert_eq!(
            summarize(br#"{"notification_type":7}"#).unwrap_err(),
            WebhookError::NoNotificationType
        );
    }

    #[test]
    fn summary_agrees_with_the_value_tree_on_every_fixture() {
        for name in FIXTURES {
            let body = fixture(name);
            let s = summarize(&body).unwrap();
            let (v, _) = parse(&body).unwrap();
            assert_eq!(s.order_id, id_at(&v, &["order", "id"]), "{name}");
            assert_eq!(
                s.user_id,
                id_at(&v, &["user", "external_id"]).or_else(|| id_at(&v, &["user", "id"])),
                "{name}"
            );
            assert_eq!(s.project_id, project_id(&v), "{name}");
            assert_eq!(s.transaction_id, transaction_id(&v), "{name}");
        }
    }

    /// `FulfilmentMode::read` (pruned tree) must answer exactly as `fulfilment` on the
    /// full tree: on every fixture, and on bodies built to hit the corners of the readers
    /// (keys present but null, non-objects where objects are expected, repeated keys…).
    #[test]
    fn pruned_read_agrees_with_the_full_tree() {
        let mut bodies: Vec<Vec<u8>> = FIXTURES.iter().map(|name| fixture(name)).collect();
        let corners = [
            r#"{"notification_type":"order_paid","order":{"id":7,"mode":"sandbox"},"user":{"external_id":"u"},"items":[{"sku":null,"sku_drm":"d","quantity":2}]}"#,
            r#"{"notification_type":"order_paid","order":{"id":7},"user":{"id":"u"},"items":[{"sku_drm":"d","quantity":2.5,"type":"game"}]}"#,
            r#"{"notification_type":"order_paid","order":{"id":8,"mode":"sandbox"},"user":{"id":"u"},"items":[{"sku":"a"}]}"#,
            r#"{"notification_type":"order_paid","order":{"id":"7"},"user":"u","items":[{"sku":"a"}]}"#,
            r#"{"notification_type":"order_paid","order":[1],"user":{"id":"u"},"items":[{"sku":"a"}]}"#,
            r#"{"notification_type":"order_paid","order":{"id":1},"user":{"id":"u"},"items":{"sku":"a"}}"#,
            r#"{"notification_type":"order_paid","order":{"id":1},"user":{"id":"u"},"items":["a",{"sku":"b"}]}"#,
            r#"{"notification_type":"order_paid","order":{"id":1},"user":{"id":"u"},"items":[]}"#,
            r#"{"notification_type":"order_canceled","order":{"id":1},"user":{"id":"u"},"items":[{"sku":"a","quantity":0}]}"#,
            r#"{"notification_type":"order_paid","order":{"id":1},"order":{"id":2},"user":{"id":"u"},"items":[{"sku":"a"}],"billing":[{"transaction":{"id":3}}]}"#,
            r#"{"notification_type":"order_paid","order":{"id":9223372036854775808},"user":{"id":"u"},"items":[{"sku":"a","quantity":9223372036854775808}],"settings":{"project_id":"18404"}}"#,
            r#"{"notification_type":"order_paid","order":{"id":5},"user":{"id":"u"},"items":[{"sku":"a"}],"billing":{"settings":{"project_id":1},"transaction":{"id":"t"}}}"#,
            r#"{"notification_type":"payment","transaction":{"id":5,"dry_run":1},"user":{"id":"u"},"purchase":{"virtual_currency":null}}"#,
            r#"{"notification_type":"payment","transaction":{"id":5},"user":{"id":"u"},"purchase":{"virtual_currency":{"name":"gold","quantity":10},"virtual_items":{"items":[{"sku":"s","amount":2}]}}}"#,
            r#"{"notification_type":"refund","transaction":{"id":5},"user":{"id":"u"},"purchase":{"virtual_items":"x"}}"#,
            r#"{"notification_type":"payment","billing":{"transaction":{"id":6}},"user":{"id":"u"},"purchase":{"virtual_currency":{"sku":"c","quantity":1}}}"#,
            r#"{"notification_type":"order_paid","order":{"id":1},"user":{"id":"u"},"items":[{"sku":"a","quantity":"50"}]}"#,
            r#"{"notification_type":"order_paid","order":{"id":1},"user":{"id":"u"},"items":[{"sku":"a","quantity":1e30}]}"#,
            r#"{"notification_type":"order_paid","order":{"id":1},"user":{"id":"u"},"items":[{"sku":"a","quantity":null},{"sku":"b","quantity":true}]}"#,
            r#"{"notification_type":"order_paid","order":{"id":1},"user":{"id":"u"},"items":[{"sku":"a","quantity":-1}]}"#,
            r#"{"notification_type":"payment","transaction":{"id":5},"user":{"id":"u"},"purchase":{"virtual_items":{"items":[{"sku":"s","amount":"2"}]}}}"#,
            r#"{"notification_type":"payment","transaction":{"id":5},"user":{"id":"u"},"purchase":{"virtual_currency":{"name":"gold","quantity":2.5}}}"#,
            r#"{"notification_type":"payment","transaction":{"id":5},"user":{"id":"u"},"purchase":{"virtual_currency":{"name":"gold"}}}"#,
            r#"{"notification_type":7}"#,
            r#"{"notification_type":""}"#,
            r#"{"notification_type":"user_validation","user":{"id":"u"}}"#,
            r#"{}"#,
        ];
        bodies.extend(corners.iter().map(|b| b.as_bytes().to_vec()));
        for body in &bodies {
            let full = parse_value(body).expect("well-formed object");
            for mode in [FulfilmentMode::default(), FulfilmentMode { payments: true }] {
                assert_eq!(
                    mode.read(body),
                    mode.fulfilment(&full),
                    "{}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        for bad in [&b"[1,2]"[..], b"\"x\"", b"{\"a\":", b"{} trailing", b""] {
            let mode = FulfilmentMode::default();
            assert!(
                matches!(mode.read(bad), Err(WebhookError::NotJson(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
            assert!(parse_value(bad).is_err());
        }
    }

    /// Every spelling of a count that is not a plain positive integer, as JSON text.
    const BAD_COUNTS: [&str; 12] = [
        r#""50""#,
        "2.5",
        "1e30",
        "9223372036854775808",
        "null",
        "true",
        "0",
        "-3",
        "3.0",
        "[]",
        "{}",
        r#""1\u001b[31m""#,
    ];

    fn order_with(item: &str) -> Vec<u8> {
        format!(r#"{{"notification_type":"order_paid","order":{{"id":5}},"user":{{"external_id":"u"}},"items":[{{"sku":"a","quantity":1}},{item}]}}"#).into_bytes()
    }

    fn payment_with(purchase: &str) -> Vec<u8> {
        format!(r#"{{"notification_type":"payment","transaction":{{"id":5}},"user":{{"id":"u"}},"purchase":{purchase}}}"#).into_bytes()
    }

    fn refused(body: &[u8], mode: FulfilmentMode) -> (String, String) {
        let full = mode.fulfilment(&parse_value(body).unwrap());
        assert_eq!(mode.read(body), full, "pruned == full");
        match full {
            Err(WebhookError::BadQuantity { field, problem }) => (field, problem),
            other => panic!("{other:?} for {}", String::from_utf8_lossy(body)),
        }
    }

    #[test]
    fn refuses_order_quantities_that_are_not_positive_integers() {
        for bad in BAD_COUNTS {
            let body = order_with(&format!(r#"{{"sku":"b","quantity":{bad}}}"#));
            let (field, _) = refused(&body, FulfilmentMode::default());
            assert_eq!(field, "items[1].quantity", "{bad}");
        }
        let err = FulfilmentMode::default()
            .read(&order_with(r#"{"sku":"b","quantity":"50"}"#))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"`items[1].quantity` is "50", not a positive integer"#
        );
        let (_, problem) = refused(
            &order_with(r#"{"sku":"b","quantity":9223372036854775808}"#),
            FulfilmentMode::default(),
        );
        assert!(problem.contains("9223372036854775807"), "{problem}");
        let (_, problem) = refused(
            &order_with(r#"{"sku":"b","quantity":"1\u001b[31m"}"#),
            FulfilmentMode::default(),
        );
        assert!(
            !problem.contains('\u{1b}'),
            "the quoted value stays escaped: {problem}"
        );
    }

    #[test]
    fn an_absent_quantity_is_refused_since_xsolla_documents_no_default() {
        let (field, problem) = refused(&order_with(r#"{"sku":"b"}"#), FulfilmentMode::default());
        assert_eq!(field, "items[1].quantity");
        assert!(problem.contains("missing"), "{problem}");
    }

    #[test]
    fn a_huge_quoted_value_is_cut_short_in_the_error() {
        let long = "9".repeat(5000);
        let (_, problem) = refused(
            &order_with(&format!(r#"{{"sku":"b","quantity":"{long}"}}"#)),
            FulfilmentMode::default(),
        );
        assert!(problem.len() < 100, "{problem}");
    }

    #[test]
    fn accepts_the_largest_count() {
        let body = order_with(r#"{"sku":"b","quantity":9223372036854775807}"#);
        let f = FulfilmentMode::default().read(&body).unwrap();
        assert_eq!(f.items[1].quantity, i64::MAX);
    }

    #[test]
    fn refuses_payment_amounts_and_currency_quantities_that_are_not_positive_integers() {
        let mode = FulfilmentMode { payments: true };
        for bad in BAD_COUNTS {
            let body = payment_with(&format!(
                r#"{{"virtual_items":{{"items":[{{"sku":"s","amount":{bad}}}]}}}}"#
            ));
            let (field, _) = refused(&body, mode);
            assert_eq!(field, "purchase.virtual_items.items[0].amount", "{bad}");
            let body = payment_with(&format!(
                r#"{{"virtual_currency":{{"name":"gold","quantity":{bad}}}}}"#
            ));
            let (field, _) = refused(&body, mode);
            assert_eq!(field, "purchase.virtual_currency.quantity", "{bad}");
        }
        let (field, _) = refused(
            &payment_with(r#"{"virtual_items":{"items":[{"sku":"s"}]}}"#),
            mode,
        );
        assert_eq!(field, "purchase.virtual_items.items[0].amount");
        let (field, _) = refused(
            &payment_with(r#"{"virtual_currency":{"name":"gold"}}"#),
            mode,
        );
        assert_eq!(field, "purchase.virtual_currency.quantity");
    }

    #[test]
    fn names_the_item_without_a_sku() {
        let body = order_with(r#"{"sku":"","quantity":1}"#);
        assert_eq!(
            FulfilmentMode::default().read(&body),
            Err(WebhookError::BadSku {
                field: "items[1].sku".into()
            })
        );
    }

    /// Found by fuzzing (`shared/fuzz`): both readers skipped the fields they do not read
    /// with serde's `IgnoredAny`, which serde_json does not check as a `Value` does, so
    /// bodies that are not JSON a `Value` accepts were summarised at the edge and fulfilled
    /// by the worker (where `read` must answer as `fulfilment` on the full tree does).
    #[test]
    fn fields_not_read_are_still_checked_as_json() {
        let order = r#""notification_type":"order_paid","order":{"id":1},"user":{"id":"u"},"items":[{"sku":"a","quantity":1}]"#;
        let bodies: [&[u8]; 5] = [
            br#""x":1e400"#,
            br#""x":"\ud800""#,
            br#""x":{"\udc00":1}"#,
            b"\"x\":\"\xff\"",
            b"\"x\":[\"a\",\"\xc3\"]",
        ];
        let deep = format!(r#""x":{}1{}"#, "[".repeat(200), "]".repeat(200));
        for extra in bodies.iter().copied().chain([deep.as_bytes()]) {
            let mut body = format!("{{{order},").into_bytes();
            body.extend_from_slice(extra);
            body.push(b'}');
            let shown = String::from_utf8_lossy(&body);
            assert!(parse_value(&body).is_err(), "{shown}");
            assert!(
                matches!(summarize(&body), Err(WebhookError::NotJson(_))),
                "{shown}"
            );
            for mode in [FulfilmentMode::default(), FulfilmentMode { payments: true }] {
                assert!(
                    matches!(mode.read(&body), Err(WebhookError::NotJson(_))),
                    "{shown}"
                );
            }
        }
        let ok = format!(r#"{{{order},"x":{{"y":["\ud83d\ude00",1e300,"é"]}}}}"#);
        assert!(summarize(ok.as_bytes()).is_ok());
        assert!(FulfilmentMode::default().read(ok.as_bytes()).is_ok());
    }

    #[test]
    fn reads_a_claimed_order_id_only_when_it_looks_like_one() {
        let claim = |body: &str| claimed_order_id(body.as_bytes());
        assert_eq!(
            claim(r#"{"order":{"id":571134},"x":[1,{"y":2}]}"#).as_deref(),
            Some("571134")
        );
        assert_eq!(
            claim(r#"{"order":{"id":"ord-7:a_b.c"}}"#).as_deref(),
            Some("ord-7:a_b.c")
        );
        assert_eq!(
            claimed_order_id(&fixture("order_paid_combined")).as_deref(),
            Some("1")
        );
        for refused in [
            r#"{"order":{"id":"player@example.com"}}"#,
            "{\"order\":{\"id\":\"1\\u001b[31m\"}}",
            r#"{"order":{"id":"1 2"}}"#,
            r#"{"order":{"id":1.5}}"#,
            r#"{"order":"1"}"#,
            r#"{"user":{"id":"1"}}"#,
            r#"not json"#,
            r#"{"order":{"id":1}"#,
        ] {
            assert_eq!(claim(refused), None, "{refused}");
        }
        assert_eq!(
            claim(&format!(r#"{{"order":{{"id":"{}"}}}}"#, "9".repeat(65))),
            None
        );
    }

    #[test]
    fn keeps_nineteen_digit_ids_exact() {
        let body = br#"{"notification_type":"payment","transaction":{"id":1234567890123456789}}"#;
        let (_, s) = parse(body).unwrap();
        assert_eq!(s.transaction_id.as_deref(), Some("1234567890123456789"));
    }

    #[test]
    fn order_without_items_or_user_is_unfulfillable() {
        let body = br#"{"notification_type":"order_paid","order":{"id":5},"user":{"external_id":"u"},"items":[]}"#;
        let (v, _) = parse(body).unwrap();
        assert_eq!(
            FulfilmentMode::default().fulfilment(&v),
            Err(WebhookError::NoItems("items"))
        );
        let body = br#"{"notification_type":"order_paid","order":{"id":5},"items":[{"sku":"a","quantity":1}]}"#;
        let (v, _) = parse(body).unwrap();
        assert_eq!(
            FulfilmentMode::default().fulfilment(&v),
            Err(WebhookError::MissingField("user.external_id"))
        );
    }
}
