//! Client of the demo-only admin API, for processes that did not start the service
//! themselves (`xsolla-sim`, benchmarks, suites driving the `demo-inventory` binary).

use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;

use super::faults::{Faults, FaultsPatch};
use super::state::Snapshot;

/// Longest single long-poll asked of the server (it caps at 60 s itself).
const LONG_POLL: Duration = Duration::from_secs(25);

/// Drives a demo inventory service over HTTP.
#[derive(Clone, Debug)]
pub struct AdminClient {
    base: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// `base_url` is the service's root, e.g. `http://127.0.0.1:8090`.
    pub fn new(base_url: impl Into<String>) -> Self {
        let base = base_url.into().trim_end_matches('/').to_string();
        Self {
            base,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /healthz` answered 200.
    pub async fn healthy(&self) -> bool {
        self.http
            .get(self.url("/healthz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// `GET /_admin/state`.
    pub async fn state(&self) -> anyhow::Result<Snapshot> {
        self.get_json(self.url("/_admin/state"), Duration::from_secs(30))
            .await
    }

    /// `GET /_admin/state?after=<version>`: the first state newer than `version`, or the
    /// current one after `wait`.
    pub async fn state_after(&self, version: u64, wait: Duration) -> anyhow::Result<Snapshot> {
        let url = format!(
            "{}?after={version}&wait_ms={}",
            self.url("/_admin/state"),
            wait.as_millis()
        );
        self.get_json(url, wait + Duration::from_secs(10)).await
    }

    /// Waits until `cond` holds on the remote state, woken by the server's long-poll on
    /// every change rather than by a polling interval.
    pub async fn wait_for<F>(&self, mut cond: F, within: Duration) -> anyhow::Result<Snapshot>
    where
        F: FnMut(&Snapshot) -> bool,
    {
        let deadline = Instant::now() + within;
        let mut snap = self.state().await?;
        loop {
            if cond(&snap) {
                return Ok(snap);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                anyhow::bail!(
                    "demo inventory at {}: condition not met within {within:?}; last state: {}",
                    self.base,
                    snap.summary()
                );
            }
            snap = self.state_after(snap.version, left.min(LONG_POLL)).await?;
        }
    }

    /// `GET /_admin/faults`.
    pub async fn faults(&self) -> anyhow::Result<Faults> {
        self.get_json(self.url("/_admin/faults"), Duration::from_secs(30))
            .await
    }

    /// `PUT /_admin/faults`: replaces every switch.
    pub async fn set_faults(&self, faults: &Faults) -> anyhow::Result<Faults> {
        let resp = self
            .http
            .put(self.url("/_admin/faults"))
            .json(faults)
            .send()
            .await?;
        json_or_error(resp).await
    }

    /// `PATCH /_admin/faults`: changes only the switches present in `patch`.
    pub async fn patch_faults(&self, patch: &FaultsPatch) -> anyhow::Result<Faults> {
        let resp = self
            .http
            .patch(self.url("/_admin/faults"))
            .json(patch)
            .send()
            .await?;
        json_or_error(resp).await
    }

    /// `POST /_admin/reset`.
    pub async fn reset(&self) -> anyhow::Result<()> {
        let resp = self.http.post(self.url("/_admin/reset")).send().await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "reset answered {}",
            resp.status()
        );
        Ok(())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: String,
        timeout: Duration,
    ) -> anyhow::Result<T> {
        let resp = self
            .http
            .get(&url)
            .timeout(timeout)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        json_or_error(resp).await
    }
}

async fn json_or_error<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
) -> anyhow::Result<T> {
    let status = resp.status();
    let url = resp.url().clone();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        anyhow::bail!("{url} answered {status}: {body}");
    }
    resp.json()
        .await
        .with_context(|| format!("decoding the answer of {url}"))
}
