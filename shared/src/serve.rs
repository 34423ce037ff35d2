//! An HTTP/1.1 server loop for a public listener, hardened against slow and idle clients:
//! a header-read timeout, an idle keep-alive timeout, a whole-request deadline, a write
//! timeout for a client that does not read its answers and a cap on open connections, and an
//! accept loop that survives running out of file descriptors.
//!
//! `axum::serve` has none of these (it gives hyper no timer), so a client sending one header
//! byte a second, or a body one byte short, or nothing at all, held a connection for ever.
//! Used by the `ingress` and `order-status` binaries (`ingress::status::run`; WebSocket
//! upgrades are left alone once upgraded: the deadlines cover reading a request, running its
//! handler and writing its answer, never an upgraded connection).
//!
//! ```no_run
//! # async fn order_status(router: axum::Router) -> std::io::Result<()> {
//! use clap::Parser as _;
//! use shared::serve::{ServerLimits, serve};
//!
//! #[derive(clap::Parser)]
//! struct Args {
//!     #[command(flatten)]
//!     limits: ServerLimits, // HEADER_READ_TIMEOUT, REQUEST_TIMEOUT, IDLE_TIMEOUT, WRITE_TIMEOUT, MAX_CONNECTIONS
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
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use crate::config::parse_duration;
use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{HeaderValue, Request, Response, StatusCode, header::CONNECTION},
};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt as _;

mod read_timeouts;

use read_timeouts::{BUSY, ConnClock, Guarded, IDLE, UPGRADED};

/// Limits for one listener; `#[command(flatten)]` it into a binary's options.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ServerLimits {
    #[command(flatten)]
    pub timeouts: HttpTimeouts,

    /// Most connections open at once. At the cap the server stops accepting: further
    /// clients wait in the kernel's listen backlog until a connection closes (the timeouts
    /// make sure one does). Keep it below the file-descriptor limit (`ulimit -n`);
    /// stalled uploads can hold up to this many request bodies in memory.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub max_connections: u32,
}

/// The per-connection timers, on their own so a binary whose connection cap follows from
/// other options (`order-status`: its WebSocket limit) can take these alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct HttpTimeouts {
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

    /// How long an answer may wait for a client that takes none of it (its receive window
    /// stays shut: it sends requests and never reads) before the connection is closed.
    #[arg(long, env = "WRITE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub write_timeout: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            timeouts: HttpTimeouts::default(),
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
    // `read_timeouts` replaces hyper's header timeout: hyper's runs from the end of one
    // answer to the end of the next head, so it cannot tell idle from slow.
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
    let io = Guarded::new(
        stream,
        clock.clone(),
        limits.timeouts,
        (slot, OpenConnection::count()),
    );
    let service = ConnService {
        router,
        peer,
        clock,
        request_timeout: limits.timeouts.request_timeout,
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
mod tests;
