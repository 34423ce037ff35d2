//! `xsolla-bench ingress-ab`: `bare-relay` and one or more ingress builds under the same
//! closed loop, in interleaved rounds (the order rotated every round), so that a slow
//! minute of a shared machine falls on all of them instead of on one. Each round's ratios
//! are to the relay measured in that round; the verdict reads their medians.

use std::{path::PathBuf, time::Duration};

use serde::Serialize;
use tests::sim::{Kind, Overrides, Template, lean, vhost};

use crate::{
    ingress::{Phase, SECRET, ratio},
    proc::{CpuPerItem, amqp_port, listener_pid, sibling_binary, start_ingress},
    worker::median,
};

/// Options of `xsolla-bench ingress-ab`.
#[derive(Debug, clap::Args)]
pub struct IngressAb {
    /// An ingress build to measure; repeat for an A/B of builds (e.g. before and after a
    /// change). Default: the ingress next to xsolla-bench.
    #[arg(long = "ingress-bin")]
    ingress_bins: Vec<PathBuf>,
    /// The bare HTTP → confirmed-publish relay every build is measured against.
    #[arg(long, default_value_os_t = sibling_binary("bare-relay"))]
    relay_bin: PathBuf,
    /// Also run the floor: `bare-relay` doing the work no ingress of ours may leave out
    /// (signature, strict summary, one answer line; `RELAY_REQUIRED_SECRET`), as a last
    /// contestant with its own ratios to the relay.
    #[arg(long)]
    floor: bool,
    /// Interleaved rounds; each runs the relay and every build once.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
}

/// One service's closed loop in one round.
#[derive(Debug, Clone, Serialize)]
pub struct Leg {
    /// `bare-relay`, the floor, or the ingress binary's path.
    pub name: String,
    pub acked_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu: CpuPerItem,
}

/// A build's leg beside the relay's leg of the same round.
#[derive(Debug, Clone, Serialize)]
pub struct Versus {
    pub throughput: f64,
    pub cpu: f64,
}

#[derive(Debug, Serialize)]
pub struct Round {
    /// In the order they ran.
    pub legs: Vec<Leg>,
    /// Per build (in `--ingress-bin` order): ÷ the relay of this round.
    pub versus_relay: Vec<Versus>,
}

#[derive(Debug, Serialize)]
pub struct AbResult {
    pub concurrency: usize,
    pub duration_s: f64,
    /// The builds, then the floor if it ran.
    pub builds: Vec<String>,
    pub rounds: Vec<Round>,
    /// Per build: the median over rounds of its ratios to the relay.
    pub median_versus_relay: Vec<Versus>,
    /// Issue 10's target, per build: ≥ 0.95 of the relay's throughput and ≤ 1.3× its CPU
    /// per webhook.
    pub target_met: Vec<bool>,
}

/// Which service a leg runs.
#[derive(Clone, Copy)]
enum Contestant {
    Relay,
    Build(usize),
    /// `bare-relay` with the required work.
    Floor,
}

/// The floor's name in the tables.
const FLOOR: &str = "floor: bare-relay + signature, summary, answer line";

impl IngressAb {
    pub async fn run(
        &self,
        amqp_url: &str,
        concurrency: usize,
        duration: Duration,
    ) -> anyhow::Result<AbResult> {
        self.rounds(amqp_url, concurrency, duration).await
    }

    fn builds(&self) -> Vec<PathBuf> {
        if self.ingress_bins.is_empty() {
            vec![sibling_binary("ingress")]
        } else {
            self.ingress_bins.clone()
        }
    }

    async fn rounds(
        &self,
        url: &str,
        concurrency: usize,
        duration: Duration,
    ) -> anyhow::Result<AbResult> {
        let broker = listener_pid(amqp_port(url)).await;
        let template = Template::new(Kind::OrderPaid, &Overrides::default())?;
        let builds = self.builds();
        let mut order: Vec<Contestant> = std::iter::once(Contestant::Relay)
            .chain((0..builds.len()).map(Contestant::Build))
            .chain(self.floor.then_some(Contestant::Floor))
            .collect();
        let mut names: Vec<String> = builds.iter().map(|b| b.display().to_string()).collect();
        if self.floor {
            names.push(FLOOR.to_owned());
        }
        let mut rounds = Vec::new();
        for round in 0..self.rounds {
            let mut legs = vec![None; order.len()];
            for (slot, contestant) in order.iter().enumerate() {
                let name = match contestant {
                    Contestant::Relay => "bare-relay".to_owned(),
                    Contestant::Build(i) => names[*i].clone(),
                    Contestant::Floor => FLOOR.to_owned(),
                };
                eprintln!(
                    "[round {}/{}, {}/{}] {name}: closed loop, {concurrency} senders, {duration:?}",
                    round + 1,
                    self.rounds,
                    slot + 1,
                    order.len()
                );
                // A fresh vhost per leg: no leg inherits another's queue contents, and an
                // older build declares the topology it knows (RabbitMQ refuses a queue
                // redeclared with other arguments).
                let mut vhost = vhost::Vhost::create(url, "xsolla-bench").await?;
                let phase = Phase {
                    amqp_url: vhost.url(),
                    broker: broker.as_deref(),
                    template: &template,
                    concurrency,
                    duration,
                };
                let leg = self.leg(&phase, *contestant, &builds, name).await;
                vhost.delete().await;
                let leg = leg?;
                let index = match contestant {
                    Contestant::Relay => 0,
                    Contestant::Build(i) => i + 1,
                    Contestant::Floor => builds.len() + 1,
                };
                legs[index] = Some(leg);
            }
            let legs: Vec<Leg> = legs
                .into_iter()
                .map(|l| l.expect("every leg ran"))
                .collect();
            let relay = &legs[0];
            let versus_relay = legs[1..]
                .iter()
                .map(|leg| Versus {
                    throughput: ratio(leg.acked_per_s, relay.acked_per_s),
                    cpu: ratio(leg.cpu.service_us, relay.cpu.service_us),
                })
                .collect();
            rounds.push(Round { legs, versus_relay });
            order.rotate_left(1);
        }
        let median_versus_relay: Vec<Versus> = (0..names.len())
            .map(|b| Versus {
                throughput: median(
                    rounds
                        .iter()
                        .map(|r| r.versus_relay[b].throughput)
                        .collect(),
                ),
                cpu: median(rounds.iter().map(|r| r.versus_relay[b].cpu).collect()),
            })
            .collect();
        Ok(AbResult {
            concurrency,
            duration_s: duration.as_secs_f64(),
            builds: names,
            target_met: median_versus_relay
                .iter()
                .map(|v| v.throughput >= 0.95 && v.cpu <= 1.3)
                .collect(),
            rounds,
            median_versus_relay,
        })
    }

    async fn leg(
        &self,
        phase: &Phase<'_>,
        contestant: Contestant,
        builds: &[PathBuf],
        name: String,
    ) -> anyhow::Result<Leg> {
        let (report, cpu) = match contestant {
            Contestant::Relay => {
                vhost::declare_topology(phase.amqp_url).await?;
                phase.relay(&self.relay_bin, None).await?
            }
            Contestant::Floor => {
                vhost::declare_topology(phase.amqp_url).await?;
                phase.relay(&self.relay_bin, Some(SECRET)).await?
            }
            Contestant::Build(i) => {
                let (ingress, webhook_url) =
                    start_ingress(&builds[i], phase.amqp_url, SECRET).await?;
                let target = lean::Target::new(&webhook_url)?;
                phase.lead_in(&target, None).await;
                let measured = phase.closed_loop(&target, &ingress).await;
                ingress.stop().await;
                anyhow::ensure!(
                    measured.0.acked > 0,
                    "{name} acknowledged nothing:\n{}",
                    measured.0
                );
                measured
            }
        };
        Ok(Leg {
            name,
            acked_per_s: report.throughput,
            p50_ms: report.latency_ms.p50,
            p99_ms: report.latency_ms.p99,
            cpu,
        })
    }
}

/// The rounds and the medians as markdown.
pub fn markdown(r: &AbResult) -> String {
    let mut out = format!(
        "`xsolla-bench ingress-ab`: {} interleaved rounds, closed loop of {} senders, {:.0} s a leg\n\n",
        r.rounds.len(),
        r.concurrency,
        r.duration_s
    );
    out.push_str("| round | service | acked/s | p50 / p99 (ms) | CPU µs per webhook: service / broker / load generator | ÷ relay: acked/s, service CPU |\n|---:|---|---:|---:|---:|---:|\n");
    for (n, round) in r.rounds.iter().enumerate() {
        for (i, leg) in round.legs.iter().enumerate() {
            let versus = match i {
                0 => String::new(),
                i => {
                    let v = &round.versus_relay[i - 1];
                    format!("{:.2}, {:.2}", v.throughput, v.cpu)
                }
            };
            out.push_str(&format!(
                "| {} | {} | {:.0} | {:.2} / {:.2} | {:.1} / {:.1} / {:.1} | {versus} |\n",
                n + 1,
                leg.name,
                leg.acked_per_s,
                leg.p50_ms,
                leg.p99_ms,
                leg.cpu.service_us,
                leg.cpu.broker_us,
                leg.cpu.load_generator_us
            ));
        }
    }
    out.push_str("\n| build | median ÷ relay: acked/s | median ÷ relay: service CPU per webhook | target ≥ 0.95 and ≤ 1.3 |\n|---|---:|---:|---|\n");
    for ((build, v), met) in r
        .builds
        .iter()
        .zip(&r.median_versus_relay)
        .zip(&r.target_met)
    {
        out.push_str(&format!(
            "| {build} | {:.2} | {:.2} | {} |\n",
            v.throughput,
            v.cpu,
            if *met { "met" } else { "**missed**" }
        ));
    }
    out
}
