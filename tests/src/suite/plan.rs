//! The orders of a run (which are canceled, duplicated, out of order or doomed by a
//! rejected SKU) and how each one is sent through `xsolla-sim`'s library, the way Xsolla
//! sends: re-sent on 5xx or no answer on the (time-scaled) schedule, stopped on 2xx or a
//! no-retry 4xx.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::{sync::Semaphore, sync::watch, task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::sim::{Delivery, Ids, Kind, Mode, Overrides, Sender, Template};

/// SKU of every order that must be granted.
pub const GOOD_SKU: &str = "fault-suite-gem";
/// SKU the inventory refuses with 422: those orders must end in the DLQ, and only they.
pub const REJECTED_SKU: &str = "fault-suite-banned";

/// The demo inventory's configuration in both suites: `seed` for its drawn faults, and
/// [`REJECTED_SKU`] always refused (the orders meant to end in the DLQ).
pub fn inventory_config(seed: u64) -> crate::inventory::InventoryConfig {
    crate::inventory::InventoryConfig::default()
        .with_seed(seed)
        .with_faults(crate::inventory::Faults {
            rejected_skus: [REJECTED_SKU.to_owned()].into(),
            ..crate::inventory::Faults::none()
        })
}

/// When an order's `order_canceled` is sent, relative to its `order_paid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// Never canceled.
    No,
    /// After the paid was acknowledged (in order).
    AfterAck,
    /// Acknowledged before the paid is even sent (out of order: the revocation reaches
    /// the worker ahead of its grant).
    Before,
    /// Sent at the same moment as the paid (either may arrive first).
    Concurrent,
}

/// How a webhook is sent a second time (Xsolla "may send duplicates").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dup {
    No,
    /// Both copies at once.
    Concurrent,
    /// The copy after the first was acknowledged (or given up on).
    After,
}

#[derive(Debug, Clone)]
pub struct OrderPlan {
    /// Position in the run (0 = first started); picks the ingress the order is sent to.
    pub seq: usize,
    pub id: String,
    pub mode: Mode,
    pub rejected: bool,
    pub cancel: Cancel,
    pub dup_paid: Dup,
    pub dup_cancel: Dup,
}

impl OrderPlan {
    /// Webhooks this order sends (duplicates included).
    pub fn webhooks(&self) -> u64 {
        let paid = 1 + u64::from(self.dup_paid != Dup::No);
        let cancel = match self.cancel {
            Cancel::No => 0,
            _ => 1 + u64::from(self.dup_cancel != Dup::No),
        };
        paid + cancel
    }
}

/// Draws `n` orders: ~20% canceled (a quarter of those out of order, half of those
/// concurrent), ~10% with the paid sent twice (and some cancels), and a few (0.5%, at
/// least 3) with a rejected SKU, never canceled nor duplicated. Half in each delivery mode.
pub fn draw(n: usize, seed: u64, run_id: u64) -> Vec<OrderPlan> {
    let mut rng = StdRng::seed_from_u64(seed);
    let ids = Ids::new(run_id);
    let rejected_every = (n / 3).clamp(1, 200);
    (0..n)
        .map(|i| {
            let id = ids.next();
            let mode = if rng.random_bool(0.5) {
                Mode::Combined
            } else {
                Mode::Separate
            };
            // Spread over the run, so they meet the faults too.
            let rejected = i % rejected_every == rejected_every / 2;
            if rejected {
                return OrderPlan {
                    seq: i,
                    id,
                    mode,
                    rejected,
                    cancel: Cancel::No,
                    dup_paid: Dup::No,
                    dup_cancel: Dup::No,
                };
            }
            let cancel = if rng.random_bool(0.2) {
                match rng.random_range(0..8) {
                    0 => Cancel::Before,
                    1 => Cancel::Concurrent,
                    _ => Cancel::AfterAck,
                }
            } else {
                Cancel::No
            };
            let dup = |rng: &mut StdRng, p: f64| {
                if rng.random_bool(p) {
                    if rng.random_bool(0.5) {
                        Dup::Concurrent
                    } else {
                        Dup::After
                    }
                } else {
                    Dup::No
                }
            };
            let dup_paid = dup(&mut rng, 0.1);
            let dup_cancel = if cancel == Cancel::No {
                Dup::No
            } else {
                dup(&mut rng, 0.1)
            };
            OrderPlan {
                seq: i,
                id,
                mode,
                rejected,
                cancel,
                dup_paid,
                dup_cancel,
            }
        })
        .collect()
}

/// What happened to one order's webhooks, from Xsolla's side.
#[derive(Debug, Clone)]
pub struct OrderResult {
    pub plan: OrderPlan,
    pub paid: Vec<Delivery>,
    pub canceled: Vec<Delivery>,
}

impl OrderResult {
    pub fn paid_acked(&self) -> bool {
        self.paid.iter().any(Delivery::acknowledged)
    }

    pub fn cancel_acked(&self) -> bool {
        self.canceled.iter().any(Delivery::acknowledged)
    }

    /// Deliveries that ended without an acknowledgement (given up or refused).
    pub fn unacked(&self) -> impl Iterator<Item = (Kind, &Delivery)> {
        let paid = self.paid.iter().map(|d| (Kind::OrderPaid, d));
        let canceled = self.canceled.iter().map(|d| (Kind::OrderCanceled, d));
        paid.chain(canceled).filter(|(_, d)| !d.acknowledged())
    }
}

/// One answer an ingress gave, on the suite's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// Which delivery (webhook send loop) it belongs to, numbered as they start.
    pub delivery: u64,
    /// Index of the ingress (of the senders given to [`SendCtx::new`]).
    pub ingress: usize,
    /// When the answer (or the lack of one) came.
    pub at: Instant,
    /// The HTTP status; `None` for no answer (refused, reset, timed out).
    pub status: Option<u16>,
}

impl Answered {
    /// Xsolla counts the webhook as delivered.
    pub fn is_success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Everything an order's task needs to send.
pub struct SendCtx {
    /// One per ingress; order `seq` goes to `senders[seq % len]` (a load balancer's
    /// stickiness: Xsolla's re-sends of a webhook reach the same ingress).
    pub senders: Vec<Sender>,
    /// Requests in flight at most (waits between retries hold no slot).
    pub slots: Semaphore,
    pub secret: String,
    /// Webhooks acknowledged so far; the fault schedule waits on it.
    pub acks: watch::Sender<u64>,
    /// Every answer of every finished delivery (in the order the deliveries finished).
    answers: Mutex<Vec<Answered>>,
    deliveries: AtomicU64,
    /// By (kind, combined mode, rejected SKU); `Mode` is not `Hash`.
    templates: HashMap<(Kind, bool, bool), Template>,
}

impl SendCtx {
    pub fn new(senders: Vec<Sender>, concurrency: usize, secret: &str) -> SendCtx {
        assert!(!senders.is_empty(), "at least one ingress to send to");
        let mut templates = HashMap::new();
        for kind in [Kind::OrderPaid, Kind::OrderCanceled] {
            for mode in [Mode::Combined, Mode::Separate] {
                for rejected in [false, true] {
                    let overrides = Overrides {
                        user: Some("fault-suite-player".into()),
                        sku: Some(if rejected { REJECTED_SKU } else { GOOD_SKU }.into()),
                        quantity: Some(1),
                        order_id: None,
                        mode,
                    };
                    let template = Template::new(kind, &overrides).expect("order template");
                    templates.insert((kind, mode == Mode::Combined, rejected), template);
                }
            }
        }
        SendCtx {
            senders,
            slots: Semaphore::new(concurrency),
            secret: secret.to_owned(),
            acks: watch::Sender::new(0),
            answers: Mutex::new(Vec::new()),
            deliveries: AtomicU64::new(0),
            templates,
        }
    }

    /// Every answer so far, oldest first.
    pub fn answers(&self) -> Vec<Answered> {
        let mut all = self
            .answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        all.sort_by_key(|a| a.at);
        all
    }

    async fn deliver(&self, plan: &OrderPlan, kind: Kind) -> Delivery {
        let template = &self.templates[&(kind, plan.mode == Mode::Combined, plan.rejected)];
        let webhook = template.signed(&plan.id, &self.secret);
        let ingress = plan.seq % self.senders.len();
        let id = self.deliveries.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let delivery = self.senders[ingress]
            .deliver_from(&webhook, started, Some(&self.slots))
            .await;
        if delivery.acknowledged() {
            self.acks.send_modify(|n| *n += 1);
        }
        let answered = delivery.attempts.iter().map(|a| Answered {
            delivery: id,
            ingress,
            at: started + a.at + a.took,
            status: a.answer.status(),
        });
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(answered);
        delivery
    }

    /// One webhook, and its duplicate if planned.
    async fn deliver_twice(&self, plan: &OrderPlan, kind: Kind, dup: Dup) -> Vec<Delivery> {
        match dup {
            Dup::No => vec![self.deliver(plan, kind).await],
            Dup::Concurrent => {
                let (a, b) = tokio::join!(self.deliver(plan, kind), self.deliver(plan, kind));
                vec![a, b]
            }
            Dup::After => {
                let first = self.deliver(plan, kind).await;
                vec![first, self.deliver(plan, kind).await]
            }
        }
    }

    /// Sends all of one order's webhooks in its planned order.
    pub async fn run_order(self: Arc<Self>, plan: OrderPlan) -> OrderResult {
        let paid = || self.deliver_twice(&plan, Kind::OrderPaid, plan.dup_paid);
        let cancel = || self.deliver_twice(&plan, Kind::OrderCanceled, plan.dup_cancel);
        let (paid, canceled) = match plan.cancel {
            Cancel::No => (paid().await, Vec::new()),
            Cancel::AfterAck => {
                let paid = paid().await;
                let canceled = if paid.iter().any(Delivery::acknowledged) {
                    cancel().await
                } else {
                    Vec::new()
                };
                (paid, canceled)
            }
            Cancel::Before => {
                let canceled = cancel().await;
                (paid().await, canceled)
            }
            Cancel::Concurrent => {
                let (paid, canceled) = tokio::join!(paid(), cancel());
                (paid, canceled)
            }
        };
        OrderResult {
            plan,
            paid,
            canceled,
        }
    }
}

/// Starts the orders at `rate` per second (open loop, as payments happen) until all are
/// started or `stop` is cancelled (the rest are never sent), and collects what became of
/// each started one, by id.
pub async fn send_orders(
    ctx: Arc<SendCtx>,
    plans: Vec<OrderPlan>,
    rate: f64,
    stop: CancellationToken,
) -> Vec<OrderResult> {
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (i, plan) in plans.into_iter().enumerate() {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(due) => {}
        }
        tasks.spawn(ctx.clone().run_order(plan));
    }
    let mut results = Vec::new();
    while let Some(done) = tasks.join_next().await {
        results.push(done.expect("order task"));
    }
    results.sort_by(|a, b| a.plan.id.cmp(&b.plan.id));
    results
}
