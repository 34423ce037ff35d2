//! Xsolla's real order-tracking clients against the real `order-status`: the guide's code on
//! centrifuge-js (`tests/clients/node/track.js`) and its centrifuge-python equivalent
//! (`tests/clients/python/track.py`), unmodified and both at once, fed by the real pipeline:
//! signed webhooks → the real ingress → RabbitMQ → the real `worker` binary → the demo
//! inventory, each test on a vhost of its own. Also `xsolla-sim jwt` and `xsolla-sim watch`
//! against the same server.
//!
//! The clients are installed by `deploy/test.sh` at the versions pinned in `tests/clients/`;
//! without them these tests fail and say so (never skipped).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};
use tests::{
    fixtures,
    ingress_harness::RunningIngress,
    inventory::{DemoInventory, Endpoint, Faults, InventoryConfig, InventoryHandle},
    rabbit::TestVhost,
    status_harness::{RunningStatus, TEST_JWT_SECRET, mint_expired_jwt, mint_jwt},
    worker_harness::WorkerProcess,
};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, BufReader, Lines},
    process::{Child, ChildStdout, Command},
    time::Instant,
};

const WEBHOOK_SECRET: &str = "test-secret";
/// The project of Xsolla's `order_paid` example (`billing.settings.project_id`); the
/// webhooks go to `/webhooks/xsolla/{PROJECT}`.
const PROJECT: u64 = 18404;
/// Longest wait for one thing a client should print (start-up, connect, a grant).
const STEP: Duration = Duration::from_secs(20);
/// Longest a client process may run; the tests end them much sooner.
const CLIENT_LIFETIME: Duration = Duration::from_secs(120);

// ---- the clients --------------------------------------------------------------------------

/// One of the real client libraries, running the guide's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sdk {
    /// `node tests/clients/node/track.js` (centrifuge-js + ws).
    Js,
    /// `python3 tests/clients/python/track.py` (centrifuge-python).
    Python,
}

const BOTH: [Sdk; 2] = [Sdk::Js, Sdk::Python];

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

impl Sdk {
    /// The interpreter and script, after checking the pinned packages are installed.
    fn command(self) -> Command {
        let dir = clients_dir();
        let (program, script, installed) = match self {
            Sdk::Js => (
                "node",
                dir.join("node/track.js"),
                vec![
                    dir.join("node/node_modules/centrifuge/package.json"),
                    dir.join("node/node_modules/ws/package.json"),
                ],
            ),
            Sdk::Python => (
                "python3",
                dir.join("python/track.py"),
                vec![
                    dir.join("python/.deps/centrifuge/__init__.py"),
                    dir.join("python/.deps/websockets/__init__.py"),
                    dir.join("python/.deps/google/protobuf/__init__.py"),
                ],
            ),
        };
        for path in installed {
            assert!(
                path.exists(),
                "{} is missing: the {self:?} order-status client is not installed. Run \
                 deploy/test.sh (it installs the clients pinned in tests/clients/), or just \
                 `. deploy/lib.sh && ensure_clients`",
                path.display()
            );
        }
        let mut command = Command::new(program);
        command.arg(script);
        command
    }
}

/// A running client: its stdout lines (one per event) as they come, its stderr kept for
/// failure messages.
struct Client {
    sdk: Sdk,
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
    closed: bool,
}

impl Client {
    /// Starts `sdk`'s script on `ws_url` with the player's `token` (sent as `data.auth`).
    fn start(sdk: Sdk, ws_url: &str, token: &str, user: &str) -> Client {
        let mut command = sdk.command();
        command
            .arg(ws_url)
            .arg(CLIENT_LIFETIME.as_millis().to_string())
            .env("AUTH_JWT", token)
            .env("USER_EXTERNAL_ID", user)
            .env("PROJECT_ID", PROJECT.to_string())
            // centrifuge-python honours proxy variables; the server is local.
            .env("NO_PROXY", "127.0.0.1,localhost")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run the {sdk:?} client ({e}): Node.js (node) and Python 3.10+ \
                 (python3) must be on PATH; deploy/test.sh checks for them"
            )
        });
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        tokio::spawn(collect(
            child.stderr.take().expect("piped stderr"),
            stderr.clone(),
        ));
        Client {
            sdk,
            child,
            stdout,
            seen: Vec::new(),
            stderr,
            closed: false,
        }
    }

    /// Reads lines until `done(lines so far)` holds; fails after [`STEP`] with the whole
    /// transcript.
    async fn wait_until(&mut self, what: &str, done: impl Fn(&[String]) -> bool) {
        let give_up = Instant::now() + STEP;
        while !done(&self.seen) {
            if self.closed {
                self.fail(&format!("exited before {what}"));
            }
            match tokio::time::timeout_at(give_up, self.stdout.next_line()).await {
                Err(_) => self.fail(&format!("no {what} within {STEP:?}")),
                Ok(Ok(Some(line))) => self.seen.push(line),
                Ok(Ok(None)) => self.closed = true,
                Ok(Err(e)) => self.fail(&format!("reading its output: {e}")),
            }
        }
    }

    async fn wait_subscribed(&mut self) {
        self.wait_until("`subscribed`", |lines| {
            lines.iter().any(|l| l.starts_with("subscribed "))
        })
        .await;
    }

    async fn wait_status(&mut self, order: u64, status: &str) {
        self.wait_until(&format!("order {order} `{status}`"), |lines| {
            statuses(lines, order).contains(&status)
        })
        .await;
    }

    /// Waits for `done`, once the demo inventory has granted the order (so a missing `done`
    /// is told apart from a grant that never happened).
    async fn wait_done(&mut self, inventory: &InventoryHandle, order: u64) {
        let key = order.to_string();
        if let Err(e) = inventory.wait_for(|s| s.grant(&key).is_some(), STEP).await {
            self.fail(&format!(
                "waited for `done`, but the grant never happened: {e:#}"
            ));
        }
        let what = format!(
            "order {order} `done` although the inventory granted it (done comes from the \
             worker's `granted` order event in xsolla.order-events)"
        );
        self.wait_until(&what, |lines| statuses(lines, order).contains(&"done"))
            .await;
    }

    /// Waits for `disconnected <code> <reason>` and for the process to exit 0.
    async fn wait_disconnected(&mut self) -> (i64, String) {
        self.wait_until("`disconnected`", |lines| disconnected(lines).is_some())
            .await;
        let exit = tokio::time::timeout(STEP, self.child.wait()).await;
        match exit {
            Ok(Ok(status)) if status.success() => {}
            other => self.fail(&format!("did not exit 0 after disconnected: {other:?}")),
        }
        disconnected(&self.seen).expect("just seen")
    }

    fn fail(&self, why: &str) -> ! {
        panic!(
            "{:?} client {why}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.sdk,
            self.seen.join("\n"),
            self.stderr.lock().unwrap()
        )
    }
}

async fn collect(mut from: impl AsyncRead + Unpin, into: Arc<Mutex<String>>) {
    let mut buf = Vec::new();
    let _ = from.read_to_end(&mut buf).await;
    into.lock()
        .unwrap()
        .push_str(&String::from_utf8_lossy(&buf));
}

/// The statuses the client printed for `order` (`history …` and `live …` lines), in order.
fn statuses(lines: &[String], order: u64) -> Vec<&str> {
    let order = order.to_string();
    lines
        .iter()
        .filter_map(|l| {
            let mut words = l.split(' ');
            match (words.next(), words.next(), words.next()) {
                (Some("history" | "live"), Some(o), Some(status)) if o == order => Some(status),
                _ => None,
            }
        })
        .collect()
}

/// `disconnected <code> <reason>`, if printed.
fn disconnected(lines: &[String]) -> Option<(i64, String)> {
    lines.iter().find_map(|l| {
        let rest = l.strip_prefix("disconnected ")?;
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        Some((code.parse().ok()?, reason.to_owned()))
    })
}

/// Both clients, started together for the same player.
async fn start_both(ws_url: &str, token: &str, user: &str) -> Vec<Client> {
    BOTH.into_iter()
        .map(|sdk| Client::start(sdk, ws_url, token, user))
        .collect()
}

/// Status ranks: statuses only move forward (`canceled` is final and outranks `done`).
fn rank(status: &str) -> u8 {
    match status {
        "new" => 0,
        "paid" => 1,
        "done" => 2,
        "canceled" => 3,
        _ => u8::MAX,
    }
}

/// The order moved paid → done in this transcript, as a client ranking statuses shows it: `paid`
/// first, `done` at the end, nothing else. A live push may overtake the history reply
/// (`docs/centrifuge-protocol.md` §6, "Ordering"), so a `paid` after `done` is a late duplicate,
/// not a regression.
fn assert_paid_then_done(client: &Client, order: u64) {
    let seen = statuses(&client.seen, order);
    let shown: Vec<&str> = seen
        .iter()
        .scan("", |best, s| {
            if rank(s) > rank(best) || best.is_empty() {
                *best = s;
            }
            Some(*best)
        })
        .collect();
    let ok = shown.first() == Some(&"paid")
        && shown.last() == Some(&"done")
        && seen.iter().all(|s| matches!(*s, "paid" | "done"));
    if !ok {
        client.fail(&format!(
            "saw {seen:?} for order {order}, not paid then done"
        ));
    }
}

// ---- the pipeline -------------------------------------------------------------------------

/// A projects file for the ingress (`{"18404": [secret]}`), deleted when dropped.
struct ProjectsFile(PathBuf);

impl ProjectsFile {
    fn new() -> ProjectsFile {
        let path = std::env::temp_dir().join(format!(
            "xb-projects-{}.json",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(
            &path,
            json!({PROJECT.to_string(): [WEBHOOK_SECRET]}).to_string(),
        )
        .expect("projects file written");
        ProjectsFile(path)
    }
}

impl Drop for ProjectsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The real product on a vhost of its own: ingress (in-process), the `worker` and
/// `order-status` binaries, the demo inventory. Fields drop in order: processes first,
/// the vhost last.
struct Pipeline {
    status: RunningStatus,
    worker: WorkerProcess,
    ingress: RunningIngress,
    inventory: InventoryHandle,
    _projects: ProjectsFile,
    http: reqwest::Client,
    vhost: TestVhost,
}

impl Pipeline {
    /// Starts everything; `status_env` is added to `order-status`'s environment.
    async fn start(status_env: &[(&str, &str)], faults: Faults) -> Pipeline {
        let vhost = TestVhost::create().await.expect("test vhost");
        let amqp = vhost.amqp_url();
        let inventory = DemoInventory::start(InventoryConfig::default().with_faults(faults))
            .await
            .expect("demo inventory starts");
        let projects = ProjectsFile::new();
        let path = projects.0.to_str().expect("UTF-8 temp path").to_owned();
        let ingress_args = ["--projects-file", path.as_str()];
        let inventory_url = inventory.url();
        let (ingress, worker, status) = tokio::join!(
            RunningIngress::start(&amqp, &ingress_args),
            WorkerProcess::spawn(&amqp, &inventory_url, &[]),
            RunningStatus::start(&amqp, status_env),
        );
        Pipeline {
            status: status.expect("order-status starts"),
            worker: worker.expect("worker starts"),
            ingress: ingress.expect("ingress starts"),
            inventory,
            _projects: projects,
            http: reqwest::Client::new(),
            vhost,
        }
    }

    /// Signs `body` as Xsolla does and posts it to the ingress; expects 204.
    async fn send(&self, body: Vec<u8>) {
        let authorization = fixtures::authorization(&body, WEBHOOK_SECRET);
        let response = self
            .http
            .post(self.ingress.url(&format!("/webhooks/xsolla/{PROJECT}")))
            .header("authorization", authorization)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("the ingress answers");
        assert_eq!(response.status(), 204, "{:?}", response.text().await);
    }

    /// Xsolla's Get-order short-poll: the HTTP status and the body (`Null` if not JSON).
    async fn poll(&self, order: u64, token: &str) -> (u16, Value) {
        let response = self
            .http
            .get(
                self.status
                    .url(&format!("/api/v2/project/{PROJECT}/order/{order}")),
            )
            .bearer_auth(token)
            .send()
            .await
            .expect("order-status answers");
        let code = response.status().as_u16();
        (code, response.json().await.unwrap_or(Value::Null))
    }

    async fn stop(self) {
        let Pipeline {
            status,
            worker,
            ingress,
            inventory,
            vhost,
            ..
        } = self;
        let _ = status.stop().await;
        let _ = worker.kill().await;
        let _ = ingress.stop().await;
        let _ = inventory.shutdown().await;
        vhost.delete().await.expect("vhost deleted");
    }
}

/// Just `order-status` on a vhost of its own (no order ever arrives).
async fn status_alone(env: &[(&str, &str)]) -> (TestVhost, RunningStatus) {
    let vhost = TestVhost::create().await.expect("test vhost");
    let status = RunningStatus::start(&vhost.amqp_url(), env)
        .await
        .expect("order-status starts");
    (vhost, status)
}

/// `order_paid` (Xsolla's combined-mode example) for `order` of `user`.
fn order_paid(order: u64, user: &str) -> Vec<u8> {
    fixtures::with(
        "order_paid_combined",
        &[
            ("/order/id", json!(order)),
            ("/billing/transaction/id", json!(order)),
            ("/user/external_id", json!(user)),
        ],
    )
}

/// `order_canceled` (Xsolla's example) for `order` of `user`.
fn order_canceled(order: u64, user: &str) -> Vec<u8> {
    fixtures::with(
        "order_canceled_separate",
        &[
            ("/order/id", json!(order)),
            ("/user/external_id", json!(user)),
        ],
    )
}

/// A fresh player and order id (below 2³¹: Xsolla's Unity SDK reads it as an `int`).
fn player_and_order() -> (String, u64) {
    let id = uuid::Uuid::new_v4().as_u128();
    (
        format!("player-{}", id % 1_000_000_000),
        1_000_000 + (id >> 64) as u64 % 1_000_000_000,
    )
}

// ---- the tests ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guide_code_in_both_clients_sees_paid_then_done_for_a_paid_order() {
    let p = Pipeline::start(&[], Faults::none()).await;
    let (user, order) = player_and_order();
    let token = mint_jwt(TEST_JWT_SECRET, &user, Duration::from_secs(600));
    let mut clients = start_both(&p.status.ws_url(), &token, &user).await;
    for c in &mut clients {
        c.wait_subscribed().await;
    }

    p.send(order_paid(order, &user)).await;
    for c in &mut clients {
        c.wait_done(&p.inventory, order).await;
        assert_paid_then_done(c, order);
    }
    let (code, body) = p.poll(order, &token).await;
    assert_eq!((code, &body["status"]), (200, &json!("done")), "{body}");
    assert_eq!(body["order_id"], json!(order), "{body}");
    // Its last open order is final: the server ends the tracking with 4500 (after the
    // default 5 s grace), which both clients take as final.
    for c in &mut clients {
        let (code, _) = c.wait_disconnected().await;
        if code != 4500 {
            c.fail("did not end with 4500 after the order was done");
        }
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_stays_paid_while_the_inventory_is_down_then_turns_done() {
    let down = Faults {
        down: true,
        ..Faults::none()
    };
    let p = Pipeline::start(&[], down).await;
    let (user, order) = player_and_order();
    let token = mint_jwt(TEST_JWT_SECRET, &user, Duration::from_secs(600));
    let mut clients = start_both(&p.status.ws_url(), &token, &user).await;
    for c in &mut clients {
        c.wait_subscribed().await;
    }

    p.send(order_paid(order, &user)).await;
    for c in &mut clients {
        c.wait_status(order, "paid").await;
    }
    // The game refuses the grant over and over (503: first try, quick retry, delay tiers).
    p.inventory
        .wait_for(|s| s.answered(Endpoint::Grants, 503) >= 3, STEP)
        .await
        .expect("the worker keeps trying the grant");
    assert!(p.inventory.state().grant(&order.to_string()).is_none());
    let (code, body) = p.poll(order, &token).await;
    assert_eq!(
        (code, &body["status"]),
        (200, &json!("paid")),
        "while granting fails: {body}"
    );
    for c in &clients {
        if statuses(&c.seen, order).contains(&"done") {
            c.fail("saw `done` while the inventory was down");
        }
    }

    p.inventory.update_faults(|f| f.down = false).unwrap();
    for c in &mut clients {
        c.wait_done(&p.inventory, order).await;
        assert_paid_then_done(c, order);
    }
    let (code, body) = p.poll(order, &token).await;
    assert_eq!((code, &body["status"]), (200, &json!("done")), "{body}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceled_order_ends_canceled_in_both_clients() {
    let p = Pipeline::start(&[("STATUS_FINAL_GRACE", "2s")], Faults::none()).await;
    let (user, order) = player_and_order();
    let token = mint_jwt(TEST_JWT_SECRET, &user, Duration::from_secs(600));
    let mut clients = start_both(&p.status.ws_url(), &token, &user).await;
    for c in &mut clients {
        c.wait_subscribed().await;
    }

    p.send(order_paid(order, &user)).await;
    p.send(order_canceled(order, &user)).await;
    for c in &mut clients {
        c.wait_status(order, "canceled").await;
        let (code, reason) = c.wait_disconnected().await;
        let seen = statuses(&c.seen, order);
        // Ranked as a client does: once `canceled` is seen, nothing outranks it.
        let ends_canceled = seen.iter().max_by_key(|s| rank(s)) == Some(&"canceled");
        if !(ends_canceled && seen.first() == Some(&"paid") && code == 4500) {
            c.fail(&format!(
                "saw {seen:?} then disconnected {code} {reason}: expected it to end canceled, \
                 then 4500"
            ));
        }
    }
    let (code, body) = p.poll(order, &token).await;
    assert_eq!((code, &body["status"]), (200, &json!("canceled")), "{body}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_badly_signed_tokens_are_refused_in_both_clients() {
    let (vhost, status) = status_alone(&[]).await;
    let (user, _) = player_and_order();

    // Expired: error 109. Neither script has a getToken to refresh it with, so both
    // clients give up with their own code 1 "unauthorized" (no reconnect loop).
    let expired = mint_expired_jwt(TEST_JWT_SECRET, &user, Duration::from_secs(3600));
    let mut clients = start_both(&status.ws_url(), &expired, &user).await;
    for c in &mut clients {
        let (code, reason) = c.wait_disconnected().await;
        let told_109 = c
            .seen
            .iter()
            .any(|l| l.starts_with("error ") && l.contains("109"));
        if (code, reason.as_str()) != (1, "unauthorized") || !told_109 {
            c.fail("expected error 109, then disconnected 1 unauthorized");
        }
        if c.seen.iter().any(|l| l.starts_with("subscribed ")) {
            c.fail("subscribed with an expired token");
        }
    }

    // Signed with another key: error 101, terminal for both.
    let forged = mint_jwt("not-the-secret", &user, Duration::from_secs(600));
    let mut clients = start_both(&status.ws_url(), &forged, &user).await;
    for c in &mut clients {
        let (code, _) = c.wait_disconnected().await;
        if code != 101 || c.seen.iter().any(|l| l.starts_with("subscribed ")) {
            c.fail("expected disconnected 101 without subscribing");
        }
    }
    let _ = status.stop().await;
    vhost.delete().await.expect("vhost deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_window_closes_with_4501_in_both_clients() {
    let (vhost, status) = status_alone(&[("STATUS_TRACKING_WINDOW", "2s")]).await;
    let (user, _) = player_and_order();
    let token = mint_jwt(TEST_JWT_SECRET, &user, Duration::from_secs(600));
    let started = Instant::now();
    let mut clients = start_both(&status.ws_url(), &token, &user).await;
    for c in &mut clients {
        c.wait_subscribed().await;
    }
    for c in &mut clients {
        let (code, reason) = c.wait_disconnected().await;
        if code != 4501 {
            c.fail(&format!("expected 4501, got {code} {reason}"));
        }
        // Terminal: exactly one connection, no reconnect and no second `subscribed`.
        let subscribed = c
            .seen
            .iter()
            .filter(|l| l.starts_with("subscribed "))
            .count();
        if subscribed != 1 {
            c.fail("subscribed more than once: it reconnected");
        }
    }
    assert!(started.elapsed() >= Duration::from_secs(2), "closed early");
    let _ = status.stop().await;
    vhost.delete().await.expect("vhost deleted");
}

/// The next line of `xsolla-sim watch --json`; fails after [`STEP`] showing `so_far`.
async fn next_json(lines: &mut Lines<BufReader<ChildStdout>>, so_far: &[Value]) -> Value {
    let line = match tokio::time::timeout(STEP, lines.next_line()).await {
        Ok(Ok(Some(line))) => line,
        other => panic!(
            "xsolla-sim watch: no next line within {STEP:?} ({other:?}); so far: {so_far:?}. \
             (`done` comes from the worker's `granted` order event in xsolla.order-events)"
        ),
    };
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Runs the real `xsolla-sim` binary to completion.
async fn xsolla_sim(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xsolla-sim"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("xsolla-sim runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xsolla_sim_jwt_is_accepted_and_watch_prints_paid_then_done() {
    let p = Pipeline::start(&[], Faults::none()).await;
    let (user, order) = player_and_order();
    let out = xsolla_sim(
        &["jwt", "--user", &user, "--ttl", "5m"],
        &[("STATUS_JWT_HS256_SECRET", TEST_JWT_SECRET)],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let mut watch = Command::new(env!("CARGO_BIN_EXE_xsolla-sim"));
    watch
        .args([
            "watch",
            "--url",
            &p.status.ws_url(),
            "--json",
            "--for",
            "60s",
        ])
        .args(["--project", &PROJECT.to_string(), "--user", &user])
        .args(["--order", &order.to_string(), "--token", &token])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut child = watch.spawn().expect("xsolla-sim watch runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut events: Vec<Value> = Vec::new();
    let first = next_json(&mut lines, &events).await;
    assert_eq!(first["event"], "connected", "{first}");
    assert_eq!(
        first["channels"].as_array().map(Vec::len),
        Some(1),
        "{first}"
    );

    p.send(order_paid(order, &user)).await;
    loop {
        let event = next_json(&mut lines, &events).await;
        events.push(event.clone());
        if event.get("end").is_some() {
            break;
        }
    }
    let exit = tokio::time::timeout(STEP, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?} after {events:?}");
    let seen: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "status" && e["order_id"] == json!(order))
        .filter_map(|e| e["status"].as_str())
        .collect();
    assert_eq!(seen.first(), Some(&"paid"), "{events:?}");
    assert_eq!(seen.last(), Some(&"done"), "{events:?}");
    let end = events.last().unwrap();
    assert_eq!(
        (&end["end"], &end["status"]),
        (&json!("final"), &json!("done")),
        "{end}"
    );
    assert!(events.iter().all(|e| e["at"].is_string()), "{events:?}");

    // The same minted token reads the order over the short-poll endpoint.
    let (code, body) = p.poll(order, &token).await;
    assert_eq!((code, &body["status"]), (200, &json!("done")), "{body}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xsolla_sim_watch_exit_codes_tell_window_from_refusal() {
    let (vhost, status) = status_alone(&[("STATUS_TRACKING_WINDOW", "2s")]).await;
    let (user, order) = player_and_order();
    let out = xsolla_sim(
        &["jwt", "--user", &user],
        &[("STATUS_JWT_HS256_SECRET", TEST_JWT_SECRET)],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    // Accepted by the short-poll too: an unknown order is 404, not 401.
    let response = reqwest::Client::new()
        .get(status.url(&format!("/api/v2/project/{PROJECT}/order/{order}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    let ws_url = status.ws_url();
    let project = PROJECT.to_string();
    let watch = |token: String| {
        let args = [
            "watch",
            "--url",
            &ws_url,
            "--json",
            "--for",
            "30s",
            "--project",
            &project,
            "--user",
            &user,
            "--token",
            &token,
        ]
        .map(str::to_owned);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = xsolla_sim(&args, &[]).await;
            let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect();
            (out.status.code(), lines)
        }
    };

    // Connected, nothing to show, then the window: exit 3 ("no final status").
    let (code, lines) = watch(token).await;
    assert_eq!(code, Some(3), "{lines:?}");
    assert_eq!(
        lines.first().map(|l| &l["event"]),
        Some(&json!("connected"))
    );
    let end = lines.last().unwrap();
    assert_eq!(
        (&end["end"], &end["code"]),
        (&json!("closed"), &json!(4501)),
        "{end}"
    );

    // An expired token: refused with 109, exit 1.
    let expired = mint_expired_jwt(TEST_JWT_SECRET, &user, Duration::from_secs(3600));
    let (code, lines) = watch(expired).await;
    assert_eq!(code, Some(1), "{lines:?}");
    let end = lines.last().unwrap();
    assert_eq!(
        (&end["end"], &end["code"]),
        (&json!("refused"), &json!(109)),
        "{end}"
    );

    let _ = status.stop().await;
    vhost.delete().await.expect("vhost deleted");
}
