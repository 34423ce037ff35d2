//! The demo inventory service against real HTTP: contract answers, idempotency (also
//! under concurrency), every fault switch, and the admin API.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::inventory::{
    AdminClient, DemoInventory, Endpoint, Faults, FaultsPatch, InventoryConfig, InventoryHandle,
    InventoryRequest, Item,
};

const WAIT: Duration = Duration::from_secs(10);
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn request(key: &str, order_id: &str, skus: &[&str]) -> InventoryRequest {
    InventoryRequest {
        idempotency_key: key.to_string(),
        project_id: Some(12345),
        user_id: "user-1".to_string(),
        order_id: order_id.to_string(),
        transaction_id: Some("987654321".to_string()),
        items: skus
            .iter()
            .map(|sku| Item {
                sku: (*sku).to_string(),
                quantity: 2,
                kind: Some("virtual_good".to_string()),
            })
            .collect(),
        notification_type: "order_paid".to_string(),
        sandbox: true,
        received_at: "2025-01-22T10:00:00Z".to_string(),
    }
}

fn grant_key(order_id: &str) -> String {
    format!("xsolla:order:{order_id}:grant")
}

fn revoke_key(order_id: &str) -> String {
    format!("xsolla:order:{order_id}:revoke")
}

/// One answer, kept raw so byte-for-byte equality of replays can be asserted.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Sends a contract call the way the worker does.
async fn call(
    http: &reqwest::Client,
    base: &str,
    endpoint: Endpoint,
    req: &InventoryRequest,
    token: Option<&str>,
) -> Reply {
    let mut rb = http
        .post(format!("{base}/{endpoint}"))
        .header("Idempotency-Key", &req.idempotency_key)
        .header("traceparent", TRACEPARENT)
        .json(req);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    send(rb).await
}

async fn send(rb: reqwest::RequestBuilder) -> Reply {
    let resp = rb.send().await.expect("request reaches the demo inventory");
    Reply {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap(),
    }
}

async fn start(config: InventoryConfig) -> (InventoryHandle, reqwest::Client) {
    let inv = DemoInventory::start(config.with_seed(1)).await.unwrap();
    (inv, reqwest::Client::new())
}

#[tokio::test]
async fn first_grant_is_201_and_a_repeat_returns_the_same_answer() {
    let (inv, http) = start(InventoryConfig::default()).await;
    let req = request(&grant_key("1001"), "1001", &["sword"]);

    let first = call(&http, &inv.url(), Endpoint::Grants, &req, None).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(
        first.json(),
        json!({"status": "granted", "order_id": "1001", "idempotency_key": grant_key("1001")})
    );
    let again = call(&http, &inv.url(), Endpoint::Grants, &req, None).await;
    assert_eq!(again.status, first.status);
    assert_eq!(
        again.body, first.body,
        "a replay is byte for byte the first answer"
    );

    let s = inv.state();
    let g = s.grant("1001").unwrap();
    assert_eq!(g.times_applied, 1);
    assert_eq!(g.user_id, "user-1");
    assert_eq!(g.items, req.items);
    assert_eq!(g.idempotency_key, grant_key("1001"));
    assert_eq!(g.traceparent.as_deref(), Some(TRACEPARENT));
    assert!(!g.revoked);
    assert_eq!(s.effects_applied, 1);
    assert_eq!(s.received(Endpoint::Grants), 2);
    assert_eq!(s.answered(Endpoint::Grants, 201), 2);
    let outcomes: Vec<_> = s.recent_calls.iter().map(|c| c.outcome.as_str()).collect();
    assert_eq!(outcomes, ["applied", "replayed"]);
    assert!(s.exactly_once());
    inv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_with_one_key_apply_once() {
    let (inv, http) = start(InventoryConfig::default()).await;
    let req = request(&grant_key("2002"), "2002", &["shield"]);
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let (http, url, req) = (http.clone(), inv.url(), req.clone());
            tokio::spawn(async move { call(&http, &url, Endpoint::Grants, &req, None).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for c in calls {
        let r = c.await.unwrap();
        assert_eq!(r.status, StatusCode::CREATED);
        bodies.push(r.body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));

    let s = inv.state();
    assert_eq!(s.grant("2002").unwrap().times_applied, 1);
    assert_eq!(s.effects_applied, 1);
    assert_eq!(s.answered(Endpoint::Grants, 201), 16);
    assert!(s.exactly_once());
    inv.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_second_key_for_the_same_order_is_counted_as_a_duplicate() {
    // The service must *detect* a worker that grants one order under two keys.
    let (inv, http) = start(InventoryConfig::default()).await;
    for key in ["key-a", "key-b"] {
        let r = call(
            &http,
            &inv.url(),
            Endpoint::Grants,
            &request(key, "3003", &["gem"]),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let s = inv.state();
    assert_eq!(s.grant("3003").unwrap().times_applied, 2);
    assert_eq!(s.duplicates_applied, 1);
    assert!(!s.exactly_once());

    // And one key reused for another effect is refused, not replayed.
    let mut other = request("key-a", "3004", &["gem"]);
    other.order_id = "3004".to_string();
    let r = call(&http, &inv.url(), Endpoint::Grants, &other, None).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"], "idempotency_key_reused");
    let r = call(
        &http,
        &inv.url(),
        Endpoint::Revocations,
        &request("key-a", "3003", &["gem"]),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(inv.state().key_conflicts, 2);
    inv.shutdown().await.unwrap();
}

#[tokio::test]
async fn revocation_before_grant_is_409_and_succeeds_after_it() {
    let (inv, http) = start(InventoryConfig::default()).await;
    let base = inv.url();
    let mut revoke = request(&revoke_key("4004"), "4004", &["bow"]);
    revoke.notification_type = "order_canceled".to_string();

    let early = call(&http, &base, Endpoint::Revocations, &revoke, None).await;
    assert_eq!(early.status, StatusCode::CONFLICT);
    assert_eq!(early.json()["error"], "grant_not_found");
    assert_eq!(inv.state().effects_applied, 0);

    let grant = request(&grant_key("4004"), "4004", &["bow"]);
    assert_eq!(
        call(&http, &base, Endpoint::Grants, &grant, None)
            .await
            .status,
        StatusCode::CREATED
    );
    // The same key again: the 409 was not stored, so the retry applies now.
    let later = call(&http, &base, Endpoint::Revocations, &revoke, None).await;
    assert_eq!(later.status, StatusCode::CREATED);
    assert_eq!(
        later.json(),
        json!({"status": "revoked", "order_id": "4004", "idempotency_key": revoke_key("4004")})
    );
    let repeat = call(&http, &base, Endpoint::Revocations, &revoke, None).await;
    assert_eq!((repeat.status, &repeat.body), (later.status, &later.body));

    let s = inv.state();
    let g = s.grant("4004").unwrap();
    assert!(g.revoked && g.revoked_after_grant);
    assert_eq!(g.times_applied, 1);
    let r = &s.revocations["4004"];
    assert_eq!(r.times_applied, 1);
    assert_eq!(r.notification_type, "order_canceled");
    assert_eq!(s.effects_applied, 2);
    assert_eq!(s.answered(Endpoint::Revocations, 409), 1);
    assert_eq!(s.answered(Endpoint::Revocations, 201), 2);
    assert!(s.exactly_once());
    inv.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_configured_token_is_required() {
    let (inv, http) = start(InventoryConfig::default().with_token("s3cret")).await;
    let req = request(&grant_key("5005"), "5005", &["axe"]);
    for token in [None, Some("wrong")] {
        let r = call(&http, &inv.url(), Endpoint::Grants, &req, token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.json()["error"], "unauthorized");
        assert_eq!(r.headers["www-authenticate"], "Bearer");
    }
    assert_eq!(inv.state().effects_applied, 0);
    let ok = call(&http, &inv.url(), Endpoint::Grants, &req, Some("s3cret")).await;
    assert_eq!(ok.status, StatusCode::CREATED);
    assert_eq!(inv.state().answered(Endpoint::Grants, 401), 2);
    inv.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_rejected_sku_is_422_until_the_operator_unrejects_it() {
    let faults = Faults {
        rejected_skus: ["retired_sku".to_string()].into(),
        ..Faults::default()
    };
    let (inv, http) = start(InventoryConfig::default().with_faults(faults)).await;
    let admin = AdminClient::new(inv.url());
    let req = request(&grant_key("6006"), "6006", &["gold", "retired_sku"]);

    let r = call(&http, &inv.url(), Endpoint::Grants, &req, None).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.json(),
        json!({"error": "unknown_sku", "sku": "retired_sku"})
    );
    assert!(inv.state().grants.is_empty());

    // The ops-guide fix: remove the SKU from the rejected set, then replay the same key.
    let faults = admin
        .patch_faults(&FaultsPatch {
            rejected_skus: Some(Default::default()),
            ..FaultsPatch::default()
        })
        .await
        .unwrap();
    assert!(faults.rejected_skus.is_empty());
    let r = call(&http, &inv.url(), Endpoint::Grants, &req, None).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(inv.state().grant("6006").unwrap().times_applied, 1);
    inv.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_calls_are_400_and_apply_nothing() {
    let (inv, http) = start(InventoryConfig::default()).await;
    let url = format!("{}/grants", inv.url());
    let good = serde_json::to_value(request("k-7007", "7007", &["gold"])).unwrap();
    let post = |body: String, key: Option<&str>| {
        let mut rb = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = key {
            rb = rb.header("Idempotency-Key", k);
        }
        send(rb)
    };
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut b = good.clone();
        edit(&mut b);
        b.to_string()
    };

    let cases: Vec<(&str, String, Option<&str>, &str)> = vec![
        ("not json", "{".to_string(), Some("k-7007"), "invalid_body"),
        (
            "missing transaction_id",
            with(&|b| {
                b.as_object_mut().unwrap().remove("transaction_id");
            }),
            Some("k-7007"),
            "invalid_body",
        ),
        (
            "integer order_id",
            with(&|b| b["order_id"] = json!(7007)),
            Some("k-7007"),
            "invalid_body",
        ),
        (
            "bad received_at",
            with(&|b| b["received_at"] = json!("yesterday")),
            Some("k-7007"),
            "invalid_body",
        ),
        (
            "header/body key mismatch",
            good.to_string(),
            Some("other-key"),
            "idempotency_key_mismatch",
        ),
        (
            "no Idempotency-Key",
            good.to_string(),
            None,
            "missing_idempotency_key",
        ),
    ];
    for (what, body, key, code) in cases {
        let r = post(body, key).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.body);
        assert_eq!(r.json()["error"], code, "{what}: {}", r.body);
    }
    let r = send(
        http.post(&url)
            .header("Idempotency-Key", "k-7007")
            .body(good.to_string()),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let s = inv.state();
    assert_eq!(s.effects_applied, 0);
    assert_eq!(s.answered(Endpoint::Grants, 400), 6);
    // A null project_id / transaction_id is fine.
    let r = post(
        with(&|b| {
            b["project_id"] = Value::Null;
            b["transaction_id"] = Value::Null;
        }),
        Some("k-7007"),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    inv.shutdown().await.unwrap();
}

/// Starts a service with one fault at share 1.0 and sends one grant.
async fn one_call_with(faults: Faults) -> (InventoryHandle, Reply) {
    let (inv, http) = start(InventoryConfig::default().with_faults(faults)).await;
    let req = request(&grant_key("8008"), "8008", &["gold"]);
    let r = call(&http, &inv.url(), Endpoint::Grants, &req, None).await;
    (inv, r)
}

#[tokio::test]
async fn fault_fail_5xx_answers_503_before_applying() {
    let (inv, r) = one_call_with(Faults {
        fail_5xx: 1.0,
        ..Faults::default()
    })
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["error"], "injected");
    assert_eq!(inv.state().effects_applied, 0);
}

#[tokio::test]
async fn fault_fail_429_sends_retry_after() {
    let (inv, r) = one_call_with(Faults {
        fail_429: 1.0,
        retry_after_secs: 7,
        ..Faults::default()
    })
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers["retry-after"], "7");
    assert_eq!(inv.state().effects_applied, 0);
}

#[tokio::test]
async fn fault_fail_4xx_answers_injected_400() {
    let (inv, r) = one_call_with(Faults {
        fail_4xx: 1.0,
        ..Faults::default()
    })
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json(), json!({"error": "injected"}));
    assert_eq!(inv.state().effects_applied, 0);
}

#[tokio::test]
async fn fault_down_refuses_contract_calls_but_not_admin() {
    let (inv, r) = one_call_with(Faults {
        down: true,
        ..Faults::default()
    })
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["error"], "down");
    let admin = AdminClient::new(inv.url());
    assert!(admin.healthy().await);
    assert_eq!(admin.state().await.unwrap().effects_applied, 0);

    // The maintenance window ends; the same call now succeeds.
    inv.update_faults(|f| f.down = false).unwrap();
    let http = reqwest::Client::new();
    let req = request(&grant_key("8008"), "8008", &["gold"]);
    let r = call(&http, &inv.url(), Endpoint::Grants, &req, None).await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn fault_timeout_hangs_for_the_configured_time_then_504() {
    // Real time with a short hang, to cover the configurable duration end to end.
    let hang = Duration::from_millis(150);
    let started = tokio::time::Instant::now();
    let (inv, r) = one_call_with(Faults {
        timeout: 1.0,
        timeout_ms: hang.as_millis() as u64,
        ..Faults::default()
    })
    .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.json()["error"], "timeout");
    assert!(started.elapsed() >= hang);
    let s = inv.state();
    assert_eq!(s.effects_applied, 0);
    assert_eq!(s.answered(Endpoint::Grants, 504), 1);
    assert_eq!(Faults::default().timeout_ms, 30_000);
}

#[tokio::test(start_paused = true)]
async fn fault_timeout_default_hang_is_30s_on_the_paused_clock() {
    // The real default (30 s) without waiting for it: the paused clock jumps to the
    // server's timer while the runtime idles on the open request.
    let started = tokio::time::Instant::now();
    let (inv, r) = one_call_with(Faults {
        timeout: 1.0,
        ..Faults::default()
    })
    .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    let hung = started.elapsed();
    assert!(
        hung >= Duration::from_secs(30) && hung < Duration::from_secs(60),
        "{hung:?}"
    );
    assert_eq!(inv.state().answered(Endpoint::Grants, 504), 1);
    inv.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_cuts_a_hanging_call_short() {
    let (inv, http) = start(InventoryConfig::default().with_faults(Faults {
        timeout: 1.0,
        timeout_ms: 600_000,
        ..Faults::default()
    }))
    .await;
    let url = inv.url();
    let pending = tokio::spawn(async move {
        let req = request(&grant_key("8009"), "8009", &["gold"]);
        call(&http, &url, Endpoint::Grants, &req, None).await
    });
    // The call is in and hanging: received, not answered.
    inv.wait_for(
        |s| s.received(Endpoint::Grants) == 1 && s.answered_total(Endpoint::Grants) == 0,
        WAIT,
    )
    .await
    .unwrap();
    inv.shutdown().await.unwrap();
    let r = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn fault_fail_after_apply_stores_the_effect_but_loses_the_answer() {
    let (inv, http) = start(InventoryConfig::default().with_faults(Faults {
        fail_after_apply: 1.0,
        ..Faults::default()
    }))
    .await;
    let req = request(&grant_key("9009"), "9009", &["gold"]);
    for _ in 0..2 {
        let r = call(&http, &inv.url(), Endpoint::Grants, &req, None).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.json()["error"], "injected_after_apply");
    }
    let s = inv.state();
    assert_eq!(s.grant("9009").unwrap().times_applied, 1);
    assert_eq!(s.effects_applied, 1);

    // The worker's retry after the fault clears gets the stored success.
    inv.set_faults(Faults::none()).unwrap();
    let r = call(&http, &inv.url(), Endpoint::Grants, &req, None).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["status"], "granted");
    let s = inv.state();
    assert_eq!(s.grant("9009").unwrap().times_applied, 1);
    assert!(s.exactly_once());
    // A refused revocation is not turned into a lost answer: nothing was applied.
    inv.set_faults(Faults {
        fail_after_apply: 1.0,
        ..Faults::default()
    })
    .unwrap();
    let r = call(
        &http,
        &inv.url(),
        Endpoint::Revocations,
        &request("rv", "nope", &["gold"]),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    inv.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_seed_reproduces_the_fault_sequence() {
    async fn statuses(seed: u64) -> Vec<u16> {
        let faults = Faults {
            fail_5xx: 0.5,
            ..Faults::default()
        };
        let inv = DemoInventory::start(
            InventoryConfig::default()
                .with_faults(faults)
                .with_seed(seed),
        )
        .await
        .unwrap();
        let http = reqwest::Client::new();
        let mut out = Vec::new();
        for i in 0..24 {
            let order = i.to_string();
            let req = request(&grant_key(&order), &order, &["gold"]);
            out.push(
                call(&http, &inv.url(), Endpoint::Grants, &req, None)
                    .await
                    .status
                    .as_u16(),
            );
        }
        inv.shutdown().await.unwrap();
        out
    }
    let a = statuses(42).await;
    assert_eq!(a, statuses(42).await);
    assert!(a.contains(&201) && a.contains(&503), "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_round_trip() {
    let (inv, http) = start(InventoryConfig::default()).await;
    let admin = AdminClient::new(inv.url());
    assert_eq!(admin.faults().await.unwrap(), Faults::default());

    let wanted = Faults {
        fail_5xx: 0.25,
        fail_429: 0.25,
        retry_after_secs: 3,
        rejected_skus: ["x".to_string()].into(),
        ..Faults::default()
    };
    assert_eq!(admin.set_faults(&wanted).await.unwrap(), wanted);
    assert_eq!(inv.faults(), wanted);
    let patched = admin
        .patch_faults(&FaultsPatch {
            down: Some(true),
            ..FaultsPatch::default()
        })
        .await
        .unwrap();
    assert!(patched.down);
    assert_eq!(patched.fail_5xx, 0.25);

    // Invalid faults are refused and leave the old ones in force.
    let too_much = Faults {
        fail_5xx: 0.8,
        timeout: 0.8,
        ..Faults::default()
    };
    assert!(admin.set_faults(&too_much).await.is_err());
    for bad in [json!({"fail_5xx": 2.0}), json!({"fail_503": 1.0})] {
        let r = send(http.put(format!("{}/_admin/faults", inv.url())).json(&bad)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert_eq!(r.json()["error"], "invalid_faults");
    }
    assert!(inv.update_faults(|f| f.fail_4xx = -1.0).is_err());
    assert_eq!(inv.faults(), patched);

    // Long-poll: a remote waiter wakes on the change, no polling interval.
    admin.set_faults(&Faults::none()).await.unwrap();
    let waiter = {
        let admin = admin.clone();
        tokio::spawn(async move { admin.wait_for(|s| s.grant("10").is_some(), WAIT).await })
    };
    let req = request(&grant_key("10"), "10", &["gold"]);
    assert_eq!(
        call(&http, &inv.url(), Endpoint::Grants, &req, None)
            .await
            .status,
        StatusCode::CREATED
    );
    let seen = waiter.await.unwrap().unwrap();
    assert_eq!(seen.grant("10").unwrap().times_applied, 1);
    // With nothing changing, a long-poll returns the same version when its wait ends.
    let now = admin.state().await.unwrap();
    let same = admin
        .state_after(now.version, Duration::from_millis(20))
        .await
        .unwrap();
    assert_eq!(same.version, now.version);

    // Reset forgets everything and goes back to the start-up faults; versions keep growing.
    admin.reset().await.unwrap();
    let s = admin.state().await.unwrap();
    assert!(s.grants.is_empty() && s.calls.is_empty() && s.recent_calls.is_empty());
    assert_eq!(s.faults, Faults::default());
    assert_eq!(s.seed, 1);
    assert!(s.version > now.version);
    // The same key applies afresh after a reset.
    let r = call(&http, &inv.url(), Endpoint::Grants, &req, None).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(admin.state().await.unwrap().effects_applied, 1);
    inv.shutdown().await.unwrap();
}

#[tokio::test]
async fn wait_for_fails_at_its_deadline_with_the_last_state() {
    let (inv, _http) = start(InventoryConfig::default()).await;
    let err = inv
        .wait_for(|s| s.effects_applied > 0, Duration::from_millis(100))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("condition not met within 100ms"), "{msg}");
    assert!(msg.contains("effects_applied 0"), "{msg}");
    inv.shutdown().await.unwrap();
}

#[tokio::test]
async fn start_refuses_invalid_faults_and_taken_addresses() {
    let bad = InventoryConfig::default().with_faults(Faults {
        fail_5xx: 1.5,
        ..Faults::default()
    });
    assert!(DemoInventory::start(bad).await.is_err());
    let (inv, _http) = start(InventoryConfig::default()).await;
    let taken = InventoryConfig::default().with_listen(inv.addr());
    assert!(DemoInventory::start(taken).await.is_err());
    inv.shutdown().await.unwrap();
}
