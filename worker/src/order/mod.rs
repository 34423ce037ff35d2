//! Order events on the worker's side: the events it publishes as it settles deliveries
//! ([`event`], [`record`]), and `worker order`, the operator's view of an order's timeline
//! ([`read`], [`timeline`], [`render`]).
//!
//! `worker order` exits like `worker dlq` ([`crate::dlq::exit`]): 0 every order has events
//! within `--since`; 1 some order has none (the others are still printed); 2 usage or
//! configuration; 3 broker unreachable, refused or timed out; 4 the stream is missing.

pub mod args;
pub mod error;
pub mod event;
pub mod read;
pub mod record;
pub mod render;
pub mod timeline;

use std::process::ExitCode;

use time::OffsetDateTime;

pub use args::OrderArgs;
pub use error::OrderError;
pub use read::StreamConnection;
pub use record::Recorder;
pub use timeline::{Standing, Timeline, standing};

use crate::dlq::exit;

/// The timelines of `order_ids` (each id once, in the order given), read from `url` over
/// the last `since`; ids no event names are left out.
pub async fn timelines(
    conn: &StreamConnection,
    order_ids: &[String],
    since: std::time::Duration,
) -> Result<Vec<Timeline>, OrderError> {
    let start = read::start_time(OffsetDateTime::now_utc(), since);
    let mut found = conn.events(order_ids, start).await?;
    Ok(unique(order_ids)
        .into_iter()
        .filter_map(|id| Timeline::new(&id, found.remove(&id)?))
        .collect())
}

fn unique(ids: &[String]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for id in ids {
        if !seen.contains(id) {
            seen.push(id.clone());
        }
    }
    seen
}

/// Runs `worker order`; the exit code is one of [`exit`].
pub async fn main(args: OrderArgs) -> ExitCode {
    let brokers = match args.broker.brokers() {
        Ok(brokers) => brokers,
        Err(problem) => {
            eprintln!("worker order: {problem}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let conn = match StreamConnection::open(brokers, args.broker.timeout).await {
        Ok(conn) => conn,
        Err(error) => return fail(&error),
    };
    let result = timelines(&conn, &args.order_ids, args.since).await;
    conn.close().await;
    let timelines = match result {
        Ok(t) => t,
        Err(error) => return fail(&error),
    };
    print(&timelines, args.json, args.order_ids.len() > 1);
    let missing: Vec<String> = unique(&args.order_ids)
        .into_iter()
        .filter(|id| !timelines.iter().any(|t| &t.order_id == id))
        .collect();
    if missing.is_empty() {
        return ExitCode::from(exit::OK);
    }
    let since = humantime::format_duration(args.since);
    for id in missing {
        eprintln!(
            "worker order: no event names order {} within --since {since}",
            render::printable(&id)
        );
    }
    ExitCode::from(exit::PARTIAL)
}

fn print(timelines: &[Timeline], json: bool, several: bool) {
    if json {
        let doc = if several {
            serde_json::Value::Array(timelines.iter().map(render::timeline_json).collect())
        } else {
            match timelines.first() {
                Some(t) => render::timeline_json(t),
                // One id, no events: nothing on stdout, the reason on stderr.
                None => return,
            }
        };
        println!("{doc}");
    } else {
        let blocks: Vec<String> = timelines.iter().map(render::timeline_text).collect();
        print!("{}", blocks.join("\n"));
    }
}

fn fail(error: &OrderError) -> ExitCode {
    eprintln!("worker order: {error}");
    ExitCode::from(error.exit_code())
}
