//! Cluster fault suite: two real `ingress` and three real `worker` processes on a three-node
//! RabbitMQ cluster of the suite's own (`tests::rabbit::Cluster`), each process given the
//! node list in another order so they spread over the nodes, fed the fault suite's orders
//! (paid, canceled in and out of order, duplicated, a few with a SKU the game rejects) with
//! Xsolla's retries on a compressed clock, while in turn: the node holding the work queue's
//! leader is SIGKILLed and restarted, the node the first ingress is connected to is
//! SIGKILLed and restarted, a node an ingress is on (leading neither the work queue nor the
//! order-event stream) is frozen (SIGSTOP: a silent node, its connections open) until the services moved off
//! it, then resumed, and every node is restarted in turn (a rolling restart). Then
//! the fault suite's verdict (`tests::suite::verdict`): every acknowledged webhook applied
//! exactly once, every acknowledged cancel revoked after its grant, nothing stuck, nothing
//! in the DLQ but the rejected SKUs. The summary reports, per scenario, how long grants
//! stopped and how long webhooks got 503s.
//!
//! The load runs until the last scenario is over. Tuning (environment): `CLUSTER_SUITE_RATE`
//! (orders started per second, default 30), `CLUSTER_SUITE_SEED` (the order mix).

#[path = "cluster_suite/report.rs"]
mod report;
#[path = "cluster_suite/scenarios.rs"]
mod scenarios;

use std::{sync::Arc, time::Duration};

use scenarios::Driver;
use tests::{
    inventory::DemoInventory,
    rabbit::{Cluster, QueueReplicas},
    sim::{Policy, Sender, new_run_id},
    suite::{
        outage,
        plan::{self, SendCtx},
        procs::LogDir,
        settle::{self, PATIENCE},
        system::{Setup, System},
        verdict::{self, Timings},
    },
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "cluster-suite-secret";
/// Worker delay tiers, as in the fault suite.
const RETRY_DELAYS: &[(&str, Duration)] = &[
    ("200ms", Duration::from_millis(200)),
    ("1s", Duration::from_secs(1)),
];
/// Xsolla's schedule × 0.001: its 5-minute waits become 0.3 s.
const TIME_SCALE: f64 = 0.001;
/// Requests the sim has in flight at most, over both ingresses.
const CONCURRENCY: usize = 32;
/// One HTTP send past this counts as no answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Orders drawn; the load stops long before (when the scenarios are over).
const MAX_ORDERS: usize = 50_000;
/// Webhooks acknowledged between two scenarios: the load flows normally in between.
const ACKS_BETWEEN: u64 = 300;
struct Config {
    rate: f64,
    seed: u64,
}

impl Config {
    fn from_env() -> Config {
        use tests::suite::env_var as var;
        Config {
            rate: var("CLUSTER_SUITE_RATE").unwrap_or(30.0),
            seed: var("CLUSTER_SUITE_SEED").unwrap_or_else(rand::random),
        }
    }
}

/// Every queue has all its members online and as many as the cluster has nodes.
fn replicated_on_all(cluster: &Cluster, queues: &[QueueReplicas]) -> bool {
    !queues.is_empty()
        && queues
            .iter()
            .all(|q| q.fully_online() && q.members.len() == cluster.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_any_one_of_three_nodes_loses_no_acknowledged_webhook_and_grants_each_order_once() {
    let cfg = Config::from_env();
    let t0 = Instant::now();
    let logs = LogDir::create("cluster-suite").unwrap();
    let cluster = Cluster::start(3).await.expect("a three-node cluster");
    let inventory = DemoInventory::start(plan::inventory_config(cfg.seed))
        .await
        .unwrap();
    let services = Setup {
        amqp_url: cluster.amqp_url(),
        inventory_url: inventory.url(),
        secret: SECRET,
        retry_delays: RETRY_DELAYS,
        ingresses: 2,
        workers: 3,
        spread_nodes: true,
    };
    let mut system = System::start(&services, &logs)
        .await
        .expect("services start");
    cluster
        .wait_until(
            "every queue on three nodes",
            Duration::from_secs(60),
            |qs| replicated_on_all(&cluster, qs),
        )
        .await
        .expect("the topology is replicated");
    let setup = t0.elapsed();

    let policy = Policy {
        retry: true,
        time_scale: TIME_SCALE,
    };
    let senders = (0..services.ingresses)
        .map(|i| Sender::new(&system.webhook_url(i), policy, CONCURRENCY, SEND_TIMEOUT).unwrap())
        .collect();
    let ctx = Arc::new(SendCtx::new(senders, CONCURRENCY, SECRET));
    let plans = plan::draw(MAX_ORDERS, cfg.seed, new_run_id());
    let stop_sending = CancellationToken::new();
    let stop_recording = CancellationToken::new();
    let node_urls = cluster.amqp_urls();

    let flow = async {
        let mut driver = Driver {
            cluster: &cluster,
            system: &system,
            inventory: &inventory,
            acks: ctx.acks.subscribe(),
            acks_between: ACKS_BETWEEN,
            scenarios: Vec::new(),
        };
        let sending = Instant::now();
        let (results, ()) = tokio::join!(
            plan::send_orders(ctx.clone(), plans, cfg.rate, stop_sending.clone()),
            async {
                driver.run().await;
                stop_sending.cancel();
            }
        );
        let sent = Instant::now();
        let queues = settle::busy_queues(RETRY_DELAYS);
        let settled = settle::wait_settled(
            &node_urls[0],
            &queues,
            &inventory,
            &system,
            &results,
            PATIENCE,
        )
        .await;
        stop_recording.cancel();
        let times = (sent - sending, sent.elapsed());
        (results, driver.scenarios, settled, sent, times)
    };
    let ((results, scenarios, settled, sent, (sending, drain)), grants) = tokio::join!(
        flow,
        outage::record_grants(&inventory, stop_recording.clone())
    );

    let (state, dlq, mut findings) =
        settle::conclude(&node_urls[0], &results, &inventory, &mut system, settled).await;
    let after = cluster.queues().await;
    if !after
        .as_deref()
        .is_ok_and(|qs| replicated_on_all(&cluster, qs))
    {
        findings.problems.push(format!(
            "the queues are not all on three nodes at the end: {after:?}"
        ));
    }
    let answers = ctx.answers();
    let costs = report::costs(&scenarios, &grants, &answers, sent);
    let timings = Timings {
        setup,
        sending,
        drain,
        total: t0.elapsed(),
    };
    let faults = report::fault_events(&scenarios, t0);
    let names: Vec<String> = system.ingresses.iter().map(|s| s.name.clone()).collect();
    println!(
        "cluster suite summary\n{}  scenarios (times since the fault):\n{}",
        verdict::summary(&results, &state, &dlq, &faults, timings, cfg.seed),
        report::table(&scenarios, &costs, &names)
    );
    for note in &findings.notes {
        println!("note: {note}");
    }
    assert!(
        findings.problems.is_empty(),
        "cluster suite found {} problem(s) (seed {}):\n- {}\ninventory: {}\nchild logs:\n{}\nbroker logs: {}",
        findings.problems.len(),
        cfg.seed,
        findings.problems.join("\n- "),
        state.summary(),
        system.logs(),
        cluster
            .nodes()
            .iter()
            .map(|n| n.dir().join("log").display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
}
