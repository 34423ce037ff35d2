//! What each scenario cost, for the suite's summary: how long grants stopped, how long an
//! ingress answered only 503s (or nothing), how long one webhook stayed refused.

use std::{fmt::Write as _, time::Duration};

use tests::suite::{
    outage::{self, Refusal},
    plan::Answered,
    verdict::FaultEvent,
};
use tokio::time::Instant;

use super::scenarios::Scenario;

/// One scenario's cost, over its window: from the fault until the next scenario (or the
/// end of sending) began.
#[derive(Debug, Clone)]
pub struct Cost {
    pub grants_stopped: Duration,
    /// Per ingress that refused anything.
    pub refusals: Vec<Refusal>,
    pub longest_refused_webhook: Option<Duration>,
}

impl Cost {
    pub fn longest_refusal(&self) -> Duration {
        self.refusals
            .iter()
            .map(|r| r.took)
            .max()
            .unwrap_or_default()
    }
}

/// The cost of each scenario; `sent` is when the last order was started (grants stop
/// after it for want of orders, not for a fault).
pub fn costs(
    scenarios: &[Scenario],
    grants: &[Instant],
    answers: &[Answered],
    sent: Instant,
) -> Vec<Cost> {
    scenarios
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let to = scenarios
                .get(i + 1)
                .map_or(sent, |next| next.began)
                .max(s.began);
            Cost {
                grants_stopped: outage::longest_gap(grants, s.began, to).0,
                refusals: outage::refusals(answers, s.began, to)
                    .into_values()
                    .collect(),
                longest_refused_webhook: outage::longest_refused_webhook(answers, s.began, to),
            }
        })
        .collect()
}

/// The scenarios as the fault suite's summary lists faults.
pub fn fault_events(scenarios: &[Scenario], t0: Instant) -> Vec<FaultEvent> {
    scenarios
        .iter()
        .map(|s| FaultEvent {
            what: s.what.clone(),
            after_acks: s.after_acks,
            at: s.began - t0,
            took: s.ended - s.began,
        })
        .collect()
}

/// The per-scenario table: steps, then the cost.
pub fn table(scenarios: &[Scenario], costs: &[Cost], ingress_names: &[String]) -> String {
    let mut t = String::new();
    for (n, (s, c)) in scenarios.iter().zip(costs).enumerate() {
        let _ = writeln!(t, "  {}. {}", n + 1, s.what);
        for (step, at) in &s.steps {
            let _ = writeln!(t, "       {:>6.2} s  {step}", at.as_secs_f64());
        }
        let refusals: Vec<String> = c
            .refusals
            .iter()
            .map(|r| format!("{} {:.2} s", ingress_names[r.ingress], r.took.as_secs_f64()))
            .collect();
        let _ = writeln!(
            t,
            "     grants stopped for at most {:.2} s; longest run of 503s: {}; one webhook refused for at most {}",
            c.grants_stopped.as_secs_f64(),
            if refusals.is_empty() {
                "none".to_owned()
            } else {
                refusals.join(", ")
            },
            c.longest_refused_webhook
                .map_or("-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64())),
        );
    }
    let worst =
        |f: &dyn Fn(&Cost) -> Duration| costs.iter().map(f).max().map_or(0.0, |d| d.as_secs_f64());
    let _ = writeln!(
        t,
        "  worst: grants stopped {:.2} s; an ingress answered only 503s for {:.2} s; a webhook went refused for {:.2} s",
        worst(&|c| c.grants_stopped),
        worst(&Cost::longest_refusal),
        worst(&|c| c.longest_refused_webhook.unwrap_or_default()),
    );
    t
}
