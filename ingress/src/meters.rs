//! The per-webhook metrics, each handle looked up once. `metrics::counter!` with a label
//! computed at run time builds its key (a `Vec` of labels), hashes it and takes the
//! registry's lock on every call; six such calls per webhook cost about 1 µs of the
//! ingress's CPU (BENCHMARKS.md). A handle is resolved on its first use, not up front, so
//! `/metrics` shows the same series as before: only the ones that happened.

use std::sync::OnceLock;

use metrics::{Counter, Histogram};

/// Notification types with their own `type` label (Xsolla's documented ones); any other
/// type is `other`, an unverified request `unverified`.
pub const TYPES: &[&str] = &[
    "user_validation",
    "user_search",
    "payment",
    "refund",
    "partial_refund",
    "user_balance_operation",
    "create_subscription",
    "cancel_subscription",
    "update_subscription",
    "order_paid",
    "order_canceled",
    "payment_account_add",
    "payment_account_remove",
    "partner_side_catalog",
    "redeem_key",
    "get_pincode",
    "afs_reject",
    "afs_black_list",
    "non_renewal_subscription",
    "other",
    "unverified",
];

/// Every `outcome` label of `ingress_requests_total` (`accepted`, then
/// [`crate::error::ApiError::outcome`]'s).
pub const OUTCOMES: &[&str] = &[
    "accepted",
    "invalid_signature",
    "invalid_parameter",
    "too_large",
    "forbidden_ip",
    "invalid_user",
    "unavailable",
];

/// `ingress_requests_total{type,outcome}` and `ingress_request_duration_seconds{outcome}`.
pub struct RequestMeters {
    requests: Vec<OnceLock<Counter>>,
    durations: Vec<OnceLock<Histogram>>,
}

impl Default for RequestMeters {
    fn default() -> Self {
        RequestMeters {
            requests: (0..TYPES.len() * OUTCOMES.len())
                .map(|_| OnceLock::new())
                .collect(),
            durations: (0..OUTCOMES.len()).map(|_| OnceLock::new()).collect(),
        }
    }
}

impl RequestMeters {
    /// Counts one answered request of `kind` (a notification type, or `None` if it was
    /// not verified) with `outcome` (one of [`OUTCOMES`]) that took `seconds`.
    pub fn record(&self, kind: Option<&str>, outcome: &'static str, seconds: f64) {
        let t = type_index(kind);
        let Some(o) = OUTCOMES.iter().position(|known| *known == outcome) else {
            // An outcome added to `ApiError` but not here: counted all the same, uncached.
            metrics::counter!("ingress_requests_total", "type" => TYPES[t], "outcome" => outcome)
                .increment(1);
            metrics::histogram!("ingress_request_duration_seconds", "outcome" => outcome)
                .record(seconds);
            return;
        };
        self.requests[t * OUTCOMES.len() + o]
            .get_or_init(|| {
                metrics::counter!("ingress_requests_total", "type" => TYPES[t], "outcome" => outcome)
            })
            .increment(1);
        self.durations[o]
            .get_or_init(
                || metrics::histogram!("ingress_request_duration_seconds", "outcome" => outcome),
            )
            .record(seconds);
    }
}

/// The `type` label's index: bounded, so a sender cannot grow the label set.
fn type_index(kind: Option<&str>) -> usize {
    let Some(kind) = kind else {
        return TYPES.len() - 1;
    };
    let known = &TYPES[..TYPES.len() - 2];
    known
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(TYPES.len() - 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_bounded_and_unverified_is_its_own() {
        assert_eq!(TYPES[type_index(Some("order_paid"))], "order_paid");
        assert_eq!(TYPES[type_index(Some("made_up"))], "other");
        assert_eq!(TYPES[type_index(Some("other"))], "other");
        assert_eq!(TYPES[type_index(Some("unverified"))], "other");
        assert_eq!(TYPES[type_index(None)], "unverified");
    }
}
