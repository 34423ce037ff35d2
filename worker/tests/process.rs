//! `process` end to end against a scripted HTTP server: what the inventory API receives,
//! and which outcome each kind of answer leads to. No broker needed.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    response::IntoResponse,
    routing::post,
};
use lapin::{BasicProperties, types::FieldTable};
use reqwest::Url;
use serde_json::Value;
use shared::{
    envelope::{HeadersExt, header},
    webhook::FulfilmentMode,
};
use tokio_util::sync::CancellationToken;
use worker::{
    Context, DeadReason, Failure, Message, Outcome, config::Token, inventory::InventoryClient,
    process, retry::RetryPolicy,
};

/// One recorded call.
#[derive(Debug, Clone)]
struct Call {
    path: String,
    headers: HeaderMap,
    body: Value,
}

/// Answers every call with `status` (and `Retry-After`, if set) and records it.
#[derive(Clone)]
struct Script {
    status: u16,
    retry_after: Option<&'static str>,
    calls: Arc<Mutex<Vec<Call>>>,
}

async fn answer(
    State(s): State<Script>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    s.calls.lock().unwrap().push(Call {
        path: uri.path().to_owned(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let mut h = HeaderMap::new();
    if let Some(ra) = s.retry_after {
        h.insert("retry-after", ra.parse().unwrap());
    }
    (
        StatusCode::from_u16(s.status).unwrap(),
        h,
        r#"{"error":"scripted"}"#,
    )
}

async fn serve(status: u16, retry_after: Option<&'static str>) -> (Url, Arc<Mutex<Vec<Call>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let script = Script {
        status,
        retry_after,
        calls: calls.clone(),
    };
    let app = Router::new()
        .route("/api/grants", post(answer))
        .route("/api/revocations", post(answer))
        .with_state(script);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/api", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

fn context(url: &Url, mode: FulfilmentMode) -> Context {
    Context {
        inventory: InventoryClient::new(url, Some(&Token::new("t0ken")), Duration::from_secs(5))
            .unwrap(),
        policy: RetryPolicy {
            tiers: vec![Duration::from_millis(200), Duration::from_millis(500)],
            budget: Duration::from_secs(3600),
            quick_retries: 1,
        },
        mode,
        stopping: CancellationToken::new(),
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../tests/fixtures/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(path).unwrap()
}

fn properties(attempts: i64, received_at: &str) -> BasicProperties {
    let mut h = FieldTable::default();
    h.set_str(header::NOTIFICATION_TYPE, "order_paid")
        .set_str(header::RECEIVED_AT, received_at)
        .set_int(header::ATTEMPTS, attempts)
        .set_str(header::PROJECT_ID, "18404")
        .set_str(
            header::TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
    BasicProperties::default()
        .with_message_id("order_paid:1".into())
        .with_headers(h)
}

fn now() -> String {
    shared::envelope::now_rfc3339()
}

async fn run(ctx: &Context, body: &[u8], props: &BasicProperties) -> Outcome {
    let msg = Message {
        body,
        properties: props,
        routing_key: "order_paid",
    };
    process(ctx, &msg).await
}

#[tokio::test]
async fn grants_with_the_contract_headers_and_body() {
    let (url, calls) = serve(201, None).await;
    let ctx = context(&url, FulfilmentMode::default());
    let received = "2025-01-01T00:00:00Z";
    let outcome = run(
        &ctx,
        &fixture("order_paid_separate"),
        &properties(0, received),
    )
    .await;
    assert_eq!(outcome, Outcome::Done);
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.path, "/api/grants");
    let h = |name: &str| call.headers.get(name).unwrap().to_str().unwrap().to_owned();
    assert_eq!(h("idempotency-key"), "xsolla:order:1:grant");
    assert_eq!(h("authorization"), "Bearer t0ken");
    assert_eq!(h("content-type"), "application/json");
    assert_eq!(
        h("traceparent"),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(call.body["idempotency_key"], "xsolla:order:1:grant");
    assert_eq!(
        call.body["project_id"], 18404,
        "from x-project-id in separate mode"
    );
    assert_eq!(call.body["received_at"], received);
    assert_eq!(call.body["order_id"], "1");
}

#[tokio::test]
async fn revokes_through_the_revocations_endpoint() {
    let (url, calls) = serve(200, None).await;
    let ctx = context(&url, FulfilmentMode::default());
    let outcome = run(
        &ctx,
        &fixture("order_canceled_separate"),
        &properties(0, &now()),
    )
    .await;
    assert_eq!(outcome, Outcome::Done);
    assert_eq!(calls.lock().unwrap()[0].path, "/api/revocations");
}

#[tokio::test]
async fn a_refused_token_is_retried_not_dead_lettered() {
    for status in [401, 403] {
        let (url, _calls) = serve(status, None).await;
        let ctx = context(&url, FulfilmentMode::default());
        let outcome = run(
            &ctx,
            &fixture("order_paid_combined"),
            &properties(0, &now()),
        )
        .await;
        match outcome {
            Outcome::Retry {
                failure:
                    Failure {
                        status: last_status,
                        error: last_error,
                        ..
                    },
                ..
            } => {
                assert_eq!(last_status, Some(status));
                assert!(last_error.contains("INVENTORY_TOKEN"), "{last_error}");
                assert!(!last_error.contains("t0ken"), "{last_error}");
            }
            other => panic!("{status}: expected a retry, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_crafted_attempt_count_is_settled_at_once() {
    let (url, _calls) = serve(503, None).await;
    let ctx = context(&url, FulfilmentMode::default());
    let outcome = run(
        &ctx,
        &fixture("order_paid_combined"),
        &properties(4_294_967_294, &now()),
    )
    .await;
    // Believed up to MAX_ATTEMPTS: 10 000 walks of the tiers are past any budget.
    match outcome {
        Outcome::Dead {
            reason, attempts, ..
        } => {
            assert_eq!(reason, DeadReason::RetryBudgetExhausted);
            assert_eq!(attempts, worker::retry::MAX_ATTEMPTS + 1);
        }
        other => panic!("expected the DLQ, got {other:?}"),
    }
}

#[tokio::test]
async fn a_server_error_is_retried_in_process_then_sent_to_the_first_tier() {
    let (url, calls) = serve(503, None).await;
    let ctx = context(&url, FulfilmentMode::default());
    let outcome = run(
        &ctx,
        &fixture("order_paid_combined"),
        &properties(0, &now()),
    )
    .await;
    match outcome {
        Outcome::Retry {
            delay,
            attempts,
            failure:
                Failure {
                    status: last_status,
                    error: last_error,
                    ..
                },
        } => {
            assert_eq!(delay, Duration::from_millis(200));
            assert_eq!(attempts, 1);
            assert_eq!(last_status, Some(503));
            assert!(last_error.contains("scripted"), "{last_error}");
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    assert_eq!(
        calls.lock().unwrap().len(),
        2,
        "one call and one quick retry"
    );
}

#[tokio::test]
async fn later_attempts_stay_on_the_last_tier() {
    let (url, _) = serve(500, None).await;
    let ctx = context(&url, FulfilmentMode::default());
    let outcome = run(
        &ctx,
        &fixture("order_paid_combined"),
        &properties(5, &now()),
    )
    .await;
    assert!(
        matches!(outcome, Outcome::Retry { delay, attempts: 6, .. } if delay == Duration::from_millis(500)),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_long_retry_after_skips_quick_retries_and_picks_a_tier() {
    let (url, calls) = serve(429, Some("60")).await;
    let ctx = context(&url, FulfilmentMode::default());
    let outcome = run(
        &ctx,
        &fixture("order_paid_combined"),
        &properties(0, &now()),
    )
    .await;
    assert!(
        matches!(outcome, Outcome::Retry { delay, failure: Failure { status: Some(429), .. }, .. } if delay == Duration::from_millis(500)),
        "longest tier when none is long enough: {outcome:?}"
    );
    assert_eq!(calls.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_permanent_refusal_is_dead_lettered_at_once() {
    let (url, calls) = serve(422, None).await;
    let ctx = context(&url, FulfilmentMode::default());
    let outcome = run(
        &ctx,
        &fixture("order_paid_combined"),
        &properties(0, &now()),
    )
    .await;
    assert!(
        matches!(
            &outcome,
            Outcome::Dead {
                reason: DeadReason::Permanent,
                attempts: 1,
                failure: Failure {
                    status: Some(422),
                    ..
                },
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(calls.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_conflict_means_retry_for_a_revocation_but_dead_for_a_grant() {
    let (url, _) = serve(409, None).await;
    let ctx = context(&url, FulfilmentMode::default());
    let revoke = run(
        &ctx,
        &fixture("order_canceled_separate"),
        &properties(0, &now()),
    )
    .await;
    assert!(
        matches!(
            revoke,
            Outcome::Retry {
                failure: Failure {
                    status: Some(409),
                    ..
                },
                ..
            }
        ),
        "{revoke:?}"
    );
    let grant = run(
        &ctx,
        &fixture("order_paid_separate"),
        &properties(0, &now()),
    )
    .await;
    assert!(
        matches!(
            grant,
            Outcome::Dead {
                reason: DeadReason::Permanent,
                ..
            }
        ),
        "{grant:?}"
    );
}

#[tokio::test]
async fn an_event_past_its_budget_is_dead_lettered() {
    let (url, _) = serve(503, None).await;
    let ctx = context(&url, FulfilmentMode::default());
    let outcome = run(
        &ctx,
        &fixture("order_paid_combined"),
        &properties(3, "2020-01-01T00:00:00Z"),
    )
    .await;
    assert!(
        matches!(
            &outcome,
            Outcome::Dead {
                reason: DeadReason::RetryBudgetExhausted,
                attempts: 4,
                failure: Failure {
                    status: Some(503),
                    ..
                },
                ..
            }
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn unreadable_and_unfulfilled_events_never_reach_the_api() {
    let (url, calls) = serve(201, None).await;
    let ctx = context(&url, FulfilmentMode::default());
    let props = properties(0, &now());
    let bad = run(&ctx, b"{not json", &props).await;
    assert!(
        matches!(
            bad,
            Outcome::Dead {
                reason: DeadReason::Unparsable,
                ..
            }
        ),
        "{bad:?}"
    );
    let no_items = run(
        &ctx,
        br#"{"notification_type":"order_paid","order":{"id":1}}"#,
        &props,
    )
    .await;
    assert!(matches!(
        no_items,
        Outcome::Dead {
            reason: DeadReason::Unparsable,
            ..
        }
    ));
    let payment = run(&ctx, &fixture("payment"), &props).await;
    assert!(matches!(
        payment,
        Outcome::Dead {
            reason: DeadReason::NotFulfilled,
            ..
        }
    ));
    assert!(calls.lock().unwrap().is_empty());

    let payments = context(&url, FulfilmentMode { payments: true });
    assert_eq!(
        run(&payments, &fixture("payment"), &props).await,
        Outcome::Done
    );
}

#[tokio::test]
async fn an_unreachable_api_is_transient() {
    // Bind and drop, so nothing listens on the port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let mut ctx = context(&url, FulfilmentMode::default());
    ctx.policy.quick_retries = 0;
    let outcome = run(
        &ctx,
        &fixture("order_paid_combined"),
        &properties(0, &now()),
    )
    .await;
    match outcome {
        Outcome::Retry {
            failure:
                Failure {
                    status: None,
                    error: last_error,
                    ..
                },
            ..
        } => assert!(last_error.contains("request failed"), "{last_error}"),
        other => panic!("expected a retry, got {other:?}"),
    }
}
