//! The real `ingress` and `worker` binaries as child processes the suite can SIGKILL,
//! SIGTERM and start again, each generation logging to its own file.

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

/// How long a (re)started process may take to answer `/readyz` 200: a debug binary on a
/// loaded 2-core machine, connecting to a broker that may itself be booting.
const READY_WITHIN: Duration = Duration::from_secs(45);

/// Where the children's logs go: `$TMPDIR/xb-<suite>-<pid>/`. Removed when the suite
/// passes (unless `FAULT_SUITE_KEEP_LOGS` is set), kept and named when it fails.
pub struct LogDir {
    suite: String,
    path: PathBuf,
}

impl LogDir {
    /// `suite` names the directory and the message that keeps it (`fault-suite`, …).
    pub fn create(suite: &str) -> anyhow::Result<LogDir> {
        let path = std::env::temp_dir().join(format!("xb-{suite}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(LogDir {
            suite: suite.to_owned(),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("FAULT_SUITE_KEEP_LOGS").is_some() {
            eprintln!(
                "{}: child process logs kept in {}",
                self.suite,
                self.path.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// One service (ingress or a worker): its binary, environment and health address, and
/// the process of the current generation. Killed on drop (`kill_on_drop`).
pub struct Service {
    pub name: String,
    bin: PathBuf,
    env: Vec<(String, String)>,
    /// `host:port` that serves `/readyz` (and `/metrics`).
    pub ops: String,
    log_dir: PathBuf,
    generation: u32,
    child: Option<Child>,
}

impl Service {
    pub fn new(
        name: &str,
        bin: PathBuf,
        env: Vec<(String, String)>,
        ops: String,
        logs: &LogDir,
    ) -> Service {
        Service {
            name: name.to_owned(),
            bin,
            env,
            ops,
            log_dir: logs.path().to_owned(),
            generation: 0,
            child: None,
        }
    }

    /// The log file of generation `n` (1 = first start).
    fn log_file(&self, n: u32) -> PathBuf {
        self.log_dir.join(format!("{}.{n}.log", self.name))
    }

    /// Starts a new generation and waits until `/readyz` answers 200.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is already running", self.name);
        self.generation += 1;
        let log_path = self.log_file(self.generation);
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new(&self.bin)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            // Plain text in the log files (tracing-subscriber honours NO_COLOR).
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let url = format!("http://{}/readyz", self.ops);
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        loop {
            if matches!(reqwest::get(&url).await, Ok(r) if r.status() == 200) {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "{} exited while starting ({status}); log: {}",
                    self.name,
                    self.log_file(self.generation).display()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{} not ready within {READY_WITHIN:?}; log: {}",
                    self.name,
                    self.log_file(self.generation).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown, no acks, nothing flushed. Returns once the process is gone.
    pub async fn sigkill(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("not running")?;
        child.kill().await?;
        Ok(())
    }

    /// SIGTERM, then waits (up to `within`) for the process to exit.
    pub async fn sigterm(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        let pid = child.id().context("already exited")?;
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        anyhow::ensure!(sent.success(), "kill -TERM {pid} failed");
        match tokio::time::timeout(within, child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                let _ = child.kill().await;
                bail!("{} did not exit within {within:?} of SIGTERM", self.name)
            }
        }
    }

    /// `Some(status)` if the current generation has exited on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Every generation's log file, oldest first.
    pub fn log_files(&self) -> Vec<PathBuf> {
        (1..=self.generation).map(|n| self.log_file(n)).collect()
    }
}
