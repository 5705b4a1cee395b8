//! A loaded plugin: its validated description and its pre-linked component, ready to instantiate.

use std::fmt;
use std::sync::Arc;

use crate::config::Grants;
use crate::error::LoadError;
use crate::sandbox::{HostState, StepPre, WitStepDescription};

/// Longest plugin name.
pub const MAX_NAME_LEN: usize = 64;

/// A component that implements `weft:step@1.0.0`, compiled, linked and described. Cheap to clone.
#[derive(Clone)]
pub struct LoadedPlugin {
    /// Hex sha256 of the wasm bytes: the plugin's identity.
    pub sha256: String,
    pub description: PluginDescription,
    pub wasm_size: u64,
    pub compiled_size: u64,
    /// True when this `load` compiled nothing (the artifact came from disk or memory).
    pub compiled_from_cache: bool,
    /// What this plugin may use when invoked: nothing unless the server grants it (`load`
    /// returns the empty set; grants beyond it are not implemented yet).
    pub grants: Grants,
    pub(crate) pre: Arc<StepPre<HostState>>,
    pub(crate) tag: Arc<str>,
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("sha256", &self.sha256)
            .field("description", &self.description)
            .field("wasm_size", &self.wasm_size)
            .field("compiled_size", &self.compiled_size)
            .field("compiled_from_cache", &self.compiled_from_cache)
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

/// What the plugin says it is, as returned by its `describe` export and validated.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PluginDescription {
    /// `[a-z0-9][a-z0-9-_]*`, at most 64 characters.
    pub name: String,
    pub version: semver::Version,
    pub description: String,
    /// JSON Schema of the input (an object or a boolean).
    pub input_schema: serde_json::Value,
    /// JSON Schema of the output (an object or a boolean).
    pub output_schema: serde_json::Value,
}

impl PluginDescription {
    pub(crate) fn parse(raw: WitStepDescription) -> Result<Self, LoadError> {
        let invalid = LoadError::InvalidDescription;
        if !valid_name(&raw.name) {
            return Err(invalid(format!(
                "name {:?} must match [a-z0-9][a-z0-9-_]* and be at most {MAX_NAME_LEN} characters",
                raw.name
            )));
        }
        let version = semver::Version::parse(&raw.version).map_err(|e| {
            invalid(format!(
                "version {:?} is not a semantic version: {e}",
                raw.version
            ))
        })?;
        Ok(PluginDescription {
            name: raw.name,
            version,
            description: raw.description,
            input_schema: schema("input_schema", &raw.input_schema)?,
            output_schema: schema("output_schema", &raw.output_schema)?,
        })
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_NAME_LEN
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn schema(field: &str, text: &str) -> Result<serde_json::Value, LoadError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| LoadError::InvalidDescription(format!("{field} is not JSON: {e}")))?;
    if !(value.is_object() || value.is_boolean()) {
        return Err(LoadError::InvalidDescription(format!(
            "{field} must be a JSON Schema (an object or a boolean)"
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(name: &str, version: &str, schema: &str) -> WitStepDescription {
        WitStepDescription {
            name: name.into(),
            version: version.into(),
            description: "d".into(),
            input_schema: schema.into(),
            output_schema: "true".into(),
        }
    }

    #[test]
    fn accepts_a_valid_description() {
        let d = PluginDescription::parse(raw(
            "json-transform_2",
            "1.2.3-rc.1",
            r#"{"type":"object"}"#,
        ))
        .unwrap();
        assert_eq!(d.version, semver::Version::parse("1.2.3-rc.1").unwrap());
        assert_eq!(d.input_schema["type"], "object");
    }

    #[test]
    fn rejects_bad_names_versions_and_schemas() {
        for name in ["", "Add", "-add", "a b", "é", &"a".repeat(65)] {
            let e = PluginDescription::parse(raw(name, "1.0.0", "{}")).unwrap_err();
            assert_eq!(e.code(), "invalid_description", "{name:?}");
        }
        assert!(PluginDescription::parse(raw(&"a".repeat(64), "1.0.0", "{}")).is_ok());
        for version in ["1", "1.0", "v1.0.0", ""] {
            assert!(PluginDescription::parse(raw("a", version, "{}")).is_err());
        }
        for schema in ["", "{", "3", "\"x\""] {
            assert!(PluginDescription::parse(raw("a", "1.0.0", schema)).is_err());
        }
    }
}
