//! `rabbit-cluster`: a RabbitMQ cluster of private nodes on this machine, for a benchmark or
//! a manual run against a cluster (the test suites use [`tests::rabbit::Cluster`] directly).
//!
//! Boots `--nodes` (default 3) private nodes on free ports, joins them, prints
//! `AMQP_URL=<every node's URL, comma-separated>` on stdout (then one line per node on
//! stderr), and stays up until SIGTERM or ctrl-c, when it kills the nodes and deletes their
//! data. Needs root, like every private node. Nodes of a `rabbit-cluster` killed with
//! SIGKILL are reaped by the next private node a test or this tool boots.
//!
//! ```sh
//! url=$(target/debug/rabbit-cluster | head -1)   # AMQP_URL=amqp://…,amqp://…,amqp://…
//! ```

use std::io::Write as _;

use clap::Parser;
use tests::rabbit::Cluster;

#[derive(Parser)]
#[command(about = "A RabbitMQ cluster of private nodes, up until SIGTERM or ctrl-c")]
struct Args {
    /// How many nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
    nodes: u8,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cluster = Cluster::start(usize::from(args.nodes)).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "AMQP_URL={}", cluster.amqp_url())?;
    out.flush()?;
    drop(out);
    for node in cluster.nodes() {
        eprintln!(
            "{}: amqp 127.0.0.1:{}, log {}",
            node.node(),
            node.port(),
            node.dir().join("log").display()
        );
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("rabbit-cluster: stopping");
    drop(cluster);
    Ok(())
}
