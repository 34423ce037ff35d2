//! The ingress against the real RabbitMQ: every row of the answer table (README, "What the ingress
//! answers"), the message it publishes, Xsolla's payload examples, secret rotation, unrouted types,
//! and the broker going away and coming back.

use std::time::Duration;

use axum::{Router, extract::Path, http::StatusCode, response::IntoResponse as _, routing::get};
use lapin::{BasicProperties, options::BasicGetOptions, types::FieldTable};
use serde_json::{Value, json};
use shared::{
    envelope::{HeadersExt, header, is_valid_traceparent},
    topology::{UNROUTED_QUEUE, WORK_QUEUE},
};
use tests::{
    fixtures::{self, authorization},
    ingress_harness::RunningIngress,
    rabbit::TestVhost,
};

const SECRET: &str = "test-secret";

struct Setup {
    vhost: TestVhost,
    ingress: RunningIngress,
    http: reqwest::Client,
}

async fn setup(extra: &[&str]) -> Setup {
    let vhost = TestVhost::create().await.expect("test vhost");
    let mut args = vec!["--webhook-secret", SECRET];
    args.extend_from_slice(extra);
    let ingress = RunningIngress::start(&vhost.amqp_url(), &args)
        .await
        .expect("ingress starts");
    Setup {
        vhost,
        ingress,
        http: reqwest::Client::new(),
    }
}

impl Setup {
    async fn post(&self, path: &str, body: &[u8], auth: Option<&str>) -> reqwest::Response {
        let mut request = self.http.post(self.ingress.url(path)).body(body.to_vec());
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send().await.expect("request sent")
    }

    async fn post_signed(&self, body: &[u8]) -> reqwest::Response {
        self.post("/webhooks/xsolla", body, Some(&authorization(body, SECRET)))
            .await
    }

    /// Takes one message from `queue`, if any.
    async fn take(&self, queue: &str) -> Option<(Vec<u8>, BasicProperties)> {
        let conn = shared::amqp::connect(&self.vhost.amqp_url(), "test reader")
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        let got = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .map(|m| (m.delivery.data.clone(), m.delivery.properties.clone()));
        let _ = conn.close(200, "done".into()).await;
        got
    }

    async fn count(&self, queue: &str) -> u32 {
        let conn = shared::amqp::connect(&self.vhost.amqp_url(), "test counter")
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        let q = channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let _ = conn.close(200, "done".into()).await;
        q.message_count()
    }
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("JSON error body");
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn publishes_order_paid_byte_for_byte_with_documented_properties() {
    let s = setup(&[]).await;
    // Odd spacing and non-ASCII: the published body must be these exact bytes.
    let body = "{\"notification_type\": \"order_paid\",  \"order\":{\"id\":77},\"user\":{\"external_id\":\"игрок\"},\"items\":[{\"sku\":\"a\",\"quantity\":1}]}\n".as_bytes();
    let auth = authorization(body, SECRET);
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let response = s
        .http
        .post(s.ingress.url("/webhooks/xsolla"))
        .header("authorization", &auth)
        .header("traceparent", traceparent)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.bytes().await.unwrap().is_empty());

    let (published, props) = s.take(WORK_QUEUE).await.expect("message in the work queue");
    assert_eq!(published, body);
    assert_eq!(props.delivery_mode(), &Some(2), "persistent");
    assert_eq!(
        props.message_id().as_ref().unwrap().as_str(),
        "order_paid:77"
    );
    assert_eq!(
        props.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    let headers = props.headers().clone().expect("headers");
    assert_eq!(
        headers.get_str(header::NOTIFICATION_TYPE).as_deref(),
        Some("order_paid")
    );
    assert_eq!(headers.get_str(header::SIGNATURE), Some(auth));
    assert_eq!(headers.get_int(header::ATTEMPTS), Some(0));
    assert_eq!(
        headers.get_str(header::TRACEPARENT).as_deref(),
        Some(traceparent)
    );
    let received = headers.get_str(header::RECEIVED_AT).expect("received-at");
    assert!(
        shared::envelope::parse_time(&received).is_some(),
        "{received}"
    );
}

/// `x-project-id`: the route's project, else the body's, else `XSOLLA_PROJECT_ID`.
#[tokio::test]
async fn publishes_the_project_of_the_route_the_body_or_the_configured_default() {
    let dir = std::env::temp_dir().join(format!("xb-ingress-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let projects = dir.join("projects.json");
    std::fs::write(&projects, r#"{"18404": ["p"]}"#).unwrap();
    let s = setup(&[
        "--project-id",
        "42",
        "--projects-file",
        projects.to_str().unwrap(),
    ])
    .await;
    let project_of_next_message = || async {
        let (_, props) = s.take(WORK_QUEUE).await.expect("published");
        props.headers().clone().unwrap().get_int(header::PROJECT_ID)
    };
    // Separate mode names no project: the configured one.
    let separate = fixtures::load("order_paid_separate");
    assert_eq!(
        s.post_signed(&separate).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(project_of_next_message().await, Some(42));
    // Combined mode names 18404 in `settings`: the body's, on either route.
    let combined = fixtures::load("order_paid_combined");
    assert_eq!(
        s.post_signed(&combined).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(project_of_next_message().await, Some(18404));
    let r = s
        .post(
            "/webhooks/xsolla/18404",
            &separate,
            Some(&authorization(&separate, "p")),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(project_of_next_message().await, Some(18404));
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn accepts_every_xsolla_example_payload() {
    let s = setup(&[]).await;
    for name in fixtures::ALL {
        let body = fixtures::load(name);
        let response = s.post_signed(&body).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{name}");
    }
    // Orders go to the work queue (both delivery modes + the cancellation); payment and
    // refund are not fulfilled in the default mode, so they are kept in the unrouted queue;
    // user_validation is answered live and published nowhere.
    assert_eq!(s.count(WORK_QUEUE).await, 3);
    assert_eq!(s.count(UNROUTED_QUEUE).await, 2);
    let (_, props) = s.take(WORK_QUEUE).await.unwrap();
    let headers = props.headers().clone().unwrap();
    assert!(is_valid_traceparent(
        &headers.get_str(header::TRACEPARENT).unwrap()
    ));
}

#[tokio::test]
async fn unknown_types_are_kept_in_the_unrouted_queue() {
    let s = setup(&[]).await;
    let body = br#"{"notification_type":"brand_new_type","x":1}"#;
    assert_eq!(s.post_signed(body).await.status(), StatusCode::NO_CONTENT);
    let (published, props) = s.take(UNROUTED_QUEUE).await.expect("kept, not lost");
    assert_eq!(published, body);
    let headers = props.headers().clone().unwrap();
    assert_eq!(
        headers.get_str(header::NOTIFICATION_TYPE).as_deref(),
        Some("brand_new_type")
    );
    assert_eq!(s.count(WORK_QUEUE).await, 0);
}

#[tokio::test]
async fn refuses_bad_signatures_and_publishes_nothing() {
    let s = setup(&[]).await;
    let body = fixtures::load("order_paid_combined");
    let good = authorization(&body, SECRET);
    let cases = [
        ("missing", None),
        ("malformed", Some("Signature xyz".to_owned())),
        (
            "uppercase",
            Some(good.to_uppercase().replace("SIGNATURE", "Signature")),
        ),
        ("wrong secret", Some(authorization(&body, "other"))),
        ("another body", Some(authorization(b"{}", SECRET))),
    ];
    for (case, auth) in cases {
        let response = s.post("/webhooks/xsolla", &body, auth.as_deref()).await;
        assert_eq!(
            error_code(response).await,
            (400, "INVALID_SIGNATURE".into()),
            "{case}"
        );
    }
    assert_eq!(s.count(WORK_QUEUE).await, 0);
    assert_eq!(s.count(UNROUTED_QUEUE).await, 0);
}

#[tokio::test]
async fn refuses_bodies_that_are_not_webhooks() {
    let s = setup(&[]).await;
    for body in [
        &b"not json"[..],
        b"[]",
        br#"{"no_type":1}"#,
        br#"{"notification_type":7}"#,
    ] {
        let response = s.post_signed(body).await;
        assert_eq!(
            error_code(response).await,
            (400, "INVALID_PARAMETER".into()),
            "{body:?}"
        );
    }
    assert_eq!(s.count(UNROUTED_QUEUE).await, 0);
}

#[tokio::test]
async fn refuses_bodies_over_the_limit_without_truncating() {
    let s = setup(&["--max-body-bytes", "2048"]).await;
    let mut body = br#"{"notification_type":"order_paid","pad":""#.to_vec();
    body.extend(std::iter::repeat_n(b'x', 4096));
    body.extend(br#""}"#);
    let response = s.post_signed(&body).await;
    assert_eq!(
        error_code(response).await,
        (413, "INVALID_PARAMETER".into())
    );
    // Streamed in chunks without Content-Length: the limit still holds.
    let answer = chunked_post(s.ingress.addr, &body, &authorization(&body, SECRET)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("INVALID_PARAMETER"), "{answer}");
    assert_eq!(s.count(WORK_QUEUE).await, 0);
}

/// Sends `body` with `Transfer-Encoding: chunked` over a raw socket; returns the answer.
async fn chunked_post(addr: std::net::SocketAddr, body: &[u8], auth: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /webhooks/xsolla HTTP/1.1\r\nhost: x\r\nauthorization: {auth}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(512) {
        // The server may answer and close before the last chunk: ignore write errors.
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        if stream.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn accepts_a_rotated_secret_and_per_project_secrets() {
    let dir = std::env::temp_dir().join(format!("xb-ingress-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let projects = dir.join("projects.json");
    std::fs::write(&projects, r#"{"18404": ["p-new", "p-old"]}"#).unwrap();
    let projects = projects.to_str().unwrap().to_owned();
    let s = setup(&[
        "--webhook-secret",
        "old-secret,new-secret",
        "--projects-file",
        &projects,
    ])
    .await;
    let body = fixtures::load("order_paid_combined"); // settings.project_id = 18404
    for secret in ["old-secret", "new-secret"] {
        let r = s
            .post(
                "/webhooks/xsolla",
                &body,
                Some(&authorization(&body, secret)),
            )
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{secret}");
    }
    for secret in ["p-new", "p-old"] {
        let r = s
            .post(
                "/webhooks/xsolla/18404",
                &body,
                Some(&authorization(&body, secret)),
            )
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{secret}");
    }
    // A project's secret does not open another route, nor an unknown project.
    let r = s
        .post(
            "/webhooks/xsolla/18404",
            &body,
            Some(&authorization(&body, "new-secret")),
        )
        .await;
    assert_eq!(error_code(r).await, (400, "INVALID_SIGNATURE".into()));
    let r = s
        .post(
            "/webhooks/xsolla/999",
            &body,
            Some(&authorization(&body, "p-new")),
        )
        .await;
    assert_eq!(error_code(r).await, (400, "INVALID_SIGNATURE".into()));
    assert_eq!(s.count(WORK_QUEUE).await, 4);
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn enforces_the_ip_allowlist_behind_trusted_proxies() {
    let s = setup(&["--ip-allowlist", "xsolla", "--trusted-proxies", "127.0.0.1"]).await;
    let body = fixtures::load("order_canceled_separate");
    let auth = authorization(&body, SECRET);
    let send = |xff: Option<&'static str>| {
        let mut r = s
            .http
            .post(s.ingress.url("/webhooks/xsolla"))
            .header("authorization", &auth)
            .body(body.clone());
        if let Some(xff) = xff {
            r = r.header("x-forwarded-for", xff);
        }
        r.send()
    };
    let r = send(None).await.unwrap();
    assert_eq!(error_code(r).await, (403, "INVALID_CLIENT_IP".into()));
    let r = send(Some("203.0.113.5")).await.unwrap();
    assert_eq!(error_code(r).await, (403, "INVALID_CLIENT_IP".into()));
    let r = send(Some("185.30.21.17")).await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

/// A proxy that adds its own `X-Forwarded-For` line keeps the client's line too: the
/// client's claim comes first, the proxy's observation last. Both lines count, in order.
#[tokio::test]
async fn reads_every_forwarded_for_line_so_a_second_line_cannot_bypass_the_allowlist() {
    let s = setup(&["--ip-allowlist", "xsolla", "--trusted-proxies", "127.0.0.1"]).await;
    let body = fixtures::load("order_canceled_separate");
    let send = |lines: [&'static str; 2]| {
        s.http
            .post(s.ingress.url("/webhooks/xsolla"))
            .header("authorization", authorization(&body, SECRET))
            .header("x-forwarded-for", lines[0])
            .header("x-forwarded-for", lines[1])
            .body(body.clone())
            .send()
    };
    let spoofed = send(["185.30.21.17", "203.0.113.5"]).await.unwrap();
    assert_eq!(error_code(spoofed).await, (403, "INVALID_CLIENT_IP".into()));
    let genuine = send(["203.0.113.5", "185.30.21.17"]).await.unwrap();
    assert_eq!(genuine.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let s = setup(&["--ip-allowlist", "xsolla"]).await;
    let body = fixtures::load("order_canceled_separate");
    let r = s
        .http
        .post(s.ingress.url("/webhooks/xsolla"))
        .header("authorization", authorization(&body, SECRET))
        .header("x-forwarded-for", "185.30.21.17")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (403, "INVALID_CLIENT_IP".into()));
}

/// A real HTTP user API: user `1234567` exists, `down` answers 500, `slow` never in time,
/// `huge` and `chunked` answer 200 with a megabyte (with its length, and chunked); its root
/// and its collection answer 200, as many APIs do.
async fn user_api() -> String {
    let listing = || async { (StatusCode::OK, r#"{"users":[]}"#) };
    let app = Router::new()
        .route("/", get(listing))
        .route("/users", get(listing))
        .route("/users/", get(listing))
        .route(
            "/users/{id}",
            get(|Path(id): Path<String>| async move {
                match id.as_str() {
                    "1234567" => (StatusCode::OK, r#"{"user":{"id":"1234567","name":"John"}}"#)
                        .into_response(),
                    "down" => (StatusCode::INTERNAL_SERVER_ERROR, "").into_response(),
                    "slow" => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        StatusCode::OK.into_response()
                    }
                    "huge" => {
                        let pad = "x".repeat(1 << 20);
                        (
                            StatusCode::OK,
                            format!(r#"{{"user":{{"id":"huge","pad":"{pad}"}}}}"#),
                        )
                            .into_response()
                    }
                    "chunked" => {
                        let chunks = futures_util::stream::iter(
                            (0..64).map(|_| Ok::<_, std::io::Error>(vec![b' '; 16 * 1024])),
                        );
                        axum::body::Body::from_stream(chunks).into_response()
                    }
                    _ => (StatusCode::NOT_FOUND, "").into_response(),
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/users/{{user_id}}",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn validates_users_through_the_game_api() {
    let template = user_api().await;
    let s = setup(&[
        "--user-check-url",
        &template,
        "--user-check-timeout",
        "300ms",
        "--user-search",
        "true",
    ])
    .await;
    let validation = |id: Value| fixtures::with("user_validation", &[("/user/id", id)]);

    let r = s.post_signed(&validation(json!("1234567"))).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s.post_signed(&validation(json!(1234567))).await; // numeric ids too
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s.post_signed(&validation(json!("nobody"))).await;
    assert_eq!(error_code(r).await, (400, "INVALID_USER".into()));
    // Dot segments would climb out of `/users/{user_id}` to routes that answer 200.
    for escape in [".", ".."] {
        let r = s.post_signed(&validation(json!(escape))).await;
        assert_eq!(
            error_code(r).await,
            (400, "INVALID_USER".into()),
            "user id {escape:?}"
        );
    }
    for broken in ["down", "slow", "huge", "chunked"] {
        let r = s.post_signed(&validation(json!(broken))).await;
        assert!(r.headers().contains_key("retry-after"), "{broken}");
        assert_eq!(
            error_code(r).await,
            (503, "SERVER_ERROR".into()),
            "{broken}"
        );
    }
    let search = br#"{"notification_type":"user_search","settings":{"project_id":1},"user":{"public_id":"1234567"}}"#;
    let r = s.post_signed(search).await;
    assert_eq!(r.status(), StatusCode::OK);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["user"]["id"], "1234567");
    assert_eq!(
        s.count(UNROUTED_QUEUE).await,
        0,
        "live checks are not published"
    );
}

#[tokio::test]
async fn answers_503_when_the_broker_returns_or_nacks() {
    let s = setup(&[]).await;
    // Nack: the work queue refuses publishes once full (overflow = reject-publish). A
    // quorum queue enforces the limit a little lazily, so post until it bites; every 204
    // must then be a message in the queue, and the refusal a 503 with Retry-After.
    s.vhost
        .set_policy("full", "^xsolla\\.fulfillment$", r#"{"max-length":1}"#)
        .await
        .unwrap();
    let mut accepted = 0;
    let mut refused = None;
    for order in 0..20 {
        let body = fixtures::with("order_paid_combined", &[("/order/id", json!(order))]);
        let r = s.post_signed(&body).await;
        if r.status() == StatusCode::NO_CONTENT {
            accepted += 1;
        } else {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("a full queue nacks within 20 publishes");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_code(r).await, (503, "SERVER_ERROR".into()));
    assert_eq!(
        s.count(WORK_QUEUE).await,
        accepted,
        "every 204 is in the queue"
    );

    // Return: with the unrouted queue gone, an unknown type routes nowhere at all.
    s.vhost.delete_queue(UNROUTED_QUEUE).await.unwrap();
    let r = s
        .post_signed(br#"{"notification_type":"nobody_binds_this"}"#)
        .await;
    assert_eq!(error_code(r).await, (503, "SERVER_ERROR".into()));
}

#[tokio::test]
async fn answers_503_while_the_broker_is_away_and_204_once_it_is_back() {
    let vhost = TestVhost::create().await.unwrap();
    let proxy = tests::rabbit::TcpProxy::start(vhost.broker_addr())
        .await
        .unwrap();
    let url = vhost.amqp_url_via(proxy.addr());
    let ingress = RunningIngress::start(
        &url,
        &["--webhook-secret", SECRET, "--retry-after-secs", "7"],
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let body = fixtures::load("order_paid_combined");
    let post = || {
        http.post(ingress.url("/webhooks/xsolla"))
            .header("authorization", authorization(&body, SECRET))
            .body(body.clone())
            .send()
    };
    assert_eq!(post().await.unwrap().status(), StatusCode::NO_CONTENT);

    proxy.cut().await;
    tests::wait::until(Duration::from_secs(10), "readyz 503", || async {
        matches!(reqwest::get(ingress.url("/readyz")).await, Ok(r) if r.status() == 503)
    })
    .await
    .unwrap();
    let r = post().await.unwrap();
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(error_code(r).await, (503, "SERVER_ERROR".into()));

    proxy.restore().await.unwrap();
    ingress.wait_ready().await.expect("reconnects by itself");
    assert_eq!(post().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(
        reqwest::get(ingress.url("/healthz"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn exposes_metrics_for_requests_and_publish_confirms() {
    // A second secret, as during a rotation: webhooks signed with it count under slot 1.
    let s = setup(&["--webhook-secret", "the-old-secret"]).await;
    let body = fixtures::load("order_paid_separate");
    assert_eq!(s.post_signed(&body).await.status(), StatusCode::NO_CONTENT);
    let old = authorization(&body, "the-old-secret");
    let answer = s.post("/webhooks/xsolla", &body, Some(&old)).await;
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    let _ = s.post("/webhooks/xsolla", &body, None).await;
    let metrics = reqwest::get(s.ingress.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "ingress_requests_total{type=\"order_paid\",outcome=\"accepted\"}",
        "ingress_requests_total{type=\"unverified\",outcome=\"invalid_signature\"}",
        "ingress_publish_confirm_seconds_bucket",
        "ingress_publishes_in_flight",
        "ingress_request_duration_seconds_bucket{outcome=\"accepted\"",
        "ingress_request_duration_seconds_count{outcome=\"invalid_signature\"}",
        "ingress_signature_matches_total{slot=\"0\"} 1",
        "ingress_signature_matches_total{slot=\"1\"} 1",
        "# HELP ingress_requests_total",
        "build_info{version=",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }
}

#[tokio::test]
async fn stops_gracefully_when_asked() {
    let s = setup(&[]).await;
    let Setup { ingress, vhost, .. } = s;
    let addr = ingress.addr;
    ingress.stop().await.expect("run returns Ok after shutdown");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
    drop(vhost);
}

/// Under a memory alarm RabbitMQ blocks publishing connections: confirms stop coming. The
/// ingress must then answer 503 when its confirm deadline passes, and 503 at once to
/// requests beyond its in-flight bound, and 204 again once the alarm clears.
#[tokio::test]
async fn private_broker_blocked_publishes_time_out_and_overflow_answers_503() {
    let broker = tests::rabbit::PrivateBroker::start()
        .await
        .expect("private broker");
    let ingress = RunningIngress::start(
        &broker.amqp_url(),
        &[
            "--webhook-secret",
            SECRET,
            "--publish-timeout",
            "1s",
            "--max-in-flight",
            "1",
        ],
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let post = |order: i64| {
        let body = fixtures::with("order_paid_combined", &[("/order/id", json!(order))]);
        http.post(ingress.url("/webhooks/xsolla"))
            .header("authorization", authorization(&body, SECRET))
            .body(body)
            .send()
    };
    assert_eq!(post(1).await.unwrap().status(), StatusCode::NO_CONTENT);

    broker
        .ctl(&["set_vm_memory_high_watermark", "0"])
        .await
        .unwrap();
    let stalled = tokio::spawn(post(2));
    // While order 2 waits for its confirm, the single in-flight slot is taken.
    tests::wait::until(Duration::from_secs(10), "publish in flight", || async {
        let metrics = reqwest::get(ingress.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics
            .lines()
            .any(|l| l == "ingress_publishes_in_flight 1")
    })
    .await
    .unwrap();
    let overflow = post(3).await.unwrap();
    assert_eq!(error_code(overflow).await, (503, "SERVER_ERROR".into()));
    let timed_out = stalled.await.unwrap().unwrap();
    assert!(timed_out.headers().contains_key("retry-after"));
    assert_eq!(error_code(timed_out).await, (503, "SERVER_ERROR".into()));
    let metrics = reqwest::get(ingress.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "ingress_publishes_in_flight 0"),
        "{metrics}"
    );

    broker
        .ctl(&["set_vm_memory_high_watermark", "0.4"])
        .await
        .unwrap();
    tests::wait::until(
        Duration::from_secs(20),
        "204 after the alarm clears",
        || async { matches!(post(4).await, Ok(r) if r.status() == StatusCode::NO_CONTENT) },
    )
    .await
    .unwrap();
}

/// The real binary with a bad option stops at once, exit 2, and names the option.
#[tokio::test]
async fn bad_configuration_stops_start_up_naming_the_option() {
    let binary = tests::bin_path("ingress");
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "XSOLLA_WEBHOOK_SECRET"),
        (&[("MAX_BODY_BYTES", "abc")], "--max-body-bytes"),
        (&[("XSOLLA_IP_ALLOWLIST", "10.0.0.0/33")], "10.0.0.0/33"),
        (&[("AMQP_URL", "http://guest:hunter2@x")], "--amqp-url"),
        (&[("RETRY_DELAYS", "10s,ten")], "--retry-delays"),
        (&[("USER_CHECK_URL", "http://game/users")], "USER_CHECK_URL"),
        (
            &[("XSOLLA_PROJECTS_FILE", "/nonexistent/projects.json")],
            "XSOLLA_PROJECTS_FILE",
        ),
        (&[("INGRESS_LISTEN", "not-an-address")], "--listen"),
        (&[("TRUSTED_PROXIES", "0.0.0.0/0")], "--trusted-proxies"),
        (
            &[("TRUSTED_PROXIES", "10.0.0.0/8,::/0")],
            "trusts every address",
        ),
        (&[("HEADER_READ_TIMEOUT", "soon")], "--header-read-timeout"),
        (&[("MAX_CONNECTIONS", "0")], "--max-connections"),
        (&[("XSOLLA_PROJECT_ID", "-1")], "--project-id"),
        (&[("REQUEST_TIMEOUT", "5s")], "REQUEST_TIMEOUT"),
        (&[("METRICS_LISTEN", "not-an-address")], "--metrics-listen"),
        (
            &[("METRICS_LISTEN", "0.0.0.0:8080")],
            "must differ from INGRESS_LISTEN",
        ),
    ];
    for (env, expected) in cases {
        let mut command = tokio::process::Command::new(&binary);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        if !env.is_empty() {
            command.env("XSOLLA_WEBHOOK_SECRET", "s");
        }
        command.envs(env.iter().copied());
        let output = tokio::time::timeout(Duration::from_secs(20), command.output())
            .await
            .expect("exits promptly")
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{env:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{env:?}: one line, got {stderr}");
        assert!(
            lines[0].starts_with("ingress: ") && lines[0].contains(expected),
            "{env:?}: {:?} should name {expected}",
            lines[0]
        );
        assert!(!stderr.contains("hunter2"), "a password leaked: {stderr}");
    }
    // An unknown flag too: one line, exit 2.
    let output = tokio::process::Command::new(&binary)
        .env_clear()
        .arg("--no-such-option")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--no-such-option"), "{stderr}");
}
