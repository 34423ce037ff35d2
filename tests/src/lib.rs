//! Test support for xsolla-bridge: a real demo inventory service, RabbitMQ isolation
//! helpers (a vhost per test, a private broker node for tests that stop it), signed
//! Xsolla fixtures and the `xsolla-sim` sender.

pub mod bins;
pub mod fixtures;
pub mod ingress_harness;
pub mod inventory;
pub mod rabbit;
pub mod wait;
pub use bins::bin_path;
pub mod sim;
pub mod worker_harness;
