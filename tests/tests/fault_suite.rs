//! End-to-end fault suite: the real `ingress` and two real `worker` processes, a RabbitMQ node of
//! the suite's own and the demo inventory, fed a few thousand orders by `xsolla-sim` (paid, some
//! canceled in and out of order, some duplicated, a few with a SKU the game rejects) with Xsolla's
//! retry behaviour on a compressed clock, while in turn the broker is stopped and started, workers
//! are SIGKILLed, the ingress is restarted (SIGTERM, then SIGKILL) and the inventory fails a share
//! of calls and goes down for a while. Then it checks the product's invariant (`docs/design.md`):
//! every acknowledged webhook is applied exactly once, the DLQ holds exactly the rejected orders,
//! nothing is unrouted.
//!
//! Tuning (environment): `FAULT_SUITE_ORDERS` (default 2000), `FAULT_SUITE_RATE` (orders
//! started per second, default 50), `FAULT_SUITE_SEED` (order mix and inventory faults).
//! Faults are triggered by conditions (so many webhooks acknowledged), never by timers;
//! only their durations (broker and inventory down for 2 s) are fixed.

#[path = "fault_suite/plan.rs"]
mod plan;
#[path = "fault_suite/procs.rs"]
mod procs;
#[path = "fault_suite/verdict.rs"]
mod verdict;

use std::{sync::Arc, time::Duration};

use plan::{OrderResult, REJECTED_SKU, SendCtx};
use procs::{LogDir, Service};
use shared::topology::{DLQ, UNROUTED_QUEUE, WORK_QUEUE, retry_queue_name};
use tests::{
    bin_path,
    inventory::{DemoInventory, Faults, InventoryConfig, InventoryHandle, Snapshot},
    rabbit::{PrivateBroker, pick_free_port},
    sim::{Policy, Sender, new_run_id},
    worker_harness::metric_sum,
};
use tokio::{task::JoinSet, time::Instant};
use verdict::{FaultEvent, Timings};
use worker::dlq::{DeadLetter, DlqConnection, ListOptions};

const SECRET: &str = "fault-suite-secret";
/// Worker delay tiers (and the topology both binaries declare).
const RETRY_DELAYS: &[(&str, Duration)] = &[
    ("200ms", Duration::from_millis(200)),
    ("1s", Duration::from_secs(1)),
];
/// Xsolla's schedule × 0.001: its 5-minute waits become 0.3 s, the 12 h of 20 sends 43 s.
const TIME_SCALE: f64 = 0.001;
/// Requests the sim has in flight at most.
const CONCURRENCY: usize = 32;
/// One HTTP send past this counts as no answer (Xsolla's side of a hung ingress).
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the broker and the inventory stay down when they are taken down.
const OUTAGE: Duration = Duration::from_secs(2);
/// Longest wait for the next fault's trigger (so many acks).
const TRIGGER_WITHIN: Duration = Duration::from_secs(120);
/// Longest wait for the system to settle after the last webhook.
const DRAIN_WITHIN: Duration = Duration::from_secs(120);
/// Settled = nothing queued or in flight, and the inventory unchanged for this long.
const QUIET: Duration = Duration::from_secs(1);
/// Settled this long with effects still missing: they will not come (the longest wait
/// inside the system is a 1 s tier or a 1 s `Retry-After`).
const STUCK: Duration = Duration::from_secs(5);

struct Config {
    orders: usize,
    rate: f64,
    seed: u64,
}

impl Config {
    fn from_env() -> Config {
        fn var<T: std::str::FromStr>(name: &str) -> Option<T> {
            let raw = std::env::var(name).ok()?;
            Some(
                raw.parse()
                    .unwrap_or_else(|_| panic!("{name}={raw} is not valid")),
            )
        }
        Config {
            orders: var("FAULT_SUITE_ORDERS").unwrap_or(2000),
            rate: var("FAULT_SUITE_RATE").unwrap_or(50.0),
            seed: var("FAULT_SUITE_SEED").unwrap_or_else(rand::random),
        }
    }
}

/// The three processes under test.
struct System {
    ingress: Service,
    workers: Vec<Service>,
    ingress_url: String,
}

impl System {
    async fn start(broker: &PrivateBroker, inventory_url: &str, logs: &LogDir) -> System {
        let delays = RETRY_DELAYS
            .iter()
            .map(|(s, _)| *s)
            .collect::<Vec<_>>()
            .join(",");
        let common = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
            [
                ("AMQP_URL", broker.amqp_url()),
                ("RETRY_DELAYS", delays.clone()),
                ("PUBLISH_TIMEOUT", "2s".into()),
                ("SHUTDOWN_TIMEOUT", "5s".into()),
            ]
            .iter()
            .chain(pairs)
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
        };
        let ingress_addr = format!("127.0.0.1:{}", pick_free_port().unwrap());
        let ingress_env = common(&[
            ("INGRESS_LISTEN", ingress_addr.clone()),
            ("XSOLLA_WEBHOOK_SECRET", SECRET.into()),
        ]);
        let mut ingress = Service::new(
            "ingress",
            bin_path("ingress"),
            ingress_env,
            ingress_addr.clone(),
            logs,
        );
        let mut workers = Vec::new();
        for n in 1..=2 {
            let ops = format!("127.0.0.1:{}", pick_free_port().unwrap());
            let env = common(&[
                ("INVENTORY_URL", inventory_url.to_owned()),
                ("WORKER_LISTEN", ops.clone()),
                ("WORKER_CONCURRENCY", "16".into()),
                ("INVENTORY_TIMEOUT", "1s".into()),
                ("QUICK_RETRIES", "1".into()),
                ("RETRY_BUDGET", "10m".into()),
            ]);
            workers.push(Service::new(
                &format!("worker-{n}"),
                bin_path("worker"),
                env,
                ops,
                logs,
            ));
        }
        ingress.start().await.expect("ingress starts");
        for w in &mut workers {
            w.start().await.expect("worker starts");
        }
        System {
            ingress,
            workers,
            ingress_url: format!("http://{ingress_addr}/webhooks/xsolla"),
        }
    }

    /// Deliveries the workers hold right now (`worker_in_flight`); `None` if one of them
    /// does not answer.
    async fn in_flight(&self) -> Option<f64> {
        let mut sum = 0.0;
        for w in &self.workers {
            sum += in_flight(w).await?;
        }
        Some(sum)
    }

    /// Every child's log file, for failure messages.
    fn logs(&self) -> String {
        std::iter::once(&self.ingress)
            .chain(&self.workers)
            .flat_map(Service::log_files)
            .map(|p| format!("  {}", p.display()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `worker_in_flight` of one worker; `None` if it does not answer.
async fn in_flight(worker: &Service) -> Option<f64> {
    let text = reqwest::get(format!("http://{}/metrics", worker.ops))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(metric_sum(&text, "worker_in_flight", &[]))
}

/// Injects the faults in turn, each once enough webhooks have been acknowledged.
struct FaultDriver<'a> {
    broker: &'a PrivateBroker,
    inventory: &'a InventoryHandle,
    acks: tokio::sync::watch::Receiver<u64>,
    planned: u64,
    t0: Instant,
    events: Vec<FaultEvent>,
}

impl FaultDriver<'_> {
    /// Waits until `share` of the planned webhooks are acknowledged; returns the count.
    async fn after(&mut self, share: f64) -> u64 {
        let want = (self.planned as f64 * share) as u64;
        let waited = tokio::time::timeout(TRIGGER_WITHIN, self.acks.wait_for(|n| *n >= want))
            .await
            .map(|r| r.map(|n| *n));
        match waited {
            Ok(reached) => reached.expect("the sender lives as long as the suite"),
            Err(_) => panic!(
                "only {} webhooks acknowledged within {TRIGGER_WITHIN:?} (waiting for {want})",
                *self.acks.borrow()
            ),
        }
    }

    fn record(&mut self, what: &str, after_acks: u64, began: Instant) {
        self.events.push(FaultEvent {
            what: what.to_owned(),
            after_acks,
            at: began - self.t0,
            took: began.elapsed(),
        });
    }

    async fn restart_broker(&mut self, share: f64) {
        let acks = self.after(share).await;
        let began = Instant::now();
        self.broker.stop_app().await.expect("rabbitmqctl stop_app");
        tokio::time::sleep(OUTAGE).await;
        self.broker
            .start_app()
            .await
            .expect("rabbitmqctl start_app");
        self.record("broker: stop_app, 2 s down, start_app", acks, began);
    }

    async fn kill_worker(&mut self, share: f64, worker: &mut Service) {
        let acks = self.after(share).await;
        let began = Instant::now();
        let holding = in_flight(worker).await.unwrap_or(f64::NAN);
        worker.sigkill().await.expect("SIGKILL worker");
        worker.start().await.expect("worker restarts");
        let what = format!(
            "{}: SIGKILL with {holding} deliveries in flight, restarted",
            worker.name
        );
        self.record(&what, acks, began);
    }

    async fn restart_ingress(&mut self, share: f64, ingress: &mut Service, kill: bool) {
        let acks = self.after(share).await;
        let began = Instant::now();
        let what = if kill {
            ingress.sigkill().await.expect("SIGKILL ingress");
            "ingress: SIGKILL, restarted"
        } else {
            let status = ingress
                .sigterm(Duration::from_secs(15))
                .await
                .expect("ingress stops on SIGTERM");
            assert!(
                status.success(),
                "ingress exited with {status} after SIGTERM"
            );
            "ingress: SIGTERM (graceful), restarted"
        };
        ingress.start().await.expect("ingress restarts");
        self.record(what, acks, began);
    }

    async fn inventory_flaky(&mut self, share: f64) {
        let acks = self.after(share).await;
        let began = Instant::now();
        self.inventory
            .update_faults(|f| {
                f.fail_5xx = 0.05;
                f.fail_429 = 0.03;
                f.retry_after_secs = 1;
                f.timeout = 0.02;
                f.timeout_ms = 1500;
                f.fail_after_apply = 0.05;
            })
            .expect("valid faults");
        self.record(
            "inventory: 5% 503, 3% 429, 2% hang 1.5 s, 5% applied-but-503 (until all is sent)",
            acks,
            began,
        );
    }

    async fn inventory_down(&mut self, share: f64) {
        let acks = self.after(share).await;
        let began = Instant::now();
        self.inventory.update_faults(|f| f.down = true).unwrap();
        tokio::time::sleep(OUTAGE).await;
        self.inventory.update_faults(|f| f.down = false).unwrap();
        self.record("inventory: down (503 to all), 2 s", acks, began);
    }

    /// The whole schedule.
    async fn run(&mut self, system: &mut System) {
        self.inventory_flaky(0.05).await;
        self.restart_broker(0.12).await;
        let [w1, w2] = &mut system.workers[..] else {
            unreachable!("two workers")
        };
        self.kill_worker(0.25, w1).await;
        self.restart_ingress(0.38, &mut system.ingress, false).await;
        self.inventory_down(0.50).await;
        self.restart_ingress(0.62, &mut system.ingress, true).await;
        self.kill_worker(0.72, w2).await;
        self.restart_broker(0.82).await;
    }
}

/// Starts the orders at `rate` per second (open loop, as payments happen) and collects
/// what became of each.
async fn send_orders(
    ctx: Arc<SendCtx>,
    plans: Vec<plan::OrderPlan>,
    rate: f64,
) -> Vec<OrderResult> {
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (i, plan) in plans.into_iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        tasks.spawn(ctx.clone().run_order(plan));
    }
    let mut results = Vec::new();
    while let Some(done) = tasks.join_next().await {
        results.push(done.expect("order task"));
    }
    results.sort_by(|a, b| a.plan.id.cmp(&b.plan.id));
    results
}

/// Whether every acknowledged webhook's effect is in `s`.
fn all_applied(results: &[OrderResult], s: &Snapshot) -> bool {
    results.iter().all(|r| {
        (r.plan.rejected || !r.paid_acked() || s.grant(&r.plan.id).is_some())
            && (!r.cancel_acked() || s.revocations.contains_key(&r.plan.id))
    })
}

/// Waits until the system is settled: the work queue and the delay tiers are empty, no
/// worker holds a delivery, and the inventory has not changed for [`QUIET`] with every
/// acknowledged effect applied (or for [`STUCK`] without: nothing is left that could
/// apply it). Returns why it is not `Ok` when effects are missing or it never settled
/// within [`DRAIN_WITHIN`]; the checks then name the orders.
async fn drain(
    broker: &PrivateBroker,
    inventory: &InventoryHandle,
    system: &System,
    results: &[OrderResult],
) -> Result<(), String> {
    let deadline = Instant::now() + DRAIN_WITHIN;
    let queues: Vec<String> = std::iter::once(WORK_QUEUE.to_owned())
        .chain(RETRY_DELAYS.iter().map(|(_, d)| retry_queue_name(*d)))
        .collect();
    let mut quiet_since: Option<(Instant, u64)> = None;
    loop {
        let mut busy = Vec::new();
        for q in &queues {
            match broker.queue_len(q).await {
                Ok(Some(0)) => {}
                other => busy.push(format!("{q}: {other:?}")),
            }
        }
        match system.in_flight().await {
            Some(0.0) => {}
            other => busy.push(format!("in flight in workers: {other:?}")),
        }
        let state = inventory.state();
        let applied = all_applied(results, &state);
        quiet_since = match quiet_since {
            Some((since, v)) if busy.is_empty() && v == state.version => Some((since, v)),
            _ if busy.is_empty() => Some((Instant::now(), state.version)),
            _ => None,
        };
        if let Some((since, _)) = quiet_since {
            if applied && since.elapsed() >= QUIET {
                return Ok(());
            }
            if !applied && since.elapsed() >= STUCK {
                return Err(format!(
                    "settled for {STUCK:?} with acknowledged effects missing"
                ));
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "not settled after {DRAIN_WITHIN:?}: every effect applied: {applied}, busy: {busy:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The whole DLQ, read without taking anything away (`worker dlq list`).
async fn read_dlq(broker: &PrivateBroker) -> Vec<DeadLetter> {
    let timeout = Duration::from_secs(30);
    let conn = DlqConnection::open(&broker.amqp_url(), timeout)
        .await
        .expect("DLQ connection");
    let listing = worker::dlq::list(&conn.channel, timeout, &ListOptions::default())
        .await
        .expect("listing the DLQ");
    conn.close().await;
    listing.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_order_is_applied_exactly_once_through_broker_worker_ingress_and_inventory_faults()
 {
    let cfg = Config::from_env();
    let t0 = Instant::now();
    let logs = LogDir::create().unwrap();
    let broker = PrivateBroker::start().await.expect("private broker node");
    let inventory = DemoInventory::start(
        InventoryConfig::default()
            .with_seed(cfg.seed)
            .with_faults(Faults {
                rejected_skus: [REJECTED_SKU.to_owned()].into(),
                ..Faults::none()
            }),
    )
    .await
    .unwrap();
    let mut system = System::start(&broker, &inventory.url(), &logs).await;
    let setup = t0.elapsed();

    let plans = plan::draw(cfg.orders, cfg.seed, new_run_id());
    let planned: u64 = plans.iter().map(plan::OrderPlan::webhooks).sum();
    let policy = Policy {
        retry: true,
        time_scale: TIME_SCALE,
    };
    let sender = Sender::new(&system.ingress_url, policy, CONCURRENCY, SEND_TIMEOUT).unwrap();
    let ctx = Arc::new(SendCtx::new(sender, CONCURRENCY, SECRET));
    let mut driver = FaultDriver {
        broker: &broker,
        inventory: &inventory,
        acks: ctx.acks.subscribe(),
        planned,
        t0,
        events: Vec::new(),
    };
    let sending = Instant::now();
    let (results, ()) = tokio::join!(
        send_orders(ctx.clone(), plans, cfg.rate),
        driver.run(&mut system)
    );
    let sending = sending.elapsed();

    // The game recovers: whatever is still retrying can now go through.
    let began = Instant::now();
    let acks = *ctx.acks.borrow();
    inventory
        .update_faults(|f| {
            *f = Faults {
                rejected_skus: f.rejected_skus.clone(),
                ..Faults::none()
            }
        })
        .unwrap();
    driver.record("inventory: faults cleared (all sent)", acks, began);
    let events = driver.events;

    let draining = Instant::now();
    let settled = drain(&broker, &inventory, &system, &results).await;
    let drain_time = draining.elapsed();

    let state = inventory.state();
    let dlq = read_dlq(&broker).await;
    let unrouted = broker.queue_len(UNROUTED_QUEUE).await.ok().flatten();
    let dlq_ready = broker.queue_len(DLQ).await.ok().flatten();
    let mut findings = verdict::check(&results, &state, &dlq, unrouted);
    if let Err(why) = settled {
        findings.problems.push(format!("did not settle: {why}"));
    }
    if dlq_ready != Some(dlq.len() as u64) {
        findings.problems.push(format!(
            "DLQ listing read {} messages but the queue holds {dlq_ready:?}",
            dlq.len()
        ));
    }
    for s in std::iter::once(&mut system.ingress).chain(&mut system.workers) {
        if let Some(status) = s.exited() {
            findings
                .problems
                .push(format!("{} exited on its own: {status}", s.name));
        }
    }
    let timings = Timings {
        setup,
        sending,
        drain: drain_time,
        total: t0.elapsed(),
    };
    println!(
        "fault suite summary\n{}",
        verdict::summary(&results, &state, &dlq, &events, timings, cfg.seed)
    );
    for note in &findings.notes {
        println!("note: {note}");
    }
    assert!(
        findings.problems.is_empty(),
        "fault suite found {} problem(s) (seed {}):\n- {}\ninventory: {}\nchild logs:\n{}",
        findings.problems.len(),
        cfg.seed,
        findings.problems.join("\n- "),
        state.summary(),
        system.logs()
    );
}
