//! Load generation: many signed webhooks with distinct ids, open-loop at a fixed rate or
//! closed-loop at a fixed concurrency, tallied into a [`LoadReport`].

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Semaphore, task::JoinSet, time::Instant};

use super::{
    report::{LoadReport, Tally},
    send::Sender,
    webhook::Template,
};

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadPlan {
    /// Webhooks started per second (open loop: the rate holds whatever the answers do, and
    /// latency counts from the planned start). `None`: closed loop, each of `concurrency`
    /// senders starts its next webhook when its last one is settled.
    pub rate: Option<f64>,
    /// How long new webhooks are started; the run then waits for those still in flight.
    pub duration: Duration,
    /// Requests in flight at most (and the connection pool's size).
    pub concurrency: usize,
    /// Prefix of every id in this run, so runs against one system never collide.
    pub run_id: u64,
}

/// Hands out `run_id × 10⁹ + n`: distinct across runs, numeric like Xsolla's order ids,
/// and below 2⁵³ so no consumer parsing JSON numbers as doubles loses digits.
#[derive(Debug)]
pub struct Ids {
    run_id: u64,
    next: AtomicU64,
}

impl Ids {
    pub fn new(run_id: u64) -> Ids {
        Ids {
            run_id,
            next: AtomicU64::new(1),
        }
    }

    pub fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (self.run_id * 1_000_000_000 + n).to_string()
    }
}

/// When an open loop at `rate` per second plans its `i`-th webhook (from 0), after the
/// run's start. One definition for both load generators and for the pipeline bench, which
/// times each webhook from outside the load and must agree with it to the nanosecond.
pub fn planned_offset(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate.max(f64::MIN_POSITIVE))
}

/// A fresh six-digit run id.
pub fn new_run_id() -> u64 {
    rand::random_range(100_000..1_000_000)
}

/// Sends webhooks from `template`, signed with `secret`, through `sender` as `plan` says.
pub async fn run(
    sender: &Sender,
    template: &Template,
    secret: &str,
    plan: &LoadPlan,
) -> LoadReport {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let ids = Arc::new(Ids::new(plan.run_id));
    let template = Arc::new(template.clone());
    let secret: Arc<str> = secret.into();
    let started = Instant::now();
    let end = started + plan.duration;
    let mut tasks = JoinSet::new();
    match plan.rate {
        Some(rate) => {
            let slots = Arc::new(Semaphore::new(plan.concurrency.max(1)));
            for i in 0u64.. {
                let at = started + planned_offset(i, rate);
                if at >= end {
                    break;
                }
                tokio::time::sleep_until(at).await;
                if slots.available_permits() == 0 {
                    tally.lock().expect("tally lock").waited_for_slot += 1;
                }
                let webhook = template.signed(&ids.next(), &secret);
                let (sender, slots, tally) = (sender.clone(), slots.clone(), tally.clone());
                tasks.spawn(async move {
                    let delivery = sender.deliver_from(&webhook, at, Some(&slots)).await;
                    let settled = started.elapsed();
                    tally
                        .lock()
                        .expect("tally lock")
                        .record_at(&delivery, settled);
                });
                // Reap finished tasks as we go so a long run does not hold them all.
                while tasks.try_join_next().is_some() {}
            }
        }
        None => {
            for _ in 0..plan.concurrency.max(1) {
                let (sender, template, secret) = (sender.clone(), template.clone(), secret.clone());
                let (ids, tally) = (ids.clone(), tally.clone());
                tasks.spawn(async move {
                    while Instant::now() < end {
                        let webhook = template.signed(&ids.next(), &secret);
                        let delivery = sender.deliver(&webhook).await;
                        let settled = started.elapsed();
                        tally
                            .lock()
                            .expect("tally lock")
                            .record_at(&delivery, settled);
                    }
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let tally = tally.lock().expect("tally lock").clone();
    LoadReport::new(plan, template.kind(), sender.policy, elapsed, &tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_the_run_prefix_and_never_repeat() {
        let ids = Ids::new(123_456);
        assert_eq!(ids.next(), "123456000000001");
        assert_eq!(ids.next(), "123456000000002");
        let max = 999_999u64 * 1_000_000_000 + 999_999_999;
        assert!(max < 1 << 53, "exact as a JSON double");
        assert!((100_000..1_000_000).contains(&new_run_id()));
    }
}
