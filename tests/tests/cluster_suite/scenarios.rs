//! The cluster's faults, one scenario at a time, each begun once the load has flowed for a
//! while and ended once the cluster is back to full strength (the node restarted and every
//! replica online). Steps are waited on (a leader elected, a grant applied, every ingress
//! ready), never slept through.

use std::time::Duration;

use shared::{order_events, topology::WORK_QUEUE};
use tests::{
    inventory::InventoryHandle,
    rabbit::{Cluster, QueueReplicas},
    suite::{
        procs::Service,
        system::{self, System},
    },
    wait,
};
use tokio::{sync::watch, time::Instant};

/// Longest wait for any one step (an election, a restart, a reconnect) on a loaded 2-core
/// machine; real ones take seconds.
const STEP_WITHIN: Duration = Duration::from_secs(90);

/// Longest freeze: the services must have moved off the frozen node by then (they take
/// seconds), and the node resumes well inside RabbitMQ's 60 s net tick.
const FREEZE_AT_MOST: Duration = Duration::from_secs(30);

/// One scenario as it happened.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub what: String,
    /// Webhooks acknowledged when it began.
    pub after_acks: u64,
    /// When the fault was dealt (the SIGKILL sent; for the rolling restart, when its first
    /// step began).
    pub began: Instant,
    /// When the cluster was back to full strength.
    pub ended: Instant,
    /// What happened, with its time since `began`.
    pub steps: Vec<(String, Duration)>,
}

/// Deals the scenarios in turn.
pub struct Driver<'a> {
    pub cluster: &'a Cluster,
    pub system: &'a System,
    pub inventory: &'a InventoryHandle,
    pub acks: watch::Receiver<u64>,
    /// Webhooks to see acknowledged before each scenario: the load flows between faults.
    pub acks_between: u64,
    pub scenarios: Vec<Scenario>,
}

impl Driver<'_> {
    /// The whole schedule: a silent node, the work queue's leader, the node an ingress is
    /// on, then every node in turn.
    pub async fn run(&mut self) {
        // First, while the processes are still spread over the nodes as their lists put
        // them (the kills move them together).
        self.freeze_a_node_an_ingress_is_on().await;
        self.kill_work_queue_leader().await;
        self.kill_node_of_ingress(0).await;
        self.rolling_restart().await;
    }

    /// SIGKILL the node holding `xsolla.fulfillment`'s leader, then restart it.
    async fn kill_work_queue_leader(&mut self) {
        let acks = self.load_flows().await;
        let leader = self
            .cluster
            .leader_of(WORK_QUEUE)
            .await
            .expect("listing queues")
            .expect("the work queue has a leader");
        let what = format!("SIGKILL node {leader}, the work queue's leader, and restart it");
        self.kill_and_restart(what, acks, leader, None).await;
    }

    /// SIGKILL the node ingress `i` is connected to (as its `amqp_node` metric says), then
    /// restart it.
    async fn kill_node_of_ingress(&mut self, i: usize) {
        let acks = self.load_flows().await;
        let ingress = &self.system.ingresses[i];
        let node = self.node_of(i).await;
        let what = format!(
            "SIGKILL node {node}, the one {} is connected to, and restart it",
            ingress.name
        );
        self.kill_and_restart(what, acks, node, Some(i)).await;
    }

    /// SIGSTOP a node: a silent one, whose connections stay open and whose kernel still
    /// takes bytes, as in a hung VM or a partition. The services must notice without any
    /// connection failing (before the liveness probe an ingress on such a node answered
    /// 503 until its heartbeat gave up, a minute). The node leads neither the work queue
    /// nor the order-event stream, and is one an ingress is on if any is: RabbitMQ 3.10
    /// moves a leader off a silent node only once the cluster drops that node (the 60 s net
    /// tick; 66 s measured), and until then every publish to that queue waits for its
    /// confirm, whichever node it went to, which no client can shorten. Once the services
    /// carry on (the ingresses that were on it on other nodes, grants flowing, every ingress
    /// ready), the node resumes (SIGCONT) and the scenario ends when every replica is online
    /// again.
    async fn freeze_a_node_an_ingress_is_on(&mut self) {
        let acks = self.load_flows().await;
        let mut leaders = Vec::new();
        for queue in [order_events::STREAM, WORK_QUEUE] {
            let leader = self.cluster.leader_of(queue).await.expect("listing queues");
            leaders.push(leader.unwrap_or_else(|| panic!("{queue} has no leader")));
        }
        let mut on = Vec::new();
        for i in 0..self.system.ingresses.len() {
            on.push(self.node_of(i).await);
        }
        let node = on
            .iter()
            .copied()
            .chain(0..self.cluster.len())
            .find(|n| !leaders.contains(n))
            .expect("three nodes, two leaders");
        let services = self.system.ingresses.iter().chain(&self.system.workers);
        let mut followed = Vec::new();
        for service in services {
            if self.node_of_service(service).await == node {
                followed.push(service);
            }
        }
        let names: Vec<&str> = followed.iter().map(|s| s.name.as_str()).collect();
        let what = format!(
            "SIGSTOP node {node} ({} on it; it leads neither the stream nor the work queue), then SIGCONT",
            if names.is_empty() {
                "nothing".to_owned()
            } else {
                names.join(", ")
            }
        );
        let grants_before = self.inventory.inspect(|s| s.grants.len());
        let began = self.cluster.freeze(node).expect("SIGSTOP node");
        let mut steps = Vec::new();
        // Resumed within the net tick (60 s), so the cluster never drops the node: the
        // scenario is about the clients. The services get FREEZE_AT_MOST to carry on.
        let carried_on = tokio::time::timeout(FREEZE_AT_MOST, async {
            for service in &followed {
                let moved = self.service_moved_off(service, node).await;
                steps.push((format!("{} on node {moved}", service.name), began.elapsed()));
            }
            self.inventory
                .wait_for(|s| s.grants.len() > grants_before, STEP_WITHIN)
                .await
                .expect("grants resume");
            steps.push(("a grant applied".into(), began.elapsed()));
            self.every_ingress_ready().await;
            steps.push(("every ingress ready".into(), began.elapsed()));
        })
        .await;
        self.cluster.thaw(node).expect("SIGCONT node");
        assert!(
            carried_on.is_ok(),
            "the services did not carry on within {FREEZE_AT_MOST:?} of the freeze: {steps:?}"
        );
        steps.push((format!("node {node} resumed"), began.elapsed()));
        self.end_when_fully_online(what, acks, began, steps).await;
    }

    /// The node ingress `i` is connected to, as its `amqp_node` metric says.
    async fn node_of(&self, i: usize) -> usize {
        self.node_of_service(&self.system.ingresses[i]).await
    }

    /// The node `service` is connected to, as its `amqp_node` metric says.
    async fn node_of_service(&self, service: &Service) -> usize {
        let addr = connected_node(&system::metrics(service).await.expect("metrics"))
            .expect("the service names its node");
        self.cluster
            .index_of_addr(&addr)
            .expect("a node of the cluster")
    }

    /// Graceful stop and start of each node in turn, each once no quorum queue needs it
    /// for its majority (`rabbitmq-queues check_if_node_is_quorum_critical`), as an
    /// upgrade does it.
    async fn rolling_restart(&mut self) {
        let acks = self.load_flows().await;
        let began = Instant::now();
        let mut steps = Vec::new();
        for node in 0..self.cluster.len() {
            self.cluster
                .wait_not_quorum_critical(node, STEP_WITHIN)
                .await
                .expect("quorum restored before the next node");
            self.cluster.stop(node).await.expect("rabbitmqctl stop");
            steps.push((format!("node {node} stopped"), began.elapsed()));
            self.cluster.restart(node).await.expect("node restarts");
            self.fully_online().await;
            steps.push((
                format!("node {node} restarted, every replica online"),
                began.elapsed(),
            ));
        }
        self.scenarios.push(Scenario {
            what: "rolling restart: stop and start each node in turn".into(),
            after_acks: acks,
            began,
            ended: Instant::now(),
            steps,
        });
    }

    /// Kills `node`, waits for the cluster and the services to carry on without it (a
    /// work-queue leader on another node, a grant applied, ingress `follow` on another
    /// node, every ingress ready), then restarts it and waits until every replica is
    /// online again.
    async fn kill_and_restart(
        &mut self,
        what: String,
        acks: u64,
        node: usize,
        follow: Option<usize>,
    ) {
        let grants_before = self.inventory.inspect(|s| s.grants.len());
        let began = self.cluster.kill(node).await.expect("SIGKILL node");
        let mut steps = Vec::new();
        let elected = self
            .cluster
            .wait_until("a work-queue leader on a live node", STEP_WITHIN, |qs| {
                leader_of(self.cluster, qs, WORK_QUEUE).is_some_and(|l| l != node)
            })
            .await
            .expect("a new leader");
        let on = leader_of(self.cluster, &elected, WORK_QUEUE).unwrap_or(usize::MAX);
        steps.push((format!("work queue leader on node {on}"), began.elapsed()));
        self.inventory
            .wait_for(|s| s.grants.len() > grants_before, STEP_WITHIN)
            .await
            .expect("grants resume");
        steps.push(("a grant applied".into(), began.elapsed()));
        if let Some(i) = follow {
            let moved = self.moved_off(i, node).await;
            let name = &self.system.ingresses[i].name;
            steps.push((format!("{name} on node {moved}"), began.elapsed()));
        }
        self.every_ingress_ready().await;
        steps.push(("every ingress ready".into(), began.elapsed()));
        self.cluster.restart(node).await.expect("node restarts");
        steps.push((format!("node {node} restarted"), began.elapsed()));
        self.end_when_fully_online(what, acks, began, steps).await;
    }

    /// Waits until every replica is online again, then records the scenario.
    async fn end_when_fully_online(
        &mut self,
        what: String,
        acks: u64,
        began: Instant,
        mut steps: Vec<(String, Duration)>,
    ) {
        self.fully_online().await;
        steps.push(("every replica online".into(), began.elapsed()));
        self.scenarios.push(Scenario {
            what,
            after_acks: acks,
            began,
            ended: Instant::now(),
            steps,
        });
    }

    /// Waits until `acks_between` more webhooks are acknowledged; returns the count.
    async fn load_flows(&mut self) -> u64 {
        let want = *self.acks.borrow() + self.acks_between;
        let waited = tokio::time::timeout(STEP_WITHIN, self.acks.wait_for(|n| *n >= want))
            .await
            .map(|r| r.map(|n| *n));
        match waited {
            Ok(reached) => reached.expect("the sender lives as long as the suite"),
            Err(_) => panic!(
                "only {} webhooks acknowledged within {STEP_WITHIN:?} (waiting for {want})",
                *self.acks.borrow()
            ),
        }
    }

    /// Waits until ingress `i` says it is on a node other than `lost`; returns that node.
    async fn moved_off(&self, i: usize, lost: usize) -> usize {
        self.service_moved_off(&self.system.ingresses[i], lost)
            .await
    }

    /// Waits until `service` says it is on a node other than `lost`; returns that node.
    async fn service_moved_off(&self, service: &Service, lost: usize) -> usize {
        let deadline = Instant::now() + STEP_WITHIN;
        loop {
            let on = system::metrics(service)
                .await
                .and_then(|m| connected_node(&m))
                .and_then(|addr| self.cluster.index_of_addr(&addr));
            match on {
                Some(n) if n != lost => return n,
                _ if Instant::now() >= deadline => {
                    panic!("{} still not on another node than {lost}", service.name)
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    async fn every_ingress_ready(&self) {
        for ingress in &self.system.ingresses {
            let url = format!("http://{}/readyz", ingress.ops);
            wait::until(STEP_WITHIN, &format!("{} ready", ingress.name), || async {
                matches!(reqwest::get(&url).await, Ok(r) if r.status() == 200)
            })
            .await
            .expect("the ingress gets ready again");
        }
    }

    async fn fully_online(&self) {
        self.cluster
            .wait_fully_online(STEP_WITHIN)
            .await
            .expect("every replica back online");
    }
}

/// The node index of `queue`'s leader in a listing.
fn leader_of(cluster: &Cluster, queues: &[QueueReplicas], queue: &str) -> Option<usize> {
    let q = queues.iter().find(|q| q.name == queue)?;
    cluster.index_of_node(q.leader.as_deref()?)
}

/// The `host:port` a process's `amqp_node` metric says it is on.
pub fn connected_node(metrics: &str) -> Option<String> {
    metrics.lines().find_map(|l| {
        l.strip_prefix("amqp_node{node=\"")?
            .strip_suffix("\"} 1")
            .map(str::to_owned)
    })
}
