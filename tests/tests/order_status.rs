//! `order-status` against the real RabbitMQ and the real binary, with a raw WebSocket client
//! that behaves like Xsolla's Unity/Cocos SDKs (one JSON message per frame, `{}` on its
//! own). Webhooks are published the way the ingress publishes them, worker events with
//! `shared::order_events::publish`. Each test has its own vhost, so they run in parallel.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use shared::{
    amqp::Session,
    order_events::{self, EventKind, OrderEvent},
    topology::Topology,
};
use tests::{
    rabbit::TestVhost,
    status_harness::{RunningStatus, TEST_JWT_SECRET, mint_expired_jwt, mint_jwt},
    wait,
    worker_harness::Broker,
};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

const PROJECT: u64 = 18404;
/// Generous: CI machines are slow and share two cores with compilers.
const WITHIN: Duration = Duration::from_secs(20);
const HOUR: Duration = Duration::from_secs(3600);

/// A vhost, a publisher of webhooks and worker events.
struct Setup {
    vhost: TestVhost,
    broker: Broker,
    events: Session,
}

async fn setup() -> Setup {
    let vhost = TestVhost::create().await.expect("test vhost");
    let topology = Topology::default();
    let broker = Broker::connect(&vhost.amqp_url(), &topology)
        .await
        .expect("suite connects");
    let events = Session::open(&vhost.amqp_url(), "test-events", &topology)
        .await
        .expect("event publisher connects");
    Setup {
        vhost,
        broker,
        events,
    }
}

impl Setup {
    async fn status(&self, env: &[(&str, &str)]) -> RunningStatus {
        RunningStatus::start(&self.vhost.amqp_url(), env)
            .await
            .expect("order-status starts")
    }

    /// `order_paid` for `order` of `user`, as the ingress publishes it.
    async fn paid(&self, order: u64, user: &str) {
        self.broker
            .publish_webhook(&paid_body(order, user))
            .await
            .expect("order_paid");
    }

    /// `order_canceled` for `order` of `user`.
    async fn canceled(&self, order: u64, user: &str) {
        let mut body: Value =
            serde_json::from_slice(&tests::fixtures::load("order_canceled_separate")).unwrap();
        body["order"]["id"] = json!(order);
        body["user"]["external_id"] = json!(user);
        body["settings"] = json!({"project_id": PROJECT});
        let body = serde_json::to_vec(&body).unwrap();
        self.broker
            .publish_webhook(&body)
            .await
            .expect("order_canceled");
    }

    /// A worker event (granted, revoked, …) for `order` of `user`.
    async fn event(&self, kind: EventKind, order: u64, user: &str) {
        let event = OrderEvent::new(kind, Some(PROJECT), &order.to_string(), user);
        order_events::publish(self.events.channel(), &event, Duration::from_secs(10))
            .await
            .expect("worker event");
    }
}

/// A combined-mode `order_paid` (project 18404) for `order` of `user`.
fn paid_body(order: u64, user: &str) -> Vec<u8> {
    tests::fixtures::with(
        "order_paid_combined",
        &[
            ("/order/id", json!(order)),
            ("/billing/transaction/id", json!(order)),
            ("/user/external_id", json!(user)),
        ],
    )
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw client: one JSON per frame, as Xsolla's SDKs write them.
struct Client {
    ws: Socket,
}

/// How the server ended a connection.
#[derive(Debug, PartialEq)]
struct Closed(u16, String);

impl Client {
    async fn open(status: &RunningStatus) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(status.ws_url())
            .await
            .expect("WebSocket upgrade");
        Client { ws }
    }

    async fn send(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// Sends the SDKs' connect: `{"connect":{"data":{"auth","project_id"}},"id":1}`.
    async fn connect(&mut self, jwt: &str, project: u64) -> Value {
        let cmd = json!({"connect": {"data": {"auth": jwt, "project_id": project}}, "id": 1});
        self.send(&cmd.to_string()).await;
        self.reply().await
    }

    /// The next message that is not a server ping (`{}`).
    async fn reply(&mut self) -> Value {
        loop {
            match self.next().await {
                Ok(v) if v == json!({}) => continue,
                Ok(v) => return v,
                Err(closed) => panic!("closed while waiting for a reply: {closed:?}"),
            }
        }
    }

    /// The next JSON message (pings included), or how the connection closed.
    async fn next(&mut self) -> Result<Value, Closed> {
        let deadline = tokio::time::Instant::now() + WITHIN;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("no message within the deadline");
            match message {
                Some(Ok(Message::Text(t))) => {
                    assert!(!t.contains('\n'), "one JSON message per frame: {t:?}");
                    return Ok(serde_json::from_str(&t).expect("JSON"));
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return Err(Closed(code, reason));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(Closed(1006, e.to_string())),
                None => return Err(Closed(1006, "EOF".into())),
            }
        }
    }

    /// Skips messages until the server closes; returns the close frame.
    async fn closed(&mut self) -> Closed {
        loop {
            if let Err(closed) = self.next().await {
                return closed;
            }
        }
    }

    /// History of `channel` from offset 0, all of it.
    async fn history(&mut self, channel: &str, id: u32) -> Value {
        let cmd =
            json!({"history": {"channel": channel, "since": {"offset": 0}, "limit": -1}, "id": id});
        self.send(&cmd.to_string()).await;
        self.reply_to(id).await
    }

    /// The reply to command `id`, skipping pushes and pings that come first.
    async fn reply_to(&mut self, id: u32) -> Value {
        loop {
            let v = self.reply().await;
            if v["id"] == id {
                return v;
            }
            assert!(v["push"].is_object(), "neither push nor reply {id}: {v}");
        }
    }
}

/// `[(order_id, status)]` of a history reply.
fn statuses(history: &Value) -> Vec<(u64, String)> {
    history["history"]["publications"]
        .as_array()
        .unwrap_or_else(|| panic!("not a history reply: {history}"))
        .iter()
        .map(|p| {
            (
                p["data"]["order_id"].as_u64().unwrap(),
                p["data"]["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pushed(v: &Value) -> (u64, String, u64) {
    let pub_ = &v["push"]["pub"];
    (
        pub_["data"]["order_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("not a push: {v}")),
        pub_["data"]["status"].as_str().unwrap().to_owned(),
        pub_["offset"].as_u64().unwrap(),
    )
}

fn channel(user: &str) -> String {
    format!("orders:{PROJECT}:{user}")
}

/// GET the short-poll for `order` of `project` with `jwt`; (status, body).
async fn poll(status: &RunningStatus, project: u64, order: u64, jwt: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(status.url(&format!("/api/v2/project/{project}/order/{order}")))
        .bearer_auth(jwt)
        .send()
        .await
        .expect("poll");
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

async fn wait_poll_status(status: &RunningStatus, order: u64, jwt: &str, want: &str) {
    wait::until(WITHIN, &format!("order {order} {want}"), || async {
        let (code, body) = poll(status, PROJECT, order, jwt).await;
        code == 200 && body["status"] == want
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn connect_subscribes_and_history_and_pushes_follow_the_grant() {
    let s = setup().await;
    s.paid(5001, "u1").await;
    let status = s.status(&[]).await;
    let jwt = mint_jwt(TEST_JWT_SECRET, "u1", HOUR);
    let mut c = Client::open(&status).await;
    let reply = c.connect(&jwt, PROJECT).await;
    let connect = &reply["connect"];
    assert_eq!(reply["id"], 1);
    assert!(
        connect["client"].as_str().is_some_and(|c| !c.is_empty()),
        "{reply}"
    );
    assert_eq!(connect["ping"], 25);
    assert_eq!(connect["pong"], true);
    assert_eq!(connect["subs"], json!({ channel("u1"): {} }));
    // The raw SDKs never call history: the open order's status is pushed at once.
    assert_eq!(pushed(&c.reply().await), (5001, "paid".into(), 1));
    let history = c.history(&channel("u1"), 2).await;
    assert_eq!(history["id"], 2);
    assert_eq!(statuses(&history), [(5001, "paid".to_owned())]);
    assert_eq!(history["history"]["offset"], 1);
    assert!(
        history["history"]["epoch"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    s.event(EventKind::Granted, 5001, "u1").await;
    assert_eq!(pushed(&c.reply().await), (5001, "done".into(), 2));
    wait_poll_status(&status, 5001, &jwt, "done").await;
    let (_, body) = poll(&status, PROJECT, 5001, &jwt).await;
    assert_eq!(body["order_id"], 5001);
    assert_eq!(body["content"]["items"][0]["sku"], "com.xsolla.item_1");
    assert_eq!(body["content"]["items"][0]["quantity"], 3);
    assert_eq!(body["content"]["price"]["currency"], "sku_currency");
}

#[tokio::test]
async fn statuses_never_go_backwards_and_a_cancel_is_final() {
    let s = setup().await;
    let status = s.status(&[]).await;
    let jwt = mint_jwt(TEST_JWT_SECRET, "u2", HOUR);
    s.paid(6001, "u2").await;
    s.event(EventKind::Granted, 6001, "u2").await;
    s.paid(6001, "u2").await; // Xsolla's re-send after done
    s.paid(6002, "u2").await;
    s.canceled(6002, "u2").await;
    s.event(EventKind::Granted, 6002, "u2").await; // a grant that completed after the cancel
    s.canceled(6003, "u2").await; // a cancel overtaking its payment
    s.paid(6003, "u2").await;
    wait_poll_status(&status, 6003, &jwt, "canceled").await;
    wait_poll_status(&status, 6002, &jwt, "canceled").await;
    wait_poll_status(&status, 6001, &jwt, "done").await;
    let mut c = Client::open(&status).await;
    c.connect(&jwt, PROJECT).await;
    let history = c.history(&channel("u2"), 2).await;
    let got = statuses(&history);
    assert_eq!(
        got,
        [
            (6001, "paid".to_owned()),
            (6001, "done".to_owned()),
            (6002, "paid".to_owned()),
            (6002, "canceled".to_owned()),
            (6003, "canceled".to_owned()),
        ],
        "{history}"
    );
}

#[tokio::test]
async fn a_user_sees_only_their_own_orders_on_both_endpoints() {
    let s = setup().await;
    s.paid(7001, "alice").await;
    let status = s.status(&[]).await;
    let alice = mint_jwt(TEST_JWT_SECRET, "alice", HOUR);
    let mallory = mint_jwt(TEST_JWT_SECRET, "mallory", HOUR);
    wait_poll_status(&status, 7001, &alice, "paid").await;
    let (code, body) = poll(&status, PROJECT, 7001, &mallory).await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(poll(&status, PROJECT + 1, 7001, &alice).await.0, 404);
    assert_eq!(poll(&status, PROJECT, 7999, &alice).await.0, 404);
    let mut c = Client::open(&status).await;
    let reply = c.connect(&mallory, PROJECT).await;
    assert_eq!(reply["connect"]["subs"], json!({ channel("mallory"): {} }));
    let other = c.history(&channel("alice"), 2).await;
    assert_eq!(other["error"]["code"], 103, "{other}");
    let own = c.history(&channel("mallory"), 3).await;
    assert_eq!(statuses(&own), []);
    // The hint must match the token.
    let mut c = Client::open(&status).await;
    let cmd = json!({"connect": {"data": {"auth": mallory, "project_id": PROJECT, "user_external_id": "alice"}}, "id": 1});
    c.send(&cmd.to_string()).await;
    assert_eq!(c.reply().await["error"]["code"], 101);
}

#[tokio::test]
async fn bad_and_expired_tokens_are_refused() {
    let s = setup().await;
    s.paid(8001, "u3").await;
    let status = s.status(&[]).await;
    let expired = mint_expired_jwt(TEST_JWT_SECRET, "u3", Duration::from_secs(600));
    let mut c = Client::open(&status).await;
    let reply = c.connect(&expired, PROJECT).await;
    assert_eq!(
        reply["error"],
        json!({"code": 109, "message": "token expired"})
    );
    let forged = mint_jwt("not-the-secret", "u3", HOUR);
    let mut c = Client::open(&status).await;
    let reply = c.connect(&forged, PROJECT).await;
    assert_eq!(
        reply,
        json!({"id": 1, "error": {"code": 101, "message": "unauthorized"}})
    );
    assert_eq!(c.closed().await, Closed(3500, "invalid token".into()));
    let mut c = Client::open(&status).await;
    c.send(r#"{"connect":{"data":{"project_id":18404}},"id":1}"#)
        .await;
    assert_eq!(c.reply().await["error"]["code"], 101);
    let mut c = Client::open(&status).await;
    let good = mint_jwt(TEST_JWT_SECRET, "u3", HOUR);
    c.send(&json!({"connect": {"data": {"auth": good}}, "id": 1}).to_string())
        .await;
    assert_eq!(c.reply().await["error"]["code"], 107);
    assert_eq!(poll(&status, PROJECT, 8001, &expired).await.0, 401);
    assert_eq!(poll(&status, PROJECT, 8001, &forged).await.0, 401);
    assert_eq!(poll(&status, PROJECT, 8001, "").await.0, 401);
    wait_poll_status(&status, 8001, &good, "paid").await;
}

#[tokio::test]
async fn the_first_command_must_be_connect_within_the_timeout() {
    let s = setup().await;
    let status = s.status(&[("STATUS_CONNECT_TIMEOUT", "1s")]).await;
    let mut idle = Client::open(&status).await;
    idle.send("{}").await; // a stray pong before connect is harmless
    assert_eq!(idle.closed().await, Closed(3502, "stale".into()));
    let mut early = Client::open(&status).await;
    early
        .send(r#"{"history":{"channel":"orders:18404:u"},"id":1}"#)
        .await;
    assert_eq!(early.closed().await, Closed(3501, "bad request".into()));
}

#[tokio::test]
async fn stray_pongs_are_harmless_and_the_server_pings() {
    let s = setup().await;
    let status = s.status(&[("STATUS_PING_INTERVAL", "1s")]).await;
    let jwt = mint_jwt(TEST_JWT_SECRET, "u4", HOUR);
    let mut c = Client::open(&status).await;
    // Cocos writes `{}` on its own, and frames may carry blank lines.
    c.send("{}").await;
    let reply = c.connect(&jwt, PROJECT).await;
    assert_eq!(reply["connect"]["ping"], 1);
    for _ in 0..3 {
        c.send("{}").await;
        c.send("\n{}\n\n").await;
        assert_eq!(c.next().await, Ok(json!({})), "a server ping");
    }
    // Unity's websocket-sharp checks liveness with control pings.
    c.ws.send(Message::Ping(b"alive".to_vec().into()))
        .await
        .unwrap();
    let pong = loop {
        match tokio::time::timeout(WITHIN, c.ws.next()).await.unwrap() {
            Some(Ok(Message::Pong(p))) => break p,
            Some(Ok(_)) => continue,
            other => panic!("no pong: {other:?}"),
        }
    };
    assert_eq!(&pong[..], b"alive");
    let unknown = json!({"rpc": {"method": "x"}, "id": 9});
    c.send(&unknown.to_string()).await;
    let reply = c.reply().await;
    assert_eq!(reply["error"]["code"], 104, "{reply}");
    assert_eq!(reply["id"], 9);
    s.paid(9001, "u4").await;
    assert_eq!(pushed(&c.reply().await).0, 9001);
}

#[tokio::test]
async fn the_tracking_window_closes_with_4501_even_while_pongs_flow() {
    let s = setup().await;
    let status = s
        .status(&[
            ("STATUS_TRACKING_WINDOW", "2s"),
            ("STATUS_PING_INTERVAL", "1s"),
        ])
        .await;
    let jwt = mint_jwt(TEST_JWT_SECRET, "u5", HOUR);
    let mut c = Client::open(&status).await;
    c.connect(&jwt, PROJECT).await;
    // Pong every ping, as the clients do, until the window ends.
    let closed = loop {
        match c.next().await {
            Ok(v) if v == json!({}) => c.send("{}").await,
            Ok(other) => panic!("unexpected {other}"),
            Err(closed) => break closed,
        }
    };
    assert_eq!(closed, Closed(4501, "tracking window elapsed".into()));
}

#[tokio::test]
async fn the_last_final_status_closes_with_4500_after_the_grace() {
    let s = setup().await;
    s.paid(10001, "u6").await;
    s.paid(10002, "u6").await;
    let status = s.status(&[("STATUS_FINAL_GRACE", "300ms")]).await;
    let jwt = mint_jwt(TEST_JWT_SECRET, "u6", HOUR);
    let mut c = Client::open(&status).await;
    c.connect(&jwt, PROJECT).await;
    assert_eq!(pushed(&c.reply().await).0, 10001);
    assert_eq!(pushed(&c.reply().await).0, 10002);
    s.event(EventKind::Granted, 10001, "u6").await;
    assert_eq!(pushed(&c.reply().await), (10001, "done".into(), 3));
    // One order is still open: no close yet; the next final status ends the tracking.
    s.canceled(10002, "u6").await;
    assert_eq!(pushed(&c.reply().await), (10002, "canceled".into(), 4));
    assert_eq!(
        c.closed().await,
        Closed(4500, "order tracking finished".into())
    );
    // A user with no open order stays connected (here until the test ends).
    let mut idle = Client::open(&status).await;
    let idle_jwt = mint_jwt(TEST_JWT_SECRET, "u6-idle", HOUR);
    assert!(idle.connect(&idle_jwt, PROJECT).await["connect"].is_object());
}

#[tokio::test]
async fn connections_over_the_per_user_limit_are_closed_to_retry_later() {
    let s = setup().await;
    let status = s.status(&[("STATUS_MAX_CONNECTIONS_PER_USER", "2")]).await;
    let jwt = mint_jwt(TEST_JWT_SECRET, "u7", HOUR);
    let mut first = Client::open(&status).await;
    first.connect(&jwt, PROJECT).await;
    let mut second = Client::open(&status).await;
    second.connect(&jwt, PROJECT).await;
    let mut third = Client::open(&status).await;
    third
        .send(
            &json!({"connect": {"data": {"auth": jwt, "project_id": PROJECT}}, "id": 1})
                .to_string(),
        )
        .await;
    assert_eq!(
        third.closed().await,
        Closed(3013, "too many connections".into())
    );
    // Another user is not affected; a slot freed is usable again.
    drop(first);
    wait::until(WITHIN, "a free slot", || async {
        let mut again = Client::open(&status).await;
        let cmd = json!({"connect": {"data": {"auth": jwt, "project_id": PROJECT}}, "id": 1});
        again.send(&cmd.to_string()).await;
        again.next().await.is_ok_and(|v| v["connect"].is_object())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_killed_instance_restarts_with_the_same_history_and_two_instances_agree() {
    let s = setup().await;
    s.paid(11001, "u8").await;
    s.paid(11002, "u8").await;
    s.event(EventKind::Granted, 11001, "u8").await;
    let first = s.status(&[]).await;
    let jwt = mint_jwt(TEST_JWT_SECRET, "u8", HOUR);
    let mut c = Client::open(&first).await;
    c.connect(&jwt, PROJECT).await;
    let before = statuses(&c.history(&channel("u8"), 2).await);
    assert_eq!(before.len(), 3, "{before:?}");
    first.kill().await.unwrap();
    let again = s.status(&[]).await;
    let second = s.status(&[]).await;
    for instance in [&again, &second] {
        let mut c = Client::open(instance).await;
        c.connect(&jwt, PROJECT).await;
        assert_eq!(statuses(&c.history(&channel("u8"), 2).await), before);
        assert_eq!(
            poll(instance, PROJECT, 11001, &jwt).await.1["status"],
            "done"
        );
        assert_eq!(
            poll(instance, PROJECT, 11002, &jwt).await.1["status"],
            "paid"
        );
    }
}

#[tokio::test]
async fn ready_only_after_catching_up_with_the_stream() {
    let s = setup().await;
    let bodies: Vec<Vec<u8>> = (0..1500u64)
        .map(|i| {
            tests::fixtures::with(
                "order_paid_combined",
                &[
                    ("/order/id", json!(20000 + i)),
                    ("/billing/transaction/id", json!(20000 + i)),
                    ("/user/external_id", json!(format!("bulk-{}", i % 50))),
                ],
            )
        })
        .collect();
    s.broker.publish_webhooks(&bodies).await.unwrap();
    let status = RunningStatus::spawn(&s.vhost.amqp_url(), &[]).unwrap();
    status.wait_ready(WITHIN).await.unwrap();
    // Ready means caught up: the last order is there at once.
    let jwt = mint_jwt(TEST_JWT_SECRET, "bulk-49", HOUR);
    let (code, body) = poll(&status, PROJECT, 21499, &jwt).await;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("paid")),
        "{body}"
    );
    let metrics = status.metrics().await.unwrap();
    assert!(metrics.contains("status_caught_up 1"), "{metrics}");
}

/// A long stream is caught up by two readers at once (the second half held until the first
/// is applied): the view must come out as one reader builds it, publication for publication,
/// with orders whose events lie in both halves.
#[tokio::test]
async fn a_catch_up_in_two_halves_builds_the_view_one_reader_builds() {
    let s = setup().await;
    let user = |order: u64| format!("half-{}", order % 20);
    let orders = 30_000..30_400u64;
    let paid: Vec<Vec<u8>> = orders.clone().map(|o| paid_body(o, &user(o))).collect();
    s.broker.publish_webhooks(&paid).await.unwrap();
    for o in orders.clone().filter(|o| o % 2 == 0) {
        s.event(EventKind::Granted, o, &user(o)).await;
    }
    for o in orders.clone().filter(|o| o % 7 == 0) {
        s.canceled(o, &user(o)).await;
    }
    let resent: Vec<Vec<u8>> = orders
        .clone()
        .filter(|o| o % 3 == 0)
        .map(|o| paid_body(o, &user(o)))
        .collect();
    s.broker.publish_webhooks(&resent).await.unwrap();
    let one = s.status(&[("STATUS_CATCH_UP_SPLIT", "0")]).await;
    let two = s.status(&[("STATUS_CATCH_UP_SPLIT", "100")]).await;
    let read_ahead = |metrics: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("status_catch_up_read_ahead_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    assert_eq!(read_ahead(&one.metrics().await.unwrap()), Some(0));
    let held = read_ahead(&two.metrics().await.unwrap()).unwrap();
    assert!(held > 100, "the second reader held {held} events");
    for u in 0..20u64 {
        let name = format!("half-{u}");
        let jwt = mint_jwt(TEST_JWT_SECRET, &name, HOUR);
        let mut histories = Vec::new();
        for instance in [&one, &two] {
            let mut c = Client::open(instance).await;
            c.connect(&jwt, PROJECT).await;
            let reply = c.history(&channel(&name), 2).await;
            histories.push(reply["history"]["publications"].clone());
        }
        assert!(
            histories[0].as_array().is_some_and(|p| p.len() > 20),
            "{name}: {}",
            histories[0]
        );
        assert_eq!(histories[0], histories[1], "{name}");
    }
    // Paid, granted, re-sent: done. Paid, canceled, re-sent: canceled.
    for (order, want) in [(30_006, "done"), (30_009, "canceled")] {
        let jwt = mint_jwt(TEST_JWT_SECRET, &user(order), HOUR);
        for instance in [&one, &two] {
            assert_eq!(poll(instance, PROJECT, order, &jwt).await.1["status"], want);
        }
    }
}

#[tokio::test]
async fn sigterm_closes_websockets_with_3001() {
    let s = setup().await;
    let status = s.status(&[]).await;
    let jwt = mint_jwt(TEST_JWT_SECRET, "u9", HOUR);
    let mut c = Client::open(&status).await;
    c.connect(&jwt, PROJECT).await;
    status.terminate().unwrap();
    assert_eq!(c.closed().await, Closed(3001, "shutdown".into()));
    assert_eq!(status.stop().await.unwrap(), Some(0));
}

#[tokio::test]
async fn the_subprotocol_is_echoed_when_offered() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let s = setup().await;
    let status = s.status(&[]).await;
    let mut request = status.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "centrifuge-json".parse().unwrap());
    let (_, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "centrifuge-json"
    );
}

#[tokio::test]
async fn oversized_messages_and_foreign_origins_are_refused() {
    let s = setup().await;
    let status = s
        .status(&[
            ("STATUS_MAX_FRAME_BYTES", "4096"),
            ("STATUS_ALLOWED_ORIGINS", "https://game.example"),
        ])
        .await;
    let mut c = Client::open(&status).await; // no Origin: not a browser, allowed
    let jwt = mint_jwt(TEST_JWT_SECRET, "u10", HOUR);
    c.connect(&jwt, PROJECT).await;
    c.send(&format!(
        "{{\"id\":2,\"rpc\":{{\"data\":\"{}\"}}}}",
        "x".repeat(8192)
    ))
    .await;
    assert_eq!(c.closed().await, Closed(3009, "message too big".into()));
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut foreign = status.ws_url().into_client_request().unwrap();
    foreign
        .headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(foreign).await;
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 403),
        "{refused:?}"
    );
    let mut listed = status.ws_url().into_client_request().unwrap();
    listed
        .headers_mut()
        .insert("Origin", "https://game.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(listed).await.is_ok());
}

#[tokio::test]
async fn connections_over_the_total_limit_are_closed_to_retry_later() {
    let s = setup().await;
    let status = s.status(&[("STATUS_MAX_CONNECTIONS", "1")]).await;
    let jwt = mint_jwt(TEST_JWT_SECRET, "u11", HOUR);
    let mut first = Client::open(&status).await;
    first.connect(&jwt, PROJECT).await;
    let mut second = Client::open(&status).await;
    assert_eq!(
        second.closed().await,
        Closed(3013, "too many connections".into())
    );
    let metrics = status.metrics().await.unwrap();
    assert!(metrics.contains("status_connections 1"), "{metrics}");
}

#[tokio::test]
async fn a_broker_cut_resumes_the_stream_without_gaps_or_repeats() {
    let s = setup().await;
    let proxy = tests::rabbit::TcpProxy::start(s.vhost.broker_addr())
        .await
        .unwrap();
    s.paid(12001, "u12").await;
    let status = RunningStatus::start(&s.vhost.amqp_url_via(proxy.addr()), &[])
        .await
        .unwrap();
    let jwt = mint_jwt(TEST_JWT_SECRET, "u12", HOUR);
    wait_poll_status(&status, 12001, &jwt, "paid").await;
    proxy.cut().await;
    wait::until(WITHIN, "not ready while cut", || async {
        !status.is_ready().await
    })
    .await
    .unwrap();
    s.event(EventKind::Granted, 12001, "u12").await;
    s.paid(12002, "u12").await;
    proxy.restore().await.unwrap();
    status.wait_ready(WITHIN).await.unwrap();
    wait_poll_status(&status, 12001, &jwt, "done").await;
    wait_poll_status(&status, 12002, &jwt, "paid").await;
    let mut c = Client::open(&status).await;
    c.connect(&jwt, PROJECT).await;
    let history = c.history(&channel("u12"), 2).await;
    assert_eq!(
        statuses(&history),
        [
            (12001, "paid".to_owned()),
            (12001, "done".to_owned()),
            (12002, "paid".to_owned())
        ]
    );
    // Resumed after the last offset read: no event was read (and applied) twice.
    let metrics = status.metrics().await.unwrap();
    assert!(
        metrics.contains("status_events_applied_total{outcome=\"unchanged\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn refuses_to_start_without_a_jwt_key() {
    let out = tokio::process::Command::new(tests::bin_path("order-status"))
        .env_clear()
        .env("STATUS_LISTEN", "127.0.0.1:0")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("STATUS_JWT_HS256_SECRET"), "{stderr}");
}

/// Resident memory of `pid` in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A measurement rather than a check (`--ignored`): the memory an idle, connected
/// WebSocket costs the server. `STATUS_MEM_CONNECTIONS` (default 10000) connections, each
/// of its own user; the target is at most 20 KiB each.
#[tokio::test]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn idle_connections_cost_little_memory() {
    let n: usize = std::env::var("STATUS_MEM_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let s = setup().await;
    let status = s.status(&[]).await;
    let pid = status.pid().unwrap();
    let mut warm = Client::open(&status).await;
    warm.connect(&mint_jwt(TEST_JWT_SECRET, "warm", HOUR), PROJECT)
        .await;
    let before = rss_kib(pid);
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = Client::open(&status).await;
        let reply = c
            .connect(&mint_jwt(TEST_JWT_SECRET, &format!("m{i}"), HOUR), PROJECT)
            .await;
        assert!(reply["connect"].is_object(), "{reply}");
        clients.push(c);
    }
    let after = rss_kib(pid);
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!("{n} idle connections: RSS {before} KiB -> {after} KiB, {per:.1} KiB each");
    assert!(per <= 20.0, "{per:.1} KiB per idle connection");
}

#[tokio::test]
async fn history_filters_like_centrifuge() {
    let s = setup().await;
    for order in 13001..=13003 {
        s.paid(order, "u13").await;
    }
    let status = s.status(&[]).await;
    let jwt = mint_jwt(TEST_JWT_SECRET, "u13", HOUR);
    let mut c = Client::open(&status).await;
    c.connect(&jwt, PROJECT).await;
    let ch = channel("u13");
    let mut ask = async |id: u32, req: Value| {
        let mut history = json!({"channel": ch});
        history
            .as_object_mut()
            .unwrap()
            .extend(req.as_object().unwrap().clone());
        c.send(&json!({"id": id, "history": history}).to_string())
            .await;
        c.reply_to(id).await
    };
    let since_one = ask(2, json!({"since": {"offset": 1}, "limit": -1})).await;
    assert_eq!(statuses(&since_one).len(), 2);
    let epoch = since_one["history"]["epoch"].as_str().unwrap().to_owned();
    let position = ask(3, json!({"limit": 0})).await;
    assert_eq!(position["history"]["offset"], 3);
    assert!(
        position["history"]["publications"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let two = ask(
        4,
        json!({"since": {"offset": 0, "epoch": epoch}, "limit": 2}),
    )
    .await;
    assert_eq!(
        statuses(&two),
        [(13001, "paid".into()), (13002, "paid".into())]
    );
    let stale = ask(
        5,
        json!({"since": {"offset": 0, "epoch": "other"}, "limit": -1}),
    )
    .await;
    assert_eq!(stale["error"]["code"], 112, "{stale}");
    let bad = ask(
        6,
        json!({"since": {"offset": 0}, "reverse": true, "limit": -1}),
    )
    .await;
    assert_eq!(bad["error"]["code"], 107, "{bad}");
    let newest = ask(7, json!({"reverse": true, "limit": 1})).await;
    assert_eq!(statuses(&newest), [(13003, "paid".into())]);
    let metrics = status.metrics().await.unwrap();
    assert!(
        metrics.contains("status_publications_sent_total 3"),
        "the three open orders were pushed on connect: {metrics}"
    );
}

#[tokio::test]
async fn polls_answer_503_until_caught_up() {
    // A broker that is not there: the instance never catches up.
    let nowhere = tests::rabbit::pick_free_port().unwrap();
    let status =
        RunningStatus::spawn(&format!("amqp://guest:guest@127.0.0.1:{nowhere}/%2f"), &[]).unwrap();
    let jwt = mint_jwt(TEST_JWT_SECRET, "u14", HOUR);
    wait::until(WITHIN, "listening", || async {
        reqwest::get(status.url("/healthz")).await.is_ok()
    })
    .await
    .unwrap();
    assert!(!status.is_ready().await);
    let (code, body) = poll(&status, PROJECT, 1, &jwt).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(poll(&status, PROJECT, 1, "bad").await.0, 401);
}

#[tokio::test]
async fn a_silent_client_is_dropped_with_3012() {
    let s = setup().await;
    let status = s.status(&[("STATUS_PING_INTERVAL", "1s")]).await;
    let mut c = Client::open(&status).await;
    c.connect(&mint_jwt(TEST_JWT_SECRET, "u15", HOUR), PROJECT)
        .await;
    // Never answers a ping: dropped after the ping interval + 10 s.
    let started = std::time::Instant::now();
    assert_eq!(c.closed().await, Closed(3012, "no pong".into()));
    assert!(started.elapsed() >= Duration::from_secs(10));
}

#[tokio::test]
async fn an_acceptance_through_the_real_ingress_shows_as_paid_with_no_worker() {
    let s = setup().await;
    let ingress = tests::ingress_harness::RunningIngress::start(
        &s.vhost.amqp_url(),
        &["--webhook-secret", "ingress-secret"],
    )
    .await
    .unwrap();
    let status = s.status(&[]).await;
    let jwt = mint_jwt(TEST_JWT_SECRET, "u16", HOUR);
    let mut c = Client::open(&status).await;
    c.connect(&jwt, PROJECT).await;
    let body = tests::fixtures::with(
        "order_paid_combined",
        &[
            ("/order/id", json!(16001)),
            ("/billing/transaction/id", json!(16001)),
            ("/user/external_id", json!("u16")),
        ],
    );
    let answered = reqwest::Client::new()
        .post(ingress.url("/webhooks/xsolla"))
        .header(
            "authorization",
            tests::fixtures::authorization(&body, "ingress-secret"),
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 204);
    let at = std::time::Instant::now();
    assert_eq!(pushed(&c.reply().await), (16001, "paid".into(), 1));
    // The design says within 1 s; the slack is for a loaded 2-core CI machine.
    assert!(at.elapsed() < Duration::from_secs(2), "{:?}", at.elapsed());
    ingress.stop().await.unwrap();
}

#[tokio::test]
async fn connect_token_wins_and_a_public_key_verifies_rs256() {
    let s = setup().await;
    s.paid(17001, "u17").await;
    let keys = format!(
        "{}/../ingress/src/status/testdata",
        env!("CARGO_MANIFEST_DIR")
    );
    let public = format!("{keys}/rsa-public.pem");
    let status = s
        .status(&[
            ("STATUS_JWT_HS256_SECRET", ""),
            ("STATUS_JWT_PUBLIC_KEY_FILE", &public),
        ])
        .await;
    let private = std::fs::read(format!("{keys}/rsa-private.pem")).unwrap();
    let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 600;
    let rs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"sub": "u17", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    let hs256 = mint_jwt(TEST_JWT_SECRET, "u17", HOUR);
    // Centrifugo's way (`token`) beside the guide's (`data.auth`): the token wins.
    let mut c = Client::open(&status).await;
    let cmd = json!({"connect": {"token": rs256, "data": {"auth": hs256, "project_id": PROJECT}}, "id": 1});
    c.send(&cmd.to_string()).await;
    let reply = c.reply().await;
    assert_eq!(
        reply["connect"]["subs"],
        json!({ channel("u17"): {} }),
        "{reply}"
    );
    let mut c = Client::open(&status).await;
    assert_eq!(c.connect(&hs256, PROJECT).await["error"]["code"], 101);
    wait_poll_status(&status, 17001, &rs256, "paid").await;
    assert_eq!(poll(&status, PROJECT, 17001, &hs256).await.0, 401);
}

/// The HTTP side is held like the ingress's (issue 10): a client that never finishes its
/// request head, and an idle keep-alive one, are dropped on time, while an upgraded
/// WebSocket outlives every HTTP timer (the request deadline is far shorter than the pings
/// it keeps receiving).
#[tokio::test]
async fn slow_http_clients_are_dropped_but_websockets_outlive_the_http_timers() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let s = setup().await;
    let status = s
        .status(&[
            ("HEADER_READ_TIMEOUT", "500ms"),
            ("REQUEST_TIMEOUT", "300ms"),
            ("IDLE_TIMEOUT", "500ms"),
            ("STATUS_PING_INTERVAL", "1s"),
        ])
        .await;
    let jwt = mint_jwt(TEST_JWT_SECRET, "u-http", HOUR);
    let mut ws = Client::open(&status).await;
    ws.connect(&jwt, PROJECT).await;

    // Slowloris: half a request head, then nothing.
    let started = tokio::time::Instant::now();
    let mut slow = TcpStream::connect(status.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(WITHIN, slow.read(&mut buf))
        .await
        .expect("closed within the deadline")
        .unwrap_or(0);
    assert_eq!(n, 0, "no answer to an unfinished head");
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "dropped after {:?}, expected about 500ms",
        started.elapsed()
    );

    // Idle keep-alive: one answer, then closed after IDLE_TIMEOUT.
    let mut idle = TcpStream::connect(status.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(WITHIN, async {
        loop {
            match idle.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle keep-alive connection is closed");
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "answered first: {:?}",
        String::from_utf8_lossy(&got)
    );

    // Meanwhile the WebSocket lives on past every timer: pings keep arriving.
    for _ in 0..2 {
        assert_eq!(ws.next().await, Ok(json!({})), "a server ping");
    }
    s.paid(9101, "u-http").await;
    assert_eq!(pushed(&ws.reply().await).0, 9101);
}

/// The stream is durable: a restart of the broker loses no order event. The running
/// instance reconnects and still answers; a fresh one started after the restart reads the
/// same statuses from the stream.
#[tokio::test]
async fn private_broker_events_survive_a_broker_restart() {
    let broker = tests::rabbit::PrivateBroker::start()
        .await
        .expect("private broker");
    let url = broker.amqp_url();
    {
        let topology = Topology::default();
        let publisher = Broker::connect(&url, &topology).await.unwrap();
        publisher
            .publish_webhook(&paid_body(13001, "u13"))
            .await
            .unwrap();
        publisher
            .publish_webhook(&paid_body(13002, "u13"))
            .await
            .unwrap();
        let events = Session::open(&url, "test-events", &topology).await.unwrap();
        let granted = OrderEvent::new(EventKind::Granted, Some(PROJECT), "13001", "u13");
        order_events::publish(events.channel(), &granted, Duration::from_secs(10))
            .await
            .unwrap();
        events.close().await;
        publisher.close().await;
    }
    let jwt = mint_jwt(TEST_JWT_SECRET, "u13", HOUR);
    let running = RunningStatus::start(&url, &[]).await.unwrap();
    wait_poll_status(&running, 13001, &jwt, "done").await;
    wait_poll_status(&running, 13002, &jwt, "paid").await;

    broker.restart_node().await.expect("broker restarts");
    running.wait_ready(Duration::from_secs(60)).await.unwrap();
    wait_poll_status(&running, 13001, &jwt, "done").await;
    let fresh = RunningStatus::start(&url, &[]).await.unwrap();
    wait_poll_status(&fresh, 13001, &jwt, "done").await;
    wait_poll_status(&fresh, 13002, &jwt, "paid").await;
    let mut c = Client::open(&fresh).await;
    c.connect(&jwt, PROJECT).await;
    let history = c.history(&channel("u13"), 2).await;
    assert_eq!(
        statuses(&history),
        [
            (13001, "paid".to_owned()),
            (13002, "paid".to_owned()),
            (13001, "done".to_owned())
        ]
    );
    running.kill().await.unwrap();
    fresh.kill().await.unwrap();
}

/// A player who sends history commands and never reads the replies: once the socket's
/// buffers are full, a send waits, and while it waits nothing else of the connection runs
/// (its tracking window, the pong timer, shutdown). Without a write deadline it held its
/// slot for ever. With one slot per user, a new connection of the same player gets in once
/// the deaf one is cut off after `WRITE_TIMEOUT`.
#[tokio::test]
async fn a_client_that_reads_no_replies_is_cut_off_after_the_write_timeout() {
    const ORDERS: u64 = 40;
    let s = setup().await;
    let user = "u-deaf";
    for order in 1..=ORDERS {
        s.paid(990_000 + order, user).await;
    }
    let status = s
        .status(&[
            ("STATUS_MAX_CONNECTIONS_PER_USER", "1"),
            ("WRITE_TIMEOUT", "500ms"),
        ])
        .await;
    let jwt = mint_jwt(TEST_JWT_SECRET, user, HOUR);
    let connect = json!({"connect": {"data": {"auth": jwt, "project_id": PROJECT}}, "id": 1});
    let mut probe = Client::open(&status).await;
    probe.connect(&jwt, PROJECT).await;
    let replies = probe.history(&channel(user), 2).await;
    assert_eq!(statuses(&replies).len(), ORDERS as usize);
    drop(probe);

    // 4 400 history replies of 40 publications (10 MB) into a 4 KiB receive buffer, read
    // only up to the connect reply (the probe's slot may take a moment to be freed). The
    // task keeps the socket open whatever happens: only the server may end it.
    let mut deaf = wait::value(WITHIN, "the deaf client connected", || async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = MaybeTlsStream::Plain(socket.connect(status.addr).await.unwrap());
        let (ws, _) = tokio_tungstenite::client_async(status.ws_url(), stream)
            .await
            .expect("WebSocket upgrade");
        let mut client = Client { ws };
        client.send(&connect.to_string()).await;
        match client.next().await {
            Ok(v) if v["connect"].is_object() => Ok(client.ws),
            seen => Err(format!("{seen:?}")),
        }
    })
    .await
    .unwrap();
    let history = json!({"history": {"channel": channel(user), "since": {"offset": 0}, "limit": -1}, "id": 3});
    let frame = vec![history.to_string(); 550].join("\n");
    let flood = tokio::spawn(async move {
        for _ in 0..8 {
            if deaf
                .send(Message::Text(frame.clone().into()))
                .await
                .is_err()
            {
                break;
            }
        }
        std::future::pending::<()>().await;
        drop(deaf);
    });

    wait::until(
        WITHIN,
        "the player's slot freed by the write deadline",
        || async {
            let mut again = Client::open(&status).await;
            again.send(&connect.to_string()).await;
            again.next().await.is_ok_and(|v| v["connect"].is_object())
        },
    )
    .await
    .unwrap();
    flood.abort();
}
