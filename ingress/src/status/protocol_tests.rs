//! Unit tests of command parsing and reply shapes, with the lines the real clients send.

use serde_json::{Value, json};

use super::*;
use crate::status::view::{OrderId, Status};

fn method(line: &str) -> Method {
    parse(line).expect("a command").method
}

#[test]
fn parses_the_js_seed_connect() {
    let c = parse(r#"{"connect":{"data":{"user_external_id":"u1","auth":"jwt","project_id":1},"name":"js"},"id":1}"#).unwrap();
    assert_eq!(c.id, 1);
    let Method::Connect(req) = c.method else {
        panic!("not a connect")
    };
    assert_eq!(req.jwt(), Some("jwt"));
    assert_eq!(req.project_id(), Some(1));
    assert_eq!(req.user_hint().as_deref(), Some("u1"));
}

#[test]
fn token_wins_over_data_auth_and_project_may_be_a_string() {
    let Method::Connect(req) =
        method(r#"{"id":1,"connect":{"token":"t","data":{"auth":"a","project_id":"42"}}}"#)
    else {
        panic!()
    };
    assert_eq!(req.jwt(), Some("t"));
    assert_eq!(req.project_id(), Some(42));
    let Method::Connect(req) = method(r#"{"id":1,"connect":{"token":"","data":{"auth":"a"}}}"#)
    else {
        panic!()
    };
    assert_eq!(req.jwt(), Some("a"));
    assert_eq!(req.project_id(), None);
    let Method::Connect(bare) = method(r#"{"id":1,"connect":{}}"#) else {
        panic!()
    };
    assert_eq!(bare.jwt(), None);
}

#[test]
fn parses_history_from_both_clients() {
    let Method::History(js) =
        method(r#"{"history":{"channel":"orders:1:u1","since":{"offset":0},"limit":-1},"id":2}"#)
    else {
        panic!()
    };
    assert_eq!(js.channel, "orders:1:u1");
    assert_eq!(js.max(), None);
    assert_eq!(js.since.as_ref().unwrap().offset, 0);
    let Method::History(py) = method(
        r#"{"id": 2, "history": {"channel": "c", "limit": 0, "reverse": false, "since": {"offset": "3", "epoch": "e"}}}"#,
    ) else {
        panic!()
    };
    assert_eq!(py.max(), Some(0));
    assert_eq!(
        py.since,
        Some(StreamPosition {
            offset: 3,
            epoch: "e".into()
        })
    );
}

#[test]
fn an_empty_command_is_a_pong_and_other_methods_are_named() {
    assert_eq!(method("{}"), Method::Pong);
    assert_eq!(method(r#"{"send":{"data":{}}}"#), Method::Send);
    assert_eq!(
        method(r#"{"id":3,"rpc":{"method":"x"}}"#),
        Method::Unsupported("rpc")
    );
    assert_eq!(
        method(r#"{"id":3,"subscribe":{"channel":"x"}}"#),
        Method::Unsupported("subscribe")
    );
    assert_eq!(method(r#"{"id":3}"#), Method::Unsupported("empty command"));
    assert!(parse("not json").is_none());
    assert!(parse("[1,2]").is_none());
}

#[test]
fn frames_split_on_newlines_skipping_blanks() {
    let frame = "{\"id\":1,\"connect\":{}}\n\n{}\n  \n{\"id\":2,\"history\":{\"channel\":\"c\"}}\n";
    let got: Vec<_> = lines(frame).collect();
    assert_eq!(got.len(), 3);
    assert_eq!(got[1], "{}");
}

#[test]
fn replies_have_the_shapes_the_clients_read() {
    let connect: Value =
        serde_json::from_str(&connect_reply(1, "c-1", "0.1.0", 25, "orders:1:u1")).unwrap();
    assert_eq!(
        connect,
        json!({"id":1,"connect":{"client":"c-1","version":"0.1.0","ping":25,"pong":true,"subs":{"orders:1:u1":{}}}})
    );
    let p = Publication {
        offset: 3,
        order_id: OrderId::Int(59614241),
        status: Status::Done,
    };
    let text = push("orders:1:u1", &p);
    assert!(!text.contains('\n'));
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"push":{"channel":"orders:1:u1","pub":{"data":{"order_id":59614241,"status":"done"},"offset":3}}})
    );
    let history: Value = serde_json::from_str(&history_reply(2, &[p], "ep", 3)).unwrap();
    assert_eq!(
        history,
        json!({"id":2,"history":{"publications":[{"data":{"order_id":59614241,"status":"done"},"offset":3}],"epoch":"ep","offset":3}})
    );
    let error: Value = serde_json::from_str(&error_reply(1, 101, "unauthorized")).unwrap();
    assert_eq!(
        error,
        json!({"id":1,"error":{"code":101,"message":"unauthorized"}})
    );
}
