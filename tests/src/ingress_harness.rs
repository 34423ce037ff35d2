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

/// The real `ingress` binary as a child process, its stderr (the logs) collected.
pub struct IngressProcess {
    pub addr: SocketAddr,
    child: tokio::process::Child,
    logs: std::sync::Arc<std::sync::Mutex<String>>,
}

impl IngressProcess {
    /// Starts the binary with only `env` (plus `PATH`, `INGRESS_LISTEN` on a free port and
    /// `RUST_LOG` if unset) and waits until `/readyz` answers 200.
    pub async fn spawn(env: &[(&str, &str)]) -> anyhow::Result<IngressProcess> {
        use tokio::io::AsyncReadExt as _;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut command = tokio::process::Command::new(crate::bin_path("ingress"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("INGRESS_LISTEN", addr.to_string())
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        for mut pipe in [
            Box::new(child.stderr.take().expect("piped"))
                as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
            Box::new(child.stdout.take().expect("piped")),
        ] {
            let logs = logs.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut buf).await {
                    logs.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let process = IngressProcess { addr, child, logs };
        let ready = crate::wait::until(
            std::time::Duration::from_secs(20),
            "ingress binary ready",
            || async {
                matches!(reqwest::get(process.url("/readyz")).await, Ok(r) if r.status() == 200)
            },
        )
        .await;
        if let Err(e) = ready {
            anyhow::bail!("{e}; its output:\n{}", process.logs());
        }
        Ok(process)
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything it wrote so far (stderr and stdout).
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}
