//! `worker dlq` against the real RabbitMQ, one vhost per test: listing is non-destructive
//! and stable, `show` gives the stored body byte for byte, `replay` moves exactly what was
//! asked (attempts reset, marked as replayed) and survives a cut connection, dry runs and
//! purges without `--yes` change nothing, and the exit codes hold. The last tests run the
//! whole loop with the worker and the demo inventory.
//!
//! Needs RabbitMQ on 127.0.0.1:5672 (guest/guest), `rabbitmqctl`, and the binaries built
//! (`cargo build --workspace --bins`).

use std::{collections::BTreeSet, time::Duration};

use lapin::{
    options::{BasicGetOptions, BasicNackOptions},
    types::FieldTable,
};
use serde_json::Value;
use shared::{
    envelope::{self, DeadReason, HeadersExt, header},
    topology::{DLQ, Topology, WORK_QUEUE, WORK_QUEUE_DELIVERY_LIMIT},
    webhook,
};
use tests::{
    fixtures,
    inventory::{DemoInventory, InventoryConfig},
    rabbit::{TcpProxy, TestVhost},
    wait,
    worker_harness::{
        Broker, RunningWorker, TakenMessage, order_canceled, order_paid, test_args, worker_binary,
    },
};
use worker::dlq::{
    self, DlqConnection, DlqError, ListOptions, ParkReason, PurgeOptions, ReplayOptions, Selection,
    exit,
};

const TIMEOUT: Duration = Duration::from_secs(10);
const DEADLINE: Duration = Duration::from_secs(30);

/// A vhost with the topology declared and a publisher on it.
struct Env {
    vhost: TestVhost,
    broker: Broker,
}

impl Env {
    async fn new() -> Env {
        let vhost = TestVhost::create().await.expect("test vhost");
        let broker = Broker::connect(&vhost.amqp_url(), &Topology::default())
            .await
            .expect("broker session");
        Env { vhost, broker }
    }

    fn url(&self) -> String {
        self.vhost.amqp_url()
    }

    async fn len(&self, queue: &str) -> u32 {
        self.broker.queue_len(queue).await.expect("queue length")
    }

    /// Parks `body` in the DLQ exactly as the worker does; returns its `x-dlq-id`.
    async fn park(&self, body: &[u8], reason: &str, status: Option<i64>, error: &str) -> String {
        let (_, summary) = webhook::parse(body).expect("fixture is a webhook");
        let kind = summary.notification_type.as_str();
        let id = uuid::Uuid::new_v4().to_string();
        let mut h = FieldTable::default();
        h.set_str(header::NOTIFICATION_TYPE, kind)
            .set_str(header::ROUTING_KEY, kind)
            .set_str(
                header::SIGNATURE,
                &fixtures::authorization(body, "test-secret"),
            )
            .set_str(header::RECEIVED_AT, &envelope::now_rfc3339())
            .set_str(header::TRACEPARENT, &envelope::new_traceparent())
            .set_int(header::ATTEMPTS, 3)
            .set_str(header::DEAD_REASON, reason)
            .set_str(header::LAST_ERROR, error)
            .set_str(header::DEAD_LETTERED_AT, &envelope::now_rfc3339())
            .set_str(header::DLQ_ID, &id);
        if let Some(status) = status {
            h.set_int(header::LAST_STATUS, status);
        }
        let properties = envelope::properties(&summary.dedup_id, h);
        self.broker
            .publish("", DLQ, body, properties)
            .await
            .expect("park");
        id
    }

    /// Parks `n` `order_paid` webhooks for orders `first..first+n`, rejected with 422.
    async fn park_orders(&self, first: u64, n: u64) -> Vec<String> {
        let mut ids = Vec::new();
        for order in first..first + n {
            ids.push(
                self.park(&order_paid(order), "permanent", Some(422), "unknown_sku")
                    .await,
            );
        }
        ids
    }

    async fn list(&self) -> Vec<dlq::DeadLetter> {
        let conn = self.open().await;
        let listing = dlq::list(&conn.channel, TIMEOUT, &ListOptions::default())
            .await
            .expect("list");
        conn.close().await;
        listing.messages
    }

    async fn list_ids(&self) -> Vec<String> {
        self.list().await.into_iter().map(|m| m.id).collect()
    }

    async fn open(&self) -> DlqConnection {
        DlqConnection::open(&self.url(), TIMEOUT)
            .await
            .expect("dlq connection")
    }

    /// Takes (and acks) everything in the work queue.
    async fn take_work(&self) -> Vec<TakenMessage> {
        self.broker
            .take_all(WORK_QUEUE)
            .await
            .expect("take work queue")
    }
}

/// What the `worker` binary did.
struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", self.text()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `worker dlq <args…>` against `url`, with a clean environment.
async fn cli(url: &str, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(worker_binary().expect("worker binary"))
        .arg("dlq")
        .args(args)
        .args(["--amqp-url", url, "--timeout", "10s"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .await
        .expect("run worker dlq");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ids_of(doc: &Value, field: &str) -> Vec<String> {
    doc[field]
        .as_array()
        .unwrap_or_else(|| panic!("no array {field} in {doc}"))
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

fn order_of(m: &TakenMessage) -> String {
    webhook::parse(&m.body)
        .expect("webhook")
        .1
        .order_id
        .expect("order id")
}

/// A replayed message looks fresh: same body and message id, attempts 0, marked, and none
/// of the dead-letter headers.
fn assert_replayed(m: &TakenMessage) {
    assert_eq!(m.int_header(header::ATTEMPTS), Some(0));
    let replayed_at = m.header(header::REPLAYED_AT).expect("x-replayed-at");
    assert!(
        envelope::parse_time(&replayed_at).is_some(),
        "{replayed_at}"
    );
    for gone in dlq::message::dead_letter_headers() {
        // The work queue (quorum) sets its own delivery count: 0, not the DLQ's.
        if gone == "x-delivery-count" {
            assert_eq!(
                m.int_header(gone),
                Some(0),
                "the DLQ's delivery count came along"
            );
        } else {
            assert!(m.header(gone).is_none(), "{gone} survived the replay");
        }
    }
    assert!(m.header(header::NOTIFICATION_TYPE).is_some());
    assert!(
        m.header(header::SIGNATURE).is_some(),
        "the signature travels on"
    );
    let (_, summary) = webhook::parse(&m.body).expect("body unchanged");
    assert_eq!(
        m.properties.message_id().as_ref().map(|s| s.as_str()),
        Some(summary.dedup_id.as_str())
    );
    assert_eq!(m.properties.delivery_mode(), &Some(2));
}

#[tokio::test]
async fn list_is_non_destructive_and_stable() {
    let env = Env::new().await;
    let mut parked = env.park_orders(100, 4).await;
    parked.push(
        env.park(
            &order_canceled(200),
            "retry_budget_exhausted",
            Some(503),
            "maintenance",
        )
        .await,
    );
    parked.push(
        env.park(&order_paid(104), "unparsable", None, "connection refused")
            .await,
    );

    let first = env.list().await;
    assert_eq!(
        first.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        parked,
        "queue order"
    );
    assert_eq!(env.len(DLQ).await, 6, "nothing taken away");
    assert_eq!(env.list_ids().await, parked, "same messages, same order");

    let m = &first[4];
    assert_eq!(m.notification_type.as_deref(), Some("order_canceled"));
    assert_eq!(m.order_id.as_deref(), Some("200"));
    assert_eq!(m.user_id.as_deref(), Some("user-200"));
    assert_eq!((m.attempts, m.last_status), (Some(3), Some(503)));
    assert_eq!(
        m.reason,
        Some(ParkReason::Worker(DeadReason::RetryBudgetExhausted))
    );

    // A partial listing still reads (and returns) the whole queue, so the order holds.
    let run = cli(&env.url(), &["list", "--limit", "2", "--json"]).await;
    assert_eq!(run.code, exit::OK as i32, "{}", run.stderr);
    let doc = run.json();
    assert_eq!(doc["count"], 6);
    assert_eq!(doc["matched"], 6);
    assert_eq!(ids_of(&doc, "messages"), parked[..2]);
    assert_eq!(env.list_ids().await, parked);

    let run = cli(&env.url(), &["list", "--json"]).await;
    let again = cli(&env.url(), &["list", "--json"]).await;
    assert_eq!(ids_of(&run.json(), "messages"), parked);
    assert_eq!(ids_of(&again.json(), "messages"), parked);
    let entry = &run.json()["messages"][0];
    for field in [
        "id",
        "id_derived",
        "message_id",
        "notification_type",
        "routing_key",
        "order_id",
        "user_id",
        "attempts",
        "reason",
        "last_status",
        "last_error",
        "dead_lettered_at",
        "delivery_count",
    ] {
        assert!(
            entry.get(field).is_some(),
            "list --json lacks {field}: {entry}"
        );
    }
    assert_eq!(entry["order_id"], "100");
    assert_eq!(entry["last_status"], 422);
    assert_eq!(entry["reason"], "permanent");

    let run = cli(&env.url(), &["list", "--type", "order_canceled", "--json"]).await;
    assert_eq!(ids_of(&run.json(), "messages"), [parked[4].clone()]);
    assert_eq!(run.json()["count"], 6);

    let run = cli(&env.url(), &["list"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = run.text();
    assert!(text.lines().next().unwrap().starts_with("ID"), "{text}");
    assert!(
        text.contains(&parked[0]) && text.contains("HTTP 422: unknown_sku"),
        "{text}"
    );
    assert!(
        text.contains("6 shown of 6 matching; 6 messages in xsolla.fulfillment.dlq"),
        "{text}"
    );
    assert_eq!(env.len(DLQ).await, 6);
    assert_eq!(env.list_ids().await, parked);
}

#[tokio::test]
async fn show_prints_the_raw_body_byte_for_byte() {
    let env = Env::new().await;
    // The fixture file as Xsolla formats it: indentation and key order must survive.
    let raw = fixtures::load("order_paid_separate");
    let id = env.park(&raw, "permanent", Some(422), "unknown_sku").await;
    env.park_orders(300, 1).await;

    let run = cli(&env.url(), &["show", &id, "--json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = run.json();
    assert_eq!(doc["body_raw"].as_str().unwrap().as_bytes(), raw.as_slice());
    assert_eq!(doc["body"], serde_json::from_slice::<Value>(&raw).unwrap());
    assert_eq!(doc["id"], id.as_str());
    assert_eq!(doc["copies"], 1);
    assert_eq!(doc["headers"][header::LAST_STATUS], 422);
    assert_eq!(doc["headers"][header::DLQ_ID], id.as_str());
    assert_eq!(doc["properties"]["delivery_mode"], 2);

    let run = cli(&env.url(), &["show", &id, "--raw"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, raw, "--raw is the stored body, byte for byte");

    let run = cli(&env.url(), &["show", &id]).await;
    let text = run.text();
    assert!(
        text.contains(&format!("{}: permanent", header::DEAD_REASON)),
        "{text}"
    );
    assert!(
        text.contains("\"notification_type\": \"order_paid\""),
        "{text}"
    );
    assert_eq!(env.len(DLQ).await, 2, "show takes nothing away");
}

#[tokio::test]
async fn replay_of_one_id_moves_exactly_that_message() {
    let env = Env::new().await;
    let ids = env.park_orders(400, 3).await;

    let run = cli(&env.url(), &["replay", &ids[1]]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.text().contains(&format!("replayed {}", ids[1])),
        "{}",
        run.text()
    );

    assert_eq!(
        env.list_ids().await,
        [ids[0].clone(), ids[2].clone()],
        "the others stay, in order"
    );
    let work = env.take_work().await;
    assert_eq!(work.len(), 1);
    assert_eq!(order_of(&work[0]), "401");
    assert_eq!(work[0].body, order_paid(401), "body unchanged");
    assert_replayed(&work[0]);
}

#[tokio::test]
async fn replay_by_type_and_of_all_moves_exactly_those() {
    let env = Env::new().await;
    let paid = env.park_orders(500, 2).await;
    let canceled = [
        env.park(&order_canceled(510), "permanent", Some(400), "bad request")
            .await,
        env.park(&order_canceled(511), "permanent", Some(400), "bad request")
            .await,
    ];

    let conn = env.open().await;
    let options = ReplayOptions {
        selection: Selection::All {
            notification_type: Some("order_canceled".into()),
        },
        dry_run: false,
        rate: None,
        timeout: TIMEOUT,
    };
    let mut heard = Vec::new();
    let report = dlq::replay(&conn.channel, &options, |m| heard.push(m.id.clone()))
        .await
        .unwrap();
    conn.close().await;
    assert_eq!(heard, canceled);
    assert_eq!(report.replayed.len(), 2);
    assert_eq!(report.remaining, 2);
    assert_eq!(env.list_ids().await, paid);
    let work = env.take_work().await;
    assert_eq!(
        work.iter().map(order_of).collect::<Vec<_>>(),
        ["510", "511"]
    );
    work.iter().for_each(assert_replayed);

    let run = cli(&env.url(), &["replay", "--all", "--rate", "50", "--json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = run.json();
    assert_eq!(ids_of(&doc, "replayed"), paid);
    assert_eq!(doc["dry_run"], false);
    assert_eq!(doc["remaining"], 0);
    assert_eq!(env.len(DLQ).await, 0);
    let work = env.take_work().await;
    assert_eq!(
        work.iter().map(order_of).collect::<Vec<_>>(),
        ["500", "501"]
    );
    work.iter().for_each(assert_replayed);
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let env = Env::new().await;
    let ids = env.park_orders(600, 3).await;

    let run = cli(&env.url(), &["replay", "--all", "--dry-run", "--json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = run.json();
    assert_eq!(doc["dry_run"], true);
    assert_eq!(ids_of(&doc, "replayed"), ids);

    let run = cli(&env.url(), &["replay", &ids[2], "--dry-run"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.text().contains(&format!("would replay {}", ids[2])),
        "{}",
        run.text()
    );
    assert!(run.text().contains("nothing was moved"), "{}", run.text());

    assert_eq!(env.list_ids().await, ids);
    assert_eq!(env.len(WORK_QUEUE).await, 0);
}

#[tokio::test]
async fn purge_needs_yes_and_then_removes_exactly_those() {
    let env = Env::new().await;
    let ids = env.park_orders(700, 3).await;

    let run = cli(&env.url(), &["purge", &ids[0]]).await;
    assert_eq!(run.code, exit::USAGE as i32);
    assert!(run.stderr.contains("--yes"), "{}", run.stderr);
    let run = cli(&env.url(), &["purge", "--all"]).await;
    assert_eq!(run.code, exit::USAGE as i32);
    assert_eq!(env.list_ids().await, ids, "refused purges change nothing");

    let run = cli(&env.url(), &["purge", &ids[0], &ids[2], "--yes"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.text().contains(&format!("purged {}", ids[0])),
        "{}",
        run.text()
    );
    assert!(
        run.text().contains(&format!("purged {}", ids[2])),
        "{}",
        run.text()
    );
    assert_eq!(env.list_ids().await, [ids[1].clone()]);
    assert_eq!(env.len(WORK_QUEUE).await, 0, "purge publishes nothing");

    let conn = env.open().await;
    let options = PurgeOptions {
        selection: Selection::All {
            notification_type: None,
        },
        timeout: TIMEOUT,
    };
    let report = dlq::purge(&conn.channel, &options, |_| {}).await.unwrap();
    conn.close().await;
    assert_eq!(report.purged.len(), 1);
    assert_eq!(env.len(DLQ).await, 0);
}

#[tokio::test]
async fn unknown_ids_are_named_and_nothing_changes() {
    let env = Env::new().await;
    let ids = env.park_orders(800, 2).await;
    let bogus = "00000000-0000-4000-8000-000000000000";

    let run = cli(&env.url(), &["replay", &ids[0], bogus]).await;
    assert_eq!(run.code, exit::PARTIAL as i32);
    assert!(
        run.stderr.contains(bogus) && run.stderr.contains("nothing was replayed"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains(&ids[0]),
        "a known id is not reported unknown"
    );

    let run = cli(&env.url(), &["replay", bogus, "--json"]).await;
    assert_eq!(run.code, exit::PARTIAL as i32);
    assert_eq!(run.json()["unknown_ids"], serde_json::json!([bogus]));

    let run = cli(&env.url(), &["purge", bogus, &ids[1], "--yes"]).await;
    assert_eq!(run.code, exit::PARTIAL as i32);
    let run = cli(&env.url(), &["show", bogus]).await;
    assert_eq!(run.code, exit::PARTIAL as i32);
    assert!(run.stderr.contains(bogus), "{}", run.stderr);

    assert_eq!(env.list_ids().await, ids);
    assert_eq!(env.len(WORK_QUEUE).await, 0);
}

#[tokio::test]
async fn broker_trouble_has_its_own_exit_codes() {
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("amqp://guest:s3cret@127.0.0.1:{port}/%2f");
    let run = cli(&url, &["list"]).await;
    assert_eq!(run.code, exit::BROKER as i32, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("guest:***@127.0.0.1:{port}")),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("s3cret"), "{}", run.stderr);

    // A vhost where nothing ever declared the topology.
    let bare = TestVhost::create().await.unwrap();
    let run = cli(&bare.amqp_url(), &["list"]).await;
    assert_eq!(run.code, exit::MISSING as i32, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("queue xsolla.fulfillment.dlq does not exist on this vhost"),
        "{}",
        run.stderr
    );
    let conn = DlqConnection::open(&bare.amqp_url(), TIMEOUT)
        .await
        .unwrap();
    let err = dlq::list(&conn.channel, TIMEOUT, &ListOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, DlqError::QueueMissing { .. }), "{err}");

    let run = cli(&bare.amqp_url(), &["replay"]).await;
    assert_eq!(
        run.code,
        exit::USAGE as i32,
        "clap usage error: {}",
        run.stderr
    );
    let run = cli("http://nope", &["list"]).await;
    assert_eq!(run.code, exit::USAGE as i32, "{}", run.stderr);
    let run = cli("amqp://guest:s3cret@127.0.0.1:notaport/%2f", &["list"]).await;
    assert_eq!(run.code, exit::USAGE as i32, "{}", run.stderr);
    assert!(run.stderr.contains("AMQP_URL"), "{}", run.stderr);
    assert!(!run.stderr.contains("s3cret"), "{}", run.stderr);
}

#[tokio::test]
async fn interrupted_replay_loses_nothing_and_duplicates_at_most_one() {
    let env = Env::new().await;
    const N: u64 = 30;
    env.park_orders(900, N).await;
    let all: BTreeSet<String> = (900..900 + N).map(|o| o.to_string()).collect();

    let proxy = TcpProxy::to_shared_broker().await.unwrap();
    let url = env.vhost.amqp_url_via(proxy.addr());
    let replaying = tokio::spawn(async move {
        let conn = DlqConnection::open(&url, TIMEOUT).await?;
        let options = ReplayOptions {
            selection: Selection::All {
                notification_type: None,
            },
            dry_run: false,
            rate: Some(20),
            timeout: TIMEOUT,
        };
        dlq::replay(&conn.channel, &options, |_| {}).await
    });
    env.broker
        .wait_queue_len(WORK_QUEUE, 5, DEADLINE)
        .await
        .unwrap();
    proxy.cut().await;
    let outcome = tokio::time::timeout(DEADLINE, replaying)
        .await
        .expect("replay returns")
        .unwrap();
    assert!(outcome.is_err(), "the replay noticed the cut");

    // The broker returns what the replay held once it sees the connection go.
    wait::until(DEADLINE, "every message back in a queue", || async {
        env.len(DLQ).await + env.len(WORK_QUEUE).await >= N as u32
    })
    .await
    .unwrap();
    let moved: Vec<String> = env.take_work().await.iter().map(order_of).collect();
    let left: Vec<String> = env
        .list()
        .await
        .into_iter()
        .map(|m| m.order_id.expect("order id"))
        .collect();
    assert!(
        moved.len() >= 5 && moved.len() < N as usize,
        "cut midway: {} moved",
        moved.len()
    );
    let moved_set: BTreeSet<String> = moved.iter().cloned().collect();
    let left_set: BTreeSet<String> = left.iter().cloned().collect();
    assert_eq!(moved_set.len(), moved.len(), "no message replayed twice");
    assert_eq!(left_set.len(), left.len(), "no message twice in the DLQ");
    assert_eq!(&moved_set | &left_set, all, "nothing lost");
    let both: Vec<_> = moved_set.intersection(&left_set).collect();
    assert!(
        both.len() <= 1,
        "only the one in flight may be in both: {both:?}"
    );
}

#[tokio::test]
async fn messages_the_broker_parked_get_a_stable_id_and_replay() {
    let env = Env::new().await;
    // A poison message: handed out and returned until the work queue's delivery limit
    // makes RabbitMQ itself dead-letter it (with `x-death`, without our headers).
    env.broker.publish_webhook(&order_paid(1000)).await.unwrap();
    let conn = env.vhost.connect().await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    for _ in 0..=WORK_QUEUE_DELIVERY_LIMIT {
        let Some(got) = channel
            .basic_get(WORK_QUEUE.into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
        else {
            break;
        };
        let requeue = BasicNackOptions {
            multiple: false,
            requeue: true,
        };
        channel
            .basic_nack(got.delivery.delivery_tag, requeue)
            .await
            .unwrap();
    }
    env.broker.wait_queue_len(DLQ, 1, DEADLINE).await.unwrap();

    let listed = env.list().await;
    assert_eq!(listed.len(), 1);
    let m = &listed[0];
    assert!(m.id_derived);
    assert_eq!(m.id.len(), 16);
    assert_eq!(m.reason, Some(ParkReason::Other("delivery_limit".into())));
    assert_eq!(m.routing_key.as_deref(), Some("order_paid"));
    assert!(m.dead_lettered_at.is_some());
    assert_eq!(
        env.list_ids().await,
        std::slice::from_ref(&m.id),
        "the derived id is stable"
    );

    let run = cli(&env.url(), &["replay", &m.id]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let work = env.take_work().await;
    assert_eq!(work.len(), 1);
    assert_eq!(work[0].body, order_paid(1000));
    assert!(work[0].headers.inner().get("x-death").is_none());
    assert_replayed(&work[0]);
    let _ = conn.close(200, "done".into()).await;
}

#[tokio::test]
async fn rejected_sku_is_fixed_and_replayed_then_granted() {
    let env = Env::new().await;
    let inventory = DemoInventory::start(InventoryConfig::default())
        .await
        .unwrap();
    inventory
        .update_faults(|f| {
            f.rejected_skus.insert("com.xsolla.item_1".into());
        })
        .unwrap();
    let worker = RunningWorker::start(test_args(&env.url(), &inventory.url()))
        .await
        .unwrap();

    for order in [1100, 1101, 1102] {
        env.broker
            .publish_webhook(&order_paid(order))
            .await
            .unwrap();
    }
    env.broker.wait_queue_len(DLQ, 3, DEADLINE).await.unwrap();

    let run = cli(&env.url(), &["list", "--json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = run.json();
    let messages = doc["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    let mut orders: Vec<&str> = messages
        .iter()
        .map(|m| m["order_id"].as_str().unwrap())
        .collect();
    orders.sort();
    assert_eq!(orders, ["1100", "1101", "1102"]);
    for m in messages {
        assert_eq!(m["reason"], "permanent");
        assert_eq!(m["last_status"], 422);
    }
    let first = messages.iter().find(|m| m["order_id"] == "1100").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = cli(&env.url(), &["show", &first]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.text().contains("422"), "{}", run.text());

    // The game fixes its catalogue; the operator replays one, then the rest.
    inventory
        .update_faults(|f| f.rejected_skus.clear())
        .unwrap();
    let run = cli(&env.url(), &["replay", &first]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    inventory
        .wait_for(|s| s.grant("1100").is_some(), DEADLINE)
        .await
        .unwrap();
    let run = cli(&env.url(), &["replay", "--all", "--rate", "10"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let state = inventory
        .wait_for(
            |s| {
                ["1100", "1101", "1102"]
                    .iter()
                    .all(|o| s.grant(o).is_some())
            },
            DEADLINE,
        )
        .await
        .unwrap();
    assert!(state.exactly_once(), "{}", state.summary());
    assert_eq!(env.len(DLQ).await, 0);

    worker.stop().await.unwrap();
    inventory.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_message_naming_no_type_stays_and_exits_1() {
    let env = Env::new().await;
    let routable = env.park_orders(1200, 1).await;
    let mut h = FieldTable::default();
    h.set_str(header::DLQ_ID, "11111111-2222-4333-8444-555555555555")
        .set_str(header::DEAD_REASON, "unparsable");
    let properties = envelope::properties("garbage", h);
    env.broker
        .publish("", DLQ, b"\xffnot json", properties)
        .await
        .unwrap();

    let run = cli(
        &env.url(),
        &["show", "11111111-2222-4333-8444-555555555555", "--json"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["body_raw"], Value::Null);
    assert_eq!(run.json()["body_hex"], hex::encode(b"\xffnot json"));

    let run = cli(&env.url(), &["replay", "--all", "--json"]).await;
    assert_eq!(run.code, exit::PARTIAL as i32, "{}", run.stderr);
    let doc = run.json();
    assert_eq!(ids_of(&doc, "replayed"), routable);
    assert_eq!(
        ids_of(&doc, "unroutable"),
        ["11111111-2222-4333-8444-555555555555"]
    );
    assert_eq!(
        env.list_ids().await,
        ["11111111-2222-4333-8444-555555555555"]
    );
    assert_eq!(env.len(WORK_QUEUE).await, 1);
}

#[tokio::test]
async fn a_routing_key_longer_than_amqp_allows_is_unroutable_not_a_panic() {
    let env = Env::new().await;
    let id = env.park_orders(1300, 1).await.remove(0);
    let long_id = "22222222-2222-4333-8444-555555555555";
    let body = order_paid(1301);
    let mut h = FieldTable::default();
    h.set_str(header::DLQ_ID, long_id)
        .set_str(header::ROUTING_KEY, &"k".repeat(300))
        .set_str(header::NOTIFICATION_TYPE, "order_paid")
        .set_str(header::DEAD_REASON, "permanent");
    env.broker
        .publish("", DLQ, &body, envelope::properties("order_paid:1301", h))
        .await
        .unwrap();

    let run = cli(&env.url(), &["replay", long_id]).await;
    assert_eq!(run.code, exit::PARTIAL as i32, "{}", run.stderr);
    assert!(run.stderr.contains(long_id), "{}", run.stderr);
    assert!(run.stderr.contains("255"), "{}", run.stderr);
    let run = cli(&env.url(), &["replay", "--all", "--json"]).await;
    assert_eq!(run.code, exit::PARTIAL as i32, "{}", run.stderr);
    assert_eq!(ids_of(&run.json(), "replayed"), [id]);
    assert_eq!(ids_of(&run.json(), "unroutable"), [long_id]);
    assert_eq!(env.list_ids().await, [long_id], "left in the DLQ");
    assert_eq!(env.len(WORK_QUEUE).await, 1);
}

/// Characters that must never reach an operator's terminal raw from `worker dlq`'s text
/// output (ESC, C1 CSI, BEL, CR, line separator, bidi override and isolate).
const TERMINAL_UNSAFE: [char; 7] = [
    '\u{1b}', '\u{9b}', '\u{7}', '\r', '\u{2028}', '\u{202e}', '\u{2066}',
];

#[tokio::test]
async fn text_output_escapes_terminal_control_sequences_and_json_stays_exact() {
    let env = Env::new().await;
    let hostile = "\u{1b}[31mred\u{1b}]0;pwned\u{7}\r\u{9b}2J\u{2028}\u{202e}txt\u{2066}";
    let mut body: Value = serde_json::from_slice(&order_paid(1400)).unwrap();
    body["user"]["external_id"] = Value::from(format!("user{hostile}"));
    let body = serde_json::to_vec(&body).unwrap();
    let id = env
        .park(&body, &format!("permanent{hostile}"), Some(422), hostile)
        .await;
    // A body that is not JSON, printed as text by `show`.
    let raw_id = "33333333-2222-4333-8444-555555555555";
    let mut h = FieldTable::default();
    h.set_str(header::DLQ_ID, raw_id)
        .set_str(header::NOTIFICATION_TYPE, "order_paid")
        .set_str(&format!("x-evil{hostile}"), hostile);
    env.broker
        .publish(
            "",
            DLQ,
            format!("not json {hostile}\nsecond line").as_bytes(),
            envelope::properties("junk", h),
        )
        .await
        .unwrap();

    for args in [
        vec!["list"],
        vec!["show", id.as_str()],
        vec!["show", raw_id],
        vec!["replay", "--all", "--dry-run"],
    ] {
        let run = cli(&env.url(), &args).await;
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        let text = run.text() + &run.stderr;
        for c in TERMINAL_UNSAFE {
            assert!(!text.contains(c), "{args:?} printed {c:?} raw: {text:?}");
        }
        assert!(
            text.contains("\\u{1b}[31m"),
            "{args:?} shows it escaped: {text}"
        );
    }
    let run = cli(&env.url(), &["show", raw_id]).await;
    assert!(
        run.text().contains("second line\n"),
        "a body keeps its newlines"
    );

    let run = cli(&env.url(), &["show", &id, "--json"]).await;
    let doc = run.json();
    assert_eq!(doc["last_error"], hostile, "JSON is exact");
    assert_eq!(doc["user_id"], format!("user{hostile}"));
    assert_eq!(doc["body_raw"].as_str().unwrap().as_bytes(), body);
    let run = cli(&env.url(), &["list", "--json"]).await;
    assert!(!run.text().contains('\u{1b}'), "serde escapes it in JSON");
    assert_eq!(
        run.json()["messages"][0]["reason"],
        format!("permanent{hostile}")
    );
}
