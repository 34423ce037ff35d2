//! What the demo inventory remembers: the inspectable [`Snapshot`] plus the private
//! idempotency store, behind one lock, with a change counter that waiters subscribe to.

use std::collections::{BTreeMap, HashMap, VecDeque, btree_map::Entry};
use std::sync::{Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use axum::http::StatusCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use super::contract::{Endpoint, InventoryRequest, Item};
use super::faults::{FaultAction, Faults};

/// How many calls [`Snapshot::recent_calls`] keeps (oldest dropped first). Bounded so a
/// benchmark of millions of calls does not grow the service without limit.
pub const RECENT_CALLS: usize = 256;

/// Everything the demo inventory has seen and done, as served by `GET /_admin/state`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Bumped on every change; `GET /_admin/state?after=<version>` waits for a newer one.
    pub version: u64,
    /// Seed of the fault RNG, so a run can be repeated with `--seed`.
    pub seed: u64,
    /// Granted orders, keyed by order id.
    pub grants: BTreeMap<String, GrantRecord>,
    /// Revoked orders, keyed by order id.
    pub revocations: BTreeMap<String, RevocationRecord>,
    /// Calls per endpoint (`grants`, `revocations`).
    pub calls: BTreeMap<String, EndpointCalls>,
    /// Effects applied (grants and revocations), duplicates included.
    pub effects_applied: u64,
    /// Effects applied a second time for the same order under another idempotency key.
    /// Must stay 0: anything else means the worker granted (or revoked) an order twice.
    pub duplicates_applied: u64,
    /// Calls that reused a stored idempotency key for another endpoint, order or user
    /// (answered 422 `idempotency_key_reused`). Must stay 0 as well.
    pub key_conflicts: u64,
    /// The last [`RECENT_CALLS`] contract calls, oldest first.
    pub recent_calls: VecDeque<CallRecord>,
    /// The fault switches in force.
    pub faults: Faults,
}

/// One granted order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// Xsolla order id.
    pub order_id: String,
    /// Who received the items.
    pub user_id: String,
    /// Xsolla project id from the request.
    pub project_id: Option<u64>,
    /// Xsolla transaction id from the request.
    pub transaction_id: Option<String>,
    /// What was granted.
    pub items: Vec<Item>,
    /// Key of the call that first applied the grant.
    pub idempotency_key: String,
    /// How many times the grant was applied. Exactly-once in effect means 1.
    pub times_applied: u32,
    /// Whether a revocation was applied to this order.
    pub revoked: bool,
    /// Whether the revocation came while the grant was in force. The service refuses a
    /// revocation that arrives before its grant (409), so this is true whenever `revoked`
    /// is; suites assert it to state the ordering explicitly.
    pub revoked_after_grant: bool,
    /// `sandbox` flag of the granting call.
    pub sandbox: bool,
    /// `notification_type` of the granting call.
    pub notification_type: String,
    /// `traceparent` header of the granting call.
    pub traceparent: Option<String>,
}

/// One revoked order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecord {
    /// Xsolla order id.
    pub order_id: String,
    /// User named by the revocation call.
    pub user_id: String,
    /// What the revocation named.
    pub items: Vec<Item>,
    /// Key of the call that first applied the revocation.
    pub idempotency_key: String,
    /// How many times the revocation was applied. Must be 1.
    pub times_applied: u32,
    /// `notification_type` of the revoking call.
    pub notification_type: String,
    /// `traceparent` header of the revoking call.
    pub traceparent: Option<String>,
}

/// Counters of one endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointCalls {
    /// Calls received (counted on arrival, so a hanging call is already in here).
    pub received: u64,
    /// Calls answered, by HTTP status.
    pub by_status: BTreeMap<u16, u64>,
}

/// One contract call as the service answered it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// `Idempotency-Key` header, if any.
    pub idempotency_key: Option<String>,
    /// `traceparent` header, if any.
    pub traceparent: Option<String>,
    /// Status answered.
    pub status: u16,
    /// Why that status: `applied`, `replayed`, `grant_not_found`, `injected_5xx`, …
    pub outcome: String,
}

impl Snapshot {
    /// The grant of `order_id`, if any.
    pub fn grant(&self, order_id: &str) -> Option<&GrantRecord> {
        self.grants.get(order_id)
    }

    /// Calls received by `endpoint`.
    pub fn received(&self, endpoint: Endpoint) -> u64 {
        self.calls.get(endpoint.as_str()).map_or(0, |c| c.received)
    }

    /// Calls to `endpoint` answered with `status`.
    pub fn answered(&self, endpoint: Endpoint, status: u16) -> u64 {
        self.calls
            .get(endpoint.as_str())
            .and_then(|c| c.by_status.get(&status).copied())
            .unwrap_or(0)
    }

    /// Calls to `endpoint` answered so far, whatever the status.
    pub fn answered_total(&self, endpoint: Endpoint) -> u64 {
        self.calls
            .get(endpoint.as_str())
            .map_or(0, |c| c.by_status.values().sum())
    }

    /// True when no effect was ever applied twice and no key was ever reused: the
    /// exactly-once-in-effect invariant as far as this service can see it.
    pub fn exactly_once(&self) -> bool {
        self.duplicates_applied == 0
            && self.key_conflicts == 0
            && self.grants.values().all(|g| g.times_applied == 1)
            && self.revocations.values().all(|r| r.times_applied == 1)
    }
}

/// The fault parameters one call needs, taken under the lock with its draw.
#[derive(Clone, Debug)]
pub(crate) struct Draw {
    pub action: FaultAction,
    pub down: bool,
    pub retry_after_secs: u64,
    pub timeout: std::time::Duration,
}

/// The answer of the effect step.
#[derive(Clone, Debug)]
pub(crate) struct EffectAnswer {
    pub status: StatusCode,
    pub body: Bytes,
    pub outcome: &'static str,
}

impl EffectAnswer {
    fn new(status: StatusCode, body: serde_json::Value, outcome: &'static str) -> Self {
        Self {
            status,
            body: Bytes::from(body.to_string()),
            outcome,
        }
    }
}

/// A key's first successful answer, replayed byte for byte on a repeat.
struct StoredResult {
    endpoint: Endpoint,
    order_id: String,
    user_id: String,
    status: StatusCode,
    body: Bytes,
}

struct Inner {
    snap: Snapshot,
    results: HashMap<String, StoredResult>,
    rng: StdRng,
}

/// Shared state of one running service.
pub(crate) struct Store {
    inner: Mutex<Inner>,
    changes: watch::Sender<u64>,
    initial_faults: Faults,
}

impl Store {
    pub(crate) fn new(faults: Faults, seed: u64) -> Self {
        let snap = Snapshot {
            seed,
            faults: faults.clone(),
            ..Snapshot::default()
        };
        Self {
            inner: Mutex::new(Inner {
                snap,
                results: HashMap::new(),
                rng: StdRng::seed_from_u64(seed),
            }),
            changes: watch::channel(0).0,
            initial_faults: faults,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the state, then announces a new version. Everything happens under
    /// one lock, which is what makes two concurrent calls with one key apply once.
    fn mutate<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut inner = self.lock();
        let r = f(&mut inner);
        inner.snap.version += 1;
        // Sent under the lock so versions reach subscribers in order.
        self.changes.send_replace(inner.snap.version);
        r
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        self.lock().snap.clone()
    }

    /// Runs `f` on the live state, without copying it.
    pub(crate) fn inspect<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        f(&self.lock().snap)
    }

    pub(crate) fn version(&self) -> u64 {
        self.lock().snap.version
    }

    /// Evaluates `cond` on the live state and clones it only when it holds, so waiting
    /// on a benchmark of many orders does not copy the whole state on every change.
    pub(crate) fn check(&self, cond: &mut impl FnMut(&Snapshot) -> bool) -> Option<Snapshot> {
        let inner = self.lock();
        cond(&inner.snap).then(|| inner.snap.clone())
    }

    pub(crate) fn faults(&self) -> Faults {
        self.lock().snap.faults.clone()
    }

    /// Replaces the faults; the caller has validated them.
    pub(crate) fn set_faults(&self, faults: Faults) {
        self.mutate(|inner| inner.snap.faults = faults);
    }

    /// Updates the faults with `f`, keeping the old ones if the result is invalid.
    pub(crate) fn update_faults<E>(
        &self,
        f: impl FnOnce(&Faults) -> Result<Faults, E>,
    ) -> Result<Faults, E> {
        self.mutate(|inner| {
            let next = f(&inner.snap.faults)?;
            inner.snap.faults = next.clone();
            Ok(next)
        })
    }

    /// Forgets every grant, revocation, stored key and counter, and goes back to the
    /// start-up faults and seed. The version keeps growing so long-pollers see the reset.
    pub(crate) fn reset(&self) {
        let faults = self.initial_faults.clone();
        self.mutate(|inner| {
            let seed = inner.snap.seed;
            inner.snap = Snapshot {
                version: inner.snap.version,
                seed,
                faults,
                ..Snapshot::default()
            };
            inner.results.clear();
            inner.rng = StdRng::seed_from_u64(seed);
        });
    }

    /// Counts an arriving call and draws its fault. One draw per call, whatever the
    /// faults, so a seed reproduces the same sequence of decisions.
    pub(crate) fn arrive(&self, endpoint: Endpoint) -> Draw {
        self.mutate(|inner| {
            inner
                .snap
                .calls
                .entry(endpoint.as_str().to_string())
                .or_default()
                .received += 1;
            let draw: f64 = inner.rng.random();
            let f = &inner.snap.faults;
            Draw {
                action: f.pick(draw),
                down: f.down,
                retry_after_secs: f.retry_after_secs,
                timeout: f.timeout_duration(),
            }
        })
    }

    /// Records the answer given to a call.
    pub(crate) fn answered(
        &self,
        endpoint: Endpoint,
        idempotency_key: Option<String>,
        traceparent: Option<String>,
        status: StatusCode,
        outcome: &str,
    ) {
        self.mutate(|inner| {
            *inner
                .snap
                .calls
                .entry(endpoint.as_str().to_string())
                .or_default()
                .by_status
                .entry(status.as_u16())
                .or_default() += 1;
            let recent = &mut inner.snap.recent_calls;
            if recent.len() == RECENT_CALLS {
                recent.pop_front();
            }
            recent.push_back(CallRecord {
                endpoint,
                idempotency_key,
                traceparent,
                status: status.as_u16(),
                outcome: outcome.to_string(),
            });
        });
    }

    /// The effect step: replay a stored key, or refuse, or apply and store.
    pub(crate) fn apply(
        &self,
        endpoint: Endpoint,
        req: &InventoryRequest,
        traceparent: Option<&str>,
    ) -> EffectAnswer {
        self.mutate(|inner| {
            let key = &req.idempotency_key;
            if let Some(stored) = inner.results.get(key) {
                if stored.endpoint == endpoint
                    && stored.order_id == req.order_id
                    && stored.user_id == req.user_id
                {
                    return EffectAnswer {
                        status: stored.status,
                        body: stored.body.clone(),
                        outcome: "replayed",
                    };
                }
                // One key for two different effects is a worker bug; refusing it (rather
                // than replaying the other effect's answer) makes the bug visible.
                inner.snap.key_conflicts += 1;
                return EffectAnswer::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"error": "idempotency_key_reused", "idempotency_key": key}),
                    "idempotency_key_reused",
                );
            }
            // Checked after the replay so that a key already granted stays granted even
            // if its SKU is rejected later; not stored, so a replay after the operator
            // un-rejects the SKU succeeds.
            if let Some(item) = req
                .items
                .iter()
                .find(|i| inner.snap.faults.rejected_skus.contains(&i.sku))
            {
                return EffectAnswer::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"error": "unknown_sku", "sku": item.sku}),
                    "unknown_sku",
                );
            }
            let tp = traceparent.map(str::to_string);
            let status = match endpoint {
                Endpoint::Grants => {
                    apply_grant(&mut inner.snap, req, tp);
                    "granted"
                }
                Endpoint::Revocations => {
                    if !apply_revocation(&mut inner.snap, req, tp) {
                        // Not stored: the worker retries the same key once the grant exists.
                        return EffectAnswer::new(
                            StatusCode::CONFLICT,
                            json!({"error": "grant_not_found", "order_id": req.order_id}),
                            "grant_not_found",
                        );
                    }
                    "revoked"
                }
            };
            inner.snap.effects_applied += 1;
            let answer = EffectAnswer::new(
                StatusCode::CREATED,
                json!({"status": status, "order_id": req.order_id, "idempotency_key": key}),
                "applied",
            );
            inner.results.insert(
                key.clone(),
                StoredResult {
                    endpoint,
                    order_id: req.order_id.clone(),
                    user_id: req.user_id.clone(),
                    status: answer.status,
                    body: answer.body.clone(),
                },
            );
            answer
        })
    }
}

fn apply_grant(snap: &mut Snapshot, req: &InventoryRequest, traceparent: Option<String>) {
    match snap.grants.entry(req.order_id.clone()) {
        Entry::Occupied(mut e) => {
            // Same order, new key: a real game would hand the items out again.
            e.get_mut().times_applied += 1;
            snap.duplicates_applied += 1;
        }
        Entry::Vacant(e) => {
            e.insert(GrantRecord {
                order_id: req.order_id.clone(),
                user_id: req.user_id.clone(),
                project_id: req.project_id,
                transaction_id: req.transaction_id.clone(),
                items: req.items.clone(),
                idempotency_key: req.idempotency_key.clone(),
                times_applied: 1,
                revoked: false,
                revoked_after_grant: false,
                sandbox: req.sandbox,
                notification_type: req.notification_type.clone(),
                traceparent,
            });
        }
    }
}

/// Returns false when the order has no grant (nothing applied).
fn apply_revocation(
    snap: &mut Snapshot,
    req: &InventoryRequest,
    traceparent: Option<String>,
) -> bool {
    let Some(grant) = snap.grants.get_mut(&req.order_id) else {
        return false;
    };
    if !grant.revoked {
        grant.revoked_after_grant = true;
    }
    grant.revoked = true;
    match snap.revocations.entry(req.order_id.clone()) {
        Entry::Occupied(mut e) => {
            e.get_mut().times_applied += 1;
            snap.duplicates_applied += 1;
        }
        Entry::Vacant(e) => {
            e.insert(RevocationRecord {
                order_id: req.order_id.clone(),
                user_id: req.user_id.clone(),
                items: req.items.clone(),
                idempotency_key: req.idempotency_key.clone(),
                times_applied: 1,
                notification_type: req.notification_type.clone(),
                traceparent,
            });
        }
    }
    true
}
