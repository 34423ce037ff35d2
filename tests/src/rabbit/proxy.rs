//! A real TCP relay that can cut and restore a process's broker connection.

use super::*;
use std::{net::SocketAddr, sync::Mutex, time::Duration};

use anyhow::Context;
use tokio::{
    net::{TcpListener, TcpStream},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// A TCP relay 127.0.0.1:<port> → `upstream`. `cut()` resets every live connection and
/// stops listening (new connects are refused); `restore()` listens again on the same port.
/// Dropping the proxy cuts it for good.
pub struct TcpProxy {
    port: u16,
    upstream: SocketAddr,
    live: Mutex<Option<Generation>>,
}

/// One listening period: its listener and relays stop together when `stop` is cancelled.
struct Generation {
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Set by [`TcpProxy::stall`]: relays forward nothing more.
    stalled: CancellationToken,
}

impl TcpProxy {
    /// Starts relaying on a free port (below the ephemeral range, see [`pick_free_port`]).
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<TcpProxy> {
        let proxy = TcpProxy {
            port: pick_free_port()?,
            upstream,
            live: Mutex::new(None),
        };
        proxy.restore().await?;
        Ok(proxy)
    }

    /// A proxy in front of the shared broker (`TEST_AMQP_HOST/PORT`).
    pub async fn to_shared_broker() -> anyhow::Result<TcpProxy> {
        Self::start(shared_broker_addr()).await
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where clients connect: 127.0.0.1:<port>.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    pub fn is_cut(&self) -> bool {
        self.live.lock().unwrap().is_none()
    }

    /// The upstream goes silent, as a frozen or partitioned broker node does: every relayed
    /// connection stays open and forwards nothing more either way, and new connections are
    /// accepted and held without a word. Ends with [`TcpProxy::cut`] (or the drop); bytes
    /// in flight at the stall may be lost, so there is no resuming.
    pub fn stall(&self) {
        if let Some(g) = self.live.lock().unwrap().as_ref() {
            g.stalled.cancel();
        }
    }

    /// Stops listening and resets every relayed connection; returns once all are gone.
    pub async fn cut(&self) {
        let generation = self.live.lock().unwrap().take();
        if let Some(g) = generation {
            g.stop.cancel();
            g.tasks.close();
            g.tasks.wait().await;
        }
    }

    /// Listens again on the same port (no-op if already listening).
    pub async fn restore(&self) -> anyhow::Result<()> {
        if !self.is_cut() {
            return Ok(());
        }
        // SO_REUSEADDR (set by tokio) lets us re-bind over TIME_WAIT; retry briefly anyway
        // in case the port is momentarily held.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).with_context(|| format!("re-binding proxy port {}", self.port));
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        };
        let g = Generation {
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            stalled: CancellationToken::new(),
        };
        g.tasks.spawn(accept_loop(
            listener,
            self.upstream,
            g.stop.clone(),
            g.stalled.clone(),
            g.tasks.clone(),
        ));
        let mut live = self.live.lock().unwrap();
        if live.is_some() {
            // A concurrent restore won; ours stops at once.
            g.stop.cancel();
        } else {
            *live = Some(g);
        }
        Ok(())
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(g) = self.live.lock().unwrap().take() {
            g.stop.cancel();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    stop: CancellationToken,
    stalled: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let inbound = tokio::select! {
            _ = stop.cancelled() => return, // drops the listener: connects are refused
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
        };
        let (stop, stalled) = (stop.clone(), stalled.clone());
        tasks.spawn(async move {
            if stalled.is_cancelled() {
                // Held open, never answered.
                stop.cancelled().await;
                return;
            }
            let Ok(outbound) = TcpStream::connect(upstream).await else {
                return; // upstream down: the client sees its connection closed
            };
            relay(inbound, outbound, stop, stalled).await;
        });
    }
}

async fn relay(
    mut a: TcpStream,
    mut b: TcpStream,
    stop: CancellationToken,
    stalled: CancellationToken,
) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let reset = |a: &TcpStream, b: &TcpStream| {
        // Abrupt, like a vanished broker or host: RST both ways rather than a FIN.
        let _ = a.set_zero_linger();
        let _ = b.set_zero_linger();
    };
    tokio::select! {
        _ = stop.cancelled() => return reset(&a, &b),
        _ = stalled.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => return,
    }
    // Stalled: both sockets stay open, nothing is read or written, until the cut.
    stop.cancelled().await;
    reset(&a, &b);
}
