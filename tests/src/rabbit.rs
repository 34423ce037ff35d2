//! RabbitMQ isolation helpers for tests.
//!
//! * [`TestVhost`]: a fresh vhost on the shared node per test, so parallel tests share the
//!   broker but never a queue. Deleted on drop.
//! * [`PrivateBroker`]: a whole RabbitMQ node of the test's own (own ports, own data dir),
//!   for tests that stop or restart the broker without pulling the floor from under the
//!   tests running beside them. Shut down and removed on drop, even when the test panics.
//! * [`TcpProxy`]: a TCP relay in front of a broker; `cut()` makes the broker "go away" for
//!   whoever connects through it, in milliseconds and without touching the broker.
//!
//! Everything here shells out to Debian's `rabbitmqctl`/`rabbitmq-server`. As root, those
//! scripts `su` to the `rabbitmq` user (HOME=/var/lib/rabbitmq), so the CLI and every node
//! share `/var/lib/rabbitmq/.erlang.cookie`; root needs no cookie of its own.

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    path::{Path, PathBuf},
    process::Stdio,
    sync::Mutex,
    time::Duration,
};

use anyhow::{Context, bail};
use lapin::{
    Connection, ConnectionProperties,
    options::{QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
};
use tokio::{
    net::{TcpListener, TcpStream},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

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
    let out = tokio::time::timeout(
        CTL_TIMEOUT,
        tokio::process::Command::new("rabbitmqctl")
            .arg("-q")
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("rabbitmqctl {args:?} took over {CTL_TIMEOUT:?}"))?
    .with_context(|| format!("cannot run rabbitmqctl {args:?} (is rabbitmq-server installed?)"))?;
    if !out.status.success() {
        bail!(
            "rabbitmqctl {args:?} failed ({}): {}{}",
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
        Err(e) if is_not_found(&e) => Ok(None),
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
    let deadline = Instant::now() + within;
    loop {
        let seen = queue_len_at(amqp_url, queue).await;
        if matches!(seen, Ok(Some(n)) if n == expected) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "queue {queue}: wanted {expected} ready messages within {within:?}, last saw {seen:?}"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p) if p.get_id() == 404)
}

// ---------------------------------------------------------------------------------------
// TestVhost

/// A vhost of its own on the shared node (`xb-test-<pid>-<uuid>`), with full permissions
/// for guest. Deleted on drop (in the background; [`TestVhost::delete`] waits for it).
pub struct TestVhost {
    name: String,
    deleted: bool,
}

impl TestVhost {
    /// Creates the vhost and grants guest `.* .* .*` on it (two CLI calls, ~1 s).
    pub async fn create() -> anyhow::Result<TestVhost> {
        reap_dead_vhosts_once();
        // The pid in the name lets a later run delete vhosts of test processes that were
        // killed (timeouts) before their Drop ran.
        let name = format!(
            "xb-test-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        rabbitmqctl(&["add_vhost", &name]).await?;
        // From here the guard deletes the vhost whatever happens next.
        let vhost = TestVhost {
            name,
            deleted: false,
        };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            "guest",
            ".*",
            ".*",
            ".*",
        ])
        .await?;
        Ok(vhost)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `amqp://guest:guest@127.0.0.1:5672/<vhost>` (host/port from `TEST_AMQP_HOST/PORT`).
    pub fn amqp_url(&self) -> String {
        amqp_url_for(&amqp_host(), amqp_port(), &self.name)
    }

    /// The shared broker's AMQP address, e.g. to put a [`TcpProxy`] in front of it.
    pub fn broker_addr(&self) -> SocketAddr {
        shared_broker_addr()
    }

    /// This vhost reached through `addr` instead (e.g. `proxy.addr()` of a [`TcpProxy`]
    /// in front of [`broker_addr`](Self::broker_addr)).
    pub fn amqp_url_via(&self, addr: SocketAddr) -> String {
        format!("amqp://guest:guest@{addr}/{}", encode_vhost(&self.name))
    }

    /// A plain lapin connection to this vhost.
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        Ok(Connection::connect(&self.amqp_url(), ConnectionProperties::default()).await?)
    }

    /// Ready messages in `queue`, `None` if it does not exist. Panics if the shared broker
    /// cannot be reached: that is a broken test environment, not a test outcome.
    pub async fn queue_len(&self, queue: &str) -> Option<u64> {
        match queue_len_at(&self.amqp_url(), queue).await {
            Ok(n) => n,
            Err(e) => panic!("queue_len({queue}) on vhost {}: {e:#}", self.name),
        }
    }

    /// Waits until `queue` holds exactly `expected` ready messages (see [`queue_len_at`]).
    pub async fn wait_queue_len(
        &self,
        queue: &str,
        expected: u64,
        within: Duration,
    ) -> anyhow::Result<()> {
        wait_queue_len_at(&self.amqp_url(), queue, expected, within).await
    }

    /// Ready + unacknowledged messages in `queue` (via `rabbitmqctl list_queues`, ~0.5 s),
    /// `None` if it does not exist. These are stats, refreshed every few seconds
    /// (`collect_statistics_interval`, 5 s): seen reading 0 while a passive declare
    /// already said 3. Poll it; never assert on one reading.
    pub async fn queue_messages(&self, queue: &str) -> anyhow::Result<Option<u64>> {
        let out = rabbitmqctl(&[
            "list_queues",
            "-p",
            &self.name,
            "name",
            "messages",
            "--no-table-headers",
        ])
        .await?;
        for line in out.lines() {
            if let Some((name, n)) = line.rsplit_once('\t')
                && name == queue
            {
                return Ok(Some(n.trim().parse().context("messages column")?));
            }
        }
        Ok(None)
    }

    /// `rabbitmqctl set_policy -p <vhost> <name> <pattern> <definition-json>` (applies to
    /// queues and exchanges), e.g. `set_policy("full", "^q$", r#"{"max-length":0}"#)`.
    pub async fn set_policy(
        &self,
        name: &str,
        pattern: &str,
        definition: &str,
    ) -> anyhow::Result<()> {
        rabbitmqctl(&["set_policy", "-p", &self.name, name, pattern, definition])
            .await
            .map(drop)
    }

    /// Deletes `queue` (whatever it holds); Ok if it did not exist.
    pub async fn delete_queue(&self, queue: &str) -> anyhow::Result<()> {
        let conn = self.connect().await?;
        let channel = conn.create_channel().await?;
        let res = channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
        let _ = conn.close(200, "delete_queue done".into()).await;
        res.map(drop)
            .with_context(|| format!("deleting queue {queue}"))
    }

    /// Closes every client connection of this vhost (the broker stays up): clients see a
    /// server-initiated `connection.close` (320 CONNECTION_FORCED) and must reconnect.
    pub async fn close_connections(&self) -> anyhow::Result<()> {
        rabbitmqctl(&[
            "close_all_connections",
            "--vhost",
            &self.name,
            "closed by test",
        ])
        .await
        .map(drop)
    }

    /// Number of client connections currently open on this vhost.
    pub async fn connection_count(&self) -> anyhow::Result<usize> {
        let out = rabbitmqctl(&["list_connections", "vhost", "--no-table-headers"]).await?;
        Ok(out.lines().filter(|l| l.trim() == self.name).count())
    }

    /// Deletes the vhost now and waits for it (Drop only starts the deletion).
    pub async fn delete(mut self) -> anyhow::Result<()> {
        self.deleted = true;
        rabbitmqctl(&["delete_vhost", &self.name]).await.map(drop)
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        // Fire and forget: the CLI needs ~0.5 s and must not hold up the test's runtime.
        // All stdio is null so nextest does not wait on (or flag) a leaked pipe; the
        // process finishes on its own after the test process exits.
        let mut cmd = std::process::Command::new("rabbitmqctl");
        if let Ok(n) = std::env::var("TEST_RABBITMQ_NODE") {
            cmd.args(["-n", &n]);
        }
        let spawned = cmd
            .args(["-q", "delete_vhost", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Err(e) = spawned {
            eprintln!("warning: could not delete vhost {}: {e}", self.name);
        }
    }
}

/// Deletes `xb-test-<pid>-…` vhosts whose test process is gone, once per process, in the
/// background (it must never slow down or fail a test).
fn reap_dead_vhosts_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tokio::spawn(async {
            let Ok(out) = rabbitmqctl(&["list_vhosts", "name", "--no-table-headers"]).await else {
                return;
            };
            for vhost in out.lines().map(str::trim) {
                let Some(pid) = vhost
                    .strip_prefix("xb-test-")
                    .and_then(|r| r.split('-').next())
                else {
                    continue;
                };
                if pid.parse::<u32>().is_ok_and(|pid| !pid_alive(pid)) {
                    let _ = rabbitmqctl(&["delete_vhost", vhost]).await;
                }
            }
        });
    });
}

// ---------------------------------------------------------------------------------------
// PrivateBroker

/// A RabbitMQ node of the test's own: node `xbtest-<pid>-<n>@localhost`, AMQP and
/// distribution ports picked free, data and logs in `$TMPDIR/xb-private-brokers/<pid>-<n>`
/// (owned by `rabbitmq`), no plugins (so no management/prometheus listeners), and its own
/// config file (the system one pins the listener to 5672). Needs root, as Debian's
/// scripts only run as root or `rabbitmq`.
///
/// Drop kills the node and removes its directory (kept, and its path printed, when
/// the test is panicking so the broker log can be read). Nodes left by killed test
/// processes are reaped by the next `start()`.
pub struct PrivateBroker {
    node: String,
    port: u16,
    dist_port: u16,
    dir: PathBuf,
}

impl PrivateBroker {
    /// Boots a fresh node and waits until it accepts AMQP connections (~3-6 s here).
    pub async fn start() -> anyhow::Result<Self> {
        if !is_root() {
            bail!(
                "PrivateBroker needs root: Debian's rabbitmq-server runs only as root or rabbitmq"
            );
        }
        reap_dead_brokers().await;
        let base = brokers_base();
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        let mut last_err = None;
        // A port picked free can be taken before the node binds it: retry with new ports.
        for _ in 0..3 {
            let n = next_broker_seq();
            let broker = PrivateBroker {
                node: format!("xbtest-{}-{n}@localhost", std::process::id()),
                port: pick_free_port()?,
                dist_port: pick_free_port()?,
                dir: base.join(format!("{}-{n}", std::process::id())),
            };
            broker.prepare_dir()?;
            match broker.start_node().await {
                Ok(()) => return Ok(broker),
                Err(e) => last_err = Some(e), // Drop stops whatever half-started.
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2F` (the default vhost; the node is private).
    pub fn amqp_url(&self) -> String {
        amqp_url_for("127.0.0.1", self.port, "/")
    }

    /// The node's data/log directory (the log is `log/<node>.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `rabbitmqctl -n <this node> <args>`.
    pub async fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["-n", self.node.as_str()];
        full.extend(args);
        run_ctl(&full).await
    }

    /// Ready messages in `queue` of the default vhost; `None` if absent. Errors if the node
    /// is down.
    pub async fn queue_len(&self, queue: &str) -> anyhow::Result<Option<u64>> {
        queue_len_at(&self.amqp_url(), queue).await
    }

    /// Waits until `queue` of the default vhost holds exactly `expected` ready messages.
    pub async fn wait_queue_len(
        &self,
        queue: &str,
        expected: u64,
        within: Duration,
    ) -> anyhow::Result<()> {
        wait_queue_len_at(&self.amqp_url(), queue, expected, within).await
    }

    /// Stops the RabbitMQ application (the Erlang VM stays): connections are closed and
    /// the AMQP port refuses new ones when this returns (~1 s).
    pub async fn stop_app(&self) -> anyhow::Result<()> {
        self.ctl(&["stop_app"]).await.map(drop)
    }

    /// Starts the application again and waits until the AMQP port accepts (~1.5 s).
    /// Durable queues and persistent messages survive a stop_app/start_app.
    pub async fn start_app(&self) -> anyhow::Result<()> {
        self.ctl(&["start_app"]).await?;
        self.wait_port(Instant::now() + BROKER_START_DEADLINE).await
    }

    /// Kills the node's VM with SIGKILL (a crash: no goodbye to clients, no clean
    /// shutdown). Bring it back with [`PrivateBroker::restart_node`].
    ///
    /// First it syncs the node's DETS tables. RabbitMQ 3.10 keeps the Ra directory (which
    /// quorum queue lives in which data dir) in DETS, saved every 3 minutes: a node killed
    /// within minutes of declaring a quorum queue restarts with that queue leaderless and
    /// empty, confirmed messages and all (seen here). Production queues are older than
    /// that, so a crash test wants the synced state; classic queues survive either way.
    pub async fn kill_node(&self) -> anyhow::Result<()> {
        self.ctl(&["eval", "lists:foreach(fun dets:sync/1, dets:all())."])
            .await?;
        self.kill_node_unsynced().await
    }

    /// SIGKILL without syncing DETS first (see [`kill_node`](Self::kill_node)).
    pub async fn kill_node_unsynced(&self) -> anyhow::Result<()> {
        let pid = self.beam_pid().context("node pid file not found")?;
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        wait_for(
            Instant::now() + Duration::from_secs(30),
            "node VM to die",
            || std::future::ready(!pid_alive(pid)),
        )
        .await
    }

    /// Stops the node gracefully (whole VM, ~4 s); bring it back with
    /// [`restart_node`](Self::restart_node).
    pub async fn stop_node(&self) -> anyhow::Result<()> {
        let pid_file = self.dir.join("pid");
        self.ctl(&["stop", &pid_file.to_string_lossy()])
            .await
            .map(drop)
    }

    /// Starts the node again (after [`kill_node`](Self::kill_node) or [`stop_node`](Self::stop_node)),
    /// same ports and data, so durable state is recovered from disk.
    pub async fn restart_node(&self) -> anyhow::Result<()> {
        self.start_node().await
    }

    fn prepare_dir(&self) -> anyhow::Result<()> {
        let d = &self.dir;
        std::fs::create_dir_all(d.join("mnesia"))?;
        std::fs::create_dir_all(d.join("log"))?;
        // No plugins: management and prometheus would listen on fixed ports (15672/15692).
        std::fs::write(d.join("enabled_plugins"), "[].\n")?;
        // Own config file: /etc/rabbitmq/rabbitmq.conf pins `listeners.tcp.local` to 5672.
        // The listener comes from RABBITMQ_NODE_IP_ADDRESS/PORT (putting it here as well
        // makes the node bind it twice and die with eaddrinuse).
        std::fs::write(
            d.join("rabbitmq.conf"),
            "# Private test node (tests/src/rabbit.rs). Listener set by env.\n\
             log.file.level = info\n",
        )?;
        // Debian's script switches to the rabbitmq user, who must own all of it.
        let st = std::process::Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(d)
            .status()
            .context("running chown")?;
        if !st.success() {
            bail!(
                "chown -R rabbitmq {} failed (no rabbitmq user?)",
                d.display()
            );
        }
        Ok(())
    }

    async fn start_node(&self) -> anyhow::Result<()> {
        let d = &self.dir;
        let _ = std::fs::remove_file(d.join("pid"));
        let status = tokio::process::Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            // The detached VM must not hold the test's stdout/stderr (nextest leak check).
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .context("cannot run rabbitmq-server (is it installed?)")?;
        if !status.success() {
            bail!("rabbitmq-server -detached exited with {status}");
        }
        let deadline = Instant::now() + BROKER_START_DEADLINE;
        self.wait_port(deadline).await?;
        // The port answering means boot reached the listeners; await_startup confirms that
        // this is our node and that it finished booting.
        self.ctl(&["await_startup", "--timeout", "60"]).await?;
        Ok(())
    }

    /// Waits until the AMQP port accepts, failing early if the VM died (log tail in error).
    async fn wait_port(&self, deadline: Instant) -> anyhow::Result<()> {
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return Ok(());
            }
            // The pid file appears early in boot; once it exists a dead pid means the
            // node gave up (port clash, bad config...).
            if let Some(pid) = self.beam_pid()
                && !pid_alive(pid)
            {
                bail!(
                    "node {} died while starting:\n{}",
                    self.node,
                    self.log_tail(15)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "node {} not accepting on port {} in time:\n{}",
                    self.node,
                    self.port,
                    self.log_tail(15)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn beam_pid(&self) -> Option<u32> {
        read_pid(&self.dir.join("pid"))
    }

    fn log_tail(&self, n: usize) -> String {
        let log = self.dir.join("log").join(format!("{}.log", self.node));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(n)..].join("\n");
        format!("(last lines of {})\n{tail}", log.display())
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        // Synchronous on purpose: the node must be gone before its directory, and before
        // the test process exits.
        stop_node_blocking(&self.node, &self.dir);
        if std::thread::panicking() {
            eprintln!(
                "PrivateBroker {}: logs kept in {}",
                self.node,
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Ends a node whose directory is about to be deleted. SIGKILL is instant, where a
/// graceful `rabbitmqctl stop` takes ~4 s here and buys nothing for a throwaway node.
/// Without a pid file (node still booting, or never started) it falls back to `stop`.
fn stop_node_blocking(node: &str, dir: &Path) {
    match read_pid(&dir.join("pid")) {
        Some(pid) => {
            // Only our node: a stale pid file (reaper) may name a reused pid.
            if is_beam_of(pid, node) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
                let end = std::time::Instant::now() + Duration::from_secs(10);
                while pid_alive(pid) && std::time::Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        None => {
            let _ = std::process::Command::new("timeout")
                .args(["60", "rabbitmqctl", "-q", "-n", node, "stop"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn read_pid(file: &Path) -> Option<u32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// True if `pid` is the VM started with `RABBITMQ_NODENAME=<node>`.
fn is_beam_of(pid: u32, node: &str) -> bool {
    let want = format!("RABBITMQ_NODENAME={node}");
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()))
        .unwrap_or(false)
}

fn brokers_base() -> PathBuf {
    std::env::temp_dir().join("xb-private-brokers")
}

fn next_broker_seq() -> u32 {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Stops nodes and removes directories left by test processes that no longer exist
/// (killed by a timeout before Drop could run).
async fn reap_dead_brokers() {
    let Ok(entries) = std::fs::read_dir(brokers_base()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((pid, _)) = name.split_once('-') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid_alive(pid) {
            continue;
        }
        let node = format!("xbtest-{name}@localhost");
        let dir = entry.path();
        let _ = tokio::task::spawn_blocking(move || {
            stop_node_blocking(&node, &dir);
            let _ = std::fs::remove_dir_all(&dir);
        })
        .await;
    }
}

/// Running (a zombie, dead but not yet reaped by its parent, counts as gone).
fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Format: "pid (comm) S ..."; comm may hold spaces, so take the state after ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A free loopback port *below* the kernel's ephemeral range, so that while a test has it
/// closed (broker stopped, proxy cut) no outgoing connection can be handed it as a source
/// port and block the re-bind.
pub fn pick_free_port() -> anyhow::Result<u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = if low > 12000 {
        (10000, low)
    } else {
        (low, 65535)
    };
    for _ in 0..200 {
        let port = rand::random_range(from..to);
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port found in {from}..{to}")
}

async fn wait_for<F, Fut>(deadline: Instant, what: &str, mut cond: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        if cond().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------
// TcpProxy

/// A TCP relay 127.0.0.1:<port> → `upstream`. `cut()` resets every live connection and
/// stops listening (new connects are refused); `restore()` listens again on the same port.
/// Dropping the proxy cuts it for good.
pub struct TcpProxy {
    port: u16,
    upstream: SocketAddr,
    live: Mutex<Option<Generation>>,
}

/// One listening period: its listener and relays stop together when `stop` is cancelled.
struct Generation {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl TcpProxy {
    /// Starts relaying on a free port (below the ephemeral range, see [`pick_free_port`]).
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<TcpProxy> {
        let proxy = TcpProxy {
            port: pick_free_port()?,
            upstream,
            live: Mutex::new(None),
        };
        proxy.restore().await?;
        Ok(proxy)
    }

    /// A proxy in front of the shared broker (`TEST_AMQP_HOST/PORT`).
    pub async fn to_shared_broker() -> anyhow::Result<TcpProxy> {
        Self::start(shared_broker_addr()).await
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where clients connect: 127.0.0.1:<port>.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    pub fn is_cut(&self) -> bool {
        self.live.lock().unwrap().is_none()
    }

    /// Stops listening and resets every relayed connection; returns once all are gone.
    pub async fn cut(&self) {
        let generation = self.live.lock().unwrap().take();
        if let Some(g) = generation {
            g.stop.cancel();
            g.tasks.close();
            g.tasks.wait().await;
        }
    }

    /// Listens again on the same port (no-op if already listening).
    pub async fn restore(&self) -> anyhow::Result<()> {
        if !self.is_cut() {
            return Ok(());
        }
        // SO_REUSEADDR (set by tokio) lets us re-bind over TIME_WAIT; retry briefly anyway
        // in case the port is momentarily held.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).with_context(|| format!("re-binding proxy port {}", self.port));
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        };
        let g = Generation {
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        g.tasks.spawn(accept_loop(
            listener,
            self.upstream,
            g.stop.clone(),
            g.tasks.clone(),
        ));
        let mut live = self.live.lock().unwrap();
        if live.is_some() {
            // A concurrent restore won; ours stops at once.
            g.stop.cancel();
        } else {
            *live = Some(g);
        }
        Ok(())
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(g) = self.live.lock().unwrap().take() {
            g.stop.cancel();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let inbound = tokio::select! {
            _ = stop.cancelled() => return, // drops the listener: connects are refused
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
        };
        let stop = stop.clone();
        tasks.spawn(async move {
            let Ok(outbound) = TcpStream::connect(upstream).await else {
                return; // upstream down: the client sees its connection closed
            };
            relay(inbound, outbound, stop).await;
        });
    }
}

async fn relay(mut a: TcpStream, mut b: TcpStream, stop: CancellationToken) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    tokio::select! {
        _ = stop.cancelled() => {
            // Abrupt, like a vanished broker or host: RST both ways rather than a FIN.
            let _ = a.set_zero_linger();
            let _ = b.set_zero_linger();
        }
        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
    }
}
