//! The webhook routes. The handler reads like the protocol: verify → answer the live
//! checks, or publish durably → respond.

use std::{net::IpAddr, sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{Path, Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};
use shared::envelope;
use tracing::field::display;

use crate::{
    error::{self, ApiError},
    meters::RequestMeters,
    publisher::{Publish, Publisher},
    user_check::{Lookup, UserCheck},
    verify::{VerifiedWebhook, Verifier},
};

/// Everything a request needs, shared by all requests. `P` is where verified webhooks
/// go: the broker's [`Publisher`] in the product, a stand-in in the routes' own tests.
pub struct App<P = Publisher> {
    pub verifier: Verifier,
    pub user_check: Option<UserCheck>,
    pub user_search: bool,
    pub publisher: P,
    pub retry_after: u32,
    /// `XSOLLA_PROJECT_ID`: the project when neither the route nor the body names one.
    pub default_project: Option<u64>,
    pub meters: RequestMeters,
}

/// `POST /webhooks/xsolla` and `POST /webhooks/xsolla/{project_id}`.
pub fn router<P: Publish>(app: Arc<App<P>>) -> Router {
    Router::new()
        .route("/webhooks/xsolla", post(single_project::<P>))
        .route("/webhooks/xsolla/{project_id}", post(one_of_projects::<P>))
        .with_state(app)
}

async fn single_project<P: Publish>(State(app): State<Arc<App<P>>>, request: Request) -> Response {
    handle(&app, Ok(None), request).await
}

async fn one_of_projects<P: Publish>(
    State(app): State<Arc<App<P>>>,
    Path(project): Path<String>,
    request: Request,
) -> Response {
    let project = project
        .parse::<u64>()
        .map(Some)
        .map_err(|_| ApiError::InvalidParameter(format!("project id `{project}` is not a number")));
    handle(&app, project, request).await
}

/// One webhook, answered and logged in one line with the client's IP, and for a refused
/// body the order id it claims (`claimed_order_id`, unverified), or a verified webhook's
/// ids. No span per webhook: nothing else is logged on its way (the one WARN inside names
/// its route), and a span cost ~4 µs of CPU per webhook (a tenth of the ingress's;
/// BENCHMARKS.md).
async fn handle<P: Publish>(
    app: &App<P>,
    project: Result<Option<u64>, ApiError>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let client = app.verifier.client_ip(&request);
    let verified = match project {
        Ok(project) => app.verifier.verify(project, client, request).await,
        Err(e) => Err(e.into()),
    };
    let webhook = match verified {
        Ok(webhook) => webhook,
        Err(refusal) => {
            let answered = Answered::Refused(refusal.claimed_order_id.as_deref());
            return finish(app, client, answered, started, Err(refusal.error));
        }
    };
    let result = match webhook.summary.notification_type.as_str() {
        "user_validation" => validate_user(app, &webhook).await,
        "user_search" if app.user_search => search_user(app, &webhook).await,
        _ => publish(app, &webhook)
            .await
            .map(|()| StatusCode::NO_CONTENT.into_response()),
    };
    finish(app, client, Answered::Verified(&webhook), started, result)
}

/// What the answer's line can say about the webhook.
enum Answered<'a> {
    Verified(&'a VerifiedWebhook),
    /// Not verified: only the order id its body claims, if it was read and looks like one.
    Refused(Option<&'a str>),
}

/// Records the metrics and the log line (with the webhook's ids once verified), then turns
/// the result into the answer.
fn finish<P>(
    app: &App<P>,
    client: Option<IpAddr>,
    answered: Answered<'_>,
    started: Instant,
    result: Result<Response, ApiError>,
) -> Response {
    let (webhook, claimed_order_id) = match answered {
        Answered::Verified(webhook) => (Some(webhook), None),
        Answered::Refused(claim) => (None, claim),
    };
    let summary = webhook.map(|w| &w.summary);
    let (status, outcome) = match &result {
        Ok(r) => (r.status(), "accepted"),
        Err(e) => (e.status(), e.outcome()),
    };
    let elapsed = started.elapsed().as_secs_f64();
    let notification_type = summary.map(|s| s.notification_type.as_str());
    app.meters.record(notification_type, outcome, elapsed);
    let elapsed_ms = (elapsed * 1_000_000.0).round() / 1000.0;
    let order_id = summary.and_then(|s| s.order_id.as_deref());
    let transaction_id = summary.and_then(|s| s.transaction_id.as_deref());
    let user_id = summary.and_then(|s| s.user_id.as_deref());
    let message_id = summary.map(|s| s.dedup_id.as_str());
    let traceparent = webhook.map(|w| w.traceparent.as_str());
    let client_ip = client.map(display);
    let status = status.as_u16();
    match result {
        Ok(response) => {
            tracing::info!(
                client_ip,
                notification_type,
                order_id,
                transaction_id,
                user_id,
                message_id,
                traceparent,
                status,
                outcome,
                elapsed_ms,
                "webhook answered"
            );
            response
        }
        Err(error) if error.is_server_error() => {
            let request_id = error::new_request_id();
            tracing::warn!(client_ip, notification_type, order_id, transaction_id, user_id, message_id, traceparent, status, outcome, %request_id, %error, elapsed_ms, "webhook not accepted; Xsolla will re-send");
            error.into_answer(&request_id)
        }
        Err(error) => {
            tracing::warn!(client_ip, claimed_order_id, notification_type, order_id, transaction_id, user_id, message_id, traceparent, status, outcome, %error, elapsed_ms, "webhook refused");
            error.into_answer("-")
        }
    }
}

/// Publishes the raw body with the envelope headers; Ok only after the broker's confirm.
async fn publish<P: Publish>(app: &App<P>, webhook: &VerifiedWebhook) -> Result<(), ApiError> {
    let kind = &webhook.summary.notification_type;
    let properties = envelope::received_properties(&envelope::Received {
        notification_type: kind,
        message_id: &webhook.summary.dedup_id,
        signature: &webhook.signature,
        traceparent: &webhook.traceparent,
        // The route's project (its secrets verified the webhook), else the body's, else the
        // configured one; order-status reads it to tell projects' orders apart.
        project_id: webhook
            .project_id
            .or(webhook.summary.project_id)
            .or(app.default_project),
    });
    app.publisher
        .publish(kind, &webhook.body, properties)
        .await
        .map_err(|e| app.unavailable(format!("not durable: {e}")))
}

/// `user_validation`: 204 if the game knows the user, 400 `INVALID_USER` if not.
async fn validate_user<P>(app: &App<P>, webhook: &VerifiedWebhook) -> Result<Response, ApiError> {
    let Some(check) = &app.user_check else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let user_id = webhook
        .summary
        .account_id
        .as_deref()
        .ok_or_else(|| ApiError::InvalidParameter("`user.id` is missing".into()))?;
    match check.lookup(user_id, &webhook.traceparent).await {
        Ok(Lookup::Exists(_)) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(Lookup::Unknown) => Err(ApiError::InvalidUser),
        Err(e) => Err(app.unavailable(format!("cannot validate user: {e}"))),
    }
}

/// `user_search`: 200 `{"user": …}` from the game's answer, 400 `INVALID_USER` if unknown.
async fn search_user<P>(app: &App<P>, webhook: &VerifiedWebhook) -> Result<Response, ApiError> {
    let check = app
        .user_check
        .as_ref()
        .expect("validated: user_search needs USER_CHECK_URL");
    let user_id = webhook.summary.search_id.as_deref().ok_or_else(|| {
        ApiError::InvalidParameter("`user.public_id` or `user.id` is missing".into())
    })?;
    match check.lookup(user_id, &webhook.traceparent).await {
        Ok(Lookup::Exists(body)) => {
            // The game may answer `{"user":{…}}` or the user object itself; Xsolla needs an id.
            let user = match body {
                Some(Value::Object(mut o)) if o.contains_key("user") => {
                    o.remove("user").unwrap_or_default()
                }
                Some(v @ Value::Object(_)) => v,
                _ => json!({ "id": user_id }),
            };
            Ok((StatusCode::OK, axum::Json(json!({ "user": user }))).into_response())
        }
        Ok(Lookup::Unknown) => Err(ApiError::InvalidUser),
        Err(e) => Err(app.unavailable(format!("cannot search user: {e}"))),
    }
}

impl<P> App<P> {
    fn unavailable(&self, reason: String) -> ApiError {
        ApiError::Unavailable {
            reason,
            retry_after: self.retry_after,
        }
    }
}

#[cfg(test)]
#[path = "answer_table_tests.rs"]
mod answer_table_tests;
