//! `worker dlq …`: placeholder until the ops CLI lands (owned by its own work item).

use std::process::ExitCode;

/// Options of `worker dlq`.
#[derive(Debug, Clone, clap::Args)]
pub struct DlqArgs {}

/// Runs a `worker dlq` command.
pub async fn main(_args: DlqArgs) -> ExitCode {
    eprintln!("worker dlq: not implemented yet");
    ExitCode::from(2)
}
