//! `xsolla-bench ingress`: the ingress binary next to a plain confirmed publisher, in the
//! same run, on the same broker, into the same queue, at the same concurrency.

use std::{path::PathBuf, sync::Arc, time::Duration};

use serde::Serialize;
use shared::topology::WORK_QUEUE;
use tests::sim::{self, Ids, Kind, LoadPlan, LoadReport, Overrides, Template, lean, vhost};

use crate::{
    baseline::{self, PublishRun, Until},
    proc::{
        CpuPerItem, CpuSample, Memory, Service, amqp_port, free_addr, listener_pid, sibling_binary,
        start_ingress,
    },
};

pub(crate) const SECRET: &str = "xsolla-bench-secret";
/// Unmeasured lead-in of each phase: connections opened, pools filled, caches warm.
const WARM_UP: Duration = Duration::from_secs(1);

/// Options of `xsolla-bench ingress`.
#[derive(Debug, clap::Args)]
pub struct IngressBench {
    /// The ingress binary to measure.
    #[arg(long, default_value_os_t = sibling_binary("ingress"))]
    ingress_bin: PathBuf,
    /// The bare HTTP → confirmed-publish relay measured beside it (the ceiling of any HTTP
    /// ingress on this machine).
    #[arg(long, default_value_os_t = sibling_binary("bare-relay"))]
    relay_bin: PathBuf,
}

/// Everything measured.
#[derive(Debug, Serialize)]
pub struct IngressResult {
    pub concurrency: usize,
    pub duration_s: f64,
    pub baseline: PublishRun,
    pub ingress: LoadReport,
    pub half_rate: LoadReport,
    /// The baseline publisher, open loop at the same rate as `half_rate`: what the broker
    /// and machine give at that rate without the ingress.
    pub baseline_half_rate: PublishRun,
    pub ingress_memory: Memory,
    /// `bare-relay` (HTTP in, the same confirmed publish, nothing else) at full load.
    pub relay: LoadReport,
    pub relay_cpu: CpuPerItem,
    /// Mean publish-to-confirm time inside the ingress at full load, from its own
    /// `ingress_publish_confirm_seconds` histogram: set beside `baseline.latency_ms.mean`,
    /// it splits the ingress's latency into the broker's part and its own.
    pub ingress_confirm_mean_ms: f64,
    /// CPU per confirmed publish in the baseline phase (the machine has 2 cores in all).
    pub baseline_cpu: CpuPerItem,
    /// CPU per acknowledged webhook at full load.
    pub ingress_cpu: CpuPerItem,
    pub ratios: Ratios,
    pub targets: Targets,
}

#[derive(Debug, Serialize)]
pub struct Ratios {
    /// Ingress acknowledged/s ÷ baseline confirmed/s.
    pub throughput: f64,
    /// Bare relay acknowledged/s ÷ baseline confirmed/s: the most an HTTP ingress reaches.
    pub relay_throughput: f64,
    /// Ingress ÷ bare relay: what our own code costs on top of HTTP and the publish.
    pub ingress_to_relay: f64,
    /// Ingress p50 ÷ baseline p50 at full load.
    pub p50: f64,
    pub p99: f64,
}

#[derive(Debug, Serialize)]
pub struct Targets {
    /// ≥ 80 % of the baseline's throughput.
    pub throughput_met: bool,
    /// p99 < 25 ms at half the ingress's maximum rate.
    pub half_rate_p99_met: bool,
    /// Peak RSS < 50 MiB.
    pub rss_met: bool,
}

impl IngressBench {
    pub async fn run(
        &self,
        amqp_url: &str,
        concurrency: usize,
        duration: Duration,
    ) -> anyhow::Result<IngressResult> {
        let mut vhost = vhost::Vhost::create(amqp_url, "xsolla-bench").await?;
        let result = self.phases(vhost.url(), concurrency, duration).await;
        vhost.delete().await;
        result
    }

    async fn phases(
        &self,
        url: &str,
        concurrency: usize,
        duration: Duration,
    ) -> anyhow::Result<IngressResult> {
        // The baseline runs before the ingress, which would declare it.
        vhost::declare_topology(url).await?;
        let broker = listener_pid(amqp_port(url)).await;
        let template = Template::new(Kind::OrderPaid, &Overrides::default())?;
        let ids = Arc::new(Ids::new(sim::new_run_id()));

        eprintln!("[1/5] baseline: lapin confirmed publisher, {concurrency} tasks, {duration:?}");
        baseline::publish(
            url,
            &template,
            SECRET,
            ids.clone(),
            concurrency,
            Until::Elapsed(WARM_UP),
        )
        .await?;
        let before = CpuSample::take(broker.as_deref(), None);
        let baseline = baseline::publish(
            url,
            &template,
            SECRET,
            ids.clone(),
            concurrency,
            Until::Elapsed(duration),
        )
        .await?;
        let baseline_cpu = before.per_item_us(
            &CpuSample::take(broker.as_deref(), None),
            baseline.published,
        );
        vhost::purge(url, WORK_QUEUE).await?;

        let (ingress, webhook_url) = start_ingress(&self.ingress_bin, url, SECRET).await?;
        let phase = Phase {
            amqp_url: url,
            broker: broker.as_deref(),
            template: &template,
            concurrency,
            duration,
        };
        let measured = phase.against(&ingress, &webhook_url).await;
        let memory = ingress.memory();
        ingress.stop().await;
        let (full, half, ingress_cpu, ingress_confirm_mean_ms) = measured?;
        let memory = memory?;
        vhost::purge(url, WORK_QUEUE).await?;
        let rate = half.target_rate.unwrap_or(1.0);
        eprintln!("[4/5] baseline at the same rate: open loop at {rate:.0}/s, {duration:?}");
        let at_rate = (rate, concurrency);
        baseline::publish_at_rate(url, &template, SECRET, ids.clone(), at_rate, WARM_UP).await?;
        let baseline_half_rate =
            baseline::publish_at_rate(url, &template, SECRET, ids, (rate, concurrency), duration)
                .await?;
        vhost::purge(url, WORK_QUEUE).await?;
        eprintln!(
            "[5/5] bare relay (HTTP → confirmed publish, nothing else): closed loop, {duration:?}"
        );
        let (relay, relay_cpu) = phase.relay(&self.relay_bin, None).await?;
        vhost::purge(url, WORK_QUEUE).await?;

        Ok(IngressResult {
            concurrency,
            duration_s: duration.as_secs_f64(),
            ratios: Ratios {
                throughput: ratio(full.throughput, baseline.throughput),
                relay_throughput: ratio(relay.throughput, baseline.throughput),
                ingress_to_relay: ratio(full.throughput, relay.throughput),
                p50: ratio(full.latency_ms.p50, baseline.latency_ms.p50),
                p99: ratio(full.latency_ms.p99, baseline.latency_ms.p99),
            },
            targets: Targets {
                throughput_met: full.throughput >= 0.8 * baseline.throughput,
                half_rate_p99_met: half.acked > 0 && half.latency_ms.p99 < 25.0,
                rss_met: memory.peak_rss_mib < 50.0,
            },
            baseline_cpu,
            ingress_cpu,
            baseline,
            ingress: full,
            half_rate: half,
            baseline_half_rate,
            ingress_memory: memory,
            ingress_confirm_mean_ms,
            relay,
            relay_cpu,
        })
    }
}

/// What the load phases share.
pub(crate) struct Phase<'a> {
    pub amqp_url: &'a str,
    pub broker: Option<&'a str>,
    pub template: &'a Template,
    pub concurrency: usize,
    pub duration: Duration,
}

impl Phase<'_> {
    /// Phases 2 and 3 against the running ingress; also the CPU time spent in phase 2.
    async fn against(
        &self,
        ingress: &Service,
        webhook_url: &str,
    ) -> anyhow::Result<(LoadReport, LoadReport, CpuPerItem, f64)> {
        let (concurrency, duration) = (self.concurrency, self.duration);
        let target = lean::Target::new(webhook_url)?;
        eprintln!("[2/5] ingress: closed loop, {concurrency} concurrent senders, {duration:?}");
        self.lead_in(&target, None).await;
        let confirms_before = ConfirmTotals::read(webhook_url).await?;
        let (full, cpu) = self.closed_loop(&target, ingress).await;
        let confirms = ConfirmTotals::read(webhook_url)
            .await?
            .since(&confirms_before);
        anyhow::ensure!(full.acked > 0, "the ingress acknowledged nothing:\n{full}");
        vhost::purge(self.amqp_url, WORK_QUEUE).await?;
        let rate = (full.throughput / 2.0).max(1.0);
        eprintln!("[3/5] ingress at half its maximum: open loop at {rate:.0}/s, {duration:?}");
        // The lead-in matters here too: the broker is still cleaning up after the purge of
        // phase 2's messages.
        self.lead_in(&target, Some(rate)).await;
        let half = lean::run(
            &target,
            self.template,
            SECRET,
            &self.plan(Some(rate), duration),
        )
        .await;
        Ok((full, half, cpu, confirms.mean_ms()))
    }

    /// The bare relay under the same closed loop as the ingress in phase 2.
    /// `bare-relay`'s closed loop; with `required_secret`, the relay also does the
    /// ingress's required work, checking signatures against that secret
    /// (`RELAY_REQUIRED_SECRET`).
    pub(crate) async fn relay(
        &self,
        bin: &std::path::Path,
        required_secret: Option<&str>,
    ) -> anyhow::Result<(LoadReport, CpuPerItem)> {
        let listen = free_addr()?;
        let mut env = vec![
            ("RELAY_LISTEN", listen.clone()),
            ("AMQP_URL", self.amqp_url.to_owned()),
        ];
        if let Some(secret) = required_secret {
            env.push(("RELAY_REQUIRED_SECRET", secret.to_owned()));
        }
        let ready = format!("http://{listen}/readyz");
        let relay = Service::start("bare-relay", bin, &env, &ready).await?;
        let target = lean::Target::new(&format!("http://{listen}/webhooks/xsolla"))?;
        self.lead_in(&target, None).await;
        let (report, cpu) = self.closed_loop(&target, &relay).await;
        relay.stop().await;
        anyhow::ensure!(
            report.acked > 0,
            "the bare relay acknowledged nothing:\n{report}"
        );
        Ok((report, cpu))
    }

    fn plan(&self, rate: Option<f64>, duration: Duration) -> LoadPlan {
        LoadPlan {
            rate,
            duration,
            concurrency: self.concurrency,
            run_id: sim::new_run_id(),
        }
    }

    /// The unmeasured lead-in of a phase, at the phase's load: connections opened, pools
    /// filled, caches warm.
    pub(crate) async fn lead_in(&self, target: &lean::Target, rate: Option<f64>) {
        lean::run(target, self.template, SECRET, &self.plan(rate, WARM_UP)).await;
    }

    /// The measured closed loop, and the CPU the broker, the load generator and `service`
    /// spent in it per acknowledged webhook.
    pub(crate) async fn closed_loop(
        &self,
        target: &lean::Target,
        service: &Service,
    ) -> (LoadReport, CpuPerItem) {
        let before = CpuSample::take(self.broker, Some(service));
        let report = lean::run(
            target,
            self.template,
            SECRET,
            &self.plan(None, self.duration),
        )
        .await;
        let cpu = before.per_item_us(&CpuSample::take(self.broker, Some(service)), report.acked);
        (report, cpu)
    }
}

/// The confirm-latency histogram's running totals, read from the ingress's `/metrics`.
#[derive(Debug, Default)]
struct ConfirmTotals {
    seconds: f64,
    count: f64,
}

impl ConfirmTotals {
    async fn read(webhook_url: &str) -> anyhow::Result<ConfirmTotals> {
        let url = webhook_url.replace("/webhooks/xsolla", "/metrics");
        let text = reqwest::get(&url).await?.error_for_status()?.text().await?;
        let value = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name) && l.contains(r#"result="ack""#))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Ok(ConfirmTotals {
            seconds: value("ingress_publish_confirm_seconds_sum"),
            count: value("ingress_publish_confirm_seconds_count"),
        })
    }

    fn since(&self, before: &ConfirmTotals) -> ConfirmTotals {
        ConfirmTotals {
            seconds: self.seconds - before.seconds,
            count: self.count - before.count,
        }
    }

    fn mean_ms(&self) -> f64 {
        if self.count > 0.0 {
            1000.0 * self.seconds / self.count
        } else {
            0.0
        }
    }
}

/// `a / b`, or 0 when there is no `b` to divide by (a phase that measured nothing).
pub(crate) fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}
