//! A lean HTTP/1.1 load generator for the benchmarks: one keep-alive TCP connection per
//! slot, each request written with one `write` from a reused buffer, each answer parsed
//! with `httparse` and its body skipped.
//!
//! Why not [`Sender`](super::Sender): on the benchmark machine the load generator shares
//! the two cores with the broker and the service it measures, so whatever CPU it spends
//! is taken from them. reqwest (with hyper's pool, a task per request, a `Delivery` per
//! webhook) cost about 27 µs of CPU per webhook, twice the bare AMQP publisher it is
//! compared with; this costs a fraction of that. Xsolla itself runs elsewhere. It sends
//! once (no retries): the benchmarks count answers, they do not deliver.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use shared::signature;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::Semaphore,
    task::JoinSet,
    time::Instant,
};

use super::{
    Ids,
    load::{LoadPlan, planned_offset},
    report::{LoadReport, Tally},
    schedule::{self, Verdict},
    send::{Answer, Attempt, Delivery, Outcome, Policy},
    webhook::Template,
};

/// Where to POST: an `http://host:port/path` URL taken apart once.
#[derive(Debug, Clone)]
pub struct Target {
    addr: SocketAddr,
    /// `POST <path> HTTP/1.1` and the fixed headers, up to the `Content-Length` value.
    head: Vec<u8>,
}

impl Target {
    /// Accepts `http://<ip>:<port><path>` only (the benchmarks start their services on
    /// loopback addresses; TLS and name lookup would only add cost).
    pub fn new(url: &str) -> anyhow::Result<Target> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow::anyhow!("`{url}`: only http:// URLs"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let addr: SocketAddr = authority
            .parse()
            .map_err(|_| anyhow::anyhow!("`{url}`: the host must be an IP address with a port"))?;
        let path = if path.is_empty() { "/" } else { path };
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\n\
             content-length: "
        );
        Ok(Target {
            addr,
            head: head.into_bytes(),
        })
    }
}

/// One keep-alive connection and its buffers.
struct Connection {
    stream: Option<TcpStream>,
    request: Vec<u8>,
    answer: Vec<u8>,
}

impl Connection {
    fn new() -> Connection {
        Connection {
            stream: None,
            request: Vec::with_capacity(4096),
            answer: vec![0; 4096],
        }
    }

    /// Sends `body` signed with `secret`; the status, or why there is none. A connection
    /// that failed or was closed by the server is dropped and reopened by the next send.
    async fn send(&mut self, target: &Target, body: &[u8], secret: &str) -> Answer {
        let authorization = signature::authorization_header(body, secret);
        self.request.clear();
        self.request.extend_from_slice(&target.head);
        self.request
            .extend_from_slice(format!("{}\r\nauthorization: ", body.len()).as_bytes());
        self.request.extend_from_slice(authorization.as_bytes());
        self.request.extend_from_slice(b"\r\n\r\n");
        self.request.extend_from_slice(body);
        let answer = tokio::time::timeout(TIMEOUT, self.exchange(target)).await;
        match answer {
            Ok(Ok((status, keep))) => {
                if !keep {
                    self.stream = None;
                }
                Answer::Status(status)
            }
            Ok(Err(e)) => {
                self.stream = None;
                Answer::NoAnswer(e.to_string())
            }
            Err(_) => {
                self.stream = None;
                Answer::NoAnswer("timeout".into())
            }
        }
    }

    /// Writes the request and reads one answer: its status and whether the connection
    /// stays open.
    async fn exchange(&mut self, target: &Target) -> std::io::Result<(u16, bool)> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(target.addr).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("just connected");
        stream.write_all(&self.request).await?;
        let mut filled = 0;
        loop {
            if filled == self.answer.len() {
                self.answer.resize(filled * 2, 0);
            }
            let n = stream.read(&mut self.answer[filled..]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            filled += n;
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            let parsed = response
                .parse(&self.answer[..filled])
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let httparse::Status::Complete(head_len) = parsed else {
                continue;
            };
            let status = response.code.unwrap_or(0);
            let mut body_len = 0usize;
            let mut keep = true;
            for h in response.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    body_len = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                        .ok_or_else(|| std::io::Error::other("bad content-length"))?;
                } else if h.name.eq_ignore_ascii_case("connection") {
                    keep = !h.value.eq_ignore_ascii_case(b"close");
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    // Never sent by the services measured; reading it is not worth the code.
                    return Err(std::io::Error::other("chunked answers are not supported"));
                }
            }
            // Skip the body (error answers carry a small JSON one).
            let mut rest = (head_len + body_len).saturating_sub(filled);
            while rest > 0 {
                let take = rest.min(self.answer.len());
                let n = stream.read(&mut self.answer[..take]).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                rest -= n;
            }
            return Ok((status, keep));
        }
    }
}

/// Bounds one request, as [`Sender`](super::Sender)'s timeout does.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One send as the reports count it.
fn delivery(template: &Template, answer: Answer, planned: Instant, sent: Instant) -> Delivery {
    let now = Instant::now();
    let outcome = match schedule::classify(template.kind(), answer.status()) {
        Verdict::Acknowledged => Outcome::Acknowledged,
        Verdict::Refused => Outcome::Refused,
        Verdict::Retry => Outcome::GaveUp,
    };
    Delivery {
        ack_latency: (outcome == Outcome::Acknowledged).then(|| now - planned),
        attempts: vec![Attempt {
            at: sent.saturating_duration_since(planned),
            took: now - sent,
            answer,
        }],
        outcome,
    }
}

/// Sends webhooks from `template`, signed with `secret`, to `target` as `plan` says:
/// closed loop (each of `concurrency` connections sends its next webhook when its last
/// one is answered) or open loop at `plan.rate` (latency from each planned start, at most
/// `concurrency` in flight). Answers are counted as [`super::load::run`] counts them.
pub async fn run(
    target: &Target,
    template: &Template,
    secret: &str,
    plan: &LoadPlan,
) -> LoadReport {
    let ids = Arc::new(Ids::new(plan.run_id));
    let template = Arc::new(template.clone());
    let secret: Arc<str> = secret.into();
    let concurrency = plan.concurrency.max(1);
    let started = Instant::now();
    let end = started + plan.duration;
    let tally = match plan.rate {
        None => {
            let mut tasks = JoinSet::new();
            for _ in 0..concurrency {
                let (target, template) = (target.clone(), template.clone());
                let (secret, ids) = (secret.clone(), ids.clone());
                tasks.spawn(async move {
                    // Each connection tallies alone; the tallies are merged at the end.
                    let mut tally = Tally::default();
                    let mut connection = Connection::new();
                    while Instant::now() < end {
                        let sent = Instant::now();
                        let body = template.body(&ids.next());
                        let answer = connection.send(&target, &body, &secret).await;
                        tally
                            .record_at(&delivery(&template, answer, sent, sent), started.elapsed());
                    }
                    tally
                });
            }
            let mut tally = Tally::default();
            while let Some(part) = tasks.join_next().await {
                tally.merge(&part.expect("a load task never panics"));
            }
            tally
        }
        Some(rate) => {
            let mut tasks = JoinSet::new();
            let tally = Arc::new(Mutex::new(Tally::default()));
            let slots = Arc::new(Semaphore::new(concurrency));
            let idle = Arc::new(Mutex::new(
                (0..concurrency)
                    .map(|_| Connection::new())
                    .collect::<Vec<_>>(),
            ));
            for i in 0u64.. {
                let at = started + planned_offset(i, rate);
                if at >= end {
                    break;
                }
                tokio::time::sleep_until(at).await;
                if slots.available_permits() == 0 {
                    tally.lock().expect("tally lock").waited_for_slot += 1;
                }
                let body = template.body(&ids.next());
                let (target, template, secret) = (target.clone(), template.clone(), secret.clone());
                let (slots, idle, tally) = (slots.clone(), idle.clone(), tally.clone());
                tasks.spawn(async move {
                    let _slot = slots.acquire().await.expect("never closed");
                    let mut connection = idle
                        .lock()
                        .expect("pool lock")
                        .pop()
                        .expect("a permit guarantees an idle connection");
                    let sent = Instant::now();
                    let answer = connection.send(&target, &body, &secret).await;
                    let delivery = delivery(&template, answer, at, sent);
                    idle.lock().expect("pool lock").push(connection);
                    let settled = started.elapsed();
                    tally
                        .lock()
                        .expect("tally lock")
                        .record_at(&delivery, settled);
                });
                // Reap finished tasks as we go so a long run does not hold them all.
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
            tally.lock().expect("tally lock").clone()
        }
    };
    LoadReport::new(
        plan,
        template.kind(),
        Policy::default(),
        started.elapsed(),
        &tally,
    )
}
