//! The order event a settled delivery stands for: `granted`/`revoked` after a Done,
//! `attempt_failed` with each Retry, `dead_lettered` with each Dead; and `replayed` for a
//! message `worker dlq replay` puts back.
//!
//! Only orders get events: the stream and both readers of it are keyed by order id, so a
//! fulfilment that names no order (payments mode: a `payment`/`refund` without `order.id`)
//! publishes nothing. Using its transaction id instead would put transaction ids where
//! `order-status` expects Xsolla order ids (integers it shows to players as orders).

use std::time::Duration;

use lapin::message::Delivery;
use shared::{
    envelope::{HeadersExt, header},
    order_events::{EventItem, EventKind, OrderEvent},
    webhook::{self, Effect, Fulfilment, FulfilmentMode},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{classify::truncate, dlq::DeadLetter, process::Outcome, settle::LAST_ERROR_MAX};

/// Who and what the delivery is about: from the `Fulfilment` the consume loop read once,
/// or, for a body with no usable fulfilment, from its summary.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Subject {
    effect: Effect,
    project_id: Option<u64>,
    order_id: String,
    user_id: String,
    items: Vec<EventItem>,
    sandbox: bool,
}

/// The event for `outcome` of `delivery`, or `None` when the delivery names no order (or
/// no user: then the stream holds no acceptance for it either). `fulfilment` is what the
/// consume loop read from the body (`None` when it could not read one); `dlq_id` is the id
/// of the DLQ copy for a Dead outcome.
pub fn for_outcome(
    delivery: &Delivery,
    outcome: &Outcome,
    fulfilment: Option<&Fulfilment>,
    dlq_id: Option<&str>,
) -> Option<OrderEvent> {
    let route_project = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.get_int(header::PROJECT_ID))
        .and_then(|p| u64::try_from(p).ok());
    let subject = match fulfilment {
        Some(f) => from_fulfilment(f.clone())?,
        None => from_summary(&delivery.data)?,
    };
    let mut e = event(subject, route_project, outcome, dlq_id);
    if let Outcome::Done = outcome {
        // Retry and Dead carry their attempt; a Done's is this delivery's.
        let prior = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.get_int(header::ATTEMPTS))
            .unwrap_or(0);
        e.attempt = u32::try_from(prior.max(0))
            .ok()
            .map(|p| p.saturating_add(1));
    }
    Some(e)
}

/// The `replayed` event of a message `worker dlq replay` put back (attempts reset), or
/// `None` when it names no order.
pub fn replayed(letter: &DeadLetter) -> Option<OrderEvent> {
    let route_project = letter
        .headers()
        .get_int(header::PROJECT_ID)
        .and_then(|p| u64::try_from(p).ok());
    let s = subject(FulfilmentMode { payments: true }, &letter.body)?;
    let mut e = OrderEvent::new(
        EventKind::Replayed,
        route_project.or(s.project_id),
        &s.order_id,
        &s.user_id,
    );
    e.effect = Some(s.effect);
    e.dlq_id = Some(letter.id.clone());
    e.items = s.items;
    e.sandbox = s.sandbox;
    Some(e)
}

fn subject(mode: FulfilmentMode, body: &[u8]) -> Option<Subject> {
    match mode.read(body) {
        Ok(f) => from_fulfilment(f),
        Err(_) => from_summary(body),
    }
}

fn from_fulfilment(f: Fulfilment) -> Option<Subject> {
    Some(Subject {
        effect: f.effect,
        project_id: f.project_id,
        order_id: f.order_id?,
        user_id: f.user_id,
        items: f
            .items
            .into_iter()
            .map(|i| EventItem {
                sku: i.sku,
                quantity: i.quantity,
                amount: None,
            })
            .collect(),
        sandbox: f.sandbox,
    })
}

/// Unfulfillable (bad items, say) but still an order: its dead-lettering belongs in the
/// timeline, so read what the summary knows.
fn from_summary(body: &[u8]) -> Option<Subject> {
    let s = webhook::summarize(body).ok()?;
    let effect = match s.notification_type.as_str() {
        "order_paid" | "payment" => Effect::Grant,
        "order_canceled" | "refund" => Effect::Revoke,
        _ => return None,
    };
    Some(Subject {
        effect,
        project_id: s.project_id,
        order_id: s.order_id?,
        user_id: s.user_id?,
        items: Vec::new(),
        sandbox: false,
    })
}

fn event(
    s: Subject,
    route_project: Option<u64>,
    outcome: &Outcome,
    dlq_id: Option<&str>,
) -> OrderEvent {
    let kind = match (outcome, s.effect) {
        (Outcome::Done, Effect::Grant) => EventKind::Granted,
        (Outcome::Done, Effect::Revoke) => EventKind::Revoked,
        (Outcome::Retry { .. }, _) => EventKind::AttemptFailed,
        (Outcome::Dead { .. }, _) => EventKind::DeadLettered,
    };
    // The project the ingress route named wins over the body's, as for the grant itself.
    let project = route_project.or(s.project_id);
    let mut e = OrderEvent::new(kind, project, &s.order_id, &s.user_id);
    e.effect = Some(s.effect);
    e.items = s.items;
    e.sandbox = s.sandbox;
    match outcome {
        Outcome::Done => {}
        Outcome::Retry {
            delay,
            attempts,
            failure,
        } => {
            e.attempt = Some(*attempts);
            e.http_status = failure.status;
            e.error = Some(error_text(&failure.error));
            e.next_retry_at = Some(after(*delay));
        }
        Outcome::Dead {
            reason,
            attempts,
            failure,
        } => {
            e.attempt = Some(*attempts);
            e.http_status = failure.status;
            e.error = Some(error_text(&failure.error));
            e.reason = Some(reason.as_str().to_owned());
            e.dlq_id = dlq_id.map(str::to_owned);
        }
    }
    e
}

/// RFC 3339 time `delay` from now.
fn after(delay: Duration) -> String {
    let at = OffsetDateTime::now_utc() + delay;
    at.format(&Rfc3339).unwrap_or_default()
}

/// The error as events carry it: as short as the DLQ header, and without anything that
/// looks like an e-mail address (an inventory API may echo the player's in its error body,
/// and the stream is read by the status server).
pub fn error_text(error: &str) -> String {
    redact_emails(&truncate(error, LAST_ERROR_MAX))
}

/// Replaces every `local@domain.tld`-shaped word with `<email>`.
pub fn redact_emails(text: &str) -> String {
    let word_char =
        |c: char| c.is_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-' | '\'');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let before = &rest[..at];
        let local_start = before
            .char_indices()
            .rev()
            .take_while(|(_, c)| word_char(*c))
            .last()
            .map_or(at, |(i, _)| i);
        let after = &rest[at + 1..];
        let domain_len = after
            .char_indices()
            .take_while(|(_, c)| c.is_alphanumeric() || matches!(c, '.' | '-'))
            .last()
            .map_or(0, |(i, c)| i + c.len_utf8());
        let domain = after[..domain_len].trim_end_matches('.');
        if local_start < at && domain.contains('.') {
            out.push_str(&rest[..local_start]);
            out.push_str("<email>");
            rest = &after[domain.len()..];
        } else {
            out.push_str(&rest[..=at]);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Failure, process::DeadReason};

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../tests/fixtures/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(path).unwrap()
    }

    #[test]
    fn a_done_grant_becomes_granted_with_items_and_the_route_project() {
        let s = subject(FulfilmentMode::default(), &fixture("order_paid_combined")).unwrap();
        assert_eq!(s.order_id, "1");
        let e = event(s.clone(), Some(99), &Outcome::Done, None);
        assert_eq!(e.kind, EventKind::Granted);
        assert_eq!(e.project_id, Some(99), "the route's project wins");
        assert_eq!(e.items.len(), 3);
        let e = event(s, None, &Outcome::Done, None);
        assert_eq!(e.project_id, Some(18404), "else the body's");
        let text = serde_json::to_string(&e).unwrap();
        assert!(!text.contains('@'), "{text}");
    }

    #[test]
    fn retries_and_dead_letters_say_when_why_and_where() {
        let s = subject(
            FulfilmentMode::default(),
            &fixture("order_canceled_separate"),
        )
        .unwrap();
        let retry = Outcome::Retry {
            delay: Duration::from_secs(60),
            attempts: 2,
            failure: Failure {
                status: Some(503),
                error: "HTTP 503".into(),
                retry_after: None,
            },
        };
        let e = event(s.clone(), None, &retry, None);
        assert_eq!(e.kind, EventKind::AttemptFailed);
        assert_eq!(e.effect, Some(Effect::Revoke));
        assert_eq!((e.attempt, e.http_status), (Some(2), Some(503)));
        let next = shared::envelope::parse_time(e.next_retry_at.as_deref().unwrap()).unwrap();
        let wait = next - OffsetDateTime::now_utc();
        assert!(wait > time::Duration::seconds(55) && wait <= time::Duration::seconds(60));
        let dead = Outcome::Dead {
            reason: DeadReason::Permanent,
            attempts: 1,
            failure: Failure {
                status: Some(422),
                error: "HTTP 422: unknown sku for player@example.com".into(),
                retry_after: None,
            },
        };
        let e = event(s, None, &dead, Some("the-id"));
        assert_eq!(e.kind, EventKind::DeadLettered);
        assert_eq!(e.reason.as_deref(), Some("permanent"));
        assert_eq!(e.dlq_id.as_deref(), Some("the-id"));
        assert_eq!(
            e.error.as_deref(),
            Some("HTTP 422: unknown sku for <email>")
        );
    }

    #[test]
    fn only_orders_get_events() {
        let payments = FulfilmentMode { payments: true };
        assert!(
            subject(payments, &fixture("payment")).is_none(),
            "no order id"
        );
        // Unfulfillable, but an order: the summary still names it.
        let body = br#"{"notification_type":"order_paid","order":{"id":7},"user":{"external_id":"u"},"items":[]}"#;
        let s = subject(FulfilmentMode::default(), body).unwrap();
        assert_eq!((s.order_id.as_str(), s.user_id.as_str()), ("7", "u"));
        assert!(subject(FulfilmentMode::default(), b"not json").is_none());
    }

    #[test]
    fn redacts_email_shaped_words_only() {
        assert_eq!(
            redact_emails("a x.y+z@mail.example.org, b@c.de."),
            "a <email>, <email>."
        );
        assert_eq!(
            redact_emails("@ a@b @home x@localhost"),
            "@ a@b @home x@localhost"
        );
        assert_eq!(redact_emails("é@ü.de"), "<email>");
    }
}
