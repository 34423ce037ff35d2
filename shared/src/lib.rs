//! Pieces the ingress and the worker share: the webhook model and signature, the AMQP
//! topology, message envelope and confirmed publishing, connection supervision, options,
//! telemetry and the ops endpoints.

pub mod amqp;
pub mod config;
pub mod envelope;
pub mod ops;
pub mod order_events;
pub mod publish;
pub mod signature;
pub mod telemetry;
pub mod topology;
pub mod webhook;
