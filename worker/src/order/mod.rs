//! Order events on the worker's side: the events it publishes as it settles deliveries
//! ([`event`], [`record`]), and `worker order`, the operator's view of an order's timeline.

pub mod event;
pub mod record;

pub use record::Recorder;
