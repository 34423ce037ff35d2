//! `demo-inventory`: the demo inventory service as a process, for the local run script,
//! benchmarks and suites that drive it from outside. Every flag is also an environment
//! variable; faults can be changed at run time with `PUT`/`PATCH /_admin/faults`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tests::inventory::{DemoInventory, Faults, InventoryConfig};
use tracing_subscriber::EnvFilter;

/// Demo implementation of the game's inventory API (grants and revocations), with
/// fault injection and an admin API under /_admin.
#[derive(Parser, Debug)]
#[command(name = "demo-inventory", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "DEMO_INVENTORY_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,

    /// Require `Authorization: Bearer <token>` on /grants and /revocations (empty = none).
    #[arg(long, env = "INVENTORY_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// SKUs to refuse with 422 unknown_sku (comma-separated).
    #[arg(long, env = "DEMO_INVENTORY_REJECT_SKU", value_delimiter = ',')]
    reject_sku: Vec<String>,

    /// Share of calls (0.0–1.0) answered 503.
    #[arg(long = "fail-5xx", env = "DEMO_INVENTORY_FAIL_5XX", default_value_t = 0.0, value_parser = share)]
    fail_5xx: f64,

    /// Share of calls answered 429 with Retry-After.
    #[arg(long = "fail-429", env = "DEMO_INVENTORY_FAIL_429", default_value_t = 0.0, value_parser = share)]
    fail_429: f64,

    /// Retry-After of injected 429s, in seconds.
    #[arg(long, env = "DEMO_INVENTORY_RETRY_AFTER", default_value_t = 1)]
    retry_after: u64,

    /// Share of calls that hang for --timeout-duration, then answer 504.
    #[arg(long, env = "DEMO_INVENTORY_TIMEOUT", default_value_t = 0.0, value_parser = share)]
    timeout: f64,

    /// How long an injected timeout hangs (e.g. 30s, 500ms).
    #[arg(long, env = "DEMO_INVENTORY_TIMEOUT_DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    timeout_duration: Duration,

    /// Share of calls answered 400 {"error":"injected"}.
    #[arg(long = "fail-4xx", env = "DEMO_INVENTORY_FAIL_4XX", default_value_t = 0.0, value_parser = share)]
    fail_4xx: f64,

    /// Share of calls applied (and stored) but answered 503: a lost response.
    #[arg(long, env = "DEMO_INVENTORY_FAIL_AFTER_APPLY", default_value_t = 0.0, value_parser = share)]
    fail_after_apply: f64,

    /// Start "down": 503 to every contract call until PATCH /_admin/faults {"down":false}.
    #[arg(long, env = "DEMO_INVENTORY_DOWN")]
    down: bool,

    /// Seed of the fault RNG (random when absent; the seed is logged and in /_admin/state).
    #[arg(long, env = "DEMO_INVENTORY_SEED")]
    seed: Option<u64>,
}

fn share(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a share between 0.0 and 1.0"))
    }
}

impl Args {
    fn config(self) -> anyhow::Result<InventoryConfig> {
        let faults = Faults {
            down: self.down,
            fail_5xx: self.fail_5xx,
            fail_429: self.fail_429,
            retry_after_secs: self.retry_after,
            timeout: self.timeout,
            timeout_ms: u64::try_from(self.timeout_duration.as_millis())
                .context("--timeout-duration is too long")?,
            fail_4xx: self.fail_4xx,
            fail_after_apply: self.fail_after_apply,
            rejected_skus: self
                .reject_sku
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        };
        faults.validate().context(
            "--fail-5xx, --fail-429, --timeout, --fail-4xx and --fail-after-apply together",
        )?;
        Ok(InventoryConfig {
            listen: self.listen,
            token: self.token.filter(|t| !t.is_empty()),
            faults,
            seed: self.seed,
        })
    }
}

async fn stop_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    () = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            // One clear line naming the option, as for every binary of the project.
            eprintln!("demo-inventory: invalid configuration: {e:#}");
            std::process::exit(2);
        }
    };
    tracing::info!(
        token = config.token.is_some(),
        faults = ?config.faults,
        "starting demo inventory"
    );
    let inv = match DemoInventory::start(config).await {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("demo-inventory: {e:#}");
            std::process::exit(1);
        }
    };
    tracing::info!(url = %inv.url(), seed = inv.state().seed, "ready");
    stop_signal().await;
    tracing::info!("shutting down");
    if let Err(e) = inv.shutdown().await {
        eprintln!("demo-inventory: {e:#}");
        std::process::exit(1);
    }
}
