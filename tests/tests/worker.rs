//! The worker against the real RabbitMQ and the real demo inventory: exactly-once grants,
//! duplicates, a cancel overtaking its payment, transient failures retried through the
//! delay tiers, permanent failures and spent budgets dead-lettered, SIGKILL mid-batch,
//! competing workers, a cut broker connection, an inventory outage, graceful shutdown.
//! Each test has its own vhost, so they run in parallel.

use std::time::Duration;

use lapin::{BasicProperties, types::FieldTable};
use shared::{
    envelope::{HeadersExt, header, parse_time},
    topology::{DLQ, WORK_QUEUE},
    webhook,
};
use tests::{
    fixtures,
    ingress_harness::RunningIngress,
    inventory::{DemoInventory, Endpoint, Faults, InventoryConfig},
    rabbit::{PrivateBroker, TcpProxy},
    wait,
    worker_harness::{
        Broker, RunningWorker, WorkerProcess, WorkerSetup, is_ready, metric_sum, metrics,
        order_canceled, order_paid, test_args, wait_ready,
    },
};
use worker::config::Token;

const TOKEN: &str = "inventory-token";
/// Generous: CI machines are slow and share two cores with compilers.
const WITHIN: Duration = Duration::from_secs(45);

async fn setup(faults: Faults) -> WorkerSetup {
    let config = InventoryConfig::default()
        .with_token(TOKEN)
        .with_faults(faults)
        .with_seed(7);
    let mut s = WorkerSetup::start(config).await;
    s.args.inventory_token = Some(Token::new(TOKEN));
    s
}

fn assert_exactly_once(state: &tests::inventory::Snapshot) {
    assert!(
        state.exactly_once(),
        "an effect was applied twice: {}",
        state.summary()
    );
}

#[tokio::test]
async fn a_webhook_becomes_exactly_one_grant() {
    let s = setup(Faults::none()).await;
    let worker = s.worker().await;
    s.broker
        .publish_webhook(&fixtures::load("order_paid_combined"))
        .await
        .unwrap();
    let state = s
        .inventory
        .wait_for(|s| s.grant("1").is_some(), WITHIN)
        .await
        .unwrap();
    let grant = state.grant("1").unwrap();
    assert_eq!(grant.times_applied, 1);
    assert_eq!(grant.user_id, "id_xsolla_login_1");
    assert_eq!(grant.project_id, Some(18404));
    assert_eq!(grant.idempotency_key, "xsolla:order:1:grant");
    assert_eq!(grant.items.len(), 3);
    assert!(grant.traceparent.is_some(), "traceparent is propagated");
    assert_exactly_once(&state);

    // Acked: nothing left anywhere.
    s.broker
        .wait_queue_len(WORK_QUEUE, 0, WITHIN)
        .await
        .unwrap();
    assert_eq!(s.broker.queue_len(DLQ).await.unwrap(), 0);
    // Counted once the ack completed, which is just after the broker saw it.
    let counted = |text: &str| {
        metric_sum(
            text,
            "worker_deliveries_total",
            &[("type", "order_paid"), ("outcome", "done")],
        ) >= 1.0
    };
    wait::until(WITHIN, "the delivery counted as done", || async {
        metrics(worker.ops).await.is_ok_and(|text| counted(&text))
    })
    .await
    .unwrap();
    let text = metrics(worker.ops).await.unwrap();
    assert!(text.contains("worker_inventory_call_seconds"), "{text}");
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_webhook_accepted_by_the_ingress_becomes_exactly_one_grant() {
    let s = setup(Faults::none()).await;
    // Project 18404's own secret, so the webhook comes in on `/webhooks/xsolla/18404`.
    let projects = std::env::temp_dir().join(format!(
        "worker-test-projects-{}.json",
        uuid::Uuid::new_v4()
    ));
    std::fs::write(&projects, r#"{"18404": ["ingress-secret"]}"#).unwrap();
    let ingress = RunningIngress::start(
        &s.vhost.amqp_url(),
        &[
            "--projects-file",
            projects.to_str().unwrap(),
            "--retry-delays",
            tests::worker_harness::TEST_RETRY_DELAYS,
        ],
    )
    .await
    .expect("ingress starts");
    let _ = std::fs::remove_file(&projects);
    let _worker = s.worker().await;
    let body = fixtures::load("order_paid_separate");
    let http = reqwest::Client::new();
    let post = || async {
        http.post(ingress.url("/webhooks/xsolla/18404"))
            .header(
                "authorization",
                fixtures::authorization(&body, "ingress-secret"),
            )
            .body(body.clone())
            .send()
            .await
            .unwrap()
    };
    assert_eq!(post().await.status(), 204);
    let state = s
        .inventory
        .wait_for(|s| s.grant("1").is_some(), WITHIN)
        .await
        .unwrap();
    let first = state.grant("1").cloned();
    // Xsolla re-sends the same webhook: accepted again, granted still once.
    assert_eq!(post().await.status(), 204);
    let state = s
        .inventory
        .wait_for(|s| s.answered_total(Endpoint::Grants) >= 2, WITHIN)
        .await
        .unwrap();
    assert_eq!(state.grant("1").cloned(), first);
    let grant = state.grant("1").unwrap();
    assert_eq!(grant.times_applied, 1);
    assert_eq!(
        grant.project_id,
        Some(18404),
        "the project from the ingress route"
    );
    assert_eq!(grant.user_id, "id_xsolla_login_1");
    assert_exactly_once(&state);
    ingress.stop().await.unwrap();
}

#[tokio::test]
async fn a_duplicate_webhook_does_not_grant_twice() {
    let s = setup(Faults::none()).await;
    let _worker = s.worker().await;
    for _ in 0..3 {
        s.publish_orders([42]).await;
    }
    let state = s
        .inventory
        .wait_for(|s| s.answered_total(Endpoint::Grants) >= 3, WITHIN)
        .await
        .unwrap();
    assert_eq!(state.grant("42").unwrap().times_applied, 1);
    assert_eq!(state.effects_applied, 1);
    assert_exactly_once(&state);
}

#[tokio::test]
async fn a_cancel_that_overtakes_its_payment_ends_revoked_after_the_grant() {
    let s = setup(Faults::none()).await;
    let _worker = s.worker().await;
    s.broker.publish_webhook(&order_canceled(7)).await.unwrap();
    // The revocation is refused (409 grant not seen yet) before the grant exists...
    s.inventory
        .wait_for(|s| s.answered(Endpoint::Revocations, 409) >= 1, WITHIN)
        .await
        .unwrap();
    s.publish_orders([7]).await;
    // ...and is retried until it applies after the grant.
    let state = s
        .inventory
        .wait_for(|s| s.grant("7").is_some_and(|g| g.revoked), WITHIN)
        .await
        .unwrap();
    let grant = state.grant("7").unwrap();
    assert!(grant.revoked_after_grant);
    assert_eq!(state.revocations["7"].times_applied, 1);
    assert_exactly_once(&state);
}

#[tokio::test]
async fn server_errors_are_retried_through_the_tiers_until_they_succeed() {
    let s = setup(Faults {
        down: true,
        ..Faults::none()
    })
    .await;
    let _worker = s.worker().await;
    s.publish_orders([1, 2]).await;
    // One call and one quick retry per delivery: more than 4 calls means the events came
    // back from a delay tier.
    s.inventory
        .wait_for(|s| s.answered(Endpoint::Grants, 503) >= 6, WITHIN)
        .await
        .unwrap();
    assert_eq!(s.broker.queue_len(DLQ).await.unwrap(), 0);
    s.inventory.update_faults(|f| f.down = false).unwrap();
    let state = s.wait_granted(1..3).await;
    assert_exactly_once(&state);
}

#[tokio::test]
async fn rate_limits_are_honoured_and_retried_until_they_succeed() {
    let s = setup(Faults {
        fail_429: 1.0,
        retry_after_secs: 1,
        ..Faults::none()
    })
    .await;
    let _worker = s.worker().await;
    s.publish_orders([5]).await;
    let started = tokio::time::Instant::now();
    s.inventory
        .wait_for(|s| s.answered(Endpoint::Grants, 429) >= 2, WITHIN)
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the second call waited for Retry-After: 1"
    );
    s.inventory.update_faults(|f| f.fail_429 = 0.0).unwrap();
    let state = s.wait_granted(5..6).await;
    assert_exactly_once(&state);
}

#[tokio::test]
async fn a_mix_of_transient_failures_still_grants_every_order_once() {
    let s = setup(Faults {
        fail_5xx: 0.2,
        fail_429: 0.1,
        retry_after_secs: 0,
        timeout: 0.05,
        timeout_ms: 5_000,
        fail_after_apply: 0.2,
        ..Faults::none()
    })
    .await;
    let _worker = s.worker().await;
    s.publish_orders(100..140).await;
    let state = s.wait_granted(100..140).await;
    assert_exactly_once(&state);
    assert_eq!(s.broker.queue_len(DLQ).await.unwrap(), 0);
}

#[tokio::test]
async fn a_permanent_refusal_goes_to_the_dlq_at_once_with_its_reason() {
    let s = setup(Faults {
        rejected_skus: ["com.xsolla.item_1".to_owned()].into(),
        ..Faults::none()
    })
    .await;
    let worker = s.worker().await;
    let body = order_paid(9);
    s.broker.publish_webhook(&body).await.unwrap();
    s.broker.wait_queue_len(DLQ, 1, WITHIN).await.unwrap();
    let parked = s.broker.take_all(DLQ).await.unwrap();
    assert_eq!(parked.len(), 1);
    let m = &parked[0];
    assert_eq!(m.body, body, "the raw body, unchanged");
    assert_eq!(m.header(header::DEAD_REASON).as_deref(), Some("permanent"));
    assert_eq!(m.int_header(header::LAST_STATUS), Some(422));
    assert!(
        m.header(header::LAST_ERROR)
            .unwrap()
            .contains("unknown_sku")
    );
    assert_eq!(m.int_header(header::ATTEMPTS), Some(1));
    assert_eq!(m.header(header::ROUTING_KEY).as_deref(), Some("order_paid"));
    assert!(
        m.header(header::SIGNATURE).is_some(),
        "original headers are kept"
    );
    assert!(parse_time(&m.header(header::DEAD_LETTERED_AT).unwrap()).is_some());
    assert!(uuid::Uuid::parse_str(&m.header(header::DLQ_ID).unwrap()).is_ok());
    assert_eq!(
        m.properties.message_id().as_ref().map(|s| s.as_str()),
        Some("order_paid:9")
    );
    assert_eq!(m.properties.delivery_mode(), &Some(2));
    // At once: one call, no retries.
    assert_eq!(s.inventory.state().received(Endpoint::Grants), 1);
    let text = metrics(worker.ops).await.unwrap();
    assert!(
        metric_sum(
            &text,
            "worker_dead_lettered_total",
            &[("reason", "permanent")]
        ) >= 1.0
    );
}

#[tokio::test]
async fn a_refused_inventory_token_is_retried_through_the_tiers_not_dead_lettered() {
    let mut s = setup(Faults::none()).await;
    // A rotated token: the game answers 401 to every call.
    s.args.inventory_token = Some(Token::new("S3CR3T-rotated-away"));
    let worker = s.worker().await;
    let at_start = metrics(worker.ops).await.unwrap();
    assert!(
        at_start.contains("worker_inventory_auth_failures_total"),
        "registered at start-up: {at_start}"
    );
    let before = metric_sum(&at_start, "worker_inventory_auth_failures_total", &[]);
    s.publish_orders([12]).await;
    // One call and one quick retry per delivery: a third call came back from a tier.
    s.inventory
        .wait_for(|s| s.answered(Endpoint::Grants, 401) >= 3, WITHIN)
        .await
        .unwrap();
    let text = metrics(worker.ops).await.unwrap();
    assert!(
        metric_sum(&text, "worker_retries_total", &[("tier", "200ms")]) >= 1.0,
        "went to a delay tier: {text}"
    );
    assert!(metric_sum(&text, "worker_inventory_auth_failures_total", &[]) >= before + 3.0);
    assert_eq!(s.broker.queue_len(DLQ).await.unwrap(), 0, "nothing parked");
    assert!(s.inventory.state().grants.is_empty());
}

#[tokio::test]
async fn an_exhausted_retry_budget_goes_to_the_dlq() {
    let mut s = setup(Faults {
        down: true,
        ..Faults::none()
    })
    .await;
    s.args.retry_budget = Duration::from_secs(2);
    let _worker = s.worker().await;
    s.publish_orders([11]).await;
    s.broker.wait_queue_len(DLQ, 1, WITHIN).await.unwrap();
    let parked = s.broker.take_all(DLQ).await.unwrap();
    let m = &parked[0];
    assert_eq!(
        m.header(header::DEAD_REASON).as_deref(),
        Some("retry_budget_exhausted")
    );
    assert_eq!(m.int_header(header::LAST_STATUS), Some(503));
    assert!(
        m.int_header(header::ATTEMPTS).unwrap() >= 2,
        "walked the tiers first"
    );
    assert_eq!(m.header(header::ROUTING_KEY).as_deref(), Some("order_paid"));
    assert_eq!(m.body, order_paid(11));
    assert!(s.inventory.state().grants.is_empty());
}

#[tokio::test]
async fn unreadable_and_unfulfilled_events_go_to_the_dlq() {
    let s = setup(Faults::none()).await;
    let _worker = s.worker().await;
    // Straight into the work queue, as a stray publisher (or an old binding) might.
    let garbage = BasicProperties::default().with_message_id("junk".into());
    s.broker
        .publish("", WORK_QUEUE, b"{not json", garbage)
        .await
        .unwrap();
    let mut headers = FieldTable::default();
    headers.set_str(header::NOTIFICATION_TYPE, "payment");
    let payment = BasicProperties::default().with_headers(headers);
    s.broker
        .publish("", WORK_QUEUE, &fixtures::load("payment"), payment)
        .await
        .unwrap();
    s.broker.wait_queue_len(DLQ, 2, WITHIN).await.unwrap();
    let mut reasons: Vec<_> = s
        .broker
        .take_all(DLQ)
        .await
        .unwrap()
        .iter()
        .map(|m| m.header(header::DEAD_REASON).unwrap())
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["not_fulfilled", "unparsable"]);
    assert_eq!(s.inventory.state().received(Endpoint::Grants), 0);
}

#[tokio::test]
async fn a_quantity_that_is_not_a_positive_integer_is_parked_not_granted_as_one() {
    let s = setup(Faults::none()).await;
    let _worker = s.worker().await;
    // Each used to be granted as quantity 1 and acked.
    let bad = [
        serde_json::json!("50"),
        serde_json::json!(2.5),
        serde_json::json!(1e30),
        serde_json::json!(9_223_372_036_854_775_808_u64),
        serde_json::Value::Null,
        serde_json::json!(true),
    ];
    for (n, quantity) in bad.iter().enumerate() {
        let mut body: serde_json::Value =
            serde_json::from_slice(&order_paid(300 + n as u64)).unwrap();
        body["items"][1]["quantity"] = quantity.clone();
        s.broker
            .publish_webhook(&serde_json::to_vec(&body).unwrap())
            .await
            .unwrap();
    }
    // And one whose quantity is absent: Xsolla documents no default.
    let mut body: serde_json::Value = serde_json::from_slice(&order_paid(399)).unwrap();
    body["items"][0].as_object_mut().unwrap().remove("quantity");
    s.broker
        .publish_webhook(&serde_json::to_vec(&body).unwrap())
        .await
        .unwrap();
    let n = bad.len() as u32 + 1;
    s.broker.wait_queue_len(DLQ, n, WITHIN).await.unwrap();
    let parked = s.broker.take_all(DLQ).await.unwrap();
    assert_eq!(parked.len(), n as usize);
    for m in &parked {
        assert_eq!(m.header(header::DEAD_REASON).as_deref(), Some("unparsable"));
        let error = m.header(header::LAST_ERROR).unwrap();
        let order = webhook::parse(&m.body).unwrap().1.order_id.unwrap();
        let field = if order == "399" {
            "items[0].quantity"
        } else {
            "items[1].quantity"
        };
        assert!(error.contains(field), "order {order}: {error}");
    }
    let errors: Vec<_> = parked
        .iter()
        .map(|m| m.header(header::LAST_ERROR).unwrap())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains(r#"is "50", not a positive integer"#)),
        "{errors:?}"
    );
    let state = s.inventory.state();
    assert_eq!(state.received(Endpoint::Grants), 0, "nothing was granted");
    assert!(state.grants.is_empty());
}

#[tokio::test]
async fn a_worker_killed_mid_batch_loses_nothing_and_grants_nothing_twice() {
    let s = setup(Faults {
        fail_after_apply: 0.1,
        ..Faults::none()
    })
    .await;
    let url = s.vhost.amqp_url();
    // A backlog first, so the kill lands with work prefetched and in flight.
    let batch: Vec<_> = (1000..2000).map(order_paid).collect();
    s.broker.publish_webhooks(&batch).await.unwrap();
    let first = WorkerProcess::spawn(&url, &s.inventory.url(), &[("INVENTORY_TOKEN", TOKEN)])
        .await
        .expect("worker binary starts");
    s.inventory
        .wait_for(|s| s.grants.len() >= 50, WITHIN)
        .await
        .unwrap();
    first.kill().await.unwrap();
    let mid = s.inventory.state().grants.len();
    assert!(mid < 1000, "killed mid-batch ({mid} of 1000 granted)");
    let _second = WorkerProcess::spawn(&url, &s.inventory.url(), &[("INVENTORY_TOKEN", TOKEN)])
        .await
        .unwrap();
    let state = s.wait_granted(1000..2000).await;
    assert_exactly_once(&state);
    s.broker
        .wait_queue_len(WORK_QUEUE, 0, WITHIN)
        .await
        .unwrap();
    assert_eq!(s.broker.queue_len(DLQ).await.unwrap(), 0);
}

#[tokio::test]
async fn three_workers_share_one_queue() {
    let s = setup(Faults::none()).await;
    let url = s.vhost.amqp_url();
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(
            WorkerProcess::spawn(&url, &s.inventory.url(), &[("INVENTORY_TOKEN", TOKEN)])
                .await
                .expect("worker binary starts"),
        );
    }
    s.publish_orders(1..151).await;
    let state = s.wait_granted(1..151).await;
    assert_exactly_once(&state);
    for w in &workers {
        let text = metrics(w.ops).await.unwrap();
        let done = metric_sum(&text, "worker_deliveries_total", &[("outcome", "done")]);
        assert!(done >= 1.0, "every worker took a share (one did {done})");
    }
    for w in workers {
        assert_eq!(w.terminate(WITHIN).await.unwrap(), Some(0));
    }
}

#[tokio::test]
async fn survives_a_cut_broker_connection() {
    let s = setup(Faults::none()).await;
    let worker = s.worker().await;
    s.publish_orders(1..11).await;
    s.wait_granted(1..11).await;
    s.vhost.close_connections().await.unwrap();
    // The suite's own connection went too: a new one.
    let broker = Broker::for_worker(&s.args).await.unwrap();
    wait_ready(worker.ops, WITHIN).await.unwrap();
    for id in 11..21 {
        broker.publish_webhook(&order_paid(id)).await.unwrap();
    }
    let state = s.wait_granted(1..21).await;
    assert_exactly_once(&state);
}

#[tokio::test]
async fn recreates_a_work_queue_deleted_under_it() {
    let s = setup(Faults::none()).await;
    let worker = s.worker().await;
    s.vhost.delete_queue(WORK_QUEUE).await.unwrap();
    // The broker cancels the consumer; the worker declares the topology again and
    // resubscribes, so new webhooks are routed and fulfilled.
    // Until the binding is back a publish lands in xsolla.unrouted, so publish again
    // (harmless: the same order) until one is fulfilled.
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        s.publish_orders([21]).await;
        let granted = s
            .inventory
            .wait_for(|s| s.grant("21").is_some(), Duration::from_secs(1))
            .await;
        if granted.is_ok() || tokio::time::Instant::now() > deadline {
            break;
        }
    }
    assert!(is_ready(worker.ops).await);
    let state = s.wait_granted(21..22).await;
    assert_exactly_once(&state);
}

#[tokio::test]
async fn survives_a_network_cut_to_the_broker() {
    let mut s = setup(Faults::none()).await;
    let proxy = TcpProxy::to_shared_broker().await.unwrap();
    s.args.broker.amqp_url = s.vhost.amqp_url_via(proxy.addr());
    let worker = s.worker().await;
    s.publish_orders(1..6).await;
    s.wait_granted(1..6).await;
    proxy.cut().await;
    tests::wait::until(WITHIN, "worker not ready", || async {
        !is_ready(worker.ops).await
    })
    .await
    .unwrap();
    // Published (directly, not through the proxy) while the worker cannot reach the broker.
    s.publish_orders(6..11).await;
    proxy.restore().await.unwrap();
    wait_ready(worker.ops, WITHIN).await.unwrap();
    let state = s.wait_granted(1..11).await;
    assert_exactly_once(&state);
}

#[tokio::test]
async fn survives_a_private_broker_restart_with_events_waiting_in_the_tiers() {
    let broker = PrivateBroker::start().await.expect("private broker node");
    let inventory = DemoInventory::start(InventoryConfig::default().with_faults(Faults {
        down: true,
        ..Faults::none()
    }))
    .await
    .unwrap();
    let args = test_args(&broker.amqp_url(), &inventory.url());
    let worker = RunningWorker::start(args.clone()).await.unwrap();
    let suite = Broker::for_worker(&args).await.unwrap();
    for id in 1..6 {
        suite.publish_webhook(&order_paid(id)).await.unwrap();
    }
    // The game is down: the events are travelling through the delay tiers.
    inventory
        .wait_for(|s| s.answered(Endpoint::Grants, 503) >= 10, WITHIN)
        .await
        .unwrap();
    broker.stop_app().await.unwrap();
    tests::wait::until(WITHIN, "worker not ready", || async {
        !is_ready(worker.ops).await
    })
    .await
    .unwrap();
    broker.start_app().await.unwrap();
    wait_ready(worker.ops, WITHIN).await.unwrap();
    inventory.update_faults(|f| f.down = false).unwrap();
    let state = inventory
        .wait_for(
            |s| (1..6).all(|id| s.grant(&id.to_string()).is_some()),
            WITHIN,
        )
        .await
        .expect("every event survived the restart");
    assert_exactly_once(&state);
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn survives_an_inventory_outage() {
    let s = setup(Faults::none()).await;
    let worker = s.worker().await;
    let addr = s.inventory.addr();
    let WorkerSetup {
        inventory, broker, ..
    } = s;
    inventory.shutdown().await.unwrap();
    // Nothing listens now: connection refused on every call.
    for id in 1..6 {
        broker.publish_webhook(&order_paid(id)).await.unwrap();
    }
    // Refused calls, retried in-process and through the tiers (each test runs in its own
    // process under nextest; `>=` keeps it true under `cargo test` as well).
    tests::wait::until(WITHIN, "refused inventory calls", || async {
        let text = metrics(worker.ops).await.unwrap_or_default();
        let refused = [("status", "connection_error")];
        metric_sum(&text, "worker_inventory_call_seconds_count", &refused) >= 15.0
    })
    .await
    .unwrap();
    let inventory = DemoInventory::start(
        InventoryConfig::default()
            .with_token(TOKEN)
            .with_listen(addr),
    )
    .await
    .expect("inventory back on the same address");
    let state = inventory
        .wait_for(
            |s| (1..6).all(|id| s.grant(&id.to_string()).is_some()),
            WITHIN,
        )
        .await
        .unwrap();
    assert_exactly_once(&state);
    assert_eq!(broker.queue_len(DLQ).await.unwrap(), 0);
}

#[tokio::test]
async fn graceful_shutdown_settles_in_flight_work_and_loses_nothing() {
    // Every call hangs 1 s and then fails: the delivery is in flight when we stop.
    let s = setup(Faults {
        timeout: 1.0,
        timeout_ms: 1_000,
        ..Faults::none()
    })
    .await;
    let worker = s.worker().await;
    s.publish_orders([3]).await;
    s.inventory
        .wait_for(|s| s.received(Endpoint::Grants) >= 1, WITHIN)
        .await
        .unwrap();
    tokio::time::timeout(WITHIN, worker.stop())
        .await
        .expect("stops within the shutdown timeout")
        .unwrap();
    s.inventory.set_faults(Faults::none()).unwrap();
    let _next = s.worker().await;
    let state = s.wait_granted(3..4).await;
    assert_exactly_once(&state);
}

#[tokio::test]
async fn is_not_ready_without_a_broker() {
    let inventory = DemoInventory::start(InventoryConfig::default())
        .await
        .unwrap();
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let args = test_args(
        &format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        &inventory.url(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ops = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(worker::run(listener, args, stop.clone()));
    tests::wait::until(WITHIN, "healthz", || async {
        matches!(reqwest::get(format!("http://{ops}/healthz")).await, Ok(r) if r.status() == 200)
    })
    .await
    .unwrap();
    let ready = reqwest::get(format!("http://{ops}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    stop.cancel();
    tokio::time::timeout(WITHIN, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
