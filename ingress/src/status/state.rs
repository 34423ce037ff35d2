//! What the feed writes and the endpoints read: the view, whether it has caught up, and the
//! hub that fans each new publication out to the connections of its channel.
//!
//! One lock order everywhere: the view, then the hub. Applying an event and announcing its
//! publication happen under the view's write lock, and a connection subscribes and takes its
//! snapshot under the read lock, so a connection sees every publication exactly once: either
//! in its snapshot or as a push, never neither, never both.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use shared::order_events::OrderEvent;
use tokio::sync::broadcast;

use super::view::{Applied, ChannelKey, Publication, View};

/// Pushes queued per connection before it counts as too slow (it is then closed and reloads
/// history when it reconnects). A channel sees a handful of changes per order.
const PUSH_QUEUE: usize = 32;

/// The state shared by the feed and every endpoint.
pub struct State {
    view: RwLock<View>,
    hub: Mutex<HashMap<ChannelKey, Entry>>,
    connections: AtomicUsize,
    caught_up: AtomicBool,
    /// This process's stream instance: offsets are ours, so a restart changes it.
    pub epoch: String,
}

struct Entry {
    tx: broadcast::Sender<Arc<Publication>>,
    connections: usize,
}

/// A connection's place in the hub; leaving it (drop) frees the slot.
pub struct Subscription {
    state: Arc<State>,
    key: ChannelKey,
    pub rx: broadcast::Receiver<Arc<Publication>>,
}

/// Why a connection could not join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    TooManyForUser,
}

impl State {
    pub fn new() -> Arc<State> {
        Arc::new(State {
            view: RwLock::new(View::new()),
            hub: Mutex::new(HashMap::new()),
            connections: AtomicUsize::new(0),
            caught_up: AtomicBool::new(false),
            epoch: format!("{:016x}", rand::random::<u64>()),
        })
    }

    /// Applies an event and pushes its publication, if any, to the channel's connections.
    pub fn apply(&self, event: &OrderEvent, at_unix: i64) -> Applied {
        let mut view = self.view.write().expect("view lock");
        let applied = view.apply(event, at_unix);
        if let Applied::Published(key, publication) = &applied
            && let Some(entry) = self.hub.lock().expect("hub lock").get(key)
        {
            // No receiver right now is fine: nobody to tell.
            let _ = entry.tx.send(publication.clone());
        }
        applied
    }

    /// Forgets orders no event has named since `cutoff` (unix seconds).
    pub fn forget_before(&self, cutoff: i64) -> usize {
        self.view.write().expect("view lock").forget_before(cutoff)
    }

    /// Reads the view.
    pub fn read<T>(&self, f: impl FnOnce(&View) -> T) -> T {
        f(&self.view.read().expect("view lock"))
    }

    /// Joins `key`'s channel (at most `per_user` connections) and, atomically with it, reads
    /// the view: whatever `snapshot` returns plus every later publication arrives once.
    pub fn subscribe<T>(
        self: &Arc<Self>,
        key: &ChannelKey,
        per_user: usize,
        snapshot: impl FnOnce(&View) -> T,
    ) -> Result<(Subscription, T), Refused> {
        let view = self.view.read().expect("view lock");
        let mut hub = self.hub.lock().expect("hub lock");
        let entry = hub.entry(key.clone()).or_insert_with(|| Entry {
            tx: broadcast::channel(PUSH_QUEUE).0,
            connections: 0,
        });
        if entry.connections >= per_user {
            if entry.connections == 0 {
                hub.remove(key);
            }
            return Err(Refused::TooManyForUser);
        }
        entry.connections += 1;
        let rx = entry.tx.subscribe();
        drop(hub);
        let seen = snapshot(&view);
        Ok((
            Subscription {
                state: self.clone(),
                key: key.clone(),
                rx,
            },
            seen,
        ))
    }

    /// Counts a new WebSocket in, unless `max` are open; the guard counts it out.
    pub fn connection(self: &Arc<Self>, max: usize) -> Option<ConnectionSlot> {
        let mut current = self.connections.load(Ordering::Relaxed);
        loop {
            if current >= max {
                return None;
            }
            match self.connections.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
        metrics::gauge!("status_connections").increment(1.0);
        Some(ConnectionSlot(self.clone()))
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// The feed has read up to its boot-time marker.
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    pub fn set_caught_up(&self) {
        self.caught_up.store(true, Ordering::Release);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut hub = self.state.hub.lock().expect("hub lock");
        if let Some(entry) = hub.get_mut(&self.key) {
            entry.connections -= 1;
            if entry.connections == 0 {
                hub.remove(&self.key);
            }
        }
    }
}

/// One open WebSocket, counted in `status_connections`.
pub struct ConnectionSlot(Arc<State>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("status_connections").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use shared::order_events::EventKind;

    use super::*;

    fn paid(order: &str, user: &str) -> OrderEvent {
        OrderEvent::new(EventKind::Accepted, Some(1), order, user)
    }

    #[test]
    fn a_subscriber_gets_each_publication_once_in_snapshot_or_push() {
        let state = State::new();
        let key = ChannelKey::new(1, "u");
        state.apply(&paid("1", "u"), 0);
        let (mut sub, snapshot) = state
            .subscribe(&key, 10, |v| v.history(&key, None, None, false))
            .unwrap();
        assert_eq!(snapshot.len(), 1);
        assert!(
            sub.rx.try_recv().is_err(),
            "order 1 came in the snapshot only"
        );
        state.apply(&paid("2", "u"), 0);
        state.apply(&paid("3", "other"), 0);
        assert_eq!(sub.rx.try_recv().unwrap().offset, 2);
        assert!(
            sub.rx.try_recv().is_err(),
            "another user's order is not pushed"
        );
    }

    #[test]
    fn the_per_user_limit_counts_live_subscriptions() {
        let state = State::new();
        let key = ChannelKey::new(1, "u");
        let first = state.subscribe(&key, 1, |_| ()).unwrap();
        assert!(matches!(
            state.subscribe(&key, 1, |_| ()),
            Err(Refused::TooManyForUser)
        ));
        assert!(state.subscribe(&ChannelKey::new(2, "u"), 1, |_| ()).is_ok());
        drop(first);
        assert!(state.subscribe(&key, 1, |_| ()).is_ok());
        assert!(
            state.hub.lock().unwrap().is_empty(),
            "left channels are forgotten"
        );
    }

    #[test]
    fn the_connection_limit_frees_slots_on_drop() {
        let state = State::new();
        let a = state.connection(2).unwrap();
        let _b = state.connection(2).unwrap();
        assert!(state.connection(2).is_none());
        drop(a);
        assert_eq!(state.connections(), 1);
        assert!(state.connection(2).is_some());
    }
}
