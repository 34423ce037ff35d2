//! The client of the game's inventory API: builds the contract's request body from a
//! webhook and makes the `POST /grants` or `POST /revocations` call.

use std::time::{Duration, Instant, SystemTime};

use reqwest::{
    Url,
    header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER},
};
use serde::Serialize;
use shared::webhook::{Effect, Fulfilment, Item};

use crate::{
    classify::{Reply, is_auth_refusal, parse_retry_after, truncate},
    config::Token,
};

/// Calls the inventory API refused with 401/403: a token problem, alerted on by itself.
pub const AUTH_FAILURES: &str = "worker_inventory_auth_failures_total";

/// Registers the inventory client's series at 0, so a dashboard sees "no auth failures"
/// rather than nothing. Installs the process recorder first if no one has yet.
pub fn register_metrics() {
    let _ = shared::telemetry::metrics_handle();
    metrics::describe_counter!(
        AUTH_FAILURES,
        "Inventory API calls refused with 401 or 403 (INVENTORY_TOKEN wrong or rotated); retried, never dead-lettered for that"
    );
    // `increment(0)`, not `absolute(0)`: a second client in the same process (tests) must not
    // reset what the first counted.
    metrics::counter!(AUTH_FAILURES).increment(0);
}

/// How much of an error answer's body we keep (logs, `x-last-error`).
const BODY_EXCERPT: usize = 512;

/// Body of `POST /grants` and `POST /revocations` (`deploy/INVENTORY_API.md`; `docs/design.md`,
/// "Inventory contract").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InventoryRequest {
    /// Equal to the `Idempotency-Key` header.
    pub idempotency_key: String,
    pub project_id: Option<u64>,
    pub user_id: String,
    /// The Xsolla order; in payments mode, for a payment outside the in-game store, the
    /// transaction id stands in (the contract requires an id, and a refund carries the
    /// same transaction id as its payment, so the game can match the two).
    pub order_id: String,
    pub transaction_id: Option<String>,
    /// Serialised as `{sku, quantity, type}`.
    pub items: Vec<Item>,
    pub notification_type: String,
    pub sandbox: bool,
    /// When the ingress accepted the webhook, RFC 3339.
    pub received_at: String,
}

impl InventoryRequest {
    /// The request for `fulfilment`. `project_id` falls back to the ingress route's project
    /// (the `x-project-id` header) when the body does not name it (separate delivery mode).
    pub fn new(fulfilment: &Fulfilment, received_at: String, route_project: Option<u64>) -> Self {
        InventoryRequest {
            idempotency_key: fulfilment.idempotency_key(),
            project_id: fulfilment.project_id.or(route_project),
            user_id: fulfilment.user_id.clone(),
            order_id: fulfilment
                .order_id
                .clone()
                .or_else(|| fulfilment.transaction_id.clone())
                .unwrap_or_default(),
            transaction_id: fulfilment.transaction_id.clone(),
            items: fulfilment.items.clone(),
            notification_type: fulfilment.notification_type.clone(),
            sandbox: fulfilment.sandbox,
            received_at,
        }
    }
}

/// Makes inventory calls. Cheap to share: one connection pool for all deliveries.
#[derive(Debug, Clone)]
pub struct InventoryClient {
    http: reqwest::Client,
    grants: Url,
    revocations: Url,
    authorization: Option<HeaderValue>,
    timeout: Duration,
}

impl InventoryClient {
    /// A client for the API at `base` (`{base}/grants`, `{base}/revocations`).
    pub fn new(base: &Url, token: Option<&Token>, timeout: Duration) -> anyhow::Result<Self> {
        let endpoint = |path: &str| {
            let joined = format!("{}/{path}", base.as_str().trim_end_matches('/'));
            Url::parse(&joined)
        };
        let authorization = token
            .map(|t| {
                // The header is built once; its text copy is zeroed on drop like the token.
                let text = secrecy::zeroize::Zeroizing::new(format!("Bearer {}", t.expose()));
                let mut v = HeaderValue::from_str(&text)?;
                v.set_sensitive(true);
                Ok::<_, anyhow::Error>(v)
            })
            .transpose()?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            // A redirected POST is outside the contract; answer it as the 3xx it is.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("xsolla-bridge-worker/", env!("CARGO_PKG_VERSION")))
            .build()?;
        register_metrics();
        Ok(InventoryClient {
            http,
            grants: endpoint("grants")?,
            revocations: endpoint("revocations")?,
            authorization,
            timeout,
        })
    }

    /// Makes one call and reports what came back, without judging it.
    pub async fn call(&self, effect: Effect, body: &InventoryRequest, traceparent: &str) -> Reply {
        let (url, endpoint) = match effect {
            Effect::Grant => (&self.grants, "grants"),
            Effect::Revoke => (&self.revocations, "revocations"),
        };
        let mut request = self
            .http
            .post(url.clone())
            .header("Idempotency-Key", &body.idempotency_key)
            .header(CONTENT_TYPE, "application/json")
            .header("traceparent", traceparent)
            .json(body);
        if let Some(auth) = &self.authorization {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let started = Instant::now();
        let reply = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                if is_auth_refusal(status) {
                    metrics::counter!(AUTH_FAILURES).increment(1);
                    // Every order fails the same way until the token is fixed: say so
                    // loudly, and which option to look at (never its value).
                    tracing::error!(
                        status,
                        endpoint,
                        "the inventory API refused INVENTORY_TOKEN; check the token the game expects (retrying, nothing is dead-lettered for this)"
                    );
                }
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                let body = if response.status().is_success() {
                    String::new()
                } else {
                    excerpt(response).await
                };
                Reply::Answered {
                    status,
                    retry_after,
                    body,
                }
            }
            Err(e) => self.transport_error(e),
        };
        let status = match &reply {
            Reply::Answered { status, .. } => status.to_string(),
            Reply::Timeout(_) => "timeout".into(),
            Reply::Connection(_) => "connection_error".into(),
        };
        metrics::histogram!("worker_inventory_call_seconds", "endpoint" => endpoint, "status" => status)
            .record(started.elapsed().as_secs_f64());
        reply
    }

    fn transport_error(&self, e: reqwest::Error) -> Reply {
        // Without the URL: it could carry credentials, and the endpoint is known anyway.
        let e = e.without_url();
        if e.is_timeout() {
            Reply::Timeout(format!("no answer within {:?}", self.timeout))
        } else {
            Reply::Connection(format!("request failed: {}", error_chain(&e)))
        }
    }
}

/// The first [`BODY_EXCERPT`] bytes of an answer's body, as text (best effort).
async fn excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < BODY_EXCERPT {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    truncate(String::from_utf8_lossy(&bytes).trim(), BODY_EXCERPT)
}

/// `e: cause: cause`, since reqwest's own message ("error sending request") hides the why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use shared::webhook::{FulfilmentMode, parse};

    use super::*;

    fn request(fixture: &str, mode: FulfilmentMode, route_project: Option<u64>) -> Value {
        let path = format!(
            "{}/../tests/fixtures/{fixture}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let (value, _) = parse(&std::fs::read(path).unwrap()).unwrap();
        let f = mode.fulfilment(&value).unwrap();
        serde_json::to_value(InventoryRequest::new(
            &f,
            "2025-01-01T00:00:00Z".into(),
            route_project,
        ))
        .unwrap()
    }

    #[test]
    fn builds_the_grant_of_a_combined_mode_order() {
        assert_eq!(
            request("order_paid_combined", FulfilmentMode::default(), Some(999)),
            json!({
                "idempotency_key": "xsolla:order:1:grant",
                "project_id": 18404,
                "user_id": "id_xsolla_login_1",
                "order_id": "1",
                "transaction_id": "1",
                "items": [
                    {"sku": "com.xsolla.item_1", "quantity": 3, "type": "virtual_good"},
                    {"sku": "com.xsolla.item_new_1", "quantity": 1, "type": "bundle"},
                    {"sku": "com.xsolla.gold_1", "quantity": 1500, "type": "virtual_currency"},
                ],
                "notification_type": "order_paid",
                "sandbox": false,
                "received_at": "2025-01-01T00:00:00Z",
            })
        );
    }

    #[test]
    fn takes_the_project_from_the_route_in_separate_mode() {
        let paid = request(
            "order_paid_separate",
            FulfilmentMode::default(),
            Some(18404),
        );
        assert_eq!(paid["project_id"], 18404);
        assert_eq!(paid["transaction_id"], Value::Null);
        assert_eq!(
            paid["items"][2],
            json!({"sku": "gold", "quantity": 1500, "type": "virtual_currency"})
        );
        let unknown = request("order_paid_separate", FulfilmentMode::default(), None);
        assert_eq!(unknown["project_id"], Value::Null);
    }

    #[test]
    fn builds_a_revocation_with_its_own_key() {
        let canceled = request("order_canceled_separate", FulfilmentMode::default(), None);
        assert_eq!(canceled["idempotency_key"], "xsolla:order:1:revoke");
        assert_eq!(canceled["notification_type"], "order_canceled");
        assert_eq!(canceled["items"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn builds_payments_mode_requests_from_purchase() {
        let mode = FulfilmentMode { payments: true };
        let payment = request("payment", mode, None);
        assert_eq!(payment["idempotency_key"], "xsolla:transaction:1:grant");
        assert_eq!(payment["user_id"], "1234567");
        assert_eq!(payment["project_id"], 18404);
        assert_eq!(
            payment["order_id"], "1",
            "the transaction id stands in for the order"
        );
        assert_eq!(payment["sandbox"], true);
        assert_eq!(
            payment["items"],
            json!([
                {"sku": "test_item1", "quantity": 1, "type": "virtual_good"},
                {"sku": "Coins", "quantity": 10, "type": "virtual_currency"},
            ])
        );
        let refund = request("refund", mode, None);
        assert_eq!(refund["idempotency_key"], "xsolla:transaction:1:revoke");
        assert_eq!(refund["project_id"], Value::Null);
    }

    #[test]
    fn joins_endpoints_to_the_base_url() {
        for base in ["http://inv.example/api", "http://inv.example/api/"] {
            let c = InventoryClient::new(&Url::parse(base).unwrap(), None, Duration::from_secs(1))
                .unwrap();
            assert_eq!(c.grants.as_str(), "http://inv.example/api/grants");
            assert_eq!(c.revocations.as_str(), "http://inv.example/api/revocations");
        }
    }
}
