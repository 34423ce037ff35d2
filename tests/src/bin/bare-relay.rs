//! `bare-relay`: the least an HTTP → RabbitMQ service can do and still answer only after
//! the broker's confirm. It is a measuring stick for `xsolla-bench ingress`, not a product:
//! no signature check, no JSON, no allowlist, no logs, no metrics, no reconnects.
//!
//! Each POST's body is published like the ingress publishes it (persistent, `mandatory`,
//! the same headers, one confirm-mode channel) and answered 204 after the confirm, 503
//! otherwise. The benchmark runs it beside the ingress: what it reaches is what any HTTP
//! ingress on top of lapin can reach on the same machine, so the ingress's distance to it
//! is the cost of our own code, and its distance to the bare publisher is the cost of HTTP.
//!
//! Environment: `RELAY_LISTEN` (host:port) and `AMQP_URL`. `GET /readyz` answers 200.
//!
//! `RELAY_REQUIRED_SECRET`, if set, adds the work the ingress cannot leave out, done by the
//! ingress's own functions: the signature checked against that secret
//! (`shared::signature::verify`), the body's strict summary (`shared::webhook::summarize`)
//! and one answer line on stderr (tracing's text format at INFO). A 400 if either check
//! fails. It prices that floor (`xsolla-bench ingress-ab --floor`): the ingress's distance
//! to this relay is everything else (allowlist, timeouts, metrics, routing, the envelope from
//! the summary).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use lapin::{Channel, options::ConfirmSelectOptions};
use shared::{envelope, publish::publish_confirmed, topology::EXCHANGE};

// The same allocator as the ingress, so the comparison is of the code, not of malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KIND: &str = "order_paid";

struct Relay {
    channel: Channel,
    next_id: AtomicU64,
    /// `RELAY_REQUIRED_SECRET`: do the ingress's required work too.
    required_secret: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env =
        |name: &str| std::env::var(name).map_err(|_| anyhow::anyhow!("bare-relay: set {name}"));
    let (listen, amqp_url) = (env("RELAY_LISTEN")?, env("AMQP_URL")?);
    let required_secret = std::env::var("RELAY_REQUIRED_SECRET").ok();
    if required_secret.is_some() {
        shared::telemetry::init_tracing(shared::telemetry::LogFormat::Text);
    }
    let connection = shared::amqp::connect(&amqp_url, "xsolla-bench bare relay").await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let relay = Arc::new(Relay {
        channel,
        next_id: AtomicU64::new(1),
        required_secret,
    });
    let app = Router::new()
        .route("/webhooks/xsolla", post(publish))
        .route("/readyz", get(|| async { StatusCode::OK }))
        .with_state(relay);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn publish(State(relay): State<Arc<Relay>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let signature = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let traceparent = envelope::new_traceparent();
    if let Some(secret) = &relay.required_secret {
        let started = std::time::Instant::now();
        let checked = shared::signature::verify(Some(signature), &body, &[secret])
            .map_err(|e| e.to_string())
            .and_then(|_| shared::webhook::summarize(&body).map_err(|e| e.to_string()));
        match checked {
            Ok(summary) => tracing::info!(
                notification_type = summary.notification_type,
                order_id = summary.order_id,
                transaction_id = summary.transaction_id,
                user_id = summary.user_id,
                message_id = summary.dedup_id,
                traceparent,
                status = 204,
                outcome = "accepted",
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                "webhook answered"
            ),
            Err(error) => {
                tracing::warn!(%error, "webhook refused");
                return StatusCode::BAD_REQUEST;
            }
        }
    }
    let id = relay.next_id.fetch_add(1, Ordering::Relaxed);
    let properties = envelope::received_properties(&envelope::Received {
        notification_type: KIND,
        message_id: &format!("{KIND}:relay-{id}"),
        signature,
        traceparent: &traceparent,
        project_id: None,
    });
    let timeout = Duration::from_secs(10);
    match publish_confirmed(&relay.channel, EXCHANGE, KIND, &body, properties, timeout).await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}
