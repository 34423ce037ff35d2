//! Demo inventory service: a real HTTP server implementing the inventory contract that
//! the game implements (see `deploy/INVENTORY_API.md` and `deploy/inventory-openapi.yaml`).
//!
//! It grants and revokes in memory, idempotently per `Idempotency-Key`, counts every call,
//! and can inject faults (503, 429 + `Retry-After`, hangs, 400, lost answers, a
//! maintenance window, rejected SKUs). Suites start it in-process with
//! [`DemoInventory::start`]; other processes (the `demo-inventory` binary, `xsolla-sim`,
//! scripts) drive it through the demo-only admin API with [`AdminClient`].
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use tests::inventory::{DemoInventory, InventoryConfig};
//!
//! let inv = DemoInventory::start(InventoryConfig::default().with_token("secret")).await?;
//! // … point the worker at inv.url() and publish an order_paid …
//! let state = inv
//!     .wait_for(|s| s.grant("42").is_some(), Duration::from_secs(10))
//!     .await?;
//! assert!(state.exactly_once());
//! inv.shutdown().await?;
//! # Ok(()) }
//! ```

mod admin_client;
mod contract;
mod faults;
mod routes;
mod state;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use admin_client::AdminClient;
pub use contract::{Endpoint, InventoryRequest, Item};
pub use faults::{DEFAULT_RETRY_AFTER_SECS, DEFAULT_TIMEOUT_MS, Faults, FaultsError, FaultsPatch};
pub use state::{CallRecord, EndpointCalls, GrantRecord, RECENT_CALLS, RevocationRecord, Snapshot};

use routes::App;
use state::Store;

/// How long [`InventoryHandle::shutdown`] lets in-flight calls finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Start-up configuration of the demo inventory service.
#[derive(Clone)]
pub struct InventoryConfig {
    /// Address to bind. Defaults to `127.0.0.1:0` (a free port; see [`InventoryHandle::url`]).
    pub listen: SocketAddr,
    /// Bearer token to require on contract calls; `None` accepts any.
    pub token: Option<String>,
    /// Faults in force from the start, and again after a reset.
    pub faults: Faults,
    /// Seed of the fault RNG; `None` picks one at random (reported in [`Snapshot::seed`]).
    pub seed: Option<u64>,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            token: None,
            faults: Faults::default(),
            seed: None,
        }
    }
}

impl std::fmt::Debug for InventoryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InventoryConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("faults", &self.faults)
            .field("seed", &self.seed)
            .finish()
    }
}

impl InventoryConfig {
    /// Sets the address to bind.
    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    /// Requires `Authorization: Bearer <token>`.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets the start-up faults.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Fixes the fault RNG seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
}

/// Entry point of the demo inventory service.
pub struct DemoInventory;

impl DemoInventory {
    /// Binds `config.listen` and serves until [`InventoryHandle::shutdown`] (or until the
    /// handle is dropped). Fails on invalid faults or when the address cannot be bound.
    pub async fn start(config: InventoryConfig) -> anyhow::Result<InventoryHandle> {
        config.faults.validate().context("invalid faults")?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding demo inventory on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let seed = config.seed.unwrap_or_else(rand::random);
        let store = Arc::new(Store::new(config.faults, seed));
        let shutdown = CancellationToken::new();
        let app = Arc::new(App {
            store: store.clone(),
            token: config.token,
            shutdown: shutdown.clone(),
        });
        let router = routes::router(app);
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        tracing::info!(%addr, seed, "demo inventory listening");
        Ok(InventoryHandle {
            addr,
            store,
            shutdown,
            task: Some(task),
        })
    }
}

/// A running demo inventory service. Dropping it stops the server (without waiting).
pub struct InventoryHandle {
    addr: SocketAddr,
    store: Arc<Store>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl InventoryHandle {
    /// Base URL to configure as `INVENTORY_URL`, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A copy of the current state.
    pub fn state(&self) -> Snapshot {
        self.store.snapshot()
    }

    /// Reads the live state without copying it (a copy of a big run's state is costly to
    /// take on every change), e.g. `inv.inspect(|s| s.grants.len())`.
    pub fn inspect<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        self.store.inspect(f)
    }

    /// Tells of every change of the state (the value is [`Snapshot::version`]).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.store.subscribe()
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.store.faults()
    }

    /// Replaces the faults (also `PUT /_admin/faults`).
    pub fn set_faults(&self, faults: Faults) -> Result<(), FaultsError> {
        faults.validate()?;
        self.store.set_faults(faults);
        Ok(())
    }

    /// Edits the faults in place, e.g. `inv.update_faults(|f| f.down = false)`.
    pub fn update_faults(&self, edit: impl FnOnce(&mut Faults)) -> Result<Faults, FaultsError> {
        self.store.update_faults(|old| {
            let mut next = old.clone();
            edit(&mut next);
            next.validate().map(|()| next)
        })
    }

    /// Forgets all grants, revocations, stored keys and counters and restores the
    /// start-up faults and seed (also `POST /_admin/reset`).
    pub fn reset(&self) {
        self.store.reset();
    }

    /// Waits until `cond` holds on the state and returns that state, or fails after
    /// `within` with a summary of the last state. Woken by every state change (no
    /// polling interval), and follows tokio's clock, so it works under `time::pause`.
    pub async fn wait_for<F>(&self, mut cond: F, within: Duration) -> anyhow::Result<Snapshot>
    where
        F: FnMut(&Snapshot) -> bool,
    {
        let deadline = Instant::now() + within;
        // Subscribed before the first check, so a change between check and wait is not lost.
        let mut rx = self.store.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(snap) = self.store.check(&mut cond) {
                return Ok(snap);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                anyhow::bail!(
                    "demo inventory: condition not met within {within:?}; last state: {}",
                    self.state().summary()
                );
            }
        }
    }

    /// Stops accepting, cuts hanging (injected-timeout) calls and long-polls short,
    /// lets other in-flight calls finish, and waits for the server to end.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(SHUTDOWN_GRACE, task).await {
            Ok(joined) => joined
                .context("demo inventory task panicked")?
                .context("demo inventory server failed"),
            Err(_) => anyhow::bail!("demo inventory did not stop within {SHUTDOWN_GRACE:?}"),
        }
    }
}

impl Drop for InventoryHandle {
    fn drop(&mut self) {
        // Keeps a failed test from leaving a server bound for the rest of the process.
        self.shutdown.cancel();
    }
}

impl Snapshot {
    /// A one-line summary for error messages and logs (the full state can be large).
    pub fn summary(&self) -> String {
        let calls: Vec<String> = self
            .calls
            .iter()
            .map(|(ep, c)| format!("{ep}: received {} answered {:?}", c.received, c.by_status))
            .collect();
        format!(
            "version {}, {} grants ({} revoked), {} revocations, effects_applied {}, duplicates_applied {}, key_conflicts {}, calls [{}]",
            self.version,
            self.grants.len(),
            self.grants.values().filter(|g| g.revoked).count(),
            self.revocations.len(),
            self.effects_applied,
            self.duplicates_applied,
            self.key_conflicts,
            calls.join("; ")
        )
    }
}
