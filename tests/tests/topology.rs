//! The shared topology's replicas (`shared::topology::REPLICAS`): queues an older version
//! declared without a member count are kept as they are, and on a real cluster the
//! declaration works on the first node alone, on nodes that joined later and on a node that
//! replaced a lost one.

use std::time::Duration;

use lapin::{
    BasicProperties,
    options::{BasicPublishOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString},
};
use shared::{
    amqp::Session,
    order_events,
    topology::{
        DLQ, DLQ_DELIVERY_LIMIT, EXCHANGE, QUORUM_SIZE_ARG, REPLICAS, STREAM_SIZE_ARG, Topology,
        UNROUTED_QUEUE, WORK_QUEUE, WORK_QUEUE_DELIVERY_LIMIT, retry_queue_name,
    },
};
use tests::{rabbit::TestVhost, worker_harness};

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Publishes an `order_paid` to the webhook exchange as the ingress does (mandatory,
/// confirmed), so it lands in the work queue and in the stream.
async fn publish_order(session: &Session, order_id: u64) {
    let confirm = session
        .channel()
        .basic_publish(
            EXCHANGE.into(),
            "order_paid".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &worker_harness::order_paid(order_id),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack(), "{confirm:?}");
    assert!(
        confirm.take_message().is_none(),
        "returned: no queue is bound"
    );
}

/// The default topology's queues: the five quorum queues' names and the stream.
fn our_queues() -> Vec<String> {
    let mut queues: Vec<String> = [UNROUTED_QUEUE, WORK_QUEUE, DLQ, order_events::STREAM]
        .map(str::to_owned)
        .to_vec();
    queues.extend(
        Topology::default()
            .retry_delays
            .iter()
            .map(|d| retry_queue_name(*d)),
    );
    queues
}

#[tokio::test]
async fn queues_an_older_version_declared_without_a_member_count_are_kept_as_they_are() {
    let vhost = TestVhost::create().await.unwrap();
    // What the previous version declared: these three, with every argument but the member
    // count (RabbitMQ compares all of them on a redeclaration).
    let connection = vhost.connect().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let table = |args: &[(&str, AMQPValue)]| {
        let mut t = FieldTable::default();
        for (k, v) in args {
            t.insert((*k).into(), v.clone());
        }
        t
    };
    let old = [
        (
            DLQ,
            table(&[
                ("x-queue-type", long("quorum")),
                (
                    "x-delivery-limit",
                    AMQPValue::LongLongInt(DLQ_DELIVERY_LIMIT),
                ),
            ]),
        ),
        (
            WORK_QUEUE,
            table(&[
                ("x-queue-type", long("quorum")),
                ("x-dead-letter-exchange", long("")),
                ("x-dead-letter-routing-key", long(DLQ)),
                ("x-dead-letter-strategy", long("at-least-once")),
                ("x-overflow", long("reject-publish")),
                (
                    "x-delivery-limit",
                    AMQPValue::LongLongInt(WORK_QUEUE_DELIVERY_LIMIT),
                ),
            ]),
        ),
        (
            order_events::STREAM,
            table(&[
                ("x-queue-type", long("stream")),
                (
                    "x-max-age",
                    long(&order_events::max_age(order_events::DEFAULT_RETENTION)),
                ),
            ]),
        ),
    ];
    for (queue, args) in old {
        channel
            .queue_declare(queue.into(), durable, args)
            .await
            .unwrap();
    }
    let _ = connection.close(200, "done".into()).await;

    // Three refusals, each on a fresh channel of the one connection the session opens.
    let session = Session::open(&vhost.amqp_url(), "older queues", &Topology::default())
        .await
        .expect("the topology is declared over the older queues");
    publish_order(&session, 7001).await;
    vhost
        .wait_queue_len(WORK_QUEUE, 1, Duration::from_secs(10))
        .await
        .unwrap();
    session.close().await;
    // The process remembers: the next session declares at once.
    Session::open(&vhost.amqp_url(), "again", &Topology::default())
        .await
        .unwrap()
        .close()
        .await;

    let queues = vhost.queue_arguments().await.unwrap();
    for queue in our_queues() {
        let args = &queues[&queue];
        let size = args
            .get(QUORUM_SIZE_ARG)
            .or_else(|| args.get(STREAM_SIZE_ARG))
            .and_then(serde_json::Value::as_i64);
        let older = [DLQ, WORK_QUEUE, order_events::STREAM].contains(&queue.as_str());
        let want = (!older).then_some(REPLICAS);
        assert_eq!(size, want, "{queue}: {args:?}");
    }
}

/// Tests that boot RabbitMQ nodes of their own (the `private-broker` nextest group).
mod private_broker {
    use super::*;
    use tests::rabbit::{Cluster, QueueReplicas, wait_queue_len_at};

    const SETTLE: Duration = Duration::from_secs(60);

    /// The members of every one of our queues, by node index, sorted.
    fn members(cluster: &Cluster, queues: &[QueueReplicas]) -> Vec<(String, Vec<usize>)> {
        let ours = our_queues();
        let mut out: Vec<(String, Vec<usize>)> = queues
            .iter()
            .filter(|q| ours.contains(&q.name))
            .map(|q| {
                let mut nodes: Vec<usize> = q
                    .members
                    .iter()
                    .filter_map(|m| cluster.index_of_node(m))
                    .collect();
                nodes.sort_unstable();
                (q.name.clone(), nodes)
            })
            .collect();
        out.sort();
        assert_eq!(out.len(), ours.len(), "every queue is listed: {queues:?}");
        out
    }

    fn all_on(nodes: &[usize], listing: &[(String, Vec<usize>)]) -> bool {
        listing.iter().all(|(_, m)| m == nodes)
    }

    /// Opens a session (the topology declared) on the one node `url` names.
    async fn declare_on(url: &str, name: &str) -> Session {
        Session::open(url, name, &Topology::default())
            .await
            .unwrap_or_else(|e| panic!("{name}: the topology is declared on {url}: {e}"))
    }

    /// Starts with two nodes, not one: on RabbitMQ 3.10 a single node that already holds a
    /// stream cannot grow into a cluster (the first stream operation on a joined node starts
    /// a second stream coordinator, the two collide, and the stream is lost to the new
    /// one: seen here, `leader saw append_entries_rpc for same term`; coordinator
    /// membership changes were reworked in 3.13, rabbitmq-server#10331).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_topology_is_declared_on_a_cluster_on_a_node_that_joined_later_and_on_a_replaced_node()
     {
        let mut cluster = Cluster::start(2).await.unwrap();
        let session = declare_on(&cluster.amqp_urls()[0], "first node").await;
        publish_order(&session, 1).await;
        session.close().await;
        let listing = members(&cluster, &cluster.queues().await.unwrap());
        assert!(all_on(&[0, 1], &listing), "{listing:?}");

        // A third node joins; a process on it declares the same topology.
        cluster.add_node().await.unwrap();
        declare_on(&cluster.amqp_urls()[2], "joined later")
            .await
            .close()
            .await;
        // Publishing through it into the stream waits for the stream coordinator to take
        // the node in (see `Cluster::wait_stream_coordinator`).
        cluster
            .wait_stream_coordinator(2, Duration::from_secs(90))
            .await
            .unwrap();
        let session = declare_on(&cluster.amqp_urls()[2], "joined later").await;
        publish_order(&session, 2).await;
        session.close().await;
        // RabbitMQ placed the members at declaration and does not move them...
        let listing = members(&cluster, &cluster.queues().await.unwrap());
        assert!(all_on(&[0, 1], &listing), "{listing:?}");
        // ...until an operator grows the quorum queues and adds a stream replica.
        cluster.grow(2).await.unwrap();
        cluster
            .add_stream_replica(order_events::STREAM, 2)
            .await
            .unwrap();
        cluster
            .wait_until("every queue on three nodes", SETTLE, |qs| {
                all_on(&[0, 1, 2], &members(&cluster, qs))
                    && qs.iter().all(QueueReplicas::fully_online)
            })
            .await
            .unwrap();

        // On the full cluster a new vhost's topology gets three members at once.
        cluster.ctl(&["add_vhost", "fresh"]).await.unwrap();
        cluster
            .ctl(&["set_permissions", "-p", "fresh", "guest", ".*", ".*", ".*"])
            .await
            .unwrap();
        let fresh_urls = cluster.amqp_url().replace("/%2F", "/fresh");
        declare_on(&fresh_urls, "fresh vhost").await.close().await;
        let listing = members(&cluster, &cluster.queues_in("fresh").await.unwrap());
        assert!(all_on(&[0, 1, 2], &listing), "{listing:?}");
        for (queue, args) in cluster.queue_arguments("fresh").await.unwrap() {
            let size = args
                .get(QUORUM_SIZE_ARG)
                .or_else(|| args.get(STREAM_SIZE_ARG));
            assert_eq!(
                size,
                Some(&serde_json::Value::from(REPLICAS)),
                "{queue}: {args:?}"
            );
        }

        // Node 1 is lost with its disk and a new one of the same name takes its place.
        cluster.replace(1).await.unwrap();
        declare_on(&cluster.amqp_urls()[1], "replaced node")
            .await
            .close()
            .await;
        // As for the node that joined: stream publishes through it once the stream
        // coordinator has taken it in again (see `Cluster::replace`).
        cluster
            .wait_stream_coordinator(1, Duration::from_secs(90))
            .await
            .unwrap();
        let session = declare_on(&cluster.amqp_urls()[1], "replaced node").await;
        publish_order(&session, 3).await;
        session.close().await;
        // forget_cluster_node took it out of the quorum queues; grow puts it back (the
        // stream's replica on it is rebuilt by RabbitMQ).
        cluster.grow(1).await.unwrap();
        cluster
            .wait_until("every queue on three nodes again", SETTLE, |qs| {
                all_on(&[0, 1, 2], &members(&cluster, qs))
                    && qs.iter().all(QueueReplicas::fully_online)
            })
            .await
            .unwrap();
        // Nothing confirmed was lost on the way.
        wait_queue_len_at(&cluster.amqp_urls()[1], WORK_QUEUE, 3, SETTLE)
            .await
            .unwrap();
    }
}
