//! The header-read and idle timeouts of one HTTP/1.1 connection, enforced on its socket's
//! reads. hyper has one timer for both (it runs from the end of an answer to the end of the
//! next head) and so cannot tell a client that is slow from one that is idle; this can,
//! because the service tells it where the connection is (`ConnClock`).

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::{Instant, Sleep},
};

/// Where a connection is in its life, shared between its socket and its service.
pub(crate) struct ConnClock {
    /// One of `HEAD`, `BUSY`, `IDLE`, `UPGRADED`.
    phase: AtomicU8,
    /// When the current phase began, in µs since `origin`.
    since_us: AtomicU64,
    origin: Instant,
}

/// Waiting for (the rest of) a request head: the header-read timeout runs.
pub(crate) const HEAD: u8 = 0;
/// A request is being read or handled: the request deadline (in the service) runs.
pub(crate) const BUSY: u8 = 1;
/// Answered, waiting for the next request: the idle timeout runs.
pub(crate) const IDLE: u8 = 2;
/// Handed to an upgrade (WebSocket): no timeout of ours.
pub(crate) const UPGRADED: u8 = 3;

impl ConnClock {
    pub(crate) fn new() -> ConnClock {
        ConnClock {
            phase: AtomicU8::new(HEAD),
            since_us: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    pub(crate) fn enter(&self, phase: u8) {
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

/// The socket, enforcing the header-read and idle timeouts on reads. `K` lives exactly as
/// long as the socket (an upgraded one included): the connection's slot under the cap.
pub(crate) struct Guarded<K> {
    inner: TcpStream,
    clock: Arc<ConnClock>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    timer: Pin<Box<Sleep>>,
    armed_for: Option<Instant>,
    _kept: K,
}

impl<K> Guarded<K> {
    pub(crate) fn new(
        inner: TcpStream,
        clock: Arc<ConnClock>,
        header_read_timeout: Duration,
        idle_timeout: Duration,
        kept: K,
    ) -> Guarded<K> {
        Guarded {
            inner,
            clock,
            header_read_timeout,
            idle_timeout,
            timer: Box::pin(tokio::time::sleep(header_read_timeout)),
            armed_for: None,
            _kept: kept,
        }
    }

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

impl<K: Unpin> AsyncRead for Guarded<K> {
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
                        return Poll::Ready(Err(Self::timed_out(HEAD)));
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
        Poll::Ready(Err(Self::timed_out(this.clock.phase())))
    }
}

impl<K: Unpin> AsyncWrite for Guarded<K> {
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
