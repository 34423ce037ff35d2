//! The Centrifuge client protocol v2, JSON encoding, as far as order tracking needs it:
//! commands parsed from one line of a text frame, replies and pushes written as one compact
//! JSON message each (`docs/centrifuge-protocol.md` §3–§8). Pure: no sockets here.

use serde::Deserialize;
use serde_json::{Value, json};

use super::view::Publication;

/// Centrifuge error codes we answer with (`docs/centrifuge-protocol.md` §8).
pub mod code {
    pub const UNAUTHORIZED: u32 = 101;
    pub const PERMISSION_DENIED: u32 = 103;
    pub const METHOD_NOT_FOUND: u32 = 104;
    pub const BAD_REQUEST: u32 = 107;
    pub const TOKEN_EXPIRED: u32 = 109;
    pub const UNRECOVERABLE_POSITION: u32 = 112;
}

/// A command as the client sent it; the server takes the first method present.
#[derive(Debug, Default, Deserialize)]
struct Wire {
    #[serde(default)]
    id: u32,
    connect: Option<ConnectRequest>,
    history: Option<HistoryRequest>,
    send: Option<Value>,
    subscribe: Option<Value>,
    unsubscribe: Option<Value>,
    publish: Option<Value>,
    presence: Option<Value>,
    presence_stats: Option<Value>,
    ping: Option<Value>,
    rpc: Option<Value>,
    refresh: Option<Value>,
    sub_refresh: Option<Value>,
}

/// `connect`: a token, and the app's `data` (`{user_external_id, auth, project_id}`).
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
pub struct ConnectRequest {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub data: Option<Value>,
}

/// `history` (P `HistoryRequest`).
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
pub struct HistoryRequest {
    #[serde(default)]
    pub channel: String,
    #[serde(default)]
    pub limit: i32,
    #[serde(default)]
    pub since: Option<StreamPosition>,
    #[serde(default)]
    pub reverse: bool,
}

/// `{offset, epoch}`; an offset may come as a number or a numeric string.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
pub struct StreamPosition {
    #[serde(default, deserialize_with = "offset")]
    pub offset: u64,
    #[serde(default)]
    pub epoch: String,
}

fn offset<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| serde::de::Error::custom("offset must be a non-negative integer")),
        Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        Value::Null => Ok(0),
        _ => Err(serde::de::Error::custom("offset must be a number")),
    }
}

/// What one line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// `{}`: the answer to our ping, or a client's own keep-alive (Cocos). Never an error.
    Pong,
    Connect(ConnectRequest),
    History(HistoryRequest),
    /// `send`: no reply expected; we have no use for it.
    Send,
    /// Any other method, by name: answered 104.
    Unsupported(&'static str),
}

/// One parsed command.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub id: u32,
    pub method: Method,
}

/// Splits a text frame into its non-blank lines.
pub fn lines(frame: &str) -> impl Iterator<Item = &str> {
    frame.split('\n').map(str::trim).filter(|l| !l.is_empty())
}

/// Parses one line; `None` when it is not a command object (bad request).
pub fn parse(line: &str) -> Option<Command> {
    let wire: Wire = serde_json::from_str(line).ok()?;
    let others = [
        ("subscribe", wire.subscribe.is_some()),
        ("unsubscribe", wire.unsubscribe.is_some()),
        ("publish", wire.publish.is_some()),
        ("presence", wire.presence.is_some()),
        ("presence_stats", wire.presence_stats.is_some()),
        ("ping", wire.ping.is_some()),
        ("rpc", wire.rpc.is_some()),
        ("refresh", wire.refresh.is_some()),
        ("sub_refresh", wire.sub_refresh.is_some()),
    ];
    let method = if let Some(c) = wire.connect {
        Method::Connect(c)
    } else if let Some(h) = wire.history {
        Method::History(h)
    } else if wire.send.is_some() {
        Method::Send
    } else if let Some((name, _)) = others.iter().find(|(_, present)| *present) {
        Method::Unsupported(name)
    } else if wire.id == 0 {
        Method::Pong
    } else {
        Method::Unsupported("empty command")
    };
    Some(Command {
        id: wire.id,
        method,
    })
}

impl ConnectRequest {
    /// The JWT: `token` wins over `data.auth` when both are sent.
    pub fn jwt(&self) -> Option<&str> {
        self.token
            .as_deref()
            .filter(|t| !t.is_empty())
            .or_else(|| self.data_str("auth").filter(|t| !t.is_empty()))
    }

    /// `data.project_id`, a number or a numeric string.
    pub fn project_id(&self) -> Option<u64> {
        match self.data.as_ref()?.get("project_id")? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// `data.user_external_id` as a string (a number written out), if sent.
    pub fn user_hint(&self) -> Option<String> {
        match self.data.as_ref()?.get("user_external_id")? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    fn data_str(&self, field: &str) -> Option<&str> {
        self.data.as_ref()?.get(field)?.as_str()
    }
}

impl HistoryRequest {
    /// How many publications at most (`None`: all retained). `limit: 0` means none: only
    /// the position (Centrifuge's semantics); any negative limit means all.
    pub fn max(&self) -> Option<usize> {
        usize::try_from(self.limit).ok()
    }
}

/// `{"id":N,"error":{"code":C,"message":M}}` (Python reads `message` unconditionally).
pub fn error_reply(id: u32, code: u32, message: &str) -> String {
    json!({"id": id, "error": {"code": code, "message": message}}).to_string()
}

/// The connect result with one server-side subscription, the player's channel.
pub fn connect_reply(
    id: u32,
    client: &str,
    version: &str,
    ping_secs: u64,
    channel: &str,
) -> String {
    let mut subs = serde_json::Map::new();
    subs.insert(channel.to_owned(), json!({}));
    json!({"id": id, "connect": {
        "client": client, "version": version, "ping": ping_secs, "pong": true, "subs": subs,
    }})
    .to_string()
}

/// The publication as Xsolla's payload: `{"data":{"order_id","status"},"offset"}`.
fn publication(p: &Publication) -> Value {
    json!({"data": {"order_id": p.order_id, "status": p.status.as_str()}, "offset": p.offset})
}

/// The history result.
pub fn history_reply(id: u32, pubs: &[impl AsRef<Publication>], epoch: &str, top: u64) -> String {
    let publications: Vec<Value> = pubs.iter().map(|p| publication(p.as_ref())).collect();
    json!({"id": id, "history": {"publications": publications, "epoch": epoch, "offset": top}})
        .to_string()
}

/// A live publication on `channel`.
pub fn push(channel: &str, p: &Publication) -> String {
    json!({"push": {"channel": channel, "pub": publication(p)}}).to_string()
}

impl AsRef<Publication> for Publication {
    fn as_ref(&self) -> &Publication {
        self
    }
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
