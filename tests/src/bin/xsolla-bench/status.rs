//! `xsolla-bench status`: what the `order-status` server costs, each number beside a
//! baseline measured in the same run (interleaved where it is a rate or a size):
//!
//! 1. connections: RSS per connected + subscribed WebSocket, vs idle WebSockets on a trivial
//!    axum echo server (`xsolla-bench trivial-server`, same buffer settings);
//! 2. latency: granted event confirmed → `done` push received, vs a plain lapin stream
//!    consumer reading the same events at the same time;
//! 3. poll: Get-order answers/s vs a trivial axum handler returning fixed JSON;
//! 4. catch-up: a fresh instance ready over N stream events vs a plain lapin consumer
//!    reading the same N messages.
//!
//! Method and results: BENCHMARKS.md.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt, stream::FuturesUnordered};
use lapin::{
    BasicProperties,
    options::{BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions},
};
use serde::Serialize;
use serde_json::{Value, json};
use shared::{
    envelope,
    order_events::{self, EventKind, OrderEvent, StartAt, StreamMessage},
};
use tests::{sim::vhost, status_harness::mint_jwt};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    process::{Child, Command},
    task::JoinHandle,
};
use tokio_tungstenite::tungstenite::{Message, protocol::WebSocketConfig};

use crate::proc;

/// When one grant was published, and when the broker confirmed it.
type SentConfirmed = (Instant, Instant);

const PROJECT: u64 = 18404;
const SECRET: &str = "xsolla-bench-status-secret";
const HOUR: Duration = Duration::from_secs(3600);

#[derive(clap::Args, Debug)]
pub struct StatusBench {
    /// Phases to run, comma-separated: connections,latency,poll,catchup.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "connections,latency,poll,catchup"
    )]
    only: Vec<String>,
    /// WebSocket connections held at once (connections phase).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Connected players in the latency phase (one WebSocket each).
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    /// Granted events per second in the latency phase.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Stream events to catch up over (half raw order_paid webhooks, half granted events).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Interleaved rounds of each phase (baseline then ours in each).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The order-status binary (default: next to xsolla-bench).
    #[arg(long)]
    status_bin: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize)]
pub struct StatusReport {
    pub load_at_start: String,
    pub connections: Vec<ConnRound>,
    pub latency: Option<LatencyReport>,
    pub poll: Vec<PollRound>,
    pub catchup: Option<CatchupReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnRound {
    pub server: &'static str,
    pub connections: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub kib_per_connection: f64,
    pub client_kib_per_connection: f64,
    pub open_s: f64,
    pub failed: usize,
    pub load: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Dist {
    pub count: usize,
    pub missing: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub users: usize,
    pub rate: u32,
    pub grants_measured: usize,
    pub achieved_rate: f64,
    /// publish confirmed → `done` received on the WebSocket.
    pub ours_from_confirm: Dist,
    /// publish confirmed → delivery to a plain stream consumer.
    pub raw_from_confirm: Dist,
    /// publish sent → `done` received.
    pub ours_from_publish: Dist,
    pub raw_from_publish: Dist,
    pub publish_to_confirm: Dist,
    pub status_cpu_us_per_grant: f64,
    pub status_rss_mib: f64,
    pub load: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PollRound {
    pub server: &'static str,
    pub answers_per_s: f64,
    pub non_200: u64,
    pub server_cpu_us_per_answer: f64,
    pub load: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CatchupReport {
    pub events: usize,
    pub fill_s: f64,
    pub fill_per_s: f64,
    pub rounds: Vec<CatchupRound>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CatchupRound {
    /// From 1; every reader runs once a round.
    pub round: usize,
    pub reader: &'static str,
    pub seconds: f64,
    pub per_s: f64,
    pub rss_mib: f64,
    pub cpu_s: f64,
    /// CPU seconds of the local broker over the round (0 if there is none).
    pub broker_cpu_s: f64,
    pub load: String,
}

pub fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn rss_kib(pid: &str) -> u64 {
    proc::memory_of(pid).map_or(0, |m| (m.rss_mib * 1024.0) as u64)
}

/// A server under test as a child process, killed on drop.
struct Server {
    child: Child,
    pid: String,
    addr: String,
}

impl Server {
    async fn order_status(
        bin: &PathBuf,
        amqp_url: &str,
        env: &[(&str, &str)],
        wait: Duration,
    ) -> anyhow::Result<(Server, f64)> {
        let addr = proc::free_addr()?;
        let started = Instant::now();
        let child = Command::new(bin)
            .envs(env.iter().copied())
            .env("AMQP_URL", amqp_url)
            .env("STATUS_LISTEN", &addr)
            .env("STATUS_JWT_HS256_SECRET", SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let server = Server {
            pid: child.id().context("pid")?.to_string(),
            child,
            addr,
        };
        let ready = server.wait_ready(wait).await?;
        Ok((server, ready.duration_since(started).as_secs_f64()))
    }

    async fn trivial() -> anyhow::Result<Server> {
        let addr = proc::free_addr()?;
        let child = Command::new(std::env::current_exe()?)
            .args(["trivial-server", "--listen", &addr])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let server = Server {
            pid: child.id().context("pid")?.to_string(),
            child,
            addr,
        };
        server.wait_ready(Duration::from_secs(10)).await?;
        Ok(server)
    }

    /// Polls `/readyz` every 20 ms; returns when it answered 200.
    async fn wait_ready(&self, within: Duration) -> anyhow::Result<Instant> {
        let client = reqwest::Client::new();
        let url = format!("http://{}/readyz", self.addr);
        let give_up = Instant::now() + within;
        loop {
            if matches!(client.get(&url).send().await, Ok(r) if r.status() == 200) {
                return Ok(Instant::now());
            }
            anyhow::ensure!(
                Instant::now() < give_up,
                "{url} not ready within {within:?}"
            );
            anyhow::ensure!(
                std::path::Path::new(&format!("/proc/{}", self.pid)).exists(),
                "server exited"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

impl StatusBench {
    pub async fn run(
        &self,
        amqp_url: &str,
        _concurrency: usize,
        duration: Duration,
    ) -> anyhow::Result<StatusReport> {
        raise_fd_limit();
        let bin = self
            .status_bin
            .clone()
            .unwrap_or_else(|| proc::sibling_binary("order-status"));
        let mut report = StatusReport {
            load_at_start: uptime(),
            ..Default::default()
        };
        let want = |p: &str| self.only.iter().any(|o| o == p);
        let mut vhost = vhost::Vhost::create(amqp_url, "xsolla-bench").await?;
        let result = async {
            vhost::declare_topology(vhost.url()).await?;
            if want("connections") {
                for round in 0..self.rounds {
                    for ours in [false, true] {
                        let r = self
                            .connections_round(&bin, vhost.url(), ours, round)
                            .await?;
                        eprintln!("{r:?}");
                        report.connections.push(r);
                    }
                }
            }
            if want("latency") || want("poll") {
                self.latency_and_poll(
                    &bin,
                    vhost.url(),
                    duration,
                    &mut report,
                    want("latency"),
                    want("poll"),
                )
                .await?;
            }
            anyhow::Ok(())
        }
        .await;
        vhost.delete().await;
        result?;
        if want("catchup") {
            let mut vhost = vhost::Vhost::create(amqp_url, "xsolla-bench").await?;
            let result = self.catchup(&bin, vhost.url()).await;
            vhost.delete().await;
            report.catchup = Some(result?);
        }
        Ok(report)
    }

    async fn connections_round(
        &self,
        bin: &PathBuf,
        amqp_url: &str,
        ours: bool,
        round: usize,
    ) -> anyhow::Result<ConnRound> {
        let server = if ours {
            Server::order_status(bin, amqp_url, &[], Duration::from_secs(60))
                .await?
                .0
        } else {
            Server::trivial().await?
        };
        let url = if ours {
            format!("ws://{}/connection/websocket", server.addr)
        } else {
            format!("ws://{}/ws", server.addr)
        };
        // One connection first, so what every connection shares is already there.
        let warm = open_client(&url, ours.then(|| mint_jwt(SECRET, "warm", HOUR)), None).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = rss_kib(&server.pid);
        let client_before = rss_kib("self");
        let started = Instant::now();
        let n = self.connections;
        let opened: Vec<anyhow::Result<JoinHandle<()>>> = futures_util::stream::iter(0..n)
            .map(|i| {
                let url = url.clone();
                let jwt = ours.then(|| mint_jwt(SECRET, &format!("c{round}-{i}"), HOUR));
                async move { open_client(&url, jwt, None).await }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        let open_s = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = rss_kib(&server.pid);
        let client_after = rss_kib("self");
        let failed = opened.iter().filter(|r| r.is_err()).count();
        if let Some(Err(e)) = opened.iter().find(|r| r.is_err()) {
            eprintln!("first failed connection: {e:#}");
        }
        let ok = n - failed;
        let result = ConnRound {
            server: if ours {
                "order-status"
            } else {
                "trivial axum echo"
            },
            connections: ok,
            rss_before_kib: before,
            rss_after_kib: after,
            kib_per_connection: after.saturating_sub(before) as f64 / ok.max(1) as f64,
            client_kib_per_connection: client_after.saturating_sub(client_before) as f64
                / ok.max(1) as f64,
            open_s,
            failed,
            load: uptime(),
        };
        for h in opened.into_iter().flatten() {
            h.abort();
        }
        warm.abort();
        server.stop().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(result)
    }

    async fn latency_and_poll(
        &self,
        bin: &PathBuf,
        amqp_url: &str,
        duration: Duration,
        report: &mut StatusReport,
        latency: bool,
        poll: bool,
    ) -> anyhow::Result<()> {
        let users = self.users.max(64);
        let rate = self.rate.max(1);
        let lead_in = rate as usize; // 1 s unmeasured
        let total = lead_in + (rate as f64 * duration.as_secs_f64()) as usize;
        let order_of = |i: usize| (1_000_000 + i) as u64;
        let user_of = |i: usize| format!("u{}", i % users);
        // Every order accepted first (worker-format events straight into the stream).
        let conn = shared::amqp::connect(amqp_url, "xsolla-bench status publisher").await?;
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let accepted: Vec<(Vec<u8>, BasicProperties)> = (0..total)
            .map(|i| {
                let mut e = OrderEvent::new(
                    EventKind::Accepted,
                    Some(PROJECT),
                    &order_of(i).to_string(),
                    &user_of(i),
                );
                e.items = vec![order_events::EventItem {
                    sku: "com.xsolla.item_1".into(),
                    quantity: 1,
                    amount: Some("30".into()),
                }];
                e.price = Some(order_events::Price {
                    amount: "30".into(),
                    currency: "USD".into(),
                });
                e.to_message()
            })
            .collect();
        publish_many(
            &channel,
            accepted
                .into_iter()
                .map(|(b, p)| ("", order_events::STREAM, b, p)),
            500,
        )
        .await?;
        let (server, _) = Server::order_status(bin, amqp_url, &[], Duration::from_secs(60)).await?;
        let ws_url = format!("ws://{}/connection/websocket", server.addr);
        let received: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
        let clients: Vec<JoinHandle<()>> = futures_util::stream::iter(0..users)
            .map(|u| {
                let (url, received) = (ws_url.clone(), received.clone());
                async move {
                    open_client(
                        &url,
                        Some(mint_jwt(SECRET, &format!("u{u}"), HOUR)),
                        Some(received),
                    )
                    .await
                }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        if latency {
            // The baseline reader: a plain stream consumer in this process, at the same time.
            let raw_received: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
            let raw_conn =
                shared::amqp::connect(amqp_url, "xsolla-bench raw stream reader").await?;
            let raw_channel = raw_conn.create_channel().await?;
            let mut consumer =
                order_events::subscribe(&raw_channel, StartAt::First, 500, "bench-raw").await?;
            let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let raw_task = {
                let (raw_received, seen) = (raw_received.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut unacked = 0;
                    while let Some(Ok(d)) = consumer.next().await {
                        let now = Instant::now();
                        seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if let StreamMessage::Event(e) = order_events::decode_delivery(&d)
                            && e.kind == EventKind::Granted
                            && let Ok(o) = e.order_id.parse::<u64>()
                        {
                            raw_received.lock().unwrap().insert(o, now);
                        }
                        unacked += 1;
                        if unacked >= 100 {
                            let _ = d.acker.ack(BasicAckOptions { multiple: true }).await;
                            unacked = 0;
                        }
                    }
                })
            };
            // Let the raw reader pass the backlog of acceptances first.
            let until = Instant::now() + Duration::from_secs(60);
            while seen.load(std::sync::atomic::Ordering::Relaxed) < total && Instant::now() < until
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let load_before = uptime();
            let cpu_before = proc::cpu_seconds_of(&server.pid);
            let times: Arc<Mutex<Vec<Option<SentConfirmed>>>> =
                Arc::new(Mutex::new(vec![None; total]));
            let period = Duration::from_secs_f64(1.0 / rate as f64);
            let t0 = tokio::time::Instant::now() + Duration::from_millis(10);
            let mut tasks = Vec::with_capacity(total);
            let channel = Arc::new(channel.clone());
            for i in 0..total {
                tokio::time::sleep_until(t0 + period * i as u32).await;
                let (channel, times) = (channel.clone(), times.clone());
                let user = user_of(i);
                tasks.push(tokio::spawn(async move {
                    let e = OrderEvent::new(
                        EventKind::Granted,
                        Some(PROJECT),
                        &order_of(i).to_string(),
                        &user,
                    );
                    let sent = Instant::now();
                    if order_events::publish(&channel, &e, Duration::from_secs(10))
                        .await
                        .is_ok()
                    {
                        times.lock().unwrap()[i] = Some((sent, Instant::now()));
                    }
                }));
            }
            let publish_s = t0.elapsed().as_secs_f64();
            for t in tasks {
                let _ = t.await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let cpu_after = proc::cpu_seconds_of(&server.pid);
            let load_after = uptime();
            raw_task.abort();
            let _ = raw_conn.close(200, "done".into()).await;
            let times = times.lock().unwrap().clone();
            let ours = received.lock().unwrap().clone();
            let raw = raw_received.lock().unwrap().clone();
            let measured: Vec<(usize, Instant, Instant)> = (lead_in..total)
                .filter_map(|i| times[i].map(|(s, c)| (i, s, c)))
                .collect();
            let signed_ms = |later: Instant, earlier: Instant| -> f64 {
                if later >= earlier {
                    later.duration_since(earlier).as_secs_f64() * 1e3
                } else {
                    -(earlier.duration_since(later).as_secs_f64() * 1e3)
                }
            };
            let dist = |map: &HashMap<u64, Instant>, from_confirm: bool| {
                let mut v = Vec::new();
                let mut missing = 0;
                for &(i, s, c) in &measured {
                    match map.get(&order_of(i)) {
                        Some(&r) => v.push(signed_ms(r, if from_confirm { c } else { s })),
                        None => missing += 1,
                    }
                }
                distribution(v, missing)
            };
            report.latency = Some(LatencyReport {
                users,
                rate,
                grants_measured: measured.len(),
                achieved_rate: total as f64 / publish_s,
                ours_from_confirm: dist(&ours, true),
                raw_from_confirm: dist(&raw, true),
                ours_from_publish: dist(&ours, false),
                raw_from_publish: dist(&raw, false),
                publish_to_confirm: distribution(
                    measured.iter().map(|&(_, s, c)| signed_ms(c, s)).collect(),
                    0,
                ),
                status_cpu_us_per_grant: (cpu_after - cpu_before) * 1e6 / total as f64,
                status_rss_mib: rss_kib(&server.pid) as f64 / 1024.0,
                load: format!("{load_before} → {load_after}"),
            });
            eprintln!("{:?}", report.latency);
        }
        if poll {
            let trivial = Server::trivial().await?;
            // Connection c polls order c, which belongs to user c (c < users).
            let jwts: Vec<(u64, String)> = (0..64)
                .map(|c| (order_of(c), mint_jwt(SECRET, &user_of(c), HOUR)))
                .collect();
            // Check once that ours answers 200 with the order.
            let check = reqwest::Client::new()
                .get(format!(
                    "http://{}/api/v2/project/{PROJECT}/order/{}",
                    server.addr, jwts[0].0
                ))
                .bearer_auth(&jwts[0].1)
                .send()
                .await?;
            anyhow::ensure!(check.status() == 200, "poll check: {}", check.status());
            eprintln!("poll check: {}", check.text().await?);
            for _ in 0..self.rounds {
                for (name, s) in [
                    ("trivial axum handler", &trivial),
                    ("order-status", &server),
                ] {
                    let r = poll_round(name, s, &jwts, duration).await?;
                    eprintln!("{r:?}");
                    report.poll.push(r);
                }
            }
            trivial.stop().await;
        }
        for c in clients {
            c.abort();
        }
        server.stop().await;
        let _ = conn.close(200, "done".into()).await;
        Ok(())
    }

    async fn catchup(&self, bin: &PathBuf, amqp_url: &str) -> anyhow::Result<CatchupReport> {
        vhost::declare_topology(amqp_url).await?;
        let conn = shared::amqp::connect(amqp_url, "xsolla-bench status filler").await?;
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        // Half raw order_paid webhooks as the ingress publishes them (the stream's binding
        // files them; published here straight to the stream to keep the work queue out),
        // half granted events: one accepted + one granted per order.
        let marker_order = 987_654_321u64;
        let template = String::from_utf8(tests::fixtures::with(
            "order_paid_combined",
            &[
                ("/order/id", json!(marker_order)),
                ("/billing/transaction/id", json!(marker_order)),
                ("/user/external_id", json!("USERMARK")),
            ],
        ))?;
        let orders = self.events / 2;
        let user_count = (orders / 5).max(1);
        let started = Instant::now();
        let messages = (0..orders).flat_map(|o| {
            let order = 10_000_000 + o as u64;
            let user = format!("p{}", o % user_count);
            let body = template
                .replace(&marker_order.to_string(), &order.to_string())
                .replace("USERMARK", &user)
                .into_bytes();
            let props = envelope::received_properties(&envelope::Received {
                notification_type: "order_paid",
                message_id: &format!("paid-{order}"),
                signature: "",
                traceparent: &envelope::new_traceparent(),
                project_id: Some(PROJECT),
            });
            let (gb, gp) =
                OrderEvent::new(EventKind::Granted, Some(PROJECT), &order.to_string(), &user)
                    .to_message();
            [
                ("", order_events::STREAM, body, props),
                ("", order_events::STREAM, gb, gp),
            ]
        });
        publish_many(&channel, messages, 500).await?;
        // Where the plain readers stop (order-status publishes and reads its own).
        let end = order_events::publish_marker(&channel, Duration::from_secs(30)).await?;
        let fill_s = started.elapsed().as_secs_f64();
        let total = orders * 2;
        eprintln!(
            "filled {total} in {fill_s:.1} s ({:.0}/s), load {}",
            total as f64 / fill_s,
            uptime()
        );
        let _ = conn.close(200, "done".into()).await;
        // The broker's CPU is read as the ingress benchmarks read it: the process listening
        // on the AMQP port (none for a remote broker: its column then stays 0).
        let broker = proc::listener_pid(proc::amqp_port(amqp_url)).await;
        let broker_cpu_seconds = || broker.as_deref().map_or(0.0, proc::cpu_seconds_of);
        let mut rounds = Vec::new();
        for round in 1..=self.rounds {
            // Baselines: plain consumers (the feed's prefetch and ack batching) to the end;
            // one as is, one also decoding each message as the feed does, and two at once on
            // the two halves (as order-status reads a long stream), decoding.
            for (readers, decode, reader) in [
                (1, false, "plain lapin consumer"),
                (
                    1,
                    true,
                    "plain lapin consumer + shared::order_events::decode",
                ),
                (2, true, "2 plain lapin consumers on the halves + decode"),
            ] {
                let load = uptime();
                let (cpu0, broker0) = (proc::cpu_seconds_of("self"), broker_cpu_seconds());
                let started = Instant::now();
                let n = plain_catch_up(amqp_url, total as u64, &end, readers, decode).await?;
                anyhow::ensure!(n == total as u64, "{reader} read {n} of {total}");
                let seconds = started.elapsed().as_secs_f64();
                let r = CatchupRound {
                    round,
                    reader,
                    seconds,
                    per_s: n as f64 / seconds,
                    rss_mib: 0.0,
                    cpu_s: proc::cpu_seconds_of("self") - cpu0,
                    broker_cpu_s: broker_cpu_seconds() - broker0,
                    load,
                };
                eprintln!("{r:?}");
                rounds.push(r);
            }
            for (split, reader) in [
                ("0", "order-status, one reader (STATUS_CATCH_UP_SPLIT=0)"),
                ("100000", "order-status (start → /readyz 200)"),
            ] {
                let load = uptime();
                let broker0 = broker_cpu_seconds();
                let (server, seconds) = Server::order_status(
                    bin,
                    amqp_url,
                    &[("STATUS_CATCH_UP_SPLIT", split)],
                    Duration::from_secs(600),
                )
                .await?;
                let r = CatchupRound {
                    round,
                    reader,
                    seconds,
                    per_s: total as f64 / seconds,
                    rss_mib: rss_kib(&server.pid) as f64 / 1024.0,
                    cpu_s: proc::cpu_seconds_of(&server.pid),
                    broker_cpu_s: broker_cpu_seconds() - broker0,
                    load,
                };
                eprintln!("{r:?}");
                rounds.push(r);
                server.stop().await;
            }
        }
        Ok(CatchupReport {
            events: total,
            fill_s,
            fill_per_s: total as f64 / fill_s,
            rounds,
        })
    }
}

/// Publishes everything with at most `in_flight` unconfirmed.
async fn publish_many(
    channel: &lapin::Channel,
    messages: impl Iterator<Item = (&'static str, &'static str, Vec<u8>, BasicProperties)>,
    in_flight: usize,
) -> anyhow::Result<()> {
    let mut pending: FuturesUnordered<lapin::PublisherConfirm> = FuturesUnordered::new();
    for (exchange, key, body, props) in messages {
        if pending.len() >= in_flight
            && let Some(c) = futures_util::StreamExt::next(&mut pending).await
        {
            anyhow::ensure!(c?.is_ack(), "nacked");
        }
        let confirm = channel
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await?;
        pending.push(confirm);
    }
    while let Some(c) = futures_util::StreamExt::next(&mut pending).await {
        anyhow::ensure!(c?.is_ack(), "nacked");
    }
    Ok(())
}

/// Opens one WebSocket (small buffers, as the server's), connects like an SDK when `jwt`
/// is given (else sends one echo message), and waits for the answer; then a task keeps it
/// open, answers pings and, with `received`, records when each `done` push arrived.
async fn open_client(
    url: &str,
    jwt: Option<String>,
    received: Option<Arc<Mutex<HashMap<u64, Instant>>>>,
) -> anyhow::Result<JoinHandle<()>> {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
    let is_ours = jwt.is_some();
    let hello = match &jwt {
        Some(jwt) => {
            json!({"connect": {"data": {"auth": jwt, "project_id": PROJECT}}, "id": 1}).to_string()
        }
        None => "hello".to_owned(),
    };
    ws.send(Message::Text(hello.into())).await?;
    let reply = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match StreamExt::next(&mut ws).await {
                Some(Ok(Message::Text(t))) if t.as_str() == "{}" => continue,
                Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(anyhow::Error::from(e)),
                None => anyhow::bail!("closed before the reply"),
            }
        }
    })
    .await
    .context("no reply within 30 s")??;
    if is_ours {
        let v: Value = serde_json::from_str(&reply)?;
        anyhow::ensure!(v["connect"].is_object(), "connect refused: {reply}");
    }
    Ok(tokio::spawn(async move {
        while let Some(Ok(m)) = StreamExt::next(&mut ws).await {
            let Message::Text(t) = m else { continue };
            let now = Instant::now();
            if t.as_str() == "{}" {
                if ws.send(Message::Text("{}".into())).await.is_err() {
                    return;
                }
                continue;
            }
            if let Some(received) = &received {
                // One JSON per frame, or several separated by newlines.
                for line in t.as_str().lines() {
                    let Ok(v) = serde_json::from_str::<Value>(line) else {
                        continue;
                    };
                    let p = &v["push"]["pub"]["data"];
                    if p["status"] == "done"
                        && let Some(o) = p["order_id"].as_u64()
                    {
                        received.lock().unwrap().entry(o).or_insert(now);
                    }
                }
            }
        }
    }))
}

/// 64 keep-alive HTTP/1.1 connections, closed loop, for 1 s unmeasured + `duration`.
async fn poll_round(
    name: &'static str,
    server: &Server,
    jwts: &[(u64, String)],
    duration: Duration,
) -> anyhow::Result<PollRound> {
    let load = uptime();
    let ok = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let bad = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (order, jwt) in jwts {
        let request = format!(
            "GET /api/v2/project/{PROJECT}/order/{order} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {jwt}\r\n\r\n",
            server.addr
        )
        .into_bytes();
        let mut stream = TcpStream::connect(&server.addr).await?;
        stream.set_nodelay(true)?;
        let (ok, bad, measuring, stop) = (ok.clone(), bad.clone(), measuring.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut filled = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if stream.write_all(&request).await.is_err() {
                    return;
                }
                // Read one whole response (headers + Content-Length body).
                let status = loop {
                    let mut headers = [httparse::EMPTY_HEADER; 16];
                    let mut resp = httparse::Response::new(&mut headers);
                    if let Ok(httparse::Status::Complete(head)) = resp.parse(&buf[..filled]) {
                        let len = resp
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                            .and_then(|h| {
                                std::str::from_utf8(h.value)
                                    .ok()?
                                    .trim()
                                    .parse::<usize>()
                                    .ok()
                            })
                            .unwrap_or(0);
                        if filled >= head + len {
                            let code = resp.code.unwrap_or(0);
                            buf.copy_within(head + len..filled, 0);
                            filled -= head + len;
                            break code;
                        }
                    }
                    match stream.read(&mut buf[filled..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => filled += n,
                    }
                };
                if measuring.load(std::sync::atomic::Ordering::Relaxed) {
                    if status == 200 {
                        ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    } else {
                        bad.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu0 = proc::cpu_seconds_of(&server.pid);
    measuring.store(true, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    measuring.store(false, std::sync::atomic::Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    let cpu1 = proc::cpu_seconds_of(&server.pid);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    let answers = ok.load(std::sync::atomic::Ordering::Relaxed);
    Ok(PollRound {
        server: name,
        answers_per_s: answers as f64 / secs,
        non_200: bad.load(std::sync::atomic::Ordering::Relaxed),
        server_cpu_us_per_answer: (cpu1 - cpu0) * 1e6 / answers.max(1) as f64,
        load,
    })
}

fn distribution(mut v: Vec<f64>, missing: usize) -> Dist {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| {
        if v.is_empty() {
            f64::NAN
        } else {
            v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
        }
    };
    Dist {
        count: v.len(),
        missing,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: v.last().copied().unwrap_or(f64::NAN),
    }
}

/// Raises the soft fd limit to the hard one (10 000 client sockets live in this process).
fn raise_fd_limit() {
    // No libc crate here: `prlimit` on ourselves does the same.
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=unlimited:unlimited"])
        .status();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    if let Some(line) = limits.lines().find(|l| l.starts_with("Max open files")) {
        eprintln!("{line}");
    }
}

/// `xsolla-bench trivial-server`: the baselines' server. A WebSocket echo at `/ws` with the
/// same buffer settings as order-status (4 KiB read buffer, no write buffer), and a Get-order
/// route answering fixed JSON of the same shape, with no auth and no lookup.
pub async fn trivial_server(listen: String) -> anyhow::Result<()> {
    use axum::{
        Json, Router,
        extract::ws::{Message as AxMessage, WebSocketUpgrade},
        routing::get,
    };
    let body = json!({"order_id": 1000000, "status": "done", "content": {"is_free": false,
        "price": {"amount": "30", "amount_without_discount": "30", "currency": "USD"},
        "items": [{"sku": "com.xsolla.item_1", "quantity": 1, "is_free": false,
            "price": {"amount": "30", "amount_without_discount": "30", "currency": "USD"}}]}});
    let router = Router::new()
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade| async move {
                ws.read_buffer_size(4096)
                    .write_buffer_size(0)
                    .on_upgrade(|mut socket| async move {
                        while let Some(Ok(m)) = socket.recv().await {
                            if let AxMessage::Text(_) = m
                                && socket.send(m).await.is_err()
                            {
                                return;
                            }
                        }
                    })
            }),
        )
        .route(
            "/api/v2/project/{p}/order/{o}",
            get(move || {
                let body = body.clone();
                async move { Json(body) }
            }),
        )
        .route("/readyz", get(|| async { "ready\n" }));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    axum::serve(listener, router).await?;
    Ok(())
}

/// The markdown summary.
pub fn markdown(r: &StatusReport) -> String {
    let mut out = format!("load at start: {}\n\n", r.load_at_start);
    if !r.connections.is_empty() {
        out += "| round | server | connections | RSS before → after (KiB) | KiB/conn | client KiB/conn | open s | failed | load |\n|---|---|---|---|---|---|---|---|---|\n";
        for (i, c) in r.connections.iter().enumerate() {
            out += &format!(
                "| {} | {} | {} | {} → {} | {:.1} | {:.1} | {:.1} | {} | {} |\n",
                i / 2 + 1,
                c.server,
                c.connections,
                c.rss_before_kib,
                c.rss_after_kib,
                c.kib_per_connection,
                c.client_kib_per_connection,
                c.open_s,
                c.failed,
                c.load
            );
        }
        out += "\n";
    }
    if let Some(l) = &r.latency {
        out += &format!(
            "latency: {} users, {} grants measured at {:.0}/s, order-status CPU {:.1} µs/grant, RSS {:.1} MiB, load {}\n\n| | count | missing | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n",
            l.users,
            l.grants_measured,
            l.achieved_rate,
            l.status_cpu_us_per_grant,
            l.status_rss_mib,
            l.load
        );
        for (name, d) in [
            ("order-status: confirm → done", &l.ours_from_confirm),
            (
                "raw stream consumer: confirm → delivery",
                &l.raw_from_confirm,
            ),
            ("order-status: publish → done", &l.ours_from_publish),
            (
                "raw stream consumer: publish → delivery",
                &l.raw_from_publish,
            ),
            ("publish → confirm", &l.publish_to_confirm),
        ] {
            out += &format!(
                "| {name} | {} | {} | {:.2} | {:.2} | {:.2} |\n",
                d.count, d.missing, d.p50_ms, d.p99_ms, d.max_ms
            );
        }
        out += "\n";
    }
    if !r.poll.is_empty() {
        out += "| round | server | answers/s | non-200 | server CPU µs/answer | load |\n|---|---|---|---|---|---|\n";
        for (i, p) in r.poll.iter().enumerate() {
            out += &format!(
                "| {} | {} | {:.0} | {} | {:.1} | {} |\n",
                i / 2 + 1,
                p.server,
                p.answers_per_s,
                p.non_200,
                p.server_cpu_us_per_answer,
                p.load
            );
        }
        out += "\n";
    }
    if let Some(c) = &r.catchup {
        out += &format!(
            "catch-up over {} events (filled in {:.1} s, {:.0}/s)\n\n| round | reader | seconds | msgs/s | RSS MiB | CPU s | broker CPU s | load |\n|---|---|---|---|---|---|---|---|\n",
            c.events, c.fill_s, c.fill_per_s
        );
        for x in &c.rounds {
            out += &format!(
                "| {} | {} | {:.2} | {:.0} | {:.1} | {:.1} | {:.1} | {} |\n",
                x.round, x.reader, x.seconds, x.per_s, x.rss_mib, x.cpu_s, x.broker_cpu_s, x.load
            );
        }
    }
    out
}

/// Reads the stream up to the marker `end` with `readers` consumers on equal offset ranges
/// of about `total` messages (separate channels of one connection); returns how many
/// messages before `end` were read.
async fn plain_catch_up(
    amqp_url: &str,
    total: u64,
    end: &str,
    readers: u64,
    decode: bool,
) -> anyhow::Result<u64> {
    let conn = Arc::new(shared::amqp::connect(amqp_url, "xsolla-bench raw catch-up").await?);
    // The first offset is not always 0 (what the broker keeps before the first message).
    let first = order_events::first_offset(&conn, StartAt::First, Duration::from_secs(10))
        .await?
        .context("an empty stream")?;
    let mut tasks = Vec::new();
    for r in 0..readers {
        let from = first + total * r / readers;
        // The last reader reads to `end`: offsets may skip a few numbers.
        let to = if r + 1 == readers {
            u64::MAX
        } else {
            first + total * (r + 1) / readers
        };
        let (conn, end) = (conn.clone(), end.as_bytes().to_vec());
        tasks.push(tokio::spawn(async move {
            let ch = conn.create_channel().await?;
            let mut consumer = order_events::subscribe(
                &ch,
                StartAt::Offset(from),
                500,
                &format!("bench-catchup-{r}"),
            )
            .await?;
            let (mut n, mut unacked) = (0u64, 0);
            while let Some(d) = consumer.next().await {
                let d = d?;
                let o = order_events::stream_offset(&d).context("no x-stream-offset")?;
                if o < from {
                    continue; // served from the start of its chunk
                }
                if d.properties.kind().is_some() && d.data == end {
                    break;
                }
                // The same decode the feed does, so the baseline reads what it reads.
                if decode {
                    std::hint::black_box(order_events::decode_delivery(&d));
                }
                n += 1;
                unacked += 1;
                if unacked >= 100 {
                    d.acker.ack(BasicAckOptions { multiple: true }).await?;
                    unacked = 0;
                }
                if o + 1 >= to {
                    break;
                }
            }
            anyhow::Ok(n)
        }));
    }
    let mut n = 0;
    for t in tasks {
        n += t.await??;
    }
    if let Ok(conn) = Arc::try_unwrap(conn) {
        let _ = conn.close(200, "done".into()).await;
    }
    Ok(n)
}
