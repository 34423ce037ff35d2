//! Tests of the RabbitMQ isolation helpers against the real broker(s).

use std::time::Duration;

use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions},
    types::FieldTable,
};
use tests::rabbit::{PrivateBroker, TcpProxy, TestVhost, encode_vhost, rabbitmqctl};
use tokio::time::{Instant, timeout};

const DEADLINE: Duration = Duration::from_secs(20);

async fn vhost_exists(name: &str) -> bool {
    let out = rabbitmqctl(&["list_vhosts", "name", "--no-table-headers"])
        .await
        .unwrap();
    out.lines().any(|l| l.trim() == name)
}

/// Polls an async condition until true or the deadline passes.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    tests::wait::until(DEADLINE, what, &mut cond).await.unwrap();
}

async fn connect(url: &str) -> lapin::Result<Connection> {
    Connection::connect(url, ConnectionProperties::default()).await
}

/// Declares a durable queue and publishes `n` persistent messages with confirms.
async fn declare_and_publish(conn: &Connection, queue: &str, n: usize) {
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(queue.into(), opts, args).await.unwrap();
    for i in 0..n {
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            format!("m{i}").as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
}

#[test]
fn vhost_names_are_url_encoded() {
    assert_eq!(encode_vhost("/"), "%2F");
    assert_eq!(encode_vhost("xb-test-1-ab"), "xb-test-1-ab");
    assert_eq!(encode_vhost("a b%"), "a%20b%25");
}

#[tokio::test]
async fn vhost_is_created_usable_and_deleted() {
    let vhost = TestVhost::create().await.unwrap();
    let name = vhost.name().to_owned();
    assert!(name.starts_with("xb-test-"));
    assert!(vhost_exists(&name).await);
    assert!(vhost.amqp_url().ends_with(&format!("/{name}")));

    let conn = vhost.connect().await.unwrap();
    assert_eq!(vhost.queue_len("nope").await, None);
    declare_and_publish(&conn, "q", 3).await;
    // Counts trail confirms a little (quorum queue apply, stats interval): wait, don't read once.
    vhost.wait_queue_len("q", 3, DEADLINE).await.unwrap();
    eventually("ctl count", || async {
        vhost.queue_messages("q").await.unwrap() == Some(3)
    })
    .await;
    assert_eq!(vhost.queue_messages("nope").await.unwrap(), None);
    vhost.delete_queue("q").await.unwrap();
    assert_eq!(vhost.queue_len("q").await, None);
    vhost.delete_queue("q").await.unwrap();

    vhost.delete().await.unwrap();
    assert!(!vhost_exists(&name).await);
}

#[tokio::test]
async fn dropped_vhost_is_deleted_in_background() {
    let vhost = TestVhost::create().await.unwrap();
    let name = vhost.name().to_owned();
    drop(vhost);
    // Each probe is a CLI call (~0.5 s); the deadline covers a loaded machine.
    eventually("vhost deletion after drop", || async {
        !vhost_exists(&name).await
    })
    .await;
}

#[tokio::test]
async fn close_connections_closes_only_this_vhosts_connections() {
    let a = TestVhost::create().await.unwrap();
    let b = TestVhost::create().await.unwrap();
    let ca = a.connect().await.unwrap();
    let cb = b.connect().await.unwrap();
    eventually("connection listed", || async {
        a.connection_count().await.unwrap() == 1
    })
    .await;

    a.close_connections().await.unwrap();
    eventually("a's connection closed", || async {
        !ca.status().connected()
    })
    .await;
    assert!(
        cb.status().connected(),
        "other vhost's connection must survive"
    );
    assert!(cb.create_channel().await.is_ok());
}

#[tokio::test]
async fn proxy_relays_cuts_and_restores() {
    let vhost = TestVhost::create().await.unwrap();
    let proxy = TcpProxy::to_shared_broker().await.unwrap();
    let url = vhost.amqp_url_via(proxy.addr());

    let conn = connect(&url).await.unwrap();
    declare_and_publish(&conn, "via-proxy", 1).await;
    vhost
        .wait_queue_len("via-proxy", 1, DEADLINE)
        .await
        .unwrap();

    proxy.cut().await;
    assert!(proxy.is_cut());
    eventually("relayed connection dropped", || async {
        !conn.status().connected()
    })
    .await;
    // Refused outright, not hanging: the proxy is not listening.
    let err = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(timeout(DEADLINE, connect(&url)).await.unwrap().is_err());

    proxy.restore().await.unwrap();
    let conn = connect(&url).await.unwrap();
    declare_and_publish(&conn, "via-proxy", 1).await;
    vhost
        .wait_queue_len("via-proxy", 2, DEADLINE)
        .await
        .unwrap();
}

#[tokio::test]
async fn private_broker_stop_app_and_start_app() {
    let t = Instant::now();
    let broker = PrivateBroker::start().await.unwrap();
    eprintln!("private broker {} up in {:?}", broker.node(), t.elapsed());
    assert_ne!(broker.port(), 5672);

    let conn = connect(&broker.amqp_url()).await.unwrap();
    declare_and_publish(&conn, "durable", 2).await;

    let t = Instant::now();
    broker.stop_app().await.unwrap();
    eprintln!("stop_app took {:?}", t.elapsed());
    eventually("client sees the broker go", || async {
        !conn.status().connected()
    })
    .await;
    assert!(
        timeout(DEADLINE, connect(&broker.amqp_url()))
            .await
            .unwrap()
            .is_err()
    );
    // The shared broker is untouched.
    let shared = TestVhost::create().await.unwrap();
    assert!(shared.connect().await.is_ok());

    let t = Instant::now();
    broker.start_app().await.unwrap();
    eprintln!("start_app took {:?}", t.elapsed());
    assert!(connect(&broker.amqp_url()).await.is_ok());
    broker
        .wait_queue_len("durable", 2, DEADLINE)
        .await
        .expect("persistent messages survive");

    let t = Instant::now();
    let dir = broker.dir().to_owned();
    drop(broker);
    eprintln!("shutdown took {:?}", t.elapsed());
    assert!(!dir.exists());
}

#[tokio::test]
async fn private_broker_survives_kill_and_restart() {
    let broker = PrivateBroker::start().await.unwrap();
    let conn = connect(&broker.amqp_url()).await.unwrap();
    declare_and_publish(&conn, "durable", 3).await;

    broker.kill_node().await.unwrap();
    eventually("client sees the crash", || async {
        !conn.status().connected()
    })
    .await;
    let t = Instant::now();
    broker.restart_node().await.unwrap();
    eprintln!("restart after kill took {:?}", t.elapsed());
    broker
        .wait_queue_len("durable", 3, DEADLINE)
        .await
        .expect("confirmed messages survive a crash");
}

#[tokio::test]
async fn private_broker_graceful_stop_and_restart() {
    let broker = PrivateBroker::start().await.unwrap();
    let conn = connect(&broker.amqp_url()).await.unwrap();
    declare_and_publish(&conn, "durable", 1).await;
    let t = Instant::now();
    broker.stop_node().await.unwrap();
    eprintln!("graceful stop took {:?}", t.elapsed());
    assert!(broker.queue_len("durable").await.is_err(), "node is down");
    let t = Instant::now();
    broker.restart_node().await.unwrap();
    eprintln!("restart after stop took {:?}", t.elapsed());
    broker
        .wait_queue_len("durable", 1, DEADLINE)
        .await
        .expect("persistent messages survive a restart");
}
