//! Runs the real ingress (`ingress::run`) in-process on an ephemeral port.

use std::net::SocketAddr;

use clap::Parser as _;
use ingress::IngressArgs;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// A running ingress; stops when dropped.
pub struct RunningIngress {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningIngress {
    /// Starts the ingress against `amqp_url` with `extra` command-line options
    /// (e.g. `["--webhook-secret", "s"]`).
    pub async fn start(amqp_url: &str, extra: &[&str]) -> anyhow::Result<RunningIngress> {
        let mut argv = vec!["ingress", "--amqp-url", amqp_url, "--listen", "127.0.0.1:0"];
        argv.extend_from_slice(extra);
        let args = IngressArgs::try_parse_from(argv)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(ingress::run(listener, args, shutdown.clone()));
        let running = RunningIngress {
            addr,
            shutdown,
            task: Some(task),
        };
        running.wait_ready().await?;
        Ok(running)
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits (up to 20 s) until `/readyz` answers 200.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        crate::wait::until(
            std::time::Duration::from_secs(20),
            "ingress ready",
            || async {
                matches!(reqwest::get(self.url("/readyz")).await, Ok(r) if r.status() == 200)
            },
        )
        .await
    }

    /// Stops it and waits for `run` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningIngress {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
