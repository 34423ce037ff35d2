//! The worker: consumes `xsolla.fulfillment`, grants or revokes items through the game's
//! inventory API, retries through the delay tiers and parks what cannot succeed in the DLQ;
//! plus the `worker dlq` and `worker order` operator commands.

pub mod backlog;
pub mod classify;
pub mod config;
pub mod consume;
pub mod dlq;
pub mod inventory;
mod ops_connection;
pub mod order;
pub mod process;
pub mod retry;
pub mod settle;

use std::{
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use classify::Failure;
pub use config::WorkerArgs;
pub use process::{Context, DeadReason, Message, Outcome, process};

use crate::{consume::ConsumeOptions, inventory::InventoryClient, retry::RetryPolicy};

/// Runs the worker until `shutdown`: keeps a broker session, consumes and fulfils, and
/// serves `/healthz`, `/readyz` and `/metrics` on `ops_listener`. Returns once in-flight
/// deliveries are settled (or `SHUTDOWN_TIMEOUT` passed) and the connection is closed.
pub async fn run(
    ops_listener: TcpListener,
    args: WorkerArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    shared::telemetry::describe_metrics("worker");
    let inventory_url = args.require_inventory_url().map_err(anyhow::Error::msg)?;
    let inventory = InventoryClient::new(
        inventory_url,
        args.inventory_token.as_ref(),
        args.inventory_timeout,
    )
    .context("building the inventory HTTP client")?;
    let topology = args.broker.topology();
    let ctx = Arc::new(Context {
        inventory,
        policy: RetryPolicy {
            tiers: topology.retry_delays.clone(),
            budget: args.retry_budget,
            quick_retries: args.quick_retries,
        },
        mode: topology.mode,
        stopping: shutdown.clone(),
    });

    // The session outlives `shutdown`: draining deliveries still publish and ack on it.
    let session_stop = CancellationToken::new();
    let name = format!("worker-{}", std::process::id());
    let (link, supervisor) = shared::amqp::supervise(
        args.broker.brokers().map_err(anyhow::Error::msg)?,
        name,
        topology.clone(),
        session_stop.clone(),
    );
    // Queue depths as metrics (amqp_queue_messages/consumers); ends with the session.
    backlog::spawn(
        link.clone(),
        &topology,
        backlog::INTERVAL,
        session_stop.clone(),
    );

    let consuming = Arc::new(AtomicBool::new(false));
    let ready = {
        let (link, consuming) = (link.clone(), consuming.clone());
        Arc::new(move || link.is_ready() && consuming.load(Ordering::SeqCst))
    };
    let ops_stop = CancellationToken::new();
    let router = shared::ops::router::<()>(ready, shared::telemetry::metrics_handle());
    let ops = shared::ops::spawn_server(
        ops_listener,
        router,
        shared::serve::HttpTimeouts::default(),
        ops_stop.clone(),
    );
    tracing::info!(
        inventory = %redacted(inventory_url),
        concurrency = args.concurrency,
        retry_delays = ?ctx.policy.tiers,
        retry_budget = ?args.retry_budget,
        payments = ctx.mode.payments,
        "worker starting"
    );

    let options = ConsumeOptions {
        concurrency: args.concurrency,
        publish_timeout: args.broker.publish_timeout,
        topology,
        shutdown_timeout: args.shutdown_timeout,
    };
    consume::consume(link, ctx, options, consuming, shutdown).await;

    session_stop.cancel();
    let _ = supervisor.await;
    ops_stop.cancel();
    shared::ops::join_stopped(ops, "the ops server")
        .await
        .context("ops server")?;
    tracing::info!("worker stopped");
    Ok(())
}

/// The URL without its password, if it has one, for logs.
fn redacted(url: &reqwest::Url) -> reqwest::Url {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    url
}

/// The `worker` binary: logs, options check, `WORKER_LISTEN`, SIGTERM/ctrl-c, [`run`].
/// A bad option is one line naming it and exit code 2.
pub async fn run_main(args: WorkerArgs) -> ExitCode {
    shared::telemetry::init_logging(args.broker.log_format);
    if let Err(problem) = args.broker.validate() {
        eprintln!("worker: bad configuration: {problem}");
        return ExitCode::from(2);
    }
    if let Err(problem) = args.require_inventory_url() {
        eprintln!("worker: {problem}");
        return ExitCode::from(2);
    }
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "worker: cannot listen on WORKER_LISTEN={} ({e})",
                args.listen
            );
            return ExitCode::from(2);
        }
    };
    match run(listener, args, shared::telemetry::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "worker failed");
            ExitCode::FAILURE
        }
    }
}
