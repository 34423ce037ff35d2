//! `worker` (consume and fulfil), `worker dlq …` (inspect and replay dead letters) and
//! `worker order …` (an order's timeline).

use std::process::ExitCode;

use clap::Parser;

// mimalloc: glibc's malloc/free were ~14 % of the worker's CPU (a `Value` tree, an HTTP
// request and its JSON per delivery). Interleaved A/B drains (BENCHMARKS.md): one worker
// at 0.75 of the raw consume-and-ack rate against 0.61-0.63 with glibc, for ~11 MiB more RSS.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "worker",
    version,
    about = "Grants and revokes Xsolla orders through the game's inventory API",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: worker::config::WorkerArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Inspect, replay and purge dead-lettered events.
    Dlq(worker::dlq::DlqArgs),
    /// Show orders' timelines from the order-event stream, and where each stands now.
    Order(worker::order::OrderArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return shared::config::refuse_options("worker", e),
    };
    match cli.command {
        Some(Command::Dlq(args)) => worker::dlq::main(args).await,
        Some(Command::Order(args)) => worker::order::main(args).await,
        None => worker::run_main(cli.run).await,
    }
}
