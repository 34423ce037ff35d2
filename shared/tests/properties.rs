//! Property tests of the pure readers of hostile input: whatever the bytes, they answer
//! without panicking, and the pruned fulfilment reader answers exactly as the full tree.

use proptest::prelude::*;
use serde_json::{Map, Value};
use shared::{
    signature,
    webhook::{FulfilmentMode, parse_value, summarize},
};

/// Keys the readers look at (and a few they do not), so random trees hit their paths.
const KEYS: &[&str] = &[
    "notification_type",
    "order",
    "id",
    "mode",
    "user",
    "external_id",
    "public_id",
    "items",
    "sku",
    "sku_drm",
    "quantity",
    "type",
    "transaction",
    "dry_run",
    "settings",
    "project_id",
    "billing",
    "purchase",
    "virtual_items",
    "virtual_currency",
    "amount",
    "name",
    "other",
];

const TYPES: &[&str] = &[
    "order_paid",
    "order_canceled",
    "payment",
    "refund",
    "user_search",
    "",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e30f64..1e30).prop_map(Value::from),
        (1i64..5).prop_map(Value::from),
        prop::sample::select(TYPES).prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

/// A webhook-shaped object: a type the worker may fulfil, and random parts around it.
fn webhook() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(TYPES),
        prop::collection::vec((prop::sample::select(KEYS), tree()), 0..8),
    )
        .prop_map(|(kind, kv)| {
            let mut map: Map<String, Value> =
                kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            map.insert("notification_type".into(), Value::from(kind));
            Value::Object(map)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn readers_never_panic_on_any_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = summarize(&body);
        let _ = parse_value(&body);
        for mode in [FulfilmentMode::default(), FulfilmentMode { payments: true }] {
            let _ = mode.read(&body);
        }
    }

    #[test]
    fn the_pruned_read_equals_the_full_tree(v in webhook()) {
        let body = serde_json::to_vec(&v).unwrap();
        let full: Value = serde_json::from_slice(&body).unwrap();
        for mode in [FulfilmentMode::default(), FulfilmentMode { payments: true }] {
            prop_assert_eq!(mode.read(&body), mode.fulfilment(&full));
        }
        // The summary reads the same ids as the tree.
        if let Ok(s) = summarize(&body) {
            prop_assert_eq!(s.order_id, shared::webhook::id_at(&full, &["order", "id"]));
        }
        // The order events' view holds what the tree holds along every path they read.
        let view = shared::webhook::order_view(&body).unwrap();
        for path in [
            "/notification_type", "/order/id", "/order/amount", "/order/currency", "/order/mode",
            "/user/id", "/user/external_id", "/items", "/settings/project_id",
            "/billing/settings/project_id",
        ] {
            prop_assert_eq!(view.pointer(path), full.pointer(path), "{}", path);
        }
    }

    #[test]
    fn a_granted_quantity_is_always_a_positive_integer_from_the_body(v in webhook()) {
        let body = serde_json::to_vec(&v).unwrap();
        for mode in [FulfilmentMode::default(), FulfilmentMode { payments: true }] {
            if let Ok(f) = mode.read(&body) {
                prop_assert!(f.items.iter().all(|i| i.quantity > 0));
            }
        }
    }

    #[test]
    fn signature_headers_parse_only_in_the_one_exact_form(header in ".{0,60}") {
        let parsed = signature::parse_header(&header);
        let exact = header.strip_prefix("Signature ").is_some_and(|h| {
            h.len() == 40 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        prop_assert_eq!(parsed.is_ok(), exact);
    }

    #[test]
    fn a_well_formed_signature_header_round_trips(bytes in any::<[u8; 20]>()) {
        let header = format!("Signature {}", hex::encode(bytes));
        prop_assert_eq!(signature::parse_header(&header), Ok(bytes));
    }
}
