//! `xsolla-sim` against real servers: the binary's retry behaviour against a scripted axum
//! endpoint, and the load tool against a real in-process ingress and RabbitMQ.

use std::{
    collections::VecDeque,
    process::Output,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use shared::{signature, topology::WORK_QUEUE};
use tests::{
    ingress_harness::RunningIngress,
    rabbit::TestVhost,
    sim::{self, Kind, LoadPlan, Overrides, Policy, Sender, Template, lean},
};
use tokio::net::TcpListener;

const SECRET: &str = "sim-test-secret";

/// An endpoint that answers the scripted statuses in turn (the last one forever) and
/// keeps whether each request's signature was valid.
struct Scripted {
    answers: Mutex<VecDeque<u16>>,
    signed_ok: Mutex<Vec<bool>>,
}

async fn scripted(State(s): State<Arc<Scripted>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    let valid = signature::verify(auth, &body, &[SECRET]).is_ok();
    s.signed_ok.lock().unwrap().push(valid);
    let mut answers = s.answers.lock().unwrap();
    let status = if answers.len() > 1 {
        answers.pop_front()
    } else {
        answers.front().copied()
    };
    StatusCode::from_u16(status.unwrap_or(204)).unwrap()
}

async fn serve(answers: &[u16]) -> (String, Arc<Scripted>) {
    let state = Arc::new(Scripted {
        answers: Mutex::new(answers.iter().copied().collect()),
        signed_ok: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/webhooks/xsolla", post(scripted))
        .with_state(state.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/xsolla", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, state)
}

/// Runs the real `xsolla-sim` binary.
async fn xsolla_sim(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_xsolla-sim"))
        .args(args)
        .env("XSOLLA_WEBHOOK_SECRET", SECRET)
        .output()
        .await
        .expect("xsolla-sim runs")
}

fn report(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test]
async fn send_with_retry_resends_after_503s_until_acknowledged() {
    let (url, endpoint) = serve(&[503, 503, 204]).await;
    // 0.0001: the 5-minute waits become 30 ms.
    let out = xsolla_sim(&[
        "send",
        "order_paid",
        "--url",
        &url,
        "--retry",
        "--time-scale",
        "0.0001",
        "--order-id",
        "7",
        "--json",
    ])
    .await;
    let r = report(&out);
    assert_eq!(out.status.code(), Some(0), "{r}");
    assert_eq!(r["acknowledged"], true);
    assert_eq!(r["final_status"], 204);
    assert_eq!(r["delivery"]["attempts"].as_array().unwrap().len(), 3);
    let second_at = r["delivery"]["attempts"][1]["at"].as_f64().unwrap();
    assert!(
        second_at >= 30.0,
        "waited the scaled 5 min before re-sending: {second_at} ms"
    );
    assert_eq!(*endpoint.signed_ok.lock().unwrap(), [true, true, true]);
}

#[tokio::test]
async fn send_stops_at_once_on_a_no_retry_400() {
    let (url, endpoint) = serve(&[400]).await;
    let out = xsolla_sim(&[
        "send",
        "order_paid",
        "--url",
        &url,
        "--retry",
        "--time-scale",
        "0.0001",
        "--json",
    ])
    .await;
    let r = report(&out);
    assert_eq!(out.status.code(), Some(1), "refused exits 1: {r}");
    assert_eq!(r["acknowledged"], false);
    assert_eq!(r["delivery"]["outcome"], "refused");
    assert_eq!(r["delivery"]["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(endpoint.signed_ok.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn send_without_retry_gives_up_on_503_with_exit_3() {
    let (url, _endpoint) = serve(&[503]).await;
    let out = xsolla_sim(&["send", "payment", "--url", &url, "--json"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", report(&out));
}

/// A user API that knows nobody: every `user_validation` is answered `INVALID_USER`.
async fn user_api_of_nobody() -> String {
    let app = Router::new().route(
        "/users/{id}",
        axum::routing::get(|| async { StatusCode::NOT_FOUND }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/users/{{user_id}}",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Two 400s that mean different things (the user is unknown; the secret is wrong) must be
/// told apart on screen: `send` prints each answer's body, and `--json` carries it.
#[tokio::test]
async fn send_prints_the_answer_body_so_invalid_user_and_invalid_signature_differ() {
    let vhost = TestVhost::create().await.unwrap();
    let users = user_api_of_nobody().await;
    let ingress = RunningIngress::start(
        &vhost.amqp_url(),
        &["--webhook-secret", SECRET, "--user-check-url", &users],
    )
    .await
    .unwrap();
    let url = ingress.url("/webhooks/xsolla");
    let send = |secret: &'static str, json: bool| {
        let url = url.clone();
        async move {
            let mut args = vec![
                "send",
                "user_validation",
                "--user",
                "nobody",
                "--url",
                &url,
                "--secret",
                secret,
            ];
            if json {
                args.push("--json");
            }
            xsolla_sim(&args).await
        }
    };

    let unknown = send(SECRET, false).await;
    let text = String::from_utf8_lossy(&unknown.stdout).into_owned();
    assert_eq!(unknown.status.code(), Some(1), "{text}");
    assert!(text.contains("HTTP 400"), "{text}");
    assert!(text.contains(r#""code":"INVALID_USER""#), "{text}");
    let forged = send("not-the-secret", false).await;
    let text = String::from_utf8_lossy(&forged.stdout).into_owned();
    assert_eq!(forged.status.code(), Some(1), "{text}");
    assert!(text.contains(r#""code":"INVALID_SIGNATURE""#), "{text}");
    assert!(!text.contains("INVALID_USER"), "{text}");

    let r = report(&send(SECRET, true).await);
    let body = r["delivery"]["attempts"][0]["body"].as_str().unwrap();
    let answer: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(answer["error"]["code"], "INVALID_USER", "{r}");
    ingress.stop().await.unwrap();
    vhost.delete().await.unwrap();
}

#[tokio::test]
async fn bad_usage_exits_2() {
    let out = xsolla_sim(&[
        "send",
        "user_validation",
        "--sku",
        "x",
        "--url",
        "http://127.0.0.1:9/",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sku does not apply"));
}

#[tokio::test]
async fn load_through_the_ingress_lands_every_acknowledged_webhook_in_the_work_queue() {
    let vhost = TestVhost::create().await.unwrap();
    let ingress = RunningIngress::start(&vhost.amqp_url(), &["--webhook-secret", SECRET])
        .await
        .unwrap();
    let sender = Sender::new(
        &ingress.url("/webhooks/xsolla"),
        Policy::default(),
        8,
        Duration::from_secs(10),
    )
    .unwrap();
    let template = Template::new(Kind::OrderPaid, &Overrides::default()).unwrap();
    let plan = LoadPlan {
        rate: Some(200.0),
        duration: Duration::from_millis(500),
        concurrency: 8,
        run_id: sim::new_run_id(),
    };
    let report = sim::load::run(&sender, &template, SECRET, &plan).await;
    assert_eq!(report.sent, 100, "{report}");
    assert_eq!(report.acked, report.sent, "{report}");
    assert_eq!(report.latency_ms.count, report.acked);
    // Exactly one message per acknowledged webhook: none lost, none doubled.
    vhost
        .wait_queue_len(WORK_QUEUE, report.acked, Duration::from_secs(10))
        .await
        .unwrap();
    ingress.stop().await.unwrap();
    vhost.delete().await.unwrap();
}

/// The benchmarks' lean generator: closed and open loop against the real ingress, every
/// acknowledged webhook one message; with a wrong secret every answer is a 400 with a
/// body, read off the same keep-alive connections (a body left unread would be taken for
/// the next answer's head and fail it).
#[tokio::test]
async fn lean_load_counts_answers_like_the_sender_and_lands_every_acked_webhook() {
    let vhost = TestVhost::create().await.unwrap();
    let ingress = RunningIngress::start(&vhost.amqp_url(), &["--webhook-secret", SECRET])
        .await
        .unwrap();
    let target = lean::Target::new(&ingress.url("/webhooks/xsolla")).unwrap();
    let template = Template::new(Kind::OrderPaid, &Overrides::default()).unwrap();
    let plan = |rate, ms| LoadPlan {
        rate,
        duration: Duration::from_millis(ms),
        concurrency: 4,
        run_id: sim::new_run_id(),
    };

    let closed = lean::run(&target, &template, SECRET, &plan(None, 300)).await;
    assert!(closed.sent > 4, "{closed}");
    assert_eq!(closed.acked, closed.sent, "{closed}");
    assert_eq!(closed.answers.status_2xx, closed.sent);
    let open = lean::run(&target, &template, SECRET, &plan(Some(200.0), 500)).await;
    assert_eq!((open.sent, open.acked), (100, 100), "{open}");
    assert!(open.slowest_at_s.is_some_and(|at| at < 1.0), "{open}");
    vhost
        .wait_queue_len(
            WORK_QUEUE,
            closed.acked + open.acked,
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let refused = lean::run(&target, &template, "wrong-secret", &plan(None, 200)).await;
    assert!(refused.sent > 4, "{refused}");
    assert_eq!(refused.refused, refused.sent, "{refused}");
    assert_eq!(refused.answers.status_4xx, refused.sent, "{refused}");
    assert_eq!(refused.answers.no_answer, 0, "{refused}");

    assert!(lean::Target::new("https://127.0.0.1:1/x").is_err());
    assert!(
        lean::Target::new("http://localhost:8080/x").is_err(),
        "no name lookup"
    );
    ingress.stop().await.unwrap();
    vhost.delete().await.unwrap();
}

/// `bare-relay`, the ingress bench's ceiling, really is a confirmed publisher: it answers
/// 204 only for messages the broker holds (one message per 204 in the work queue) and 503
/// once its messages have nowhere to go (returned as unroutable).
#[tokio::test]
async fn bare_relay_answers_204_per_confirmed_message_and_503_when_returned() {
    let vhost = TestVhost::create().await.unwrap();
    sim::vhost::declare_topology(&vhost.amqp_url())
        .await
        .unwrap();
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut relay = tokio::process::Command::new(env!("CARGO_BIN_EXE_bare-relay"))
        .env("RELAY_LISTEN", listen.to_string())
        .env("AMQP_URL", vhost.amqp_url())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ready = format!("http://{listen}/readyz");
    tests::wait::until(Duration::from_secs(30), "bare-relay ready", || async {
        matches!(reqwest::get(&ready).await, Ok(r) if r.status() == 200)
    })
    .await
    .unwrap();
    let target = lean::Target::new(&format!("http://{listen}/webhooks/xsolla")).unwrap();
    let template = Template::new(Kind::OrderPaid, &Overrides::default()).unwrap();
    let plan = LoadPlan {
        rate: Some(200.0),
        duration: Duration::from_millis(250),
        concurrency: 4,
        run_id: sim::new_run_id(),
    };
    let report = lean::run(&target, &template, SECRET, &plan).await;
    assert_eq!((report.sent, report.acked), (50, 50), "{report}");
    vhost
        .wait_queue_len(WORK_QUEUE, 50, Duration::from_secs(10))
        .await
        .unwrap();

    // Every queue an order_paid reaches: the work queue, the order-event stream, and the
    // alternate exchange's queue that would catch it otherwise.
    for queue in [
        WORK_QUEUE,
        shared::order_events::STREAM,
        shared::topology::UNROUTED_QUEUE,
    ] {
        vhost.delete_queue(queue).await.unwrap();
    }
    let refused = lean::run(&target, &template, SECRET, &plan).await;
    assert_eq!(refused.acked, 0, "{refused}");
    assert_eq!(refused.answers.status_5xx, refused.sent, "{refused}");
    relay.kill().await.unwrap();
    vhost.delete().await.unwrap();
}
