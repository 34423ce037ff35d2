//! Waiting on conditions with a deadline, never a fixed sleep: a test is as fast as the
//! system under test and fails with a clear message when the deadline passes.

use std::{future::Future, time::Duration};

/// Polls `condition` every 20 ms until it is true; errors after `deadline`.
pub async fn until<F, Fut>(deadline: Duration, what: &str, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        if condition().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= give_up {
            anyhow::bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
