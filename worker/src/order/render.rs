//! Output of `worker order`: a timeline for people, one JSON document for `jq`.
//!
//! JSON (README, "The operator's view: `worker order`"): one object per order,
//! `{"order_id", "project_id", "user_id", "now", "events": [{"at", "kind", "attempt",
//! "http_status", "error", "dlq_id"}…]}`, every field always present (`null` when unknown);
//! several orders make an array of those objects, in the order asked.
//!
//! Text escapes control and bidi-override characters: order ids come from the command
//! line and error texts from the game's API, and neither may move the cursor or recolour
//! the operator's terminal.

use std::fmt::Write as _;

use serde_json::{Value, json};
use shared::order_events::{EventKind, OrderEvent};

use super::timeline::Timeline;

/// `--json` for one order.
pub fn timeline_json(t: &Timeline) -> Value {
    json!({
        "order_id": t.order_id,
        "project_id": t.project_id,
        "user_id": t.user_id,
        "now": t.now.as_str(),
        "events": t.events.iter().map(event_json).collect::<Vec<_>>(),
    })
}

fn event_json(e: &OrderEvent) -> Value {
    json!({
        "at": e.at,
        "kind": e.kind.as_str(),
        "attempt": e.attempt,
        "http_status": e.http_status,
        "error": e.error,
        "dlq_id": e.dlq_id,
    })
}

/// The text timeline of one order: a heading, one line per event, the `now:` line.
pub fn timeline_text(t: &Timeline) -> String {
    let mut out = format!("order {}", printable(&t.order_id));
    if let Some(project) = t.project_id {
        let _ = write!(out, "  project {project}");
    }
    if let Some(user) = &t.user_id {
        let _ = write!(out, "  user {}", printable(user));
    }
    out.push('\n');
    let width = t
        .events
        .iter()
        .map(|e| e.kind.as_str().len())
        .max()
        .unwrap_or(0);
    for e in &t.events {
        let detail = detail(e);
        let line = format!("  {}  {:width$}  {}", when(&e.at), e.kind.as_str(), detail);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let _ = writeln!(out, "now: {} ({})", t.now.as_str(), t.now.meaning());
    out
}

/// What follows the kind on an event's line.
fn detail(e: &OrderEvent) -> String {
    let mut parts: Vec<String> = Vec::new();
    match e.kind {
        EventKind::Accepted | EventKind::CancelAccepted => {
            if !e.items.is_empty() {
                let items: Vec<String> = e
                    .items
                    .iter()
                    .map(|i| format!("{} ×{}", printable(&i.sku), i.quantity))
                    .collect();
                parts.push(items.join(", "));
            }
        }
        _ => {
            let step = match (e.effect, e.attempt) {
                (Some(effect), Some(n)) => Some(format!("{} attempt {n}", effect.as_str())),
                (Some(effect), None) => Some(effect.as_str().to_owned()),
                (None, Some(n)) => Some(format!("attempt {n}")),
                (None, None) => None,
            };
            parts.extend(step);
            // The worker's error texts already start with the status when there is one.
            match (e.http_status, &e.error) {
                (Some(status), Some(error)) if error.starts_with(&format!("HTTP {status}")) => {
                    parts.push(printable(error));
                }
                (status, error) => {
                    parts.extend(status.map(|s| format!("HTTP {s}")));
                    parts.extend(error.as_deref().map(printable));
                }
            }
            if let Some(reason) = &e.reason {
                parts.push(format!("reason {}", printable(reason)));
            }
            if let Some(next) = &e.next_retry_at {
                parts.push(format!("next retry {}", when(next)));
            }
            if let Some(id) = &e.dlq_id {
                parts.push(format!("dlq id {}", printable(id)));
            }
        }
    }
    parts.join(" · ")
}

/// An RFC 3339 time as the text output shows it: UTC, milliseconds, so the column lines
/// up; anything else as it came (escaped).
fn when(at: &str) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    shared::envelope::parse_time(at)
        .and_then(|t| t.to_offset(time::UtcOffset::UTC).format(&format).ok())
        .unwrap_or_else(|| printable(at))
}

/// `s` with every character `shared::terminal::is_unsafe` names written as a `\u{…}`
/// escape, so outside text prints as what it is (as `worker dlq` prints it).
pub fn printable(s: &str) -> String {
    crate::dlq::escape::line(s).into_owned()
}

#[cfg(test)]
mod tests {
    use shared::{order_events::EventItem, webhook::Effect};

    use super::*;
    use crate::order::timeline::Timeline;

    fn timeline() -> Timeline {
        let mut accepted = OrderEvent::new(EventKind::Accepted, Some(18404), "571134", "u1");
        accepted.at = "2026-12-01T10:00:00Z".into();
        accepted.items = vec![EventItem {
            sku: "gold".into(),
            quantity: 100,
            amount: None,
        }];
        let mut failed = OrderEvent::new(EventKind::AttemptFailed, Some(18404), "571134", "u1");
        failed.at = "2026-12-01T10:00:01Z".into();
        failed.effect = Some(Effect::Grant);
        failed.attempt = Some(1);
        failed.http_status = Some(503);
        failed.error = Some("HTTP 503: down\u{1b}[31m for maintenance".into());
        failed.next_retry_at = Some("2026-12-01T10:00:11Z".into());
        let mut granted = OrderEvent::new(EventKind::Granted, Some(18404), "571134", "u1");
        granted.at = "2026-12-01T10:00:12.25+00:00".into();
        granted.effect = Some(Effect::Grant);
        granted.attempt = Some(2);
        Timeline::new("571134", vec![accepted, failed, granted]).unwrap()
    }

    #[test]
    fn text_is_one_line_per_event_then_where_it_stands() {
        let text = timeline_text(&timeline());
        assert_eq!(
            text,
            "order 571134  project 18404  user u1\n\
             \x20 2026-12-01T10:00:00.000Z  accepted        gold ×100\n\
             \x20 2026-12-01T10:00:01.000Z  attempt_failed  grant attempt 1 · HTTP 503: down\\u{1b}[31m for maintenance · next retry 2026-12-01T10:00:11.000Z\n\
             \x20 2026-12-01T10:00:12.250Z  granted         grant attempt 2\n\
             now: granted (the game's inventory accepted the grant)\n"
        );
    }

    #[test]
    fn json_has_exactly_the_documented_fields() {
        let doc = timeline_json(&timeline());
        let keys: Vec<&str> = doc
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["events", "now", "order_id", "project_id", "user_id"]);
        assert_eq!(doc["now"], "granted");
        assert_eq!(doc["project_id"], 18404);
        let first = doc["events"][0].as_object().unwrap();
        let keys: Vec<&str> = first.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["at", "attempt", "dlq_id", "error", "http_status", "kind"]
        );
        assert_eq!(doc["events"][1]["http_status"], 503);
        assert_eq!(doc["events"][2]["kind"], "granted");
    }

    #[test]
    fn escapes_control_and_bidi_characters() {
        assert_eq!(
            printable("a\nb\u{7f}\u{202e}c"),
            "a\\u{a}b\\u{7f}\\u{202e}c"
        );
        assert_eq!(printable("ordinary · ×"), "ordinary · ×");
    }
}
