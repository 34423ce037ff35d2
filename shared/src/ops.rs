//! `/healthz`, `/readyz` and `/metrics`, the same on the ingress and the worker.

use std::sync::Arc;

use axum::{Router, http::StatusCode, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;

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
