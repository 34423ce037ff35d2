//! Tests of `serve` against its own small routers: no broker, real sockets.

use super::*;

/// `serve` on an ephemeral port: its address, the token that stops it, and its task.
async fn start(
    router: Router,
    limits: ServerLimits,
) -> (
    SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { serve(listener, router, &limits, shutdown).await }
    });
    (addr, shutdown, server)
}

#[test]
fn reads_the_soft_open_files_limit() {
    let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                  Max processes             95083                95083                processes\n\
                  Max open files            1024                 524288               files\n";
    assert_eq!(soft_fd_limit(limits), Some(1024));
    let unlimited = "Max open files            unlimited            unlimited            files\n";
    assert_eq!(soft_fd_limit(unlimited), None);
    assert_eq!(soft_fd_limit(""), None);
}

#[test]
fn accept_backoff_grows_to_a_second_and_resets() {
    let mut b = AcceptBackoff::default();
    let pauses: Vec<u64> = (0..10).map(|_| b.next().as_millis() as u64).collect();
    assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
    b.reset();
    assert_eq!(b.next(), Duration::from_millis(10));
}

/// For `order-status`: once a connection is upgraded (101), none of the limits apply,
/// however long it stays quiet; plain requests on the same server still get them.
#[tokio::test]
async fn an_upgraded_connection_outlives_every_timeout() {
    use axum::{extract::Request, routing::get};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn echo(mut request: Request) -> Response<Body> {
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let mut io = TokioIo::new(upgrade.await.expect("upgraded"));
            let mut buf = [0u8; 64];
            while let Ok(n @ 1..) = io.read(&mut buf).await {
                if io.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert("upgrade", HeaderValue::from_static("echo"));
        response
    }

    let limits = ServerLimits {
        timeouts: HttpTimeouts {
            header_read_timeout: Duration::from_millis(200),
            request_timeout: Duration::from_millis(200),
            idle_timeout: Duration::from_millis(200),
            write_timeout: Duration::from_millis(200),
        },
        max_connections: 4,
    };
    let router = Router::new().route("/echo", get(echo));
    let (addr, shutdown, server) = start(router, limits).await;

    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /echo HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            client.read(&mut byte).await.unwrap(),
            1,
            "closed before 101"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    for _ in 0..2 {
        // Quiet for longer than every timeout, then still echoing.
        tokio::time::sleep(Duration::from_millis(600)).await;
        client.write_all(b"ping").await.unwrap();
        let mut echoed = [0u8; 4];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"ping");
    }
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_request_head_over_64_kib_is_refused_with_431() {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let router = Router::new().route("/", get(|| async { "ok" }));
    let (addr, shutdown, server) = start(router, ServerLimits::default()).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let big = "a".repeat(MAX_HEAD_BYTES + 1);
    let head = format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n");
    let _ = client.write_all(head.as_bytes()).await; // it may close before the end
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

/// The deadline covers the handler too, not only reading the body.
#[tokio::test]
async fn a_slow_handler_is_answered_408_at_the_request_deadline() {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let limits = ServerLimits {
        timeouts: HttpTimeouts {
            request_timeout: Duration::from_millis(200),
            ..HttpTimeouts::default()
        },
        ..ServerLimits::default()
    };
    let router = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "too late"
        }),
    );
    let (addr, shutdown, server) = start(router, limits).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_string(&mut answer))
        .await
        .expect("answered and closed within the deadline")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

/// A client that sends requests and never reads the answers: once they fill the socket's
/// buffers the write cannot go out, and without a write timeout the connection held its slot
/// for ever (with a cap of 512, as many such clients shut the server). With one slot, a
/// second client is served only once the first is closed.
#[tokio::test]
async fn a_client_that_reads_no_answers_is_closed_after_the_write_timeout() {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    const ANSWERS: usize = 200;
    const ANSWER_BYTES: usize = 64 * 1024;
    let limits = ServerLimits {
        timeouts: HttpTimeouts {
            write_timeout: Duration::from_millis(300),
            ..HttpTimeouts::default()
        },
        max_connections: 1,
    };
    let router = Router::new().route("/big", get(|| async { "x".repeat(ANSWER_BYTES) }));
    let (addr, shutdown, server) = start(router, limits).await;

    // 200 answers of 64 KiB (12.5 MiB) into a 4 KiB receive buffer that is never read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut deaf = socket.connect(addr).await.unwrap();
    deaf.write_all(&b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n".repeat(ANSWERS))
        .await
        .unwrap();

    let mut next = TcpStream::connect(addr).await.unwrap();
    next.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), next.read_to_end(&mut answer))
        .await
        .expect("served once the deaf client's slot is freed")
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"));

    // The deaf client was cut off: what it can still read ends well short of its answers.
    let mut got = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), deaf.read_to_end(&mut got)).await;
    assert!(ended.is_ok(), "its connection is closed");
    assert!(got.len() < ANSWERS * ANSWER_BYTES, "{} bytes", got.len());
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[test]
fn limits_default_to_the_documented_values() {
    use clap::Parser as _;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        limits: ServerLimits,
    }
    let parsed = Cli::try_parse_from(["x"]).unwrap().limits;
    assert_eq!(parsed, ServerLimits::default());
}

/// Shutdown stops accepting, lets the request in flight finish, closes idle keep-alive
/// connections at once, and only then returns.
#[tokio::test]
async fn shutdown_finishes_the_request_in_flight_and_closes_idle_connections() {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = Arc::new(std::sync::Mutex::new(Some(started_tx)));
    let router = Router::new()
        .route(
            "/slow",
            get(move || {
                if let Some(tx) = started_tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "finished"
                }
            }),
        )
        .route("/", get(|| async { "ok" }));
    let (addr, shutdown, server) = start(router, ServerLimits::default()).await;
    // An idle keep-alive connection, answered once.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // A request in flight when shutdown comes.
    let mut busy = TcpStream::connect(addr).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    started_rx.await.unwrap();
    shutdown.cancel();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), busy.read_to_string(&mut answer))
        .await
        .expect("answered, then closed")
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("finished"),
        "{answer}"
    );
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "idle connection not closed"
    );
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns once connections are closed")
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}
