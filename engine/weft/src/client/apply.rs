//! `weft definition apply`: read a definition file (JSON or YAML) and decide what to write,
//! given the versions the server already has of that name.
//!
//! - no version of the name: create it (a draft, with the file's `version` or 0.1.0);
//! - the file names a `version`: that version if it exists (unchanged: nothing; a draft:
//!   updated), else a new version with that number;
//! - otherwise the newest version: unchanged, nothing; a draft, updated in place; published,
//!   a new draft version numbered by `--bump`.
//!
//! "Unchanged" compares the two documents as the server understands them
//! ([`DefinitionSpec`]), so formatting, key order and defaults do not count.

use std::path::Path;

use serde_json::{Map, Value};
use weft_domain::DefinitionSpec;

use crate::client::http::NextVersion;

/// Keys of the record, not of the document.
const RECORD_KEYS: [&str; 6] = [
    "id",
    "version",
    "isDraft",
    "isEnabled",
    "createdAt",
    "updatedAt",
];

/// Why a definition file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Neither JSON nor YAML.
    #[error("{path} is not valid {format}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// JSON or YAML.
        format: &'static str,
        /// The parser's message.
        message: String,
    },
    /// The document has no usable name.
    #[error("{0}: a workflow definition is an object with a \"name\"")]
    NoName(String),
    /// The file's version exists, is published and differs from the file.
    #[error(
        "{name} {version} is published and differs from the file; published versions cannot \
         change: remove \"version\" from the file (a new version is created) or raise it"
    )]
    PublishedDiffers {
        /// Definition name.
        name: String,
        /// Its version.
        version: String,
    },
}

/// Parse `content` read from `path`: JSON for `.json`, YAML for `.yaml`/`.yml`, otherwise JSON
/// if it parses as JSON, else YAML.
pub fn parse_document(path: &Path, content: &str) -> Result<Value, FileError> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let shown = path.display().to_string();
    let json = |content: &str| {
        serde_json::from_str::<Value>(content).map_err(|e| FileError::Syntax {
            path: shown.clone(),
            format: "JSON",
            message: e.to_string(),
        })
    };
    let yaml = |content: &str| {
        serde_yaml_ng::from_str::<Value>(content).map_err(|e| FileError::Syntax {
            path: shown.clone(),
            format: "YAML",
            message: e.to_string(),
        })
    };
    match extension.as_deref() {
        Some("json") => json(content),
        Some("yaml" | "yml") => yaml(content),
        _ => json(content).or_else(|_| yaml(content)),
    }
}

/// Read and parse a file (`-`: standard input).
pub fn read_document(path: &Path) -> Result<Value, FileError> {
    let read_error = |source| FileError::Read {
        path: path.display().to_string(),
        source,
    };
    let content = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).map_err(read_error)?
    } else {
        std::fs::read_to_string(path).map_err(read_error)?
    };
    parse_document(path, &content)
}

/// What `apply` does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `POST /workflow-definitions` with the file.
    Create,
    /// Nothing to write: this definition (id) already says what the file says.
    Unchanged(String),
    /// `PUT /workflow-definitions/{id}`: a draft takes the file's content.
    UpdateDraft(String),
    /// `POST /workflow-definitions/{id}/versions`: a new version from this one.
    NewVersion(String, NextVersion),
}

/// The definition's name in `document`.
pub fn name_of(document: &Value, path: &Path) -> Result<String, FileError> {
    document
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .ok_or_else(|| FileError::NoName(path.display().to_string()))
}

fn version_of(definition: &Value) -> Option<&str> {
    definition.get("version").and_then(Value::as_str)
}

fn id_of(definition: &Value) -> String {
    definition
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn is_draft(definition: &Value) -> bool {
    definition
        .get("isDraft")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The document without its record keys.
fn spec_object(document: &Value) -> Map<String, Value> {
    let mut object = document.as_object().cloned().unwrap_or_default();
    for key in RECORD_KEYS {
        object.remove(key);
    }
    object
}

/// Whether two documents describe the same definition (both must be valid).
pub fn same_spec(a: &Value, b: &Value) -> bool {
    let parse = |v: &Value| DefinitionSpec::from_json(Value::Object(spec_object(v))).ok();
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The newest of `versions` by semantic version (the last one if none parses).
pub fn newest(versions: &[Value]) -> Option<&Value> {
    versions
        .iter()
        .filter_map(|d| Some((semver::Version::parse(version_of(d)?).ok()?, d)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, d)| d)
        .or_else(|| versions.last())
}

/// Decide what to do with `document`, given every stored version of its name.
pub fn plan(document: &Value, versions: &[Value], bump: &'static str) -> Result<Action, FileError> {
    let wanted = version_of(document);
    let base = match wanted {
        Some(version) => versions.iter().find(|d| version_of(d) == Some(version)),
        None => newest(versions),
    };
    let Some(base) = base else {
        return Ok(match (wanted, newest(versions)) {
            (Some(version), Some(latest)) => {
                Action::NewVersion(id_of(latest), NextVersion::Exact(version.to_string()))
            }
            _ => Action::Create,
        });
    };
    let id = id_of(base);
    if same_spec(document, base) {
        return Ok(Action::Unchanged(id));
    }
    if is_draft(base) {
        return Ok(Action::UpdateDraft(id));
    }
    match wanted {
        Some(version) => Err(FileError::PublishedDiffers {
            name: base
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            version: version.to_string(),
        }),
        None => Ok(Action::NewVersion(id, NextVersion::Bump(bump))),
    }
}

/// The body that makes `base` say exactly what `document` says: the document's keys (record
/// keys aside), and `null` for every key `base` has that the document lacks (the server keeps
/// keys a body leaves out).
pub fn replacement_body(document: &Value, base: Option<&Value>) -> Value {
    let mut body = spec_object(document);
    if let Some(base) = base {
        for key in spec_object(base).keys() {
            if !body.contains_key(key) {
                body.insert(key.clone(), Value::Null);
            }
        }
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(description: &str) -> Value {
        json!({"name": "chain", "description": description, "steps": [
            {"stepDefinitionId": "a", "type": "task", "taskConfig": {"taskDefinitionId": "add"}}
        ]})
    }

    fn stored(id: &str, version: &str, draft: bool, description: &str) -> Value {
        let mut d = doc(description);
        d["id"] = json!(id);
        d["version"] = json!(version);
        d["isDraft"] = json!(draft);
        d["isEnabled"] = json!(!draft);
        d
    }

    #[test]
    fn yaml_and_json_give_the_same_document() {
        let yaml = "name: chain\ndescription: x\nsteps:\n  - stepDefinitionId: a\n    type: task\n    taskConfig:\n      taskDefinitionId: add\n";
        let from_yaml = parse_document(Path::new("d.yaml"), yaml).expect("yaml");
        let from_json = parse_document(Path::new("d.json"), &doc("x").to_string()).expect("json");
        assert_eq!(from_yaml, from_json);
        // No telling extension: JSON first, then YAML.
        assert_eq!(
            parse_document(Path::new("d"), yaml).expect("yaml"),
            from_json
        );
        assert!(matches!(
            parse_document(Path::new("d.json"), yaml),
            Err(FileError::Syntax { format: "JSON", .. })
        ));
    }

    #[test]
    fn a_new_name_is_created() {
        assert_eq!(plan(&doc("x"), &[], "patch").expect("plan"), Action::Create);
    }

    #[test]
    fn an_unchanged_file_writes_nothing() {
        let versions = [
            stored("1", "1.0.0", false, "old"),
            stored("2", "1.0.1", false, "x"),
        ];
        assert_eq!(
            plan(&doc("x"), &versions, "patch").expect("plan"),
            Action::Unchanged("2".into())
        );
    }

    #[test]
    fn a_draft_is_updated_and_a_published_version_gets_a_successor() {
        let draft = [stored("1", "1.0.0", true, "old")];
        assert_eq!(
            plan(&doc("x"), &draft, "patch").expect("plan"),
            Action::UpdateDraft("1".into())
        );
        let published = [
            stored("1", "1.2.0", false, "old"),
            stored("2", "1.10.0", false, "o"),
        ];
        assert_eq!(
            plan(&doc("x"), &published, "minor").expect("plan"),
            Action::NewVersion("2".into(), NextVersion::Bump("minor"))
        );
    }

    #[test]
    fn a_version_in_the_file_is_honoured() {
        let published = [stored("1", "1.0.0", false, "old")];
        let mut wanted = doc("x");
        wanted["version"] = json!("2.0.0");
        assert_eq!(
            plan(&wanted, &published, "patch").expect("plan"),
            Action::NewVersion("1".into(), NextVersion::Exact("2.0.0".into()))
        );
        wanted["version"] = json!("1.0.0");
        assert!(matches!(
            plan(&wanted, &published, "patch"),
            Err(FileError::PublishedDiffers { .. })
        ));
    }

    #[test]
    fn keys_missing_from_the_file_are_cleared() {
        let base = stored("1", "1.0.0", true, "old");
        let mut document = doc("x");
        document
            .as_object_mut()
            .expect("object")
            .remove("description");
        let body = replacement_body(&document, Some(&base));
        assert_eq!(body["description"], Value::Null);
        assert!(body.get("id").is_none() && body.get("isDraft").is_none());
    }
}
