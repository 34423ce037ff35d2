//! `xsolla-sim watch`: follows a player's orders on `order-status` the way a game client
//! does, speaking the Centrifuge client protocol v2 (JSON) by hand, like Xsolla's Unity and
//! Cocos SDKs: `connect` with `data: {auth, project_id, user_external_id}`, `history` from
//! offset 0 on each server-side channel of the connect reply, then live `push.pub`s,
//! answering every `{}` ping with `{}` (`docs/centrifuge-protocol.md` §1, §4–§8).

use std::time::Duration;

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Where the player's JWT goes in the `connect` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenPlacement {
    /// `connect.data.auth`, as Xsolla's guide and SDKs send it.
    Data,
    /// `connect.token`, as a plain Centrifugo client sends it.
    Token,
}

/// What to watch.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// `ws://host:port/connection/websocket`.
    pub url: String,
    pub project_id: i64,
    /// Sent as `data.user_external_id` (a hint: the token decides).
    pub user: String,
    /// The player's JWT.
    pub token: String,
    pub placement: TokenPlacement,
    /// Stop at this order's final status (`done` or `canceled`); without it, run until the
    /// server closes the connection or `max_time` passes.
    pub order: Option<i64>,
    pub max_time: Duration,
}

/// Where a status came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The `history` reply (statuses before this connection, and duplicates).
    History,
    /// A `push.pub` (a change while connected).
    Live,
}

/// One thing seen on the connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WatchEvent {
    Connected {
        client: String,
        channels: Vec<String>,
    },
    Status {
        source: Source,
        channel: String,
        order_id: Value,
        status: String,
        offset: Option<u64>,
    },
    HistoryError {
        code: i64,
        message: String,
    },
}

/// How a watch ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "end", rename_all = "snake_case")]
pub enum WatchEnd {
    /// The watched order reached `done` or `canceled`.
    Final { order_id: i64, status: String },
    /// The server answered `connect` with an error (101 unauthorized, 109 token expired…).
    Refused { code: i64, message: String },
    /// The server closed the WebSocket (4500 finished, 4501 window elapsed, 3500 invalid
    /// token, 3001 shutdown…); `code` is `None` when it went away without a close frame.
    Closed { code: Option<u16>, reason: String },
    /// `max_time` passed.
    Deadline,
}

/// Whether a status is final for Xsolla's SDKs.
pub fn is_final(status: &str) -> bool {
    matches!(status, "done" | "canceled")
}

/// Connects and reports every event to `on_event` until the watch ends.
pub async fn watch(
    options: &WatchOptions,
    mut on_event: impl FnMut(&WatchEvent),
) -> anyhow::Result<WatchEnd> {
    let deadline = Instant::now() + options.max_time;
    let (mut ws, _) = tokio::time::timeout_at(
        deadline,
        tokio_tungstenite::connect_async(options.url.as_str()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no WebSocket handshake with {} in time", options.url))?
    .with_context(|| format!("connecting to {}", options.url))?;
    ws.send(Message::text(connect_command(options).to_string()))
        .await
        .context("sending connect")?;
    let mut session = Session::default();
    loop {
        let message = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => {
                let _ = ws.close(None).await;
                return Ok(WatchEnd::Deadline);
            }
            Ok(None) => return Ok(closed(None, "connection closed without a close frame")),
            Ok(Some(message)) => message.context("reading from the WebSocket")?,
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => {
                return Ok(match frame {
                    Some(f) => closed(Some(f.code.into()), &f.reason),
                    None => closed(None, "closed without a code"),
                });
            }
            _ => continue, // WebSocket-level pings are answered by tungstenite itself
        };
        for line in text.split('\n').filter(|l| !l.trim().is_empty()) {
            let reply: Value =
                serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
            match session.handle(&reply, options, &mut on_event)? {
                Step::Continue => {}
                Step::Send(commands) => {
                    for command in commands {
                        ws.send(Message::text(command.to_string())).await?;
                    }
                }
                Step::End(end) => {
                    let _ = ws.close(None).await;
                    return Ok(end);
                }
            }
        }
    }
}

/// What the connection has told so far.
#[derive(Default)]
struct Session {
    connected: bool,
    /// Command id → channel of the history requests sent.
    history: std::collections::HashMap<u64, String>,
}

enum Step {
    Continue,
    Send(Vec<Value>),
    End(WatchEnd),
}

fn closed(code: Option<u16>, reason: &str) -> WatchEnd {
    WatchEnd::Closed {
        code,
        reason: reason.to_owned(),
    }
}

/// `{"connect":{"data":{…},"name":"xsolla-sim"},"id":1}`.
fn connect_command(o: &WatchOptions) -> Value {
    let mut data = json!({"user_external_id": o.user, "project_id": o.project_id});
    let mut connect = json!({"name": "xsolla-sim"});
    match o.placement {
        TokenPlacement::Data => data["auth"] = json!(o.token),
        TokenPlacement::Token => connect["token"] = json!(o.token),
    }
    connect["data"] = data;
    json!({"connect": connect, "id": 1})
}

impl Session {
    /// One server message: the connect reply (id 1), a history reply (id ≥ 2), a push, or
    /// a ping (anything else; answered with `{}`).
    fn handle(
        &mut self,
        reply: &Value,
        options: &WatchOptions,
        on_event: &mut impl FnMut(&WatchEvent),
    ) -> anyhow::Result<Step> {
        let id = reply.get("id").and_then(Value::as_u64).unwrap_or(0);
        if id == 1 {
            return self.on_connect_reply(reply, on_event);
        }
        if id >= 2 {
            let channel = self.history.remove(&id).unwrap_or_default();
            if let Some(error) = reply.get("error") {
                on_event(&WatchEvent::HistoryError {
                    code: error["code"].as_i64().unwrap_or(0),
                    message: error["message"].as_str().unwrap_or("").to_owned(),
                });
                return Ok(Step::Continue);
            }
            let publications = reply["history"]["publications"].as_array();
            for p in publications.into_iter().flatten() {
                if let Some(end) = status(Source::History, &channel, p, options, on_event) {
                    return Ok(Step::End(end));
                }
            }
            return Ok(Step::Continue);
        }
        if let Some(push) = reply.get("push") {
            let channel = push["channel"].as_str().unwrap_or("");
            if let Some(publication) = push.get("pub") {
                if let Some(end) = status(Source::Live, channel, publication, options, on_event) {
                    return Ok(Step::End(end));
                }
            } else if let Some(d) = push.get("disconnect") {
                let code = d["code"].as_u64().and_then(|c| u16::try_from(c).ok());
                return Ok(Step::End(closed(code, d["reason"].as_str().unwrap_or(""))));
            }
            return Ok(Step::Continue);
        }
        // A server ping. The connect result says `pong: true`; answering regardless is
        // harmless (a stray `{}` is a no-op for the server).
        Ok(if self.connected {
            Step::Send(vec![json!({})])
        } else {
            Step::Continue
        })
    }

    /// The connect reply: refused, or the channels, whose history is asked for next.
    fn on_connect_reply(
        &mut self,
        reply: &Value,
        on_event: &mut impl FnMut(&WatchEvent),
    ) -> anyhow::Result<Step> {
        if let Some(error) = reply.get("error") {
            return Ok(Step::End(WatchEnd::Refused {
                code: error["code"].as_i64().unwrap_or(0),
                message: error["message"].as_str().unwrap_or("").to_owned(),
            }));
        }
        let result = reply
            .get("connect")
            .context("reply 1 is not a connect result")?;
        let channels: Vec<String> = result["subs"]
            .as_object()
            .map(|subs| subs.keys().cloned().collect())
            .unwrap_or_default();
        self.connected = true;
        on_event(&WatchEvent::Connected {
            client: result["client"].as_str().unwrap_or("").to_owned(),
            channels: channels.clone(),
        });
        let mut commands = Vec::new();
        for (channel, id) in channels.into_iter().zip(2u64..) {
            commands.push(json!({"history": {"channel": channel, "since": {"offset": 0}, "limit": -1}, "id": id}));
            self.history.insert(id, channel);
        }
        Ok(Step::Send(commands))
    }
}

/// Reports one publication; the end when it is the watched order's final status.
fn status(
    source: Source,
    channel: &str,
    publication: &Value,
    options: &WatchOptions,
    on_event: &mut impl FnMut(&WatchEvent),
) -> Option<WatchEnd> {
    let data = &publication["data"];
    let order_id = data["order_id"].clone();
    let status = data["status"].as_str().unwrap_or("").to_owned();
    on_event(&WatchEvent::Status {
        source,
        channel: channel.to_owned(),
        order_id: order_id.clone(),
        status: status.clone(),
        offset: publication["offset"].as_u64(),
    });
    let watched = options.order?;
    let same = order_id.as_i64() == Some(watched)
        || order_id.as_str().and_then(|s| s.parse().ok()) == Some(watched);
    (same && is_final(&status)).then_some(WatchEnd::Final {
        order_id: watched,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(order: Option<i64>) -> WatchOptions {
        WatchOptions {
            url: "ws://127.0.0.1:1/connection/websocket".into(),
            project_id: 42,
            user: "u1".into(),
            token: "jwt".into(),
            placement: TokenPlacement::Data,
            order,
            max_time: Duration::from_secs(1),
        }
    }

    #[test]
    fn connect_command_carries_the_token_where_asked() {
        let mut o = options(None);
        let c = connect_command(&o);
        assert_eq!(
            c,
            json!({"connect": {"name": "xsolla-sim", "data": {"auth": "jwt", "project_id": 42, "user_external_id": "u1"}}, "id": 1})
        );
        o.placement = TokenPlacement::Token;
        let c = connect_command(&o);
        assert_eq!(c["connect"]["token"], "jwt");
        assert!(c["connect"]["data"].get("auth").is_none());
    }

    #[test]
    fn connect_reply_asks_history_of_each_channel_and_pings_get_pongs() {
        let o = options(Some(7));
        let mut session = Session::default();
        let mut events = Vec::new();
        let reply = json!({"id": 1, "connect": {"client": "c", "ping": 25, "pong": true, "subs": {"orders:42:u1": {}}}});
        let Step::Send(cmds) = session
            .handle(&reply, &o, &mut |e| events.push(e.clone()))
            .unwrap()
        else {
            panic!("expected history commands")
        };
        assert_eq!(
            cmds,
            [
                json!({"history": {"channel": "orders:42:u1", "since": {"offset": 0}, "limit": -1}, "id": 2})
            ]
        );
        let Step::Send(pong) = session.handle(&json!({}), &o, &mut |_| ()).unwrap() else {
            panic!("expected a pong")
        };
        assert_eq!(pong, [json!({})]);
        assert!(
            matches!(&events[0], WatchEvent::Connected { channels, .. } if channels == &["orders:42:u1"])
        );
    }

    #[test]
    fn watched_order_ends_at_its_final_status_others_do_not() {
        let o = options(Some(7));
        let mut session = Session {
            connected: true,
            ..Default::default()
        };
        let push = |id: i64, status: &str| json!({"push": {"channel": "orders:42:u1", "pub": {"data": {"order_id": id, "status": status}, "offset": 3}}});
        let mut seen = 0;
        let mut count = |_: &WatchEvent| seen += 1;
        assert!(matches!(
            session.handle(&push(8, "done"), &o, &mut count).unwrap(),
            Step::Continue
        ));
        assert!(matches!(
            session.handle(&push(7, "paid"), &o, &mut count).unwrap(),
            Step::Continue
        ));
        let end = session.handle(&push(7, "done"), &o, &mut count).unwrap();
        assert!(
            matches!(end, Step::End(WatchEnd::Final { order_id: 7, ref status }) if status == "done")
        );
        assert_eq!(seen, 3);
    }

    #[test]
    fn connect_error_is_a_refusal() {
        let o = options(None);
        let mut session = Session::default();
        let reply = json!({"id": 1, "error": {"code": 109, "message": "token expired"}});
        let end = session.handle(&reply, &o, &mut |_| ()).unwrap();
        assert!(matches!(
            end,
            Step::End(WatchEnd::Refused { code: 109, .. })
        ));
    }
}
