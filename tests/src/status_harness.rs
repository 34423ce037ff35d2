//! Runs the real `order-status` binary for the suites, and mints the player JWTs it checks.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use anyhow::Context as _;
use tokio::process::Child;

/// The HS256 secret [`RunningStatus::start`] configures unless `extra_env` sets
/// `STATUS_JWT_HS256_SECRET` itself.
pub const TEST_JWT_SECRET: &str = "status-test-secret";

/// The real `order-status` as a child process, on a free port of 127.0.0.1; killed when
/// dropped.
pub struct RunningStatus {
    pub addr: SocketAddr,
    child: Child,
}

impl RunningStatus {
    /// Starts the binary against `amqp_url` (`AMQP_URL`), `STATUS_LISTEN` on a free port,
    /// `STATUS_JWT_HS256_SECRET` = [`TEST_JWT_SECRET`], plus `extra_env` (which wins), and
    /// waits (30 s at most) until `/readyz` answers 200: connected and caught up.
    pub async fn start(
        amqp_url: &str,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<RunningStatus> {
        let running = Self::spawn(amqp_url, extra_env)?;
        running.wait_ready(Duration::from_secs(30)).await?;
        Ok(running)
    }

    /// Starts the binary without waiting for readiness (to watch it become ready).
    pub fn spawn(amqp_url: &str, extra_env: &[(&str, &str)]) -> anyhow::Result<RunningStatus> {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?
        };
        let mut cmd = tokio::process::Command::new(crate::bin_path("order-status"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("AMQP_URL", amqp_url)
            .env("STATUS_LISTEN", addr.to_string())
            .env("STATUS_JWT_HS256_SECRET", TEST_JWT_SECRET)
            .envs(extra_env.iter().map(|(k, v)| (*k, *v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let child = cmd.spawn().context("starting the order-status binary")?;
        Ok(RunningStatus { addr, child })
    }

    /// The process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `ws://addr/connection/websocket`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/connection/websocket", self.addr)
    }

    /// Whether `/readyz` answers 200 right now.
    pub async fn is_ready(&self) -> bool {
        matches!(reqwest::get(self.url("/readyz")).await, Ok(r) if r.status() == 200)
    }

    /// Waits until `/readyz` answers 200; fails at once if the process exited.
    pub async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let give_up = tokio::time::Instant::now() + within;
        loop {
            if self.is_ready().await {
                return Ok(());
            }
            if let Some(pid) = self.child.id() {
                anyhow::ensure!(
                    std::path::Path::new(&format!("/proc/{pid}")).exists(),
                    "order-status exited"
                );
            } else {
                anyhow::bail!("order-status exited");
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < give_up,
                "order-status not ready within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(reqwest::get(self.url("/metrics")).await?.text().await?)
    }

    /// SIGKILL: no close frames, nothing flushed.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// SIGTERM (WebSockets get 3001), then waits (10 s at most) for the exit code.
    pub async fn stop(mut self) -> anyhow::Result<Option<i32>> {
        let pid = self.child.id().context("already exited")?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        let exit = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .context("order-status did not exit after SIGTERM")??;
        Ok(exit.code())
    }

    /// SIGTERM without waiting (to watch the WebSockets close).
    pub fn terminate(&self) -> anyhow::Result<()> {
        let pid = self.child.id().context("already exited")?;
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        Ok(())
    }
}

/// An HS256 player JWT for `user` (`sub`), expiring `ttl` from now, signed with `secret`
/// (use [`TEST_JWT_SECRET`] for a harness-started binary).
pub fn mint_jwt(secret: &str, user: &str, ttl: Duration) -> String {
    mint_jwt_claims(
        secret,
        serde_json::json!({"sub": user, "exp": unix_now() + ttl.as_secs() as i64}),
    )
}

/// An HS256 JWT that expired `ago` (more than the server's 60 s leeway, for 109 / 401).
pub fn mint_expired_jwt(secret: &str, user: &str, ago: Duration) -> String {
    mint_jwt_claims(
        secret,
        serde_json::json!({"sub": user, "exp": unix_now() - ago.as_secs() as i64}),
    )
}

/// An HS256 JWT with exactly these claims.
pub fn mint_jwt_claims(secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
