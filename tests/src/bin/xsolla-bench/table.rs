//! Markdown tables of the results, ratios first, raw numbers beside them.

use std::fmt::Write as _;

use crate::{ingress::IngressResult, pipeline::PipelineResult, worker::WorkerResult};

fn yes(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

pub fn ingress(r: &IngressResult) -> String {
    let (b, i, h) = (&r.baseline, &r.ingress, &r.half_rate);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Ingress vs plain confirmed publisher ({} concurrent, {:.0} s per phase)\n",
        r.concurrency, r.duration_s
    );
    let _ = writeln!(
        s,
        "| | baseline (lapin, confirms) | ingress (HTTP → confirmed publish) | ingress / baseline |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| throughput (acked/s) | {:.0} | {:.0} | {:.2} |",
        b.throughput, i.throughput, r.ratios.throughput
    );
    let _ = writeln!(
        s,
        "| p50 latency (ms) | {:.2} | {:.2} | {:.2} |",
        b.latency_ms.p50, i.latency_ms.p50, r.ratios.p50
    );
    let _ = writeln!(
        s,
        "| p99 latency (ms) | {:.2} | {:.2} | {:.2} |",
        b.latency_ms.p99, i.latency_ms.p99, r.ratios.p99
    );
    let _ = writeln!(
        s,
        "| max latency (ms) | {:.2} | {:.2} | |",
        b.latency_ms.max, i.latency_ms.max
    );
    let _ = writeln!(
        s,
        "| bare relay (HTTP → the same confirmed publish, nothing else) acked/s | | {:.0} | {:.2} (ingress / relay {:.2}) |",
        r.relay.throughput, r.ratios.relay_throughput, r.ratios.ingress_to_relay
    );
    let _ = writeln!(
        s,
        "| mean publish → confirm (ms) | {:.2} | {:.2} (inside the ingress) | {:.2} |",
        b.latency_ms.mean,
        r.ingress_confirm_mean_ms,
        r.ingress_confirm_mean_ms / b.latency_ms.mean.max(f64::MIN_POSITIVE)
    );
    let _ = writeln!(s, "| confirmed / acked | {} | {} | |", b.published, i.acked);
    let _ = writeln!(
        s,
        "| failed / not acked | {} | {} | |",
        b.failed,
        i.sent - i.acked
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "| target (issue 2) | measured | |");
    let _ = writeln!(s, "|---|---|---|");
    let _ = writeln!(
        s,
        "| throughput ≥ 80 % of baseline | {:.0} % | {} |",
        100.0 * r.ratios.throughput,
        yes(r.targets.throughput_met)
    );
    let _ = writeln!(
        s,
        "| p99 < 25 ms at half the max rate ({:.0}/s open loop) | p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} of {} acked) | {} |",
        h.target_rate.unwrap_or_default(),
        h.latency_ms.p50,
        h.latency_ms.p99,
        h.latency_ms.max,
        h.acked,
        h.sent,
        yes(r.targets.half_rate_p99_met)
    );
    let bh = &r.baseline_half_rate;
    let _ = writeln!(
        s,
        "| (baseline publisher at the same rate, for reference) | p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} confirmed, {} failed) | |",
        bh.latency_ms.p50, bh.latency_ms.p99, bh.latency_ms.max, bh.published, bh.failed
    );
    let _ = writeln!(
        s,
        "| peak RSS < 50 MiB | {:.1} MiB (VmHWM) | {} |",
        r.ingress_memory.peak_rss_mib,
        yes(r.targets.rss_met)
    );
    let _ = writeln!(s);
    let (bc, ic) = (&r.baseline_cpu, &r.ingress_cpu);
    let _ = writeln!(
        s,
        "| CPU per message (µs, 2 cores in all) | broker | publisher / HTTP load generator | ingress | total |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    for (name, c) in [
        ("baseline", bc),
        ("ingress, full load", ic),
        ("bare relay, full load", &r.relay_cpu),
    ] {
        let total = c.broker_us + c.load_generator_us + c.service_us;
        let _ = writeln!(
            s,
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} |",
            c.broker_us, c.load_generator_us, c.service_us, total
        );
    }
    s
}

pub fn worker(r: &WorkerResult) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Worker drain vs plain consume-and-ack ({} messages, prefetch/concurrency {}, {} rounds)\n",
        r.messages,
        r.worker_concurrency,
        r.rounds.len()
    );
    let _ = writeln!(
        s,
        "| round | drain | steady messages/s (10 → 90 %) | / raw | whole drain messages/s | / raw | peak RSS (MiB) |"
    );
    let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|---|");
    for (n, round) in r.rounds.iter().enumerate() {
        let raw = &round.raw;
        let _ = writeln!(
            s,
            "| {} | raw consume-and-ack (lapin) | {:.0} | 1.00 | {:.0} | 1.00 | |",
            n + 1,
            raw.steady_rate,
            raw.rate
        );
        for d in [&round.one_worker, &round.two_workers] {
            let _ = writeln!(
                s,
                "| {} | {} worker(s) → demo inventory (grants/s) | {:.0} | {:.2} | {:.0} | {:.2} | {:?} |",
                n + 1,
                d.workers,
                d.run.steady_rate,
                d.steady_ratio_to_raw,
                d.run.rate,
                d.ratio_to_raw,
                rounded(&d.peak_rss_mib)
            );
        }
    }
    let _ = writeln!(
        s,
        "\n**Medians over the rounds**: 1 worker **{:.2}** of raw at steady state ({:.2} whole drain); 2 workers {:.2} ({:.2}). Target (issue 3): 1 worker ≥ 0.60: {}.",
        r.median_steady_ratio[0],
        r.median_ratio[0],
        r.median_steady_ratio[1],
        r.median_ratio[1],
        yes(r.median_steady_ratio[0] >= 0.6)
    );
    let _ = writeln!(
        s,
        "\n### End to end: webhook → ingress → queue → worker → grant\n"
    );
    let _ = writeln!(
        s,
        "| workers | webhooks acked/s (ingress) | grants/s | grants / raw consume | webhook p50 / p99 (ms) | send→grant p50 / p99 at half rate (ms) | ingress / worker peak RSS (MiB) |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---|---|---|");
    for e in &r.end_to_end {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.0} | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} ({} probes) | {:.1} / {:?} |",
            e.workers,
            e.load.throughput,
            e.grants_per_s,
            e.grants_per_s / r.median_raw_rate,
            e.load.latency_ms.p50,
            e.load.latency_ms.p99,
            e.half_rate_latency_ms.p50,
            e.half_rate_latency_ms.p99,
            e.half_rate_latency_ms.count,
            e.ingress_memory.peak_rss_mib,
            rounded(&e.worker_peak_rss_mib)
        );
    }
    s
}

fn rounded(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| (x * 10.0).round() / 10.0).collect()
}

pub fn pipeline(r: &PipelineResult) -> String {
    let (publish, raw) = (&r.baseline_publish, &r.raw_consume_ack);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Pipeline: webhook → ingress → queue → {} worker(s) → grant ({} concurrent / open loop, {:.0} s per phase)\n",
        r.workers, r.concurrency, r.duration_s
    );
    let _ = writeln!(
        s,
        "Same-run baselines: lapin confirmed publisher {:.0}/s ({} tasks, p50 {:.2} ms, p99 {:.2} ms); raw consume-and-ack {:.0}/s (prefetch {}).\n",
        publish.throughput,
        r.concurrency,
        publish.latency_ms.p50,
        publish.latency_ms.p99,
        raw.rate,
        r.worker_concurrency
    );
    let _ = writeln!(
        s,
        "| load | offered/s | acked/s | grants/s | / raw consume | / publisher | webhook→204 p50 / p99 (ms) | webhook→grant p50 / p99 / max (ms) | granted / sent | baseline publish→confirm p50 / p99 at that rate (ms) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---|---|---|---|");
    for e in std::iter::once(&r.max).chain(&r.rates) {
        let load = match e.share {
            Some(share) => format!("{:.0} % of max", 100.0 * share),
            None => "max (closed loop)".to_owned(),
        };
        let offered = e
            .load
            .target_rate
            .map_or_else(|| "—".to_owned(), |rate| format!("{rate:.0}"));
        let (g, w) = (&e.grant_latency_ms, &e.load.latency_ms);
        let grant = if g.count == 0 {
            "—".to_owned()
        } else {
            format!("{:.2} / {:.2} / {:.2}", g.p50, g.p99, g.max)
        };
        let base = e.baseline_same_rate.as_ref().map_or_else(
            || "—".to_owned(),
            |b| format!("{:.2} / {:.2}", b.latency_ms.p50, b.latency_ms.p99),
        );
        // Throughput ratios only for the maximum: below it, grants/s is just the rate offered.
        let ratios = if e.share.is_none() {
            format!(
                "{:.2} | {:.2}",
                e.grants_per_s / raw.rate,
                e.grants_per_s / publish.throughput
            )
        } else {
            "— | —".to_owned()
        };
        let _ = writeln!(
            s,
            "| {load} | {offered} | {:.0} | {:.0} | {ratios} | {:.2} / {:.2} | {grant} | {} / {} | {base} |",
            e.load.throughput, e.grants_per_s, w.p50, w.p99, e.granted, e.load.sent,
        );
    }
    let _ = writeln!(
        s,
        "\n| load | peak RSS (MiB): ingress / workers / bench (load generator + demo inventory) | CPU µs per grant: broker / ingress / workers / bench | total |"
    );
    let _ = writeln!(s, "|---|---|---|---:|");
    for e in std::iter::once(&r.max).chain(&r.rates) {
        let (m, c) = (&e.peak_rss_mib, &e.cpu_per_grant);
        let p = &c.processes;
        let total = p.broker_us + p.service_us + c.workers_us + p.load_generator_us;
        let _ = writeln!(
            s,
            "| {} | {:.1} / {:?} / {:.1} | {:.0} / {:.0} / {:.0} / {:.0} | {total:.0} |",
            e.share
                .map_or_else(|| "max".to_owned(), |x| format!("{:.0} %", 100.0 * x)),
            m.ingress,
            rounded(&m.workers),
            m.bench,
            p.broker_us,
            p.service_us,
            c.workers_us,
            p.load_generator_us
        );
    }
    s
}
