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

use std::{sync::Arc, time::Duration};

use tests::{
    inventory::{DemoInventory, Faults, InventoryHandle},
    rabbit::PrivateBroker,
    sim::{Policy, Sender, new_run_id},
    suite::{
        plan::{self, SendCtx},
        procs::{LogDir, Service},
        settle::{self, PATIENCE},
        system::{self, Setup, System},
        verdict::{self, FaultEvent, Timings},
    },
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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
struct Config {
    orders: usize,
    rate: f64,
    seed: u64,
}

impl Config {
    fn from_env() -> Config {
        use tests::suite::env_var as var;
        Config {
            orders: var("FAULT_SUITE_ORDERS").unwrap_or(2000),
            rate: var("FAULT_SUITE_RATE").unwrap_or(50.0),
            seed: var("FAULT_SUITE_SEED").unwrap_or_else(rand::random),
        }
    }
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
        let holding = system::in_flight(worker).await.unwrap_or(f64::NAN);
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
        let [ingress] = &mut system.ingresses[..] else {
            unreachable!("one ingress")
        };
        self.restart_ingress(0.38, ingress, false).await;
        self.inventory_down(0.50).await;
        self.restart_ingress(0.62, ingress, true).await;
        self.kill_worker(0.72, w2).await;
        self.restart_broker(0.82).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_order_is_applied_exactly_once_through_broker_worker_ingress_and_inventory_faults()
 {
    let cfg = Config::from_env();
    let t0 = Instant::now();
    let logs = LogDir::create("fault-suite").unwrap();
    let broker = PrivateBroker::start().await.expect("private broker node");
    let inventory = DemoInventory::start(plan::inventory_config(cfg.seed))
        .await
        .unwrap();
    let services = Setup {
        amqp_url: broker.amqp_url(),
        inventory_url: inventory.url(),
        secret: SECRET,
        retry_delays: RETRY_DELAYS,
        ingresses: 1,
        workers: 2,
        spread_nodes: false,
    };
    let mut system = System::start(&services, &logs)
        .await
        .expect("services start");
    let setup = t0.elapsed();

    let plans = plan::draw(cfg.orders, cfg.seed, new_run_id());
    let planned: u64 = plans.iter().map(plan::OrderPlan::webhooks).sum();
    let policy = Policy {
        retry: true,
        time_scale: TIME_SCALE,
    };
    let sender = Sender::new(&system.webhook_url(0), policy, CONCURRENCY, SEND_TIMEOUT).unwrap();
    let ctx = Arc::new(SendCtx::new(vec![sender], CONCURRENCY, SECRET));
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
        plan::send_orders(ctx.clone(), plans, cfg.rate, CancellationToken::new()),
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
    let queues = settle::busy_queues(RETRY_DELAYS);
    let settled = settle::wait_settled(
        &broker.amqp_url(),
        &queues,
        &inventory,
        &system,
        &results,
        PATIENCE,
    )
    .await;
    let drain_time = draining.elapsed();

    let (state, dlq, findings) = settle::conclude(
        &broker.amqp_url(),
        &results,
        &inventory,
        &mut system,
        settled,
    )
    .await;
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
