//! What a load run measured: counts, throughput and latency percentiles (hdrhistogram),
//! printable as text or JSON.

use std::{fmt, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{
    load::LoadPlan,
    send::{Answer, Delivery, Outcome, Policy},
    webhook::Kind,
};

/// Longest latency the histogram holds (a day covers Xsolla's whole 12 h schedule).
const MAX_LATENCY_US: u64 = 86_400_000_000;

/// Running counts of a load run.
#[derive(Debug, Clone)]
pub struct Tally {
    pub sent: u64,
    pub acked: u64,
    pub refused: u64,
    pub gave_up: u64,
    pub answers: Answers,
    /// Open loop: webhooks whose planned start found every slot busy (the load tool or the
    /// server could not keep up; their wait counts in their latency).
    pub waited_for_slot: u64,
    /// First send to acknowledgement, µs, acknowledged webhooks only.
    pub latency: Histogram<u64>,
    /// The slowest acknowledgement and when (since the run's start) it came: tells a
    /// one-off stall of the machine or broker from a slow service.
    pub slowest: Option<(Duration, Duration)>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            sent: 0,
            acked: 0,
            refused: 0,
            gave_up: 0,
            answers: Answers::default(),
            waited_for_slot: 0,
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds"),
            slowest: None,
        }
    }
}

impl Tally {
    /// Records a delivery that settled `at` after the run's start.
    pub fn record_at(&mut self, delivery: &Delivery, at: Duration) {
        if let Some(latency) = delivery.ack_latency
            && self.slowest.is_none_or(|(slowest, _)| latency > slowest)
        {
            self.slowest = Some((latency, at));
        }
        self.record(delivery);
    }

    /// Adds another tally's counts (load tasks that tally alone, merged at the end).
    pub fn merge(&mut self, other: &Tally) {
        self.sent += other.sent;
        self.acked += other.acked;
        self.refused += other.refused;
        self.gave_up += other.gave_up;
        self.answers.add(&other.answers);
        self.waited_for_slot += other.waited_for_slot;
        self.latency
            .add(&other.latency)
            .expect("tallies share the histogram's bounds");
        if let Some((latency, _)) = other.slowest
            && self.slowest.is_none_or(|(slowest, _)| latency > slowest)
        {
            self.slowest = other.slowest;
        }
    }

    pub fn record(&mut self, delivery: &Delivery) {
        self.sent += 1;
        match delivery.outcome {
            Outcome::Acknowledged => self.acked += 1,
            Outcome::Refused => self.refused += 1,
            Outcome::GaveUp => self.gave_up += 1,
        }
        for attempt in &delivery.attempts {
            self.answers.count(&attempt.answer);
        }
        if let Some(latency) = delivery.ack_latency {
            let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.latency.saturating_record(us.clamp(1, MAX_LATENCY_US));
        }
    }
}

/// Every attempt's answer, by class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Answers {
    pub attempts: u64,
    pub status_2xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub status_other: u64,
    /// Timeouts, refused or reset connections.
    pub no_answer: u64,
}

impl Answers {
    fn add(&mut self, other: &Answers) {
        self.attempts += other.attempts;
        self.status_2xx += other.status_2xx;
        self.status_4xx += other.status_4xx;
        self.status_5xx += other.status_5xx;
        self.status_other += other.status_other;
        self.no_answer += other.no_answer;
    }

    fn count(&mut self, answer: &Answer) {
        self.attempts += 1;
        match answer.status() {
            Some(200..=299) => self.status_2xx += 1,
            Some(400..=499) => self.status_4xx += 1,
            Some(500..=599) => self.status_5xx += 1,
            Some(_) => self.status_other += 1,
            None => self.no_answer += 1,
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// The result of one load run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    pub run_id: u64,
    pub notification_type: String,
    /// `open` (fixed rate) or `closed` (fixed concurrency).
    pub loop_kind: &'static str,
    pub target_rate: Option<f64>,
    pub concurrency: usize,
    pub retry: bool,
    pub time_scale: f64,
    pub duration_s: f64,
    /// Start to the last webhook settled.
    pub elapsed_s: f64,
    /// Webhooks started (each with its own id).
    pub sent: u64,
    /// Acknowledged (2xx).
    pub acked: u64,
    /// Ended on a no-retry 4xx.
    pub refused: u64,
    /// Never acknowledged.
    pub gave_up: u64,
    pub answers: Answers,
    pub waited_for_slot: u64,
    /// Acknowledged webhooks per second of `elapsed_s`.
    pub throughput: f64,
    /// First send to acknowledgement.
    pub latency_ms: Latency,
    /// When the slowest acknowledgement came, seconds since the start.
    pub slowest_at_s: Option<f64>,
}

impl LoadReport {
    pub fn new(
        plan: &LoadPlan,
        kind: Kind,
        policy: Policy,
        elapsed: Duration,
        tally: &Tally,
    ) -> LoadReport {
        let elapsed_s = elapsed.as_secs_f64();
        LoadReport {
            run_id: plan.run_id,
            notification_type: kind.as_str().to_owned(),
            loop_kind: if plan.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            target_rate: plan.rate,
            concurrency: plan.concurrency,
            retry: policy.retry,
            time_scale: policy.time_scale,
            duration_s: plan.duration.as_secs_f64(),
            elapsed_s,
            sent: tally.sent,
            acked: tally.acked,
            refused: tally.refused,
            gave_up: tally.gave_up,
            answers: tally.answers.clone(),
            waited_for_slot: tally.waited_for_slot,
            throughput: if elapsed_s > 0.0 {
                tally.acked as f64 / elapsed_s
            } else {
                0.0
            },
            latency_ms: Latency::from_histogram(&tally.latency),
            slowest_at_s: tally.slowest.map(|(_, at)| at.as_secs_f64()),
        }
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = match self.target_rate {
            Some(rate) => format!(
                "open loop at {rate} webhooks/s, at most {} in flight",
                self.concurrency
            ),
            None => format!("closed loop, {} concurrent senders", self.concurrency),
        };
        let retry = if self.retry {
            format!("Xsolla's retry schedule × {}", self.time_scale)
        } else {
            "no retries".to_owned()
        };
        let a = &self.answers;
        let l = &self.latency_ms;
        writeln!(
            f,
            "run {} · {} · {shape} · {retry}",
            self.run_id, self.notification_type
        )?;
        writeln!(
            f,
            "duration    {:.2} s planned, {:.2} s until the last answer",
            self.duration_s, self.elapsed_s
        )?;
        writeln!(
            f,
            "webhooks    {} sent, {} acknowledged, {} refused (4xx), {} never acknowledged",
            self.sent, self.acked, self.refused, self.gave_up
        )?;
        writeln!(
            f,
            "answers     {} attempts: {} 2xx, {} 4xx, {} 5xx, {} other, {} no answer",
            a.attempts, a.status_2xx, a.status_4xx, a.status_5xx, a.status_other, a.no_answer
        )?;
        writeln!(f, "throughput  {:.1} acknowledged/s", self.throughput)?;
        write!(
            f,
            "latency     p50 {:.2} ms · p90 {:.2} ms · p99 {:.2} ms · max {:.2} ms (first send → ack)",
            l.p50, l.p90, l.p99, l.max
        )?;
        if let Some(at) = self.slowest_at_s {
            write!(f, ", the max at {at:.2} s")?;
        }
        if self.waited_for_slot > 0 {
            write!(
                f,
                "\nnote        {} webhooks found all {} slots busy at their planned start",
                self.waited_for_slot, self.concurrency
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::send::Attempt;

    fn delivery(outcome: Outcome, answers: &[Option<u16>], latency_ms: Option<u64>) -> Delivery {
        Delivery {
            attempts: answers
                .iter()
                .map(|s| Attempt {
                    at: Duration::ZERO,
                    took: Duration::ZERO,
                    answer: s.map_or(Answer::NoAnswer("x".into()), Answer::Status),
                })
                .collect(),
            outcome,
            ack_latency: latency_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn tallies_outcomes_answers_and_latency() {
        let mut t = Tally::default();
        for ms in 1..=100 {
            let d = delivery(Outcome::Acknowledged, &[Some(204)], Some(ms));
            t.record_at(&d, Duration::from_millis(2 * ms));
        }
        t.record(&delivery(Outcome::Refused, &[Some(400)], None));
        t.record(&delivery(Outcome::GaveUp, &[Some(503), None], None));
        let plan = LoadPlan {
            rate: None,
            duration: Duration::from_secs(1),
            concurrency: 4,
            run_id: 1,
        };
        let r = LoadReport::new(
            &plan,
            Kind::OrderPaid,
            Policy::default(),
            Duration::from_secs(2),
            &t,
        );
        assert_eq!((r.sent, r.acked, r.refused, r.gave_up), (102, 100, 1, 1));
        assert_eq!(r.answers.attempts, 103);
        assert_eq!(
            (
                r.answers.status_4xx,
                r.answers.status_5xx,
                r.answers.no_answer
            ),
            (1, 1, 1)
        );
        assert_eq!(r.throughput, 50.0);
        assert!((r.latency_ms.p50 - 50.0).abs() < 0.1, "{:?}", r.latency_ms);
        assert!((r.latency_ms.p99 - 99.0).abs() < 0.1);
        assert!((r.latency_ms.max - 100.0).abs() < 0.1);
        assert_eq!(
            r.slowest_at_s,
            Some(0.2),
            "the 100 ms one settled at 200 ms"
        );
        let text = r.to_string();
        assert!(text.contains("100 acknowledged"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["latency_ms"]["count"], 100);
    }

    #[test]
    fn merged_tallies_add_up() {
        let (mut a, mut b) = (Tally::default(), Tally::default());
        let slow = delivery(Outcome::Acknowledged, &[Some(204)], Some(30));
        a.record_at(&slow, Duration::from_secs(3));
        b.record_at(
            &delivery(Outcome::Acknowledged, &[Some(204)], Some(10)),
            Duration::from_secs(1),
        );
        b.record(&delivery(Outcome::GaveUp, &[Some(503)], None));
        b.waited_for_slot = 2;
        a.merge(&b);
        assert_eq!(
            (a.sent, a.acked, a.gave_up, a.waited_for_slot),
            (3, 2, 1, 2)
        );
        assert_eq!((a.answers.status_2xx, a.answers.status_5xx), (2, 1));
        assert_eq!(a.latency.len(), 2);
        assert_eq!(
            a.slowest,
            Some((Duration::from_millis(30), Duration::from_secs(3)))
        );
    }
}
