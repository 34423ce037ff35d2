//! Every non-2xx answer, in Xsolla's error shape `{"error":{"code":…,"message":…}}`.
//!
//! 4xx tells Xsolla not to re-send (the webhook is wrong); 503 tells it to re-send later
//! (we could not make it durable, or could not get an answer), so 503 is the answer
//! whenever durability is unsure.

use std::net::IpAddr;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header::RETRY_AFTER},
    response::{IntoResponse, Response},
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code(), "message": self.to_string()}}));
        let mut response = (self.status(), body).into_response();
        if let ApiError::Unavailable { retry_after, .. } = self {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after));
        }
        response
    }
}
