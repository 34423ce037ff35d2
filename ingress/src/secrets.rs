//! Which secrets verify which route: `XSOLLA_WEBHOOK_SECRET` for `/webhooks/xsolla`, the
//! projects file for `/webhooks/xsolla/{project_id}`. Each may hold several secrets at once
//! so a key can be rotated without refusing webhooks signed with the other.

use std::{collections::HashMap, path::Path};

/// Secrets by route. Never printed: `Debug` shows only counts.
#[derive(Clone, Default)]
pub struct Secrets {
    default: Vec<String>,
    projects: HashMap<u64, Vec<String>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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
    pub fn load(default: &[String], projects_file: Option<&Path>) -> Result<Secrets, String> {
        let default = default
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        let projects = match projects_file {
            Some(path) => parse_projects_file(path)?,
            None => HashMap::new(),
        };
        Ok(Secrets { default, projects })
    }

    /// The secrets for a route: `None` = the single-project route.
    pub fn for_project(&self, project_id: Option<u64>) -> &[String] {
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

fn parse_projects_file(path: &Path) -> Result<HashMap<u64, Vec<String>>, String> {
    let name = "XSOLLA_PROJECTS_FILE (--projects-file)";
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{name}: cannot read {}: {e}", path.display()))?;
    let raw: HashMap<String, Vec<String>> = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{name}: {} is not a JSON object of project id → list of secrets, like {{\"18404\": [\"key\"]}}: {e}",
            path.display()
        )
    })?;
    let mut projects = HashMap::new();
    for (id, secrets) in raw {
        let project: u64 = id
            .parse()
            .map_err(|_| format!("{name}: project id `{id}` is not a number"))?;
        if secrets.is_empty() || secrets.iter().any(|s| s.trim().is_empty()) {
            return Err(format!(
                "{name}: project {project} has no secret or an empty one"
            ));
        }
        projects.insert(project, secrets);
    }
    if projects.is_empty() {
        return Err(format!("{name}: {} lists no project", path.display()));
    }
    Ok(projects)
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
        assert_eq!(s.for_project(Some(18404)), ["new", "old"]);
        assert_eq!(s.for_project(None), ["d"]);
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
}
