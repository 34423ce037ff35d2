//! Unit tests of the view: ranks, idempotence, channels, history filters.

use shared::{
    order_events::{EventItem, EventKind, OrderEvent},
    webhook::Effect,
};

use super::*;

fn ev(kind: EventKind, order: &str, user: &str) -> OrderEvent {
    OrderEvent::new(kind, Some(7), order, user)
}

fn statuses(view: &View, order: &str) -> Option<Status> {
    view.order(7, order).and_then(|o| o.status)
}

fn published(a: Applied) -> Publication {
    match a {
        Applied::Published(_, p) => (*p).clone(),
        other => panic!("expected a publication, got {other:?}"),
    }
}

#[test]
fn paid_then_granted_publishes_two_offsets() {
    let mut v = View::new();
    let p1 = published(v.apply(&ev(EventKind::Accepted, "10", "u1"), 1));
    let p2 = published(v.apply(&ev(EventKind::Granted, "10", "u1"), 2));
    assert_eq!((p1.offset, p1.status), (1, Status::Paid));
    assert_eq!((p2.offset, p2.status), (2, Status::Done));
    assert_eq!(p2.order_id, OrderId::Int(10));
    assert_eq!(v.top(&ChannelKey::new(7, "u1")), 2);
}

#[test]
fn status_never_goes_backwards() {
    let mut v = View::new();
    v.apply(&ev(EventKind::Accepted, "10", "u1"), 1);
    v.apply(&ev(EventKind::Granted, "10", "u1"), 2);
    assert_eq!(
        v.apply(&ev(EventKind::Accepted, "10", "u1"), 3),
        Applied::Unchanged
    );
    let mut failed = ev(EventKind::AttemptFailed, "10", "u1");
    failed.effect = Some(Effect::Grant);
    assert_eq!(v.apply(&failed, 4), Applied::Unchanged);
    assert_eq!(statuses(&v, "10"), Some(Status::Done));
    // done → canceled is allowed, and final.
    published(v.apply(&ev(EventKind::CancelAccepted, "10", "u1"), 5));
    assert_eq!(
        v.apply(&ev(EventKind::Granted, "10", "u1"), 6),
        Applied::Unchanged
    );
    assert_eq!(statuses(&v, "10"), Some(Status::Canceled));
    assert_eq!(v.top(&ChannelKey::new(7, "u1")), 3);
}

#[test]
fn a_cancel_before_the_payment_stays_canceled_but_keeps_the_items() {
    let mut v = View::new();
    v.apply(&ev(EventKind::CancelAccepted, "11", "u1"), 1);
    let mut paid = ev(EventKind::Accepted, "11", "u1");
    paid.items = vec![EventItem {
        sku: "gem".into(),
        quantity: 2,
        amount: None,
    }];
    assert_eq!(v.apply(&paid, 2), Applied::Unchanged);
    assert_eq!(
        v.apply(&ev(EventKind::Granted, "11", "u1"), 3),
        Applied::Unchanged
    );
    let order = v.order(7, "11").unwrap();
    assert_eq!(order.status, Some(Status::Canceled));
    assert_eq!(order.items[0].sku, "gem");
}

#[test]
fn replaying_the_stream_twice_gives_the_same_statuses() {
    let events = [
        ev(EventKind::Accepted, "1", "u1"),
        ev(EventKind::Granted, "2", "u1"),
        ev(EventKind::Accepted, "2", "u1"),
        ev(EventKind::Accepted, "3", "u2"),
        ev(EventKind::CancelAccepted, "3", "u2"),
    ];
    let mut once = View::new();
    let mut twice = View::new();
    for e in &events {
        once.apply(e, 0);
        twice.apply(e, 0);
    }
    for e in &events {
        twice.apply(e, 0);
    }
    for id in ["1", "2", "3"] {
        assert_eq!(statuses(&once, id), statuses(&twice, id), "order {id}");
    }
    assert_eq!(statuses(&twice, "2"), Some(Status::Done));
    assert_eq!(
        once.top(&ChannelKey::new(7, "u1")),
        twice.top(&ChannelKey::new(7, "u1"))
    );
}

#[test]
fn channels_are_per_project_and_user() {
    let mut v = View::new();
    v.apply(&ev(EventKind::Accepted, "1", "u1"), 0);
    v.apply(&ev(EventKind::Accepted, "2", "u2"), 0);
    let mut other_project = ev(EventKind::Accepted, "3", "u1");
    other_project.project_id = Some(8);
    v.apply(&other_project, 0);
    let u1 = ChannelKey::new(7, "u1");
    assert_eq!(u1.name(), "orders:7:u1");
    let h = v.history(&u1, Some(0), None, false);
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].order_id, OrderId::Int(1));
    assert!(v.order(8, "1").is_none());
    let mut no_project = ev(EventKind::Accepted, "4", "u1");
    no_project.project_id = None;
    assert_eq!(v.apply(&no_project, 0), Applied::NoProject);
}

#[test]
fn history_filters_by_offset_limit_and_direction() {
    let mut v = View::new();
    for i in 1..=5 {
        v.apply(&ev(EventKind::Accepted, &i.to_string(), "u1"), 0);
    }
    let k = ChannelKey::new(7, "u1");
    let offsets = |h: Vec<Arc<Publication>>| h.iter().map(|p| p.offset).collect::<Vec<_>>();
    assert_eq!(
        offsets(v.history(&k, Some(0), None, false)),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(offsets(v.history(&k, Some(3), None, false)), [4, 5]);
    assert_eq!(offsets(v.history(&k, None, Some(2), false)), [1, 2]);
    assert_eq!(
        offsets(v.history(&k, None, Some(0), false)),
        Vec::<u64>::new()
    );
    assert_eq!(offsets(v.history(&k, None, Some(2), true)), [5, 4]);
    assert_eq!(offsets(v.history(&k, Some(3), None, true)), [2, 1]);
}

#[test]
fn history_keeps_the_last_publications_only() {
    let mut v = View::new();
    for i in 0..(HISTORY_CAP + 20) {
        v.apply(&ev(EventKind::Accepted, &i.to_string(), "u1"), 0);
    }
    let k = ChannelKey::new(7, "u1");
    let h = v.history(&k, Some(0), None, false);
    assert_eq!(h.len(), HISTORY_CAP);
    assert_eq!(h[0].offset, 21);
    assert_eq!(v.top(&k), (HISTORY_CAP + 20) as u64);
}

#[test]
fn current_lists_open_and_recently_finished_orders() {
    let mut v = View::new();
    v.apply(&ev(EventKind::Accepted, "1", "u1"), 100);
    v.apply(&ev(EventKind::Accepted, "2", "u1"), 100);
    v.apply(&ev(EventKind::Granted, "2", "u1"), 100);
    v.apply(&ev(EventKind::Accepted, "3", "u1"), 500);
    v.apply(&ev(EventKind::Granted, "3", "u1"), 500);
    let k = ChannelKey::new(7, "u1");
    assert_eq!(v.open_orders(&k), 1);
    let now: Vec<_> = v
        .current(&k, 400)
        .into_iter()
        .map(|p| (p.order_id, p.status))
        .collect();
    assert_eq!(
        now,
        [
            (OrderId::Int(1), Status::Paid),
            (OrderId::Int(3), Status::Done)
        ]
    );
}

#[test]
fn non_numeric_order_ids_are_kept_as_strings() {
    assert_eq!(OrderId::parse("571134"), OrderId::Int(571134));
    assert_eq!(OrderId::parse("ord-1"), OrderId::Text("ord-1".into()));
    assert_eq!(serde_json::to_string(&OrderId::parse("5")).unwrap(), "5");
}

#[test]
fn orders_past_retention_are_forgotten_with_their_publications() {
    let mut v = View::new();
    v.apply(&ev(EventKind::Accepted, "1", "u1"), 100);
    v.apply(&ev(EventKind::Accepted, "2", "u1"), 100);
    v.apply(&ev(EventKind::Granted, "2", "u1"), 500);
    assert_eq!(v.forget_before(50), 0);
    assert_eq!(v.forget_before(200), 1);
    let k = ChannelKey::new(7, "u1");
    assert!(v.order(7, "1").is_none());
    assert_eq!(v.order(7, "2").unwrap().status, Some(Status::Done));
    let left: Vec<_> = v
        .history(&k, None, None, false)
        .iter()
        .map(|p| p.offset)
        .collect();
    assert_eq!(left, [2, 3], "order 1's publication went with it");
    assert_eq!(v.top(&k), 3, "offsets are not reused");
    assert_eq!(v.open_orders(&k), 0);
}
