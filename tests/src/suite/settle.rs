//! The end of a run: waiting until the system has settled (nothing queued or in flight,
//! the inventory quiet), and reading the DLQ without taking anything away.

use std::time::Duration;

use shared::topology::{DLQ, UNROUTED_QUEUE, WORK_QUEUE, retry_queue_name};
use tokio::time::Instant;
use worker::dlq::{DeadLetter, DlqConnection, ListOptions};

use super::{
    plan::OrderResult,
    system::System,
    verdict::{self, Findings},
};
use crate::{
    inventory::{InventoryHandle, Snapshot},
    rabbit::queue_len_at,
};

/// How long to wait for the system to settle.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// Longest wait for the system to settle after the last webhook.
    pub within: Duration,
    /// Settled = nothing queued or in flight, and the inventory unchanged for this long.
    pub quiet: Duration,
    /// Settled this long with effects still missing: they will not come. Longer than the
    /// longest wait inside the system (a delay tier, a `Retry-After`).
    pub stuck: Duration,
}

/// Both suites' patience at the end: two minutes to settle, quiet for 1 s; the longest wait
/// inside either system is a 1 s delay tier or a 1 s `Retry-After`, so 5 s settled with
/// effects missing means they will not come.
pub const PATIENCE: Patience = Patience {
    within: Duration::from_secs(120),
    quiet: Duration::from_secs(1),
    stuck: Duration::from_secs(5),
};

/// The work queue and the delay tiers: what must be empty once the system has settled.
pub fn busy_queues(retry_delays: &[(&str, Duration)]) -> Vec<String> {
    std::iter::once(WORK_QUEUE.to_owned())
        .chain(retry_delays.iter().map(|(_, d)| retry_queue_name(*d)))
        .collect()
}

/// Whether every acknowledged webhook's effect is in `s`.
pub fn all_applied(results: &[OrderResult], s: &Snapshot) -> bool {
    results.iter().all(|r| {
        (r.plan.rejected || !r.paid_acked() || s.grant(&r.plan.id).is_some())
            && (!r.cancel_acked() || s.revocations.contains_key(&r.plan.id))
    })
}

/// Waits until the system is settled: `queues` (on the broker at `amqp_url`, one node) are
/// empty, no worker holds a delivery, and the inventory has not changed for
/// [`Patience::quiet`] with every acknowledged effect applied (or for [`Patience::stuck`]
/// without: nothing is left that could apply it). Returns why it is not `Ok` when effects
/// are missing or it never settled; the verdict then names the orders.
pub async fn wait_settled(
    amqp_url: &str,
    queues: &[String],
    inventory: &InventoryHandle,
    system: &System,
    results: &[OrderResult],
    patience: Patience,
) -> Result<(), String> {
    let deadline = Instant::now() + patience.within;
    let mut quiet_since: Option<(Instant, u64)> = None;
    loop {
        let mut busy = Vec::new();
        for q in queues {
            match queue_len_at(amqp_url, q).await {
                Ok(Some(0)) => {}
                other => busy.push(format!("{q}: {other:?}")),
            }
        }
        match system.in_flight().await {
            Some(0.0) => {}
            other => busy.push(format!("in flight in workers: {other:?}")),
        }
        let state = inventory.state();
        let applied = all_applied(results, &state);
        quiet_since = match quiet_since {
            Some((since, v)) if busy.is_empty() && v == state.version => Some((since, v)),
            _ if busy.is_empty() => Some((Instant::now(), state.version)),
            _ => None,
        };
        if let Some((since, _)) = quiet_since {
            if applied && since.elapsed() >= patience.quiet {
                return Ok(());
            }
            if !applied && since.elapsed() >= patience.stuck {
                return Err(format!(
                    "settled for {:?} with acknowledged effects missing",
                    patience.stuck
                ));
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "not settled after {:?}: every effect applied: {applied}, busy: {busy:?}",
                patience.within
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The whole DLQ, read without taking anything away (`worker dlq list`).
pub async fn read_dlq(amqp_url: &str) -> anyhow::Result<Vec<DeadLetter>> {
    let timeout = Duration::from_secs(30);
    let conn = DlqConnection::open(amqp_url, timeout).await?;
    let listing = worker::dlq::list(&conn.channel, timeout, &ListOptions::default()).await;
    conn.close().await;
    Ok(listing?.messages)
}

/// What the run left behind, and the verdict on it: the inventory's state, the DLQ and the
/// findings of [`verdict::check`], plus whether the system settled (`settled`), whether the
/// DLQ listing saw every message the queue holds, and any service that exited by itself.
pub async fn conclude(
    amqp_url: &str,
    results: &[OrderResult],
    inventory: &InventoryHandle,
    system: &mut System,
    settled: Result<(), String>,
) -> (Snapshot, Vec<DeadLetter>, Findings) {
    let state = inventory.state();
    let dlq = read_dlq(amqp_url).await.expect("listing the DLQ");
    let unrouted = queue_len_at(amqp_url, UNROUTED_QUEUE).await.ok().flatten();
    let dlq_ready = queue_len_at(amqp_url, DLQ).await.ok().flatten();
    let mut findings = verdict::check(results, &state, &dlq, unrouted);
    if let Err(why) = settled {
        findings.problems.push(format!("did not settle: {why}"));
    }
    if dlq_ready != Some(dlq.len() as u64) {
        findings.problems.push(format!(
            "DLQ listing read {} messages but the queue holds {dlq_ready:?}",
            dlq.len()
        ));
    }
    findings.problems.extend(system.exits());
    (state, dlq, findings)
}
