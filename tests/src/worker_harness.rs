//! Runs the worker for the suites: in-process (`worker::run` on an ephemeral port) or as
//! the real `worker` binary (for SIGKILL); publishes webhooks exactly as the ingress does;
//! reads queue lengths and dead-lettered messages.

use std::{net::SocketAddr, path::PathBuf, process::Stdio, time::Duration};

use anyhow::Context as _;
use lapin::{
    BasicProperties, Channel,
    options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions},
    types::FieldTable,
};
use shared::{
    amqp::Session,
    envelope::{self, HeadersExt},
    publish::publish_confirmed,
    topology::{EXCHANGE, Topology},
    webhook,
};
use tokio::{net::TcpListener, process::Child, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use worker::WorkerArgs;

/// Tiers short enough for a test to walk them in about a second.
pub const TEST_RETRY_DELAYS: &str = "200ms,500ms";

/// Worker options for a suite: fast tiers, one quick retry, a minute of budget, a short
/// inventory timeout and shutdown deadline, ops on an ephemeral port.
pub fn test_args(amqp_url: &str, inventory_url: &str) -> WorkerArgs {
    let url = worker::config::parse_inventory_url(inventory_url).expect("inventory URL");
    let mut args = WorkerArgs::new(amqp_url, url);
    args.broker.retry_delays = shared::config::parse_delays(TEST_RETRY_DELAYS).expect("delays");
    args.broker.publish_timeout = Duration::from_secs(5);
    args.retry_budget = Duration::from_secs(60);
    args.quick_retries = 1;
    args.inventory_timeout = Duration::from_secs(2);
    args.shutdown_timeout = Duration::from_secs(10);
    args.concurrency = 8;
    args.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    args
}

/// The same options as environment variables, for the `worker` binary.
pub fn test_env(amqp_url: &str, inventory_url: &str, listen: SocketAddr) -> Vec<(String, String)> {
    [
        ("AMQP_URL", amqp_url.to_owned()),
        ("INVENTORY_URL", inventory_url.to_owned()),
        ("RETRY_DELAYS", TEST_RETRY_DELAYS.to_owned()),
        ("RETRY_BUDGET", "60s".to_owned()),
        ("QUICK_RETRIES", "1".to_owned()),
        ("INVENTORY_TIMEOUT", "2s".to_owned()),
        ("SHUTDOWN_TIMEOUT", "10s".to_owned()),
        ("WORKER_CONCURRENCY", "8".to_owned()),
        ("WORKER_LISTEN", listen.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A worker running in this process; stopped (without waiting) when dropped.
pub struct RunningWorker {
    pub ops: SocketAddr,
    pub shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningWorker {
    /// Starts `worker::run` and waits until it is consuming (`/readyz` is 200).
    pub async fn start(args: WorkerArgs) -> anyhow::Result<RunningWorker> {
        // Logs go to the test's captured output, shown when it fails.
        shared::telemetry::init_tracing(shared::telemetry::LogFormat::Text);
        let listener = TcpListener::bind(args.listen).await?;
        let ops = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(worker::run(listener, args, shutdown.clone()));
        let running = RunningWorker {
            ops,
            shutdown,
            task: Some(task),
        };
        wait_ready(ops, Duration::from_secs(20)).await?;
        Ok(running)
    }

    /// Cancels it and waits for `run` to return (in-flight work settled, connection closed).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Whether `/readyz` on `ops` answers 200.
pub async fn is_ready(ops: SocketAddr) -> bool {
    matches!(reqwest::get(format!("http://{ops}/readyz")).await, Ok(r) if r.status() == 200)
}

/// Waits until `/readyz` on `ops` answers 200.
pub async fn wait_ready(ops: SocketAddr, within: Duration) -> anyhow::Result<()> {
    crate::wait::until(within, "worker ready", || is_ready(ops)).await
}

/// The `/metrics` text of the worker on `ops`.
pub async fn metrics(ops: SocketAddr) -> anyhow::Result<String> {
    Ok(reqwest::get(format!("http://{ops}/metrics"))
        .await?
        .text()
        .await?)
}

/// Sum of the samples of `name` whose labels include all of `labels` (Prometheus text).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

/// The `worker` binary next to this test executable (`target/<profile>/worker`).
pub fn worker_binary() -> anyhow::Result<PathBuf> {
    Ok(crate::bin_path("worker"))
}

/// The real `worker` binary as a child process.
pub struct WorkerProcess {
    pub ops: SocketAddr,
    child: Child,
}

impl WorkerProcess {
    /// Starts the binary with [`test_env`] plus `extra` variables and waits until ready.
    pub async fn spawn(
        amqp_url: &str,
        inventory_url: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<WorkerProcess> {
        Self::spawn_with_stderr(amqp_url, inventory_url, extra, Stdio::inherit()).await
    }

    /// [`Self::spawn`] with the process's log (stderr) written to the file `log`.
    pub async fn spawn_logged(
        amqp_url: &str,
        inventory_url: &str,
        extra: &[(&str, &str)],
        log: &std::path::Path,
    ) -> anyhow::Result<WorkerProcess> {
        let file = std::fs::File::create(log).context("creating the worker's log file")?;
        Self::spawn_with_stderr(amqp_url, inventory_url, extra, file.into()).await
    }

    async fn spawn_with_stderr(
        amqp_url: &str,
        inventory_url: &str,
        extra: &[(&str, &str)],
        stderr: Stdio,
    ) -> anyhow::Result<WorkerProcess> {
        let ops = free_port()?;
        let mut cmd = tokio::process::Command::new(worker_binary()?);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(test_env(amqp_url, inventory_url, ops))
            .envs(extra.iter().map(|(k, v)| (*k, *v)))
            .stdin(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true);
        let child = cmd.spawn().context("starting the worker binary")?;
        let process = WorkerProcess { ops, child };
        wait_ready(ops, Duration::from_secs(30)).await?;
        Ok(process)
    }

    /// SIGKILL: no shutdown, no acks, nothing flushed.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// SIGTERM, then waits for the process to exit; returns its exit code.
    pub async fn terminate(mut self, within: Duration) -> anyhow::Result<Option<i32>> {
        let pid = self.child.id().context("already exited")?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        let exit = tokio::time::timeout(within, self.child.wait())
            .await
            .context("worker did not exit after SIGTERM")??;
        Ok(exit.code())
    }
}

/// A port nobody listens on right now.
fn free_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// A broker session of the suite's own: publishes as the ingress does, inspects queues.
pub struct Broker {
    session: Session,
}

impl Broker {
    /// Connects to `amqp_url` and declares `topology` (the same as the worker's).
    pub async fn connect(amqp_url: &str, topology: &Topology) -> anyhow::Result<Broker> {
        let session = Session::open(amqp_url, "test-suite", topology)
            .await
            .context("test publisher cannot connect")?;
        Ok(Broker { session })
    }

    /// Connects with the topology of `args`.
    pub async fn for_worker(args: &WorkerArgs) -> anyhow::Result<Broker> {
        Broker::connect(&args.broker.amqp_url, &args.broker.topology()).await
    }

    /// Publishes `body` to `xsolla.webhooks` with the headers and properties the ingress
    /// gives a verified webhook (routing key = its type, `message_id` = its dedup id).
    pub async fn publish_webhook(&self, body: &[u8]) -> anyhow::Result<()> {
        let (_, summary) = webhook::parse(body).context("fixture is not a webhook")?;
        let kind = summary.notification_type.as_str();
        let properties = received(
            &summary,
            &crate::fixtures::authorization(body, "test-secret"),
        );
        self.publish(EXCHANGE, kind, body, properties).await
    }

    /// Publishes many webhooks at once: all sent, then every confirm awaited (the suite
    /// needs a backlog quickly; the product publishes one confirmed message at a time).
    pub async fn publish_webhooks(&self, bodies: &[Vec<u8>]) -> anyhow::Result<()> {
        let channel = self.session.channel();
        let mut confirms = Vec::with_capacity(bodies.len());
        for body in bodies {
            let (_, summary) = webhook::parse(body).context("fixture is not a webhook")?;
            let kind = summary.notification_type.as_str();
            let properties = received(&summary, "");
            let mandatory = lapin::options::BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            };
            confirms.push(
                channel
                    .basic_publish(EXCHANGE.into(), kind.into(), mandatory, body, properties)
                    .await?,
            );
        }
        for confirm in confirms {
            let confirmation = tokio::time::timeout(Duration::from_secs(30), confirm).await??;
            anyhow::ensure!(
                matches!(confirmation, lapin::Confirmation::Ack(None)),
                "not confirmed: {confirmation:?}"
            );
        }
        Ok(())
    }

    /// Publishes raw bytes with `properties`, confirmed.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> anyhow::Result<()> {
        publish_confirmed(
            self.session.channel(),
            exchange,
            routing_key,
            body,
            properties,
            Duration::from_secs(10),
        )
        .await
        .with_context(|| format!("publishing to {exchange:?} with {routing_key:?}"))
    }

    /// Messages ready in `queue` (not counting unacked ones).
    pub async fn queue_len(&self, queue: &str) -> anyhow::Result<u32> {
        // Its own channel: a passive declare of a missing queue closes the channel.
        let channel = self.session.connection().create_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let q = channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await?;
        let _ = channel.close(200, "done".into()).await;
        Ok(q.message_count())
    }

    /// Waits until `queue` holds at least `n` ready messages.
    pub async fn wait_queue_len(
        &self,
        queue: &str,
        n: u32,
        within: Duration,
    ) -> anyhow::Result<()> {
        crate::wait::until(within, &format!("{n} messages in {queue}"), || async {
            self.queue_len(queue).await.is_ok_and(|len| len >= n)
        })
        .await
    }

    /// Takes (gets and acks) every ready message of `queue`.
    pub async fn take_all(&self, queue: &str) -> anyhow::Result<Vec<TakenMessage>> {
        let channel: Channel = self.session.connection().create_channel().await?;
        let mut taken = Vec::new();
        while let Some(got) = channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await?
        {
            let delivery = got.delivery;
            delivery.acker.ack(BasicAckOptions::default()).await?;
            taken.push(TakenMessage {
                headers: delivery.properties.headers().clone().unwrap_or_default(),
                properties: delivery.properties,
                body: delivery.data,
            });
        }
        let _ = channel.close(200, "done".into()).await;
        Ok(taken)
    }

    /// Closes the suite's connection.
    pub async fn close(self) {
        self.session.close().await;
    }
}

/// A message read off a queue.
#[derive(Debug, Clone)]
pub struct TakenMessage {
    pub properties: BasicProperties,
    pub headers: FieldTable,
    pub body: Vec<u8>,
}

impl TakenMessage {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get_str(name)
    }

    pub fn int_header(&self, name: &str) -> Option<i64> {
        self.headers.get_int(name)
    }
}

/// `order_paid` (combined mode fixture) for order `id`, user `user-<id>`.
pub fn order_paid(id: u64) -> Vec<u8> {
    crate::fixtures::with(
        "order_paid_combined",
        &[
            ("/order/id", serde_json::json!(id)),
            ("/billing/transaction/id", serde_json::json!(id)),
            ("/user/external_id", serde_json::json!(format!("user-{id}"))),
        ],
    )
}

/// `order_canceled` (separate mode fixture) for order `id`, user `user-<id>`.
pub fn order_canceled(id: u64) -> Vec<u8> {
    crate::fixtures::with(
        "order_canceled_separate",
        &[
            ("/order/id", serde_json::json!(id)),
            ("/user/external_id", serde_json::json!(format!("user-{id}"))),
        ],
    )
}

/// What a worker suite runs against: a vhost of its own, a demo inventory, the worker's
/// options pointing at both, and the suite's own broker session on the vhost.
pub struct WorkerSetup {
    pub vhost: crate::rabbit::TestVhost,
    pub inventory: crate::inventory::InventoryHandle,
    pub args: WorkerArgs,
    pub broker: Broker,
}

impl WorkerSetup {
    /// A fresh vhost and an inventory started with `config`; the worker is not started.
    pub async fn start(config: crate::inventory::InventoryConfig) -> WorkerSetup {
        let vhost = crate::rabbit::TestVhost::create()
            .await
            .expect("test vhost");
        let inventory = crate::inventory::DemoInventory::start(config)
            .await
            .expect("demo inventory");
        let args = test_args(&vhost.amqp_url(), &inventory.url());
        let broker = Broker::for_worker(&args).await.expect("suite connects");
        WorkerSetup {
            vhost,
            inventory,
            args,
            broker,
        }
    }

    /// A worker in this process, with [`Self::args`].
    pub async fn worker(&self) -> RunningWorker {
        RunningWorker::start(self.args.clone())
            .await
            .expect("worker starts")
    }

    /// Publishes `order_paid` for each id, as the ingress does.
    pub async fn publish_orders(&self, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            self.broker
                .publish_webhook(&order_paid(id))
                .await
                .expect("published");
        }
    }

    /// Waits (45 s at most) until the inventory granted every order of `ids`.
    pub async fn wait_granted(&self, ids: std::ops::Range<u64>) -> crate::inventory::Snapshot {
        let want = ids.clone();
        self.inventory
            .wait_for(
                move |s| want.clone().all(|id| s.grant(&id.to_string()).is_some()),
                Duration::from_secs(45),
            )
            .await
            .expect("every order granted")
    }
}

/// The envelope the ingress gives a verified webhook (`envelope::received_properties`, as
/// the ingress builds it), for a webhook the suite publishes itself.
fn received(summary: &webhook::Summary, signature: &str) -> lapin::BasicProperties {
    envelope::received_properties(&envelope::Received {
        notification_type: &summary.notification_type,
        message_id: &summary.dedup_id,
        signature,
        traceparent: &envelope::new_traceparent(),
        project_id: None,
    })
}
