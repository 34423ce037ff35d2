//! Which secrets verify which route: `XSOLLA_WEBHOOK_SECRET` for `/webhooks/xsolla`, the
//! projects file for `/webhooks/xsolla/{project_id}`. Each may hold several secrets at once
//! so a key can be rotated without refusing webhooks signed with the other.

use std::{collections::HashMap, fmt, path::Path};

use secrecy::{ExposeSecret as _, SecretString};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// One webhook secret. Held as a [`SecretString`] from the moment it is parsed (zeroed on
/// drop, `[REDACTED]` in `Debug`); exposed only to compute a signature.
#[derive(Clone)]
pub struct WebhookSecret(SecretString);

impl WebhookSecret {
    pub fn new(secret: SecretString) -> WebhookSecret {
        WebhookSecret(secret)
    }
}

impl AsRef<str> for WebhookSecret {
    fn as_ref(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([REDACTED])")
    }
}

/// Secrets by route. Never printed: `Debug` shows only counts.
#[derive(Clone, Default)]
pub struct Secrets {
    default: Vec<WebhookSecret>,
    projects: HashMap<u64, Vec<WebhookSecret>>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("default", &format_args!("{} secret(s)", self.default.len()))
            .field(
                "projects",
                &format_args!("{} project(s)", self.projects.len()),
            )
            .finish()
    }
}

impl Secrets {
    /// From the comma-separated default list and an optional projects file.
    pub fn load(default: &[SecretString], projects_file: Option<&Path>) -> Result<Secrets, String> {
        let default = default
            .iter()
            .map(|s| s.expose_secret().trim())
            .filter(|s| !s.is_empty())
            .map(|s| WebhookSecret(SecretString::from(s)))
            .collect();
        let projects = match projects_file {
            Some(path) => parse_projects_file(path)?,
            None => HashMap::new(),
        };
        Ok(Secrets { default, projects })
    }

    /// The secrets for a route: `None` = the single-project route.
    pub fn for_project(&self, project_id: Option<u64>) -> &[WebhookSecret] {
        match project_id {
            None => &self.default,
            Some(id) => self.projects.get(&id).map(Vec::as_slice).unwrap_or(&[]),
        }
    }

    /// Project ids the file configures (for the start-up log).
    pub fn project_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.projects.keys().copied().collect();
        ids.sort_unstable();
        ids
    }
}

const PROJECTS_FILE: &str = "XSOLLA_PROJECTS_FILE (--projects-file)";

/// Reads the projects file. Every message is written here rather than taken from serde:
/// serde's type errors quote the offending value, and in this file values are secrets.
fn parse_projects_file(path: &Path) -> Result<HashMap<u64, Vec<WebhookSecret>>, String> {
    let name = PROJECTS_FILE;
    let shape = "a JSON object of project id → list of secrets, like {\"18404\": [\"key\"]}";
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{name}: cannot read {}: {e}", path.display()))?;
    let mut deserializer = serde_json::Deserializer::from_str(&text);
    let entries = deserializer
        .deserialize_map(EntriesVisitor)
        .and_then(|entries| deserializer.end().map(|()| entries))
        .map_err(|e| {
            let place = format!("line {} column {}", e.line(), e.column());
            match e.classify() {
                // Syntax errors name a place, never a value.
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    format!("{name}: {} is not valid JSON: {e}", path.display())
                }
                _ => format!("{name}: {} is not {shape} (at {place})", path.display()),
            }
        })?;
    let mut projects = HashMap::new();
    let mut spellings: HashMap<u64, String> = HashMap::new();
    for (position, (id, secrets)) in entries.into_iter().enumerate() {
        let entry = position + 1;
        let project: u64 = id.trim().parse().map_err(|_| {
            // Not echoed: a secret pasted in the wrong place would be printed.
            format!("{name}: the id of entry {entry} is not a project number")
        })?;
        if let Some(first) = spellings.insert(project, id.clone()) {
            return Err(format!(
                "{name}: project {project} is listed twice, as `{first}` and as `{id}`; keep one"
            ));
        }
        let secrets = project_secrets(secrets).ok_or_else(|| {
            format!(
                "{name}: project {project}: secrets must be a non-empty list of non-empty strings, like [\"key\"]"
            )
        })?;
        projects.insert(project, secrets);
    }
    if projects.is_empty() {
        return Err(format!("{name}: {} lists no project", path.display()));
    }
    Ok(projects)
}

/// The secrets of one entry, if it is a non-empty list of non-empty strings.
fn project_secrets(value: Value) -> Option<Vec<WebhookSecret>> {
    let Value::Array(items) = value else {
        return None;
    };
    if items.is_empty() {
        return None;
    }
    items
        .into_iter()
        .map(|item| match item {
            Value::String(s) if !s.trim().is_empty() => {
                Some(WebhookSecret(SecretString::from(s.trim())))
            }
            _ => None,
        })
        .collect()
}

/// The file's entries in order, duplicates kept (a map would silently keep one of them).
struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Vec<(String, Value)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, Value>()? {
            entries.push(entry);
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("xb-projects-{}.json", rand_suffix()));
        std::fs::write(&path, content).unwrap();
        path
    }

    fn rand_suffix() -> u64 {
        use std::time::{SystemTime, UNIX_EPOCH};
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            ^ u64::from(std::process::id())
    }

    #[test]
    fn reads_several_secrets_per_project() {
        let path = file(r#"{"18404": ["new", "old"], "7": ["k"]}"#);
        let s = Secrets::load(&["d".into()], Some(&path)).unwrap();
        let exposed = |id| -> Vec<&str> { s.for_project(id).iter().map(AsRef::as_ref).collect() };
        assert_eq!(exposed(Some(18404)), ["new", "old"]);
        assert_eq!(exposed(None), ["d"]);
        assert!(s.for_project(Some(99)).is_empty());
        assert!(
            !format!("{s:?}").contains("new"),
            "Debug must not show secrets"
        );
    }

    #[test]
    fn names_the_option_on_bad_files() {
        for bad in [
            r#"{"abc": ["k"]}"#,
            r#"{"1": []}"#,
            "[]",
            "{}",
            r#"{"1": [""]}"#,
        ] {
            let err = Secrets::load(&[], Some(&file(bad))).unwrap_err();
            assert!(err.starts_with("XSOLLA_PROJECTS_FILE"), "{bad}: {err}");
        }
        let err = Secrets::load(&[], Some(Path::new("/nonexistent/x.json"))).unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
    }

    #[test]
    fn never_echoes_a_value_of_the_wrong_type() {
        for bad in [
            r#"{"1": "S3CR3T-string"}"#,
            r#"{"1": [123]}"#,
            r#"{"1": ["ok", {"S3CR3T-nested": 1}]}"#,
            r#""S3CR3T-top-level""#,
            r#"["S3CR3T-array"]"#,
            r#"{"S3CR3T-as-id": ["k"]}"#,
            r#"{"1": ["k"]} "S3CR3T-trailing""#,
            r#"{"1": ["S3CR3T-unterminated"#,
        ] {
            let err = Secrets::load(&[], Some(&file(bad))).unwrap_err();
            assert!(err.starts_with("XSOLLA_PROJECTS_FILE"), "{bad}: {err}");
            assert!(
                !err.contains("S3CR3T") && !err.contains("`123`"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn refuses_one_project_spelled_twice() {
        for (twice, spellings) in [
            (
                r#"{"18404": ["a"], "018404": ["b"]}"#,
                ["`18404`", "`018404`"],
            ),
            (r#"{"7": ["a"], "7": ["b"]}"#, ["`7`", "`7`"]),
        ] {
            let err = Secrets::load(&[], Some(&file(twice))).unwrap_err();
            assert!(
                err.contains("listed twice") && spellings.iter().all(|s| err.contains(s)),
                "{err}"
            );
        }
    }
}
