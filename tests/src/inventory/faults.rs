//! Fault switches of the demo inventory service and the per-call draw that applies them.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default `Retry-After` (seconds) sent with an injected 429.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 1;
/// Default hang (milliseconds) of an injected timeout before it answers 504.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// Fault switches, settable at start-up, through [`super::InventoryHandle::set_faults`]
/// or over HTTP with `PUT`/`PATCH /_admin/faults`.
///
/// The five `*_share` style fields are fractions of calls (0.0–1.0). Their sum must not
/// exceed 1.0: one random draw per call picks at most one fault, so a share is exactly
/// the expected fraction of calls that get that fault, whatever the other shares are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Answer 503 to every contract call (admin and health endpoints keep working):
    /// the game is in a maintenance window.
    pub down: bool,
    /// Share of calls answered 503 before anything is applied.
    pub fail_5xx: f64,
    /// Share of calls answered 429 with `Retry-After: retry_after_secs`.
    pub fail_429: f64,
    /// Value of the `Retry-After` header on injected 429s, in seconds.
    pub retry_after_secs: u64,
    /// Share of calls that hang for `timeout_ms` and then answer 504, applying nothing.
    pub timeout: f64,
    /// How long an injected timeout hangs, in milliseconds.
    pub timeout_ms: u64,
    /// Share of calls answered 400 `{"error":"injected"}` (a permanent failure for the worker).
    pub fail_4xx: f64,
    /// Share of calls whose effect is applied (and stored as the key's result) but whose
    /// answer is replaced by a 503: a response lost on the way back.
    pub fail_after_apply: f64,
    /// SKUs the game refuses with 422 `{"error":"unknown_sku"}`.
    pub rejected_skus: BTreeSet<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            down: false,
            fail_5xx: 0.0,
            fail_429: 0.0,
            retry_after_secs: DEFAULT_RETRY_AFTER_SECS,
            timeout: 0.0,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            fail_4xx: 0.0,
            fail_after_apply: 0.0,
            rejected_skus: BTreeSet::new(),
        }
    }
}

/// A fault configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultsError {
    /// A share is not a number in 0.0–1.0.
    #[error("fault share `{name}` must be between 0.0 and 1.0, got {value}")]
    ShareOutOfRange {
        /// Field name.
        name: &'static str,
        /// Rejected value.
        value: f64,
    },
    /// The shares add up to more than every call.
    #[error("fault shares add up to {0}, more than 1.0")]
    SharesExceedOne(f64),
}

impl Faults {
    /// No faults at all (the same as `Faults::default()`).
    pub fn none() -> Self {
        Self::default()
    }

    /// The hang of an injected timeout.
    pub fn timeout_duration(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    fn shares(&self) -> [(&'static str, f64, FaultAction); 5] {
        // The order is part of reproducibility: the same seed gives the same sequence only
        // if the bands of the single draw are laid out the same way every time.
        [
            ("fail_5xx", self.fail_5xx, FaultAction::Fail5xx),
            ("fail_429", self.fail_429, FaultAction::Fail429),
            ("timeout", self.timeout, FaultAction::Timeout),
            ("fail_4xx", self.fail_4xx, FaultAction::Fail4xx),
            (
                "fail_after_apply",
                self.fail_after_apply,
                FaultAction::FailAfterApply,
            ),
        ]
    }

    /// Checks every share is in 0.0–1.0 and that they add up to at most 1.0.
    pub fn validate(&self) -> Result<(), FaultsError> {
        let mut sum = 0.0;
        for (name, value, _) in self.shares() {
            if !(0.0..=1.0).contains(&value) {
                return Err(FaultsError::ShareOutOfRange { name, value });
            }
            sum += value;
        }
        // A little slack so that e.g. 0.1 + 0.2 + 0.7 is accepted despite rounding.
        if sum > 1.0 + 1e-9 {
            return Err(FaultsError::SharesExceedOne(sum));
        }
        Ok(())
    }

    /// Maps a uniform draw in `[0, 1)` to the fault it selects.
    pub(crate) fn pick(&self, draw: f64) -> FaultAction {
        let mut upper = 0.0;
        for (_, share, action) in self.shares() {
            upper += share;
            if draw < upper {
                return action;
            }
        }
        FaultAction::None
    }
}

/// A partial update of [`Faults`] (`PATCH /_admin/faults`): absent fields are left as they are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultsPatch {
    /// See [`Faults::down`].
    pub down: Option<bool>,
    /// See [`Faults::fail_5xx`].
    pub fail_5xx: Option<f64>,
    /// See [`Faults::fail_429`].
    pub fail_429: Option<f64>,
    /// See [`Faults::retry_after_secs`].
    pub retry_after_secs: Option<u64>,
    /// See [`Faults::timeout`].
    pub timeout: Option<f64>,
    /// See [`Faults::timeout_ms`].
    pub timeout_ms: Option<u64>,
    /// See [`Faults::fail_4xx`].
    pub fail_4xx: Option<f64>,
    /// See [`Faults::fail_after_apply`].
    pub fail_after_apply: Option<f64>,
    /// Replaces the whole rejected set. See [`Faults::rejected_skus`].
    pub rejected_skus: Option<BTreeSet<String>>,
}

impl FaultsPatch {
    /// Returns `base` with the fields present in this patch replaced.
    pub fn applied_to(&self, base: &Faults) -> Faults {
        let mut f = base.clone();
        let p = self.clone();
        f.down = p.down.unwrap_or(f.down);
        f.fail_5xx = p.fail_5xx.unwrap_or(f.fail_5xx);
        f.fail_429 = p.fail_429.unwrap_or(f.fail_429);
        f.retry_after_secs = p.retry_after_secs.unwrap_or(f.retry_after_secs);
        f.timeout = p.timeout.unwrap_or(f.timeout);
        f.timeout_ms = p.timeout_ms.unwrap_or(f.timeout_ms);
        f.fail_4xx = p.fail_4xx.unwrap_or(f.fail_4xx);
        f.fail_after_apply = p.fail_after_apply.unwrap_or(f.fail_after_apply);
        if let Some(skus) = p.rejected_skus {
            f.rejected_skus = skus;
        }
        f
    }
}

/// What the draw of one call decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FaultAction {
    None,
    Fail5xx,
    Fail429,
    Timeout,
    Fail4xx,
    FailAfterApply,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_follow_the_shares() {
        let f = Faults {
            fail_5xx: 0.25,
            fail_429: 0.25,
            fail_after_apply: 0.5,
            ..Faults::default()
        };
        f.validate().unwrap();
        assert_eq!(f.pick(0.0), FaultAction::Fail5xx);
        assert_eq!(f.pick(0.3), FaultAction::Fail429);
        assert_eq!(f.pick(0.6), FaultAction::FailAfterApply);
        assert_eq!(Faults::default().pick(0.0), FaultAction::None);
    }

    #[test]
    fn rejects_bad_shares() {
        let over = Faults {
            fail_5xx: 0.7,
            timeout: 0.7,
            ..Faults::default()
        };
        assert!(matches!(
            over.validate(),
            Err(FaultsError::SharesExceedOne(_))
        ));
        let nan = Faults {
            fail_4xx: f64::NAN,
            ..Faults::default()
        };
        assert!(nan.validate().is_err());
    }

    #[test]
    fn patch_keeps_absent_fields() {
        let base = Faults {
            fail_5xx: 0.5,
            rejected_skus: ["a".to_string()].into(),
            ..Faults::default()
        };
        let patched: FaultsPatch = serde_json::from_str(r#"{"rejected_skus":[]}"#).unwrap();
        let f = patched.applied_to(&base);
        assert_eq!(f.fail_5xx, 0.5);
        assert!(f.rejected_skus.is_empty());
    }
}
