//! `worker dlq …`: list, show, replay and purge the messages parked in
//! `xsolla.fulfillment.dlq`, without the management UI.
//!
//! The logic lives in library functions ([`list`], [`find`], [`replay()`], [`purge()`]) that
//! take a channel, so tests drive them directly; [`main`] is a thin CLI over them. How the
//! queue is read without taking anything away is explained in [`read`].
//!
//! Ids: a message the worker parked carries `x-dlq-id` (a UUID, unique per parked copy).
//! One RabbitMQ parked itself (work queue `x-delivery-limit` exceeded) has none, and gets a
//! derived id instead ([`message::derived_id`]: 16 hex digits of a SHA-1 over `message_id`,
//! the `x-death` time and the body).
//!
//! Exit codes (also in [`error::exit`]), stable for scripts:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done (an empty selection, e.g. `--type` matching nothing, is done too) |
//! | 1 | partial: unknown ids (then *nothing* was changed), or messages that name no routing key and were left in the DLQ |
//! | 2 | usage or configuration error, or `purge` without `--yes`; nothing was changed |
//! | 3 | broker unreachable, connection lost, or an operation refused or timed out |
//! | 4 | the DLQ (or, for `replay`, the work exchange) does not exist on this vhost |
//!
//! One `worker dlq` command at a time per DLQ: messages another one holds are invisible to
//! it until returned.

pub mod args;
pub mod error;
pub mod escape;
pub mod message;
pub mod pretty;
pub mod purge;
pub mod read;
pub mod render;
pub mod replay;

use std::{io::Write as _, process::ExitCode};

pub use args::DlqArgs;
pub use error::{DlqError, exit};
pub use message::{DeadLetter, ParkReason};
pub use purge::{PurgeOptions, PurgeReport, purge};
pub use read::{DlqConnection, ListOptions, Listing, find, list, queue_count};
pub use replay::{ReplayOptions, ReplayReport, replay};

use args::DlqCommand;

/// Which messages `replay` and `purge` act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Exactly these ids; all must exist or nothing is done.
    Ids(Vec<String>),
    /// Everything, or everything of one notification type.
    All { notification_type: Option<String> },
}

impl Selection {
    /// Whether `message` is selected.
    pub fn matches(&self, message: &DeadLetter) -> bool {
        match self {
            Selection::Ids(ids) => ids.contains(&message.id),
            Selection::All { notification_type } => notification_type
                .as_deref()
                .is_none_or(|t| message.is_type(t)),
        }
    }

    /// The ids in `wanted` that no message in `found` has, in the order given, once each.
    pub fn unknown<'a>(
        wanted: &[String],
        found: impl IntoIterator<Item = &'a DeadLetter>,
    ) -> Vec<String> {
        let found: Vec<&str> = found.into_iter().map(|m| m.id.as_str()).collect();
        let mut unknown: Vec<String> = Vec::new();
        for id in wanted {
            if !found.contains(&id.as_str()) && !unknown.contains(id) {
                unknown.push(id.clone());
            }
        }
        unknown
    }
}

/// Runs one `worker dlq` command; the exit code is one of [`exit`].
pub async fn main(args: DlqArgs) -> ExitCode {
    let brokers = match args.broker.brokers() {
        Ok(brokers) => brokers,
        Err(problem) => {
            eprintln!("worker dlq: {problem}");
            return ExitCode::from(exit::USAGE);
        }
    };
    if let DlqCommand::Purge(purge) = &args.command
        && !purge.yes
    {
        eprintln!(
            "worker dlq purge deletes messages for good: add --yes to confirm (nothing was changed)"
        );
        return ExitCode::from(exit::USAGE);
    }
    let conn = match DlqConnection::open(brokers, args.broker.timeout).await {
        Ok(conn) => conn,
        Err(error) => return fail(&error),
    };
    let code = match run(&conn, &args).await {
        Ok(code) => ExitCode::from(code),
        Err(error) => fail(&error),
    };
    conn.close().await;
    code
}

fn fail(error: &DlqError) -> ExitCode {
    eprintln!("worker dlq: {error}");
    ExitCode::from(error.exit_code())
}

async fn run(conn: &DlqConnection, args: &DlqArgs) -> Result<u8, DlqError> {
    let channel = &conn.channel;
    let timeout = args.broker.timeout;
    match &args.command {
        DlqCommand::List(a) => {
            let options = ListOptions {
                limit: a.limit,
                notification_type: a.notification_type.clone(),
            };
            let listing = list(channel, timeout, &options).await?;
            if a.json {
                print_json(&render::listing_json(&listing));
            } else {
                print!("{}", render::listing_text(&listing));
            }
            Ok(exit::OK)
        }
        DlqCommand::Show(a) => {
            let copies = find(channel, timeout, &a.id).await?;
            let Some(first) = copies.first() else {
                eprintln!(
                    "worker dlq: no message with id {} in {}",
                    a.id,
                    shared::topology::DLQ
                );
                return Ok(exit::PARTIAL);
            };
            if a.raw {
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(&first.body).and_then(|()| stdout.flush());
            } else if a.json {
                print_json(&render::show_json(first, copies.len()));
            } else {
                print!("{}", render::show_text(first, copies.len()));
            }
            Ok(exit::OK)
        }
        DlqCommand::Replay(a) => {
            let options = ReplayOptions {
                selection: a.select.selection(),
                dry_run: a.dry_run,
                rate: a.rate,
                timeout,
            };
            let json = a.json;
            let report = replay(channel, &options, |m| {
                if !json {
                    println!("{}", render::replay_line(m, false));
                }
            })
            .await?;
            if json {
                print_json(&render::replay_json(&report));
            } else {
                if report.dry_run {
                    for m in &report.replayed {
                        println!("{}", render::replay_line(m, true));
                    }
                }
                for m in &report.unroutable {
                    eprintln!(
                        "worker dlq: {} names no usable routing key (none, or longer than AMQP's 255 bytes); left in the DLQ",
                        escape::line(&m.id)
                    );
                }
                let verb = if report.dry_run {
                    "would replay"
                } else {
                    "replayed"
                };
                println!(
                    "{verb} {} message(s) to {}; {} in {}{}",
                    report.replayed.len(),
                    shared::topology::EXCHANGE,
                    report.remaining,
                    shared::topology::DLQ,
                    if report.dry_run {
                        " (dry run: nothing was moved)"
                    } else {
                        ""
                    }
                );
            }
            Ok(report_unknown(
                &report.unknown_ids,
                "replayed",
                !report.unroutable.is_empty(),
            ))
        }
        DlqCommand::Purge(a) => {
            let options = PurgeOptions {
                selection: a.select.selection(),
                timeout,
            };
            let json = a.json;
            let report = purge(channel, &options, |m| {
                if !json {
                    println!("{}", render::purge_line(m));
                }
            })
            .await?;
            if json {
                print_json(&render::purge_json(&report));
            } else {
                println!(
                    "purged {} message(s); {} in {}",
                    report.purged.len(),
                    report.remaining,
                    shared::topology::DLQ
                );
            }
            Ok(report_unknown(&report.unknown_ids, "purged", false))
        }
    }
}

/// Names unknown ids on stderr; the exit code for the outcome.
fn report_unknown(unknown: &[String], verb: &str, partial: bool) -> u8 {
    if !unknown.is_empty() {
        eprintln!(
            "worker dlq: unknown id(s) {}: not in {}; nothing was {verb}",
            unknown.join(", "),
            shared::topology::DLQ
        );
        return exit::PARTIAL;
    }
    if partial { exit::PARTIAL } else { exit::OK }
}

fn print_json(value: &serde_json::Value) {
    println!("{value}");
}
