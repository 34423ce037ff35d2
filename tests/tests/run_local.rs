//! `deploy/run-local.sh`, the developer loop, run as a developer would but on ports and a
//! vhost of the test's own (every port from the environment), with the binaries the test
//! command built: the sample order is granted and shown as `done`; with the inventory
//! down, the diagnostics show the binaries' real metrics.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use tests::rabbit::TestVhost;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/run-local.sh")
}

/// The environment of one run: ports, vhost, run dir, the already built binaries.
struct Local {
    env: Vec<(String, String)>,
    ports: Ports,
    _run_dir: TempDir,
}

#[derive(Clone, Copy)]
struct Ports {
    ingress: u16,
    metrics: u16,
    inventory: u16,
    workers: [u16; 2],
    status: u16,
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Local {
    fn new(amqp_url: &str) -> Local {
        let ports = Ports {
            ingress: free_port(),
            metrics: free_port(),
            inventory: free_port(),
            workers: [free_port(), free_port()],
            status: free_port(),
        };
        let run_dir = std::env::temp_dir().join(format!(
            "xb-run-local-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&run_dir).unwrap();
        let bin = tests::bin_path("ingress")
            .parent()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        let env = [
            ("PATH", var("PATH")),
            ("HOME", var("HOME")),
            ("AMQP_URL", amqp_url.to_owned()),
            ("INGRESS_PORT", ports.ingress.to_string()),
            ("INGRESS_METRICS_PORT", ports.metrics.to_string()),
            ("INVENTORY_PORT", ports.inventory.to_string()),
            (
                "WORKER_PORTS",
                format!("{} {}", ports.workers[0], ports.workers[1]),
            ),
            ("STATUS_PORT", ports.status.to_string()),
            ("RUN_LOCAL_DIR", run_dir.to_string_lossy().into_owned()),
            ("RUN_LOCAL_BIN", bin),
            ("RUN_LOCAL_BUILD", "0".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Local {
            env,
            ports,
            _run_dir: TempDir(run_dir),
        }
    }

    /// Runs the script with `args` and `extra` variables (at most two minutes).
    async fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let mut command = tokio::process::Command::new("bash");
        command
            .arg(script())
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().copied())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(120), command.output())
            .await
            .expect("run-local.sh finishes within 2 minutes")
            .expect("bash runs")
    }
}

impl Drop for Local {
    /// Whatever happened, nothing it started outlives the test.
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(script())
            .arg("stop")
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::null())
            .output();
    }
}

async fn status(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let answer = client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .ok()?;
    Some(answer.status().as_u16())
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn run_local_takes_every_port_from_the_environment_and_diagnoses_with_real_metrics() {
    let vhost = TestVhost::create().await.unwrap();
    let local = Local::new(&vhost.amqp_url());
    let p = local.ports;

    let out = local.run(&[], &[("GRANT_WAIT", "30")]).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains("Grant recorded by the demo inventory"),
        "{shown}"
    );
    assert!(shown.contains(r#""status":"done""#), "{shown}");
    for port in [p.ingress, p.metrics, p.workers[0], p.workers[1], p.status] {
        assert_eq!(
            status(port, "/readyz").await,
            Some(200),
            "port {port}: {shown}"
        );
    }
    assert_eq!(status(p.inventory, "/healthz").await, Some(200));
    assert_eq!(status(p.metrics, "/metrics").await, Some(200));
    assert_eq!(
        status(p.ingress, "/metrics").await,
        Some(404),
        "INGRESS_METRICS_PORT moves /metrics off the public port"
    );

    // The game's API down: no grant, and the diagnostics name metrics that exist, with
    // their samples (the worker's 503s from the inventory among them).
    let out = local
        .run(&[], &[("GRANT_WAIT", "4"), ("DEMO_INVENTORY_DOWN", "true")])
        .await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("No grant for order"), "{shown}");
    assert!(
        shown.contains(r#"ingress_requests_total{type="order_paid",outcome="accepted"} 1"#),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.contains("worker_inventory_call_seconds_count{")
                && l.contains(r#"status="503""#)),
        "{shown}"
    );
    assert!(!shown.contains("(no answer, or none of"), "{shown}");

    let out = local.run(&["stop"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for port in [
        p.ingress,
        p.metrics,
        p.inventory,
        p.workers[0],
        p.workers[1],
        p.status,
    ] {
        assert_eq!(
            status(port, "/healthz").await,
            None,
            "port {port} still answers"
        );
    }
    vhost.delete().await.unwrap();
}
