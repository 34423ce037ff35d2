//! An order's timeline and where it stands now: a pure function of its events, in the
//! order the stream holds them (the order they were published in: the acceptance always
//! comes before the worker events it caused, whatever the clocks of the hosts say).

use serde::Serialize;
use shared::{
    order_events::{EventKind, OrderEvent},
    webhook::Effect,
};

/// Where an order stands, in one word (`worker order`'s last line and `now` in `--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// The payment is durably accepted and no worker has reported on it yet (it is queued,
    /// being granted, or no worker is running).
    Accepted,
    /// A grant is due again after the worker already reported on the order: an operator
    /// replayed it, or Xsolla sent the payment again after a failure.
    Granting,
    /// The last grant attempt failed; another is scheduled (`next_retry_at`).
    Retrying,
    /// The game's inventory answered 2xx to the grant.
    Granted,
    /// Parked in the DLQ (the last grant or revocation step); `worker dlq` has it.
    DeadLettered,
    /// The cancel is accepted and the revocation is not done yet (also when the grant
    /// completed after the cancel: a cancel is final).
    Canceled,
    /// The game's inventory answered 2xx to the revocation.
    Revoked,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Accepted => "accepted",
            Standing::Granting => "granting",
            Standing::Retrying => "retrying",
            Standing::Granted => "granted",
            Standing::DeadLettered => "dead_lettered",
            Standing::Canceled => "canceled",
            Standing::Revoked => "revoked",
        }
    }

    /// The sentence after `now:` in the text output.
    pub fn meaning(self) -> &'static str {
        match self {
            Standing::Accepted => "payment accepted; no worker has reported on it yet",
            Standing::Granting => "a grant is due again; no result yet",
            Standing::Retrying => "the last grant attempt failed; another is scheduled",
            Standing::Granted => "the game's inventory accepted the grant",
            Standing::DeadLettered => "parked in the DLQ; see `worker dlq show <dlq id>`",
            Standing::Canceled => "cancel accepted; the revocation is not done yet",
            Standing::Revoked => "the game's inventory accepted the revocation",
        }
    }
}

/// Where an order with these events (stream order) stands; `None` without events.
///
/// - `revoked` once any revocation succeeded (final);
/// - else, once a cancel is accepted: `dead_lettered` if the last revocation step is a
///   dead-lettering, else `canceled` (a grant that completes after the cancel changes
///   nothing: a status never goes back);
/// - else `granted` once any grant succeeded (later duplicates change nothing);
/// - else the last grant step decides: `attempt_failed` → `retrying`, `dead_lettered` →
///   `dead_lettered`, `replayed` → `granting`, `accepted` → `accepted` if it is the first
///   thing known of the order's grant, `granting` if the worker had reported before.
pub fn standing(events: &[OrderEvent]) -> Option<Standing> {
    if events.is_empty() {
        return None;
    }
    let any = |kind: EventKind| events.iter().any(|e| e.kind == kind);
    if any(EventKind::Revoked) {
        return Some(Standing::Revoked);
    }
    if any(EventKind::CancelAccepted) {
        let last_revocation_step = events
            .iter()
            .rev()
            .find(|e| e.effect == Some(Effect::Revoke) && is_worker_step(e.kind));
        return Some(match last_revocation_step.map(|e| e.kind) {
            Some(EventKind::DeadLettered) => Standing::DeadLettered,
            _ => Standing::Canceled,
        });
    }
    if any(EventKind::Granted) {
        return Some(Standing::Granted);
    }
    let grant_steps: Vec<&OrderEvent> = events
        .iter()
        .filter(|e| e.kind == EventKind::Accepted || e.effect != Some(Effect::Revoke))
        .collect();
    let Some((last, before)) = grant_steps.split_last() else {
        // Only revocation steps, their cancel's acceptance older than the read.
        return Some(Standing::Canceled);
    };
    Some(match last.kind {
        EventKind::AttemptFailed => Standing::Retrying,
        EventKind::DeadLettered => Standing::DeadLettered,
        EventKind::Replayed => Standing::Granting,
        _ if before.iter().any(|e| is_worker_step(e.kind)) => Standing::Granting,
        _ => Standing::Accepted,
    })
}

fn is_worker_step(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::AttemptFailed | EventKind::DeadLettered | EventKind::Replayed
    )
}

/// One order's timeline, as `worker order` prints it.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub order_id: String,
    /// The latest project any event names.
    pub project_id: Option<u64>,
    /// The latest user any event names.
    pub user_id: Option<String>,
    pub now: Standing,
    /// Stream order: oldest first.
    pub events: Vec<OrderEvent>,
}

impl Timeline {
    /// `None` without events (no event names the order within `--since`).
    pub fn new(order_id: &str, events: Vec<OrderEvent>) -> Option<Timeline> {
        let now = standing(&events)?;
        let project_id = events.iter().rev().find_map(|e| e.project_id);
        let user_id = events
            .iter()
            .rev()
            .map(|e| e.user_id.as_str())
            .find(|u| !u.is_empty())
            .map(str::to_owned);
        Some(Timeline {
            order_id: order_id.to_owned(),
            project_id,
            user_id,
            now,
            events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, effect: Option<Effect>) -> OrderEvent {
        let mut e = OrderEvent::new(kind, Some(1), "571134", "u1");
        e.effect = effect;
        e
    }

    fn now(steps: &[(EventKind, Option<Effect>)]) -> Option<&'static str> {
        let events: Vec<_> = steps.iter().map(|(k, e)| ev(*k, *e)).collect();
        standing(&events).map(Standing::as_str)
    }

    const G: Option<Effect> = Some(Effect::Grant);
    const R: Option<Effect> = Some(Effect::Revoke);
    use EventKind::*;

    #[test]
    fn the_grant_path() {
        assert_eq!(now(&[]), None);
        assert_eq!(now(&[(Accepted, None)]), Some("accepted"));
        assert_eq!(
            now(&[(Accepted, None), (AttemptFailed, G)]),
            Some("retrying")
        );
        assert_eq!(
            now(&[(Accepted, None), (AttemptFailed, G), (Granted, G)]),
            Some("granted")
        );
        assert_eq!(
            now(&[(Accepted, None), (DeadLettered, G)]),
            Some("dead_lettered")
        );
        assert_eq!(
            now(&[(Accepted, None), (DeadLettered, G), (Replayed, G)]),
            Some("granting")
        );
        assert_eq!(
            now(&[(Accepted, None), (DeadLettered, G), (Accepted, None)]),
            Some("granting"),
            "Xsolla sent it again after the failure"
        );
        assert_eq!(
            now(&[(Accepted, None), (Granted, G), (Accepted, None)]),
            Some("granted"),
            "a duplicate payment after the grant changes nothing"
        );
        assert_eq!(
            now(&[(Granted, G), (AttemptFailed, G)]),
            Some("granted"),
            "a duplicate delivery failing after the grant changes nothing"
        );
    }

    #[test]
    fn the_cancel_path() {
        assert_eq!(
            now(&[(Accepted, None), (Granted, G), (CancelAccepted, None)]),
            Some("canceled")
        );
        assert_eq!(
            now(&[(CancelAccepted, None), (AttemptFailed, R)]),
            Some("canceled"),
            "revocation retrying: still canceled"
        );
        assert_eq!(
            now(&[(Accepted, None), (CancelAccepted, None), (Granted, G)]),
            Some("canceled"),
            "a grant completing after the cancel leaves it canceled"
        );
        assert_eq!(
            now(&[(CancelAccepted, None), (DeadLettered, R)]),
            Some("dead_lettered")
        );
        assert_eq!(
            now(&[(CancelAccepted, None), (DeadLettered, R), (Replayed, R)]),
            Some("canceled")
        );
        assert_eq!(
            now(&[(CancelAccepted, None), (Revoked, R), (Accepted, None)]),
            Some("revoked")
        );
        assert_eq!(now(&[(AttemptFailed, R)]), Some("canceled"));
    }

    #[test]
    fn the_timeline_names_the_latest_project_and_user() {
        let mut first = ev(Accepted, None);
        first.project_id = None;
        let t = Timeline::new("571134", vec![first, ev(Granted, G)]).unwrap();
        assert_eq!(t.project_id, Some(1));
        assert_eq!(t.user_id.as_deref(), Some("u1"));
        assert_eq!(t.now, Standing::Granted);
        assert!(Timeline::new("1", Vec::new()).is_none());
    }
}
