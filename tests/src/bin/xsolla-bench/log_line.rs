//! `xsolla-bench log-line`: the CPU of the ingress's answer line in `LOG_FORMAT=text`,
//! formatted by tracing-subscriber's default field formatter and by ours
//! (`shared::telemetry::TextFields`), in alternating batches on one thread into a sink, so
//! that only the formatting differs. The end-to-end A/B (`ingress-ab`) cannot tell a 1 µs
//! change from its noise; this can.

use std::time::Instant;

use crate::proc::cpu_seconds_of;

use serde::Serialize;
use tracing_subscriber::{fmt::format::DefaultFields, layer::SubscriberExt as _};

/// Options of `xsolla-bench log-line`.
#[derive(Debug, clap::Args)]
pub struct LogLine {
    /// Lines per batch.
    #[arg(long, default_value_t = 1_000_000)]
    lines: u32,
    /// Batches of each formatter, alternating.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
    batches: u32,
}

#[derive(Debug, Serialize)]
pub struct LogLineResult {
    pub lines_per_batch: u32,
    /// Per batch, in the order run: µs of CPU per line (this thread's), default then ours.
    pub default_us: Vec<f64>,
    pub ours_us: Vec<f64>,
    pub median_default_us: f64,
    pub median_ours_us: f64,
    pub median_ratio: f64,
}

impl LogLine {
    pub fn run(&self) -> LogLineResult {
        let (mut default_us, mut ours_us) = (Vec::new(), Vec::new());
        for _ in 0..self.batches {
            default_us.push(batch(DefaultFields::new(), self.lines));
            ours_us.push(batch(shared::telemetry::TextFields, self.lines));
        }
        let median_default_us = crate::worker::median(default_us.clone());
        let median_ours_us = crate::worker::median(ours_us.clone());
        LogLineResult {
            lines_per_batch: self.lines,
            median_ratio: median_ours_us / median_default_us,
            default_us,
            ours_us,
            median_default_us,
            median_ours_us,
        }
    }
}

/// µs of this thread's CPU per answer line with `fields` formatting them.
fn batch<N>(fields: N, lines: u32) -> f64
where
    N: for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static,
{
    // The binaries' text layer (`shared::telemetry::init_tracing`): timestamps, no colours.
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .fmt_fields(fields)
        .with_writer(std::io::sink);
    let subscriber = tracing_subscriber::registry().with(layer);
    let client: std::net::IpAddr = [203, 0, 113, 7].into();
    tracing::subscriber::with_default(subscriber, || {
        let started = cpu_seconds_of("thread-self");
        let wall = Instant::now();
        for i in 0..lines {
            // The fields and value shapes of `ingress::routes::finish`'s INFO line.
            let elapsed_ms = f64::from(i % 9000) / 1000.0 + 1.0;
            tracing::info!(
                client_ip = %client,
                notification_type = Some("order_paid"),
                order_id = Some("1234567890"),
                transaction_id = Some("987654321"),
                user_id = Some("player-42"),
                message_id = Some("order_paid:1234567890"),
                traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                status = 204u16,
                outcome = "accepted",
                elapsed_ms,
                "webhook answered"
            );
        }
        let cpu = cpu_seconds_of("thread-self") - started;
        // A clock without a per-thread CPU reading falls back to the wall time.
        let spent = if cpu > 0.0 {
            cpu
        } else {
            wall.elapsed().as_secs_f64()
        };
        spent * 1e6 / f64::from(lines)
    })
}

pub fn markdown(r: &LogLineResult) -> String {
    let mut out = format!(
        "`xsolla-bench log-line`: the ingress's answer line, {} lines a batch, µs of CPU per line\n\n| batch | default fields | ours (`TextFields`) | ours ÷ default |\n|---:|---:|---:|---:|\n",
        r.lines_per_batch
    );
    for (i, (d, o)) in r.default_us.iter().zip(&r.ours_us).enumerate() {
        out.push_str(&format!("| {} | {d:.3} | {o:.3} | {:.2} |\n", i + 1, o / d));
    }
    out.push_str(&format!(
        "| median | {:.3} | {:.3} | **{:.2}** |\n",
        r.median_default_us, r.median_ours_us, r.median_ratio
    ));
    out
}
