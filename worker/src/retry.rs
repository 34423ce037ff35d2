//! Retry policy: quick jittered retries in-process, then the fixed delay tiers, within a
//! budget. Plain functions of their inputs (attempts, `Retry-After`, elapsed time), so the
//! schedule is unit-tested without a broker.

use std::{future::Future, time::Duration};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use lapin::types::FieldTable;
use shared::envelope::{HeadersExt, header, parse_time};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::classify::FulfilError;

/// First in-process retry delay; doubled each time up to [`QUICK_MAX`], then jittered by up
/// to +100 %, so quick retries are ~0.2 s to 2 s apart: long enough for a blip to pass,
/// short enough that holding a prefetch slot is cheap.
pub const QUICK_MIN: Duration = Duration::from_millis(200);
/// Largest un-jittered in-process delay.
pub const QUICK_MAX: Duration = Duration::from_secs(1);
/// A `Retry-After` up to this long is waited out in-process; a longer one sends the event
/// to the delay tiers at once instead of holding a delivery (and a prefetch slot).
pub const QUICK_RETRY_AFTER_MAX: Duration = Duration::from_secs(5);

/// The whole retry schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay tiers in walking order (`RETRY_DELAYS`), never empty.
    pub tiers: Vec<Duration>,
    /// Longest an event may keep failing before the DLQ (`RETRY_BUDGET`).
    pub budget: Duration,
    /// In-process retries per delivery (`QUICK_RETRIES`).
    pub quick_retries: u32,
}

/// What to do with an event that failed transiently after its quick retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Republish it to the tier of this delay.
    Delay(Duration),
    /// Waiting once more would overrun the budget: dead-letter it.
    BudgetExhausted,
}

impl RetryPolicy {
    /// The tier for an event that already went through `prior_attempts` failed deliveries:
    /// walk the tiers, then stay on the last. A `Retry-After` longer than that is honoured
    /// with the smallest tier at least as long (or the longest tier, if none is): tiers are
    /// fixed-TTL queues, so we can only round up to one of them.
    pub fn tier(&self, prior_attempts: u32, retry_after: Option<Duration>) -> Duration {
        let last = self.tiers.len().saturating_sub(1);
        let walked = self.tiers[(prior_attempts as usize).min(last)];
        match retry_after {
            Some(wanted) if wanted > walked => {
                let longest = self.tiers.iter().copied().max().unwrap_or(walked);
                self.tiers
                    .iter()
                    .copied()
                    .filter(|d| *d >= wanted)
                    .min()
                    .unwrap_or(longest)
            }
            _ => walked,
        }
    }

    /// The tier, unless waiting it out would take the event past its budget.
    pub fn next_step(
        &self,
        prior_attempts: u32,
        retry_after: Option<Duration>,
        elapsed: Duration,
    ) -> NextStep {
        let delay = self.tier(prior_attempts, retry_after);
        if elapsed.saturating_add(delay) > self.budget {
            NextStep::BudgetExhausted
        } else {
            NextStep::Delay(delay)
        }
    }

    /// How long an event has been failing, for the budget: the time since it started
    /// ([`started_at`]), but never less than the tiers it has walked. Each tier is a TTL
    /// wait, so the walk is a lower bound on the real time that no header can lower: a
    /// crafted or skewed start (`x-received-at: 9999-12-31…`) cannot keep an event retrying
    /// forever, it only falls back to the walk.
    pub fn elapsed(
        &self,
        started: Option<OffsetDateTime>,
        now: OffsetDateTime,
        prior_attempts: u32,
    ) -> Duration {
        let clock = started
            .map(|start| Duration::try_from(now - start).unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::ZERO);
        clock.max(self.walked(prior_attempts))
    }

    /// The sum of the tiers `prior_attempts` deliveries walked, in O(tiers) whatever the
    /// count: each tier once, then the last one for every further attempt. (A sum over the
    /// attempts took 7.5 s of CPU for a crafted `x-attempts: 4294967294`.)
    pub fn walked(&self, prior_attempts: u32) -> Duration {
        let Some(&last) = self.tiers.last() else {
            return Duration::ZERO;
        };
        let walked_once = (prior_attempts as usize).min(self.tiers.len());
        let beyond = prior_attempts.saturating_sub(walked_once as u32);
        self.tiers[..walked_once]
            .iter()
            .fold(last.saturating_mul(beyond), |sum, d| sum.saturating_add(*d))
    }

    /// The in-process backoff of one delivery: jittered, [`QUICK_MIN`]..2×[`QUICK_MAX`].
    pub fn quick_backoff(&self) -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(QUICK_MIN)
            .with_max_delay(QUICK_MAX)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.quick_retries as usize)
            .build()
    }

    /// Runs `call`, retrying transient failures in-process per [`Self::quick_backoff`] and
    /// `Retry-After`. Gives up early (returning the last failure, for the delay tiers) on a
    /// long `Retry-After` or on `shutdown`, so a stopping worker does not sit in sleeps.
    pub async fn with_quick_retries<F, Fut>(
        &self,
        shutdown: &CancellationToken,
        mut call: F,
    ) -> Result<(), FulfilError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), FulfilError>>,
    {
        let mut backoff = self.quick_backoff();
        loop {
            let result = call().await;
            let Err(FulfilError::Transient(failure)) = &result else {
                return result;
            };
            let wait = match (backoff.next(), failure.retry_after) {
                (None, _) => return result,
                (Some(_), Some(asked)) if asked > QUICK_RETRY_AFTER_MAX => return result,
                (Some(d), asked) => d.max(asked.unwrap_or_default()),
            };
            tracing::debug!(error = %failure, retry_in = ?shared::telemetry::to_millis(wait), "transient failure; retrying in-process");
            tokio::select! {
                _ = shutdown.cancelled() => return result,
                _ = tokio::time::sleep(wait) => {}
            }
            metrics::counter!("worker_retries_total", "tier" => "in_process").increment(1);
        }
    }
}

/// The most `x-attempts` is believed: far more than any budget allows (10 000 walks of even
/// a 10 s tier are 27 hours), small enough that nothing computed from it can overflow.
pub const MAX_ATTEMPTS: u32 = 10_000;

/// How far ahead of this worker's clock a start may be and still be believed: ordinary
/// skew between the ingress's host and ours.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// When the event's budget started: its replay, else its arrival at the ingress, else the
/// message's own timestamp. A time further in the future than [`MAX_CLOCK_SKEW`] is not
/// believed and the next one is tried: counting it as *now* would restart the budget at
/// every delivery, so such an event would never run out of it.
pub fn started_at(
    headers: Option<&FieldTable>,
    timestamp: Option<u64>,
    now: OffsetDateTime,
) -> Option<OffsetDateTime> {
    let believable = |t: &OffsetDateTime| *t <= now + MAX_CLOCK_SKEW;
    let from_header = |name| {
        headers
            .and_then(|h| h.get_str(name))
            .and_then(|s| parse_time(&s))
            .filter(believable)
    };
    from_header(header::REPLAYED_AT)
        .or_else(|| from_header(header::RECEIVED_AT))
        .or_else(|| {
            timestamp
                .and_then(|t| OffsetDateTime::from_unix_timestamp(i64::try_from(t).ok()?).ok())
                .filter(believable)
        })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use time::macros::datetime;
    use tokio::time::Instant;

    use super::*;
    use crate::classify::Failure;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            tiers: vec![secs(10), secs(60), secs(600), secs(3600)],
            budget: secs(24 * 3600),
            quick_retries: 3,
        }
    }

    fn transient(retry_after: Option<Duration>) -> FulfilError {
        FulfilError::Transient(Failure {
            status: Some(503),
            error: "HTTP 503".into(),
            retry_after,
        })
    }

    #[test]
    fn walks_the_tiers_then_repeats_the_last() {
        let p = policy();
        let walked: Vec<_> = (0..7).map(|a| p.tier(a, None).as_secs()).collect();
        assert_eq!(walked, [10, 60, 600, 3600, 3600, 3600, 3600]);
    }

    #[test]
    fn honours_retry_after_with_the_smallest_tier_long_enough() {
        let p = policy();
        assert_eq!(
            p.tier(0, Some(secs(5))),
            secs(10),
            "shorter than the walk: keep the walk"
        );
        assert_eq!(p.tier(0, Some(secs(30))), secs(60));
        assert_eq!(p.tier(0, Some(secs(60))), secs(60));
        assert_eq!(p.tier(1, Some(secs(61))), secs(600));
        assert_eq!(
            p.tier(0, Some(secs(7200))),
            secs(3600),
            "longer than every tier: the longest"
        );
        assert_eq!(
            p.tier(3, Some(secs(20))),
            secs(3600),
            "never below the walk"
        );
    }

    #[test]
    fn dead_letters_once_the_next_wait_overruns_the_budget() {
        let p = RetryPolicy {
            budget: secs(3600),
            ..policy()
        };
        assert_eq!(p.next_step(0, None, secs(0)), NextStep::Delay(secs(10)));
        assert_eq!(p.next_step(2, None, secs(3000)), NextStep::Delay(secs(600)));
        assert_eq!(p.next_step(2, None, secs(3001)), NextStep::BudgetExhausted);
        assert_eq!(p.next_step(3, None, secs(0)), NextStep::Delay(secs(3600)));
        assert_eq!(p.next_step(3, None, secs(1)), NextStep::BudgetExhausted);
    }

    #[test]
    fn measures_the_budget_from_replay_then_arrival_then_timestamp() {
        let p = policy();
        let now = datetime!(2025-01-01 12:00:00 UTC);
        let mut h = FieldTable::default();
        h.set_str(header::RECEIVED_AT, "2025-01-01T10:00:00Z");
        let start = started_at(Some(&h), Some(0), now);
        assert_eq!(p.elapsed(start, now, 0), secs(7200));
        h.set_str(header::REPLAYED_AT, "2025-01-01T11:59:00Z");
        assert_eq!(p.elapsed(started_at(Some(&h), None, now), now, 0), secs(60));
        let ts = datetime!(2025-01-01 11:00:00 UTC).unix_timestamp() as u64;
        assert_eq!(
            p.elapsed(started_at(None, Some(ts), now), now, 0),
            secs(3600)
        );
        assert_eq!(
            p.elapsed(None, now, 3),
            secs(10 + 60 + 600),
            "no start: the tiers walked"
        );
        let future = datetime!(2025-01-01 13:00:00 UTC);
        assert_eq!(
            p.elapsed(Some(future), now, 0),
            Duration::ZERO,
            "clock skew is no time"
        );
    }

    #[test]
    fn the_walk_is_computed_at_once_for_any_attempt_count() {
        let p = policy();
        let sum = |n: u32| (0..n).map(|a| p.tier(a, None)).sum::<Duration>();
        for n in [0, 1, 3, 4, 5, 50] {
            assert_eq!(p.walked(n), sum(n), "{n}");
        }
        // No loop over 4 billion attempts: the closed form (it used to take 7.5 s of CPU).
        let all = u64::from(u32::MAX - 4) * 3600 + 10 + 60 + 600 + 3600;
        assert_eq!(p.walked(u32::MAX), secs(all));
        assert_eq!(
            p.elapsed(None, datetime!(2025-01-01 0:00 UTC), u32::MAX),
            secs(all)
        );
        let huge = RetryPolicy {
            tiers: vec![Duration::MAX],
            ..policy()
        };
        assert_eq!(huge.walked(u32::MAX), Duration::MAX, "saturates");
    }

    #[test]
    fn a_start_in_the_future_cannot_keep_an_event_retrying() {
        let p = RetryPolicy {
            budget: secs(3600),
            ..policy()
        };
        let now = datetime!(2025-01-01 12:00:00 UTC);
        let mut h = FieldTable::default();
        h.set_str(header::RECEIVED_AT, "9999-12-31T23:59:59Z");
        let ts = datetime!(2025-01-01 10:00:00 UTC).unix_timestamp() as u64;
        // Not believed: the message timestamp stands in.
        let start = started_at(Some(&h), Some(ts), now);
        assert_eq!(start, Some(datetime!(2025-01-01 10:00:00 UTC)));
        assert_eq!(
            p.next_step(0, None, p.elapsed(start, now, 0)),
            NextStep::BudgetExhausted
        );
        // Everything in the future: the walk alone, which still runs out.
        let future_ts = datetime!(9999-01-01 0:00 UTC).unix_timestamp() as u64;
        let start = started_at(Some(&h), Some(future_ts), now);
        assert_eq!(start, None);
        assert_eq!(
            p.next_step(3, None, p.elapsed(start, now, 3)),
            NextStep::BudgetExhausted
        );
        // A little skew is believed, and counts as no time yet.
        h.set_str(header::RECEIVED_AT, "2025-01-01T12:01:00Z");
        let start = started_at(Some(&h), None, now);
        assert_eq!(start, Some(datetime!(2025-01-01 12:01:00 UTC)));
        assert_eq!(p.elapsed(start, now, 0), Duration::ZERO);
    }

    #[test]
    fn a_recent_start_never_counts_for_less_than_the_walk() {
        let p = policy();
        let now = datetime!(2025-01-01 12:00:00 UTC);
        let just_now = Some(datetime!(2025-01-01 11:59:59 UTC));
        assert_eq!(p.elapsed(just_now, now, 2), secs(70));
    }

    #[test]
    fn quick_delays_are_jittered_within_bounds() {
        let p = RetryPolicy {
            quick_retries: 10,
            ..policy()
        };
        for _ in 0..200 {
            let delays: Vec<_> = p.quick_backoff().collect();
            assert_eq!(delays.len(), 10);
            for d in delays {
                assert!(d >= QUICK_MIN && d < QUICK_MAX * 2, "{d:?}");
            }
        }
        let zero = RetryPolicy {
            quick_retries: 0,
            ..policy()
        };
        assert_eq!(zero.quick_backoff().count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_in_process_until_success() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let result = policy()
            .with_quick_retries(&CancellationToken::new(), || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(transient(None)),
                    _ => Ok(()),
                }
            })
            .await;
        assert_eq!(result, Ok(()));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let waited = start.elapsed();
        // 200 ms and 400 ms, each jittered by up to +100 %.
        assert!(
            waited >= Duration::from_millis(600) && waited < Duration::from_millis(1200),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_quick_retries() {
        let calls = AtomicU32::new(0);
        let result = policy()
            .with_quick_retries(&CancellationToken::new(), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(transient(None))
            })
            .await;
        assert!(matches!(result, Err(FulfilError::Transient(_))));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            4,
            "one call and three retries"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waits_out_a_short_retry_after_and_defers_a_long_one() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let result = policy()
            .with_quick_retries(&CancellationToken::new(), || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(transient(Some(secs(3)))),
                    _ => Ok(()),
                }
            })
            .await;
        assert_eq!(result, Ok(()));
        assert!(start.elapsed() >= secs(3));

        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let result = policy()
            .with_quick_retries(&CancellationToken::new(), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(transient(Some(secs(120))))
            })
            .await;
        assert!(result.is_err());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a long Retry-After goes to the tiers"
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_retrying_on_shutdown_and_never_retries_permanent_failures() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let calls = AtomicU32::new(0);
        let result = policy()
            .with_quick_retries(&shutdown, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(transient(None))
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let result = policy()
            .with_quick_retries(&CancellationToken::new(), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(FulfilError::Permanent(Failure {
                    status: Some(400),
                    error: "HTTP 400".into(),
                    retry_after: None,
                }))
            })
            .await;
        assert!(matches!(result, Err(FulfilError::Permanent(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
