//! Connecting to RabbitMQ and staying connected.
//!
//! A [`Session`] is one connection with one confirm-mode channel and the topology declared.
//! [`supervise`] keeps one session alive for a process: it reconnects with jittered
//! exponential backoff after any loss and publishes the current session (or `None`) on a
//! watch channel, which is also what `/readyz` reports. We do this ourselves rather than
//! with lapin's auto-recovery so that "not connected" is a state callers can see and
//! answer with 503 at once, instead of a publish that waits on a recovering channel.
//!
//! `AMQP_URL` may list several nodes of one cluster ([`Brokers`]): a connect tries them in
//! turn, each within `AMQP_CONNECT_TIMEOUT`, starting from the node that last answered.

mod nodes;

pub use nodes::{Brokers, ConnectError, DEFAULT_CONNECT_TIMEOUT, Node, read_ca_file};

use std::{sync::Arc, time::Duration};

use backon::{BackoffBuilder, ExponentialBuilder};
use lapin::{Channel, Connection, options::ConfirmSelectOptions};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::topology::{self, Topology};

/// One connection, one confirm-mode channel, topology declared.
pub struct Session {
    connection: Connection,
    channel: Channel,
    node: usize,
    addr: String,
}

impl Session {
    /// Connects (to the first node of the list that answers), declares the topology and
    /// puts the channel in confirm mode.
    pub async fn open(url: &str, name: &str, topology: &Topology) -> lapin::Result<Session> {
        Session::open_on(&Brokers::from(url), name, topology).await
    }

    /// [`Session::open`] on nodes already parsed (with their timeout and TLS trust).
    pub async fn open_on(
        brokers: &Brokers,
        name: &str,
        topology: &Topology,
    ) -> lapin::Result<Session> {
        Session::open_with(brokers, name, topology, false).await
    }

    /// [`Session::open_on`]; with `declared_before` (a process whose earlier session
    /// declared the topology) it only checks that the topology is still there
    /// ([`topology::ensure_on`]), declaring it again if a part is missing.
    async fn open_with(
        brokers: &Brokers,
        name: &str,
        topology: &Topology,
        declared_before: bool,
    ) -> lapin::Result<Session> {
        let (connection, node) = brokers.connect(name).await?;
        let ready = async {
            let channel = if declared_before {
                topology::ensure_on(&connection, topology).await?
            } else {
                topology::declare_on(&connection, topology).await?
            };
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, lapin::Error>(channel)
        }
        .await;
        match ready {
            Ok(channel) => Ok(Session {
                connection,
                channel,
                node,
                addr: brokers.nodes()[node].addr().to_owned(),
            }),
            Err(error) => {
                // The node answered but cannot serve the topology (one still joining its
                // cluster, say): the next attempt starts with another node.
                brokers.lost(node);
                let _ = connection.close(200, "topology not declared".into()).await;
                Err(error)
            }
        }
    }

    /// `host:port` of the node this session is on.
    pub fn node(&self) -> &str {
        &self.addr
    }

    /// The confirm-mode channel.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The connection, for opening further channels (a consumer's own, for instance).
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Both the connection and the channel are usable.
    pub fn is_healthy(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    /// Closes the connection politely (ignored if it is already gone).
    pub async fn close(&self) {
        let _ = self.connection.close(200, "closing".into()).await;
    }
}

/// Opens a connection named `name` (shown by `rabbitmqctl list_connections client_properties`)
/// to the first node of `url` (one URL or a comma-separated list) that answers, each within
/// [`DEFAULT_CONNECT_TIMEOUT`], trusting the system roots; [`Brokers::connect`] for more.
pub async fn connect(url: &str, name: &str) -> lapin::Result<Connection> {
    Ok(Brokers::from(url).connect(name).await?.0)
}

/// Whether `error` is the broker's `404 NOT_FOUND` (a passive declare of a queue or
/// exchange that does not exist; the broker closes the channel with it).
pub fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e) if e.get_id() == 404)
}

/// The URL (or comma-separated list of URLs) with every password hidden, for logs and
/// errors. Errs on the side of hiding: a part it cannot read as `scheme://[user[:pass]@]host…`
/// shows as `<unparsable URL>`, or as `scheme://***` when only the scheme is clear. A comma
/// inside a password splits it into parts that are each hidden this way.
pub fn redact_url(url: &str) -> String {
    url.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
    const UNPARSABLE: &str = "<unparsable URL>";
    let Some((scheme, rest)) = url.split_once("://") else {
        return UNPARSABLE.into();
    };
    let plain_scheme = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !plain_scheme {
        return UNPARSABLE.into();
    }
    // The last `@` ends the user info: a password may itself hold `@`, `/` or `?`.
    if let Some((userinfo, tail)) = rest.rsplit_once('@') {
        return match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{tail}"),
            None => format!("{scheme}://{userinfo}@{tail}"),
        };
    }
    // No user info: `host[:port]` must look like one, else the "port" may be a password
    // whose `@host` part is missing (`amqp://user:secret`).
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let port = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((_, "")) => Some(""),
            Some((_, after)) => after.strip_prefix(':'),
            None => None,
        },
        None => Some(authority.rsplit_once(':').map_or("", |(_, port)| port)),
    };
    let port_ok = port.is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    if port_ok && !authority.is_empty() {
        url.to_owned()
    } else {
        format!("{scheme}://***")
    }
}

/// A handle on the supervised session.
#[derive(Clone)]
pub struct Link {
    current: watch::Receiver<Option<Arc<Session>>>,
    suspect: Arc<Notify>,
}

impl Link {
    /// The session, if connected and healthy right now.
    pub fn current(&self) -> Option<Arc<Session>> {
        self.current
            .borrow()
            .as_ref()
            .filter(|s| s.is_healthy())
            .cloned()
    }

    /// Connected, topology declared.
    pub fn is_ready(&self) -> bool {
        self.current().is_some()
    }

    /// Tells the supervisor that a user of the session saw an AMQP error, so it checks the
    /// session now instead of at its next periodic look.
    pub fn report_error(&self) {
        self.suspect.notify_one();
    }

    /// Resolves once `session` is no longer the link's current one (the supervisor gave
    /// it up: lost, or its node stopped answering) or the supervisor ended. A consumer
    /// selects on it: a silent node never ends its consumer stream by itself.
    pub async fn replaced(&self, session: &Arc<Session>) {
        let mut rx = self.current.clone();
        let _ = rx
            .wait_for(|s| !s.as_ref().is_some_and(|s| Arc::ptr_eq(s, session)))
            .await;
    }

    /// Waits until a session is up, or `timeout` passes.
    pub async fn wait_ready(&self, timeout: Duration) -> Option<Arc<Session>> {
        let mut rx = self.current.clone();
        let ready = rx.wait_for(|s| s.as_ref().is_some_and(|s| s.is_healthy()));
        match tokio::time::timeout(timeout, ready).await {
            Ok(Ok(s)) => s.clone(),
            _ => None,
        }
    }
}

/// Longest delay between attempts to reach the broker, jitter included.
pub const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Delays between attempts to reach the broker: 100 ms doubling to 1 s, plus up to 100 %
/// jitter so a fleet does not reconnect in lockstep; every delay is under [`RECONNECT_MAX`]
/// (backon adds its jitter *after* the cap, so the cap is half of it). Capped low because
/// every second without a broker is a second of 503s at the edge; an attempt costs the
/// broker one refused TCP connection.
pub fn reconnect_backoff() -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(RECONNECT_MAX / 2)
        .with_jitter()
        .without_max_times()
        .build()
}

/// How often an idle supervisor looks at its session's health. lapin marks a connection
/// closed as soon as the broker closes it or the socket fails, so this only bounds how long
/// `/readyz` can lag behind.
const HEALTH_CHECK_EVERY: Duration = Duration::from_millis(250);

/// How often a supervisor asks its node for an answer (a channel opened and closed) when
/// nothing made it suspicious sooner. A node that stops answering without closing anything
/// (a frozen VM, a partition) keeps its TCP connection open: lapin notices only after two
/// missed heartbeats (a minute with the broker's `heartbeat = 30`), and until then every
/// publish times out and a consumer waits for deliveries that never come.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// Keeps a [`Session`] open until `shutdown`; returns its [`Link`] and the task.
/// `brokers` is a [`Brokers`] or a URL (list) taken as is (`String`, `&str`).
pub fn supervise(
    brokers: impl Into<Brokers>,
    name: String,
    topology: Topology,
    shutdown: CancellationToken,
) -> (Link, tokio::task::JoinHandle<()>) {
    let brokers: Brokers = brokers.into();
    metrics::describe_gauge!(
        "amqp_node",
        "1 for the RabbitMQ node (host:port) this process is connected to, 0 for the others"
    );
    // Every node's series exists from the start (0), as the other metrics do.
    for node in brokers.nodes() {
        metrics::gauge!("amqp_node", "node" => node.addr().to_owned()).set(0.0);
    }
    let (tx, rx) = watch::channel(None);
    let suspect = Arc::new(Notify::new());
    let link = Link {
        current: rx,
        suspect: suspect.clone(),
    };
    let task = tokio::spawn(async move {
        let mut backoff = reconnect_backoff();
        let mut declared = false;
        while !shutdown.is_cancelled() {
            match Session::open_with(&brokers, &name, &topology, declared).await {
                Ok(session) => {
                    declared = true;
                    let node = session.node().to_owned();
                    tracing::info!(%node, "connected to RabbitMQ, topology declared");
                    metrics::gauge!("amqp_connected").set(1.0);
                    metrics::gauge!("amqp_node", "node" => node.clone()).set(1.0);
                    backoff = reconnect_backoff();
                    let session = Arc::new(session);
                    tx.send_replace(Some(session.clone()));
                    let probe_within = brokers.connect_timeout();
                    watch_health(&session, &suspect, &shutdown, probe_within).await;
                    tx.send_replace(None);
                    metrics::gauge!("amqp_connected").set(0.0);
                    metrics::gauge!("amqp_node", "node" => node.clone()).set(0.0);
                    // A silent node never answers the close: bounded, and after a loss not
                    // waited for (the next node is tried at once).
                    let index = session.node;
                    let closing = async move {
                        let _ = tokio::time::timeout(probe_within, session.close()).await;
                    };
                    if shutdown.is_cancelled() {
                        closing.await;
                    } else {
                        tokio::spawn(closing);
                        // Try the other nodes first: this one may be the one that died.
                        brokers.lost(index);
                        tracing::warn!(%node, "lost the RabbitMQ connection; reconnecting");
                    }
                }
                Err(error) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(%error, retry_in = ?crate::telemetry::to_millis(delay), broker = %brokers.redacted(), "cannot connect to RabbitMQ");
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    });
    (link, task)
}

/// Returns when the session is no longer healthy, when its node does not answer a probe
/// within `probe_within` (every [`PROBE_EVERY`], and at once when a user reported an
/// error), or on shutdown.
async fn watch_health(
    session: &Session,
    suspect: &Notify,
    shutdown: &CancellationToken,
    probe_within: Duration,
) {
    let mut tick = tokio::time::interval(HEALTH_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut probed = tokio::time::Instant::now();
    loop {
        let suspected = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = suspect.notified() => true,
            _ = tick.tick() => false,
        };
        if !session.is_healthy() {
            return;
        }
        if !suspected && probed.elapsed() < PROBE_EVERY {
            continue;
        }
        probed = tokio::time::Instant::now();
        let answer = tokio::select! {
            _ = shutdown.cancelled() => return,
            answer = probe(session, probe_within) => answer,
        };
        if let Err(why) = answer {
            tracing::warn!(node = %session.node(), %why, "the RabbitMQ node does not answer; moving to another");
            return;
        }
    }
}

/// Whether the node still answers: a channel opened and closed within `within`. A
/// connection the broker has blocked (a memory or disk alarm) counts as answering: the
/// broker reads nothing more from it until the alarm clears, and it told us so.
async fn probe(session: &Session, within: Duration) -> Result<(), String> {
    if session.connection.status().blocked() {
        return Ok(());
    }
    let round_trip = async {
        let channel = session.connection.create_channel().await?;
        channel.close(200, "liveness probe".into()).await
    };
    match tokio::time::timeout(within, round_trip).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer to a channel open within {within:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_stay_under_the_documented_cap_jitter_included() {
        let mut longest = Duration::ZERO;
        for _ in 0..500 {
            for d in reconnect_backoff().take(20) {
                assert!(
                    d >= Duration::from_millis(100) && d < RECONNECT_MAX,
                    "{d:?}"
                );
                longest = longest.max(d);
            }
        }
        assert!(
            longest > RECONNECT_MAX / 2,
            "jittered above the base cap: {longest:?}"
        );
    }

    #[test]
    fn redacts_the_password_only() {
        assert_eq!(
            redact_url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert_eq!(redact_url("amqp://[::1]:5672/%2f"), "amqp://[::1]:5672/%2f");
        assert_eq!(redact_url("amqps://rmq.example/"), "amqps://rmq.example/");
    }

    #[test]
    fn hides_every_shape_of_password() {
        let secret = "S3CR3T-pw";
        for url in [
            format!("amqp://u:{secret}@/"),
            format!("amqp://u:{secret}"),
            format!("amqp://u:{secret}/vhost"),
            format!("amqp://u:{secret}@h:5672/%2f"),
            format!("amqp://u:a@b{secret}@h/"),
            format!("amqp://u:p/{secret}@h/"),
            format!("amqp://u:{secret}@h1/,amqp://v:{secret}@h2/"),
            format!("amqp://u:pa,{secret}@h/"),
            format!("amqp:u:{secret}@h"),
            format!("u:{secret}@h"),
            format!("am qp://u:{secret}@h"),
            format!("amqp://[::1]:{secret}"),
            format!("amqp://[::1]{secret}"),
            format!("amqp://:{secret}"),
            secret.to_owned(),
        ] {
            let shown = redact_url(&url);
            assert!(!shown.contains(secret), "{url} shown as {shown}");
        }
        assert_eq!(redact_url("amqp://u:pw"), "amqp://***");
        assert_eq!(redact_url("garbage"), "<unparsable URL>");
        assert_eq!(
            redact_url("amqp://u:a@h1/,amqp://h2:5672/"),
            "amqp://u:***@h1/,amqp://h2:5672/"
        );
    }
}
