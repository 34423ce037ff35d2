//! A RabbitMQ node of the test's own, for tests that stop, kill or restart a broker.

use super::*;
use std::{
    net::TcpListener as StdListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use tokio::{net::TcpStream, time::Instant};

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
    tls: Option<(u16, TlsFiles)>,
}

/// PEM texts for a node's TLS listener ([`PrivateBroker::start_tls`]).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that signed `cert` (RabbitMQ wants a `cacertfile` even with `verify_none`).
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl PrivateBroker {
    /// Boots a fresh node and waits until it accepts AMQP connections (~3-6 s here).
    pub async fn start() -> anyhow::Result<Self> {
        Self::boot(None).await
    }

    /// [`start`](Self::start) with a TLS listener too, on [`tls_port`](Self::tls_port),
    /// serving `files` (clients are not asked for certificates: `verify_none`).
    pub async fn start_tls(files: TlsFiles) -> anyhow::Result<Self> {
        Self::boot(Some(files)).await
    }

    async fn boot(tls: Option<TlsFiles>) -> anyhow::Result<Self> {
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
                tls: match &tls {
                    Some(files) => Some((pick_free_port()?, files.clone())),
                    None => None,
                },
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

    /// The TLS listener's port (nodes started with [`start_tls`](Self::start_tls)).
    pub fn tls_port(&self) -> Option<u16> {
        self.tls.as_ref().map(|(port, _)| *port)
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
        self.sync_dets().await?;
        self.kill_node_unsynced().await
    }

    /// Writes the node's DETS tables to disk (the step [`kill_node`](Self::kill_node) takes
    /// before its SIGKILL).
    pub async fn sync_dets(&self) -> anyhow::Result<()> {
        self.ctl(&["eval", "lists:foreach(fun dets:sync/1, dets:all())."])
            .await
            .map(drop)
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

    /// Freezes the node's VM with SIGSTOP: its sockets stay open and its kernel still takes
    /// bytes, but nothing answers (what a hung VM or a one-way partition looks like to a
    /// client). [`PrivateBroker::thaw`] resumes it.
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// Resumes a node [`frozen`](Self::freeze).
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.beam_pid().context("node pid file not found")?;
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill {signal} {pid}: {status}");
        Ok(())
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
        let mut conf = String::from(
            "# Private test node (tests/src/rabbit.rs). Listener set by env.\n\
             log.file.level = info\n\
             # As deploy/rabbitmq/rabbitmq.conf: a node the others dropped (frozen past the\n\
             # net tick) pauses and rejoins instead of running on as a partition of its own.\n\
             cluster_partition_handling = pause_minority\n",
        );
        if let Some((port, files)) = &self.tls {
            // The TLS listener is not one of the env-set ones, so it goes here. The files
            // sit in the node's dir, which the chown below hands to `rabbitmq`: the node
            // reads them as that user and fails the listener (not the boot) otherwise.
            let tls = d.join("tls");
            std::fs::create_dir_all(&tls)?;
            for (name, pem) in [
                ("ca.pem", &files.ca),
                ("cert.pem", &files.cert),
                ("key.pem", &files.key),
            ] {
                std::fs::write(tls.join(name), pem)?;
            }
            conf.push_str(&format!(
                "listeners.ssl.default = 127.0.0.1:{port}\n\
                 ssl_options.cacertfile = {ca}\n\
                 ssl_options.certfile = {cert}\n\
                 ssl_options.keyfile = {key}\n\
                 ssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n",
                ca = tls.join("ca.pem").display(),
                cert = tls.join("cert.pem").display(),
                key = tls.join("key.pem").display(),
            ));
        }
        std::fs::write(d.join("rabbitmq.conf"), conf)?;
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
        if let Some((port, _)) = &self.tls {
            let port = *port;
            wait_for(deadline, "the TLS listener to accept", || async move {
                TcpStream::connect(("127.0.0.1", port)).await.is_ok()
            })
            .await
            .with_context(|| self.log_tail(15))?;
        }
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
pub(super) fn pid_alive(pid: u32) -> bool {
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
