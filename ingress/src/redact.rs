//! URLs as they may be shown: in a log line, an error message or an answer. Operators put
//! keys in query strings (`?api_key=…`) and passwords in the authority; neither may leave
//! the process.

/// `url` with its password and every query value replaced by `***` and its fragment
/// dropped; the scheme, host, path and query keys stay (what one needs to debug). A
/// `{user_id}` placeholder is kept readable. Anything unparseable is hidden whole.
pub fn url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return "<not a URL>".to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query().is_some() {
        let keys: Vec<String> = parsed.query_pairs().map(|(k, _)| k.into_owned()).collect();
        parsed.set_query(None);
        let mut query = parsed.query_pairs_mut();
        for key in keys {
            query.append_pair(&key, "***");
        }
    }
    parsed.set_fragment(None);
    parsed
        .as_str()
        .replace("%7Buser_id%7D", "{user_id}")
        .replace("%2A%2A%2A", "***")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_passwords_and_query_values_only() {
        assert_eq!(
            url("https://bot:S3CR3T-pw@game.example/users/{user_id}?api_key=S3CR3T-key&v=2#S3CR3T"),
            "https://bot:***@game.example/users/{user_id}?api_key=***&v=***"
        );
        assert_eq!(
            url("http://game/users/{user_id}"),
            "http://game/users/{user_id}"
        );
        assert_eq!(url("not a url S3CR3T"), "<not a URL>");
    }
}
