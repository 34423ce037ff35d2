//! The real `worker` binary given bad or hostile configuration: one line naming the option,
//! exit 2, and never a secret in what it prints, whatever shape the bad value has. Each
//! secret is distinctive (`S3CR3T-…`) so a leak anywhere in stdout or stderr is caught.
//!
//! Needs the binaries built (`cargo build --workspace --bins`); the last test needs
//! RabbitMQ on 127.0.0.1:5672.

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use tests::worker_harness::worker_binary;
use tokio::io::{AsyncBufReadExt, BufReader};

const WITHIN: Duration = Duration::from_secs(30);

/// What a run printed, and how it ended.
struct Run {
    code: Option<i32>,
    output: String,
}

/// Runs `worker <args…>` with a clean environment plus `env`; it must exit by itself.
async fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let child = tokio::process::Command::new(worker_binary().unwrap())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("INVENTORY_URL", "http://127.0.0.1:1/")
        .env("WORKER_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WITHIN, child)
        .await
        .expect("a bad configuration stops start-up at once")
        .unwrap();
    Run {
        code: out.status.code(),
        output: String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr),
    }
}

fn assert_refused(run: &Run, option: &str, what: &str) {
    assert_eq!(run.code, Some(2), "{what}: {}", run.output);
    assert!(
        !run.output.contains("S3CR3T"),
        "{what} leaked: {}",
        run.output
    );
    assert!(run.output.contains(option), "{what}: {}", run.output);
    assert_eq!(
        run.output.trim_end().lines().count(),
        1,
        "{what}: one line: {}",
        run.output
    );
}

#[tokio::test]
async fn a_bad_inventory_token_is_refused_without_echoing_it() {
    for token in ["S3CR3T-with space", " S3CR3T-\ttab", "S3CR3T-é"] {
        let r = run(&[], &[("INVENTORY_TOKEN", token)]).await;
        assert_refused(&r, "INVENTORY_TOKEN", &format!("env {token:?}"));
        let r = run(&["--inventory-token", token], &[]).await;
        assert_refused(&r, "INVENTORY_TOKEN", &format!("flag {token:?}"));
    }
}

#[tokio::test]
async fn a_bad_amqp_url_is_refused_without_echoing_its_password() {
    for url in [
        "amqp://u:S3CR3T-a@/",
        "amqp://u:S3CR3T-b",
        "amqp://u:S3CR3T-c/%2f",
        "S3CR3T-d",
        "http://u:S3CR3T-e@127.0.0.1/",
        "amqp://u:S3CR3T-f@127.0.0.1:notaport/%2f",
        "amqp:u:S3CR3T-g@127.0.0.1",
    ] {
        let r = run(&[], &[("AMQP_URL", url)]).await;
        assert_refused(&r, "AMQP_URL", url);
        let r = run(&["dlq", "list"], &[("AMQP_URL", url)]).await;
        assert_refused(&r, "AMQP_URL", &format!("dlq list with {url}"));
    }
}

#[tokio::test]
async fn a_bad_inventory_url_is_refused_without_echoing_its_password() {
    for url in [
        "http://u:S3CR3T-a@inv.example/?x=1",
        "ftp://u:S3CR3T-b@inv.example/",
        "http://u:S3CR3T-c@[/",
    ] {
        let r = run(&[], &[("INVENTORY_URL", url)]).await;
        assert_refused(&r, "INVENTORY_URL", url);
    }
}

/// A wrong broker password: the worker keeps retrying (it is not a configuration error it
/// can know of), and what it logs about each attempt names the broker without the
/// password, once per attempt, without lapin's own three ERROR lines.
#[tokio::test]
async fn a_refused_broker_login_is_logged_once_per_attempt_without_the_password() {
    let output = refused_login_output(None).await;
    let noise: Vec<_> = output.lines().filter(|l| l.contains("lapin")).collect();
    assert!(noise.is_empty(), "lapin's own lines: {noise:#?}");
}

/// Even at `RUST_LOG=trace`, where amq-protocol-tcp logs the parsed URL with its password.
#[tokio::test]
async fn not_even_trace_logging_shows_the_broker_password() {
    refused_login_output(Some("trace")).await;
}

/// The output of a worker whose broker refuses its login, after three attempts; checked
/// for the secret and the redacted broker.
async fn refused_login_output(rust_log: Option<&str>) -> String {
    let mut command = tokio::process::Command::new(worker_binary().unwrap());
    command.env_clear();
    if let Some(filter) = rust_log {
        command.env("RUST_LOG", filter);
    }
    let mut child = command
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AMQP_URL", "amqp://guest:S3CR3T-wrong@127.0.0.1:5672/%2f")
        .env("INVENTORY_URL", "http://127.0.0.1:1/")
        .env("WORKER_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = Arc::new(Mutex::new(String::new()));
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let output = output.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut all = output.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
    }
    tests::wait::until(WITHIN, "three refused attempts logged", || async {
        output
            .lock()
            .unwrap()
            .matches("cannot connect to RabbitMQ")
            .count()
            >= 3
    })
    .await
    .unwrap();
    child.kill().await.unwrap();
    let output = output.lock().unwrap().clone();
    assert!(!output.contains("S3CR3T"), "leaked: {output}");
    assert!(output.contains("guest:***@127.0.0.1:5672"), "{output}");
    assert!(output.contains("ACCESS_REFUSED"), "says why: {output}");
    output
}

#[tokio::test]
async fn delays_and_timeouts_below_their_minimums_are_refused() {
    for (name, flag, value) in [
        ("RETRY_DELAYS", "--retry-delays", "1ns"),
        ("RETRY_DELAYS", "--retry-delays", "10s,50ms"),
        ("PUBLISH_TIMEOUT", "--publish-timeout", "1ns"),
    ] {
        let r = run(&[], &[(name, value)]).await;
        assert_eq!(r.code, Some(2), "{name}={value}: {}", r.output);
        assert!(r.output.contains(flag), "{name}={value}: {}", r.output);
        assert!(r.output.contains("minimum of 100ms"), "{}", r.output);
    }
}
