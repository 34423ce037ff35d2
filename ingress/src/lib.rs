//! The ingress: the HTTP service Xsolla's webhook URL points at. It verifies each webhook,
//! answers the live checks (`user_validation`, `user_search`), and makes every other one
//! durable in RabbitMQ before answering 204.

pub mod allowlist;
pub mod config;
pub mod error;
pub mod log_limit;
pub mod meters;
pub mod publisher;
pub mod redact;
pub mod routes;
pub mod secrets;
pub mod status;
pub mod user_check;
pub mod verify;

use std::{process::ExitCode, sync::Arc};

use anyhow::Context as _;
use clap::Parser as _;
pub use shared::serve;
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

/// [`run`] with the configuration already checked; binds `METRICS_LISTEN` if it is set.
pub async fn run_checked(
    listener: TcpListener,
    config: IngressConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics_listener = match config.args.metrics_listen {
        Some(addr) => Some(bind_metrics(addr).await.map_err(anyhow::Error::msg)?),
        None => None,
    };
    run_listening(listener, metrics_listener, config, shutdown).await
}

/// Binds `METRICS_LISTEN`; the error is one line naming the option.
async fn bind_metrics(addr: std::net::SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("METRICS_LISTEN (--metrics-listen) {addr}: cannot bind: {e}"))
}

/// [`run_checked`] on listeners already bound: webhooks (and `/healthz`, `/readyz`) on
/// `listener`; `/metrics` on `metrics_listener` when there is one (then only there, with
/// `/healthz` and `/readyz` beside it), else on `listener` too.
pub async fn run_listening(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
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
        meters: Default::default(),
    });
    let metrics_stop = CancellationToken::new();
    let (router, metrics_server) = match metrics_listener {
        Some(metrics_listener) => {
            tracing::info!(listen = %metrics_listener.local_addr()?, "serving /metrics (METRICS_LISTEN)");
            let ops = ops::router::<()>(ready.clone(), metrics);
            // The same timers as the public port.
            let task = ops::spawn_server(
                metrics_listener,
                ops,
                args.limits.timeouts,
                metrics_stop.clone(),
            );
            (
                routes::router(app).merge(ops::health_router(ready)),
                Some(task),
            )
        }
        None => (routes::router(app).merge(ops::router(ready, metrics)), None),
    };
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
    metrics_stop.cancel();
    if let Some(task) = metrics_server
        && let Err(e) = ops::join_stopped(task, "the METRICS_LISTEN server").await
    {
        tracing::warn!(error = %e, "the METRICS_LISTEN server failed");
    }
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
    let metrics_listener = match config.args.metrics_listen {
        Some(addr) => match bind_metrics(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("ingress: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let shutdown = telemetry::shutdown_signal();
    match run_listening(listener, metrics_listener, config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingress: {e:#}");
            ExitCode::FAILURE
        }
    }
}
