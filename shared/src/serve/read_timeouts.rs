//! The header-read and idle timeouts of one HTTP/1.1 connection, enforced on its socket's
//! reads, and its write timeout, on its writes. hyper has one timer for the first two (it
//! runs from the end of an answer to the end of the next head) and so cannot tell a client
//! that is slow from one that is idle; this can, because the service tells it where the
//! connection is (`ConnClock`). hyper has no timer at all for a client that sends requests
//! but never reads the answers: the write waits for ever and the connection holds its slot
//! under the cap (512 such clients, a few kB of requests each, shut the server).

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

use super::HttpTimeouts;

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

/// The socket, enforcing the header-read and idle timeouts on reads and the write timeout
/// on writes. `K` lives exactly as long as the socket (an upgraded one included): the
/// connection's slot under the cap.
pub(crate) struct Guarded<K> {
    inner: TcpStream,
    clock: Arc<ConnClock>,
    timeouts: HttpTimeouts,
    timer: Pin<Box<Sleep>>,
    armed_for: Option<Instant>,
    /// Runs while a write cannot go out: armed at the first blocked write of a stall.
    write_timer: Pin<Box<Sleep>>,
    write_stalled: bool,
    _kept: K,
}

impl<K> Guarded<K> {
    pub(crate) fn new(
        inner: TcpStream,
        clock: Arc<ConnClock>,
        timeouts: HttpTimeouts,
        kept: K,
    ) -> Guarded<K> {
        Guarded {
            inner,
            clock,
            timeouts,
            timer: Box::pin(tokio::time::sleep(timeouts.header_read_timeout)),
            armed_for: None,
            write_timer: Box::pin(tokio::time::sleep(timeouts.write_timeout)),
            write_stalled: false,
            _kept: kept,
        }
    }

    /// The instant past which the current phase has taken too long, if it has a limit.
    fn deadline(&self) -> Option<Instant> {
        let limit = match self.clock.phase() {
            HEAD => self.timeouts.header_read_timeout,
            IDLE => self.timeouts.idle_timeout,
            _ => return None,
        };
        Some(self.clock.since() + limit)
    }

    fn timed_out(what: &'static str, label: &'static str) -> io::Error {
        metrics::counter!("http_connections_timed_out_total", "phase" => label).increment(1);
        io::Error::new(io::ErrorKind::TimedOut, what)
    }

    fn read_timed_out(phase: u8) -> io::Error {
        if phase == IDLE {
            Self::timed_out("idle timeout", "idle")
        } else {
            Self::timed_out("header read timeout", "header")
        }
    }

    /// `write` on the socket, failing it once the client has taken nothing for the write
    /// timeout (its receive window stays shut). An upgraded connection's owner bounds its
    /// own writes.
    fn guard_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if let Poll::Ready(written) = write(Pin::new(&mut self.inner), cx) {
            self.write_stalled = false;
            return Poll::Ready(written);
        }
        if self.clock.phase() == UPGRADED {
            return Poll::Pending;
        }
        if !std::mem::replace(&mut self.write_stalled, true) {
            let deadline = Instant::now() + self.timeouts.write_timeout;
            self.write_timer.as_mut().reset(deadline);
        }
        ready!(self.write_timer.as_mut().poll(cx));
        Poll::Ready(Err(Self::timed_out("write timeout", "write")))
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
                        return Poll::Ready(Err(Self::read_timed_out(HEAD)));
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
        Poll::Ready(Err(Self::read_timed_out(this.clock.phase())))
    }
}

impl<K: Unpin> AsyncWrite for Guarded<K> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.guard_write(cx, |socket, cx| socket.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.guard_write(cx, |socket, cx| socket.poll_write_vectored(cx, bufs))
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
