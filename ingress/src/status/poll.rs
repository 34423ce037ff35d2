//! `GET /api/v2/project/{project_id}/order/{order_id}`: Xsolla's Get-order short-poll, with
//! our real delivery state. The same 404 for an unknown order, another user's order and
//! another project's path: an answer never reveals that an order exists.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State as AxumState},
    http::{HeaderMap, StatusCode, header::AUTHORIZATION},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use shared::order_events::Price;

use super::{
    App,
    auth::AuthError,
    view::{Order, OrderId},
};

/// Why a poll got no order. Answered in the Store API's error shape.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("{0}")]
    Unauthorized(AuthError),
    #[error("Order not found")]
    NotFound,
    #[error("Catching up with the order events; try again shortly")]
    NotReady,
}

impl IntoResponse for PollError {
    fn into_response(self) -> Response {
        let status = match self {
            PollError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            PollError::NotFound => StatusCode::NOT_FOUND,
            PollError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
        };
        let body = json!({
            "statusCode": status.as_u16(),
            "errorCode": status.as_u16(),
            "errorMessage": self.to_string(),
        });
        (status, Json(body)).into_response()
    }
}

/// The handler: verify the Bearer token, find the user's order, answer Xsolla's shape.
pub async fn get_order(
    AxumState(app): AxumState<Arc<App>>,
    Path((project_id, order_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, PollError> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .unwrap_or_default()
        .trim();
    let user = app
        .verifier
        .verify(token)
        .map_err(PollError::Unauthorized)?;
    if !app.state.is_caught_up() {
        return Err(PollError::NotReady);
    }
    let project_id: u64 = project_id.parse().map_err(|_| PollError::NotFound)?;
    app.state
        .read(|v| {
            v.order(project_id, &order_id)
                .filter(|o| o.user_id == user && o.status.is_some())
                .map(|o| body(&order_id, o))
        })
        .map(Json)
        .ok_or(PollError::NotFound)
}

/// Xsolla's Get-order body: `order_id` an integer, items and prices from the webhook.
fn body(order_id: &str, order: &Order) -> Value {
    let currency = order.price.as_ref().map(|p| p.currency.as_str());
    let items: Vec<Value> = order
        .items
        .iter()
        .map(|item| {
            let mut v = json!({"sku": item.sku, "quantity": item.quantity, "is_free": false});
            if let (Some(amount), Some(currency)) = (&item.amount, currency) {
                v["price"] = price(amount, currency);
            }
            v
        })
        .collect();
    let mut content = json!({"is_free": false, "items": items});
    if let Some(Price { amount, currency }) = &order.price {
        content["price"] = price(amount, currency);
    }
    json!({
        "order_id": OrderId::parse(order_id),
        "status": order.status.map(|s| s.as_str()),
        "content": content,
    })
}

/// We only know what was paid, not a discount: both amounts are the paid one.
fn price(amount: &str, currency: &str) -> Value {
    json!({"amount": amount, "amount_without_discount": amount, "currency": currency})
}

#[cfg(test)]
mod tests {
    use shared::order_events::EventItem;

    use super::*;
    use crate::status::view::Status;

    #[test]
    fn the_body_has_xsollas_get_order_shape() {
        let order = Order {
            user_id: "u1".into(),
            status: Some(Status::Done),
            items: vec![EventItem {
                sku: "com.xsolla.item_1".into(),
                quantity: 1,
                amount: Some("30".into()),
            }],
            price: Some(Price {
                amount: "30".into(),
                currency: "USD".into(),
            }),
            changed_at: 0,
            seen_at: 0,
            offset: 2,
        };
        let price = json!({"amount": "30", "amount_without_discount": "30", "currency": "USD"});
        assert_eq!(
            body("571134", &order),
            json!({"order_id": 571134, "status": "done", "content": {
                "price": price, "is_free": false,
                "items": [{"sku": "com.xsolla.item_1", "quantity": 1, "is_free": false, "price": price}]}})
        );
    }
}
