//! Xsolla's own payload examples (Xsolla's docs and PHP SDK tests; sources in
//! `docs/xsolla-protocol.md`), kept as files in `tests/fixtures/` and signed the way Xsolla signs
//! them.

use shared::signature;

/// The fixtures, by file stem.
pub const ALL: &[&str] = &[
    "order_paid_combined",
    "order_paid_separate",
    "order_canceled_separate",
    "payment",
    "refund",
    "user_validation",
];

/// The raw bytes of `tests/fixtures/<name>.json`.
pub fn load(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

/// A fixture with some JSON values replaced, e.g. `("/order/id", json!(42))`, re-serialised.
pub fn with(name: &str, changes: &[(&str, serde_json::Value)]) -> Vec<u8> {
    let mut value: serde_json::Value =
        serde_json::from_slice(&load(name)).expect("fixture is JSON");
    for (pointer, new) in changes {
        *value
            .pointer_mut(pointer)
            .unwrap_or_else(|| panic!("fixture {name} has no {pointer}")) = new.clone();
    }
    serde_json::to_vec(&value).expect("serialisable")
}

/// The `Authorization` header value Xsolla would send.
pub fn authorization(body: &[u8], secret: &str) -> String {
    signature::authorization_header(body, secret)
}
