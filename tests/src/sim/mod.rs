//! `xsolla-sim` as a library: build Xsolla webhooks from the reference payloads, sign them,
//! and send them the way Xsolla does (its retry schedule, optionally time-scaled), one at a
//! time or as load with throughput and latency percentiles; mint player JWTs and watch
//! orders on `order-status` like a game client ([`jwt`], [`watch`]).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use tests::sim::{Kind, Overrides, Policy, Sender, build};
//!
//! let webhook = build(Kind::OrderPaid, &Overrides { order_id: Some(42), ..Default::default() }, "secret")?;
//! let policy = Policy { retry: true, time_scale: 0.001 };
//! let sender = Sender::new("http://127.0.0.1:8080/webhooks/xsolla", policy, 1, Duration::from_secs(10))?;
//! let delivery = sender.deliver(&webhook).await;
//! assert!(delivery.acknowledged());
//! # Ok(()) }
//! ```

pub mod jwt;
pub mod lean;
pub mod load;
pub mod report;
pub mod schedule;
pub mod send;
pub mod vhost;
pub mod watch;
pub mod webhook;

pub use load::{Ids, LoadPlan, new_run_id, planned_offset};
pub use report::{Latency, LoadReport};
pub use schedule::{Verdict, classify, retry_delays};
pub use send::{Answer, Attempt, Delivery, Outcome, Policy, Sender};
pub use webhook::{BuildError, Kind, Mode, Overrides, Template, Webhook, build};
