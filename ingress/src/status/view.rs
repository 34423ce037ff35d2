//! The in-memory view built from the order-event stream: each order's status (which never
//! goes backwards), items and price, and per (project, user) channel the ordered
//! publications the WebSocket serves. Pure: no I/O, no clock, so replaying the stream twice
//! builds the same view, whatever order the events of different kinds arrive in.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use serde::Serialize;
use shared::order_events::{EventItem, EventKind, OrderEvent, Price};

/// Publications kept per channel: Centrifugo's default history cap, so `limit: -1` returns
/// at most this many.
pub const HISTORY_CAP: usize = 300;

/// An order's status as Xsolla names it. Declared in rank order: a status only ever moves to
/// a higher one (`canceled` wins over everything, `done` over `paid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The payment webhook is durably accepted (also while granting, retrying, dead-lettered).
    Paid,
    /// The game's inventory answered 2xx to the grant.
    Done,
    /// `order_canceled` accepted (or the revocation done): final.
    Canceled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Paid => "paid",
            Status::Done => "done",
            Status::Canceled => "canceled",
        }
    }

    /// `done` and `canceled` end the tracking of an order.
    pub fn is_final(self) -> bool {
        self != Status::Paid
    }
}

/// The status an event stands for, if any. Attempt, dead-letter and replay events of a
/// grant say the order was paid (they matter when the acceptance itself has left retention).
pub fn status_of(event: &OrderEvent) -> Option<Status> {
    use shared::webhook::Effect;
    match event.kind {
        EventKind::Accepted => Some(Status::Paid),
        EventKind::Granted => Some(Status::Done),
        EventKind::CancelAccepted | EventKind::Revoked => Some(Status::Canceled),
        EventKind::AttemptFailed | EventKind::DeadLettered | EventKind::Replayed => {
            (event.effect == Some(Effect::Grant)).then_some(Status::Paid)
        }
    }
}

/// One player's channel: `orders:{project_id}:{user_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelKey {
    pub project_id: u64,
    pub user_id: String,
}

impl ChannelKey {
    pub fn new(project_id: u64, user_id: &str) -> Self {
        ChannelKey {
            project_id,
            user_id: user_id.to_owned(),
        }
    }

    /// The Centrifuge channel name.
    pub fn name(&self) -> String {
        format!("orders:{}:{}", self.project_id, self.user_id)
    }
}

/// An order id as Xsolla's payloads carry it: an integer. An id that is not one (a foreign
/// writer) is kept as a string rather than dropped, so the player still sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum OrderId {
    Int(u64),
    Text(String),
}

impl OrderId {
    pub fn parse(id: &str) -> OrderId {
        id.parse()
            .map(OrderId::Int)
            .unwrap_or_else(|_| OrderId::Text(id.to_owned()))
    }
}

/// One entry of a channel's stream: `{"order_id", "status"}` at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub offset: u64,
    pub order_id: OrderId,
    pub status: Status,
}

/// What the view knows of one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// The player the first event named; later events cannot move the order to another.
    pub user_id: String,
    pub status: Option<Status>,
    pub items: Vec<EventItem>,
    pub price: Option<Price>,
    /// Unix seconds of the event that set the status (its `at`), 0 if unknown.
    pub changed_at: i64,
    /// Unix seconds of the latest event about the order: once that is older than the
    /// stream's retention, a fresh instance no longer knows the order, so neither do we.
    pub seen_at: i64,
    /// Offset of the order's latest publication in its channel.
    pub offset: u64,
}

#[derive(Debug, Default)]
struct Channel {
    publications: VecDeque<Arc<Publication>>,
    top: u64,
    /// The channel's orders, in the order they were first seen.
    orders: Vec<String>,
}

/// Every order of the stream, and every channel's publications.
#[derive(Debug, Default)]
pub struct View {
    orders: HashMap<(u64, String), Order>,
    channels: HashMap<ChannelKey, Channel>,
}

/// Why an event left the view unchanged (for metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The status changed: this publication is new on this channel.
    Published(ChannelKey, Arc<Publication>),
    /// Known, nothing new to tell the player (a duplicate, a regression, an attempt).
    Unchanged,
    /// The event names no project: no channel to put it in.
    NoProject,
}

impl View {
    pub fn new() -> Self {
        View::default()
    }

    /// Folds one event in. `at_unix` is the event's time (its `at`), used for "recent".
    pub fn apply(&mut self, event: &OrderEvent, at_unix: i64) -> Applied {
        let Some(project_id) = event.project_id else {
            return Applied::NoProject;
        };
        let order = match self.orders.entry((project_id, event.order_id.clone())) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let key = ChannelKey::new(project_id, &event.user_id);
                self.channels
                    .entry(key)
                    .or_default()
                    .orders
                    .push(event.order_id.clone());
                v.insert(Order {
                    user_id: event.user_id.clone(),
                    status: None,
                    items: Vec::new(),
                    price: None,
                    changed_at: 0,
                    seen_at: at_unix,
                    offset: 0,
                })
            }
        };
        order.seen_at = order.seen_at.max(at_unix);
        if order.items.is_empty() && !event.items.is_empty() {
            order.items = event.items.clone();
        }
        if order.price.is_none() {
            order.price = event.price.clone();
        }
        let Some(status) = status_of(event) else {
            return Applied::Unchanged;
        };
        if order.status.is_some_and(|s| s >= status) {
            return Applied::Unchanged;
        }
        order.status = Some(status);
        order.changed_at = at_unix;
        let key = ChannelKey::new(project_id, &order.user_id);
        let channel = self.channels.entry(key.clone()).or_default();
        channel.top += 1;
        order.offset = channel.top;
        let publication = Arc::new(Publication {
            offset: channel.top,
            order_id: OrderId::parse(&event.order_id),
            status,
        });
        channel.publications.push_back(publication.clone());
        if channel.publications.len() > HISTORY_CAP {
            channel.publications.pop_front();
        }
        Applied::Published(key, publication)
    }

    /// An order of `project_id`, whoever it belongs to (callers check the user).
    pub fn order(&self, project_id: u64, order_id: &str) -> Option<&Order> {
        self.orders.get(&(project_id, order_id.to_owned()))
    }

    /// The channel's current top offset (0 when it has none).
    pub fn top(&self, key: &ChannelKey) -> u64 {
        self.channels.get(key).map_or(0, |c| c.top)
    }

    /// Retained publications after `since` (oldest first), at most `limit` (`None`: all), or
    /// newest first before `since` when `reverse`.
    pub fn history(
        &self,
        key: &ChannelKey,
        since: Option<u64>,
        limit: Option<usize>,
        reverse: bool,
    ) -> Vec<Arc<Publication>> {
        let Some(channel) = self.channels.get(key) else {
            return Vec::new();
        };
        let limit = limit.unwrap_or(HISTORY_CAP).min(HISTORY_CAP);
        let pubs = channel.publications.iter();
        if reverse {
            pubs.rev()
                .filter(|p| since.is_none_or(|s| p.offset < s))
                .take(limit)
                .cloned()
                .collect()
        } else {
            pubs.filter(|p| since.is_none_or(|s| p.offset > s))
                .take(limit)
                .cloned()
                .collect()
        }
    }

    /// Orders of the channel still `paid` (not done, not canceled).
    pub fn open_orders(&self, key: &ChannelKey) -> usize {
        self.channel_orders(key)
            .filter(|(_, o)| o.status == Some(Status::Paid))
            .count()
    }

    /// The latest status of each order of the channel that is still open or changed at or
    /// after `recent_since` (unix seconds), oldest change first: what a client that never
    /// calls history (Xsolla's raw SDKs) is told right after connecting.
    pub fn current(&self, key: &ChannelKey, recent_since: i64) -> Vec<Publication> {
        let mut current: Vec<Publication> = self
            .channel_orders(key)
            .filter_map(|(id, o)| {
                let status = o.status?;
                (!status.is_final() || o.changed_at >= recent_since).then(|| Publication {
                    offset: o.offset,
                    order_id: OrderId::parse(id),
                    status,
                })
            })
            .collect();
        current.sort_by_key(|p| p.offset);
        current
    }

    /// Forgets the orders no event has named since `cutoff` (unix seconds), and their
    /// publications: what left the stream's retention leaves the view. Channels keep their
    /// offsets, so a position a client holds stays meaningful. Returns how many went.
    pub fn forget_before(&mut self, cutoff: i64) -> usize {
        let before = self.orders.len();
        self.orders.retain(|_, o| o.seen_at >= cutoff);
        if self.orders.len() == before {
            return 0;
        }
        for (key, channel) in &mut self.channels {
            let orders = &self.orders;
            let known = |id: &String| orders.contains_key(&(key.project_id, id.clone()));
            channel.orders.retain(known);
            channel.publications.retain(|p| {
                let id = match &p.order_id {
                    OrderId::Int(n) => n.to_string(),
                    OrderId::Text(t) => t.clone(),
                };
                known(&id)
            });
        }
        before - self.orders.len()
    }

    /// Orders known, for metrics.
    pub fn order_count(&self) -> usize {
        self.orders.len()
    }

    fn channel_orders<'a>(
        &'a self,
        key: &ChannelKey,
    ) -> impl Iterator<Item = (&'a String, &'a Order)> + 'a {
        let project_id = key.project_id;
        self.channels
            .get(key)
            .into_iter()
            .flat_map(|c| c.orders.iter())
            .filter_map(move |id| {
                let order = self.orders.get(&(project_id, id.clone()))?;
                Some((id, order))
            })
    }
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
