//! `FulfilmentMode::read` (the worker's pruned tree) against the full `serde_json::Value`
//! tree and `FulfilmentMode::fulfilment`, in both modes: the same answer on every input
//! (equal when the body is a JSON object; both refusing it otherwise).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shared::webhook::{FulfilmentMode, WebhookError};

fuzz_target!(|data: &[u8]| {
    let full = serde_json::from_slice::<Value>(data);
    for mode in [FulfilmentMode::default(), FulfilmentMode { payments: true }] {
        let pruned = mode.read(data);
        match &full {
            Ok(v) if v.is_object() => assert_eq!(pruned, mode.fulfilment(v), "{mode:?}"),
            Ok(_) | Err(_) => assert!(
                matches!(pruned, Err(WebhookError::NotJson(_))),
                "{mode:?}: the full tree refuses it ({full:?}), the pruned one reads {pruned:?}"
            ),
        }
    }
});
