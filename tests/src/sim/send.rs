//! Sending webhooks the way Xsolla does: POST, then stop or re-send on its schedule.
//!
//! The retry loop ([`deliver_with`]) is separate from HTTP so its timing can be tested on
//! tokio's paused clock; [`Sender`] plugs a keep-alive reqwest client into it.

use std::{future::Future, time::Duration};

use serde::Serialize;
use tokio::{sync::Semaphore, time::Instant};

use super::{
    schedule::{self, Verdict},
    webhook::{Kind, Webhook},
};

/// One answer, or why there was none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Status(u16),
    /// No HTTP answer: connection refused or reset, timeout.
    NoAnswer(String),
}

impl Answer {
    pub fn status(&self) -> Option<u16> {
        match self {
            Answer::Status(s) => Some(*s),
            Answer::NoAnswer(_) => None,
        }
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Status(s) => write!(f, "HTTP {s}"),
            Answer::NoAnswer(why) => write!(f, "no answer ({why})"),
        }
    }
}

/// One send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// Since the first send.
    #[serde(serialize_with = "as_millis")]
    pub at: Duration,
    /// Request to answer.
    #[serde(serialize_with = "as_millis")]
    pub took: Duration,
    pub answer: Answer,
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A success code: Xsolla considers it delivered.
    Acknowledged,
    /// A no-retry 4xx: Xsolla stops (and may refund the user).
    Refused,
    /// Never acknowledged: the schedule ran out (or retrying was off).
    GaveUp,
}

/// Everything about one webhook's delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub attempts: Vec<Attempt>,
    pub outcome: Outcome,
    /// From the first send until the acknowledging answer arrived.
    #[serde(serialize_with = "opt_as_millis")]
    pub ack_latency: Option<Duration>,
}

impl Delivery {
    pub fn acknowledged(&self) -> bool {
        self.outcome == Outcome::Acknowledged
    }

    /// The last answer's status, if it had one.
    pub fn final_status(&self) -> Option<u16> {
        self.attempts.last().and_then(|a| a.answer.status())
    }
}

/// How to deliver.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Re-send on Xsolla's schedule; off: one send only.
    pub retry: bool,
    /// Multiplies every wait of the schedule (1.0 = real time).
    pub time_scale: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            retry: false,
            time_scale: 1.0,
        }
    }
}

/// Runs Xsolla's delivery loop for a webhook of `kind`, calling `send` for every attempt.
/// `started` is when the delivery counts from (an open-loop load passes the planned send
/// time, so a late start shows up as latency instead of hiding).
pub async fn deliver_with<F, Fut>(
    kind: Kind,
    policy: Policy,
    started: Instant,
    mut send: F,
) -> Delivery
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Answer>,
{
    let delays = if policy.retry {
        schedule::retry_delays(kind)
    } else {
        Vec::new()
    };
    let mut waits = delays.into_iter();
    let mut attempts = Vec::new();
    loop {
        let sent = Instant::now();
        let answer = send().await;
        let now = Instant::now();
        let verdict = schedule::classify(kind, answer.status());
        attempts.push(Attempt {
            at: sent.saturating_duration_since(started),
            took: now - sent,
            answer,
        });
        let outcome = match verdict {
            Verdict::Acknowledged => Outcome::Acknowledged,
            Verdict::Refused => Outcome::Refused,
            Verdict::Retry => match waits.next() {
                Some(wait) => {
                    tokio::time::sleep(schedule::scaled(wait, policy.time_scale)).await;
                    continue;
                }
                None => Outcome::GaveUp,
            },
        };
        let ack_latency = (outcome == Outcome::Acknowledged).then(|| now - started);
        return Delivery {
            attempts,
            outcome,
            ack_latency,
        };
    }
}

/// POSTs webhooks to one URL over a keep-alive connection pool.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    url: String,
    pub policy: Policy,
}

impl Sender {
    /// `pool` idle connections are kept per host (size it to the concurrency, so a load
    /// run reuses connections instead of opening one per request); `timeout` bounds one
    /// attempt, past which it counts as no answer, as at Xsolla.
    pub fn new(
        url: &str,
        policy: Policy,
        pool: usize,
        timeout: Duration,
    ) -> reqwest::Result<Sender> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(pool)
            .timeout(timeout)
            .tcp_nodelay(true)
            .build()?;
        Ok(Sender {
            client,
            url: url.to_owned(),
            policy,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One POST, classified.
    pub async fn attempt(&self, webhook: &Webhook) -> Answer {
        self.attempt_with_body(webhook).await.0
    }

    /// One POST, classified, with the answer's body as [`shown`] text (empty when there was
    /// none): what tells `INVALID_USER` from `INVALID_SIGNATURE`, both 400s.
    pub async fn attempt_with_body(&self, webhook: &Webhook) -> (Answer, String) {
        let sent = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("authorization", &webhook.authorization)
            .body(webhook.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                // Read the body so the connection goes back to the pool.
                let body = response.bytes().await.unwrap_or_default();
                (Answer::Status(status), shown(&body))
            }
            Err(e) => (Answer::NoAnswer(describe(&e)), String::new()),
        }
    }

    /// Delivers `webhook` under this sender's policy, counted from now.
    pub async fn deliver(&self, webhook: &Webhook) -> Delivery {
        self.deliver_from(webhook, Instant::now(), None).await
    }

    /// Delivers counting from `started`; with `slots`, every attempt first takes a permit,
    /// so at most that many requests are in flight while waits between retries hold none.
    pub async fn deliver_from(
        &self,
        webhook: &Webhook,
        started: Instant,
        slots: Option<&Semaphore>,
    ) -> Delivery {
        deliver_with(webhook.kind, self.policy, started, || async {
            let _permit = match slots {
                Some(s) => Some(s.acquire().await.expect("the semaphore is never closed")),
                None => None,
            };
            self.attempt(webhook).await
        })
        .await
    }
}

/// The most of an answer's body that [`shown`] keeps.
pub const BODY_SHOWN: usize = 1024;

/// An answer's body for a terminal: text (invalid UTF-8 replaced), trimmed, cut after
/// [`BODY_SHOWN`] bytes (`…`), control characters escaped (`\u{1b}`), so an endpoint's
/// answer cannot move the cursor or hide a line.
pub fn shown(body: &[u8]) -> String {
    let cut = body.len() > BODY_SHOWN;
    let text = String::from_utf8_lossy(&body[..body.len().min(BODY_SHOWN)]);
    let mut out: String = text
        .trim()
        .chars()
        .flat_map(|c| {
            let escape = c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
            let shown: Vec<char> = if escape {
                c.escape_unicode().collect()
            } else {
                vec![c]
            };
            shown
        })
        .collect();
    if cut {
        out.push('…');
    }
    out
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        // The innermost cause says the most ("connection reset by peer", …).
        let mut source: &dyn std::error::Error = e;
        while let Some(next) = source.source() {
            source = next;
        }
        source.to_string()
    }
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

fn opt_as_millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => as_millis(d, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, collections::VecDeque};

    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    /// Replays `answers` in order, as the endpoint's answers to successive sends.
    async fn run(kind: Kind, retry: bool, answers: &[Option<u16>]) -> Delivery {
        let queue = RefCell::new(answers.iter().copied().collect::<VecDeque<_>>());
        let policy = Policy {
            retry,
            time_scale: 1.0,
        };
        deliver_with(kind, policy, Instant::now(), || {
            let next = queue
                .borrow_mut()
                .pop_front()
                .expect("more sends than answers");
            async move {
                match next {
                    Some(status) => Answer::Status(status),
                    None => Answer::NoAnswer("refused".into()),
                }
            }
        })
        .await
    }

    #[test]
    fn shows_a_body_as_one_safe_line() {
        assert_eq!(
            shown(b"{\"error\":{\"code\":\"INVALID_USER\"}}\n"),
            r#"{"error":{"code":"INVALID_USER"}}"#
        );
        assert_eq!(shown(b""), "");
        assert_eq!(shown(b"a\x1b[2Jb\nc"), "a\\u{1b}[2Jb\\u{a}c");
        assert_eq!(shown(b"\xff"), "\u{fffd}");
        let long = shown(&vec![b'x'; BODY_SHOWN + 10]);
        assert!(long.ends_with('…') && long.len() == BODY_SHOWN + '…'.len_utf8());
    }

    #[tokio::test(start_paused = true)]
    async fn resends_on_xsolla_schedule_until_acknowledged() {
        let d = run(
            Kind::OrderPaid,
            true,
            &[Some(503), None, Some(500), Some(204)],
        )
        .await;
        assert_eq!(d.outcome, Outcome::Acknowledged);
        let at: Vec<_> = d.attempts.iter().map(|a| a.at).collect();
        assert_eq!(at, [Duration::ZERO, 5 * MIN, 10 * MIN, 25 * MIN]);
        assert_eq!(d.ack_latency, Some(25 * MIN));
        assert_eq!(d.final_status(), Some(204));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_twenty_sends() {
        let d = run(Kind::OrderCanceled, true, &[Some(503); 20]).await;
        assert_eq!(d.outcome, Outcome::GaveUp);
        assert_eq!(d.attempts.len(), 20);
        assert_eq!(
            d.attempts[19].at,
            (10 + 105 + 600) * MIN,
            "last send after all 19 waits"
        );
        assert_eq!(d.ack_latency, None);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_once_on_a_no_retry_code() {
        let d = run(Kind::OrderPaid, true, &[Some(409)]).await;
        assert_eq!((d.outcome, d.attempts.len()), (Outcome::Refused, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn sends_once_without_retry() {
        let d = run(Kind::Payment, false, &[Some(503)]).await;
        assert_eq!((d.outcome, d.attempts.len()), (Outcome::GaveUp, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn time_scale_compresses_the_schedule() {
        let queue = RefCell::new(VecDeque::from([503, 503, 503, 201]));
        let policy = Policy {
            retry: true,
            time_scale: 0.001,
        };
        let d = deliver_with(Kind::OrderPaid, policy, Instant::now(), || {
            let s = queue.borrow_mut().pop_front().unwrap();
            async move { Answer::Status(s) }
        })
        .await;
        let at: Vec<_> = d.attempts.iter().map(|a| a.at.as_millis()).collect();
        assert_eq!(at, [0, 300, 600, 1500]);
    }
}
