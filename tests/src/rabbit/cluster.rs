//! A RabbitMQ cluster of the test's own: private nodes ([`PrivateBroker`]) joined with
//! `rabbitmqctl join_cluster`, for tests that lose, restart or replace a node.

use std::{
    process::Stdio,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::time::Instant;

use super::{PrivateBroker, QueueArguments, QueueReplicas, parse_queue_arguments, run_cli};

/// How often [`Cluster::wait_until`] looks again: each look is a CLI call (~0.5 s of CPU).
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// Private nodes joined into one cluster. Node `i` is [`Cluster::node`]`(i)`; its AMQP URL
/// is `amqp_urls()[i]`. Every node shares the Erlang cookie of the `rabbitmq` user (Debian's
/// scripts switch to it), so no cookie needs to be handed around. Dropping the cluster
/// kills every node (see [`PrivateBroker`]).
pub struct Cluster {
    nodes: Vec<PrivateBroker>,
    /// Whether node `i` is meant to be running (false between a kill or stop and its restart),
    /// so CLI calls go to a node that can answer.
    up: Vec<AtomicBool>,
}

impl Cluster {
    /// Boots `n` fresh nodes (at once: a boot mostly waits) and joins the others to the
    /// first, one at a time.
    pub async fn start(n: usize) -> anyhow::Result<Cluster> {
        anyhow::ensure!(n >= 1, "a cluster needs a node");
        let boots = (0..n).map(|_| PrivateBroker::start());
        let nodes = futures_util::future::try_join_all(boots).await?;
        let up = nodes.iter().map(|_| AtomicBool::new(true)).collect();
        let cluster = Cluster { nodes, up };
        for i in 1..n {
            cluster.join(i, 0).await?;
        }
        cluster.wait_running(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    /// Boots one more fresh node and joins it to the cluster; returns its index.
    pub async fn add_node(&mut self) -> anyhow::Result<usize> {
        let seed = self.live_index()?;
        self.nodes.push(PrivateBroker::start().await?);
        self.up.push(AtomicBool::new(true));
        let i = self.nodes.len() - 1;
        self.join(i, seed).await?;
        self.wait_running(Duration::from_secs(60)).await?;
        Ok(i)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, i: usize) -> &PrivateBroker {
        &self.nodes[i]
    }

    pub fn nodes(&self) -> &[PrivateBroker] {
        &self.nodes
    }

    /// Every node's URL (default vhost), in node order.
    pub fn amqp_urls(&self) -> Vec<String> {
        self.nodes.iter().map(PrivateBroker::amqp_url).collect()
    }

    /// All nodes' URLs comma-separated, as `AMQP_URL` takes a cluster.
    pub fn amqp_url(&self) -> String {
        self.amqp_urls().join(",")
    }

    /// The node serving AMQP on `host:port` (as the `amqp_node` metric names it).
    pub fn index_of_addr(&self, addr: &str) -> Option<usize> {
        let port: u16 = addr.rsplit_once(':')?.1.parse().ok()?;
        self.nodes.iter().position(|n| n.port() == port)
    }

    /// The node named `name` (`xbtest-…@localhost`).
    pub fn index_of_node(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.node() == name)
    }

    /// Whether node `i` is meant to be running.
    pub fn is_up(&self, i: usize) -> bool {
        self.up[i].load(Ordering::SeqCst)
    }

    /// `rabbitmqctl <args>` on the first node that is up.
    pub async fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        self.nodes[self.live_index()?].ctl(args).await
    }

    /// `<tool> -n <a running node> <args>` (`rabbitmq-queues`, `rabbitmq-streams`, …).
    pub async fn cli(&self, tool: &str, args: &[&str]) -> anyhow::Result<String> {
        let node = self.nodes[self.live_index()?].node();
        let mut full = vec!["-n", node];
        full.extend(args);
        run_cli(tool, &full).await
    }

    /// Replicas of every queue of the default vhost.
    pub async fn queues(&self) -> anyhow::Result<Vec<QueueReplicas>> {
        self.queues_in("/").await
    }

    /// Replicas of every queue of `vhost`.
    pub async fn queues_in(&self, vhost: &str) -> anyhow::Result<Vec<QueueReplicas>> {
        let out = self
            .ctl(&[
                "list_queues",
                "-p",
                vhost,
                "name",
                "type",
                "leader",
                "members",
                "online",
                "--formatter",
                "json",
            ])
            .await?;
        serde_json::from_str(&out).with_context(|| format!("list_queues printed {out}"))
    }

    /// Every queue's declaration arguments in `vhost`.
    pub async fn queue_arguments(&self, vhost: &str) -> anyhow::Result<QueueArguments> {
        let out = self
            .ctl(&[
                "list_queues",
                "-p",
                vhost,
                "name",
                "arguments",
                "--formatter",
                "json",
            ])
            .await?;
        parse_queue_arguments(&out)
    }

    /// Replicas of `queue` (default vhost); `None` if it does not exist.
    pub async fn queue(&self, queue: &str) -> anyhow::Result<Option<QueueReplicas>> {
        Ok(self.queues().await?.into_iter().find(|q| q.name == queue))
    }

    /// The node holding `queue`'s leader, if one is elected.
    pub async fn leader_of(&self, queue: &str) -> anyhow::Result<Option<usize>> {
        let q = self.queue(queue).await?;
        Ok(q.and_then(|q| q.leader)
            .and_then(|name| self.index_of_node(&name)))
    }

    /// Waits until `cond` holds on the queues' replicas; the error shows the last listing.
    pub async fn wait_until(
        &self,
        what: &str,
        within: Duration,
        mut cond: impl FnMut(&[QueueReplicas]) -> bool,
    ) -> anyhow::Result<Vec<QueueReplicas>> {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.queues().await;
            if let Ok(queues) = &seen
                && cond(queues)
            {
                return seen;
            }
            if Instant::now() >= deadline {
                bail!("timed out after {within:?} waiting for {what}; last listing: {seen:?}");
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }

    /// Waits until every queue has a leader and all its members online (a restarted node's
    /// replicas are running again).
    pub async fn wait_fully_online(&self, within: Duration) -> anyhow::Result<()> {
        self.wait_until("every replica online", within, |qs| {
            qs.iter().all(QueueReplicas::fully_online)
        })
        .await
        .map(drop)
    }

    /// SIGKILL node `i` (after syncing its DETS tables: see [`PrivateBroker::kill_node`]);
    /// returns when the signal was sent, the moment clients and peers lose the node.
    pub async fn kill(&self, i: usize) -> anyhow::Result<Instant> {
        self.nodes[i].sync_dets().await?;
        self.up[i].store(false, Ordering::SeqCst);
        let killed = Instant::now();
        self.nodes[i].kill_node_unsynced().await?;
        Ok(killed)
    }

    /// Freezes node `i` (SIGSTOP: see [`PrivateBroker::freeze`]); returns when the signal
    /// was sent. [`Cluster::thaw`] resumes it.
    pub fn freeze(&self, i: usize) -> anyhow::Result<Instant> {
        self.up[i].store(false, Ordering::SeqCst);
        let frozen = Instant::now();
        self.nodes[i].freeze()?;
        Ok(frozen)
    }

    /// Resumes node `i` after [`Cluster::freeze`].
    pub fn thaw(&self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].thaw()?;
        self.up[i].store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Stops node `i` gracefully (`rabbitmqctl stop`): it hands its leaderships over first.
    pub async fn stop(&self, i: usize) -> anyhow::Result<()> {
        self.up[i].store(false, Ordering::SeqCst);
        self.nodes[i].stop_node().await
    }

    /// Starts node `i` again with its data; it rejoins the cluster by itself.
    pub async fn restart(&self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].restart_node().await?;
        self.up[i].store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Waits until stopping node `i` would leave every quorum queue a majority
    /// (`rabbitmq-queues check_if_node_is_quorum_critical`): the step a rolling restart
    /// takes before each node.
    pub async fn wait_not_quorum_critical(&self, i: usize, within: Duration) -> anyhow::Result<()> {
        let node = self.nodes[i].node();
        let deadline = Instant::now() + within;
        loop {
            let check = run_cli(
                "rabbitmq-queues",
                &["-n", node, "check_if_node_is_quorum_critical"],
            )
            .await;
            match check {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("{node} still quorum-critical after {within:?}")));
                }
                Err(_) => tokio::time::sleep(LOOK_EVERY).await,
            }
        }
    }

    /// Node `i` is lost for good and a new machine of the same name takes its place, as a
    /// StatefulSet replaces a pod whose volume is gone: SIGKILL, data deleted, forgotten by
    /// the others (`forget_cluster_node`, which also drops it from every quorum queue, and
    /// by the stream coordinator: see below), booted empty and joined again. Existing
    /// quorum queues then have one member fewer until [`grow`](Self::grow) (RabbitMQ does
    /// not add one by itself); the stream's replica on it is rebuilt by RabbitMQ.
    ///
    /// RabbitMQ 3.10's `forget_cluster_node` leaves the node in the stream coordinator
    /// (fixed in 3.13, rabbitmq-server#10331), whose member on the new machine then never
    /// starts (`noproc`, seen here): the coordinator runs on two of three members, and
    /// stream publishes through the new machine were refused on a loaded machine. So the
    /// member is removed as well; the coordinator's leader adds the rejoined node back on
    /// its next tick (see [`wait_stream_coordinator`](Self::wait_stream_coordinator)).
    pub async fn replace(&self, i: usize) -> anyhow::Result<()> {
        self.up[i].store(false, Ordering::SeqCst);
        let broker = &self.nodes[i];
        broker.kill_node_unsynced().await?;
        wipe_data(broker)?;
        self.ctl(&["forget_cluster_node", broker.node()]).await?;
        let expr = format!(
            "ra:remove_member({{rabbit_stream_coordinator, node()}}, \
             {{rabbit_stream_coordinator, '{}'}}).",
            broker.node()
        );
        let out = self.ctl(&["eval", &expr]).await?;
        anyhow::ensure!(
            out.starts_with("{ok,") || out.contains("not_member"),
            "removing {} from the stream coordinator: {out}",
            broker.node()
        );
        broker.restart_node().await?;
        self.up[i].store(true, Ordering::SeqCst);
        let seed = (0..self.len())
            .find(|&k| k != i && self.is_up(k))
            .context("no other node to join")?;
        self.join(i, seed).await?;
        self.wait_running(Duration::from_secs(60)).await
    }

    /// Adds node `i` to every quorum queue that lacks it (`rabbitmq-queues grow <node> all`).
    pub async fn grow(&self, i: usize) -> anyhow::Result<()> {
        let node = self.nodes[i].node();
        self.cli("rabbitmq-queues", &["grow", node, "all"])
            .await
            .map(drop)
    }

    /// Adds a replica of the stream `queue` (default vhost) on node `i`, as `rabbitmq-streams
    /// add_replica` does (that tool has no root wrapper in Debian's package, so through
    /// `rabbitmqctl eval`).
    pub async fn add_stream_replica(&self, queue: &str, i: usize) -> anyhow::Result<()> {
        let node = self.nodes[i].node();
        let expr =
            format!("rabbit_stream_queue:add_replica(<<\"/\">>, <<\"{queue}\">>, '{node}').");
        let out = self.ctl(&["eval", &expr]).await?;
        anyhow::ensure!(
            out.trim() == "ok",
            "adding a replica of {queue} on {node}: {out}"
        );
        Ok(())
    }

    /// Waits until node `i` runs a member of the stream coordinator (the Raft cluster that
    /// places stream replicas). On RabbitMQ 3.10 a node that joined is added to it by the
    /// coordinator's leader on its next tick (every 30 s); until then a publish routed to a
    /// stream through that node is refused (`RESOURCE_ERROR - Stream coordinator
    /// unavailable`, which closes the connection).
    pub async fn wait_stream_coordinator(&self, i: usize, within: Duration) -> anyhow::Result<()> {
        let node = self.nodes[i].node();
        // Asked on node `i` itself: it answers only once its own member runs.
        let expr = format!("ra:members({{rabbit_stream_coordinator, '{node}'}}).");
        let deadline = Instant::now() + within;
        loop {
            let out = self.nodes[i].ctl(&["eval", &expr]).await;
            if let Ok(text) = &out
                && text.trim_start().starts_with("{ok,")
                && text.contains(&format!("'{node}'"))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{node} not in the stream coordinator after {within:?}: {out:?}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Joins node `i` to the cluster of node `seed`: `stop_app`, `reset`, `join_cluster`,
    /// `start_app`.
    async fn join(&self, i: usize, seed: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        let seed = self.nodes[seed].node();
        node.ctl(&["stop_app"]).await?;
        node.ctl(&["reset"]).await?;
        node.ctl(&["join_cluster", seed])
            .await
            .with_context(|| format!("{} joining {seed}", node.node()))?;
        node.start_app().await?;
        node.ctl(&["await_startup", "--timeout", "60"])
            .await
            .map(drop)
    }

    /// Waits until every node meant to be up runs in the cluster.
    async fn wait_running(&self, within: Duration) -> anyhow::Result<()> {
        #[derive(Deserialize)]
        struct Status {
            running_nodes: Vec<String>,
        }
        let want: Vec<&str> = (0..self.len())
            .filter(|&i| self.is_up(i))
            .map(|i| self.nodes[i].node())
            .collect();
        let deadline = Instant::now() + within;
        loop {
            let status = self.ctl(&["cluster_status", "--formatter", "json"]).await;
            let running = status
                .as_deref()
                .ok()
                .and_then(|s| serde_json::from_str::<Status>(s).ok())
                .map(|s| s.running_nodes)
                .unwrap_or_default();
            if want.iter().all(|n| running.iter().any(|r| r == n)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("cluster: wanted {want:?} running within {within:?}, last: {status:?}");
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }

    fn live_index(&self) -> anyhow::Result<usize> {
        (0..self.len())
            .find(|&i| self.is_up(i))
            .context("every node of the cluster is down")
    }
}

/// Deletes a stopped node's database and queue data (its log stays).
fn wipe_data(broker: &PrivateBroker) -> anyhow::Result<()> {
    let mnesia = broker.dir().join("mnesia");
    std::fs::remove_dir_all(&mnesia).with_context(|| format!("removing {}", mnesia.display()))?;
    std::fs::create_dir_all(&mnesia)?;
    let st = std::process::Command::new("chown")
        .args(["rabbitmq:rabbitmq"])
        .arg(&mnesia)
        .stdin(Stdio::null())
        .status()
        .context("running chown")?;
    anyhow::ensure!(st.success(), "chown rabbitmq {} failed", mnesia.display());
    Ok(())
}
