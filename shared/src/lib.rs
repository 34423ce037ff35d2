//! Pieces the ingress and the worker share: the webhook model and signature, the AMQP
//! topology, message envelope and confirmed publishing, connection supervision, options,
//! telemetry, the ops endpoints and the hardened HTTP server (`serve`).

pub mod amqp;
pub mod config;
pub mod envelope;
pub mod ops;
pub mod order_events;
pub mod publish;
pub mod serve;
pub mod signature;
pub mod telemetry;
pub mod terminal;
pub mod topology;
pub mod webhook;
