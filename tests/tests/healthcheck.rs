//! `deploy/healthcheck.sh`, the container image's HEALTHCHECK, against the real binaries:
//! it finds the service from a process's command line and asks its `/healthz` on the port
//! of its `*_LISTEN` variable, with nothing but bash (the runtime image has no curl).

use std::{path::Path, process::Output, time::Duration};

use tests::{
    inventory::{DemoInventory, InventoryConfig},
    rabbit::TestVhost,
};

async fn healthcheck(args: &[&str], env: &[(&str, &str)]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/healthcheck.sh");
    let run = tokio::process::Command::new("bash")
        .arg(script)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output();
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the healthcheck ends by itself")
        .expect("bash runs")
}

fn shown(out: &Output) -> String {
    format!(
        "exit {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn healthcheck_asks_the_containers_own_service_on_its_configured_port() {
    let vhost = TestVhost::create().await.unwrap();
    let listen = free_addr();
    let mut ingress = tokio::process::Command::new(tests::bin_path("ingress"))
        .env_clear()
        .env("AMQP_URL", vhost.amqp_url())
        .env("INGRESS_LISTEN", &listen)
        .env("XSOLLA_WEBHOOK_SECRET", "healthcheck-test")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = ingress.id().unwrap().to_string();
    let env = [
        ("INGRESS_LISTEN", listen.as_str()),
        ("HEALTHCHECK_PID", &pid),
    ];
    tests::wait::until(Duration::from_secs(30), "ingress /healthz", || async {
        healthcheck(&[], &env).await.status.success()
    })
    .await
    .unwrap();
    // Named explicitly, as a compose file may.
    let out = healthcheck(&["ingress"], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));

    // The demo inventory (and its own variable).
    let inventory = DemoInventory::start(InventoryConfig::default())
        .await
        .unwrap();
    let addr = inventory.url().trim_start_matches("http://").to_owned();
    let out = healthcheck(&["demo-inventory"], &[("DEMO_INVENTORY_LISTEN", &addr)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));

    // Nothing listening: unhealthy, and it says where it asked.
    let dead = free_addr();
    let out = healthcheck(&["worker"], &[("WORKER_LISTEN", &dead)]).await;
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(shown(&out).contains(&dead), "{}", shown(&out));
    let _ = ingress.kill().await;
    let _ = ingress.wait().await;
    let out = healthcheck(&["ingress"], &[("INGRESS_LISTEN", &listen)]).await;
    assert_eq!(out.status.code(), Some(1), "stopped: {}", shown(&out));

    // A process that serves nothing (xsolla-sim, a shell) is healthy; a bad name is not.
    let mut idle = tokio::process::Command::new("sleep")
        .arg("30")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let idle_pid = idle.id().unwrap().to_string();
    let out = healthcheck(&[], &[("HEALTHCHECK_PID", &idle_pid)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let out = healthcheck(&["ingres"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    let _ = idle.kill().await;
    vhost.delete().await.unwrap();
}
