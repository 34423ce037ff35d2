//! The services under test as child processes: start, wait until ready, read their memory
//! and CPU time from /proc, stop with SIGTERM.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context as _;
use tokio::process::{Child, Command};

/// A running release binary.
pub struct Service {
    pub pid: u32,
    child: Child,
}

impl Service {
    /// Starts `bin` with `env`, its output discarded (log volume is part of the cost
    /// measured, as deployed: default `info` level), and waits until `ready_url` is 200.
    pub async fn start(
        name: &'static str,
        bin: &Path,
        env: &[(&str, String)],
        ready_url: &str,
    ) -> anyhow::Result<Service> {
        let mut command = Command::new(bin);
        command
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = command.spawn().with_context(|| {
            format!(
                "starting {} (build it: cargo build --release --workspace --bins)",
                bin.display()
            )
        })?;
        let pid = child.id().context("child has a pid")?;
        let service = Service { pid, child };
        let client = reqwest::Client::new();
        tests::wait::until(
            Duration::from_secs(30),
            &format!("{name} ready"),
            || async { matches!(client.get(ready_url).send().await, Ok(r) if r.status() == 200) },
        )
        .await?;
        Ok(service)
    }

    /// Peak and current resident memory, MiB.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        memory_of(&self.pid.to_string())
    }

    /// CPU seconds used so far (user + system).
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds_of(&self.pid.to_string())
    }

    /// SIGTERM (graceful), then SIGKILL after 10 s.
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Memory {
    pub peak_rss_mib: f64,
    pub rss_mib: f64,
}

/// Peak (`VmHWM`) and current resident memory of `/proc/<pid>` (`self` for this process).
pub fn memory_of(pid: &str) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |field: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse::<f64>().ok()
    };
    Ok(Memory {
        peak_rss_mib: kib("VmHWM:").unwrap_or(0.0) / 1024.0,
        rss_mib: kib("VmRSS:").unwrap_or(0.0) / 1024.0,
    })
}

/// Restarts `VmHWM` at the current RSS (Linux ≥ 4.0, `clear_refs` value 5), so a later
/// [`memory_of`] gives the peak of one phase rather than of the whole process life.
/// Best effort: where it is refused, the peak simply stays cumulative.
pub fn reset_peak_rss(pid: &str) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Starts the ingress on a free port against `amqp_url`, with only its listen address,
/// secret and broker set, so it runs with its deployed defaults (`info` logs included).
/// Returns it with its webhook URL.
pub async fn start_ingress(
    bin: &Path,
    amqp_url: &str,
    secret: &str,
) -> anyhow::Result<(Service, String)> {
    let listen = free_addr()?;
    let env = [
        ("INGRESS_LISTEN", listen.clone()),
        ("XSOLLA_WEBHOOK_SECRET", secret.to_owned()),
        ("AMQP_URL", amqp_url.to_owned()),
    ];
    let ingress = Service::start("ingress", bin, &env, &format!("http://{listen}/readyz")).await?;
    Ok((ingress, format!("http://{listen}/webhooks/xsolla")))
}

/// Starts `count` workers on the work queue of `amqp_url`, granting into `inventory_url`;
/// on a failure, stops the ones already started.
pub async fn start_workers(
    bin: &Path,
    amqp_url: &str,
    inventory_url: &str,
    count: usize,
    concurrency: u16,
) -> anyhow::Result<Vec<Service>> {
    let mut running = Vec::new();
    for _ in 0..count {
        let listen = free_addr()?;
        let env = [
            ("AMQP_URL", amqp_url.to_owned()),
            ("INVENTORY_URL", inventory_url.to_owned()),
            ("WORKER_LISTEN", listen.clone()),
            ("WORKER_CONCURRENCY", concurrency.to_string()),
        ];
        match Service::start("worker", bin, &env, &format!("http://{listen}/readyz")).await {
            Ok(s) => running.push(s),
            Err(e) => {
                stop_all(running).await;
                return Err(e);
            }
        }
    }
    Ok(running)
}

/// Peak RSS of each service, MiB (0 where unreadable).
pub fn peaks(services: &[Service]) -> Vec<f64> {
    services
        .iter()
        .map(|s| s.memory().map(|m| m.peak_rss_mib).unwrap_or(0.0))
        .collect()
}

pub async fn stop_all(services: Vec<Service>) {
    for s in services {
        s.stop().await;
    }
}

/// CPU seconds of `/proc/<pid>` (`self` for this process, `thread-self` for this thread).
/// Assumes the usual 100 ticks/s.
pub fn cpu_seconds_of(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// A free loopback port (bound then released; the child binds it right after).
pub fn free_addr() -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

/// `name` next to this executable (`target/release/<name>` when run by cargo).
pub fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The pid of the process listening on `port` (the broker), via `ss`; `None` if unknown.
pub async fn listener_pid(port: u16) -> Option<String> {
    let out = Command::new("ss")
        .args(["-Hltnp", &format!("sport = :{port}")])
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let at = text.find("pid=")? + 4;
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then_some(digits)
}

/// CPU seconds of several processes, sampled together.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSample {
    pub broker: f64,
    pub this: f64,
    pub service: f64,
}

impl CpuSample {
    pub fn take(broker_pid: Option<&str>, service: Option<&Service>) -> CpuSample {
        CpuSample {
            broker: broker_pid.map_or(0.0, cpu_seconds_of),
            this: cpu_seconds_of("self"),
            service: service.map_or(0.0, Service::cpu_seconds),
        }
    }

    /// CPU µs per item between `self` (earlier) and `later`.
    pub fn per_item_us(&self, later: &CpuSample, items: u64) -> CpuPerItem {
        let per = |a: f64, b: f64| {
            if items == 0 {
                0.0
            } else {
                (b - a) * 1e6 / items as f64
            }
        };
        CpuPerItem {
            broker_us: per(self.broker, later.broker),
            load_generator_us: per(self.this, later.this),
            service_us: per(self.service, later.service),
        }
    }
}

/// CPU time per message of each process in a phase.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CpuPerItem {
    pub broker_us: f64,
    /// This process: the publisher in the baseline, the HTTP load generator otherwise.
    pub load_generator_us: f64,
    /// The service under test (ingress or worker).
    pub service_us: f64,
}

/// The port of an `amqp://user:pass@host:port/vhost` URL (5672 if none).
pub fn amqp_port(url: &str) -> u16 {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    host_port
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(5672)
}
