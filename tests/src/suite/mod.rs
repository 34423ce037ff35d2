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
