//! Hostile clients against the running ingress (its own HTTP server, `shared/src/serve.rs`):
//! slowloris heads, stalled bodies, idle keep-alive connections, more connections than the cap, and
//! running out of file descriptors. Timeouts are set short so each test takes a second or two.

use std::{
    net::SocketAddr,
    process::Stdio,
    time::{Duration, Instant},
};

use shared::topology::WORK_QUEUE;
use tests::{fixtures::authorization, ingress_harness::RunningIngress, rabbit::TestVhost};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const SECRET: &str = "test-secret";

async fn start(vhost: &TestVhost, limits: &[&str]) -> RunningIngress {
    let mut args = vec!["--webhook-secret", SECRET];
    args.extend_from_slice(limits);
    RunningIngress::start(&vhost.amqp_url(), &args)
        .await
        .expect("ingress starts")
}

/// Messages ready in `queue`.
async fn count(vhost: &TestVhost, queue: &str) -> u32 {
    let conn = shared::amqp::connect(&vhost.amqp_url(), "test counter")
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = channel
        .queue_declare(queue.into(), passive, Default::default())
        .await
        .unwrap();
    let _ = conn.close(200, "done".into()).await;
    q.message_count()
}

/// Reads until the server closes; returns what it sent and how long that took. Fails the
/// test if the connection is still open after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + within).into(), stream.read(&mut buf)).await {
            Err(_) => panic!(
                "still open after {within:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

/// Reads one answer to `GET /healthz` (whose body is `ok\n`) off a keep-alive connection.
async fn read_health_answer(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"ok\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("answered in time")
            .expect("readable");
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";

/// A client that sends a request head one byte every 50 ms, for ever; resolves to what the
/// server sent and when it closed the connection (fails after `within`).
fn slowloris(addr: SocketAddr, within: Duration) -> tokio::task::JoinHandle<(String, Duration)> {
    tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let (mut read, mut write) = stream.split();
        let trickle = async {
            let head = b"POST /webhooks/xsolla HTTP/1.1\r\nhost: x\r\nx-padding: ";
            for byte in head.iter().chain(std::iter::repeat(&b'a')) {
                if write.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            std::future::pending::<()>().await;
        };
        let started = Instant::now();
        let closed = async {
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            (
                String::from_utf8_lossy(&got).into_owned(),
                started.elapsed(),
            )
        };
        tokio::select! {
            () = trickle => unreachable!(),
            closed = closed => closed,
            () = tokio::time::sleep(within) => panic!("slowloris connection still open after {within:?}"),
        }
    })
}

#[tokio::test]
async fn closes_a_slowloris_connection_within_the_header_timeout() {
    let vhost = TestVhost::create().await.unwrap();
    let ingress = start(&vhost, &["--header-read-timeout", "500ms"]).await;
    let (answer, after) = slowloris(ingress.addr, Duration::from_secs(4))
        .await
        .unwrap();
    assert!(
        answer.is_empty(),
        "no answer to an unfinished head: {answer}"
    );
    assert!(
        after >= Duration::from_millis(400) && after < Duration::from_millis(2500),
        "closed after {after:?}, expected about 500ms"
    );
    // A client that connects and sends nothing is held no longer.
    let mut silent = TcpStream::connect(ingress.addr).await.unwrap();
    let (answer, after) = read_until_closed(&mut silent, Duration::from_secs(4)).await;
    assert!(
        answer.is_empty() && after < Duration::from_millis(2500),
        "{answer} {after:?}"
    );
    let metrics = reqwest::get(ingress.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("http_connections_timed_out_total{phase=\"header\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("http_connections_open"), "{metrics}");
}

#[tokio::test]
async fn answers_408_and_closes_a_stalled_body_within_the_request_deadline() {
    let vhost = TestVhost::create().await.unwrap();
    let ingress = start(
        &vhost,
        &[
            "--header-read-timeout",
            "500ms",
            "--request-timeout",
            "800ms",
            // The request deadline must outlast these (checked at start-up).
            "--publish-timeout",
            "500ms",
            "--user-check-timeout",
            "500ms",
        ],
    )
    .await;
    let body = tests::fixtures::load("order_paid_combined");
    let mut stream = TcpStream::connect(ingress.addr).await.unwrap();
    let head = format!(
        "POST /webhooks/xsolla HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\ncontent-length: {}\r\n\r\n",
        authorization(&body, SECRET),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() - 1]).await.unwrap(); // all but the last byte
    let (answer, after) = read_until_closed(&mut stream, Duration::from_secs(4)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        after >= Duration::from_millis(700) && after < Duration::from_millis(3000),
        "closed after {after:?}, expected about 800ms"
    );
    assert_eq!(count(&vhost, WORK_QUEUE).await, 0, "nothing published");
}

#[tokio::test]
async fn closes_an_idle_keep_alive_connection_after_the_idle_timeout() {
    let vhost = TestVhost::create().await.unwrap();
    let ingress = start(
        &vhost,
        &["--header-read-timeout", "300ms", "--idle-timeout", "1s"],
    )
    .await;
    let mut stream = TcpStream::connect(ingress.addr).await.unwrap();
    stream.write_all(HEALTH).await.unwrap();
    assert!(
        read_health_answer(&mut stream)
            .await
            .starts_with("HTTP/1.1 200")
    );
    // Waiting longer than the header timeout between requests is fine: that is idle time.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stream.write_all(HEALTH).await.unwrap();
    assert!(
        read_health_answer(&mut stream)
            .await
            .starts_with("HTTP/1.1 200")
    );
    let (answer, after) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.is_empty(), "{answer}");
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_millis(3500),
        "closed after {after:?}, expected about 1s"
    );
}

#[tokio::test]
async fn stops_accepting_at_the_connection_cap_until_a_connection_closes() {
    let vhost = TestVhost::create().await.unwrap();
    let ingress = start(
        &vhost,
        &["--max-connections", "5", "--header-read-timeout", "1500ms"],
    )
    .await;
    let holders: Vec<_> = (0..5)
        .map(|_| slowloris(ingress.addr, Duration::from_secs(5)))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await; // let the five be accepted
    let started = Instant::now();
    let mut extra = TcpStream::connect(ingress.addr).await.unwrap(); // the kernel's backlog
    extra.write_all(HEALTH).await.unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(700), extra.peek(&mut buf)).await;
    assert!(
        early.is_err(),
        "a sixth connection was served while five were open"
    );
    // Once the slow ones are cut off at the header timeout, the waiting client is served.
    let answer = read_health_answer(&mut extra).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    for holder in holders {
        holder.await.unwrap();
    }
}

#[tokio::test]
async fn a_signed_webhook_gets_its_204_while_200_connections_attack() {
    let vhost = TestVhost::create().await.unwrap();
    let ingress = start(
        &vhost,
        &["--max-connections", "20", "--header-read-timeout", "500ms"],
    )
    .await;
    // 200 slowloris connections, re-opened as soon as they are cut off, for 3 seconds.
    let stop = tokio_util::sync::CancellationToken::new();
    let attackers: Vec<_> = (0..200)
        .map(|_| {
            let (addr, stop) = (ingress.addr, stop.clone());
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    tokio::select! {
                        _ = slowloris(addr, Duration::from_secs(10)) => {}
                        () = stop.cancelled() => {}
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let body = tests::fixtures::load("order_paid_combined");
    let answered = reqwest::Client::new()
        .post(ingress.url("/webhooks/xsolla"))
        .header("authorization", authorization(&body, SECRET))
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("answered during the attack");
    assert_eq!(answered.status(), 204);
    stop.cancel();
    for attacker in attackers {
        attacker.await.unwrap();
    }
    assert_eq!(count(&vhost, WORK_QUEUE).await, 1);
}

/// The real binary under a file-descriptor limit far below its connection cap: accept
/// fails with EMFILE, the loop backs off instead of spinning or dying, and the ingress
/// serves again once the idle connections are cut off.
#[tokio::test]
async fn the_accept_loop_survives_running_out_of_file_descriptors() {
    let vhost = TestVhost::create().await.unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\"")
        .arg(tests::bin_path("ingress"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AMQP_URL", vhost.amqp_url())
        .env("XSOLLA_WEBHOOK_SECRET", SECRET)
        .env("INGRESS_LISTEN", addr.to_string())
        .env("HEADER_READ_TIMEOUT", "1s")
        .env("MAX_CONNECTIONS", "1000")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let healthy = || async {
        matches!(
            reqwest::Client::new()
                .get(format!("http://{addr}/readyz"))
                .timeout(Duration::from_millis(500))
                .send()
                .await,
            Ok(r) if r.status() == 200
        )
    };
    tests::wait::until(Duration::from_secs(20), "ingress ready", healthy)
        .await
        .unwrap();
    let mut hogs = Vec::new();
    for _ in 0..100 {
        hogs.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    tests::wait::until(Duration::from_secs(10), "served again", healthy)
        .await
        .unwrap();
    assert!(child.try_wait().unwrap().is_none(), "the ingress died");
    drop(hogs);
    let _ = child.start_kill();
    let output = child.wait_with_output().await.unwrap();
    let logs = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        logs.contains("MAX_CONNECTIONS is above what the open-files limit leaves"),
        "the start-up warning is missing:\n{logs}"
    );
    let failures = logs.matches("accept failed").count();
    assert!(failures >= 1, "EMFILE was never hit:\n{logs}");
    assert!(failures < 100, "{failures} accept failures: spinning?");
}
