//! Grants and revocations read out of `order_paid`/`order_canceled` (both delivery modes)
//! and, in payments mode, `payment`/`refund` (items from `purchase`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{WebhookError, id_at, project_id, transaction_id};

/// What the game is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Grant,
    Revoke,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Grant => "grant",
            Effect::Revoke => "revoke",
        }
    }
}

/// One line of a grant or revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub quantity: i64,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// A grant or revocation read from an `order_paid`/`order_canceled` (or, in payments mode,
/// `payment`/`refund`) webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fulfilment {
    pub effect: Effect,
    pub notification_type: String,
    pub project_id: Option<u64>,
    pub user_id: String,
    pub order_id: Option<String>,
    pub transaction_id: Option<String>,
    pub items: Vec<Item>,
    pub sandbox: bool,
}

impl Fulfilment {
    /// The same key for every delivery of the same effect, so the game applies it once.
    pub fn idempotency_key(&self) -> String {
        match &self.order_id {
            Some(order) => format!("xsolla:order:{order}:{}", self.effect.as_str()),
            None => format!(
                "xsolla:transaction:{}:{}",
                self.transaction_id.as_deref().unwrap_or_default(),
                self.effect.as_str()
            ),
        }
    }
}

/// Which notification types become grants and revocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FulfilmentMode {
    /// Also fulfil `payment` → grant and `refund` → revoke, items from `purchase`
    /// (integrations without the in-game store).
    pub payments: bool,
}

impl FulfilmentMode {
    /// The routing keys (notification types) the work queue is bound to.
    pub fn fulfilled_types(self) -> &'static [&'static str] {
        if self.payments {
            &["order_paid", "order_canceled", "payment", "refund"]
        } else {
            &["order_paid", "order_canceled"]
        }
    }

    /// Reads the fulfilment straight from a webhook body: the same answer as
    /// [`Self::fulfilment`] on the whole tree, building only the parts it reads.
    pub fn read(self, body: &[u8]) -> Result<Fulfilment, WebhookError> {
        let value = super::pruned::parse(body, &super::pruned::FULFILMENT)
            .map_err(|e| WebhookError::NotJson(e.to_string()))?;
        if !value.is_object() {
            return Err(WebhookError::NotJson("top level is not an object".into()));
        }
        self.fulfilment(&value)
    }

    /// Reads the fulfilment out of a webhook of a fulfilled type.
    pub fn fulfilment(self, v: &Value) -> Result<Fulfilment, WebhookError> {
        let notification_type = v
            .get("notification_type")
            .and_then(Value::as_str)
            .ok_or(WebhookError::NoNotificationType)?;
        match notification_type {
            "order_paid" => order_fulfilment(v, Effect::Grant),
            "order_canceled" => order_fulfilment(v, Effect::Revoke),
            "payment" if self.payments => payment_fulfilment(v, Effect::Grant),
            "refund" if self.payments => payment_fulfilment(v, Effect::Revoke),
            other => Err(WebhookError::NotFulfilled(other.to_owned())),
        }
    }
}

fn order_fulfilment(v: &Value, effect: Effect) -> Result<Fulfilment, WebhookError> {
    let order_id = id_at(v, &["order", "id"]).ok_or(WebhookError::MissingField("order.id"))?;
    let user_id = id_at(v, &["user", "external_id"])
        .or_else(|| id_at(v, &["user", "id"]))
        .ok_or(WebhookError::MissingField("user.external_id"))?;
    let raw_items = v
        .get("items")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or(WebhookError::NoItems("items"))?;
    let items = raw_items
        .iter()
        .enumerate()
        .map(|(index, it)| {
            let sku = it
                .get("sku")
                .or_else(|| it.get("sku_drm"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            let quantity = it.get("quantity").and_then(Value::as_i64).unwrap_or(1);
            let kind = it.get("type").and_then(Value::as_str);
            item(index, sku, quantity, kind)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let sandbox = v.pointer("/order/mode").and_then(Value::as_str) == Some("sandbox");
    Ok(Fulfilment {
        effect,
        notification_type: v["notification_type"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        project_id: project_id(v),
        user_id,
        order_id: Some(order_id),
        transaction_id: transaction_id(v),
        items,
        sandbox,
    })
}

/// One line, refused when it names no SKU or a quantity below one.
fn item(
    index: usize,
    sku: Option<&str>,
    quantity: i64,
    kind: Option<&str>,
) -> Result<Item, WebhookError> {
    match sku {
        Some(sku) if quantity > 0 => Ok(Item {
            sku: sku.to_owned(),
            quantity,
            kind: kind.map(str::to_owned),
        }),
        _ => Err(WebhookError::BadItem { index }),
    }
}

fn payment_fulfilment(v: &Value, effect: Effect) -> Result<Fulfilment, WebhookError> {
    let transaction_id = transaction_id(v).ok_or(WebhookError::MissingField("transaction.id"))?;
    let user_id = id_at(v, &["user", "id"]).ok_or(WebhookError::MissingField("user.id"))?;
    let mut items = Vec::new();
    if let Some(list) = v
        .pointer("/purchase/virtual_items/items")
        .and_then(Value::as_array)
    {
        for (index, it) in list.iter().enumerate() {
            let sku = it
                .get("sku")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            let quantity = it.get("amount").and_then(Value::as_i64).unwrap_or(1);
            items.push(item(index, sku, quantity, Some("virtual_good"))?);
        }
    }
    if let Some(vc) = v.pointer("/purchase/virtual_currency") {
        let sku = vc
            .get("sku")
            .or_else(|| vc.get("name"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let quantity = vc.get("quantity").and_then(Value::as_i64).unwrap_or(0);
        items.push(item(items.len(), sku, quantity, Some("virtual_currency"))?);
    }
    if items.is_empty() {
        return Err(WebhookError::NoItems(
            "purchase.virtual_items / purchase.virtual_currency",
        ));
    }
    let dry_run = |p: &str| v.pointer(p).and_then(Value::as_i64) == Some(1);
    Ok(Fulfilment {
        effect,
        notification_type: v["notification_type"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        project_id: project_id(v),
        user_id,
        order_id: id_at(v, &["order", "id"]),
        transaction_id: Some(transaction_id),
        items,
        sandbox: dry_run("/transaction/dry_run"),
    })
}
