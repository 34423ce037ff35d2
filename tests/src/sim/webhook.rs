//! Building signed webhooks from Xsolla's own payload examples (`tests/fixtures/`), with the
//! user, item, order id and delivery mode overridden.
//!
//! A [`Template`] is built once and stamps out bodies that differ only in the event's id, by
//! splicing digits between pre-serialised byte slices: the load tool makes thousands of
//! bodies a second and must not spend the machine's CPU re-serialising JSON.

use bytes::Bytes;
use serde_json::{Value, json};
use shared::signature;

use crate::fixtures;

/// The webhook types the simulator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Kind {
    /// Items paid: the worker grants them.
    OrderPaid,
    /// Order canceled (refunded): the worker takes the items back.
    OrderCanceled,
    /// Payment details (separate-delivery accounts, sent before `order_paid`).
    Payment,
    /// Refund details (separate-delivery accounts, sent before `order_canceled`).
    Refund,
    /// Live check that a user exists, answered synchronously.
    UserValidation,
}

impl Kind {
    /// The `notification_type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::OrderPaid => "order_paid",
            Kind::OrderCanceled => "order_canceled",
            Kind::Payment => "payment",
            Kind::Refund => "refund",
            Kind::UserValidation => "user_validation",
        }
    }

    /// `order_paid` and `order_canceled`, which share Xsolla's 20-send schedule and
    /// explicit no-retry list (`docs/xsolla-protocol.md` §2, §4).
    pub fn is_order(self) -> bool {
        matches!(self, Kind::OrderPaid | Kind::OrderCanceled)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Xsolla's two delivery modes (`docs/xsolla-protocol.md` §3): accounts registered after 2025-01-22
/// get payment data nested under `billing` in `order_paid`/`order_canceled`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// One webhook per event, payment data under `billing`.
    #[default]
    Combined,
    /// `payment`/`refund` sent first, then `order_paid`/`order_canceled` without `billing`.
    Separate,
}

/// What to change in the fixture. `None` keeps the fixture's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `user.external_id` (orders) or `user.id` (payment, refund, user_validation).
    pub user: Option<String>,
    /// With `sku` or `quantity`, the webhook carries exactly one item (the fixture's first
    /// one, renamed and recounted), so what the game should grant is unambiguous.
    pub sku: Option<String>,
    pub quantity: Option<u64>,
    /// `order.id` (orders; in combined mode also `billing.transaction.id`) or
    /// `transaction.id` (payment, refund).
    pub order_id: Option<u64>,
    pub mode: Mode,
}

/// Why a webhook cannot be built as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("--{option} does not apply to {kind}")]
    NotApplicable { option: &'static str, kind: Kind },
    #[error("--quantity must be at least 1")]
    ZeroQuantity,
}

/// A body ready to send: the raw bytes and Xsolla's `Authorization` header for them.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub kind: Kind,
    /// The event's id as it appears in the body (order, transaction or user id).
    pub id: String,
    pub body: Bytes,
    pub authorization: String,
}

/// Stands in for the varying id while the template is serialised; long and odd enough
/// never to occur in a fixture.
const SENTINEL: u64 = 918_273_645_546_372_819;

/// Bodies of one kind with fixed overrides, differing only in the event's id.
#[derive(Debug, Clone)]
pub struct Template {
    kind: Kind,
    /// Serialised body split at every occurrence of the id.
    parts: Vec<Vec<u8>>,
    /// The id used when none is given: the override or the fixture's.
    default_id: String,
}

impl Template {
    /// Prepares bodies of `kind` with `overrides` applied. `overrides.order_id` only sets
    /// the default id: [`Template::body`] can still stamp any other.
    pub fn new(kind: Kind, overrides: &Overrides) -> Result<Template, BuildError> {
        let (mut value, id_paths, default_id) = base(kind, overrides)?;
        let sentinel = if kind == Kind::UserValidation {
            Value::String(SENTINEL.to_string())
        } else {
            json!(SENTINEL)
        };
        for path in &id_paths {
            if let Some(slot) = value.pointer_mut(path) {
                *slot = sentinel.clone();
            }
        }
        let bytes = serde_json::to_vec(&value).expect("a JSON value serialises");
        let needle = SENTINEL.to_string().into_bytes();
        Ok(Template {
            kind,
            parts: split(&bytes, &needle),
            default_id,
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The body with `id` in every id position (digits for orders and transactions).
    pub fn body(&self, id: &str) -> Vec<u8> {
        self.parts.join(id.as_bytes())
    }

    /// The body with the default id, signed with `secret`.
    pub fn signed_default(&self, secret: &str) -> Webhook {
        self.signed(&self.default_id.clone(), secret)
    }

    /// The body with `id`, signed with `secret`.
    pub fn signed(&self, id: &str, secret: &str) -> Webhook {
        let body = self.body(id);
        Webhook {
            kind: self.kind,
            id: id.to_owned(),
            authorization: signature::authorization_header(&body, secret),
            body: Bytes::from(body),
        }
    }
}

/// One body of `kind` with `overrides`, signed with `secret`.
pub fn build(kind: Kind, overrides: &Overrides, secret: &str) -> Result<Webhook, BuildError> {
    Ok(Template::new(kind, overrides)?.signed_default(secret))
}

fn split(haystack: &[u8], needle: &[u8]) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut rest = haystack;
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        parts.push(rest[..at].to_vec());
        rest = &rest[at + needle.len()..];
    }
    parts.push(rest.to_vec());
    parts
}

fn load(name: &str) -> Value {
    serde_json::from_slice(&fixtures::load(name)).expect("fixtures are JSON")
}

/// The fixture with overrides applied, the JSON pointers of its id, and the default id.
fn base(kind: Kind, o: &Overrides) -> Result<(Value, Vec<&'static str>, String), BuildError> {
    if o.quantity == Some(0) {
        return Err(BuildError::ZeroQuantity);
    }
    match kind {
        Kind::OrderPaid | Kind::OrderCanceled => Ok(order(kind, o)),
        Kind::Payment | Kind::Refund => {
            let mut v = load(kind.as_str());
            if let Some(user) = &o.user {
                v["user"]["id"] = json!(user);
            }
            if o.sku.is_some() || o.quantity.is_some() {
                let first = &v["purchase"]["virtual_items"]["items"][0];
                let sku = o
                    .sku
                    .clone()
                    .map_or_else(|| first["sku"].clone(), Value::from);
                let amount = o
                    .quantity
                    .map_or_else(|| first["amount"].clone(), Value::from);
                v["purchase"]["virtual_items"]["items"] = json!([{"sku": sku, "amount": amount}]);
                // Virtual currency is granted too; drop it so the one item is all there is.
                if let Some(purchase) = v["purchase"].as_object_mut() {
                    purchase.remove("virtual_currency");
                }
            }
            let id = o
                .order_id
                .map_or_else(|| v["transaction"]["id"].to_string(), |i| i.to_string());
            Ok((v, vec!["/transaction/id"], id))
        }
        Kind::UserValidation => {
            for (option, given) in [
                ("sku", o.sku.is_some()),
                ("quantity", o.quantity.is_some()),
                ("order-id", o.order_id.is_some()),
            ] {
                if given {
                    return Err(BuildError::NotApplicable { option, kind });
                }
            }
            let v = load("user_validation");
            let id = o
                .user
                .clone()
                .unwrap_or_else(|| v["user"]["id"].as_str().unwrap_or_default().to_owned());
            Ok((v, vec!["/user/id"], id))
        }
    }
}

fn order(kind: Kind, o: &Overrides) -> (Value, Vec<&'static str>, String) {
    let mut v = match (kind, o.mode) {
        (Kind::OrderPaid, Mode::Combined) => load("order_paid_combined"),
        (Kind::OrderPaid, Mode::Separate) => load("order_paid_separate"),
        (_, Mode::Separate) => load("order_canceled_separate"),
        (_, Mode::Combined) => canceled_combined(),
    };
    if let Some(user) = &o.user {
        v["user"]["external_id"] = json!(user);
    }
    if o.sku.is_some() || o.quantity.is_some() {
        let mut item = v["items"][0].clone();
        if let Some(sku) = &o.sku {
            item["sku"] = json!(sku);
        }
        if let Some(quantity) = o.quantity {
            item["quantity"] = json!(quantity);
        }
        v["items"] = json!([item]);
    }
    let id = o
        .order_id
        .map_or_else(|| v["order"]["id"].to_string(), |i| i.to_string());
    let mut paths = vec!["/order/id"];
    if o.mode == Mode::Combined {
        // Keeps transaction ids distinct per order, as they are at Xsolla.
        paths.push("/billing/transaction/id");
    }
    (v, paths, id)
}

/// Xsolla publishes no combined-mode `order_canceled` sample (`docs/xsolla-protocol.md` §3.5,
/// unconfirmed): we assume it is the separate one plus a `billing` block that mirrors a
/// `refund` webhook, as `order_paid`'s mirrors a `payment`.
fn canceled_combined() -> Value {
    let mut v = load("order_canceled_separate");
    let paid = load("order_paid_combined");
    let refund = load("refund");
    let mut billing = paid["billing"].clone();
    billing["notification_type"] = json!("refund");
    billing["refund_details"] = refund["refund_details"].clone();
    v["billing"] = billing;
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::signature::verify;

    fn parse(w: &Webhook) -> Value {
        serde_json::from_slice(&w.body).unwrap()
    }

    #[test]
    fn overridden_bodies_keep_a_valid_signature() {
        let overrides = Overrides {
            user: Some("player-7".into()),
            sku: Some("sword".into()),
            quantity: Some(2),
            order_id: Some(4242),
            mode: Mode::Separate,
        };
        for kind in [
            Kind::OrderPaid,
            Kind::OrderCanceled,
            Kind::Payment,
            Kind::Refund,
        ] {
            let w = build(kind, &overrides, "s3cret").unwrap();
            assert_eq!(
                verify(Some(&w.authorization), &w.body, &["s3cret"]),
                Ok(0),
                "{kind}"
            );
            assert_ne!(verify(Some(&w.authorization), &w.body, &["other"]), Ok(0));
            assert_eq!(parse(&w)["notification_type"], kind.as_str());
        }
    }

    #[test]
    fn order_overrides_land_where_the_worker_reads_them() {
        let o = Overrides {
            user: Some("u1".into()),
            sku: Some("gem".into()),
            quantity: Some(5),
            order_id: Some(77),
            mode: Mode::Combined,
        };
        let v = parse(&build(Kind::OrderPaid, &o, "s").unwrap());
        assert_eq!(v["user"]["external_id"], "u1");
        assert_eq!(v["items"], json!([v["items"][0]]), "exactly one item");
        assert_eq!(v["items"][0]["sku"], "gem");
        assert_eq!(v["items"][0]["quantity"], 5);
        assert_eq!(v["order"]["id"], 77);
        assert_eq!(v["billing"]["transaction"]["id"], 77);
    }

    #[test]
    fn delivery_mode_decides_whether_billing_is_present() {
        for kind in [Kind::OrderPaid, Kind::OrderCanceled] {
            let with = |mode| {
                parse(
                    &build(
                        kind,
                        &Overrides {
                            mode,
                            ..Default::default()
                        },
                        "s",
                    )
                    .unwrap(),
                )
            };
            assert!(with(Mode::Combined).get("billing").is_some(), "{kind}");
            assert!(with(Mode::Separate).get("billing").is_none(), "{kind}");
        }
        let canceled = parse(&build(Kind::OrderCanceled, &Overrides::default(), "s").unwrap());
        assert_eq!(canceled["billing"]["notification_type"], "refund");
    }

    #[test]
    fn payment_overrides_set_transaction_user_and_one_item() {
        let o = Overrides {
            user: Some("u2".into()),
            sku: Some("gem".into()),
            quantity: Some(3),
            order_id: Some(9),
            ..Default::default()
        };
        let v = parse(&build(Kind::Payment, &o, "s").unwrap());
        assert_eq!(v["transaction"]["id"], 9);
        assert_eq!(v["user"]["id"], "u2");
        assert_eq!(
            v["purchase"]["virtual_items"]["items"],
            json!([{"sku": "gem", "amount": 3}])
        );
        assert!(v["purchase"].get("virtual_currency").is_none());
    }

    #[test]
    fn template_stamps_distinct_ids_and_signs_each() {
        let t = Template::new(Kind::OrderPaid, &Overrides::default()).unwrap();
        let a = t.signed("1000000001", "s");
        let b = t.signed("1000000002", "s");
        assert_eq!(parse(&a)["order"]["id"], 1_000_000_001u64);
        assert_eq!(parse(&b)["billing"]["transaction"]["id"], 1_000_000_002u64);
        assert_ne!(a.authorization, b.authorization);
        assert_eq!(verify(Some(&b.authorization), &b.body, &["s"]), Ok(0));
    }

    #[test]
    fn user_validation_takes_only_a_user() {
        let o = Overrides {
            user: Some("p-1".into()),
            ..Default::default()
        };
        let w = build(Kind::UserValidation, &o, "s").unwrap();
        assert_eq!(parse(&w)["user"]["id"], "p-1");
        let bad = Overrides {
            sku: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(
            build(Kind::UserValidation, &bad, "s").unwrap_err(),
            BuildError::NotApplicable {
                option: "sku",
                kind: Kind::UserValidation
            }
        );
    }

    #[test]
    fn defaults_keep_the_fixture_ids() {
        let w = build(Kind::Refund, &Overrides::default(), "s").unwrap();
        assert_eq!(w.id, "1");
        assert_eq!(parse(&w)["transaction"]["id"], 1);
    }
}
