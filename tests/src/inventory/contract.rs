//! The inventory contract's request body, parsed strictly.
//!
//! This is deliberately an independent reading of the contract (`deploy/INVENTORY_API.md`) rather
//! than a reuse of the worker's client types: if the worker drifts from the contract, the demo
//! service answers 400 and the suites notice.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The two effect endpoints of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `POST /grants`: give the order's items to the user.
    Grants,
    /// `POST /revocations`: take the order's items back.
    Revocations,
}

impl Endpoint {
    /// Path segment and key used in [`super::Snapshot::calls`]: `grants` or `revocations`.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Grants => "grants",
            Endpoint::Revocations => "revocations",
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The game's item identifier.
    pub sku: String,
    /// How many (at least 1).
    pub quantity: u64,
    /// Xsolla item type: `virtual_good`, `virtual_currency`, `game_key`, `bundle`, …
    /// `null` (or absent) when the webhook does not say, as for `purchase` items in
    /// payments mode; the type is informational, so it is not worth a dead letter.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

/// Body of `POST /grants` and `POST /revocations`, as the worker sends it.
///
/// Every field is required; `project_id` and `transaction_id` may be `null` but must be
/// present (the `deserialize_with` below switches off serde's "missing Option = None").
/// Unknown extra fields are ignored so the contract can grow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryRequest {
    /// Must equal the `Idempotency-Key` header.
    pub idempotency_key: String,
    /// Xsolla project id, `null` when unknown.
    #[serde(deserialize_with = "Option::deserialize")]
    pub project_id: Option<u64>,
    /// The game's user id (Xsolla `user.external_id` / `user.id`).
    pub user_id: String,
    /// Xsolla order id. Xsolla's ids are integers; the contract carries them as strings.
    pub order_id: String,
    /// Xsolla transaction id as a string, `null` when the webhook has none.
    #[serde(deserialize_with = "Option::deserialize")]
    pub transaction_id: Option<String>,
    /// What to grant or revoke.
    pub items: Vec<Item>,
    /// The webhook type that caused this call (`order_paid`, `order_canceled`, …).
    pub notification_type: String,
    /// Whether the payment was a sandbox (test) payment.
    pub sandbox: bool,
    /// When the ingress received the webhook, RFC 3339.
    pub received_at: String,
}

/// Why a request was refused with 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadRequest {
    pub code: &'static str,
    pub message: String,
}

impl BadRequest {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl InventoryRequest {
    /// Parses and checks a body against the `Idempotency-Key` header.
    pub(crate) fn parse(body: &[u8], header_key: &str) -> Result<Self, BadRequest> {
        let req: InventoryRequest = serde_json::from_slice(body)
            .map_err(|e| BadRequest::new("invalid_body", e.to_string()))?;
        req.check(header_key)?;
        Ok(req)
    }

    fn check(&self, header_key: &str) -> Result<(), BadRequest> {
        if self.idempotency_key != header_key {
            return Err(BadRequest::new(
                "idempotency_key_mismatch",
                "body idempotency_key differs from the Idempotency-Key header",
            ));
        }
        for (name, value) in [
            ("user_id", &self.user_id),
            ("order_id", &self.order_id),
            ("notification_type", &self.notification_type),
        ] {
            if value.trim().is_empty() {
                return Err(BadRequest::new(
                    "invalid_body",
                    format!("{name} must not be empty"),
                ));
            }
        }
        if OffsetDateTime::parse(&self.received_at, &Rfc3339).is_err() {
            return Err(BadRequest::new(
                "invalid_body",
                format!("received_at is not RFC 3339: {:?}", self.received_at),
            ));
        }
        for item in &self.items {
            if item.sku.is_empty() {
                return Err(BadRequest::new("invalid_body", "items[].sku is empty"));
            }
            if item.quantity == 0 {
                return Err(BadRequest::new(
                    "invalid_body",
                    format!("items[].quantity of {} is 0", item.sku),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> serde_json::Value {
        serde_json::json!({
            "idempotency_key": "k", "project_id": 1, "user_id": "u", "order_id": "7",
            "transaction_id": null, "items": [{"sku": "gold", "quantity": 2, "type": "virtual_currency"}],
            "notification_type": "order_paid", "sandbox": false, "received_at": "2025-01-01T00:00:00Z"
        })
    }

    #[test]
    fn accepts_the_contract_body() {
        let raw = serde_json::to_vec(&body()).unwrap();
        let req = InventoryRequest::parse(&raw, "k").unwrap();
        assert_eq!(req.items[0].kind.as_deref(), Some("virtual_currency"));
        assert_eq!(req.transaction_id, None);
    }

    #[test]
    fn item_type_may_be_null_or_absent() {
        let mut b = body();
        b["items"] = serde_json::json!([{"sku": "a", "quantity": 1, "type": null}, {"sku": "b", "quantity": 1}]);
        let raw = serde_json::to_vec(&b).unwrap();
        let req = InventoryRequest::parse(&raw, "k").unwrap();
        assert!(req.items.iter().all(|i| i.kind.is_none()));
    }

    #[test]
    fn nullable_fields_must_be_present() {
        let mut b = body();
        b.as_object_mut().unwrap().remove("transaction_id");
        let raw = serde_json::to_vec(&b).unwrap();
        let err = InventoryRequest::parse(&raw, "k").unwrap_err();
        assert!(err.message.contains("transaction_id"), "{err:?}");
    }

    #[test]
    fn rejects_integer_order_id_and_key_mismatch() {
        let mut b = body();
        b["order_id"] = serde_json::json!(7);
        let raw = serde_json::to_vec(&b).unwrap();
        assert_eq!(
            InventoryRequest::parse(&raw, "k").unwrap_err().code,
            "invalid_body"
        );
        let raw = serde_json::to_vec(&body()).unwrap();
        assert_eq!(
            InventoryRequest::parse(&raw, "other").unwrap_err().code,
            "idempotency_key_mismatch"
        );
    }
}
