//! `xsolla-bench pipeline`: the whole pipeline (webhook in via the ingress → queue →
//! workers → grant done in the demo inventory) at its maximum rate and at several open-loop
//! shares of it, with the latency of every webhook to its grant, the peak RSS and CPU per
//! grant of each process, next to the same run's plain-lapin baselines.

use std::{path::PathBuf, sync::Arc, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;
use shared::topology::WORK_QUEUE;
use tests::{
    inventory::{DemoInventory, InventoryConfig, InventoryHandle, Snapshot},
    sim::{self, Ids, Kind, Latency, LoadPlan, LoadReport, Overrides, Template, lean, vhost},
};
use tokio::time::Instant;

use crate::{
    baseline::{self, DrainRun, PublishRun, Until},
    proc::{
        CpuPerItem, CpuSample, Service, amqp_port, listener_pid, memory_of, peaks, reset_peak_rss,
        sibling_binary, start_ingress, start_workers, stop_all,
    },
};

const SECRET: &str = "xsolla-bench-secret";
const WARM_UP: Duration = Duration::from_secs(1);
/// How long the grants of a phase may take after its last webhook was sent.
const GRANT_WAIT: Duration = Duration::from_secs(60);

/// Options of `xsolla-bench pipeline`.
#[derive(Debug, clap::Args)]
pub struct PipelineBench {
    #[arg(long, default_value_os_t = sibling_binary("ingress"))]
    ingress_bin: PathBuf,
    #[arg(long, default_value_os_t = sibling_binary("worker"))]
    worker_bin: PathBuf,
    /// Workers on the queue (the run script starts two).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// WORKER_CONCURRENCY of each worker, also the raw consumer's prefetch.
    #[arg(long, default_value_t = 16)]
    worker_concurrency: u16,
    /// Open-loop rates, as shares of the measured maximum grants/s.
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,0.75")]
    shares: Vec<f64>,
    /// Messages queued for the raw consume-and-ack baseline.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
}

/// Everything measured.
#[derive(Debug, Serialize)]
pub struct PipelineResult {
    pub concurrency: usize,
    pub duration_s: f64,
    pub workers: usize,
    pub worker_concurrency: u16,
    /// Plain lapin confirmed publisher, closed loop at `concurrency`.
    pub baseline_publish: PublishRun,
    /// Plain lapin consumer, prefetch = worker concurrency, acking at once.
    pub raw_consume_ack: DrainRun,
    /// Closed loop at `concurrency`: the maximum end-to-end rate.
    pub max: Stage,
    /// Open loop at each share of `max.grants_per_s`.
    pub rates: Vec<Stage>,
}

/// One load phase through the pipeline.
#[derive(Debug, Serialize)]
pub struct Stage {
    /// Share of the maximum (`None`: the closed-loop maximum itself).
    pub share: Option<f64>,
    /// Webhook sent → 204 from the ingress.
    pub load: LoadReport,
    pub granted: u64,
    /// Grants from the phase's start to its last grant.
    pub grants_per_s: f64,
    /// Planned send → grant seen in the inventory, for every webhook (open loop only).
    pub grant_latency_ms: Latency,
    /// The plain confirmed publisher, open loop at the same rate (publish → confirm).
    pub baseline_same_rate: Option<PublishRun>,
    pub cpu_per_grant: CpuPerGrant,
    pub peak_rss_mib: PeakRss,
}

/// CPU µs per grant; `service_us` is the ingress, `load_generator_us` this process (load
/// generator and demo inventory).
#[derive(Debug, Serialize)]
pub struct CpuPerGrant {
    #[serde(flatten)]
    pub processes: CpuPerItem,
    pub workers_us: f64,
}

/// Peak RSS within the phase, MiB.
#[derive(Debug, Serialize)]
pub struct PeakRss {
    pub ingress: f64,
    pub workers: Vec<f64>,
    /// This process: the load generator and the in-process demo inventory.
    pub bench: f64,
}

impl PipelineBench {
    pub async fn run(
        &self,
        amqp_url: &str,
        concurrency: usize,
        duration: Duration,
    ) -> anyhow::Result<PipelineResult> {
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
    ) -> anyhow::Result<PipelineResult> {
        vhost::declare_topology(url).await?;
        let template = Template::new(Kind::OrderPaid, &Overrides::default())?;
        let ids = Arc::new(Ids::new(sim::new_run_id()));
        let publish =
            |until| baseline::publish(url, &template, SECRET, ids.clone(), concurrency, until);

        eprintln!("[baseline] lapin confirmed publisher, {concurrency} tasks, {duration:?}");
        publish(Until::Elapsed(WARM_UP)).await?;
        let baseline_publish = publish(Until::Elapsed(duration)).await?;
        vhost::purge(url, WORK_QUEUE).await?;
        eprintln!(
            "[baseline] raw consume-and-ack of {} messages",
            self.messages
        );
        publish(Until::Count(self.messages)).await?;
        let raw_consume_ack =
            baseline::consume_and_ack(url, self.worker_concurrency, self.messages).await?;

        let (ingress, webhook_url) = start_ingress(&self.ingress_bin, url, SECRET).await?;
        let workers = match start_workers(
            &self.worker_bin,
            url,
            &inventory.url(),
            self.workers,
            self.worker_concurrency,
        )
        .await
        {
            Ok(w) => w,
            Err(e) => {
                ingress.stop().await;
                return Err(e);
            }
        };
        let run = Run {
            inventory,
            template: &template,
            target: lean::Target::new(&webhook_url)?,
            broker: listener_pid(amqp_port(url)).await,
            ingress: &ingress,
            workers: &workers,
            concurrency,
        };
        let measured = run.stages(&self.shares, duration).await;
        stop_all(workers).await;
        ingress.stop().await;
        let (max, mut rates) = measured?;

        // After the services stopped, as in `xsolla-bench ingress`: the broker alone.
        for stage in &mut rates {
            let rate = stage.load.target_rate.unwrap_or(1.0);
            eprintln!("[baseline] lapin confirmed publisher, open loop at {rate:.0}/s");
            let at_rate = (rate, concurrency);
            let run =
                baseline::publish_at_rate(url, &template, SECRET, ids.clone(), at_rate, duration);
            stage.baseline_same_rate = Some(run.await?);
            vhost::purge(url, WORK_QUEUE).await?;
        }
        Ok(PipelineResult {
            concurrency,
            duration_s: duration.as_secs_f64(),
            workers: self.workers,
            worker_concurrency: self.worker_concurrency,
            baseline_publish,
            raw_consume_ack,
            max,
            rates,
        })
    }
}

/// The running pipeline and what its phases share.
struct Run<'a> {
    inventory: &'a InventoryHandle,
    template: &'a Template,
    target: lean::Target,
    broker: Option<String>,
    ingress: &'a Service,
    workers: &'a [Service],
    concurrency: usize,
}

impl Run<'_> {
    async fn stages(
        &self,
        shares: &[f64],
        duration: Duration,
    ) -> anyhow::Result<(Stage, Vec<Stage>)> {
        eprintln!(
            "[pipeline] warm-up, then closed loop: {} senders, {duration:?}",
            self.concurrency
        );
        self.stage(None, WARM_UP).await?;
        let max = self.stage(None, duration).await?;
        let mut rates = Vec::new();
        for &share in shares {
            let rate = (share * max.grants_per_s).max(1.0);
            eprintln!("[pipeline] open loop at {rate:.0}/s ({share} of the maximum), {duration:?}");
            let stage = self.stage(Some(rate), duration).await?;
            rates.push(Stage {
                share: Some(share),
                ..stage
            });
        }
        Ok((max, rates))
    }

    /// One phase: closed loop (`rate` = `None`) or open loop at `rate`, timed until the
    /// last acknowledged webhook's grant; the inventory is emptied for the next phase.
    async fn stage(&self, rate: Option<f64>, duration: Duration) -> anyhow::Result<Stage> {
        let plan = LoadPlan {
            rate,
            duration,
            concurrency: self.concurrency,
            run_id: sim::new_run_id(),
        };
        let services = std::iter::once(self.ingress).chain(self.workers);
        for pid in services.map(|s| s.pid.to_string()).chain(["self".into()]) {
            reset_peak_rss(&pid);
        }
        let (cpu_before, workers_before) = self.cpu();
        let started = Instant::now();
        let load = lean::run(&self.target, self.template, SECRET, &plan);
        let (load, granted) = match rate {
            Some(rate) => {
                let mut tracker = Tracker::new(&plan, rate, started);
                let within = duration + GRANT_WAIT;
                let (load, all) = tokio::join!(
                    load,
                    self.inventory.wait_for(|s| tracker.observe(s), within)
                );
                if let Err(e) = all {
                    eprintln!("[pipeline] not every webhook was granted: {e:#}");
                }
                (load, tracker.granted())
            }
            None => {
                let load = load.await;
                let count = load.acked;
                let all = |s: &Snapshot| s.grants.len() as u64 >= count;
                self.inventory.wait_for(all, GRANT_WAIT).await?;
                let (last, latency) = (Instant::now(), Latency::default());
                (
                    load,
                    Granted {
                        count,
                        last,
                        latency,
                    },
                )
            }
        };
        let (cpu_after, workers_after) = self.cpu();
        self.inventory.reset();
        anyhow::ensure!(load.acked > 0, "the ingress acknowledged nothing:\n{load}");
        let elapsed_s = (granted.last - started).as_secs_f64();
        Ok(Stage {
            share: None,
            granted: granted.count,
            grants_per_s: granted.count as f64 / elapsed_s.max(f64::MIN_POSITIVE),
            grant_latency_ms: granted.latency,
            baseline_same_rate: None,
            cpu_per_grant: CpuPerGrant {
                processes: cpu_before.per_item_us(&cpu_after, granted.count),
                workers_us: (workers_after - workers_before) * 1e6 / granted.count.max(1) as f64,
            },
            peak_rss_mib: PeakRss {
                ingress: self.ingress.memory().map_or(0.0, |m| m.peak_rss_mib),
                workers: peaks(self.workers),
                bench: memory_of("self").map_or(0.0, |m| m.peak_rss_mib),
            },
            load,
        })
    }

    /// CPU seconds so far of the broker, this process and the ingress; and of all workers.
    fn cpu(&self) -> (CpuSample, f64) {
        let sample = CpuSample::take(self.broker.as_deref(), Some(self.ingress));
        (sample, self.workers.iter().map(Service::cpu_seconds).sum())
    }
}

/// The grants of one phase.
struct Granted {
    count: u64,
    /// When the last one was seen.
    last: Instant,
    /// Planned send → grant (open loop only).
    latency: Latency,
}

/// Follows an open-loop phase's webhooks into the inventory: which are granted, and how
/// long after the planned send. `lean::run` gives its i-th webhook (from 0) the id
/// `run_id × 10⁹ + i + 1` and plans it at `start + planned_offset(i, rate)`, so no per-webhook record
/// needs to pass between the two; `start` is taken just before the run begins, which
/// lengthens each latency by a few µs at most.
struct Tracker {
    run_id: u64,
    rate: f64,
    start: Instant,
    granted: Vec<bool>,
    /// Every webhook before this index is granted.
    lowest: usize,
    seen: usize,
    last_grant: Option<Instant>,
    /// µs.
    histogram: Histogram<u64>,
}

impl Tracker {
    fn new(plan: &LoadPlan, rate: f64, start: Instant) -> Tracker {
        // As many as the load will start, by the load's own arithmetic.
        let total = (0u64..)
            .take_while(|&i| sim::planned_offset(i, rate) < plan.duration)
            .count();
        Tracker {
            run_id: plan.run_id,
            rate,
            start,
            granted: vec![false; total],
            lowest: 0,
            seen: 0,
            last_grant: None,
            histogram: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
        }
    }

    /// Run on every inventory change, under its lock, so it must stay cheap. It looks only
    /// at webhooks already planned and not yet seen granted, from the oldest, and stops
    /// once it has found as many as the state has new grants: about one map lookup per
    /// webhook in flight, not per grant ever made. True once every webhook is granted.
    fn observe(&mut self, state: &Snapshot) -> bool {
        let now = Instant::now();
        let total = self.granted.len();
        let planned = ((now - self.start).as_secs_f64() * self.rate) as usize + 1;
        let mut new = state.grants.len().saturating_sub(self.seen);
        let mut i = self.lowest;
        while new > 0 && i < planned.min(total) {
            let id = || (self.run_id * 1_000_000_000 + i as u64 + 1).to_string();
            if !self.granted[i] && state.grants.contains_key(&id()) {
                let planned_at = self.start + sim::planned_offset(i as u64, self.rate);
                let us = now.saturating_duration_since(planned_at).as_micros();
                self.histogram
                    .saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
                (self.granted[i], self.seen, self.last_grant) = (true, self.seen + 1, Some(now));
                new -= 1;
            }
            i += 1;
        }
        while self.lowest < total && self.granted[self.lowest] {
            self.lowest += 1;
        }
        self.seen == total
    }

    fn granted(&self) -> Granted {
        Granted {
            count: self.seen as u64,
            last: self.last_grant.unwrap_or(self.start),
            latency: Latency::from_histogram(&self.histogram),
        }
    }
}
