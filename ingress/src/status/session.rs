//! One WebSocket conversation: `connect` first (within the timeout), then history calls,
//! live pushes and pings until the order tracking is finished, the window elapses, the
//! client goes silent or the server shuts down (`docs/centrifuge-protocol.md` §15).

use std::{sync::Arc, time::Duration};

use axum::extract::ws::{Message, WebSocket};
use tokio::{
    sync::broadcast::error::RecvError,
    time::{Instant, sleep, sleep_until},
};
use tokio_tungstenite::tungstenite;

use super::{
    App,
    auth::AuthError,
    protocol::{self, ConnectRequest, HistoryRequest, Method, code, lines},
    state::Subscription,
    view::{ChannelKey, Publication, Status},
    ws::{self, close},
};

/// How much longer than the ping interval a client may stay silent (Go's pong timeout).
const PONG_GRACE: Duration = Duration::from_secs(10);

/// How a conversation ends.
enum End {
    /// Close with this code.
    Close((u16, &'static str)),
    /// The client left (or the socket failed): nothing to send.
    Gone,
}

/// A connected client.
struct Connected {
    key: ChannelKey,
    channel: String,
    subscription: Subscription,
    tracking: Tracking,
}

/// When to close with 4500: after the final status of the user's last open order, and only
/// if the user had an open order during this connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tracking {
    had_open: bool,
    finishing: bool,
}

impl Tracking {
    /// Records a pushed status; true when the grace timer must start now.
    fn saw(&mut self, status: Status, open_orders: impl FnOnce() -> usize) -> bool {
        if status == Status::Paid {
            self.had_open = true;
            self.finishing = false;
            return false;
        }
        if self.had_open && !self.finishing && open_orders() == 0 {
            self.finishing = true;
            return true;
        }
        false
    }
}

/// What a `connect` came to.
enum ConnectOutcome {
    Connected(Connected),
    /// Refused with an error reply the client may answer with a fresh token.
    Retry,
}

/// Serves one upgraded socket until it ends.
pub async fn serve(mut socket: WebSocket, app: Arc<App>) {
    let Some(_slot) = app.state.connection(app.limits.max_connections) else {
        return ws::close(socket, close::TOO_MANY, app.limits.write_timeout).await;
    };
    let started = Instant::now();
    let end = match handshake(&mut socket, &app).await {
        Ok((connected, rest)) => converse(&mut socket, &app, connected, rest, started).await,
        Err(end) => end,
    };
    if let End::Close(code) = end {
        tracing::debug!(code = code.0, reason = code.1, "closing WebSocket");
        ws::close(socket, code, app.limits.write_timeout).await;
    }
}

/// The next text frame; pings, pongs and other control frames are skipped.
async fn next_text(socket: &mut WebSocket) -> Result<String, End> {
    loop {
        match socket.recv().await {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(Message::Binary(_))) => return Err(End::Close(close::BAD_REQUEST)),
            Some(Ok(Message::Close(_))) | None => return Err(End::Gone),
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                return Err(if is_too_big(e) {
                    End::Close(close::TOO_BIG)
                } else {
                    End::Gone
                });
            }
        }
    }
}

/// Over `STATUS_MAX_FRAME_BYTES`: tungstenite refuses to buffer it.
fn is_too_big(e: axum::Error) -> bool {
    e.into_inner()
        .downcast::<tungstenite::Error>()
        .is_ok_and(|e| matches!(*e, tungstenite::Error::Capacity(_)))
}

/// Waits for `connect` and answers it; returns the lines that followed it in its frame.
async fn handshake(socket: &mut WebSocket, app: &App) -> Result<(Connected, Vec<String>), End> {
    let deadline = sleep(app.limits.connect_timeout);
    tokio::pin!(deadline);
    loop {
        let text = tokio::select! {
            () = app.shutdown.cancelled() => return Err(End::Close(close::SHUTDOWN)),
            () = &mut deadline => return Err(End::Close(close::STALE)),
            text = next_text(socket) => text?,
        };
        let mut frame = lines(&text);
        while let Some(line) = frame.next() {
            let Some(command) = protocol::parse(line) else {
                return Err(End::Close(close::BAD_REQUEST));
            };
            match command.method {
                Method::Pong | Method::Send => {}
                Method::Connect(req) => match connect(socket, app, command.id, &req).await? {
                    ConnectOutcome::Connected(c) => {
                        return Ok((c, frame.map(str::to_owned).collect()));
                    }
                    ConnectOutcome::Retry => {}
                },
                _ => return Err(End::Close(close::BAD_REQUEST)),
            }
        }
    }
}

/// Why a `connect` is refused: the error reply, then a close unless the client may retry.
struct Refusal {
    code: u32,
    message: &'static str,
    close: Option<(u16, &'static str)>,
}

const UNAUTHORIZED: Refusal = Refusal {
    code: code::UNAUTHORIZED,
    message: "unauthorized",
    close: Some(close::INVALID_TOKEN),
};

/// The player's channel, if the token verifies and the hints agree with it.
fn authenticate(app: &App, req: &ConnectRequest) -> Result<ChannelKey, Refusal> {
    let user = match app.verifier.verify(req.jwt().unwrap_or_default()) {
        Ok(user) => user,
        // The client may get a fresh token and connect again; the timeout still runs.
        Err(AuthError::Expired) => {
            return Err(Refusal {
                code: code::TOKEN_EXPIRED,
                message: "token expired",
                close: None,
            });
        }
        Err(error) => {
            tracing::debug!(%error, "WebSocket connect refused");
            return Err(UNAUTHORIZED);
        }
    };
    if req.user_hint().is_some_and(|hint| hint != user) {
        return Err(UNAUTHORIZED);
    }
    let project_id = req.project_id().ok_or(Refusal {
        code: code::BAD_REQUEST,
        message: "bad request: data.project_id is required",
        close: Some(close::BAD_REQUEST),
    })?;
    Ok(ChannelKey::new(project_id, &user))
}

/// Authenticates, joins the user's channel and replies; then tells the client the current
/// status of its open and recently finished orders (raw SDKs never ask for history).
async fn connect(
    socket: &mut WebSocket,
    app: &App,
    id: u32,
    req: &ConnectRequest,
) -> Result<ConnectOutcome, End> {
    let key = match authenticate(app, req) {
        Ok(key) => key,
        Err(refusal) => {
            send(
                socket,
                app,
                protocol::error_reply(id, refusal.code, refusal.message),
            )
            .await?;
            return match refusal.close {
                Some(code) => Err(End::Close(code)),
                None => Ok(ConnectOutcome::Retry),
            };
        }
    };
    let recent_since = unix_now() - app.limits.tracking_window.as_secs() as i64;
    let joined = app
        .state
        .subscribe(&key, app.limits.max_connections_per_user, |v| {
            (v.current(&key, recent_since), v.open_orders(&key))
        });
    let Ok((subscription, (current, open))) = joined else {
        return Err(End::Close(close::TOO_MANY));
    };
    let channel = key.name();
    let client = uuid::Uuid::new_v4().to_string();
    let ping = app.limits.ping_interval.as_secs().max(1);
    let version = env!("CARGO_PKG_VERSION");
    send(
        socket,
        app,
        protocol::connect_reply(id, &client, version, ping, &channel),
    )
    .await?;
    for publication in &current {
        push(socket, app, &channel, publication).await?;
    }
    Ok(ConnectOutcome::Connected(Connected {
        key,
        channel,
        subscription,
        tracking: Tracking {
            had_open: open > 0,
            finishing: false,
        },
    }))
}

/// After `connect`: history, pushes, pings, and the reasons to close.
async fn converse(
    socket: &mut WebSocket,
    app: &App,
    mut c: Connected,
    rest: Vec<String>,
    started: Instant,
) -> End {
    let limits = &app.limits;
    for line in &rest {
        if let Err(end) = command(socket, app, &c, line).await {
            return end;
        }
    }
    let window = sleep_until(started + limits.tracking_window);
    // Armed only once the last open order is final.
    let finish = sleep(Duration::from_secs(365 * 24 * 3600));
    let silence = sleep(limits.ping_interval + PONG_GRACE);
    tokio::pin!(window, finish, silence);
    let mut ping =
        tokio::time::interval_at(Instant::now() + limits.ping_interval, limits.ping_interval);
    // A ping late because a write stalled is not made up for with a burst.
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let step = tokio::select! {
            () = app.shutdown.cancelled() => Err(End::Close(close::SHUTDOWN)),
            () = &mut window => Err(End::Close(close::WINDOW)),
            () = &mut finish, if c.tracking.finishing => Err(End::Close(close::FINISHED)),
            () = &mut silence => Err(End::Close(close::NO_PONG)),
            _ = ping.tick() => send(socket, app, "{}".to_owned()).await,
            publication = c.subscription.rx.recv() => {
                let p = publication.map_err(|e| match e {
                    RecvError::Lagged(_) => End::Close(close::SLOW),
                    RecvError::Closed => End::Gone,
                });
                match p {
                    Ok(p) => {
                        if c.tracking.saw(p.status, || app.state.read(|v| v.open_orders(&c.key))) {
                            finish.as_mut().reset(Instant::now() + limits.final_grace);
                        }
                        push(socket, app, &c.channel, &p).await
                    }
                    Err(end) => Err(end),
                }
            }
            text = next_text(socket) => match text {
                Ok(text) => {
                    silence.as_mut().reset(Instant::now() + limits.ping_interval + PONG_GRACE);
                    commands(socket, app, &c, &text).await
                }
                Err(end) => Err(end),
            },
        };
        if let Err(end) = step {
            return end;
        }
    }
}

async fn commands(socket: &mut WebSocket, app: &App, c: &Connected, text: &str) -> Result<(), End> {
    for line in lines(text) {
        command(socket, app, c, line).await?;
    }
    Ok(())
}

/// One command after `connect`.
async fn command(socket: &mut WebSocket, app: &App, c: &Connected, line: &str) -> Result<(), End> {
    let Some(command) = protocol::parse(line) else {
        return Err(End::Close(close::BAD_REQUEST));
    };
    let id = command.id;
    let reply = match command.method {
        Method::Pong | Method::Send => return Ok(()),
        Method::Connect(_) => return Err(End::Close(close::BAD_REQUEST)),
        Method::History(req) => history(app, c, id, &req),
        // A reply without an id would read as a server ping: nothing to answer.
        Method::Unsupported(_) if id == 0 => return Ok(()),
        Method::Unsupported(name) => protocol::error_reply(
            id,
            code::METHOD_NOT_FOUND,
            &format!("method not found: {name}"),
        ),
    };
    send(socket, app, reply).await
}

/// The history of the client's own channel, as `docs/centrifuge-protocol.md` §6 filters it.
fn history(app: &App, c: &Connected, id: u32, req: &HistoryRequest) -> String {
    if req.channel != c.channel {
        return protocol::error_reply(id, code::PERMISSION_DENIED, "permission denied");
    }
    let since = req.since.as_ref();
    if req.reverse && since.is_some_and(|s| s.offset == 0) {
        return protocol::error_reply(id, code::BAD_REQUEST, "bad request");
    }
    if since.is_some_and(|s| !s.epoch.is_empty() && s.epoch != app.state.epoch) {
        return protocol::error_reply(id, code::UNRECOVERABLE_POSITION, "unrecoverable position");
    }
    let (pubs, top) = app.state.read(|v| {
        let pubs = match req.max() {
            Some(0) => Vec::new(),
            max => v.history(&c.key, since.map(|s| s.offset), max, req.reverse),
        };
        (pubs, v.top(&c.key))
    });
    protocol::history_reply(id, &pubs, &app.state.epoch, top)
}

async fn push(
    socket: &mut WebSocket,
    app: &App,
    channel: &str,
    p: &Publication,
) -> Result<(), End> {
    send(socket, app, protocol::push(channel, p)).await?;
    metrics::counter!("status_publications_sent_total").increment(1);
    Ok(())
}

/// A frame not sent within `WRITE_TIMEOUT` ends the conversation: while a
/// send waits, nothing else here runs (not the window, the pong timer or shutdown).
async fn send(socket: &mut WebSocket, app: &App, text: String) -> Result<(), End> {
    if ws::send(socket, text, app.limits.write_timeout).await {
        Ok(())
    } else {
        Err(End::Gone)
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_after_the_last_open_order_only_if_one_was_open() {
        let mut idle = Tracking::default();
        assert!(!idle.saw(Status::Done, || 0), "no open order seen: stay");
        let mut t = Tracking::default();
        assert!(!t.saw(Status::Paid, || 2));
        assert!(!t.saw(Status::Done, || 1), "another order still open");
        assert!(t.saw(Status::Canceled, || 0));
        assert!(
            !t.saw(Status::Done, || 0),
            "already finishing: the timer keeps running"
        );
        assert!(!t.saw(Status::Paid, || 1));
        assert!(!t.finishing, "a new open order calls the close off");
    }
}
