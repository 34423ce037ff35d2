//! What the end-to-end fault suites share (`tests/tests/fault_suite.rs` on one broker node,
//! `tests/tests/cluster_suite.rs` on a three-node cluster): the orders and how they are
//! sent ([`plan`]), the real binaries as child processes ([`procs`], [`system`]), the end of
//! a run ([`settle`]), the verdict ([`verdict`]) and how long a fault was felt
//! ([`outage`]).

pub mod outage;
pub mod plan;
pub mod procs;
pub mod settle;
pub mod system;
pub mod verdict;

/// A suite's tuning variable `name`, parsed; `None` if unset. A value that does not parse
/// stops the suite with a message naming it.
pub fn env_var<T: std::str::FromStr>(name: &str) -> Option<T> {
    let raw = std::env::var(name).ok()?;
    Some(
        raw.parse()
            .unwrap_or_else(|_| panic!("{name}={raw} is not valid")),
    )
}
