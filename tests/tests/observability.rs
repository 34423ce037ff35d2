//! What operators watch: the worker's queue report (`amqp_queue_messages{queue}`), the
//! bounded unrouted queue (`UNROUTED_TTL`, and brokers whose queue predates it), and that
//! every metric the dashboard and the alert rules query is exported by a real binary.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context as _;
use lapin::{
    BasicProperties,
    options::QueueDeclareOptions,
    types::{AMQPValue, FieldTable, LongString},
};
use shared::topology::{DLQ, EXCHANGE, Topology, UNROUTED_QUEUE, WORK_QUEUE};
use tests::{
    fixtures,
    inventory::{DemoInventory, InventoryConfig},
    logs::{self, LogLine},
    rabbit::{TestVhost, rabbitmqctl},
    wait,
    worker_harness::{self, Broker, RunningWorker, WorkerProcess, metric_sum},
};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

fn dlq_depth(text: &str) -> f64 {
    metric_sum(text, "amqp_queue_messages", &[("queue", DLQ)])
}

fn has_series(text: &str, name: &str, queue: &str) -> bool {
    text.lines()
        .any(|l| l.starts_with(&format!("{name}{{queue=\"{queue}\"}} ")))
}

async fn publish_to_dlq(broker: &Broker, n: u32) -> anyhow::Result<()> {
    for i in 0..n {
        let body = worker_harness::order_paid(900_000 + u64::from(i));
        broker
            .publish("", DLQ, &body, BasicProperties::default())
            .await?;
    }
    Ok(())
}

#[tokio::test]
async fn worker_reports_dlq_depth_and_survives_missing_queues_and_lost_connections() {
    let vhost = TestVhost::create().await.unwrap();
    let url = vhost.amqp_url();
    let args = worker_harness::test_args(&url, "http://127.0.0.1:9");
    let topology = args.broker.topology();
    let broker = Broker::connect(&url, &topology).await.unwrap();
    let n = 7;
    publish_to_dlq(&broker, n).await.unwrap();
    vhost
        .wait_queue_len(DLQ, u64::from(n), Duration::from_secs(10))
        .await
        .unwrap();

    // The real worker, with its 15 s interval: the first report comes once it is connected.
    let worker = RunningWorker::start(args).await.unwrap();
    let ops = worker.ops;
    wait::until(
        worker::backlog::INTERVAL,
        "DLQ depth on /metrics",
        || async {
            worker_harness::metrics(ops)
                .await
                .is_ok_and(|t| dlq_depth(&t) == f64::from(n))
        },
    )
    .await
    .unwrap();
    let text = worker_harness::metrics(ops).await.unwrap();
    for queue in shared::topology::quorum_queues(&topology) {
        assert!(
            has_series(&text, "amqp_queue_messages", &queue)
                && has_series(&text, "amqp_queue_consumers", &queue),
            "no report for {queue}:\n{text}"
        );
    }
    worker.stop().await.unwrap();

    // A short interval, and a tier that does not exist on the broker: its passive declare
    // closes the report's channel every round, and the queues after it are still reported.
    let stop = CancellationToken::new();
    let (link, supervisor) = shared::amqp::supervise(
        url.clone(),
        "backlog test".into(),
        topology.clone(),
        stop.clone(),
    );
    let mut wider = topology.clone();
    wider.retry_delays.push(Duration::from_secs(7));
    let every = Duration::from_millis(200);
    let report = worker::backlog::spawn(link, &wider, every, stop.clone());
    let seen = |want: u32| async move {
        wait::until(
            Duration::from_secs(10),
            &format!("DLQ depth {want}"),
            || async {
                let text = shared::telemetry::metrics_handle().render();
                dlq_depth(&text) == f64::from(want)
                    && has_series(&text, "amqp_queue_messages", "xsolla.fulfillment.retry.7s")
            },
        )
        .await
    };
    publish_to_dlq(&broker, 1).await.unwrap();
    seen(n + 1).await.unwrap();

    // Every connection of the vhost closed: the report follows the supervisor's new session.
    broker.close().await;
    vhost.close_connections().await.unwrap();
    let broker = Broker::connect(&url, &topology).await.unwrap();
    publish_to_dlq(&broker, 1).await.unwrap();
    seen(n + 2).await.unwrap();

    stop.cancel();
    report.await.unwrap();
    supervisor.await.unwrap();
    broker.close().await;
}

/// `x-message-ttl` of `queue` as `rabbitmqctl list_queues … arguments` shows it, if any.
async fn queue_ttl_argument(vhost: &TestVhost, queue: &str) -> anyhow::Result<Option<u64>> {
    let queues = vhost.queue_arguments().await?;
    let args = queues
        .get(queue)
        .with_context(|| format!("{queue} not listed: {queues:?}"))?;
    Ok(args
        .get("x-message-ttl")
        .and_then(serde_json::Value::as_u64))
}

/// Publishes a verified-looking webhook of a type nobody binds: it lands in the unrouted queue.
async fn publish_unknown_type(broker: &Broker) -> anyhow::Result<()> {
    let body = br#"{"notification_type":"made_up_type","x":1}"#;
    broker
        .publish(EXCHANGE, "made_up_type", body, BasicProperties::default())
        .await
}

#[tokio::test]
async fn unrouted_messages_expire_after_unrouted_ttl_on_a_fresh_broker() {
    let vhost = TestVhost::create().await.unwrap();
    let topology = Topology {
        unrouted_ttl: Duration::from_millis(1500),
        ..Topology::default()
    };
    let broker = Broker::connect(&vhost.amqp_url(), &topology).await.unwrap();
    assert_eq!(
        queue_ttl_argument(&vhost, UNROUTED_QUEUE).await.unwrap(),
        Some(1500)
    );
    publish_unknown_type(&broker).await.unwrap();
    vhost
        .wait_queue_len(UNROUTED_QUEUE, 1, Duration::from_secs(5))
        .await
        .unwrap();
    vhost
        .wait_queue_len(UNROUTED_QUEUE, 0, Duration::from_secs(20))
        .await
        .expect("the unrouted message expires");
    broker.close().await;

    // The default, as every binary declares it: a week.
    let vhost = TestVhost::create().await.unwrap();
    Broker::connect(&vhost.amqp_url(), &Topology::default())
        .await
        .unwrap()
        .close()
        .await;
    assert_eq!(
        queue_ttl_argument(&vhost, UNROUTED_QUEUE).await.unwrap(),
        Some(7 * 24 * 3600 * 1000)
    );
}

/// A port nobody listens on right now.
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

const SECRET: &str = "observability-test-secret";

/// The real `ingress` binary with `extra` variables, its log in `log`.
async fn spawn_ingress(
    amqp_url: &str,
    log: &Path,
    extra: &[(&str, &str)],
) -> anyhow::Result<(Child, SocketAddr)> {
    let listen = free_port();
    let child = Command::new(tests::bin_path("ingress"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("AMQP_URL", amqp_url)
        .env("INGRESS_LISTEN", listen.to_string())
        .env("XSOLLA_WEBHOOK_SECRET", SECRET)
        .env("RETRY_DELAYS", worker_harness::TEST_RETRY_DELAYS)
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .kill_on_drop(true)
        .spawn()
        .context("starting the ingress binary")?;
    let ready = || async {
        matches!(reqwest::get(format!("http://{listen}/readyz")).await, Ok(r) if r.status() == 200)
    };
    wait::until(Duration::from_secs(30), "ingress ready", ready).await?;
    Ok((child, listen))
}

fn log_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "xb-observability-{}-{name}.log",
        std::process::id()
    ))
}

#[tokio::test]
async fn a_broker_whose_unrouted_queue_predates_the_ttl_keeps_working() {
    let vhost = TestVhost::create().await.unwrap();
    // What an older version declared: a quorum queue without x-message-ttl.
    let connection = vhost.connect().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(UNROUTED_QUEUE.into(), durable, args)
        .await
        .unwrap();
    let _ = connection.close(200, "done".into()).await;

    let log = log_path("old-unrouted");
    let (mut ingress, listen) = spawn_ingress(&vhost.amqp_url(), &log, &[]).await.unwrap();
    // A webhook goes through: the topology is declared, the queue is untouched.
    let body = worker_harness::order_paid(4242);
    let answer = reqwest::Client::new()
        .post(format!("http://{listen}/webhooks/xsolla"))
        .header("Authorization", fixtures::authorization(&body, SECRET))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 204);
    assert_eq!(
        queue_ttl_argument(&vhost, UNROUTED_QUEUE).await.unwrap(),
        None
    );

    // The advised policy (with a short TTL) bounds the existing queue.
    vhost
        .set_policy(
            shared::topology::UNROUTED_POLICY,
            r"^xsolla\.unrouted$",
            r#"{"message-ttl":3000}"#,
        )
        .await
        .unwrap();
    wait::until(Duration::from_secs(20), "the policy applied", || async {
        rabbitmqctl(&["list_queues", "-p", vhost.name(), "name", "policy"])
            .await
            .is_ok_and(|out| {
                out.lines().any(|l| {
                    l.starts_with(UNROUTED_QUEUE) && l.contains(shared::topology::UNROUTED_POLICY)
                })
            })
    })
    .await
    .unwrap();
    let body = br#"{"notification_type":"made_up_type","x":1}"#.to_vec();
    let answer = reqwest::Client::new()
        .post(format!("http://{listen}/webhooks/xsolla"))
        .header("Authorization", fixtures::authorization(&body, SECRET))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 204);
    vhost
        .wait_queue_len(UNROUTED_QUEUE, 1, Duration::from_secs(2))
        .await
        .unwrap();
    vhost
        .wait_queue_len(UNROUTED_QUEUE, 0, Duration::from_secs(20))
        .await
        .expect("the policy's TTL expires the message");

    let _ = ingress.kill().await;
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    // Written to a file, not a terminal: no colour codes (text format).
    assert!(
        !text.contains('\x1b'),
        "escape codes in a log file:\n{text}"
    );
    let command = text
        .lines()
        .find_map(|l| {
            l.split_once("Bound it once per vhost with: ")
                .map(|(_, c)| c)
        })
        .unwrap_or_else(|| panic!("no migration advice in the log:\n{text}"));
    assert!(
        command.contains(r"'^xsolla\.unrouted$'")
            && command.contains("--apply-to queues")
            && command.contains(&format!("-p {} ", vhost.name())),
        "{command}"
    );
}

// ---- every metric the dashboard and the alerts query is exported ------------------------

/// The PromQL expressions of the rules file (`expr:` one-liners and `|` blocks).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((indent, rest)) = line.split_once("expr:") else {
            continue;
        };
        if !indent.trim().is_empty() && indent.trim() != "-" {
            continue;
        }
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let mut block = String::new();
            while let Some(next) = lines.peek() {
                let deeper = next.len() - next.trim_start().len() > indent.len();
                if !deeper && !next.trim().is_empty() {
                    break;
                }
                block.push_str(next);
                block.push('\n');
                lines.next();
            }
            exprs.push(block);
        } else {
            exprs.push(rest.to_owned());
        }
    }
    exprs
}

/// The `targets[].expr` of every panel of a Grafana dashboard.
fn dashboard_exprs(json: &serde_json::Value) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut stack = vec![json];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(e)) = map.get("expr") {
                    exprs.push(e.clone());
                }
                stack.extend(map.values());
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    exprs
}

/// Metric names in a PromQL expression: identifiers that are not functions or aggregations
/// (followed by `(`), keywords, label names (inside `{}` or `by/without/on/ignoring (…)`),
/// strings, ranges or Grafana variables. `_bucket`/`_sum`/`_count` are stripped.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "and",
        "or",
        "unless",
        "inf",
        "nan",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut after_grouping = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    i += 1;
                }
                i += 1;
            }
            '$' => {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            '(' if after_grouping => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                after_grouping = false;
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                // `sum(…)`, and `sum by (…) (…)` whose grouping comes first.
                let rest: String = chars[j..].iter().take(8).collect();
                let grouped = ["by", "without"].iter().any(|g| {
                    rest.strip_prefix(g)
                        .is_some_and(|r| r.starts_with([' ', '(']))
                });
                let call = (j < chars.len() && chars[j] == '(') || grouped;
                let lower = word.to_ascii_lowercase();
                if [
                    "by",
                    "without",
                    "on",
                    "ignoring",
                    "group_left",
                    "group_right",
                ]
                .contains(&lower.as_str())
                {
                    after_grouping = true;
                    i = j;
                    continue;
                }
                if !call && !KEYWORDS.contains(&lower.as_str()) {
                    let base = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .unwrap_or(&word);
                    names.insert(base.to_owned());
                }
            }
            // A number (with a unit, as in offset 10m) is not a name.
            c if c.is_ascii_digit() => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Metric names a `/metrics` page exports (histogram suffixes stripped).
fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|name| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name)
                .to_owned()
        })
        .collect()
}

fn observability_file(name: &str) -> String {
    let path = format!(
        "{}/../deploy/observability/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn finds_metric_names_in_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, result) (rate(ingress_publish_confirm_seconds_bucket{result="ack"}[$__rate_interval])))
           / max by (queue) (amqp_queue_messages{queue="x"} offset 10m) unless on () sum(up) > 0"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "amqp_queue_messages",
            "ingress_publish_confirm_seconds",
            "up"
        ]
    );
    let rules = rule_exprs(&observability_file("alerts.yml"));
    assert_eq!(rules.len(), 8, "{rules:?}");
    assert!(
        rules.iter().all(|e| !metric_names(e).is_empty()),
        "{rules:?}"
    );
}

/// The metric names of `NAME="a b c"` in deploy/run-local.sh (histogram suffixes stripped).
fn run_local_metrics(name: &str) -> BTreeSet<String> {
    let path = format!("{}/../deploy/run-local.sh", env!("CARGO_MANIFEST_DIR"));
    let script = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    script
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{name}=\"")))
        .flat_map(|rest| rest.trim_end_matches('"').split_whitespace())
        .flat_map(|n| exported_names(&format!("{n} 0\n")))
        .collect()
}

/// `target/<profile>/<name>` if it has been built (`tests::bin_path` insists that it is).
fn built_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe
        .parent()?
        .parent()?
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    path.exists().then_some(path)
}

async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    Ok(reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?)
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_use_is_exported() {
    let mut wanted = BTreeSet::new();
    for expr in rule_exprs(&observability_file("alerts.yml")) {
        wanted.extend(metric_names(&expr));
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&observability_file("dashboard.json")).unwrap();
    for expr in dashboard_exprs(&dashboard) {
        wanted.extend(metric_names(&expr));
    }

    let vhost = TestVhost::create().await.unwrap();
    let url = vhost.amqp_url();
    // Every SKU of the first order is accepted; the second order's are refused (422).
    let inventory = DemoInventory::start(InventoryConfig::default())
        .await
        .unwrap();
    inventory
        .update_faults(|f| f.down = true)
        .expect("valid faults");
    let worker = WorkerProcess::spawn(&url, &inventory.url(), &[])
        .await
        .unwrap();
    let log = log_path("ingress");
    let (_ingress, listen) = spawn_ingress(&url, &log, &[]).await.unwrap();
    let send = |body: Vec<u8>| async move {
        reqwest::Client::new()
            .post(format!("http://{listen}/webhooks/xsolla"))
            .header("Authorization", fixtures::authorization(&body, SECRET))
            .body(body)
            .send()
            .await
            .map(|r| r.status().as_u16())
    };
    // Traffic that makes every labelled series appear: a grant that first meets a
    // maintenance window (retries), then succeeds; a refused SKU (dead-lettered); a bad
    // signature.
    assert_eq!(send(worker_harness::order_paid(1)).await.unwrap(), 204);
    wait::until(Duration::from_secs(20), "a retry", || async {
        scrape(worker.ops)
            .await
            .is_ok_and(|t| metric_sum(&t, "worker_retries_total", &[]) > 0.0)
    })
    .await
    .unwrap();
    inventory.update_faults(|f| f.down = false).unwrap();
    inventory
        .wait_for(|s| s.grant("1").is_some(), Duration::from_secs(20))
        .await
        .unwrap();
    inventory
        .update_faults(|f| {
            f.rejected_skus.insert("com.xsolla.item_1".into());
        })
        .unwrap();
    assert_eq!(send(worker_harness::order_paid(2)).await.unwrap(), 204);
    vhost
        .wait_queue_len(DLQ, 1, Duration::from_secs(20))
        .await
        .unwrap();
    let bad = reqwest::Client::new()
        .post(format!("http://{listen}/webhooks/xsolla"))
        .header(
            "Authorization",
            "Signature 0000000000000000000000000000000000000000",
        )
        .body(worker_harness::order_paid(3))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let ingress_names = exported_names(&scrape(listen).await.unwrap());
    let worker_names = exported_names(&scrape(worker.ops).await.unwrap());
    // deploy/run-local.sh's diagnostics grep these names on each binary's /metrics.
    for (list, names) in [
        ("INGRESS_DIAG_METRICS", &ingress_names),
        ("WORKER_DIAG_METRICS", &worker_names),
    ] {
        let wanted = run_local_metrics(list);
        assert!(!wanted.is_empty(), "no {list} in deploy/run-local.sh");
        let missing: Vec<&String> = wanted.difference(names).collect();
        assert!(
            missing.is_empty(),
            "deploy/run-local.sh's {list} names metrics the binary does not export: {missing:?}"
        );
    }
    let mut exported = BTreeSet::new();
    exported.extend(ingress_names);
    exported.extend(worker_names);

    let order_status = built_binary("order-status");
    let _status = match order_status {
        Some(path) => {
            let status_listen = free_port();
            let child = Command::new(path)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("AMQP_URL", &url)
                .env("RETRY_DELAYS", worker_harness::TEST_RETRY_DELAYS)
                .env("STATUS_LISTEN", status_listen.to_string())
                .env("STATUS_JWT_HS256_SECRET", "observability-test-jwt")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            wait::until(Duration::from_secs(30), "order-status /metrics", || async {
                scrape(status_listen).await.is_ok()
            })
            .await
            .unwrap();
            exported.extend(exported_names(&scrape(status_listen).await.unwrap()));
            Some(child)
        }
        None => {
            println!(
                "note: target/*/order-status is not built yet; its metrics (status_*) are not checked"
            );
            wanted.retain(|n| !n.starts_with("status_"));
            None
        }
    };
    let _ = std::fs::remove_file(&log);
    worker.terminate(Duration::from_secs(20)).await.unwrap();

    let missing: Vec<&String> = wanted.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "metrics used by deploy/observability but exported by no binary: {}",
        missing
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

// ---- JSON logs: the ids on every line, each key once ------------------------------------

/// What every worker line about a delivery must carry.
const DELIVERY_FIELDS: [&str; 5] = [
    "message_id",
    "traceparent",
    "order_id",
    "user_id",
    "attempt",
];

/// Worker modules whose every line is about one delivery (`panic`: the panic hook's target).
fn is_delivery_line(line: &LogLine) -> bool {
    let target = line.str("target").unwrap_or_default();
    [
        "worker::process",
        "worker::settle",
        "worker::inventory",
        "worker::retry",
        "panic",
    ]
    .iter()
    .any(|t| target == *t || target.starts_with(&format!("{t}::")))
}

fn lines_with<'a>(lines: &'a [LogLine], key: &str, value: &str) -> Vec<&'a LogLine> {
    lines.iter().filter(|l| l.str(key) == Some(value)).collect()
}

/// The real ingress and worker with `LOG_FORMAT=json`: a grant that meets a maintenance
/// window (retried) and then goes through, a webhook whose quantity is a string (accepted,
/// then dead-lettered as unparsable), a message that is not JSON at all, and a forged
/// webhook. Every line is one JSON object with no key twice; each of the worker's lines
/// about a delivery carries its five ids; the refusal names the client and the order the
/// forged body claims, marked as a claim.
#[tokio::test]
async fn json_logs_carry_each_deliverys_ids_and_each_refusals_client_once_per_key() {
    let vhost = TestVhost::create().await.unwrap();
    let url = vhost.amqp_url();
    let inventory = DemoInventory::start(InventoryConfig::default())
        .await
        .unwrap();
    inventory.update_faults(|f| f.down = true).unwrap();
    let json = [("LOG_FORMAT", "json")];
    let (worker_log, ingress_log) = (log_path("worker-json"), log_path("ingress-json"));
    let worker = WorkerProcess::spawn_logged(&url, &inventory.url(), &json, &worker_log)
        .await
        .unwrap();
    let (mut ingress, listen) = spawn_ingress(&url, &ingress_log, &json).await.unwrap();
    let post = |body: Vec<u8>, authorization: String| async move {
        reqwest::Client::new()
            .post(format!("http://{listen}/webhooks/xsolla"))
            .header("Authorization", authorization)
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };

    let granted = worker_harness::order_paid(71);
    assert_eq!(
        post(granted.clone(), fixtures::authorization(&granted, SECRET)).await,
        204
    );
    wait::until(Duration::from_secs(20), "a retry", || async {
        scrape(worker.ops)
            .await
            .is_ok_and(|t| metric_sum(&t, "worker_retries_total", &[]) > 0.0)
    })
    .await
    .unwrap();
    inventory.update_faults(|f| f.down = false).unwrap();
    inventory
        .wait_for(|s| s.grant("71").is_some(), Duration::from_secs(20))
        .await
        .unwrap();
    let unparsable = fixtures::with(
        "order_paid_combined",
        &[
            ("/order/id", serde_json::json!(72)),
            ("/user/external_id", serde_json::json!("user-72")),
            ("/items/0/quantity", serde_json::json!("50")),
        ],
    );
    let auth = fixtures::authorization(&unparsable, SECRET);
    assert_eq!(post(unparsable, auth).await, 204);
    let topology = worker_harness::test_args(&url, "http://127.0.0.1:9")
        .broker
        .topology();
    let broker = Broker::connect(&url, &topology).await.unwrap();
    let bare = BasicProperties::default().with_message_id("raw:73".into());
    broker
        .publish("", WORK_QUEUE, b"not json", bare)
        .await
        .unwrap();
    vhost
        .wait_queue_len(DLQ, 2, Duration::from_secs(20))
        .await
        .unwrap();
    let forged = worker_harness::order_paid(74);
    let zeros = format!("Signature {}", "0".repeat(40));
    assert_eq!(post(forged, zeros).await, 400);
    // SIGTERM: every in-flight delivery is settled and logged before the worker exits.
    worker.terminate(Duration::from_secs(20)).await.unwrap();
    let _ = ingress.kill().await;
    broker.close().await;

    let read = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap();
        let _ = std::fs::remove_file(path);
        assert!(
            !text.contains('\x1b'),
            "escape codes in a log file:\n{text}"
        );
        let lines = logs::parse_json_log(&text).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
        for line in &lines {
            assert!(line.repeated_keys().is_empty(), "a key twice: {}", line.raw);
        }
        lines
    };
    let worker_lines = read(&worker_log);
    let ingress_lines = read(&ingress_log);
    let shown = |lines: &[&LogLine]| {
        lines
            .iter()
            .map(|l| l.raw.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    };

    let deliveries: Vec<&LogLine> = worker_lines
        .iter()
        .filter(|l| is_delivery_line(l))
        .collect();
    assert!(deliveries.len() >= 4, "{}", shown(&deliveries));
    for line in &deliveries {
        for field in DELIVERY_FIELDS {
            assert!(line.fields.contains_key(field), "no {field}: {}", line.raw);
        }
    }

    // The retried grant: one trace, the ingress's, on every line; the attempt counts up.
    let accepted = lines_with(&ingress_lines, "order_id", "71");
    let answered = accepted
        .iter()
        .find(|l| l.str("message") == Some("webhook answered"))
        .unwrap_or_else(|| panic!("{}", shown(&accepted)));
    let trace = answered.str("traceparent").unwrap();
    assert_eq!(
        answered.str("client_ip"),
        Some("127.0.0.1"),
        "{}",
        answered.raw
    );
    assert_eq!(
        answered.str("message_id"),
        Some("order_paid:71"),
        "{}",
        answered.raw
    );
    let ms = answered.fields["elapsed_ms"].as_f64().unwrap();
    let decimals = ms.to_string().split('.').nth(1).map_or(0, str::len);
    assert!(decimals <= 3, "elapsed_ms not rounded: {}", answered.raw);
    let grant = lines_with(&worker_lines, "message_id", "order_paid:71");
    let failed = grant
        .iter()
        .find(|l| l.str("message") == Some("inventory call failed; retrying later"))
        .unwrap_or_else(|| panic!("no retry line:\n{}", shown(&grant)));
    assert_eq!(failed.fields["attempt"], 1, "{}", failed.raw);
    let done = grant
        .iter()
        .find(|l| l.str("message") == Some("granted"))
        .unwrap_or_else(|| panic!("no granted line:\n{}", shown(&grant)));
    assert!(
        done.fields["attempt"].as_u64().unwrap() >= 2,
        "{}",
        done.raw
    );
    for line in &grant {
        assert_eq!(line.str("traceparent"), Some(trace), "{}", line.raw);
        assert_eq!(line.str("order_id"), Some("71"), "{}", line.raw);
        assert_eq!(line.str("user_id"), Some("user-71"), "{}", line.raw);
    }

    // Unparsable: the ids are read from what can be read.
    let parked = lines_with(&worker_lines, "message_id", "order_paid:72");
    let dead = parked
        .iter()
        .find(|l| l.str("reason") == Some("unparsable"))
        .unwrap_or_else(|| panic!("no dead-letter line:\n{}", shown(&parked)));
    assert_eq!(dead.str("order_id"), Some("72"), "{}", dead.raw);
    assert_eq!(dead.str("user_id"), Some("user-72"), "{}", dead.raw);
    assert_eq!(dead.fields["attempt"], 1, "{}", dead.raw);
    assert!(
        dead.str("traceparent")
            .is_some_and(shared::envelope::is_valid_traceparent)
    );
    // Not JSON, no headers: placeholders, and a trace id of its own.
    let raw = lines_with(&worker_lines, "message_id", "raw:73");
    let dead = raw
        .iter()
        .find(|l| l.str("reason") == Some("unparsable"))
        .unwrap_or_else(|| panic!("no dead-letter line:\n{}", shown(&raw)));
    assert_eq!(
        (dead.str("order_id"), dead.str("user_id")),
        (Some("-"), Some("-"))
    );
    assert!(
        dead.str("traceparent")
            .is_some_and(shared::envelope::is_valid_traceparent)
    );

    // The forged webhook: who sent it and what it claims, never as a verified order id.
    let refused = lines_with(&ingress_lines, "claimed_order_id", "74");
    let line = refused
        .iter()
        .find(|l| l.str("message") == Some("webhook refused"))
        .unwrap_or_else(|| {
            panic!(
                "no refusal with the claim:\n{}",
                shown(&ingress_lines.iter().collect::<Vec<_>>())
            )
        });
    assert_eq!(line.str("client_ip"), Some("127.0.0.1"), "{}", line.raw);
    assert_eq!(
        line.str("outcome"),
        Some("invalid_signature"),
        "{}",
        line.raw
    );
    assert!(!line.fields.contains_key("order_id"), "{}", line.raw);
    assert!(!line.raw.contains('@'), "an e-mail address: {}", line.raw);
}

/// Half a request, then nothing: what a stuck scraper or a slowloris leaves open.
async fn half_a_request(addr: SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    stream
}

/// A connection left open on the metrics or ops port held the ingress and the worker past
/// SIGTERM for ever (their servers waited for every connection). Both ports now run the
/// hardened server (`shared::serve`), and both binaries exit on time.
#[tokio::test]
async fn an_open_connection_to_the_metrics_port_does_not_hold_up_shutdown() {
    let vhost = TestVhost::create().await.unwrap();
    let url = vhost.amqp_url();
    let metrics_addr = free_port();
    let log = log_path("metrics-drain");
    let (mut ingress, _) = spawn_ingress(
        &url,
        &log,
        &[
            ("METRICS_LISTEN", &metrics_addr.to_string()),
            ("SHUTDOWN_TIMEOUT", "1s"),
        ],
    )
    .await
    .unwrap();
    let inventory = DemoInventory::start(InventoryConfig::default())
        .await
        .unwrap();
    let worker = WorkerProcess::spawn(&url, &inventory.url(), &[("SHUTDOWN_TIMEOUT", "1s")])
        .await
        .unwrap();
    let _stuck_ingress = half_a_request(metrics_addr).await;
    let _stuck_worker = half_a_request(worker.ops).await;
    // Both ports run the hardened server, which counts its connections: the stuck one and
    // the scrape's own.
    for (port, what) in [
        (metrics_addr, "METRICS_LISTEN"),
        (worker.ops, "WORKER_LISTEN"),
    ] {
        let open = metric_sum(&scrape(port).await.unwrap(), "http_connections_open", &[]);
        assert!(open >= 2.0, "{what}: http_connections_open = {open}");
    }

    let pid = ingress.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), ingress.wait())
        .await
        .expect("the ingress exits after SIGTERM")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    assert_eq!(
        worker.terminate(Duration::from_secs(15)).await.unwrap(),
        Some(0),
        "the worker exits after SIGTERM"
    );
    let _ = std::fs::remove_file(&log);
}

// ---- METRICS_LISTEN: /metrics off the public port ---------------------------------------

async fn status_of(url: String) -> u16 {
    reqwest::get(url).await.unwrap().status().as_u16()
}

/// With `METRICS_LISTEN`, the public listener answers webhooks and the probes but not
/// `/metrics`, which the metrics address serves (probes beside it); a port already taken
/// stops start-up with one line naming the option.
#[tokio::test]
async fn metrics_listen_serves_metrics_apart_from_the_public_listener() {
    let vhost = TestVhost::create().await.unwrap();
    let metrics_addr = free_port();
    let log = log_path("metrics-listen");
    let (mut ingress, listen) = spawn_ingress(
        &vhost.amqp_url(),
        &log,
        &[("METRICS_LISTEN", &metrics_addr.to_string())],
    )
    .await
    .unwrap();
    assert_eq!(status_of(format!("http://{listen}/metrics")).await, 404);
    assert_eq!(status_of(format!("http://{listen}/healthz")).await, 200);
    assert_eq!(status_of(format!("http://{listen}/readyz")).await, 200);
    let body = worker_harness::order_paid(81);
    let answer = reqwest::Client::new()
        .post(format!("http://{listen}/webhooks/xsolla"))
        .header("Authorization", fixtures::authorization(&body, SECRET))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 204);
    let text = scrape(metrics_addr).await.unwrap();
    assert!(
        metric_sum(&text, "ingress_requests_total", &[("outcome", "accepted")]) >= 1.0,
        "{text}"
    );
    assert!(text.contains("# HELP build_info "), "{text}");
    assert_eq!(
        status_of(format!("http://{metrics_addr}/healthz")).await,
        200
    );
    assert_eq!(
        status_of(format!("http://{metrics_addr}/readyz")).await,
        200
    );
    assert_eq!(
        status_of(format!("http://{metrics_addr}/webhooks/xsolla")).await,
        404,
        "no webhooks on the metrics address"
    );
    let _ = ingress.kill().await;
    let _ = std::fs::remove_file(&log);

    // The address is taken (by a listener of this test): exit 2, one line naming it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let output = Command::new(tests::bin_path("ingress"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AMQP_URL", vhost.amqp_url())
        .env("XSOLLA_WEBHOOK_SECRET", SECRET)
        .env("INGRESS_LISTEN", "127.0.0.1:0")
        .env("METRICS_LISTEN", &taken_addr)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("ingress: METRICS_LISTEN (--metrics-listen) ")
            && lines[0].contains(&taken_addr)
            && lines[0].contains("cannot bind"),
        "{stderr}"
    );
    drop(taken);
}
