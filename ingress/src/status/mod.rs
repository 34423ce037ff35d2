//! `order-status`: serves players their orders' real delivery state, read from the
//! order-event stream, over Xsolla's two order-tracking protocols: the Centrifuge client
//! protocol v2 over WebSocket (`/connection/websocket`) and the Get-order short-poll
//! (`/api/v2/project/{project_id}/order/{order_id}`). Stateless: every instance builds the
//! same statuses from the stream, so run as many as needed.
//!
//! What clients rely on (`docs/centrifuge-protocol.md` says what and why):
//! - one server-side channel per player, `orders:{project_id}:{user_id}`, announced in the
//!   connect reply's `subs`; the user is the verified JWT's `STATUS_JWT_USER_CLAIM`, the
//!   project `connect.data.project_id`. Offsets count from 1 per channel and instance; the
//!   epoch is random per process start (clients reload history from offset 0 on connect);
//! - right after the connect reply, the latest status of each open order (and of each
//!   finished within the tracking window) is pushed, for SDKs that never call history;
//! - close codes ([`ws::close`]): 3001 shutdown, 3008 slow, 3009 message too big, 3012 no
//!   pong, 3013 too many connections (all: reconnect later); 3500 invalid token, 3501 bad
//!   request, 3502 stale, 4500 order tracking finished, 4501 tracking window elapsed
//!   (terminal).

pub mod auth;
pub mod config;
pub mod feed;
pub mod poll;
pub mod protocol;
pub mod session;
pub mod state;
pub mod view;
pub mod ws;

use std::{process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{Router, routing::get};
use clap::Parser as _;
use shared::{amqp, ops, telemetry};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use config::StatusArgs;

/// How long open WebSockets get to receive their 3001 close on shutdown.
const CLOSE_ON_SHUTDOWN: Duration = Duration::from_secs(3);

/// The timing and size limits of the endpoints.
#[derive(Debug, Clone)]
pub struct Limits {
    pub tracking_window: Duration,
    pub ping_interval: Duration,
    pub final_grace: Duration,
    pub connect_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    pub max_frame_bytes: usize,
    /// `WRITE_TIMEOUT`: a WebSocket frame not sent within this ends the connection.
    pub write_timeout: Duration,
}

/// What every handler shares.
pub struct App {
    pub state: Arc<state::State>,
    pub verifier: auth::Verifier,
    pub limits: Limits,
    pub origins: Vec<String>,
    pub shutdown: CancellationToken,
    /// Upgraded sockets, which the HTTP server's graceful shutdown does not wait for.
    pub tracker: TaskTracker,
}

/// Serves on `listener` until `shutdown`: reads the stream, answers WebSockets and polls,
/// then closes every WebSocket with 3001 and the broker connection.
///
/// Served like the ingress ([`crate::serve`]): header-read, request and idle timeouts, and a
/// socket cap, so slow or idle clients cannot hold it.
pub async fn run(
    listener: TcpListener,
    args: StatusArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    args.validate().map_err(anyhow::Error::msg)?;
    let verifier = auth::Verifier::from_args(&args).map_err(anyhow::Error::msg)?;
    telemetry::describe_metrics("order-status");
    let metrics = telemetry::metrics_handle();
    let broker_stop = CancellationToken::new();
    let (link, supervisor) = amqp::supervise(
        args.broker.brokers().map_err(anyhow::Error::msg)?,
        format!("xsolla-bridge order-status {}", std::process::id()),
        args.broker.topology(),
        broker_stop.clone(),
    );
    let state = state::State::new();
    let feed = tokio::spawn(feed::run(
        link.clone(),
        state.clone(),
        args.broker.publish_timeout,
        args.catch_up_split,
        broker_stop.clone(),
    ));
    let forget = tokio::spawn(feed::forget_expired(
        state.clone(),
        args.broker.status_retention,
        broker_stop.clone(),
    ));
    let ready = {
        let (state, shutdown) = (state.clone(), shutdown.clone());
        Arc::new(move || link.is_ready() && state.is_caught_up() && !shutdown.is_cancelled())
    };
    let app = Arc::new(App {
        state,
        verifier,
        limits: Limits {
            tracking_window: args.tracking_window,
            ping_interval: args.ping_interval,
            final_grace: args.final_grace,
            connect_timeout: args.connect_timeout,
            max_connections: args.max_connections,
            max_connections_per_user: args.max_connections_per_user,
            max_frame_bytes: args.max_frame_bytes,
            write_timeout: args.http.write_timeout,
        },
        origins: args.origins(),
        shutdown: shutdown.clone(),
        tracker: TaskTracker::new(),
    });
    tracing::info!(listen = %listener.local_addr()?, epoch = %app.state.epoch, "order-status listening");
    let router = Router::new()
        .route("/connection/websocket", get(ws::upgrade))
        .route(
            "/api/v2/project/{project_id}/order/{order_id}",
            get(poll::get_order),
        )
        .with_state(app.clone())
        .merge(ops::router(ready, metrics));
    // Upgraded WebSockets are not the server's to drain: their tasks close them with 3001
    // on `shutdown` (tracked below); `serve` returns once the plain HTTP connections end.
    crate::serve::serve(listener, router, &args.limits(), shutdown.clone())
        .await
        .context("HTTP server failed")?;
    app.tracker.close();
    if tokio::time::timeout(CLOSE_ON_SHUTDOWN, app.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some WebSockets did not close in time");
    }
    broker_stop.cancel();
    let _ = feed.await;
    let _ = forget.await;
    let _ = supervisor.await;
    tracing::info!("order-status stopped");
    Ok(())
}

/// The binary: parse options, set up telemetry, bind, serve until SIGTERM or ctrl-c.
pub async fn run_main() -> ExitCode {
    let args = match StatusArgs::try_parse() {
        Ok(args) => args,
        Err(e) => return shared::config::refuse_options("order-status", e),
    };
    telemetry::init_logging(args.broker.log_format);
    // The key file is read here too, so a bad one stops start-up like a missing option.
    let checked = args
        .validate()
        .and_then(|()| auth::Verifier::from_args(&args).map(drop));
    if let Err(e) = checked {
        eprintln!("order-status: bad configuration: {e}");
        return ExitCode::from(2);
    }
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "order-status: STATUS_LISTEN (--listen) {}: cannot bind: {e}",
                args.listen
            );
            return ExitCode::from(2);
        }
    };
    match run(listener, args, telemetry::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("order-status: {e:#}");
            ExitCode::FAILURE
        }
    }
}
