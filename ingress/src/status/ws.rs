//! `GET /connection/websocket`: the upgrade (subprotocol echo, `Origin` check, size limits)
//! and the close codes. The conversation itself is in [`super::session`].

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{
        State as AxumState, WebSocketUpgrade,
        ws::{CloseFrame, Message, WebSocket},
    },
    http::{HeaderMap, StatusCode, header::ORIGIN},
    response::{IntoResponse, Response},
};

use super::App;

/// Close codes (`docs/centrifuge-protocol.md` §8). 3000–3499: the client reconnects; 3500–3999 and
/// 4500–4999: terminal.
pub mod close {
    /// SIGTERM: reconnect (to another instance) and reload history.
    pub const SHUTDOWN: (u16, &str) = (3001, "shutdown");
    /// Too slow to take its pushes: reconnect and reload history.
    pub const SLOW: (u16, &str) = (3008, "slow");
    /// A message over `STATUS_MAX_FRAME_BYTES`.
    pub const TOO_BIG: (u16, &str) = (3009, "message too big");
    /// Neither ping answer nor anything else for the ping interval + 10 s.
    pub const NO_PONG: (u16, &str) = (3012, "no pong");
    /// Over `STATUS_MAX_CONNECTIONS` or `STATUS_MAX_CONNECTIONS_PER_USER`: try again later.
    pub const TOO_MANY: (u16, &str) = (3013, "too many connections");
    /// The connect's token is missing or does not verify (after the 101 error reply).
    pub const INVALID_TOKEN: (u16, &str) = (3500, "invalid token");
    /// Not JSON, a binary frame, a command before `connect`, a second `connect`.
    pub const BAD_REQUEST: (u16, &str) = (3501, "bad request");
    /// No `connect` within `STATUS_CONNECT_TIMEOUT`.
    pub const STALE: (u16, &str) = (3502, "stale");
    /// The user's last open order reached its final status (after `STATUS_FINAL_GRACE`).
    pub const FINISHED: (u16, &str) = (4500, "order tracking finished");
    /// `STATUS_TRACKING_WINDOW` elapsed: the client switches to short-polling.
    pub const WINDOW: (u16, &str) = (4501, "tracking window elapsed");
}

/// How long to wait for the client's answer to our close frame.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(1);

/// A read buffer sized for our small commands: tungstenite's default (128 KiB) would cost
/// that much per idle connection.
const READ_BUFFER: usize = 4096;

/// The upgrade handler.
pub async fn upgrade(
    AxumState(app): AxumState<Arc<App>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !origin_allowed(&app.origins, &headers) {
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let max = app.limits.max_frame_bytes;
    let task = app.tracker.token();
    ws.protocols(["centrifuge-json"])
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        // Write each message out at once: nothing batches frames, and no buffer lingers.
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            super::session::serve(socket, app).await;
            drop(task);
        })
}

/// No list configured: any origin (auth is by token, not cookie). Else the `Origin` header
/// must be in the list; a request without one is not a browser's and passes.
fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match headers.get(ORIGIN).and_then(|o| o.to_str().ok()) {
        Some(origin) => allowed.iter().any(|a| a == origin.trim_end_matches('/')),
        None => true,
    }
}

/// Sends `text` as one text frame; false when the connection is gone, or when the frame is
/// not out `within` (a client that does not read: the socket's buffers are full).
pub async fn send(socket: &mut WebSocket, text: String, within: Duration) -> bool {
    send_within(socket, Message::Text(text.into()), within).await
}

/// Sends `message`; false when it failed or was not out `within`.
async fn send_within(socket: &mut WebSocket, message: Message, within: Duration) -> bool {
    let sent = tokio::time::timeout(within, socket.send(message)).await;
    matches!(sent, Ok(Ok(())))
}

/// Sends a close frame (given up after `within`, as [`send`]) and waits briefly for the
/// client's, so the code reaches it.
pub async fn close(mut socket: WebSocket, (code, reason): (u16, &str), within: Duration) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if !send_within(&mut socket, Message::Close(Some(frame)), within).await {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn origins_are_checked_only_when_listed() {
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, HeaderValue::from_static("https://game.example"));
        assert!(origin_allowed(&[], &h));
        assert!(origin_allowed(&["https://game.example".into()], &h));
        assert!(!origin_allowed(&["https://other.example".into()], &h));
        assert!(origin_allowed(
            &["https://other.example".into()],
            &HeaderMap::new()
        ));
    }
}
