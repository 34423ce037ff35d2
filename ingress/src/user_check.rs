//! Live answers for `user_validation` (and `user_search`): ask the game's user API whether
//! the player exists, within a deadline, because Xsolla waits on this answer at checkout.

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;

/// Characters left as they are in a user id put into the URL (RFC 3986 unreserved).
const USER_ID: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The game's answer about one user.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// 2xx; the JSON body if it had one (used to answer `user_search`).
    Exists(Option<Value>),
    /// 404.
    Unknown,
}

/// Why the game could not answer: the webhook gets 503 and Xsolla may ask again. Messages
/// name the API by its redacted template (see [`crate::redact`]), never the URL asked.
#[derive(Debug, thiserror::Error)]
pub enum UserCheckError {
    #[error("user API {api} did not answer within {timeout:?}")]
    Timeout { api: String, timeout: Duration },
    #[error("user API {api} answered {status}")]
    Status { api: String, status: u16 },
    #[error("user API {api} unreachable: {reason}")]
    Unreachable { api: String, reason: String },
    #[error("user API {api} answered more than {limit} bytes")]
    TooLarge { api: String, limit: usize },
}

/// Most of a user API answer that is read. A user is a few hundred bytes; without a cap a
/// misrouted `USER_CHECK_URL` (a listing, a download) was read whole into memory, as fast
/// as the game could send it until `USER_CHECK_TIMEOUT`.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Client for `USER_CHECK_URL`.
#[derive(Debug, Clone)]
pub struct UserCheck {
    template: String,
    /// The template as it may be logged.
    shown: String,
    token: Option<SecretString>,
    timeout: Duration,
    client: reqwest::Client,
}

/// Checks that a template is an http(s) URL with a `{user_id}` placeholder.
pub fn validate_template(template: &str) -> Result<(), String> {
    let shown = crate::redact::url(template);
    if !template.contains("{user_id}") {
        return Err(format!("`{shown}` has no {{user_id}} placeholder"));
    }
    let sample = template.replace("{user_id}", "x");
    let url = reqwest::Url::parse(&sample).map_err(|e| format!("`{shown}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{shown}` must be http:// or https://"));
    }
    Ok(())
}

/// Whether `user_id` can be put into the template as a path segment of its own. `.` and
/// `..` cannot: URL parsers resolve them as dot segments (and `%2E`, `.%2e`, … too, per the
/// WHATWG URL standard), so `/users/..` would ask the API's root, whose 2xx would read as
/// "exists"; an empty id would ask the collection `/users/`. No game names a player so;
/// they are answered as unknown users without asking.
fn is_lookup_safe(user_id: &str) -> bool {
    !matches!(user_id, "" | "." | "..")
}

impl UserCheck {
    pub fn new(template: String, token: Option<SecretString>, timeout: Duration) -> UserCheck {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("a client with only a timeout set builds");
        UserCheck {
            shown: crate::redact::url(&template),
            template,
            token,
            timeout,
            client,
        }
    }

    /// Looks `user_id` up; 2xx = exists, 404 = unknown, anything else is an error.
    pub async fn lookup(&self, user_id: &str, traceparent: &str) -> Result<Lookup, UserCheckError> {
        if !is_lookup_safe(user_id) {
            return Ok(Lookup::Unknown);
        }
        let url = self.template.replace(
            "{user_id}",
            &utf8_percent_encode(user_id, USER_ID).to_string(),
        );
        let mut request = self.client.get(url).header("traceparent", traceparent);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose_secret());
        }
        let response = request.send().await.map_err(|e| self.classify(e))?;
        let status = response.status();
        if status.is_success() {
            let body = self.read_capped(response).await?;
            return Ok(Lookup::Exists(serde_json::from_slice(&body).ok()));
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Lookup::Unknown);
        }
        Err(UserCheckError::Status {
            api: self.shown.clone(),
            status: status.as_u16(),
        })
    }

    /// The answer's body, refused once it passes [`MAX_ANSWER_BYTES`].
    async fn read_capped(
        &self,
        mut response: reqwest::Response,
    ) -> Result<Vec<u8>, UserCheckError> {
        let too_large = || UserCheckError::TooLarge {
            api: self.shown.clone(),
            limit: MAX_ANSWER_BYTES,
        };
        if response
            .content_length()
            .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.classify(e))? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn classify(&self, e: reqwest::Error) -> UserCheckError {
        let api = self.shown.clone();
        if e.is_timeout() {
            return UserCheckError::Timeout {
                api,
                timeout: self.timeout,
            };
        }
        // reqwest's message names the URL asked, query string and all: leave it out, keep
        // the causes (they name no URL).
        let e = e.without_url();
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            reason.push_str(": ");
            reason.push_str(&cause.to_string());
            source = cause.source();
        }
        UserCheckError::Unreachable { api, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_need_a_placeholder_and_http() {
        assert!(validate_template("http://game/users/{user_id}").is_ok());
        assert!(
            validate_template("http://game/users")
                .unwrap_err()
                .contains("{user_id}")
        );
        assert!(validate_template("ftp://game/{user_id}").is_err());
        assert!(validate_template("not a url {user_id}").is_err());
    }

    #[test]
    fn dot_segments_and_empty_ids_are_never_looked_up() {
        for id in ["", ".", ".."] {
            assert!(!is_lookup_safe(id), "{id:?}");
        }
        for id in ["...", ".a", "a.", "a..b", "%2e"] {
            assert!(is_lookup_safe(id), "{id:?}");
        }
    }

    #[test]
    fn user_ids_are_escaped_into_one_path_segment() {
        let escaped = utf8_percent_encode("a/b c?d", USER_ID).to_string();
        assert_eq!(escaped, "a%2Fb%20c%3Fd");
    }
}
