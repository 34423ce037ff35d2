//! Logs, metrics and the shutdown signal, set up the same way by every binary.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

mod c1_escaped;
mod text_fields;

pub use text_fields::TextFields;

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

/// Applied whatever `RUST_LOG` says: lapin logs every returned (unroutable) message at WARN
/// with its properties and whole body, i.e. a webhook with the player's e-mail address.
/// Our publisher reports the return itself, without the body.
const NEVER_RETURNED_BODIES: &str = "lapin::returned_messages=off";

/// Installs the global tracing subscriber; `RUST_LOG` filters (default [`DEFAULT_LOG_FILTER`]).
/// Safe to call more than once (later calls do nothing), which tests rely on.
///
/// `json`: one object per line, with the event's fields *and* the fields of every span it
/// happens in flattened onto the top level (`message_id`, `order_id`, … of a worker's
/// delivery), each key once. tracing-subscriber's own JSON repeats every span field twice
/// (in `span` and in `spans`) and never at the top level, where log shippers index.
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _};
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER))
        .add_directive(NEVER_TRACE.parse().expect("static directive"))
        .add_directive(NEVER_RETURNED_BODIES.parse().expect("static directive"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(text_fields::TextFields)
                    .with_writer(std::io::stderr)
                    .with_ansi(use_colour(
                        std::io::IsTerminal::is_terminal(&std::io::stderr()),
                        std::env::var_os("NO_COLOR").as_deref(),
                    )),
            )
            .try_init(),
        LogFormat::Json => registry.with(json_layer(std::io::stderr)).try_init(),
    };
}

/// Colour codes only for a terminal (a log file gets none: they are noise to every reader
/// but a terminal, and cost CPU per line), and not when `NO_COLOR` is set to anything
/// (<https://no-color.org>).
fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The `LOG_FORMAT=json` layer: `timestamp`, `level`, `target`, the event's fields
/// (`message`, …) and its spans' fields (`name` = the innermost span's name; a field set
/// by two spans is written once, the innermost's value). An event must not repeat a field
/// of a span it is logged in (json-subscriber would write the key twice):
/// `tests/tests/observability.rs` checks real lines for that. C1 controls are written
/// escaped ([`c1_escaped`]).
fn json_layer<S, W>(writer: W) -> json_subscriber::JsonLayer<S, c1_escaped::C1Escaped<W>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    let mut layer = json_subscriber::JsonLayer::new(c1_escaped::C1Escaped(writer));
    layer
        .with_timer("timestamp", tracing_subscriber::fmt::time::SystemTime)
        .with_level("level")
        .with_target("target")
        .with_flattened_event()
        .with_top_level_flattened_span_list();
    layer
}

/// [`init_tracing`], and panics logged through it (see [`log_panics`]): what the binaries
/// call first.
pub fn init_logging(format: LogFormat) {
    init_tracing(format);
    log_panics();
}

/// Replaces the default panic message (plain text on stderr, which a JSON log shipper
/// cannot read, with none of the context) by one ERROR line through tracing: it is written
/// inside the spans current where the panic happened, so a worker's panic carries that
/// delivery's ids. `RUST_BACKTRACE` is honoured as by the default hook.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let panic = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(not a string)");
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(target: "panic", panic, location, backtrace = %backtrace, "panicked");
        } else {
            tracing::error!(target: "panic", panic, location, "panicked");
        }
    }));
}

/// `d` rounded to whole milliseconds, for log fields: a jittered delay printed with `Debug`
/// showed nanoseconds (`retry_in=1.234567891s`), noise to a reader; `1.235s` says the same.
pub fn to_millis(d: std::time::Duration) -> std::time::Duration {
    let ms = d.as_nanos().saturating_add(500_000) / 1_000_000;
    std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
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

/// Registers every series of `binary` (`"ingress"`, `"worker"` or `"order-status"`) at
/// start-up: `# HELP` text for each, `build_info{version}` = 1, and zero for the series
/// whose labels are known in advance, so a dashboard shows 0 rather than "no data" and an
/// alert on `rate()` has a series to start from. Call it before the broker session starts
/// (it never lowers a value, so a second call from another service in the same process, as
/// in tests, changes nothing). Unknown names get the common series only.
pub fn describe_metrics(binary: &str) {
    // Installs the recorder first: descriptions sent to no recorder are lost.
    let _ = metrics_handle();
    describe_common();
    match binary {
        "ingress" => describe_ingress(),
        "worker" => describe_worker(),
        "order-status" => describe_order_status(),
        _ => {}
    }
}

fn describe_common() {
    use metrics::{Unit, describe_gauge, gauge};
    describe_gauge!(
        "build_info",
        "Always 1; the `version` label is the running release."
    );
    gauge!("build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    describe_gauge!(
        "amqp_connected",
        Unit::Count,
        "1 while this process has a healthy RabbitMQ session with the topology declared, else 0."
    );
    gauge!("amqp_connected").increment(0.0);
}

fn describe_ingress() {
    describe_http_server();
    use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
    describe_counter!(
        "ingress_requests_total",
        "Webhooks answered, by notification type (`unverified` before the signature was checked, `other` for \
         undocumented types) and outcome (accepted, invalid_signature, invalid_parameter, \
         too_large, forbidden_ip, invalid_user, unavailable = 503 to Xsolla)."
    );
    // Refusals that happen before the type is known: the ones the alerts watch.
    for outcome in [
        "invalid_signature",
        "invalid_parameter",
        "too_large",
        "forbidden_ip",
    ] {
        counter!("ingress_requests_total", "type" => "unverified", "outcome" => outcome)
            .increment(0);
    }
    describe_histogram!(
        "ingress_publish_confirm_seconds",
        Unit::Seconds,
        "Time from publishing a webhook to RabbitMQ's confirm, by result (ack, nack, returned, \
         timeout, not_connected, amqp_error)."
    );
    describe_gauge!(
        "ingress_publishes_in_flight",
        Unit::Count,
        "Publishes awaiting a broker confirm; at MAX_IN_FLIGHT new webhooks get 503 at once."
    );
    gauge!("ingress_publishes_in_flight").increment(0.0);
    describe_histogram!(
        "ingress_request_duration_seconds",
        Unit::Seconds,
        "Time from receiving a webhook's head to its answer, by outcome (as in \
         ingress_requests_total): what Xsolla waits for."
    );
    describe_counter!(
        "ingress_signature_matches_total",
        "Verified webhooks by the position (`slot`, 0 = first) of the secret that matched: \
         after a rotation, slot 1 (the old secret) should fall to zero."
    );
}

fn describe_worker() {
    use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
    describe_http_server();
    describe_counter!(
        "worker_order_event_failures_total",
        "Order events the broker did not confirm, by error (as ingress_publish_confirm_seconds' \
         result); the delivery behind each was requeued, not acked."
    );
    for error in [
        "not_connected",
        "nack",
        "returned",
        "timeout",
        "not_confirm_mode",
        "amqp_error",
    ] {
        counter!("worker_order_event_failures_total", "error" => error).increment(0);
    }
    describe_counter!(
        "worker_deliveries_total",
        "Deliveries settled, by notification type and outcome (done, retry, dead, requeued)."
    );
    describe_histogram!(
        "worker_inventory_call_seconds",
        Unit::Seconds,
        "Calls to the game's inventory API, by endpoint and HTTP status (or timeout, \
         connection_error)."
    );
    describe_counter!(
        "worker_retries_total",
        "Retries scheduled, by tier: in_process (quick retries) or the delay-tier queue's delay."
    );
    counter!("worker_retries_total", "tier" => "in_process").increment(0);
    describe_counter!(
        "worker_dead_lettered_total",
        "Messages the worker parked in xsolla.fulfillment.dlq, by reason."
    );
    for reason in [
        "permanent",
        "retry_budget_exhausted",
        "unparsable",
        "not_fulfilled",
    ] {
        counter!("worker_dead_lettered_total", "reason" => reason).increment(0);
    }
    describe_gauge!(
        "worker_in_flight",
        Unit::Count,
        "Deliveries being processed right now (at most WORKER_CONCURRENCY)."
    );
    gauge!("worker_in_flight").increment(0.0);
    describe_gauge!(
        "amqp_queue_messages",
        Unit::Count,
        "Messages in each bridge queue (ready, as the broker reports them to a passive \
         declare), refreshed every 15 s by each worker."
    );
    describe_gauge!(
        "amqp_queue_consumers",
        Unit::Count,
        "Consumers of each bridge queue, refreshed every 15 s by each worker."
    );
    // Recorded by `worker::inventory` (which describes it too, for embedders).
    describe_counter!(
        "worker_inventory_auth_failures_total",
        "Inventory calls answered 401 or 403: INVENTORY_TOKEN is wrong or expired."
    );
    counter!("worker_inventory_auth_failures_total").increment(0);
}

fn describe_order_status() {
    use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
    describe_http_server();
    describe_gauge!(
        "status_connections",
        Unit::Count,
        "Open player WebSocket connections."
    );
    gauge!("status_connections").increment(0.0);
    describe_counter!(
        "status_publications_sent_total",
        "Order-status publications (status changes) pushed to players."
    );
    counter!("status_publications_sent_total").increment(0);
    describe_counter!(
        "status_events_applied_total",
        "Order-stream messages read into the in-memory view, by outcome (published = a \
         status changed, unchanged, no_project, skipped)."
    );
    for outcome in ["published", "unchanged", "no_project", "skipped"] {
        counter!("status_events_applied_total", "outcome" => outcome).increment(0);
    }
    describe_gauge!(
        "status_stream_offset",
        "Offset of the last order-stream message read."
    );
    gauge!("status_stream_offset").increment(0.0);
    describe_gauge!(
        "status_caught_up",
        "1 once the boot-time catch-up marker was read (then /readyz may say ready)."
    );
    gauge!("status_caught_up").increment(0.0);
    describe_gauge!(
        "status_catch_up_lag_seconds",
        Unit::Seconds,
        "Age of the last order event read (large while catching up, 0 once caught up)."
    );
    gauge!("status_catch_up_lag_seconds").increment(0.0);
    describe_counter!(
        "status_catch_up_read_ahead_total",
        "Events the start-up catch-up's second reader held until the first half was applied (0: read with one reader)."
    );
    counter!("status_catch_up_read_ahead_total").increment(0);
}

/// The series of `shared::serve`, the HTTP server of the ingress, of order-status and of the
/// worker's ops port.
fn describe_http_server() {
    use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
    describe_gauge!(
        "http_connections_open",
        Unit::Count,
        "Open client connections (WebSockets included), at most the server's cap."
    );
    gauge!("http_connections_open").increment(0.0);
    describe_counter!(
        "http_connections_timed_out_total",
        "Connections closed by a timer, by phase (header = HEADER_READ_TIMEOUT, idle = \
         IDLE_TIMEOUT, request = REQUEST_TIMEOUT, answered 408, write = WRITE_TIMEOUT)."
    );
    for phase in ["header", "idle", "request", "write"] {
        counter!("http_connections_timed_out_total", "phase" => phase).increment(0);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[test]
    fn delays_are_logged_in_whole_milliseconds() {
        let jittered = std::time::Duration::from_nanos(1_234_567_891);
        assert_eq!(format!("{:?}", to_millis(jittered)), "1.235s");
        assert_eq!(
            format!("{:?}", to_millis(std::time::Duration::from_micros(999))),
            "1ms"
        );
    }

    /// Runs `f` with the `LOG_FORMAT=json` layer as this thread's subscriber; its lines.
    fn json_lines(f: impl FnOnce()) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::registry().with(json_layer(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    /// The top-level keys of a JSON object line, in order, repeats included (a
    /// `serde_json::Value` would keep only the last of a repeated key).
    fn keys(line: &str) -> Vec<String> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut keys = Vec::new();
                while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(k);
                }
                Ok(keys)
            }
        }
        let mut de = serde_json::Deserializer::from_str(line);
        serde::Deserializer::deserialize_map(&mut de, Keys).unwrap()
    }

    #[test]
    fn json_lines_carry_every_span_field_once_at_the_top_level() {
        let lines = json_lines(|| {
            let outer =
                tracing::info_span!("delivery", message_id = "order_paid:1", order_id = "1");
            let _outer = outer.enter();
            let inner = tracing::info_span!("fulfil", order_id = "1", idempotency_key = "k");
            let _inner = inner.enter();
            tracing::warn!(status = 503, "inventory call failed");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let keys = keys(&lines[0]);
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "a key twice: {}", lines[0]);
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["message_id"], "order_paid:1");
        assert_eq!(v["order_id"], "1");
        assert_eq!(v["idempotency_key"], "k");
        assert_eq!(v["status"], 503);
        assert_eq!(v["message"], "inventory call failed");
        assert_eq!(v["level"], "WARN");
        assert!(v["timestamp"].is_string() && v["target"].is_string(), "{v}");
        assert!(v.get("span").is_none() && v.get("spans").is_none(), "{v}");
    }

    #[test]
    fn a_panic_is_one_log_line_inside_its_span() {
        let previous = std::panic::take_hook();
        log_panics();
        let lines = json_lines(|| {
            let span = tracing::info_span!("delivery", message_id = "order_paid:7");
            let _entered = span.enter();
            let _ = std::panic::catch_unwind(|| panic!("boom {}", 7));
        });
        std::panic::set_hook(previous);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["panic"], "boom 7");
        assert_eq!(v["message_id"], "order_paid:7");
        assert_eq!(v["level"], "ERROR");
        assert!(
            v["location"].as_str().unwrap().contains("telemetry.rs"),
            "{v}"
        );
    }

    #[test]
    fn colours_only_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None), "a file gets no escape codes");
    }

    #[test]
    fn describes_every_series_and_reports_the_build() {
        describe_metrics("ingress");
        describe_metrics("worker");
        let text = metrics_handle().render();
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.contains(&format!("build_info{{version=\"{version}\"}} 1")),
            "{text}"
        );
        for name in [
            "build_info",
            "amqp_connected",
            "ingress_requests_total",
            "ingress_publishes_in_flight",
            "worker_dead_lettered_total",
            "worker_in_flight",
        ] {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name}:\n{text}"
            );
        }
        assert!(text.contains("amqp_connected 0"), "{text}");
        assert!(
            text.contains(r#"worker_dead_lettered_total{reason="permanent"} 0"#),
            "{text}"
        );
        // Every series that has a sample has its HELP line.
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(
                text.contains(&format!("# HELP {base} "))
                    || text.contains(&format!("# HELP {name} ")),
                "{name} has no HELP:\n{text}"
            );
        }
    }
}
