//! How long a fault was felt: when grants stopped (the longest gap between two grants the
//! inventory applied), how long an ingress answered nothing but 5xx (or nothing at all), and
//! how long one webhook went refused before it was acknowledged.

use std::{collections::BTreeMap, time::Duration};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::plan::Answered;
use crate::inventory::InventoryHandle;

/// When each grant was applied, as seen from the test: woken by every change of the
/// inventory (no polling interval), until `stop`. One instant per newly granted order.
pub async fn record_grants(inventory: &InventoryHandle, stop: CancellationToken) -> Vec<Instant> {
    let mut changes = inventory.subscribe();
    let mut seen = inventory.inspect(|s| s.grants.len());
    let mut times = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return times,
            changed = changes.changed() => if changed.is_err() { return times },
        }
        let now = inventory.inspect(|s| s.grants.len());
        if now > seen {
            times.extend(std::iter::repeat_n(Instant::now(), now - seen));
            seen = now;
        }
    }
}

/// The longest stretch of `[from, to]` without a grant (`grants` sorted), and where it
/// began. The stretch from `from` to the first grant counts: a fault that stops grants at
/// once shows as a gap from its start.
pub fn longest_gap(grants: &[Instant], from: Instant, to: Instant) -> (Duration, Instant) {
    let inside = grants.iter().copied().filter(|t| *t >= from && *t <= to);
    let mut points = std::iter::once(from)
        .chain(inside)
        .chain(std::iter::once(to));
    let mut best = (Duration::ZERO, from);
    let mut last = points.next().unwrap_or(from);
    for t in points {
        let gap = t.saturating_duration_since(last);
        if gap > best.0 {
            best = (gap, last);
        }
        last = t;
    }
    best
}

/// One ingress's longest refusal: from the first answer that was not a success (a 5xx, or
/// no answer) after a success, to the next success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub ingress: usize,
    pub began: Instant,
    pub took: Duration,
}

/// Whether `[began, ended]` overlaps `[from, to)`: a refusal that began a moment before a
/// fault's recorded start (requests in flight when the node died) still belongs to it.
fn overlaps(began: Instant, ended: Instant, from: Instant, to: Instant) -> bool {
    began < to && ended >= from
}

/// The longest refusal of each ingress that overlaps `[from, to)`, from `answers` sorted by
/// time (refusals still open at the end of the answers are measured to the last answer).
pub fn refusals(answers: &[Answered], from: Instant, to: Instant) -> BTreeMap<usize, Refusal> {
    let mut open: BTreeMap<usize, Instant> = BTreeMap::new();
    let mut runs: Vec<Refusal> = Vec::new();
    for a in answers {
        match (a.is_success(), open.get(&a.ingress).copied()) {
            (true, Some(began)) => {
                open.remove(&a.ingress);
                runs.push(Refusal {
                    ingress: a.ingress,
                    began,
                    took: a.at.saturating_duration_since(began),
                });
            }
            (false, None) => {
                open.insert(a.ingress, a.at);
            }
            _ => {}
        }
    }
    let end = answers.last().map(|a| a.at);
    for (ingress, began) in open {
        let took = end.map_or(Duration::ZERO, |e| e.saturating_duration_since(began));
        runs.push(Refusal {
            ingress,
            began,
            took,
        });
    }
    let mut longest: BTreeMap<usize, Refusal> = BTreeMap::new();
    for run in runs
        .into_iter()
        .filter(|r| overlaps(r.began, r.began + r.took, from, to))
    {
        let best = longest.entry(run.ingress).or_insert(run);
        if run.took > best.took {
            *best = run;
        }
    }
    longest
}

/// The longest any one webhook delivery waited from its first refused send to its
/// acknowledgement, among deliveries whose refusal overlaps `[from, to)`; `None` when none
/// was refused there. Deliveries never acknowledged are the verdict's business.
pub fn longest_refused_webhook(
    answers: &[Answered],
    from: Instant,
    to: Instant,
) -> Option<Duration> {
    let mut first_refusal: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut longest = None;
    for a in answers {
        if !a.is_success() {
            first_refusal.entry(a.delivery).or_insert(a.at);
        } else if let Some(began) = first_refusal.remove(&a.delivery)
            && overlaps(began, a.at, from, to)
        {
            let took = a.at.saturating_duration_since(began);
            longest = Some(longest.map_or(took, |l: Duration| l.max(took)));
        }
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn answer(t0: Instant, delivery: u64, ingress: usize, at: u64, status: u16) -> Answered {
        Answered {
            delivery,
            ingress,
            at: ms(t0, at),
            status: (status != 0).then_some(status),
        }
    }

    #[test]
    fn the_longest_gap_counts_from_the_window_start() {
        let t0 = Instant::now();
        let grants = [10, 20, 900, 910].map(|m| ms(t0, m));
        assert_eq!(
            longest_gap(&grants, ms(t0, 0), ms(t0, 1000)),
            (Duration::from_millis(880), ms(t0, 20))
        );
        // A fault at 15 ms: the gap starts at the last grant inside the window.
        assert_eq!(
            longest_gap(&grants, ms(t0, 15), ms(t0, 1000)).0,
            Duration::from_millis(880)
        );
        // No grant at all in the window: the whole window.
        assert_eq!(
            longest_gap(&grants, ms(t0, 30), ms(t0, 800)).0,
            Duration::from_millis(770)
        );
    }

    #[test]
    fn a_refusal_runs_from_the_first_failure_to_the_next_success_per_ingress() {
        let t0 = Instant::now();
        let answers = [
            answer(t0, 1, 0, 0, 204),
            answer(t0, 2, 0, 100, 503),
            answer(t0, 3, 1, 150, 204),
            answer(t0, 2, 0, 400, 0), // no answer counts as refused
            answer(t0, 2, 0, 700, 204),
            answer(t0, 4, 1, 800, 503),
            answer(t0, 4, 1, 850, 204),
        ];
        let r = refusals(&answers, ms(t0, 0), ms(t0, 1000));
        assert_eq!(r[&0].took, Duration::from_millis(600));
        assert_eq!(r[&0].began, ms(t0, 100));
        assert_eq!(r[&1].took, Duration::from_millis(50));
        // Refusals that overlap the window: one begun just before it counts.
        let r = refusals(&answers, ms(t0, 200), ms(t0, 750));
        assert_eq!(r.len(), 1);
        assert_eq!(r[&0].took, Duration::from_millis(600));
        assert!(refusals(&answers, ms(t0, 710), ms(t0, 790)).is_empty());
        assert_eq!(
            longest_refused_webhook(&answers, ms(t0, 0), ms(t0, 1000)),
            Some(Duration::from_millis(600))
        );
        assert_eq!(
            longest_refused_webhook(&answers, ms(t0, 750), ms(t0, 1000)),
            Some(Duration::from_millis(50))
        );
    }
}
