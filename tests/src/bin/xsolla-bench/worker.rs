//! `xsolla-bench worker`: how fast the worker drains the work queue into a demo inventory
//! that answers at once, with one and with two workers, next to a plain consume-and-ack
//! loop on the same queue; and the whole pipeline (webhook in via the ingress → grant done).

use std::{path::PathBuf, sync::Arc, time::Duration};

use serde::Serialize;
use shared::topology::WORK_QUEUE;
use tests::{
    inventory::{DemoInventory, InventoryConfig, InventoryHandle},
    sim::{
        self, Ids, Kind, Latency, LoadPlan, LoadReport, Overrides, Policy, Sender, Template, lean,
        vhost,
    },
};
use tokio::time::Instant;

use crate::{
    baseline::{self, DrainRun, Until},
    proc::{Memory, Service, peaks, sibling_binary, start_ingress, start_workers, stop_all},
};

const SECRET: &str = "xsolla-bench-secret";

/// Options of `xsolla-bench worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerBench {
    /// The worker binary to measure.
    #[arg(long, default_value_os_t = sibling_binary("worker"))]
    worker_bin: PathBuf,
    /// The ingress binary (end-to-end phases).
    #[arg(long, default_value_os_t = sibling_binary("ingress"))]
    ingress_bin: PathBuf,
    /// Messages queued before each drain phase.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// WORKER_CONCURRENCY of each worker, also the raw consumer's prefetch.
    #[arg(long, default_value_t = 16)]
    worker_concurrency: u16,
    /// Drain rounds (raw, 1 worker, 2 workers each); ratios are reported per round and
    /// as medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Only the drains: skip the end-to-end phases (for A/B runs of worker builds).
    #[arg(long)]
    drains_only: bool,
}

/// Everything measured.
#[derive(Debug, Serialize)]
pub struct WorkerResult {
    pub messages: u64,
    pub worker_concurrency: u16,
    pub rounds: Vec<Round>,
    /// Median over the rounds of the raw consumer's whole-drain rate.
    pub median_raw_rate: f64,
    /// Medians over the rounds of 1 and 2 workers' steady ratios to raw: the target.
    pub median_steady_ratio: [f64; 2],
    /// The same for whole drains.
    pub median_ratio: [f64; 2],
    pub end_to_end: Vec<EndToEnd>,
}

/// The three drains of one round.
#[derive(Debug, Serialize)]
pub struct Round {
    /// Plain lapin consumer, prefetch = worker concurrency, acking at once.
    pub raw: DrainRun,
    pub one_worker: Drain,
    pub two_workers: Drain,
}

/// The middle value (the mean of the two middle ones for an even count).
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Workers draining a pre-filled queue into the inventory.
#[derive(Debug, Serialize)]
pub struct Drain {
    pub workers: usize,
    pub run: DrainRun,
    /// Ratio to the raw consume-and-ack rate, start to last message.
    pub ratio_to_raw: f64,
    /// Ratio of the steady rates (10 % to 90 % of the messages): the target.
    pub steady_ratio_to_raw: f64,
    pub peak_rss_mib: Vec<f64>,
}

/// Webhooks through the ingress at full load, and probe latency at half that rate.
#[derive(Debug, Serialize)]
pub struct EndToEnd {
    pub workers: usize,
    pub load: LoadReport,
    /// Grants done per second, from the load's start to the last acknowledged webhook's grant.
    pub grants_per_s: f64,
    /// Webhook sent → grant applied, for probes sent during an open-loop run at half of
    /// `grants_per_s`.
    pub half_rate_latency_ms: Latency,
    pub ingress_memory: Memory,
    pub worker_peak_rss_mib: Vec<f64>,
}

impl WorkerBench {
    pub async fn run(
        &self,
        amqp_url: &str,
        concurrency: usize,
        duration: Duration,
    ) -> anyhow::Result<WorkerResult> {
        let mut vhost = vhost::Vhost::create(amqp_url, "xsolla-bench").await?;
        let inventory = DemoInventory::start(InventoryConfig::default()).await?;
        let result = self
            .phases(vhost.url(), &inventory, concurrency, duration)
            .await;
        let _ = inventory.shutdown().await;
        vhost.delete().await;
        result
    }

    async fn phases(
        &self,
        url: &str,
        inventory: &InventoryHandle,
        concurrency: usize,
        duration: Duration,
    ) -> anyhow::Result<WorkerResult> {
        vhost::declare_topology(url).await?;
        let template = Template::new(Kind::OrderPaid, &Overrides::default())?;
        let ids = Arc::new(Ids::new(sim::new_run_id()));
        let n = self.messages;

        let mut rounds = Vec::new();
        for round in 1..=self.rounds {
            eprintln!(
                "[drain {round}/{}] raw consume-and-ack, then 1 and 2 workers, {n} messages each",
                self.rounds
            );
            rounds.push(self.drain_round(url, inventory, &template, &ids).await?);
        }
        vhost::purge(url, WORK_QUEUE).await?;
        let mut end_to_end = Vec::new();
        for workers in [1, 2].into_iter().filter(|_| !self.drains_only) {
            eprintln!(
                "[end to end {workers}/2] {workers} worker(s): ingress load, {concurrency} senders, {duration:?}"
            );
            inventory.reset();
            end_to_end.push(
                self.end_to_end(url, inventory, workers, &template, concurrency, duration)
                    .await?,
            );
        }
        let medians = |pick: fn(&Round) -> f64| median(rounds.iter().map(pick).collect());
        Ok(WorkerResult {
            messages: n,
            worker_concurrency: self.worker_concurrency,
            median_raw_rate: medians(|r| r.raw.rate),
            median_steady_ratio: [
                medians(|r| r.one_worker.steady_ratio_to_raw),
                medians(|r| r.two_workers.steady_ratio_to_raw),
            ],
            median_ratio: [
                medians(|r| r.one_worker.ratio_to_raw),
                medians(|r| r.two_workers.ratio_to_raw),
            ],
            rounds,
            end_to_end,
        })
    }

    /// One round: the raw consumer, then 1, then 2 workers, each draining `messages`
    /// freshly queued ones. Rounds interleave the three so drift of the shared machine
    /// (the broker's WAL roll-overs, other load) spreads over all of them alike.
    async fn drain_round(
        &self,
        url: &str,
        inventory: &InventoryHandle,
        template: &Template,
        ids: &Arc<Ids>,
    ) -> anyhow::Result<Round> {
        let n = self.messages;
        baseline::publish(url, template, SECRET, ids.clone(), 64, Until::Count(n)).await?;
        let raw = baseline::consume_and_ack(url, self.worker_concurrency, n).await?;
        let mut drains = Vec::new();
        for workers in [1, 2] {
            inventory.reset();
            baseline::publish(url, template, SECRET, ids.clone(), 64, Until::Count(n)).await?;
            // Timed from the spawn: start-up (~0.1 s) counts, like the raw consumer's connect.
            let started = Instant::now();
            let running = self.start_workers(url, inventory, workers).await?;
            let drained = drain_marks(inventory, n).await;
            let run = drained.map(|marks| DrainRun::new(n, started, marks));
            let peak_rss_mib = peaks(&running);
            stop_all(running).await;
            let run = run?;
            drains.push(Drain {
                workers,
                ratio_to_raw: run.rate / raw.rate,
                steady_ratio_to_raw: run.steady_rate / raw.steady_rate,
                run,
                peak_rss_mib,
            });
        }
        let mut drains = drains.into_iter();
        Ok(Round {
            raw,
            one_worker: drains.next().expect("two drains"),
            two_workers: drains.next().expect("two drains"),
        })
    }

    async fn start_workers(
        &self,
        url: &str,
        inventory: &InventoryHandle,
        count: usize,
    ) -> anyhow::Result<Vec<Service>> {
        start_workers(
            &self.worker_bin,
            url,
            &inventory.url(),
            count,
            self.worker_concurrency,
        )
        .await
    }

    async fn end_to_end(
        &self,
        url: &str,
        inventory: &InventoryHandle,
        workers: usize,
        template: &Template,
        concurrency: usize,
        duration: Duration,
    ) -> anyhow::Result<EndToEnd> {
        let (ingress, webhook_url) = start_ingress(&self.ingress_bin, url, SECRET).await?;
        let running = match self.start_workers(url, inventory, workers).await {
            Ok(r) => r,
            Err(e) => {
                ingress.stop().await;
                return Err(e);
            }
        };
        let measured = pipeline(&webhook_url, inventory, template, concurrency, duration).await;
        let ingress_memory = ingress.memory().unwrap_or_default();
        let worker_peak_rss_mib = peaks(&running);
        stop_all(running).await;
        ingress.stop().await;
        let (load, grants_per_s, half_rate_latency_ms) = measured?;
        Ok(EndToEnd {
            workers,
            load,
            grants_per_s,
            half_rate_latency_ms,
            ingress_memory,
            worker_peak_rss_mib,
        })
    }
}

/// Waits until the inventory holds all `n` grants; when it reached each steady mark.
async fn drain_marks(inventory: &InventoryHandle, n: u64) -> anyhow::Result<(Instant, Instant)> {
    let within = Duration::from_secs(600);
    let mut marks = Vec::new();
    let (a, b) = baseline::steady_marks(n);
    for mark in [a, b, n] {
        // Timed inside the condition: `wait_for` clones the state when it holds.
        let mut at = None;
        inventory
            .wait_for(
                |s| {
                    let reached = s.grants.len() as u64 >= mark;
                    if reached && at.is_none() {
                        at = Some(Instant::now());
                    }
                    reached
                },
                within,
            )
            .await?;
        marks.push(at.unwrap_or_else(Instant::now));
    }
    Ok((marks[0], marks[1]))
}

/// Full load, then half-rate load with latency probes.
async fn pipeline(
    webhook_url: &str,
    inventory: &InventoryHandle,
    template: &Template,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<(LoadReport, f64, Latency)> {
    let target = lean::Target::new(webhook_url)?;
    let plan = |rate| LoadPlan {
        rate,
        duration,
        concurrency,
        run_id: sim::new_run_id(),
    };
    let started = Instant::now();
    let load = lean::run(&target, template, SECRET, &plan(None)).await;
    let acked = load.acked as usize;
    inventory
        .wait_for(|s| s.grants.len() >= acked, Duration::from_secs(600))
        .await?;
    let grants_per_s = acked as f64 / started.elapsed().as_secs_f64();
    inventory.reset();

    // Probes: one webhook every 100 ms, timed from send to its grant in the inventory.
    let half = plan(Some((grants_per_s / 2.0).max(1.0)));
    let probes = async {
        let probe_sender = Sender::new(webhook_url, Policy::default(), 1, Duration::from_secs(10))?;
        let ids = Ids::new(sim::new_run_id());
        let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let end = Instant::now() + duration;
        while Instant::now() < end {
            let webhook = template.signed(&ids.next(), SECRET);
            let sent = Instant::now();
            if probe_sender.deliver(&webhook).await.acknowledged() {
                // Timed inside the condition: `wait_for` then clones the whole state,
                // which must not count as pipeline latency.
                let mut granted_at = None;
                inventory
                    .wait_for(
                        |s| {
                            let done = s.grants.contains_key(&webhook.id);
                            if done && granted_at.is_none() {
                                granted_at = Some(Instant::now());
                            }
                            done
                        },
                        Duration::from_secs(60),
                    )
                    .await?;
                let took = granted_at.unwrap_or_else(Instant::now) - sent;
                histogram
                    .saturating_record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1));
            }
            tokio::time::sleep_until(sent + Duration::from_millis(100)).await;
        }
        anyhow::Ok(Latency::from_histogram(&histogram))
    };
    let (_, latency) = tokio::join!(lean::run(&target, template, SECRET, &half), probes);
    Ok((load, grants_per_s, latency?))
}

#[cfg(test)]
mod unit {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![0.7, 0.5, 0.6]), 0.6);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }
}
