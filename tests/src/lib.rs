//! Test support for xsolla-bridge: a real demo inventory service, RabbitMQ isolation
//! helpers (a vhost per test, a private broker node for tests that stop it), signed
//! Xsolla fixtures and the `xsolla-sim` sender.

pub mod bins;
pub mod fixtures;
pub mod ingress_harness;
pub mod inventory;
pub mod logs;
pub mod rabbit;
pub mod sim;
pub mod status_harness;
pub mod suite;
pub mod wait;
pub mod worker_harness;

pub use bins::bin_path;
