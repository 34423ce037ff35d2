//! What the operator commands (`worker dlq`, `worker order`) share about talking to the
//! broker: a connection with a confirm-mode channel opened within a deadline, every later
//! operation within the same deadline, and how those failures read. Each command keeps its
//! own error type (and so its own exit codes) through [`BrokerFailure`].

use std::{future::Future, time::Duration};

use lapin::{Channel, Connection, options::ConfirmSelectOptions};
use shared::amqp;

/// The broker failures every operator command reports, built into its own error type.
pub(crate) trait BrokerFailure: Sized {
    /// No node answered (`url` with its password hidden).
    fn unreachable(url: String, reason: String) -> Self;
    /// `what` got no answer within `after`.
    fn timeout(what: &'static str, after: Duration) -> Self;
    /// `what` failed on the broker's side.
    fn broker(what: &'static str, source: lapin::Error) -> Self;
}

/// Awaits `op` for at most `after`, naming `what` in the error.
pub(crate) async fn within<T, E: BrokerFailure>(
    after: Duration,
    what: &'static str,
    op: impl Future<Output = lapin::Result<T>>,
) -> Result<T, E> {
    match tokio::time::timeout(after, op).await {
        Ok(result) => result.map_err(|source| E::broker(what, source)),
        Err(_) => Err(E::timeout(what, after)),
    }
}

/// Connects (connection named `name`) and opens a confirm-mode channel, each step within
/// `timeout`; the error names the URL with its password hidden.
pub(crate) async fn open_confirmed<E: BrokerFailure>(
    brokers: impl Into<amqp::Brokers>,
    name: &str,
    timeout: Duration,
) -> Result<(Connection, Channel), E> {
    let brokers: amqp::Brokers = brokers.into();
    let unreachable = |reason: String| E::unreachable(brokers.redacted(), reason);
    let connection = match tokio::time::timeout(timeout, brokers.connect(name)).await {
        Ok(Ok((connection, _))) => connection,
        Ok(Err(error)) => return Err(unreachable(error.to_string())),
        Err(_) => return Err(unreachable(format!("no answer within {timeout:?}"))),
    };
    let channel = within(timeout, "opening a channel", connection.create_channel()).await?;
    within(
        timeout,
        "enabling publisher confirms",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await?;
    Ok((connection, channel))
}
