//! Secrets and internal detail never leave the ingress (`secrecy`, `ingress/src/error.rs`): not in
//! answers, not in its logs, not in its start-up errors. Every test plants distinctive `S3CR3T-…`
//! values and greps everything the real binary says. Nor can a sender write its own lines into
//! those logs.

use std::time::Duration;

use serde_json::{Value, json};
use shared::topology::UNROUTED_QUEUE;
use tests::{
    fixtures::{self, authorization},
    ingress_harness::IngressProcess,
    rabbit::TestVhost,
};

const HOOK_SECRET: &str = "S3CR3T-hook-secret";

/// A port where nothing listens: the user API is down.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn server_errors_answer_a_fixed_message_and_log_the_detail_without_secrets() {
    let vhost = TestVhost::create().await.unwrap();
    let user_api = format!(
        "http://bot:S3CR3T-password@127.0.0.1:{}/users/{{user_id}}?api_key=S3CR3T-query-key",
        closed_port()
    );
    let ingress = IngressProcess::spawn(&[
        ("AMQP_URL", &vhost.amqp_url()),
        ("XSOLLA_WEBHOOK_SECRET", HOOK_SECRET),
        ("USER_CHECK_URL", &user_api),
        ("USER_CHECK_TOKEN", "S3CR3T-bearer-token"),
        ("RUST_LOG", "debug"),
    ])
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        http.post(ingress.url("/webhooks/xsolla"))
            .header("authorization", authorization(&body, HOOK_SECRET))
            .body(body)
            .send()
    };
    let mut request_ids = Vec::new();
    // The user API is unreachable; then the broker returns a publish (no queue bound).
    let validation = fixtures::with("user_validation", &[("/user/id", json!("1234567"))]);
    vhost.delete_queue(UNROUTED_QUEUE).await.unwrap();
    let unroutable = br#"{"notification_type":"nobody_binds_this"}"#.to_vec();
    for body in [validation, unroutable] {
        let r = post(body).await.unwrap();
        assert_eq!(r.status(), 503);
        let text = r.text().await.unwrap();
        assert!(!text.contains("S3CR3T"), "a secret in the answer: {text}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["error"]["code"], "SERVER_ERROR");
        let message = answer["error"]["message"].as_str().unwrap();
        let id = message
            .strip_prefix("Temporarily unavailable; retry later (request ")
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("not the fixed message: {message}"));
        request_ids.push(id.to_owned());
    }
    // Refusals do not quote secrets either.
    for auth in ["Signature S3CR3T", "S3CR3T-hook-secret"] {
        let r = http
            .post(ingress.url("/webhooks/xsolla"))
            .header("authorization", auth)
            .body(r#"{"notification_type":"payment"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let text = r.text().await.unwrap();
        assert!(!text.contains("S3CR3T"), "{text}");
    }
    // The detail is logged at WARN with the same request id.
    tests::wait::until(Duration::from_secs(5), "both WARN lines", || async {
        let logs = ingress.logs();
        request_ids.iter().all(|id| logs.contains(id.as_str()))
    })
    .await
    .unwrap();
    let logs = ingress.logs();
    for (id, detail) in request_ids.iter().zip(["unreachable", "not durable"]) {
        let line = logs.lines().find(|l| l.contains(id.as_str())).unwrap();
        assert!(line.contains("WARN") && line.contains(detail), "{line}");
    }
    assert!(
        logs.contains("api_key=***"),
        "the URL is shown redacted:\n{logs}"
    );
    assert!(
        !logs.contains("S3CR3T"),
        "a secret leaked into the logs:\n{logs}"
    );
}

/// Runs the real binary with `env` (it is expected to refuse to start); returns its exit
/// code and everything it wrote.
async fn refused_start(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(tests::bin_path("ingress"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .output(),
    )
    .await
    .expect("exits promptly")
    .expect("runs");
    let said = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    (output.status.code(), said)
}

#[tokio::test]
async fn a_bad_projects_file_is_named_without_echoing_its_secrets() {
    let dir = std::env::temp_dir().join(format!("xb-secrets-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: &[(&str, &[&str])] = &[
        (r#"{"1": "S3CR3T-a-string"}"#, &["project 1"]),
        (r#"{"1": [123]}"#, &["project 1"]),
        (r#"{"1": ["ok", ["S3CR3T-nested"]]}"#, &["project 1"]),
        (r#""S3CR3T-top-level""#, &["not a JSON object"]),
        (r#"{"S3CR3T-as-id": ["k"]}"#, &["entry 1"]),
        (
            r#"{"18404": ["S3CR3T-one"], "018404": ["S3CR3T-two"]}"#,
            &["project 18404 is listed twice", "`18404`", "`018404`"],
        ),
    ];
    for (i, (content, expected)) in cases.iter().enumerate() {
        let path = dir.join(format!("projects-{i}.json"));
        std::fs::write(&path, content).unwrap();
        let (code, said) = refused_start(&[("XSOLLA_PROJECTS_FILE", path.to_str().unwrap())]).await;
        assert_eq!(code, Some(2), "{content}: {said}");
        let lines: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{content}: one line, got {said}");
        assert!(
            lines[0].contains("XSOLLA_PROJECTS_FILE"),
            "{content}: {said}"
        );
        for part in *expected {
            assert!(
                lines[0].contains(part),
                "{content}: {said} should contain {part}"
            );
        }
        assert!(
            !said.contains("S3CR3T") && !said.contains("`123`"),
            "{content}: {said}"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

/// Anyone can post to `/webhooks/xsolla/<any number>`: that must not page anyone. One WARN
/// line per project per minute, never ERROR.
#[tokio::test]
async fn webhooks_to_unconfigured_projects_log_one_warn_line_per_project() {
    let vhost = TestVhost::create().await.unwrap();
    let ingress = IngressProcess::spawn(&[
        ("AMQP_URL", &vhost.amqp_url()),
        ("XSOLLA_WEBHOOK_SECRET", HOOK_SECRET),
    ])
    .await
    .unwrap();
    let http = reqwest::Client::new();
    for project in [999, 999, 999, 999, 999, 1000, 1000] {
        let r = http
            .post(ingress.url(&format!("/webhooks/xsolla/{project}")))
            .body(r#"{"notification_type":"payment"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    }
    tests::wait::until(Duration::from_secs(5), "the WARN lines", || async {
        ingress.logs().matches("no secret configured").count() >= 2
    })
    .await
    .unwrap();
    let logs = ingress.logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("no secret configured"))
        .collect();
    assert_eq!(lines.len(), 2, "{logs}");
    assert!(lines.iter().all(|l| l.contains("WARN")), "{logs}");
    assert!(
        lines[0].contains("999") && lines[1].contains("1000"),
        "{logs}"
    );
    assert!(!logs.contains("ERROR"), "{logs}");
}

/// The project id of the path is the sender's text, and the refusal's line carries it. A
/// newline in it must not start a forged line, nor an escape sequence reach the operator's
/// terminal: in either format, one event is one line.
#[tokio::test]
async fn a_sender_cannot_forge_a_log_line() {
    let forged = "2026-12-02T01:00:00.000000Z  INFO ingress::routes: webhook answered status=204";
    let path = format!(
        "/webhooks/xsolla/1%0A{}%1B%5B2J%0D%C2%9B",
        forged.replace(' ', "%20")
    );
    for format in ["text", "json"] {
        let vhost = TestVhost::create().await.unwrap();
        let ingress = IngressProcess::spawn(&[
            ("AMQP_URL", &vhost.amqp_url()),
            ("XSOLLA_WEBHOOK_SECRET", HOOK_SECRET),
            ("LOG_FORMAT", format),
        ])
        .await
        .unwrap();
        let r = reqwest::Client::new()
            .post(ingress.url(&path))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        tests::wait::until(Duration::from_secs(5), "the refusal's line", || async {
            ingress.logs().contains("webhook refused")
        })
        .await
        .unwrap();
        let logs = ingress.logs();
        let refusal: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("INFO ingress::routes: webhook answered"))
            .collect();
        assert_eq!(
            refusal.len(),
            1,
            "{format}: the forged text is on the refusal's own line: {logs}"
        );
        assert!(refusal[0].contains("webhook refused"), "{format}: {logs}");
        assert!(
            !logs.lines().any(|l| l.starts_with(forged)),
            "{format}: {logs}"
        );
        let stray = logs.chars().find(|c| c.is_control() && *c != '\n');
        assert_eq!(stray, None, "{format}: {logs:?}");
        if format == "json" {
            tests::logs::parse_json_log(&logs).unwrap();
        }
    }
}
