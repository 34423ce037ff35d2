//! Every non-2xx answer, in Xsolla's error shape `{"error":{"code":…,"message":…}}`.
//!
//! 4xx tells Xsolla not to re-send (the webhook is wrong); 503 tells it to re-send later
//! (we could not make it durable, or could not get an answer), so 503 is the answer
//! whenever durability is unsure.

use std::net::IpAddr;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header::RETRY_AFTER},
    response::{IntoResponse as _, Response},
};
use serde_json::json;
use shared::signature::SignatureError;

/// Why a webhook was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidSignature(#[from] SignatureError),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("client IP {0} is not allowed")]
    ForbiddenIp(IpAddr),
    #[error("Invalid user")]
    InvalidUser,
    /// Durability or an answer could not be had; Xsolla should try again later.
    #[error("{reason}")]
    Unavailable { reason: String, retry_after: u32 },
}

impl ApiError {
    /// The metrics label for this answer.
    pub fn outcome(&self) -> &'static str {
        match self {
            ApiError::InvalidSignature(_) => "invalid_signature",
            ApiError::InvalidParameter(_) => "invalid_parameter",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::ForbiddenIp(_) => "forbidden_ip",
            ApiError::InvalidUser => "invalid_user",
            ApiError::Unavailable { .. } => "unavailable",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidSignature(_)
            | ApiError::InvalidParameter(_)
            | ApiError::InvalidUser => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::ForbiddenIp(_) => StatusCode::FORBIDDEN,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Xsolla's error code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidSignature(_) => "INVALID_SIGNATURE",
            ApiError::InvalidParameter(_) | ApiError::TooLarge { .. } => "INVALID_PARAMETER",
            ApiError::ForbiddenIp(_) => "INVALID_CLIENT_IP",
            ApiError::InvalidUser => "INVALID_USER",
            ApiError::Unavailable { .. } => "SERVER_ERROR",
        }
    }
}

impl ApiError {
    /// Whether this answer is a 5xx: its detail stays in the log, never in the answer.
    pub fn is_server_error(&self) -> bool {
        self.status().is_server_error()
    }

    /// The answer to send. A 5xx says only "retry later" and `request_id`, which is also on
    /// the WARN line carrying the detail: broker and user-API errors can name hosts,
    /// queues and URLs that are nobody's business outside.
    pub fn into_answer(self, request_id: &str) -> Response {
        let message = if self.is_server_error() {
            format!("Temporarily unavailable; retry later (request {request_id})")
        } else {
            self.to_string()
        };
        let body = Json(json!({"error": {"code": self.code(), "message": message}}));
        let mut response = (self.status(), body).into_response();
        if let ApiError::Unavailable { retry_after, .. } = self {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after));
        }
        response
    }
}

/// A new id for one failed request, to find its log line from the answer.
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
