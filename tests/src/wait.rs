//! Waiting on conditions with a deadline, never a fixed sleep: a test is as fast as the
//! system under test and fails with a clear message when the deadline passes.

use std::{fmt::Display, future::Future, time::Duration};

/// How often [`until`] and [`value`] look again.
const POLL: Duration = Duration::from_millis(20);

/// Polls `condition` every 20 ms until it is true; errors after `deadline`.
pub async fn until<F, Fut>(deadline: Duration, what: &str, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    value(deadline, what, || {
        let met = condition();
        async move { if met.await { Ok(()) } else { Err("not yet") } }
    })
    .await
}

/// Polls `attempt` every 20 ms until it gives `Ok`, and returns that value; after
/// `deadline`, errors with the last `Err` it gave (what was seen instead).
pub async fn value<T, E, F, Fut>(deadline: Duration, what: &str, attempt: F) -> anyhow::Result<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    value_every(POLL, deadline, what, attempt).await
}

/// [`value`], looking every `every`: for attempts that cost something (a child process).
pub async fn value_every<T, E, F, Fut>(
    every: Duration,
    deadline: Duration,
    what: &str,
    mut attempt: F,
) -> anyhow::Result<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        let last = match attempt().await {
            Ok(value) => return Ok(value),
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= give_up {
            anyhow::bail!("timed out after {deadline:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(every).await;
    }
}
