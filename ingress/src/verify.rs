//! Turns an HTTP request into a verified webhook, in the official SDK's order: client IP,
//! then the signature over the raw bytes, then the JSON. Nothing past this point sees an
//! unverified body.

use std::{
    net::{IpAddr, SocketAddr},
    sync::OnceLock,
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::{ConnectInfo, Request},
    http::header::{AUTHORIZATION, CONTENT_LENGTH},
};
use ipnet::IpNet;
use metrics::Counter;
use shared::{envelope, signature, webhook};

use crate::{
    allowlist::{self, IpAllowlist},
    error::ApiError,
    log_limit::LogLimit,
    secrets::Secrets,
};

/// A webhook whose signature matched one of its route's secrets.
#[derive(Debug)]
pub struct VerifiedWebhook {
    /// The body exactly as received.
    pub body: Bytes,
    pub summary: webhook::Summary,
    /// The `Authorization` header, kept on the message so consumers can re-verify.
    pub signature: String,
    /// Project named by the route, if any.
    pub project_id: Option<u64>,
    /// The caller's `traceparent` if valid, else a new one.
    pub traceparent: String,
}

/// A webhook not accepted: the answer to send and, for a body that was read, the order id
/// it claims (unverified, and only if it looks like an id: [`webhook::claimed_order_id`]),
/// for the line that refuses it.
#[derive(Debug)]
pub struct Refusal {
    pub error: ApiError,
    pub claimed_order_id: Option<String>,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Refusal {
        Refusal {
            error,
            claimed_order_id: None,
        }
    }
}

/// What verifying a webhook needs, and nothing else: the routes' secrets, the allowlist
/// and the proxies believed, and the body limit.
#[derive(Debug)]
pub struct Verifier {
    pub secrets: Secrets,
    pub allowlist: IpAllowlist,
    pub trusted_proxies: Vec<IpNet>,
    pub max_body_bytes: usize,
    /// Limits the WARN about webhooks to routes without secrets (any client can cause it).
    pub unconfigured_route_log: LogLimit<Option<u64>>,
    /// `ingress_signature_matches_total` per slot, looked up once ([`crate::meters`]).
    signature_matches: [OnceLock<Counter>; SLOTS],
}

impl Verifier {
    pub fn new(
        secrets: Secrets,
        allowlist: IpAllowlist,
        trusted_proxies: Vec<IpNet>,
        max_body_bytes: usize,
    ) -> Verifier {
        Verifier {
            secrets,
            allowlist,
            trusted_proxies,
            max_body_bytes,
            unconfigured_route_log: LogLimit::new(Duration::from_secs(60)),
            signature_matches: Default::default(),
        }
    }

    /// Checks IP, size, signature and shape; any failure is the answer to send. `client` is
    /// [`Self::client_ip`] of the request.
    pub async fn verify(
        &self,
        project_id: Option<u64>,
        client: Option<IpAddr>,
        request: Request,
    ) -> Result<VerifiedWebhook, Refusal> {
        let (parts, body) = request.into_parts();
        self.check_client(client)?;
        let body = read_body(&parts.headers, body, self.max_body_bytes).await?;
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""));
        let secrets = self.secrets.for_project(project_id);
        if secrets.is_empty() {
            self.warn_unconfigured(project_id);
        }
        let slot =
            signature::verify(header, &body, secrets).map_err(|e| refused(&body, e.into()))?;
        self.signature_matches[slot.min(SLOTS - 1)]
            .get_or_init(
                || metrics::counter!("ingress_signature_matches_total", "slot" => slot_label(slot)),
            )
            .increment(1);
        let summary = webhook::summarize(&body)
            .map_err(|e| refused(&body, ApiError::InvalidParameter(e.to_string())))?;
        if let (Some(route), Some(body_project)) = (project_id, summary.project_id)
            && route != body_project
        {
            return Err(refused(
                &body,
                ApiError::InvalidParameter(format!(
                    "webhook for project {body_project} posted to the route of project {route}"
                )),
            ));
        }
        let traceparent = parts
            .headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .filter(|t| envelope::is_valid_traceparent(t))
            .map_or_else(envelope::new_traceparent, str::to_owned);
        Ok(VerifiedWebhook {
            body,
            summary,
            signature: header.unwrap_or_default().to_owned(),
            project_id,
            traceparent,
        })
    }

    /// The client's address: the TCP peer, or behind a trusted proxy the first untrusted
    /// hop of `X-Forwarded-For` ([`allowlist::client_ip`]). `None` for a request without a
    /// peer address (a router served without `ConnectInfo`).
    pub fn client_ip(&self, request: &Request) -> Option<IpAddr> {
        let ConnectInfo(peer) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
        let forwarded = request.headers().get_all("x-forwarded-for");
        let lines = forwarded.iter().map(|v| v.to_str().ok());
        Some(allowlist::client_ip(
            peer.ip(),
            lines,
            &self.trusted_proxies,
        ))
    }

    /// The allowlist, if on. A request without a client address is refused rather than let
    /// through: the check fails closed.
    fn check_client(&self, client: Option<IpAddr>) -> Result<(), ApiError> {
        if self.allowlist == IpAllowlist::Off {
            return Ok(());
        }
        let Some(client) = client else {
            return Err(ApiError::ForbiddenIp(IpAddr::from([0, 0, 0, 0])));
        };
        if !self.allowlist.allows(client) {
            return Err(ApiError::ForbiddenIp(client));
        }
        Ok(())
    }

    /// Anyone can post to any project's route: WARN, and once a minute per project.
    fn warn_unconfigured(&self, project_id: Option<u64>) {
        if let Some(suppressed) = self
            .unconfigured_route_log
            .check(&project_id, std::time::Instant::now())
        {
            tracing::warn!(
                ?project_id,
                suppressed,
                "webhook to a route with no secret configured; every webhook to it is refused (suppressed: how many since the last such line)"
            );
        }
    }
}

/// `error`, with the order id that the refused body claims (read only on this path).
fn refused(body: &[u8], error: ApiError) -> Refusal {
    Refusal {
        error,
        claimed_order_id: webhook::claimed_order_id(body),
    }
}

/// Reads the whole body, refusing (never truncating) one over `limit`; a declared
/// `Content-Length` over the limit is refused before reading anything.
async fn read_body(
    headers: &axum::http::HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::TooLarge { limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        // `to_bytes` reports the limit as a source error; anything else is a broken upload.
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::TooLarge { limit }
        } else {
            ApiError::InvalidParameter(format!("cannot read body: {e}"))
        }
    })
}

/// Distinct `slot` labels.
const SLOTS: usize = 5;

/// The `slot` label: the secret's position, bounded (a list longer than a rotation needs
/// shares one label beyond the fourth).
fn slot_label(slot: usize) -> &'static str {
    match slot {
        0 => "0",
        1 => "1",
        2 => "2",
        3 => "3",
        _ => "4+",
    }
}
