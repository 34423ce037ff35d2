//! The answer table (README, "What the ingress answers") against the routes alone
//! (`tower::ServiceExt::oneshot`), with a stand-in publisher: no broker, no socket. The real-broker
//! suite (`tests/tests/ingress.rs`) keeps what only a broker can show: durability, confirms,
//! returns.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    body::{Body, to_bytes},
    extract::ConnectInfo,
    http::{Request, StatusCode},
    response::Response,
};
use lapin::BasicProperties;
use secrecy::SecretString;
use serde_json::Value;
use shared::{
    envelope::{HeadersExt as _, header},
    publish::PublishError,
    signature::authorization_header,
};
use tower::ServiceExt as _;

use super::{App, router};
use crate::{
    allowlist::parse_allowlist,
    publisher::{NotDurable, Publish},
    secrets::Secrets,
    verify::Verifier,
};

const SECRET: &str = "s";
const ORDER: &[u8] = br#"{"notification_type":"order_paid","order":{"id":7},"items":[]}"#;

/// Records what it is given; refuses everything with the broker's words when `failing`.
#[derive(Default)]
struct StandIn {
    published: Mutex<Vec<(String, Vec<u8>, BasicProperties)>>,
    failing: bool,
}

impl Publish for StandIn {
    async fn publish(
        &self,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), NotDurable> {
        if self.failing {
            return Err(NotDurable::Publish(PublishError::Returned {
                code: 312,
                text: "NO_ROUTE internal-queue-name".into(),
            }));
        }
        self.published
            .lock()
            .unwrap()
            .push((routing_key.to_owned(), body.to_vec(), properties));
        Ok(())
    }
}

fn app(allowlist: &str, failing: bool) -> Arc<App<StandIn>> {
    let secrets = Secrets::load(&[SecretString::from(SECRET)], None).unwrap();
    Arc::new(App {
        verifier: Verifier::new(secrets, parse_allowlist(allowlist).unwrap(), vec![], 2048),
        user_check: None,
        user_search: false,
        publisher: StandIn {
            failing,
            ..StandIn::default()
        },
        retry_after: 5,
        default_project: Some(42),
        meters: Default::default(),
    })
}

fn signed(path: &str, body: &[u8]) -> Request<Body> {
    Request::post(path)
        .header("authorization", authorization_header(body, SECRET))
        .body(Body::from(body.to_vec()))
        .unwrap()
}

async fn answer(app: &Arc<App<StandIn>>, request: Request<Body>) -> (StatusCode, Value, Response) {
    let response = router(app.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, 1 << 20).await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json, Response::from_parts(parts, Body::empty()))
}

fn code(json: &Value) -> &str {
    json["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn answers_204_once_published_with_the_exact_bytes() {
    let app = app("off", false);
    let (status, json, _) = answer(&app, signed("/webhooks/xsolla", ORDER)).await;
    assert_eq!((status, json), (StatusCode::NO_CONTENT, Value::Null));
    let published = app.publisher.published.lock().unwrap();
    let (key, body, properties) = &published[0];
    assert_eq!((key.as_str(), body.as_slice()), ("order_paid", ORDER));
    assert_eq!(
        properties.message_id().as_ref().unwrap().as_str(),
        "order_paid:7"
    );
    let headers = properties.headers().clone().unwrap();
    assert_eq!(headers.get_int(header::PROJECT_ID), Some(42));
}

#[tokio::test]
async fn refuses_what_is_not_a_verified_webhook() {
    let app = app("off", false);
    let unsigned = Request::post("/webhooks/xsolla")
        .body(Body::from(ORDER))
        .unwrap();
    let not_json = signed("/webhooks/xsolla", b"not json");
    let too_large = signed("/webhooks/xsolla", &vec![b' '; 4096]);
    let unknown_project = signed("/webhooks/xsolla/999", ORDER);
    let bad_project = signed("/webhooks/xsolla/abc", ORDER);
    for (request, expected) in [
        (unsigned, (StatusCode::BAD_REQUEST, "INVALID_SIGNATURE")),
        (not_json, (StatusCode::BAD_REQUEST, "INVALID_PARAMETER")),
        (
            too_large,
            (StatusCode::PAYLOAD_TOO_LARGE, "INVALID_PARAMETER"),
        ),
        (
            unknown_project,
            (StatusCode::BAD_REQUEST, "INVALID_SIGNATURE"),
        ),
        (bad_project, (StatusCode::BAD_REQUEST, "INVALID_PARAMETER")),
    ] {
        let (status, json, _) = answer(&app, request).await;
        assert_eq!((status, code(&json)), expected, "{json}");
    }
    assert!(app.publisher.published.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_allowlist_checks_the_peer_and_fails_closed_without_one() {
    let app = app("xsolla", false);
    let from = |ip: [u8; 4]| {
        let mut request = signed("/webhooks/xsolla", ORDER);
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 4000))));
        request
    };
    let (status, _, _) = answer(&app, from([185, 30, 20, 1])).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, json, _) = answer(&app, from([203, 0, 113, 5])).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::FORBIDDEN, "INVALID_CLIENT_IP")
    );
    let (status, json, _) = answer(&app, signed("/webhooks/xsolla", ORDER)).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::FORBIDDEN, "INVALID_CLIENT_IP")
    );
}

#[tokio::test]
async fn answers_503_with_a_fixed_message_when_not_durable() {
    let app = app("off", true);
    let (status, json, response) = answer(&app, signed("/webhooks/xsolla", ORDER)).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::SERVICE_UNAVAILABLE, "SERVER_ERROR")
    );
    assert_eq!(response.headers()["retry-after"], "5");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Temporarily unavailable; retry later (request "),
        "{message}"
    );
    assert!(!message.contains("internal-queue-name"), "{message}");
}

#[tokio::test]
async fn answers_user_validation_live_and_publishes_nothing() {
    let app = app("off", false);
    let body = br#"{"notification_type":"user_validation","user":{"id":"u1"}}"#;
    let (status, _, _) = answer(&app, signed("/webhooks/xsolla", body)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(app.publisher.published.lock().unwrap().is_empty());
}
