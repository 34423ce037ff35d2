//! `purge`: delete dead-lettered messages for good (the CLI insists on `--yes`).

use std::time::Duration;

use lapin::Channel;

use super::{
    Selection,
    error::DlqError,
    message::DeadLetter,
    read::{Pass, queue_count},
};

/// What to purge.
#[derive(Debug, Clone)]
pub struct PurgeOptions {
    pub selection: Selection,
    /// Deadline for each broker operation.
    pub timeout: Duration,
}

/// What a purge did.
#[derive(Debug, Clone, Default)]
pub struct PurgeReport {
    /// Removed, in queue order.
    pub purged: Vec<DeadLetter>,
    /// Ids asked for that are not in the DLQ. When there are any, nothing is removed.
    pub unknown_ids: Vec<String>,
    /// Ready messages in the DLQ afterwards.
    pub remaining: u32,
}

/// Removes the selected messages; `on_purged` hears of each one as it goes. With ids, every
/// id must be found first (all or nothing).
pub async fn purge(
    channel: &Channel,
    options: &PurgeOptions,
    mut on_purged: impl FnMut(&DeadLetter),
) -> Result<PurgeReport, DlqError> {
    let mut pass = Pass::begin(channel, options.timeout).await?;
    let mut report = PurgeReport::default();
    let outcome = run(&mut pass, options, &mut report, &mut on_purged).await;
    let finished = pass.finish().await;
    outcome?;
    finished?;
    report.remaining = queue_count(channel, options.timeout).await?;
    Ok(report)
}

async fn run(
    pass: &mut Pass<'_>,
    options: &PurgeOptions,
    report: &mut PurgeReport,
    on_purged: &mut impl FnMut(&DeadLetter),
) -> Result<(), DlqError> {
    let mut chosen = Vec::new();
    while let Some(taken) = pass.next().await? {
        if !options.selection.matches(&taken.letter) {
            continue;
        }
        if matches!(options.selection, Selection::Ids(_)) {
            chosen.push(taken);
        } else {
            pass.ack(taken.delivery_tag).await?;
            on_purged(&taken.letter);
            report.purged.push(taken.letter);
        }
    }
    if let Selection::Ids(ids) = &options.selection {
        report.unknown_ids = Selection::unknown(ids, chosen.iter().map(|t| &t.letter));
        if !report.unknown_ids.is_empty() {
            return Ok(());
        }
        for taken in chosen {
            pass.ack(taken.delivery_tag).await?;
            on_purged(&taken.letter);
            report.purged.push(taken.letter);
        }
    }
    Ok(())
}
