//! HTTP surface: the two contract endpoints, health, and the demo-only admin API.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::contract::{Endpoint, InventoryRequest};
use super::faults::{FaultAction, Faults, FaultsPatch};
use super::state::{Draw, Store};

/// Longest a `GET /_admin/state?after=` long-poll may wait.
const MAX_LONG_POLL: Duration = Duration::from_secs(60);
/// Long-poll wait when the caller gives none.
const DEFAULT_LONG_POLL: Duration = Duration::from_secs(30);

pub(crate) struct App {
    pub store: Arc<Store>,
    /// Expected bearer token; `None` accepts any (or no) `Authorization`.
    pub token: Option<String>,
    /// Cancelled at shutdown so hanging calls and long-polls end at once instead of
    /// holding graceful shutdown for their full duration.
    pub shutdown: CancellationToken,
}

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/grants", post(grants))
        .route("/revocations", post(revocations))
        .route("/healthz", get(|| async { "ok" }))
        .route("/_admin/state", get(admin_state))
        .route(
            "/_admin/faults",
            get(get_faults).put(put_faults).patch(patch_faults),
        )
        .route("/_admin/reset", post(reset))
        .with_state(app)
}

/// An answer before it becomes a [`Response`], so it can be recorded and logged.
struct Reply {
    status: StatusCode,
    body: Bytes,
    outcome: &'static str,
    retry_after: Option<u64>,
    order_id: Option<String>,
}

impl Reply {
    fn json(status: StatusCode, body: serde_json::Value, outcome: &'static str) -> Self {
        Self {
            status,
            body: Bytes::from(body.to_string()),
            outcome,
            retry_after: None,
            order_id: None,
        }
    }

    fn error(status: StatusCode, code: &str, outcome: &'static str) -> Self {
        Self::json(status, json!({ "error": code }), outcome)
    }

    fn into_response(self) -> Response {
        let mut resp = Response::new(Body::from(self.body));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

async fn grants(state: State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    effect(state, Endpoint::Grants, headers, body).await
}

async fn revocations(state: State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    effect(state, Endpoint::Revocations, headers, body).await
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn effect(
    State(app): State<Arc<App>>,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let key = header_string(&headers, "idempotency-key");
    let traceparent = header_string(&headers, "traceparent");
    let draw = app.store.arrive(endpoint);
    let reply = decide(
        &app,
        endpoint,
        &headers,
        key.as_deref(),
        traceparent.as_deref(),
        &body,
        draw,
    )
    .await;
    tracing::info!(
        endpoint = endpoint.as_str(),
        status = reply.status.as_u16(),
        outcome = reply.outcome,
        idempotency_key = key.as_deref().unwrap_or("-"),
        order_id = reply.order_id.as_deref().unwrap_or("-"),
        traceparent = traceparent.as_deref().unwrap_or("-"),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "inventory call"
    );
    app.store
        .answered(endpoint, key, traceparent, reply.status, reply.outcome);
    reply.into_response()
}

/// The contract's decision chain. Faults come before parsing because a broken game
/// fails whatever it is sent; the effect is applied only past every check.
async fn decide(
    app: &App,
    endpoint: Endpoint,
    headers: &HeaderMap,
    key: Option<&str>,
    traceparent: Option<&str>,
    body: &[u8],
    draw: Draw,
) -> Reply {
    if draw.down {
        return Reply::error(StatusCode::SERVICE_UNAVAILABLE, "down", "down");
    }
    if let Some(token) = &app.token {
        let expected = format!("Bearer {token}");
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        // Plain comparison: this is a local test double, not a place for secrets.
        if given != Some(expected.as_str()) {
            return Reply::error(StatusCode::UNAUTHORIZED, "unauthorized", "unauthorized");
        }
    }
    match draw.action {
        FaultAction::Fail5xx => {
            return Reply::error(StatusCode::SERVICE_UNAVAILABLE, "injected", "injected_5xx");
        }
        FaultAction::Fail429 => {
            let mut r = Reply::error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "injected_429",
            );
            r.retry_after = Some(draw.retry_after_secs);
            return r;
        }
        FaultAction::Timeout => {
            tokio::select! {
                () = tokio::time::sleep(draw.timeout) => {}
                () = app.shutdown.cancelled() => {
                    return Reply::error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "injected_timeout_cut");
                }
            }
            return Reply::error(StatusCode::GATEWAY_TIMEOUT, "timeout", "injected_timeout");
        }
        FaultAction::Fail4xx => {
            return Reply::error(StatusCode::BAD_REQUEST, "injected", "injected_4xx");
        }
        FaultAction::None | FaultAction::FailAfterApply => {}
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Reply::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "unsupported_media_type",
        );
    }
    let Some(key) = key.filter(|k| !k.trim().is_empty()) else {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            "missing_idempotency_key",
            "missing_idempotency_key",
        );
    };
    let req = match InventoryRequest::parse(body, key) {
        Ok(req) => req,
        Err(bad) => {
            return Reply::json(
                StatusCode::BAD_REQUEST,
                json!({"error": bad.code, "message": bad.message}),
                "invalid_request",
            );
        }
    };
    let answer = app.store.apply(endpoint, &req, traceparent);
    let mut reply = if draw.action == FaultAction::FailAfterApply && answer.status.is_success() {
        // The effect is stored; only the answer is lost, as with a dropped connection.
        Reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "injected_after_apply",
            "injected_after_apply",
        )
    } else {
        Reply {
            status: answer.status,
            body: answer.body,
            outcome: answer.outcome,
            retry_after: None,
            order_id: None,
        }
    };
    reply.order_id = Some(req.order_id);
    reply
}

/// Query of `GET /_admin/state`.
#[derive(Deserialize)]
struct StateQuery {
    /// Answer only once the version is greater than this (long-poll).
    after: Option<u64>,
    /// How long to wait for that, in milliseconds.
    wait_ms: Option<u64>,
}

async fn admin_state(State(app): State<Arc<App>>, Query(q): Query<StateQuery>) -> Response {
    if let Some(after) = q.after {
        let wait = q
            .wait_ms
            .map_or(DEFAULT_LONG_POLL, Duration::from_millis)
            .min(MAX_LONG_POLL);
        let deadline = Instant::now() + wait;
        let mut rx = app.store.subscribe();
        loop {
            rx.borrow_and_update();
            if app.store.version() > after {
                break;
            }
            tokio::select! {
                r = tokio::time::timeout_at(deadline, rx.changed()) => if r.is_err() { break },
                () = app.shutdown.cancelled() => break,
            }
        }
    }
    axum::Json(app.store.snapshot()).into_response()
}

async fn get_faults(State(app): State<Arc<App>>) -> Response {
    axum::Json(app.store.faults()).into_response()
}

fn bad_faults(message: String) -> Response {
    Reply::json(
        StatusCode::BAD_REQUEST,
        json!({"error": "invalid_faults", "message": message}),
        "invalid_faults",
    )
    .into_response()
}

async fn put_faults(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return bad_faults(e.to_string()),
    };
    if let Err(e) = faults.validate() {
        return bad_faults(e.to_string());
    }
    tracing::info!(?faults, "faults replaced");
    app.store.set_faults(faults.clone());
    axum::Json(faults).into_response()
}

async fn patch_faults(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let patch: FaultsPatch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad_faults(e.to_string()),
    };
    match app.store.update_faults(|old| {
        let next = patch.applied_to(old);
        next.validate().map(|()| next)
    }) {
        Ok(faults) => {
            tracing::info!(?faults, "faults patched");
            axum::Json(faults).into_response()
        }
        Err(e) => bad_faults(e.to_string()),
    }
}

async fn reset(State(app): State<Arc<App>>) -> StatusCode {
    app.store.reset();
    tracing::info!("state reset");
    StatusCode::NO_CONTENT
}
