//! Log lines that anyone on the internet can cause, at most once a minute per key, with a
//! count of the ones left out: a flood of bad requests must not flood the alerts.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Keys tracked at most; past it, new keys share one slot (an attacker can make keys up).
const MAX_KEYS: usize = 256;

/// Decides which of a stream of log events to write.
#[derive(Debug)]
pub struct LogLimit<K> {
    every: Duration,
    slots: Mutex<HashMap<Option<K>, Slot>>,
}

#[derive(Debug)]
struct Slot {
    logged_at: Instant,
    suppressed: u64,
}

impl<K: std::hash::Hash + Eq + Clone> LogLimit<K> {
    pub fn new(every: Duration) -> LogLimit<K> {
        LogLimit {
            every,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(n)` if the event for `key` should be logged now, `n` being how many were left
    /// out since its last line; `None` to leave this one out.
    pub fn check(&self, key: &K, now: Instant) -> Option<u64> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut slot_key = Some(key.clone());
        if !slots.contains_key(&slot_key) && slots.len() >= MAX_KEYS {
            // Forget keys quiet for a whole period (their next event logs anyway).
            slots.retain(|_, s| now.duration_since(s.logged_at) < self.every);
            if slots.len() >= MAX_KEYS {
                slot_key = None;
            }
        }
        match slots.get_mut(&slot_key) {
            Some(slot) if now.duration_since(slot.logged_at) < self.every => {
                slot.suppressed += 1;
                None
            }
            Some(slot) => {
                slot.logged_at = now;
                Some(std::mem::take(&mut slot.suppressed))
            }
            None => {
                slots.insert(
                    slot_key,
                    Slot {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_once_per_period_per_key_and_counts_the_rest() {
        let limit = LogLimit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(limit.check(&1, t0), Some(0));
        assert_eq!(limit.check(&1, t0 + Duration::from_secs(1)), None);
        assert_eq!(limit.check(&1, t0 + Duration::from_secs(59)), None);
        assert_eq!(limit.check(&2, t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(limit.check(&1, t0 + Duration::from_secs(60)), Some(2));
        assert_eq!(limit.check(&1, t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn made_up_keys_cannot_grow_it_without_bound() {
        let limit = LogLimit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for key in 0..MAX_KEYS as u64 {
            assert_eq!(limit.check(&key, t0), Some(0));
        }
        // The table is full: further keys share one slot.
        assert_eq!(limit.check(&10_000, t0), Some(0));
        assert_eq!(limit.check(&10_001, t0), None);
        assert!(limit.slots.lock().unwrap().len() <= MAX_KEYS + 1);
        // A period later the quiet keys are forgotten and new ones get their own slot.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(limit.check(&20_000, later), Some(0));
        assert_eq!(limit.check(&20_000, later), None);
    }
}
