//! `AMQP_URL` with several nodes (a silent one costs one connect timeout, a lost node is
//! replaced by the next, a node that goes silent under a live connection is left for the
//! next) and `amqps://` with a private CA (`AMQP_CA_FILE`).

use std::time::{Duration, Instant};

use lapin::{
    BasicProperties,
    options::{BasicPublishOptions, QueueDeclareOptions},
    types::FieldTable,
};
use reqwest::StatusCode;
use shared::{amqp::Session, topology::Topology};
use tests::{
    fixtures::{self, authorization},
    ingress_harness::RunningIngress,
    inventory::{DemoInventory, InventoryConfig},
    rabbit::{PrivateBroker, TcpProxy, TestVhost, TlsFiles},
    worker_harness::{self, WorkerProcess},
};
use tokio::net::TcpListener;

const SECRET: &str = "test-secret";

/// A "node" that accepts TCP connections and never says a word: only the connect timeout
/// gets a client past it (a refused port would be skipped at once).
async fn silent_node() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

async fn metrics(ingress: &RunningIngress) -> String {
    reqwest::get(ingress.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn on_node(metrics: &str, addr: std::net::SocketAddr) -> bool {
    metrics
        .lines()
        .any(|l| l == format!("amqp_node{{node=\"{addr}\"}} 1"))
}

#[tokio::test]
async fn skips_a_silent_first_node_and_moves_to_the_next_when_its_node_is_lost() {
    let vhost = TestVhost::create().await.unwrap();
    let (silent, _silent_task) = silent_node().await;
    let a = TcpProxy::start(vhost.broker_addr()).await.unwrap();
    let b = TcpProxy::start(vhost.broker_addr()).await.unwrap();
    let url = [
        vhost.amqp_url_via(silent),
        vhost.amqp_url_via(a.addr()),
        vhost.amqp_url_via(b.addr()),
    ]
    .join(",");
    let started = Instant::now();
    let ingress = RunningIngress::start(
        &url,
        &["--webhook-secret", SECRET, "--amqp-connect-timeout", "2s"],
    )
    .await
    .expect("ready past the silent node");
    let first_ready = started.elapsed();
    assert!(
        first_ready >= Duration::from_secs(2),
        "the silent node was tried first: {first_ready:?}"
    );
    let http = reqwest::Client::new();
    let body = fixtures::load("order_paid_combined");
    let post = || {
        http.post(ingress.url("/webhooks/xsolla"))
            .header("authorization", authorization(&body, SECRET))
            .body(body.clone())
            .send()
    };
    assert_eq!(post().await.unwrap().status(), StatusCode::NO_CONTENT);
    let m = metrics(&ingress).await;
    assert!(on_node(&m, a.addr()), "on node a:\n{m}");
    assert!(
        m.contains(&format!("amqp_node{{node=\"{silent}\"}} 0")),
        "every node's series exists:\n{m}"
    );

    // Lose node a: the next connect starts after it (b), not from the silent first node,
    // so the move costs no connect timeout.
    let cut = Instant::now();
    a.cut().await;
    tests::wait::until(Duration::from_secs(10), "on node b", || async {
        on_node(&metrics(&ingress).await, b.addr())
    })
    .await
    .unwrap();
    ingress.wait_ready().await.unwrap();
    let moved = cut.elapsed();
    assert!(
        moved < Duration::from_secs(2),
        "moved to b without waiting on the silent node: {moved:?}"
    );
    assert_eq!(post().await.unwrap().status(), StatusCode::NO_CONTENT);
    eprintln!("first ready after {first_ready:?}; moved to b in {moved:?}");
    ingress.stop().await.unwrap();
}

/// A node that goes silent under live connections (SIGSTOP, a partition: nothing closes,
/// nothing answers) is noticed by the liveness probe, not by the heartbeat a minute or two
/// later: the ingress answers 204 again and the worker consumes again, both through the
/// next node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_goes_silent_is_left_for_the_next_by_the_ingress_and_the_worker() {
    let vhost = TestVhost::create().await.unwrap();
    let a = TcpProxy::start(vhost.broker_addr()).await.unwrap();
    let b = TcpProxy::start(vhost.broker_addr()).await.unwrap();
    let url = [vhost.amqp_url_via(a.addr()), vhost.amqp_url_via(b.addr())].join(",");
    let inventory = DemoInventory::start(InventoryConfig::default())
        .await
        .unwrap();
    let worker = WorkerProcess::spawn(
        &url,
        &inventory.url(),
        &[("AMQP_CONNECT_TIMEOUT", "1s"), ("PUBLISH_TIMEOUT", "1s")],
    )
    .await
    .unwrap();
    let ingress = RunningIngress::start(
        &url,
        &[
            "--webhook-secret",
            SECRET,
            "--amqp-connect-timeout",
            "1s",
            "--publish-timeout",
            "1s",
        ],
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let post = |id: u64| {
        let body = worker_harness::order_paid(id);
        http.post(ingress.url("/webhooks/xsolla"))
            .header("authorization", authorization(&body, SECRET))
            .body(body)
            .send()
    };
    assert_eq!(post(1).await.unwrap().status(), StatusCode::NO_CONTENT);
    inventory
        .wait_for(|s| s.grants.contains_key("1"), Duration::from_secs(10))
        .await
        .expect("granted through node a");
    let worker_metrics = || async {
        worker_harness::metrics(worker.ops)
            .await
            .map_err(|e| e.to_string())
    };
    assert!(on_node(&worker_metrics().await.unwrap(), a.addr()));

    let stalled = Instant::now();
    a.stall();
    // Xsolla re-sends what got a 503; so does this, at once.
    tests::wait::value(Duration::from_secs(20), "a 204 again", || async {
        match post(2).await {
            Ok(r) if r.status() == StatusCode::NO_CONTENT => Ok(()),
            Ok(r) => Err(format!("answered {}", r.status())),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .unwrap();
    let answered = stalled.elapsed();
    tests::wait::value(Duration::from_secs(20), "the worker on node b", || async {
        let m = worker_metrics().await?;
        on_node(&m, b.addr()).then_some(()).ok_or(m)
    })
    .await
    .unwrap();
    worker_harness::wait_ready(worker.ops, Duration::from_secs(10))
        .await
        .unwrap();
    let moved = stalled.elapsed();
    // Consuming there. The broker itself still counts the silent connection's consumer
    // (its prefetch holds what it was sent, order 2 perhaps, until the broker's heartbeat
    // drops it), so of the orders sent now the live consumer gets those past that
    // prefetch: one at least of nine.
    for id in 3..12 {
        assert_eq!(post(id).await.unwrap().status(), StatusCode::NO_CONTENT);
    }
    inventory
        .wait_for(
            |s| (3..12).any(|id| s.grants.contains_key(&id.to_string())),
            Duration::from_secs(20),
        )
        .await
        .expect("granted through node b");
    eprintln!("after the stall: 204 again in {answered:?}, the worker on node b in {moved:?}");
    // The probe's bound: a publish timeout (1 s), a probe (1 s; the worker's runs every
    // 5 s), a close (1 s), a connect. The heartbeat would have taken a minute or more.
    assert!(answered < Duration::from_secs(10), "{answered:?}");
    assert!(moved < Duration::from_secs(15), "{moved:?}");
    ingress.stop().await.unwrap();
    worker.kill().await.unwrap();
    a.cut().await;
}

#[tokio::test]
async fn a_bad_entry_in_the_list_is_refused_by_position_without_its_password() {
    let err = shared::config::brokers(
        "amqp://u:hunter2@a:5672/%2f,amqp://u:hunter2@b:nope/%2f",
        Duration::from_secs(1),
        None,
    )
    .unwrap_err();
    assert!(
        err.starts_with("AMQP_URL (--amqp-url): entry 2 of 2: `amqp://u:***@b:nope/%2f`"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

/// A CA and a server certificate it signed for `localhost` (DNS name only, so that
/// `127.0.0.1` is a host the certificate does not name).
fn make_certs() -> (String, TlsFiles) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "xsolla-bridge test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    // Another CA, which signed nothing the broker serves.
    let other_key = KeyPair::generate().unwrap();
    let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
    other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other = other.self_signed(&other_key).unwrap();
    (
        other.pem(),
        TlsFiles {
            ca: ca_cert.pem(),
            cert: server.pem(),
            key: server_key.serialize_pem(),
        },
    )
}

#[tokio::test]
async fn private_broker_amqps_with_a_private_ca() {
    let (wrong_ca, files) = make_certs();
    let dir = std::env::temp_dir().join(format!("xb-brokers-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let right = dir.join("ca.pem");
    let wrong = dir.join("wrong-ca.pem");
    std::fs::write(&right, &files.ca).unwrap();
    std::fs::write(&wrong, &wrong_ca).unwrap();

    let boot = Instant::now();
    let broker = PrivateBroker::start_tls(files).await.unwrap();
    eprintln!("TLS broker booted in {:?}", boot.elapsed());
    let port = broker.tls_port().unwrap();
    let timeout = Duration::from_secs(5);
    let open = |url: String, ca: &std::path::Path| {
        let brokers = shared::config::brokers(&url, timeout, Some(ca)).unwrap();
        async move { Session::open_on(&brokers, "tls test", &Topology::default()).await }
    };

    // The right CA: connected, and a publish is confirmed.
    let session = open(format!("amqps://guest:guest@localhost:{port}/%2f"), &right)
        .await
        .expect("connects over TLS with AMQP_CA_FILE");
    assert_eq!(session.node(), format!("localhost:{port}"));
    let channel = session.channel();
    channel
        .queue_declare(
            "tls-check".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let confirm = channel
        .basic_publish(
            "".into(),
            "tls-check".into(),
            BasicPublishOptions::default(),
            b"over tls",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack(), "{confirm:?}");
    session.close().await;

    // A CA that did not sign the broker's certificate.
    let err = open(format!("amqps://guest:guest@localhost:{port}/%2f"), &wrong)
        .await
        .err()
        .expect("refused with the wrong CA")
        .to_string();
    eprintln!("wrong CA: {err}");
    assert!(
        err.contains("certificate is not trusted") && err.contains("wrong-ca.pem"),
        "{err}"
    );

    // The right CA, but a host the certificate does not name: server-name checking is on.
    let err = open(format!("amqps://guest:guest@127.0.0.1:{port}/%2f"), &right)
        .await
        .err()
        .expect("refused for the host name")
        .to_string();
    eprintln!("wrong host: {err}");
    assert!(err.contains("not valid for `127.0.0.1`"), "{err}");

    // TLS on the plain port, and plain AMQP on the TLS port: an error naming the node
    // within the connect timeout, not a hang.
    for (url, addr) in [
        (
            format!("amqps://guest:guest@localhost:{}/%2f", broker.port()),
            format!("localhost:{}", broker.port()),
        ),
        (
            format!("amqp://guest:guest@localhost:{port}/%2f"),
            format!("localhost:{port}"),
        ),
    ] {
        let err = open(url, &right)
            .await
            .err()
            .expect("the wrong protocol is refused")
            .to_string();
        eprintln!("wrong protocol: {err}");
        assert!(err.contains(&addr), "{err}");
        assert!(!err.contains("ParserErrors"), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
