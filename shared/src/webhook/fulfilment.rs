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
            let at = |key| Field::new("items", Some(index), key);
            let sku = it.get("sku").or_else(|| it.get("sku_drm"));
            let kind = it.get("type").and_then(Value::as_str);
            item(at("sku"), sku, at("quantity"), it.get("quantity"), kind)
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

/// Where a value sits in the body, spelled out only when it is reported (`items[0].sku`).
#[derive(Debug, Clone, Copy)]
struct Field {
    list: &'static str,
    index: Option<usize>,
    key: &'static str,
}

impl Field {
    fn new(list: &'static str, index: Option<usize>, key: &'static str) -> Field {
        Field { list, index, key }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}[{i}].{}", self.list, self.key),
            None => write!(f, "{}.{}", self.list, self.key),
        }
    }
}

/// One line, refused when it names no SKU or its count is not a positive integer.
fn item(
    sku_at: Field,
    sku: Option<&Value>,
    quantity_at: Field,
    quantity: Option<&Value>,
    kind: Option<&str>,
) -> Result<Item, WebhookError> {
    let sku = sku
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| WebhookError::BadSku {
            field: sku_at.to_string(),
        })?;
    Ok(Item {
        sku: sku.to_owned(),
        quantity: positive_count(quantity_at, quantity)?,
        kind: kind.map(str::to_owned),
    })
}

/// Longest excerpt of a refused value quoted in the error (it ends up in `x-last-error`).
const QUOTED_MAX: usize = 40;

/// A count of items: a JSON integer from 1 to `i64::MAX`, nothing else. Xsolla documents
/// `quantity` as an int with no default (`docs/xsolla-protocol.md` §3.4), so an absent
/// one is as unreadable as `"50"`, `2.5`, `1e30` or `true`: each used to be granted as 1.
fn positive_count(at: Field, value: Option<&Value>) -> Result<i64, WebhookError> {
    let refuse = |problem: String| WebhookError::BadQuantity {
        field: at.to_string(),
        problem,
    };
    let Some(value) = value else {
        return Err(refuse(
            "is missing (Xsolla documents no default; a positive integer is required)".into(),
        ));
    };
    match value.as_i64() {
        Some(n) if n > 0 => Ok(n),
        _ if value.is_u64() => Err(refuse(format!(
            "is {value}, more than the largest count ({})",
            i64::MAX
        ))),
        _ => Err(refuse(format!(
            "is {}, not a positive integer",
            quoted(value)
        ))),
    }
}

/// The value as JSON text (strings quoted, control characters escaped), cut short.
fn quoted(value: &Value) -> String {
    let text = value.to_string();
    if text.len() <= QUOTED_MAX {
        return text;
    }
    let mut end = QUOTED_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
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
            let at = |key| Field::new("purchase.virtual_items.items", Some(index), key);
            let (sku, amount) = (it.get("sku"), it.get("amount"));
            items.push(item(
                at("sku"),
                sku,
                at("amount"),
                amount,
                Some("virtual_good"),
            )?);
        }
    }
    if let Some(vc) = v.pointer("/purchase/virtual_currency") {
        let at = |key| Field::new("purchase.virtual_currency", None, key);
        let sku = vc.get("sku").or_else(|| vc.get("name"));
        let quantity = vc.get("quantity");
        items.push(item(
            at("sku"),
            sku,
            at("quantity"),
            quantity,
            Some("virtual_currency"),
        )?);
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
