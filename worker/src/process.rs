//! The core of the worker: one message in, one [`Outcome`] out. No acks and no publishing
//! here (that is [`crate::settle`]), so the decision can be read and tested on its own.

use std::time::Duration;

use lapin::{BasicProperties, message::Delivery, types::FieldTable};
use shared::{
    envelope::{
        HeadersExt, header, is_valid_traceparent, new_traceparent, now_rfc3339, parse_time,
    },
    webhook::{Effect, Fulfilment, FulfilmentMode, WebhookError},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    classify::{Failure, FulfilError, classify},
    inventory::{InventoryClient, InventoryRequest},
    retry::{MAX_ATTEMPTS, NextStep, RetryPolicy, started_at},
};

/// What [`process`] needs: the inventory client, the retry policy and the mode.
#[derive(Debug, Clone)]
pub struct Context {
    pub inventory: InventoryClient,
    pub policy: RetryPolicy,
    pub mode: FulfilmentMode,
    /// Cancelled when the worker begins to stop: in-process retries end early and the
    /// event goes to a delay tier instead, so shutdown is not held up by sleeps.
    pub stopping: CancellationToken,
}

/// The parts of a delivery that [`process`] reads.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub body: &'a [u8],
    pub properties: &'a BasicProperties,
    pub routing_key: &'a str,
}

impl<'a> From<&'a Delivery> for Message<'a> {
    fn from(d: &'a Delivery) -> Self {
        Message {
            body: &d.data,
            properties: &d.properties,
            routing_key: d.routing_key.as_str(),
        }
    }
}

impl Message<'_> {
    pub fn headers(&self) -> Option<&FieldTable> {
        self.properties.headers().as_ref()
    }

    /// Failed deliveries so far (`x-attempts`; 0 when fresh from the ingress), at most
    /// [`MAX_ATTEMPTS`]: a crafted count is believed no further than any budget needs.
    pub fn prior_attempts(&self) -> u32 {
        let n = self
            .headers()
            .and_then(|h| h.get_int(header::ATTEMPTS))
            .unwrap_or(0);
        u32::try_from(n.clamp(0, i64::from(MAX_ATTEMPTS))).unwrap_or(MAX_ATTEMPTS)
    }
}

pub use shared::envelope::DeadReason;

/// What to do with a delivery. `attempts` is the new `x-attempts`, this delivery included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The effect is applied (or was already): ack.
    Done,
    /// Republish to the delay tier of `delay`, then ack.
    Retry {
        delay: Duration,
        attempts: u32,
        failure: Failure,
    },
    /// Publish to the DLQ, then ack.
    Dead {
        reason: DeadReason,
        attempts: u32,
        failure: Failure,
    },
}

impl Outcome {
    /// The `outcome` label of `worker_deliveries_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Retry { .. } => "retry",
            Outcome::Dead { .. } => "dead",
        }
    }
}

/// Reads the event, calls the inventory API (with quick in-process retries) and decides.
pub async fn process(ctx: &Context, msg: &Message<'_>) -> Outcome {
    process_read(ctx, msg, &ctx.mode.read(msg.body)).await
}

/// [`process`] for a body already read with `ctx.mode` (the consume loop keeps the read
/// for the delivery's order event, so the body is parsed once).
pub async fn process_read(
    ctx: &Context,
    msg: &Message<'_>,
    read: &Result<Fulfilment, WebhookError>,
) -> Outcome {
    let attempts = msg.prior_attempts().saturating_add(1);
    let fulfilment = match read {
        Ok(f) => f,
        Err(e) => {
            let reason = match e {
                WebhookError::NotFulfilled(_) => DeadReason::NotFulfilled,
                _ => DeadReason::Unparsable,
            };
            // Its ids (message_id, attempt, …) are on the consume loop's `delivery` span.
            tracing::error!(error = %e, reason = reason.as_str(), "cannot fulfil this event; dead-lettering it");
            return Outcome::Dead {
                reason,
                attempts,
                failure: Failure {
                    status: None,
                    error: e.to_string(),
                    retry_after: None,
                },
            };
        }
    };
    let request = InventoryRequest::new(fulfilment, received_at(msg), route_project(msg));
    // Type, order, user and attempt are on the consume loop's `delivery` span.
    let span = tracing::info_span!(
        "fulfil",
        transaction_id = fulfilment.transaction_id.as_deref().unwrap_or("-"),
        idempotency_key = %request.idempotency_key,
    );
    fulfil(ctx, msg, fulfilment, &request, attempts)
        .instrument(span)
        .await
}

async fn fulfil(
    ctx: &Context,
    msg: &Message<'_>,
    f: &Fulfilment,
    request: &InventoryRequest,
    attempts: u32,
) -> Outcome {
    let traceparent = traceparent(msg);
    let result = ctx
        .policy
        .with_quick_retries(&ctx.stopping, || async {
            classify(
                f.effect,
                &ctx.inventory.call(f.effect, request, &traceparent).await,
            )
        })
        .await;
    let failure = match result {
        Ok(()) => {
            let done = match f.effect {
                Effect::Grant => "granted",
                Effect::Revoke => "revoked",
            };
            tracing::info!("{done}");
            return Outcome::Done;
        }
        Err(FulfilError::Permanent(failure)) => {
            tracing::error!(error = %failure, "inventory API refused the call; dead-lettering");
            return Outcome::Dead {
                reason: DeadReason::Permanent,
                attempts,
                failure,
            };
        }
        Err(FulfilError::Transient(failure)) => failure,
    };
    let prior = attempts - 1;
    let now = OffsetDateTime::now_utc();
    let started = started_at(msg.headers(), *msg.properties.timestamp(), now);
    let elapsed = ctx.policy.elapsed(started, now, prior);
    match ctx.policy.next_step(prior, failure.retry_after, elapsed) {
        NextStep::Delay(delay) => {
            tracing::warn!(error = %failure, retry_in = ?shared::telemetry::to_millis(delay), "inventory call failed; retrying later");
            Outcome::Retry {
                delay,
                attempts,
                failure,
            }
        }
        NextStep::BudgetExhausted => {
            let elapsed = humantime::format_duration(Duration::from_secs(elapsed.as_secs()));
            tracing::error!(error = %failure, %elapsed, budget = ?ctx.policy.budget, "retry budget spent; dead-lettering");
            Outcome::Dead {
                reason: DeadReason::RetryBudgetExhausted,
                attempts,
                failure,
            }
        }
    }
}

/// `x-received-at` as sent by the ingress, else the message timestamp, else now.
fn received_at(msg: &Message<'_>) -> String {
    msg.headers()
        .and_then(|h| h.get_str(header::RECEIVED_AT))
        .filter(|s| parse_time(s).is_some())
        .or_else(|| {
            let ts = i64::try_from((*msg.properties.timestamp())?).ok()?;
            OffsetDateTime::from_unix_timestamp(ts)
                .ok()?
                .format(&Rfc3339)
                .ok()
        })
        .unwrap_or_else(now_rfc3339)
}

/// The project named by the ingress route (`/webhooks/xsolla/{project_id}`), if any.
fn route_project(msg: &Message<'_>) -> Option<u64> {
    let id = msg.headers()?.get_int(header::PROJECT_ID)?;
    u64::try_from(id).ok()
}

/// The message's `traceparent`, passed on unchanged so the game's logs join the ingress's
/// trace (the worker exports no spans of its own to parent), or a new one.
fn traceparent(msg: &Message<'_>) -> String {
    msg.headers()
        .and_then(|h| h.get_str(header::TRACEPARENT))
        .filter(|t| is_valid_traceparent(t))
        .unwrap_or_else(new_traceparent)
}

#[cfg(test)]
mod tests {
    use lapin::types::FieldTable;

    use super::*;

    fn props(headers: FieldTable) -> BasicProperties {
        BasicProperties::default()
            .with_headers(headers)
            .with_timestamp(1_700_000_000)
    }

    fn msg<'a>(body: &'a [u8], p: &'a BasicProperties) -> Message<'a> {
        Message {
            body,
            properties: p,
            routing_key: "order_paid",
        }
    }

    #[test]
    fn reads_attempts_project_and_received_at_from_headers() {
        let mut h = FieldTable::default();
        h.set_int(header::ATTEMPTS, 4)
            .set_str(header::PROJECT_ID, "18404")
            .set_str(header::RECEIVED_AT, "2025-03-01T10:00:00Z");
        let p = props(h);
        let m = msg(b"{}", &p);
        assert_eq!(m.prior_attempts(), 4);
        assert_eq!(route_project(&m), Some(18404));
        assert_eq!(received_at(&m), "2025-03-01T10:00:00Z");

        let mut h = FieldTable::default();
        h.set_int(header::ATTEMPTS, 4_294_967_294);
        let p = props(h);
        assert_eq!(msg(b"{}", &p).prior_attempts(), MAX_ATTEMPTS, "capped");
        let mut h = FieldTable::default();
        h.set_int(header::ATTEMPTS, -5);
        let p = props(h);
        assert_eq!(msg(b"{}", &p).prior_attempts(), 0);

        let bare = props(FieldTable::default());
        let m = msg(b"{}", &bare);
        assert_eq!(m.prior_attempts(), 0);
        assert_eq!(route_project(&m), None);
        assert_eq!(
            received_at(&m),
            "2023-11-14T22:13:20Z",
            "falls back to the timestamp"
        );
    }

    #[test]
    fn keeps_a_valid_traceparent_and_replaces_a_bad_one() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = FieldTable::default();
        h.set_str(header::TRACEPARENT, tp);
        let p = props(h);
        assert_eq!(traceparent(&msg(b"", &p)), tp);
        let mut h = FieldTable::default();
        h.set_str(header::TRACEPARENT, "garbage");
        let p = props(h);
        let generated = traceparent(&msg(b"", &p));
        assert!(is_valid_traceparent(&generated) && generated != "garbage");
    }

    #[test]
    fn tells_unparsable_from_not_fulfilled() {
        assert!(matches!(
            FulfilmentMode::default().read(b"nope"),
            Err(WebhookError::NotJson(_))
        ));
        assert!(matches!(
            FulfilmentMode::default().read(br#"{"notification_type":"payment"}"#),
            Err(WebhookError::NotFulfilled(_))
        ));
    }
}
