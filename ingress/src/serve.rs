//! An HTTP/1.1 server loop for a public listener, hardened against slow and idle clients:
//! a header-read timeout, an idle keep-alive timeout, a whole-request deadline and a cap on
//! open connections, and an accept loop that survives running out of file descriptors.
//!
//! `axum::serve` has none of these (it gives hyper no timer), so a client sending one header
//! byte a second, or a body one byte short, or nothing at all, held a connection for ever.
//! Shared by the binaries of this crate (`ingress`, and `order-status`, whose WebSocket
//! upgrades are left alone once upgraded: the deadlines cover reading a request and running
//! its handler, never an upgraded connection).
//!
//! ```no_run
//! # async fn order_status(router: axum::Router) -> std::io::Result<()> {
//! use clap::Parser as _;
//! use ingress::serve::{ServerLimits, serve};
//!
//! #[derive(clap::Parser)]
//! struct Args {
//!     #[command(flatten)]
//!     limits: ServerLimits, // HEADER_READ_TIMEOUT, REQUEST_TIMEOUT, IDLE_TIMEOUT, MAX_CONNECTIONS
//! }
//! let args = Args::parse();
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8081").await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! serve(listener, router, &args.limits, shutdown).await
//! # }
//! ```
//!
//! What an upgraded (WebSocket) connection gets: it keeps its slot under `MAX_CONNECTIONS`
//! (and counts in `http_connections_open`) until its socket closes; no timeout of ours
//! applies to it, so its owner pings and drops dead peers; and `serve` no longer tracks it,
//! so its owner closes it on shutdown.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{HeaderValue, Request, Response, StatusCode, header::CONNECTION},
};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use shared::config::parse_duration;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt as _;

/// Limits for one listener; `#[command(flatten)]` it into a binary's options.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ServerLimits {
    /// Time a client has to send a complete request head (request line and headers),
    /// counted from the connection's accept or from the first byte of a later request on
    /// the same connection. Slower clients are disconnected (slowloris).
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Deadline for one request once its head is in: reading the body and running the
    /// handler. Past it the answer is 408 and the connection is closed (a stalled body).
    /// Does not apply to a connection once upgraded (WebSocket).
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// How long a keep-alive connection may wait, between an answer and the first byte of
    /// the next request, before it is closed.
    #[arg(long, env = "IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Most connections open at once. At the cap the server stops accepting: further
    /// clients wait in the kernel's listen backlog until a connection closes (the timeouts
    /// above make sure one does). Keep it below the file-descriptor limit (`ulimit -n`);
    /// stalled uploads can hold up to this many request bodies in memory.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub max_connections: u32,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
        }
    }
}

/// Serves `router` on `listener` until `shutdown`; then stops accepting, lets every open
/// connection finish its current request (idle ones close at once) and returns when all
/// are closed. Handlers can extract `ConnectInfo<SocketAddr>` (the TCP peer).
///
/// Over-long waits are the caller's to bound (e.g. `select!` with a drain deadline).
/// Accept errors never end the loop: running out of file descriptors (`EMFILE`) backs off
/// and retries, so the server recovers as soon as connections close.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &ServerLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    warn_if_over_fd_limit(limits.max_connections);
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    let connections = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // Our own timers below replace hyper's header timeout: hyper's runs from the end of
    // one answer to the end of the next head, so it cannot tell idle from slow.
    http.timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_header_size(MAX_HEAD_BYTES);
    let mut backoff = AcceptBackoff::default();
    loop {
        // Stop accepting at the cap rather than accept-and-close: the extra clients wait
        // in the kernel backlog (no descriptor of ours) and are served as slots free up.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            () = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: retrying at once would spin.
                let pause = backoff.next();
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "accept failed");
                tokio::select! {
                    () = tokio::time::sleep(pause) => continue,
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_connection(
            http.clone(),
            stream,
            peer,
            slot,
            router.clone(),
            limits.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

async fn serve_connection(
    http: hyper::server::conn::http1::Builder,
    stream: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
    router: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    let clock = Arc::new(ConnClock::new());
    let open = OpenConnection::count();
    let io = Guarded {
        inner: stream,
        clock: clock.clone(),
        header_read_timeout: limits.header_read_timeout,
        idle_timeout: limits.idle_timeout,
        timer: Box::pin(tokio::time::sleep(limits.header_read_timeout)),
        armed_for: None,
        _slot: slot,
        _open: open,
    };
    let service = ConnService {
        router,
        peer,
        clock,
        request_timeout: limits.request_timeout,
    };
    let connection = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Largest request head (larger: 431). Without it hyper's read buffer (up to ~400 KiB)
/// bounds a head, and every slow connection could hold that much.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Descriptors kept for everything but client connections: the broker, outgoing HTTP
/// (user API), the listener, the runtime.
const RESERVED_FDS: u64 = 64;

/// At the cap, every connection is a descriptor; past the process's limit, accept (and
/// everything else that opens one: broker reconnects, user lookups) fails with EMFILE.
fn warn_if_over_fd_limit(max_connections: u32) {
    let Some(limit) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| soft_fd_limit(&limits))
    else {
        return;
    };
    if u64::from(max_connections) + RESERVED_FDS > limit {
        tracing::warn!(
            max_connections,
            fd_limit = limit,
            "MAX_CONNECTIONS is above what the open-files limit leaves ({RESERVED_FDS} kept for the rest): raise `ulimit -n` or lower MAX_CONNECTIONS"
        );
    }
}

/// The soft "Max open files" of a `/proc/<pid>/limits` text; `None` if unlimited or absent.
fn soft_fd_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Errors about one connection that the peer caused; the listener is fine.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Pauses after failed accepts: 10 ms doubling to 1 s, back to 10 ms after a success.
#[derive(Debug, Default)]
struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    fn next(&mut self) -> Duration {
        let pause = Duration::from_millis(10 << self.failures.min(7)).min(Duration::from_secs(1));
        self.failures = self.failures.saturating_add(1);
        pause
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Where a connection is in its life, shared between its socket and its service.
struct ConnClock {
    /// One of `HEAD`, `BUSY`, `IDLE`, `UPGRADED`.
    phase: AtomicU8,
    /// When the current phase began, in µs since `origin`.
    since_us: AtomicU64,
    origin: Instant,
}

/// Waiting for (the rest of) a request head: the header-read timeout runs.
const HEAD: u8 = 0;
/// A request is being read or handled: the request deadline (in the service) runs.
const BUSY: u8 = 1;
/// Answered, waiting for the next request: the idle timeout runs.
const IDLE: u8 = 2;
/// Handed to an upgrade (WebSocket): no timeout of ours.
const UPGRADED: u8 = 3;

impl ConnClock {
    fn new() -> ConnClock {
        ConnClock {
            phase: AtomicU8::new(HEAD),
            since_us: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    fn enter(&self, phase: u8) {
        let since = self.origin.elapsed().as_micros() as u64;
        self.since_us.store(since, Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
    }

    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Relaxed)
    }

    fn since(&self) -> Instant {
        self.origin + Duration::from_micros(self.since_us.load(Ordering::Relaxed))
    }
}

/// The socket, enforcing the header-read and idle timeouts on reads, and holding the
/// connection's slot for as long as the socket lives (an upgraded one included).
struct Guarded {
    inner: TcpStream,
    clock: Arc<ConnClock>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    timer: Pin<Box<Sleep>>,
    armed_for: Option<Instant>,
    _slot: OwnedSemaphorePermit,
    _open: OpenConnection,
}

/// Counts itself in `http_connections_open` while it lives (with the socket, so an
/// upgraded connection counts until it closes).
struct OpenConnection;

impl OpenConnection {
    fn count() -> OpenConnection {
        metrics::gauge!("http_connections_open").increment(1.0);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!("http_connections_open").decrement(1.0);
    }
}

impl Guarded {
    /// The instant past which the current phase has taken too long, if it has a limit.
    fn deadline(&self) -> Option<Instant> {
        let limit = match self.clock.phase() {
            HEAD => self.header_read_timeout,
            IDLE => self.idle_timeout,
            _ => return None,
        };
        Some(self.clock.since() + limit)
    }

    fn timed_out(phase: u8) -> io::Error {
        let (what, label) = if phase == IDLE {
            ("idle timeout", "idle")
        } else {
            ("header read timeout", "header")
        };
        metrics::counter!("http_connections_timed_out_total", "phase" => label).increment(1);
        io::Error::new(io::ErrorKind::TimedOut, what)
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        if let Poll::Ready(read) = Pin::new(&mut this.inner).poll_read(cx, buf) {
            if read.is_ok() && buf.filled().len() > before {
                match this.clock.phase() {
                    // The first byte of the next request: from now on it is a head.
                    IDLE => this.clock.enter(HEAD),
                    // A trickling head still has to arrive whole in time.
                    HEAD if this.deadline().is_some_and(|d| Instant::now() >= d) => {
                        return Poll::Ready(Err(Guarded::timed_out(HEAD)));
                    }
                    _ => {}
                }
            }
            return Poll::Ready(read);
        }
        // Nothing to read: make sure we are woken when the current phase runs out.
        let Some(deadline) = this.deadline() else {
            return Poll::Pending;
        };
        if this.armed_for != Some(deadline) {
            this.timer.as_mut().reset(deadline);
            this.armed_for = Some(deadline);
        }
        ready!(this.timer.as_mut().poll(cx));
        Poll::Ready(Err(Guarded::timed_out(this.clock.phase())))
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The router as one connection's hyper service: adds `ConnectInfo`, runs the request
/// deadline, and moves the connection's clock between phases.
#[derive(Clone)]
struct ConnService {
    router: Router,
    peer: SocketAddr,
    clock: Arc<ConnClock>,
    request_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Handled;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        self.clock.enter(BUSY);
        request.extensions_mut().insert(ConnectInfo(self.peer));
        Handled {
            inner: tokio::time::timeout(self.request_timeout, self.router.clone().oneshot(request)),
            clock: self.clock.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// One request's answer under the request deadline (a named future: no allocation
    /// per request for boxing it).
    struct Handled {
        #[pin]
        inner: tokio::time::Timeout<tower::util::Oneshot<Router, Request<Incoming>>>,
        clock: Arc<ConnClock>,
    }
}

impl Future for Handled {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match ready!(this.inner.poll(cx)) {
            Ok(Ok(response)) => response,
            Err(_elapsed) => {
                metrics::counter!("http_connections_timed_out_total", "phase" => "request")
                    .increment(1);
                request_timed_out()
            }
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            this.clock.enter(UPGRADED);
        } else {
            this.clock.enter(IDLE);
            // hyper polls the socket again only when it has a reason to; make sure it does
            // once the answer is out, so `Guarded` arms the idle timer.
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(response))
    }
}

/// 408 and close: the rest of a stalled body is not worth waiting for.
fn request_timed_out() -> Response<Body> {
    let mut response = Response::new(Body::from("request timeout\n"));
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_soft_open_files_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             95083                95083                processes\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(soft_fd_limit(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
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
            header_read_timeout: Duration::from_millis(200),
            request_timeout: Duration::from_millis(200),
            idle_timeout: Duration::from_millis(200),
            max_connections: 4,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let router = Router::new().route("/echo", get(echo));
        let server = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { serve(listener, router, &limits, shutdown).await }
        });

        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(
                b"GET /echo HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
            )
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

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let router = Router::new().route("/", get(|| async { "ok" }));
        let server = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { serve(listener, router, &ServerLimits::default(), shutdown).await }
        });
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
            request_timeout: Duration::from_millis(200),
            ..ServerLimits::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let router = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "too late"
            }),
        );
        let server = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { serve(listener, router, &limits, shutdown).await }
        });
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
}
