//! The end-of-run checks (what Xsolla saw acknowledged against what the game applied and
//! what sits in the DLQ) and the summary table.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    time::Duration,
};

use worker::dlq::DeadLetter;

use crate::{inventory::Snapshot, sim::Answer};

use super::plan::{Cancel, Dup, OrderResult};

/// What the checks found: `problems` fail the suite, `notes` are reported only.
#[derive(Debug, Default)]
pub struct Findings {
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

/// At most this many ids per line; the rest are counted.
const IDS_SHOWN: usize = 40;

fn ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let all: Vec<&str> = ids.into_iter().collect();
    let mut s = all
        .iter()
        .take(IDS_SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if all.len() > IDS_SHOWN {
        let _ = write!(s, " … and {} more", all.len() - IDS_SHOWN);
    }
    s
}

/// Adds a problem naming the orders, if there are any.
fn problem(f: &mut Findings, what: &str, list: &[String]) {
    if !list.is_empty() {
        f.problems.push(format!(
            "{what} ({}): {}",
            list.len(),
            ids(list.iter().map(String::as_str))
        ));
    }
}

/// Checks every invariant of the run; see the module docs of the suite.
pub fn check(
    results: &[OrderResult],
    state: &Snapshot,
    dlq: &[DeadLetter],
    unrouted: Option<u64>,
) -> Findings {
    let mut f = Findings::default();
    let ours: BTreeSet<&str> = results.iter().map(|r| r.plan.id.as_str()).collect();

    // Xsolla's side: with its retries, every webhook should end acknowledged.
    let unacked: Vec<String> = results
        .iter()
        .flat_map(|r| {
            r.unacked().map(|(kind, d)| {
                let last = d
                    .attempts
                    .last()
                    .map_or_else(|| "no attempt".to_owned(), |a| a.answer.to_string());
                format!(
                    "{} {kind} {:?} after {} sends (last: {last})",
                    r.plan.id,
                    d.outcome,
                    d.attempts.len()
                )
            })
        })
        .collect();
    problem(&mut f, "webhooks never acknowledged", &unacked);

    let (mut missing, mut doubled, mut rejected_granted, mut unpaid_granted) =
        (vec![], vec![], vec![], vec![]);
    let (mut not_revoked, mut revoked_twice, mut revoked_before_grant, mut revoked_uncanceled) =
        (vec![], vec![], vec![], vec![]);
    for r in results {
        let id = r.plan.id.clone();
        let grant = state.grant(&id);
        match (r.plan.rejected, r.paid_acked(), grant) {
            (true, _, Some(_)) => rejected_granted.push(id.clone()),
            (false, true, None) => missing.push(id.clone()),
            (false, false, Some(_)) => unpaid_granted.push(id.clone()),
            _ => {}
        }
        if let Some(g) = grant
            && g.times_applied != 1
        {
            doubled.push(format!("{id}×{}", g.times_applied));
        }
        let revocation = state.revocations.get(&id);
        match (r.cancel_acked(), revocation) {
            (true, None) => not_revoked.push(id.clone()),
            (true, Some(rev)) => {
                if rev.times_applied != 1 {
                    revoked_twice.push(format!("{id}×{}", rev.times_applied));
                }
                if !grant.is_some_and(|g| g.revoked && g.revoked_after_grant) {
                    revoked_before_grant.push(id.clone());
                }
            }
            (false, Some(_)) => revoked_uncanceled.push(id.clone()),
            (false, None) => {}
        }
    }
    problem(&mut f, "acknowledged order_paid never granted", &missing);
    problem(&mut f, "granted more than once", &doubled);
    problem(&mut f, "rejected-SKU orders granted", &rejected_granted);
    problem(
        &mut f,
        "acknowledged order_canceled never revoked",
        &not_revoked,
    );
    problem(&mut f, "revoked more than once", &revoked_twice);
    problem(
        &mut f,
        "revocations not recorded after their grant",
        &revoked_before_grant,
    );
    problem(
        &mut f,
        "revoked without an acknowledged order_canceled",
        &revoked_uncanceled,
    );
    if !unpaid_granted.is_empty() {
        f.notes.push(format!(
            "granted though order_paid was never acknowledged (allowed) ({}): {}",
            unpaid_granted.len(),
            ids(unpaid_granted.iter().map(String::as_str))
        ));
    }
    let strangers: Vec<String> = state
        .grants
        .keys()
        .chain(state.revocations.keys())
        .filter(|id| !ours.contains(id.as_str()))
        .cloned()
        .collect();
    problem(&mut f, "effects on orders nobody sent", &strangers);
    if state.duplicates_applied != 0 || state.key_conflicts != 0 {
        f.problems.push(format!(
            "inventory counted duplicates_applied = {}, key_conflicts = {} (both must be 0)",
            state.duplicates_applied, state.key_conflicts
        ));
    }

    check_dlq(&mut f, results, dlq);
    match unrouted {
        Some(0) => {}
        n => f.problems.push(format!(
            "xsolla.unrouted holds {n:?} messages (want Some(0))"
        )),
    }
    f
}

/// The DLQ must hold exactly the rejected-SKU orders (a copy more is allowed: a worker
/// killed between parking and acking parks again), each parked as permanent after a 422.
fn check_dlq(f: &mut Findings, results: &[OrderResult], dlq: &[DeadLetter]) {
    let rejected: BTreeSet<&str> = results
        .iter()
        .filter(|r| r.plan.rejected)
        .map(|r| r.plan.id.as_str())
        .collect();
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    for m in dlq {
        let order = m
            .order_id
            .clone()
            .unwrap_or_else(|| format!("<no order id: {}>", m.id));
        *copies.entry(order.clone()).or_default() += 1;
        if !rejected.contains(order.as_str()) {
            wrong.push(format!(
                "{order} ({}, reason {:?}, status {:?}, error {:?}, attempts {:?})",
                m.notification_type.as_deref().unwrap_or("?"),
                m.reason,
                m.last_status,
                m.last_error,
                m.attempts
            ));
        } else if m.reason.as_ref().map(|r| r.as_str()) != Some("permanent")
            || m.last_status != Some(422)
        {
            wrong.push(format!(
                "{order} parked with reason {:?} status {:?} (want permanent, 422)",
                m.reason, m.last_status
            ));
        }
    }
    problem(f, "unexpected DLQ entries", &wrong);
    let absent: Vec<String> = rejected
        .iter()
        .filter(|id| !copies.contains_key(**id))
        .map(|id| (*id).to_owned())
        .collect();
    problem(f, "rejected-SKU orders missing from the DLQ", &absent);
    let extra: Vec<String> = copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| format!("{id}×{n}"))
        .collect();
    if !extra.is_empty() {
        f.notes.push(format!(
            "orders parked more than once (at-least-once, allowed): {}",
            ids(extra.iter().map(String::as_str))
        ));
    }
}

/// One injected fault, for the summary.
#[derive(Debug, Clone)]
pub struct FaultEvent {
    pub what: String,
    /// Webhooks acknowledged when it began.
    pub after_acks: u64,
    /// Since the suite started.
    pub at: Duration,
    pub took: Duration,
}

/// Timings of the run.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub setup: Duration,
    pub sending: Duration,
    pub drain: Duration,
    pub total: Duration,
}

/// The summary table.
pub fn summary(
    results: &[OrderResult],
    state: &Snapshot,
    dlq: &[DeadLetter],
    faults: &[FaultEvent],
    timings: Timings,
    seed: u64,
) -> String {
    let count = |p: &dyn Fn(&OrderResult) -> bool| results.iter().filter(|r| p(r)).count();
    let orders = results.len();
    let paid_acked = count(&|r| r.paid_acked());
    let rejected = count(&|r| r.plan.rejected);
    let granted = count(&|r| state.grant(&r.plan.id).is_some());
    let canceled = count(&|r| r.plan.cancel != Cancel::No);
    let before = count(&|r| r.plan.cancel == Cancel::Before);
    let concurrent = count(&|r| r.plan.cancel == Cancel::Concurrent);
    let cancel_acked = count(&|r| r.cancel_acked());
    let revoked = count(&|r| state.revocations.contains_key(&r.plan.id));
    let dup_paid = count(&|r| r.plan.dup_paid != Dup::No);
    let dup_paid_conc = count(&|r| r.plan.dup_paid == Dup::Concurrent);
    let dup_cancel = count(&|r| r.plan.dup_cancel != Dup::No && !r.canceled.is_empty());
    let deliveries: Vec<_> = results
        .iter()
        .flat_map(|r| r.paid.iter().chain(&r.canceled))
        .collect();
    let acked = deliveries.iter().filter(|d| d.acknowledged()).count();
    let sends: usize = deliveries.iter().map(|d| d.attempts.len()).sum();
    let no_answer = deliveries
        .iter()
        .flat_map(|d| &d.attempts)
        .filter(|a| matches!(a.answer, Answer::NoAnswer(_)))
        .count();
    let status_5xx = deliveries
        .iter()
        .flat_map(|d| &d.attempts)
        .filter(|a| a.answer.status().is_some_and(|s| s >= 500))
        .count();
    let resent = deliveries.iter().filter(|d| d.attempts.len() > 1).count();
    let max_sends = deliveries
        .iter()
        .map(|d| d.attempts.len())
        .max()
        .unwrap_or(0);
    let slowest = deliveries
        .iter()
        .filter_map(|d| d.ack_latency)
        .max()
        .unwrap_or_default();
    let dlq_orders: BTreeSet<_> = dlq.iter().filter_map(|m| m.order_id.as_deref()).collect();

    let mut t = String::new();
    let mut row = |k: &str, v: String| {
        let _ = writeln!(t, "  {k:<34} {v}");
    };
    row("seed", seed.to_string());
    row(
        "orders",
        format!("{orders} ({rejected} with a rejected SKU)"),
    );
    row("order_paid acknowledged", format!("{paid_acked} orders"));
    row("granted", format!("{granted} orders"));
    row(
        "canceled (planned)",
        format!(
            "{canceled} ({before} cancel acked before the paid is sent, {concurrent} sent with it)"
        ),
    );
    row(
        "order_canceled acknowledged",
        format!("{cancel_acked} orders"),
    );
    row("revoked", format!("{revoked} orders"));
    row(
        "duplicates sent",
        format!(
            "{dup_paid} order_paid ({dup_paid_conc} concurrently), {dup_cancel} order_canceled"
        ),
    );
    row(
        "webhook deliveries",
        format!(
            "{} ({acked} acknowledged), {sends} HTTP sends",
            deliveries.len()
        ),
    );
    row(
        "re-sent by the sim",
        format!(
            "{resent} deliveries; {status_5xx} answers 5xx, {no_answer} no answer; at most {max_sends} sends for one"
        ),
    );
    row("slowest acknowledgement", format!("{slowest:.2?}"));
    row(
        "DLQ",
        format!("{} messages, {} orders", dlq.len(), dlq_orders.len()),
    );
    let calls: Vec<String> = state
        .calls
        .iter()
        .map(|(ep, c)| format!("{ep} {} {:?}", c.received, c.by_status))
        .collect();
    row("inventory calls (by status)", calls.join("; "));
    row(
        "inventory effects",
        format!(
            "{} applied, {} duplicates_applied, {} key_conflicts",
            state.effects_applied, state.duplicates_applied, state.key_conflicts
        ),
    );
    let _ = writeln!(t, "  faults injected:");
    for e in faults {
        let _ = writeln!(
            t,
            "    at {:>6.1} s (after {:>5} acks, took {:>4.1} s)  {}",
            e.at.as_secs_f64(),
            e.after_acks,
            e.took.as_secs_f64(),
            e.what
        );
    }
    let _ = writeln!(
        t,
        "  elapsed: {:.1} s (setup {:.1} s, sending {:.1} s, drain {:.1} s)",
        timings.total.as_secs_f64(),
        timings.setup.as_secs_f64(),
        timings.sending.as_secs_f64(),
        timings.drain.as_secs_f64()
    );
    t
}
