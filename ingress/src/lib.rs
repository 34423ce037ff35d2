//! The ingress: the HTTP service Xsolla's webhook URL points at. It verifies each webhook,
//! answers the live checks (`user_validation`, `user_search`), and makes every other one
//! durable in RabbitMQ before answering 204.

pub mod allowlist;
pub mod config;
pub mod error;
pub mod log_limit;
pub mod publisher;
mod read_timeouts;
pub mod redact;
pub mod routes;
pub mod secrets;
pub mod serve;
pub mod status;
pub mod user_check;
pub mod verify;

use std::{process::ExitCode, sync::Arc};

use anyhow::Context as _;
use clap::Parser as _;
use shared::{amqp, ops, telemetry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{IngressArgs, IngressConfig};

/// Serves on `listener` until `shutdown`, then finishes in-flight requests (within
/// `SHUTDOWN_TIMEOUT`) and closes the broker connection.
pub async fn run(
    listener: TcpListener,
    args: IngressArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let config = args.check().map_err(anyhow::Error::msg)?;
    run_checked(listener, config, shutdown).await
}

/// [`run`] with the configuration already checked.
pub async fn run_checked(
    listener: TcpListener,
    config: IngressConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let IngressConfig { args, secrets } = config;
    let user_check = args.user_check_url.clone().map(|template| {
        user_check::UserCheck::new(
            template,
            args.user_check_token.clone(),
            args.user_check_timeout,
        )
    });
    if user_check.is_none() {
        tracing::warn!(
            "USER_CHECK_URL is not set: every user_validation is answered 204 (user exists)"
        );
    }
    telemetry::describe_metrics("ingress");
    let metrics = telemetry::metrics_handle();
    let broker_stop = CancellationToken::new();
    let (link, supervisor) = amqp::supervise(
        args.broker.brokers().map_err(anyhow::Error::msg)?,
        format!("xsolla-bridge ingress {}", std::process::id()),
        args.broker.topology(),
        broker_stop.clone(),
    );
    let publisher = publisher::Publisher::new(
        link,
        args.max_in_flight as usize,
        args.broker.publish_timeout,
    );
    let ready = {
        let publisher = publisher.clone();
        let shutdown = shutdown.clone();
        Arc::new(move || publisher.is_ready() && !shutdown.is_cancelled())
    };
    let verifier = verify::Verifier::new(
        secrets,
        args.ip_allowlist.clone(),
        args.trusted_proxies.0.clone(),
        args.max_body_bytes as usize,
    );
    tracing::info!(
        listen = %listener.local_addr()?,
        projects = ?verifier.secrets.project_ids(),
        allowlist = ?args.ip_allowlist,
        "ingress listening"
    );
    let app = Arc::new(routes::App {
        verifier,
        user_check,
        user_search: args.user_search,
        publisher,
        retry_after: args.retry_after_secs,
        default_project: args.project_id,
    });
    let router = routes::router(app).merge(ops::router(ready, metrics));
    let server = serve::serve(listener, router, &args.limits, shutdown.clone());
    let drain_deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(args.shutdown_timeout).await;
    };
    tokio::select! {
        served = server => served.context("HTTP server failed")?,
        () = drain_deadline => tracing::warn!("in-flight requests did not finish within SHUTDOWN_TIMEOUT"),
    }
    broker_stop.cancel();
    let _ = supervisor.await;
    tracing::info!("ingress stopped");
    Ok(())
}

/// The binary: parse options, set up telemetry, bind, serve until SIGTERM or ctrl-c.
pub async fn run_main() -> ExitCode {
    let args = match IngressArgs::try_parse() {
        Ok(args) => args,
        Err(e) => return shared::config::refuse_options("ingress", e),
    };
    telemetry::init_logging(args.broker.log_format);
    let listen = args.listen;
    let config = match args.check() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ingress: bad configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ingress: INGRESS_LISTEN (--listen) {listen}: cannot bind: {e}");
            return ExitCode::from(2);
        }
    };
    match run_checked(listener, config, telemetry::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingress: {e:#}");
            ExitCode::FAILURE
        }
    }
}
