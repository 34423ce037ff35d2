//! `replay`: put dead-lettered messages back on the work exchange, body unchanged, attempts
//! reset and marked as replayed. A message leaves the DLQ only after the broker confirmed its
//! republish, so an interruption loses nothing and duplicates at most the one in flight
//! (confirmed but not yet acked when the connection went).

use std::time::Duration;

use lapin::Channel;
use shared::{envelope::now_rfc3339, publish::publish_confirmed, topology};
use tokio::time::{Interval, MissedTickBehavior};

use super::{
    Selection,
    error::DlqError,
    message::DeadLetter,
    read::{Pass, Taken, check_work_exchange, queue_count},
};

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub selection: Selection,
    /// Report what would move; move nothing.
    pub dry_run: bool,
    /// At most this many messages per second.
    pub rate: Option<u32>,
    /// Deadline for each broker operation, publisher confirms included.
    pub timeout: Duration,
}

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    pub dry_run: bool,
    /// Replayed (in a dry run: would be), in queue order.
    pub replayed: Vec<DeadLetter>,
    /// Ids asked for that are not in the DLQ. When there are any, nothing is replayed.
    pub unknown_ids: Vec<String>,
    /// Selected messages that name no routing key (no type in headers, body or `x-death`);
    /// left in the DLQ.
    pub unroutable: Vec<DeadLetter>,
    /// Ready messages in the DLQ afterwards.
    pub remaining: u32,
}

/// Replays the selected messages; `on_replayed` hears of each one as soon as it has moved.
/// With ids, every id must be found first (all or nothing); `--all`/`--type` streams.
pub async fn replay(
    channel: &Channel,
    options: &ReplayOptions,
    mut on_replayed: impl FnMut(&DeadLetter),
) -> Result<ReplayReport, DlqError> {
    if !options.dry_run {
        check_work_exchange(channel, options.timeout).await?;
    }
    let mut pass = Pass::begin(channel, options.timeout).await?;
    let mut report = ReplayReport {
        dry_run: options.dry_run,
        ..Default::default()
    };
    let outcome = run(&mut pass, channel, options, &mut report, &mut on_replayed).await;
    // Return what is left even after a failure: the broker would too when the connection
    // goes, but this keeps the order.
    let finished = pass.finish().await;
    outcome?;
    finished?;
    report.remaining = queue_count(channel, options.timeout).await?;
    Ok(report)
}

async fn run(
    pass: &mut Pass<'_>,
    channel: &Channel,
    options: &ReplayOptions,
    report: &mut ReplayReport,
    on_replayed: &mut impl FnMut(&DeadLetter),
) -> Result<(), DlqError> {
    let mut pace = Pace::new(options.rate);
    let mut chosen = Vec::new();
    while let Some(taken) = pass.next().await? {
        if !options.selection.matches(&taken.letter) {
            continue;
        }
        if taken.letter.routing_key.is_none() {
            report.unroutable.push(taken.letter);
        } else if matches!(options.selection, Selection::Ids(_)) {
            chosen.push(taken);
        } else if options.dry_run {
            report.replayed.push(taken.letter);
        } else {
            republish(pass, channel, &mut pace, &taken, options.timeout).await?;
            on_replayed(&taken.letter);
            report.replayed.push(taken.letter);
        }
    }
    if let Selection::Ids(ids) = &options.selection {
        let found: Vec<&DeadLetter> = chosen
            .iter()
            .map(|t| &t.letter)
            .chain(&report.unroutable)
            .collect();
        report.unknown_ids = Selection::unknown(ids, found);
        if !report.unknown_ids.is_empty() {
            // A typo must not half-do the job: nothing moves, everything is returned.
            return Ok(());
        }
        for taken in chosen {
            if !options.dry_run {
                republish(pass, channel, &mut pace, &taken, options.timeout).await?;
                on_replayed(&taken.letter);
            }
            report.replayed.push(taken.letter);
        }
    }
    Ok(())
}

/// Publishes one message to the work exchange and, once confirmed, removes it from the DLQ.
async fn republish(
    pass: &mut Pass<'_>,
    channel: &Channel,
    pace: &mut Pace,
    taken: &Taken,
    timeout: Duration,
) -> Result<(), DlqError> {
    let letter = &taken.letter;
    let routing_key = letter.routing_key.as_deref().unwrap_or_default();
    pace.wait().await;
    let properties = letter.replay_properties(&now_rfc3339());
    // The event first: once the copy is on the work exchange a worker may grant it at once,
    // and its `granted` must follow `replayed` in the order's timeline.
    publish_replayed(channel, letter, timeout).await?;
    publish_confirmed(
        channel,
        topology::EXCHANGE,
        routing_key,
        &letter.body,
        properties,
        timeout,
    )
    .await
    .map_err(|source| DlqError::Publish {
        id: letter.id.clone(),
        source,
    })?;
    pass.ack(taken.delivery_tag).await
}

/// The order's `replayed` event, confirmed before the copy is republished and so before
/// any event of the worker about that copy (a fast worker grants it before a later publish
/// would land). If it fails, nothing is republished and the message stays in the DLQ; if the
/// republish then fails, the timeline shows a `replayed` the command reported as failed,
/// and the next replay adds another. Messages that name no order have no timeline.
async fn publish_replayed(
    channel: &Channel,
    letter: &DeadLetter,
    timeout: Duration,
) -> Result<(), DlqError> {
    let Some(event) = crate::order::event::replayed(letter) else {
        return Ok(());
    };
    shared::order_events::publish(channel, &event, timeout)
        .await
        .map_err(|source| DlqError::Publish {
            id: letter.id.clone(),
            source,
        })
}

/// Spaces publishes evenly at `rate` per second: one token at a time, never a burst, even
/// after a slow confirm.
struct Pace(Option<Interval>);

impl Pace {
    fn new(rate: Option<u32>) -> Pace {
        Pace(rate.filter(|r| *r > 0).map(|rate| {
            let mut interval = tokio::time::interval(Duration::from_secs(1) / rate);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        }))
    }

    async fn wait(&mut self) {
        if let Some(interval) = &mut self.0 {
            interval.tick().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pace_spaces_messages_evenly() {
        let mut pace = Pace::new(Some(4));
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            pace.wait().await;
        }
        // The first goes at once, then one every 250 ms.
        assert_eq!(start.elapsed(), Duration::from_millis(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn pace_does_not_burst_after_a_stall() {
        let mut pace = Pace::new(Some(10));
        pace.wait().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let start = tokio::time::Instant::now();
        pace.wait().await;
        pace.wait().await;
        pace.wait().await;
        assert!(
            start.elapsed() >= Duration::from_millis(200),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_rate_means_no_wait() {
        let mut pace = Pace::new(None);
        let start = tokio::time::Instant::now();
        for _ in 0..100 {
            pace.wait().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
