//! Reading the binaries' `LOG_FORMAT=json` logs in the suites: one JSON object per line,
//! with the keys in the order written (a `serde_json::Value` would silently keep only the
//! last of a repeated key, which is exactly what a log line must not have).

use anyhow::Context as _;
use serde_json::{Map, Value};

/// One line of a JSON log.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub raw: String,
    /// Every top-level key, in order, repeats included.
    pub keys: Vec<String>,
    pub fields: Map<String, Value>,
}

impl LogLine {
    /// The string value of `key`, if it is a string.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }

    /// Keys that appear more than once.
    pub fn repeated_keys(&self) -> Vec<&str> {
        let mut seen = std::collections::BTreeSet::new();
        let mut repeated: Vec<&str> = self
            .keys
            .iter()
            .filter(|k| !seen.insert(k.as_str()))
            .map(String::as_str)
            .collect();
        repeated.dedup();
        repeated
    }
}

/// Every non-empty line of `text` as a [`LogLine`]; an error names the first line that is
/// not a JSON object (a plain-text line in a JSON log is a bug: a shipper drops it).
pub fn parse_json_log(text: &str) -> anyhow::Result<Vec<LogLine>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let keys = object_keys(line).with_context(|| format!("not a JSON object: {line}"))?;
            let fields: Map<String, Value> = serde_json::from_str(line)?;
            Ok(LogLine {
                raw: line.to_owned(),
                keys,
                fields,
            })
        })
        .collect()
}

fn object_keys(line: &str) -> anyhow::Result<Vec<String>> {
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut keys = Vec::new();
            while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                keys.push(key);
            }
            Ok(keys)
        }
    }
    let mut de = serde_json::Deserializer::from_str(line);
    let keys = serde::Deserializer::deserialize_map(&mut de, Keys)?;
    de.end()?;
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_repeated_keys_and_refuses_plain_text() {
        let lines = parse_json_log("{\"a\":1,\"b\":{\"a\":2},\"a\":3}\n\n{\"c\":\"x\"}\n").unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].repeated_keys(), ["a"]);
        assert!(lines[1].repeated_keys().is_empty());
        assert_eq!(lines[1].str("c"), Some("x"));
        assert!(parse_json_log("{\"a\":1}\nthread 'main' panicked at x\n").is_err());
    }
}
