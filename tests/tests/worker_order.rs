//! `worker order` as the real binary against the real RabbitMQ, the worker and the demo
//! inventory: a granted order's timeline in text and JSON, the failed attempts of an
//! outage, several ids in one document, and the exit codes (unknown order 1, missing
//! stream 4, unreachable broker 3, bad URL 2).
//!
//! Needs RabbitMQ on 127.0.0.1:5672 and the binaries built (`cargo build --workspace --bins`).

use std::time::Duration;

use serde_json::Value;
use shared::topology::WORK_QUEUE;
use tests::{
    inventory::{Faults, InventoryConfig},
    rabbit::TestVhost,
    worker_harness::{RunningWorker, WorkerSetup, order_paid, worker_binary},
};

const WITHIN: Duration = Duration::from_secs(45);

async fn setup(faults: Faults) -> WorkerSetup {
    WorkerSetup::start(InventoryConfig::default().with_faults(faults)).await
}

/// What the binary did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", self.stdout))
    }
}

/// `worker order <args…>` with `AMQP_URL` = `url` and a clean environment.
async fn order(url: &str, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(worker_binary().expect("worker binary"))
        .arg("order")
        .args(args)
        .args(["--timeout", "10s"])
        .env_clear()
        .env("AMQP_URL", url)
        .output()
        .await
        .expect("run worker order");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `worker order <id> --json` until `done` holds for its document.
async fn wait_json(url: &str, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    // Each look runs `worker order`: every 200 ms, not every 20.
    let every = Duration::from_millis(200);
    tests::wait::value_every(every, WITHIN, what, || async {
        let run = order(url, &[id, "--json"]).await;
        if run.code == 0 {
            let doc = run.json();
            if done(&doc) {
                return Ok(doc);
            }
        }
        Err(format!("exit {}, {}{}", run.code, run.stdout, run.stderr))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

fn kinds(doc: &Value) -> Vec<String> {
    doc["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {doc}"))
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_granted_order_shows_accepted_then_granted_in_text_and_json() {
    let s = setup(Faults::none()).await;
    let worker = RunningWorker::start(s.args.clone()).await.unwrap();
    s.broker.publish_webhook(&order_paid(51)).await.unwrap();
    let url = s.vhost.amqp_url();
    let doc = wait_json(&url, "51", "granted", |d| d["now"] == "granted").await;
    assert_eq!(kinds(&doc), ["accepted", "granted"]);
    assert_eq!(doc["order_id"], "51");
    assert_eq!(doc["project_id"], 18404);
    assert_eq!(doc["user_id"], "user-51");
    let mut keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["events", "now", "order_id", "project_id", "user_id"]);
    let granted = &doc["events"][1];
    for field in ["at", "kind", "attempt", "http_status", "error", "dlq_id"] {
        assert!(granted.get(field).is_some(), "{field} missing in {granted}");
    }
    assert_eq!(granted["attempt"], 1);
    assert!(!doc.to_string().contains('@'), "no e-mail: {doc}");

    let text = order(&url, &["51"]).await;
    assert_eq!(text.code, 0, "{}", text.stderr);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert!(
        lines[0].starts_with("order 51  project 18404  user user-51"),
        "{}",
        text.stdout
    );
    assert!(lines[1].contains("accepted") && lines[1].contains("com.xsolla.item_1 ×3"));
    assert!(lines[2].contains("granted") && lines[2].contains("grant attempt 1"));
    assert!(lines[3].starts_with("now: granted"), "{}", text.stdout);
    assert!(text.stderr.is_empty(), "{}", text.stderr);
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn the_timeline_shows_the_failed_attempts_while_the_inventory_is_down() {
    let s = setup(Faults {
        down: true,
        ..Faults::none()
    })
    .await;
    let worker = RunningWorker::start(s.args.clone()).await.unwrap();
    s.broker.publish_webhook(&order_paid(52)).await.unwrap();
    let url = s.vhost.amqp_url();
    let doc = wait_json(&url, "52", "two failed attempts", |d| {
        kinds(d).iter().filter(|k| *k == "attempt_failed").count() >= 2
    })
    .await;
    assert_eq!(doc["now"], "retrying");
    assert_eq!(kinds(&doc)[0], "accepted");
    let failed = &doc["events"][1];
    assert_eq!(failed["http_status"], 503);
    assert_eq!(failed["attempt"], 1);
    assert!(failed["error"].is_string(), "{failed}");

    let text = order(&url, &["52"]).await;
    assert_eq!(text.code, 0, "{}", text.stderr);
    let failed_line = text
        .stdout
        .lines()
        .find(|l| l.contains("attempt_failed"))
        .unwrap_or_else(|| panic!("{}", text.stdout));
    assert!(
        failed_line.contains("HTTP 503") && failed_line.contains("next retry"),
        "{failed_line}"
    );
    assert!(text.stdout.contains("now: retrying"), "{}", text.stdout);

    s.inventory.set_faults(Faults::none()).unwrap();
    let doc = wait_json(&url, "52", "granted", |d| d["now"] == "granted").await;
    assert_eq!(kinds(&doc).last().unwrap(), "granted");
    s.broker
        .wait_queue_len(WORK_QUEUE, 0, WITHIN)
        .await
        .unwrap();
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn several_orders_make_one_array_and_an_unknown_one_exits_1() {
    let s = setup(Faults::none()).await;
    // No worker: the acceptance alone, straight from the publish.
    s.broker.publish_webhook(&order_paid(53)).await.unwrap();
    s.broker.publish_webhook(&order_paid(54)).await.unwrap();
    let url = s.vhost.amqp_url();
    let both = order(&url, &["54", "53", "54", "--json"]).await;
    assert_eq!(both.code, 0, "{}", both.stderr);
    let doc = both.json();
    let ids: Vec<&str> = doc
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["54", "53"], "in the order asked, once each");
    assert_eq!(doc[0]["now"], "accepted");

    let unknown = order(&url, &["999999"]).await;
    assert_eq!(unknown.code, 1);
    assert!(unknown.stdout.is_empty(), "{}", unknown.stdout);
    assert!(unknown.stderr.contains("999999"), "{}", unknown.stderr);
    let unknown_json = order(&url, &["999999", "--json"]).await;
    assert_eq!(unknown_json.code, 1);
    assert!(unknown_json.stdout.is_empty(), "{}", unknown_json.stdout);
    let partial = order(&url, &["53", "999999", "--json"]).await;
    assert_eq!(partial.code, 1);
    assert_eq!(partial.json().as_array().unwrap().len(), 1);

    // A control character in an id asked for is escaped on stderr.
    let weird = order(&url, &["1\u{1b}[2J"]).await;
    assert_eq!(weird.code, 1);
    assert!(weird.stderr.contains("1\\u{1b}[2J"), "{}", weird.stderr);
    // Too short a window: the acceptance is older than that.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let recent = order(&url, &["53", "--since", "1s"]).await;
    assert_eq!(recent.code, 1, "{}", recent.stdout);
}

#[tokio::test]
async fn exit_codes_for_a_missing_stream_an_unreachable_broker_and_a_bad_url() {
    // A vhost where nothing ever declared the topology.
    let vhost = TestVhost::create().await.unwrap();
    let missing = order(&vhost.amqp_url(), &["1"]).await;
    assert_eq!(missing.code, 4, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("xsolla.order-events"),
        "{}",
        missing.stderr
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = order(
        &format!("amqp://guest:secret-pw@127.0.0.1:{port}/%2f"),
        &["1"],
    )
    .await;
    assert_eq!(down.code, 3, "{}", down.stderr);
    assert!(!down.stderr.contains("secret-pw"), "{}", down.stderr);

    let bad = order("http://nope", &["1"]).await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    let no_id = order(&vhost.amqp_url(), &[]).await;
    assert_eq!(no_id.code, 2, "{}", no_id.stderr);
}

#[tokio::test]
async fn reads_a_stream_longer_than_its_prefetch_up_to_its_own_marker() {
    let s = setup(Faults::none()).await;
    // 2,500 acceptances (no worker): the read must keep returning credit to get through.
    let bodies: Vec<Vec<u8>> = (1000..3500).map(order_paid).collect();
    s.broker.publish_webhooks(&bodies).await.unwrap();
    let run = order(&s.vhost.amqp_url(), &["3499", "1000", "--json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = run.json();
    assert_eq!(doc[0]["order_id"], "3499");
    assert_eq!(doc[1]["order_id"], "1000");
    assert_eq!(kinds(&doc[0]), ["accepted"]);
}

/// `worker dlq <args…>` against `url`.
async fn dlq(url: &str, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(worker_binary().expect("worker binary"))
        .arg("dlq")
        .args(args)
        .args(["--amqp-url", url, "--timeout", "10s"])
        .env_clear()
        .output()
        .await
        .expect("run worker dlq");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn a_dead_lettered_order_names_its_dlq_id_and_then_its_replay() {
    let s = setup(Faults {
        rejected_skus: ["com.xsolla.item_1".to_owned()].into(),
        ..Faults::none()
    })
    .await;
    let worker = RunningWorker::start(s.args.clone()).await.unwrap();
    s.broker.publish_webhook(&order_paid(55)).await.unwrap();
    let url = s.vhost.amqp_url();
    let doc = wait_json(&url, "55", "dead-lettered", |d| d["now"] == "dead_lettered").await;
    assert_eq!(kinds(&doc), ["accepted", "dead_lettered"]);
    let dead = &doc["events"][1];
    assert_eq!(dead["http_status"], 422);
    let id = dead["dlq_id"].as_str().expect("a dlq id").to_owned();
    let text = order(&url, &["55"]).await;
    assert!(
        text.stdout.contains(&format!("dlq id {id}")) && text.stdout.contains("reason permanent"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("now: dead_lettered"),
        "{}",
        text.stdout
    );

    let show = dlq(&url, &["show", &id]).await;
    assert_eq!(show.code, 0, "{}", show.stderr);
    s.inventory.set_faults(Faults::none()).unwrap();
    let replay = dlq(&url, &["replay", &id]).await;
    assert_eq!(replay.code, 0, "{}", replay.stderr);
    let doc = wait_json(&url, "55", "granted after the replay", |d| {
        d["now"] == "granted"
    })
    .await;
    assert_eq!(
        kinds(&doc),
        ["accepted", "dead_lettered", "replayed", "granted"]
    );
    assert_eq!(doc["events"][2]["dlq_id"], id.as_str());
    assert_eq!(
        doc["events"][3]["attempt"], 1,
        "a replay starts the count again"
    );
    worker.stop().await.unwrap();
}
