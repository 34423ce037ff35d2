//! Xsolla's delivery policy as plain functions: which answers end a delivery and when it
//! sends again (`docs/xsolla-protocol.md` §2 and §4).

use std::time::Duration;

use super::webhook::Kind;

/// What Xsolla does after one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered; no more sends.
    Acknowledged,
    /// A 4xx Xsolla does not retry: the delivery ends unacknowledged.
    Refused,
    /// Send again at the next point of the schedule, if any is left.
    Retry,
}

/// `order_paid`/`order_canceled` codes that end the delivery (§2: "400, 401, 402, 403,
/// 404, 409, 422 or 415 → no retry").
pub const ORDER_NO_RETRY: [u16; 8] = [400, 401, 402, 403, 404, 409, 415, 422];

/// Classifies one answer; `None` is no answer at all (refused connection, timeout, reset).
///
/// - Orders follow the docs' table to the letter: only 200, 201 and 204 are success and
///   any code outside [`ORDER_NO_RETRY`] (a 202, a 429, a 3xx) is retried.
/// - `payment`/`refund`: the docs only say 5xx is resent; we treat every 2xx as success,
///   every 4xx as final (a 400 on `payment` "debits the user but fails the purchase") and
///   anything else, like no answer, as retried.
/// - `user_validation` is classified like `payment`, but its schedule is empty.
pub fn classify(kind: Kind, status: Option<u16>) -> Verdict {
    let Some(status) = status else {
        return Verdict::Retry;
    };
    if kind.is_order() {
        return match status {
            200 | 201 | 204 => Verdict::Acknowledged,
            s if ORDER_NO_RETRY.contains(&s) => Verdict::Refused,
            _ => Verdict::Retry,
        };
    }
    match status {
        200..=299 => Verdict::Acknowledged,
        400..=499 => Verdict::Refused,
        _ => Verdict::Retry,
    }
}

const MINUTE: Duration = Duration::from_secs(60);

/// The waits before each re-send, in order (so `len()` is the number of retries).
///
/// - Orders: 2 × 5 min, 7 × 15 min, 10 × 60 min: 19 retries, 20 sends over ~11.9 h (§4).
/// - `payment`/`refund`: the docs give only "increasing interval, at most 12 retries"
///   (within 12 h or 48 h, the pages disagree). We use the orders' shape cut at 12:
///   2 × 5 min, 7 × 15 min, 3 × 60 min (~4.9 h), so both schedules agree where they overlap.
/// - `user_validation`: none. It is a live check during checkout; a failed one shows the
///   user an error rather than being re-sent (3rd-party note, §4).
pub fn retry_delays(kind: Kind) -> Vec<Duration> {
    let orders = std::iter::repeat_n(5 * MINUTE, 2)
        .chain(std::iter::repeat_n(15 * MINUTE, 7))
        .chain(std::iter::repeat_n(60 * MINUTE, 10));
    match kind {
        Kind::OrderPaid | Kind::OrderCanceled => orders.collect(),
        Kind::Payment | Kind::Refund => orders.take(12).collect(),
        Kind::UserValidation => Vec::new(),
    }
}

/// `delay × time_scale` (e.g. 0.001 turns 5 min into 300 ms); non-finite or negative
/// scales count as 0.
pub fn scaled(delay: Duration, time_scale: f64) -> Duration {
    if time_scale.is_finite() && time_scale > 0.0 {
        delay.mul_f64(time_scale)
    } else {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_follow_two_seven_ten_over_twenty_sends() {
        let d = retry_delays(Kind::OrderPaid);
        assert_eq!(d.len(), 19, "19 retries, 20 sends");
        assert!(d[..2].iter().all(|x| *x == 5 * MINUTE));
        assert!(d[2..9].iter().all(|x| *x == 15 * MINUTE));
        assert!(d[9..].iter().all(|x| *x == 60 * MINUTE));
        let total: Duration = d.iter().sum();
        assert_eq!(total, Duration::from_secs((10 + 105 + 600) * 60));
        assert!(
            total < 12 * 60 * MINUTE,
            "Xsolla: at most 20 sends within 12 h"
        );
        assert_eq!(retry_delays(Kind::OrderCanceled), d);
    }

    #[test]
    fn payments_retry_twelve_times_with_growing_waits() {
        for kind in [Kind::Payment, Kind::Refund] {
            let d = retry_delays(kind);
            assert_eq!(d.len(), 12);
            assert!(
                d.windows(2).all(|w| w[0] <= w[1]),
                "never shorter than the last"
            );
            assert_eq!(d[..], retry_delays(Kind::OrderPaid)[..12]);
        }
        assert!(retry_delays(Kind::UserValidation).is_empty());
    }

    #[test]
    fn orders_stop_only_on_the_documented_codes() {
        for s in [200, 201, 204] {
            assert_eq!(classify(Kind::OrderPaid, Some(s)), Verdict::Acknowledged);
        }
        for s in ORDER_NO_RETRY {
            assert_eq!(
                classify(Kind::OrderCanceled, Some(s)),
                Verdict::Refused,
                "{s}"
            );
        }
        for s in [202, 301, 405, 408, 429, 500, 502, 503] {
            assert_eq!(classify(Kind::OrderPaid, Some(s)), Verdict::Retry, "{s}");
        }
        assert_eq!(classify(Kind::OrderPaid, None), Verdict::Retry);
    }

    #[test]
    fn payments_stop_on_any_2xx_or_4xx_and_retry_5xx() {
        assert_eq!(classify(Kind::Payment, Some(202)), Verdict::Acknowledged);
        assert_eq!(classify(Kind::Refund, Some(429)), Verdict::Refused);
        assert_eq!(classify(Kind::Payment, Some(503)), Verdict::Retry);
        assert_eq!(classify(Kind::Refund, None), Verdict::Retry);
    }

    #[test]
    fn time_scale_shrinks_waits() {
        assert_eq!(scaled(5 * MINUTE, 0.001), Duration::from_millis(300));
        assert_eq!(scaled(5 * MINUTE, 1.0), 5 * MINUTE);
        assert_eq!(scaled(5 * MINUTE, 0.0), Duration::ZERO);
        assert_eq!(scaled(5 * MINUTE, f64::NAN), Duration::ZERO);
    }
}
