//! The ingress: the HTTP service Xsolla's webhook URL points at. It verifies each webhook,
//! answers the live checks (`user_validation`, `user_search`), and makes every other one
//! durable in RabbitMQ before answering 204.

pub mod allowlist;
pub mod config;
pub mod error;
pub mod log_limit;
pub mod publisher;
pub mod redact;
pub mod routes;
pub mod secrets;
pub mod serve;
pub mod user_check;
pub mod verify;

use std::{process::ExitCode, sync::Arc};

use anyhow::Context as _;
use clap::{Parser as _, error::ErrorKind};
use shared::{amqp, ops, telemetry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::IngressArgs;

/// Serves on `listener` until `shutdown`, then finishes in-flight requests (within
/// `SHUTDOWN_TIMEOUT`) and closes the broker connection.
pub async fn run(
    listener: TcpListener,
    args: IngressArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    args.validate().map_err(anyhow::Error::msg)?;
    let secrets = secrets::Secrets::load(&args.webhook_secret, args.projects_file.as_deref())
        .map_err(anyhow::Error::msg)?;
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
    let metrics = telemetry::metrics_handle();
    let broker_stop = CancellationToken::new();
    let (link, supervisor) = amqp::supervise(
        args.broker.amqp_url.clone(),
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
    let app = Arc::new(routes::App {
        secrets,
        allowlist: args.ip_allowlist.clone(),
        trusted_proxies: args.trusted_proxies.0.clone(),
        max_body_bytes: args.max_body_bytes as usize,
        user_check,
        user_search: args.user_search,
        publisher,
        retry_after: args.retry_after_secs,
        default_project: args.project_id,
        unconfigured_route_log: log_limit::LogLimit::new(std::time::Duration::from_secs(60)),
    });
    tracing::info!(
        listen = %listener.local_addr()?,
        projects = ?app.secrets.project_ids(),
        allowlist = ?args.ip_allowlist,
        "ingress listening"
    );
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
        Err(e) => return refuse_options(e),
    };
    telemetry::init_tracing(args.broker.log_format);
    if let Err(e) = args.validate() {
        eprintln!("ingress: bad configuration: {e}");
        return ExitCode::from(2);
    }
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "ingress: INGRESS_LISTEN (--listen) {}: cannot bind: {e}",
                args.listen
            );
            return ExitCode::from(2);
        }
    };
    match run(listener, args, telemetry::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingress: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--help` and `--version` as clap prints them; any other clap error as the one line the
/// README promises (clap's own takes three: the error, the usage, a tip), exit 2.
fn refuse_options(e: clap::Error) -> ExitCode {
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("invalid options");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("ingress: bad configuration: {first}");
    ExitCode::from(2)
}
