//! Logs, metrics and the shutdown signal, set up the same way by every binary.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (terminals).
    Text,
    /// One JSON object per line (log shippers, `jq`).
    Json,
}

/// The filter when `RUST_LOG` is unset. lapin logs every failed connection attempt at
/// ERROR from three places (`lapin::channel`, `lapin::channels`, `lapin::io_loop`), and
/// every error it logs is also returned to us, and logged once by our own code with the
/// broker's redacted URL (`shared::amqp`: "cannot connect to RabbitMQ", "lost the RabbitMQ
/// connection"). So lapin is silenced by default; `RUST_LOG=info,lapin=debug` brings it back.
pub const DEFAULT_LOG_FILTER: &str = "info,lapin=off";

/// Applied whatever `RUST_LOG` says: amq-protocol-tcp logs the parsed broker URL with
/// `Debug` at TRACE ("Connecting."), password in clear.
const NEVER_TRACE: &str = "amq_protocol_tcp=debug";

/// Installs the global tracing subscriber; `RUST_LOG` filters (default [`DEFAULT_LOG_FILTER`]).
/// Safe to call more than once (later calls do nothing), which tests rely on.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER))
        .add_directive(NEVER_TRACE.parse().expect("static directive"));
    // Colour codes only for a terminal: formatting them for a log file costs CPU per line.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Seconds buckets for latency histograms: 0.5 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process-wide Prometheus recorder. Installed once: tests run several services in one
/// process, and they share it (each test reads counters it alone drives, or checks presence).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("static bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; ours is then simply unused.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// A token cancelled on SIGTERM or ctrl-c.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!("ctrl-c received; shutting down"),
            _ = term => tracing::info!("SIGTERM received; shutting down"),
        }
        cancel.cancel();
    });
    token
}
