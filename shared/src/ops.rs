//! `/healthz`, `/readyz` and `/metrics`, the same on the ingress and the worker.

use std::{sync::Arc, time::Duration};

use axum::{Router, http::StatusCode, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::serve::{HttpTimeouts, ServerLimits};

/// Connections an ops server keeps open at once: scrapers and probes, never so many that
/// they take the descriptors the binary's real work needs.
pub const MAX_CONNECTIONS: u32 = 64;

/// Serves an ops router (`/metrics`, the probes) on its own listener until `stop`, with the
/// hardened server (`crate::serve`): a stalled scraper or probe is timed out, and at most
/// [`MAX_CONNECTIONS`] are open. Wait for it with [`join_stopped`].
pub fn spawn_server(
    listener: TcpListener,
    router: Router,
    timeouts: HttpTimeouts,
    stop: CancellationToken,
) -> JoinHandle<std::io::Result<()>> {
    let limits = ServerLimits {
        timeouts,
        max_connections: MAX_CONNECTIONS,
    };
    tokio::spawn(async move { crate::serve::serve(listener, router, &limits, stop).await })
}

/// How long a stopped ops server may wait for its open connections. A scrape or a probe
/// takes milliseconds; a connection still open after this is not one (a half-sent
/// request, a client that never reads), and it held the process past SIGTERM for ever.
pub const OPS_DRAIN: Duration = Duration::from_secs(1);

/// Waits for an ops server that was told to stop (`what` names it in the log), at most
/// [`OPS_DRAIN`]; then it is aborted, closing what it still had open. An error of the
/// server or its task (a panic) is returned.
pub async fn join_stopped(
    mut server: JoinHandle<std::io::Result<()>>,
    what: &str,
) -> std::io::Result<()> {
    match tokio::time::timeout(OPS_DRAIN, &mut server).await {
        Ok(joined) => joined.map_err(|e| std::io::Error::other(format!("{what} task: {e}")))?,
        Err(_) => {
            server.abort();
            tracing::warn!(
                drain_ms = OPS_DRAIN.as_millis() as u64,
                "{what} still had connections open after shutdown; closed them"
            );
            Ok(())
        }
    }
}

/// Routes for liveness (process answers), readiness (`ready()` is true) and Prometheus.
pub fn router<S: Clone + Send + Sync + 'static>(
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
    metrics: PrometheusHandle,
) -> Router<S> {
    health_router(ready).merge(metrics_router(metrics))
}

/// `/healthz` and `/readyz` only.
pub fn health_router<S: Clone + Send + Sync + 'static>(
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
) -> Router<S> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: broker not connected\n",
                        )
                    }
                }
            }),
        )
}

/// `/metrics` only (Prometheus text).
pub fn metrics_router<S: Clone + Send + Sync + 'static>(metrics: PrometheusHandle) -> Router<S> {
    Router::new().route(
        "/metrics",
        get(move || std::future::ready(metrics.render())),
    )
}
