//! `xsolla-bench`: measures the ingress, the worker and the whole pipeline next to a
//! plain-lapin baseline run in the same process, on the same broker and machine, so
//! results read as ratios that survive a change of machine. Method and results: BENCHMARKS.md.

mod baseline;
mod ingress;
mod ingress_ab;
mod log_line;
mod pipeline;
mod proc;
mod status;
mod table;
mod worker;

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use shared::config::parse_duration;

/// Benchmarks the ingress (`ingress`), the worker (`worker`) or the whole pipeline
/// (`pipeline`) against a same-run baseline. Needs RabbitMQ (a throwaway vhost is made
/// with rabbitmqctl) and the release binaries: `cargo build --release --workspace --bins`.
#[derive(Parser, Debug)]
#[command(
    name = "xsolla-bench",
    version,
    after_help = "\
Examples:
  cargo run --release -p tests --bin xsolla-bench -- ingress
  cargo run --release -p tests --bin xsolla-bench -- ingress --concurrency 32 --duration 20s --json
  cargo run --release -p tests --bin xsolla-bench -- ingress-ab --rounds 3 --ingress-bin /tmp/ingress-before --ingress-bin target/release/ingress
  cargo run --release -p tests --bin xsolla-bench -- worker --messages 10000
  cargo run --release -p tests --bin xsolla-bench -- pipeline --shares 0.25,0.5,0.75
  cargo run --release -p tests --bin xsolla-bench -- status --only connections,latency,poll,catchup"
)]
struct Cli {
    /// RabbitMQ to use; its vhost is replaced by a fresh one, deleted at the end.
    #[arg(
        long,
        global = true,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,

    /// Concurrent senders (webhooks or publishes in flight).
    #[arg(long, global = true, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,

    /// Measured time of each load phase (each also gets 1 s of unmeasured warm-up).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,

    /// Print JSON instead of a markdown table.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The ingress binary (HTTP → confirmed publish) vs a plain confirmed publisher:
    /// throughput, p50/p99, p99 at half the maximum rate, peak RSS.
    Ingress(ingress::IngressBench),
    /// `bare-relay` and one or more ingress builds in interleaved rounds of the same closed
    /// loop: acked/s and CPU per webhook, each as a ratio to the relay of its round.
    IngressAb(ingress_ab::IngressAb),
    /// The ingress's answer line (`LOG_FORMAT=text`) formatted by tracing-subscriber's
    /// default and by ours, in alternating batches: µs of CPU per line. No broker needed.
    LogLine(log_line::LogLine),
    /// The worker draining the queue into a demo inventory (1 and 2 workers) vs a plain
    /// consume-and-ack loop, and the pipeline end to end through the ingress.
    Worker(worker::WorkerBench),
    /// The whole pipeline (webhook → ingress → queue → workers → grant) at its maximum
    /// rate and open loop at shares of it: grants/s, webhook-to-grant p50/p99, peak RSS
    /// and CPU per grant of each process, next to plain-lapin baselines.
    Pipeline(pipeline::PipelineBench),
    /// The order-status server: RSS per WebSocket, grant → `done` latency, Get-order
    /// answers/s and catch-up time, each beside a trivial server or a plain stream reader.
    Status(status::StatusBench),
    /// The trivial axum server the `status` baselines run against (started by `status`).
    #[command(hide = true)]
    TrivialServer {
        #[arg(long)]
        listen: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let concurrency = cli.concurrency as usize;
    let printed = match &cli.command {
        Command::Ingress(bench) => bench
            .run(&cli.amqp_url, concurrency, cli.duration)
            .await
            .and_then(|r| output(cli.json, &r, table::ingress)),
        Command::IngressAb(bench) => bench
            .run(&cli.amqp_url, concurrency, cli.duration)
            .await
            .and_then(|r| output(cli.json, &r, ingress_ab::markdown)),
        Command::LogLine(bench) => output(cli.json, &bench.run(), log_line::markdown),
        Command::Worker(bench) => bench
            .run(&cli.amqp_url, concurrency, cli.duration)
            .await
            .and_then(|r| output(cli.json, &r, table::worker)),
        Command::Pipeline(bench) => bench
            .run(&cli.amqp_url, concurrency, cli.duration)
            .await
            .and_then(|r| output(cli.json, &r, table::pipeline)),
        Command::Status(bench) => bench
            .run(&cli.amqp_url, concurrency, cli.duration)
            .await
            .and_then(|r| output(cli.json, &r, status::markdown)),
        Command::TrivialServer { listen } => status::trivial_server(listen.clone()).await,
    };
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xsolla-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn output<T: serde::Serialize>(
    json: bool,
    result: &T,
    markdown: fn(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(result)?);
    } else {
        println!("{}", markdown(result));
    }
    Ok(())
}
