//! RabbitMQ isolation helpers for tests.
//!
//! * [`TestVhost`]: a fresh vhost on the shared node per test, so parallel tests share the
//!   broker but never a queue. Deleted on drop.
//! * [`PrivateBroker`]: a whole RabbitMQ node of the test's own (own ports, own data dir),
//!   for tests that stop or restart the broker without pulling the floor from under the
//!   tests running beside them. Shut down and removed on drop, even when the test panics.
//! * [`Cluster`]: three (or more) private nodes joined into one RabbitMQ cluster, with ways
//!   to kill, restart and replace a node and to see where each queue's members and leader are.
//! * [`TcpProxy`]: a TCP relay in front of a broker; `cut()` makes the broker "go away" for
//!   whoever connects through it, in milliseconds and without touching the broker.
//!
//! Everything here shells out to Debian's `rabbitmqctl`/`rabbitmq-server`. As root, those
//! scripts `su` to the `rabbitmq` user (HOME=/var/lib/rabbitmq), so the CLI and every node
//! share `/var/lib/rabbitmq/.erlang.cookie`; root needs no cookie of its own.

use std::{collections::BTreeMap, net::SocketAddr, process::Stdio, time::Duration};

use anyhow::{Context, bail};
use lapin::{Connection, ConnectionProperties, options::QueueDeclareOptions, types::FieldTable};

/// A single CLI call boots an Erlang VM (~0.5 s); a minute means something is wrong.
const CTL_TIMEOUT: Duration = Duration::from_secs(60);
/// A private node boots in ~3-6 s here; allow for a loaded 2-core CI machine.
const BROKER_START_DEADLINE: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(50);

/// Host of the shared broker: `TEST_AMQP_HOST`, default 127.0.0.1.
pub fn amqp_host() -> String {
    std::env::var("TEST_AMQP_HOST").unwrap_or_else(|_| "127.0.0.1".into())
}

/// AMQP port of the shared broker: `TEST_AMQP_PORT`, default 5672.
pub fn amqp_port() -> u16 {
    std::env::var("TEST_AMQP_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5672)
}

/// The shared broker's socket address (`TEST_AMQP_HOST` must then be an IP address).
pub fn shared_broker_addr() -> SocketAddr {
    let host = amqp_host();
    let ip = host
        .parse()
        .unwrap_or_else(|_| panic!("TEST_AMQP_HOST={host} must be an IP address"));
    SocketAddr::new(ip, amqp_port())
}

/// `amqp://guest:guest@host:port/<vhost percent-encoded>`.
pub fn amqp_url_for(host: &str, port: u16, vhost: &str) -> String {
    format!("amqp://guest:guest@{host}:{port}/{}", encode_vhost(vhost))
}

/// Percent-encodes everything but RFC 3986 unreserved characters (so "/" becomes "%2F").
pub fn encode_vhost(vhost: &str) -> String {
    let mut out = String::with_capacity(vhost.len());
    for b in vhost.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs `rabbitmqctl <args>` (quiet) and returns its stdout; stderr goes into the error.
/// `TEST_RABBITMQ_NODE` selects the shared node when it is not the default one.
pub async fn rabbitmqctl(args: &[&str]) -> anyhow::Result<String> {
    let node = std::env::var("TEST_RABBITMQ_NODE").ok();
    let mut full: Vec<&str> = Vec::new();
    if let Some(n) = node.as_deref() {
        full.extend(["-n", n]);
    }
    full.extend(args);
    run_ctl(&full).await
}

async fn run_ctl(args: &[&str]) -> anyhow::Result<String> {
    run_cli("rabbitmqctl", args).await
}

/// Runs one of RabbitMQ's CLI tools (`rabbitmqctl`, `rabbitmq-queues`, …) quietly and
/// returns its stdout; stderr goes into the error.
async fn run_cli(tool: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::time::timeout(
        CTL_TIMEOUT,
        tokio::process::Command::new(tool)
            .arg("-q")
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("{tool} {args:?} took over {CTL_TIMEOUT:?}"))?
    .with_context(|| format!("cannot run {tool} {args:?} (is rabbitmq-server installed?)"))?;
    if !out.status.success() {
        bail!(
            "{tool} {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Number of *ready* messages in `queue` (a passive declare: fast, no CLI), or `None` when
/// the queue does not exist. Unacknowledged deliveries are not counted; use
/// [`TestVhost::queue_messages`] for ready + unacked.
///
/// The count can trail publisher confirms briefly (seen here: 0 right after 3 confirmed
/// publishes to a quorum queue on a loaded machine), so assert with [`wait_queue_len_at`].
pub async fn queue_len_at(amqp_url: &str, queue: &str) -> anyhow::Result<Option<u64>> {
    let conn = Connection::connect(amqp_url, ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to {amqp_url}"))?;
    let channel = conn.create_channel().await?;
    let opts = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let res = channel
        .queue_declare(queue.into(), opts, FieldTable::default())
        .await;
    let _ = conn.close(200, "queue_len done".into()).await;
    match res {
        Ok(q) => Ok(Some(u64::from(q.message_count()))),
        Err(e) if shared::amqp::is_not_found(&e) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("passive declare of {queue}")),
    }
}

/// Waits until `queue` holds exactly `expected` ready messages; the error names the last
/// count seen.
pub async fn wait_queue_len_at(
    amqp_url: &str,
    queue: &str,
    expected: u64,
    within: Duration,
) -> anyhow::Result<()> {
    let what = format!("queue {queue} to hold {expected} ready messages");
    crate::wait::value(within, &what, || async {
        match queue_len_at(amqp_url, queue).await {
            Ok(Some(n)) if n == expected => Ok(()),
            seen => Err(format!("last saw {seen:?}")),
        }
    })
    .await
}

/// The arguments of each queue (name → argument → value), read from the output of
/// `rabbitmqctl list_queues name arguments --formatter json`.
pub type QueueArguments = BTreeMap<String, BTreeMap<String, serde_json::Value>>;

/// Parses `rabbitmqctl list_queues name arguments --formatter json`: `arguments` is a list
/// of `[name, type, value]` on 3.10 and an object on later versions.
pub fn parse_queue_arguments(json: &str) -> anyhow::Result<QueueArguments> {
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(json).with_context(|| format!("list_queues printed {json}"))?;
    let mut queues = QueueArguments::new();
    for row in rows {
        let name = row["name"].as_str().context("a queue without a name")?;
        let args = match &row["arguments"] {
            serde_json::Value::Object(map) => map.clone().into_iter().collect(),
            serde_json::Value::Array(entries) => entries
                .iter()
                .filter_map(|e| Some((e[0].as_str()?.to_owned(), e.as_array()?.last()?.clone())))
                .collect(),
            _ => BTreeMap::new(),
        };
        queues.insert(name.to_owned(), args);
    }
    Ok(queues)
}

mod cluster;
mod private_broker;
mod proxy;
mod replicas;
mod vhost;

pub use cluster::Cluster;
pub use private_broker::{PrivateBroker, TlsFiles, pick_free_port};
pub use proxy::TcpProxy;
pub use replicas::QueueReplicas;
pub use vhost::TestVhost;
