//! A vhost of the test's own on the shared broker, deleted when dropped.

use super::*;
use std::{net::SocketAddr, process::Stdio, time::Duration};

use anyhow::Context;
use lapin::{Connection, ConnectionProperties, options::QueueDeleteOptions};

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

    /// Every queue's declaration arguments (`rabbitmqctl list_queues name arguments`).
    pub async fn queue_arguments(&self) -> anyhow::Result<QueueArguments> {
        let out = rabbitmqctl(&[
            "list_queues",
            "-p",
            &self.name,
            "name",
            "arguments",
            "--formatter",
            "json",
        ])
        .await?;
        parse_queue_arguments(&out)
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
                if pid
                    .parse::<u32>()
                    .is_ok_and(|pid| !super::private_broker::pid_alive(pid))
                {
                    let _ = rabbitmqctl(&["delete_vhost", vhost]).await;
                }
            }
        });
    });
}
