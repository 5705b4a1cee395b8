//! Definition versions: semantic versions as the Go engine wrote them (`M.m.p[-pre][+build]`).
//!
//! A version with a pre-release part is a draft; publishing drops the pre-release part.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a version (or a version requirement) could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The text was empty (after trimming whitespace).
    #[error("version is empty")]
    Empty,
    /// The text is not a semantic version.
    #[error("`{input}` is not a semantic version (M.m.p[-pre][+build]): {reason}")]
    Invalid {
        /// The text as given.
        input: String,
        /// The parser's reason.
        reason: String,
    },
    /// The text is neither a semantic version nor a version requirement.
    #[error("`{input}` is neither a semantic version nor a version requirement: {reason}")]
    InvalidRequirement {
        /// The text as given.
        input: String,
        /// The parser's reason.
        reason: String,
    },
    /// The pre-release identifier given to [`Version::with_pre_release`] is not valid.
    #[error("`{input}` is not a valid pre-release identifier: {reason}")]
    InvalidPreRelease {
        /// The text as given.
        input: String,
        /// The parser's reason.
        reason: String,
    },
}

/// Which part of a version [`Version::bump`] increments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Bump {
    /// `1.2.3` → `2.0.0`.
    Major,
    /// `1.2.3` → `1.3.0`.
    Minor,
    /// `1.2.3` → `1.2.4`.
    Patch,
}

/// A semantic version. Displays canonically (`M.m.p[-pre][+build]`, no leading `v`); parses with
/// an optional leading `v` and surrounding whitespace; (de)serialises as a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(semver::Version);

impl Version {
    /// `major.minor.patch`, without pre-release or build metadata.
    pub fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self(semver::Version::new(major, minor, patch))
    }

    /// The first version of a new definition: `0.1.0`.
    pub fn initial() -> Self {
        Self::new(0, 1, 0)
    }

    /// This version with one part incremented, the lower parts reset to zero and the
    /// pre-release and build metadata cleared.
    pub fn bump(&self, bump: Bump) -> Self {
        let v = &self.0;
        let (major, minor, patch) = match bump {
            Bump::Major => (v.major.saturating_add(1), 0, 0),
            Bump::Minor => (v.major, v.minor.saturating_add(1), 0),
            Bump::Patch => (v.major, v.minor, v.patch.saturating_add(1)),
        };
        Self::new(major, minor, patch)
    }

    /// Whether this is a draft, i.e. has a pre-release part (`0.1.0-1`).
    pub fn is_draft(&self) -> bool {
        !self.0.pre.is_empty()
    }

    /// This version without its pre-release part (publishing a draft); build metadata is kept.
    pub fn released(&self) -> Self {
        let mut v = self.0.clone();
        v.pre = semver::Prerelease::EMPTY;
        Self(v)
    }

    /// This version with the given pre-release part (e.g. `"1"` for the draft `0.1.0-1`).
    pub fn with_pre_release(&self, pre: &str) -> Result<Self, VersionError> {
        let pre = semver::Prerelease::new(pre).map_err(|e| VersionError::InvalidPreRelease {
            input: pre.to_owned(),
            reason: e.to_string(),
        })?;
        let mut v = self.0.clone();
        v.pre = pre;
        Ok(Self(v))
    }

    /// The pre-release part, `""` when released.
    pub fn pre_release(&self) -> &str {
        self.0.pre.as_str()
    }

    /// The underlying `semver` version.
    pub fn as_semver(&self) -> &semver::Version {
        &self.0
    }
}

impl From<semver::Version> for Version {
    fn from(v: semver::Version) -> Self {
        Self(v)
    }
}

impl From<Version> for semver::Version {
    fn from(v: Version) -> Self {
        v.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Err(VersionError::Empty);
        }
        let bare = trimmed.strip_prefix('v').unwrap_or(trimmed);
        semver::Version::parse(bare)
            .map(Self)
            .map_err(|e| VersionError::Invalid {
                input: s.to_owned(),
                reason: e.to_string(),
            })
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses what a definition may write where it names a version of something else
/// (`taskConfig.version`, `workflowConfig.version`): an exact version (`1.2.3`, `v1.2.3`), which
/// becomes the requirement `=1.2.3`, or a requirement (`^1.2`, `>=1, <2`, `*`).
pub fn parse_requirement(s: &str) -> Result<semver::VersionReq, VersionError> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err(VersionError::Empty);
    }
    if let Ok(exact) = trimmed.parse::<Version>() {
        return Ok(semver::VersionReq {
            comparators: vec![semver::Comparator {
                op: semver::Op::Exact,
                major: exact.0.major,
                minor: Some(exact.0.minor),
                patch: Some(exact.0.patch),
                pre: exact.0.pre,
            }],
        });
    }
    semver::VersionReq::parse(trimmed).map_err(|e| VersionError::InvalidRequirement {
        input: s.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn parses_like_the_go_engine() {
        assert_eq!(v(" v1.2.3 ").to_string(), "1.2.3");
        assert_eq!(
            v("1.2.3-alpha.1+build.5").to_string(),
            "1.2.3-alpha.1+build.5"
        );
        assert_eq!("".parse::<Version>(), Err(VersionError::Empty));
        assert_eq!("  ".parse::<Version>(), Err(VersionError::Empty));
        assert!(matches!(
            "1.2".parse::<Version>(),
            Err(VersionError::Invalid { .. })
        ));
        assert!("vv1.2.3".parse::<Version>().is_err());
    }

    #[test]
    fn initial_and_bumps_clear_pre_release_and_build() {
        assert_eq!(Version::initial().to_string(), "0.1.0");
        let draft = v("1.2.3-4+b");
        assert_eq!(draft.bump(Bump::Major).to_string(), "2.0.0");
        assert_eq!(draft.bump(Bump::Minor).to_string(), "1.3.0");
        assert_eq!(draft.bump(Bump::Patch).to_string(), "1.2.4");
    }

    #[test]
    fn drafts_and_release() {
        let draft = Version::initial().with_pre_release("1").unwrap();
        assert_eq!(draft.to_string(), "0.1.0-1");
        assert!(draft.is_draft());
        assert_eq!(draft.pre_release(), "1");
        assert_eq!(draft.released().to_string(), "0.1.0");
        assert!(!draft.released().is_draft());
        assert_eq!(v("1.0.0-rc+b7").released().to_string(), "1.0.0+b7");
        assert!(Version::initial().with_pre_release("a..b").is_err());
    }

    #[test]
    fn orders_by_semver_precedence() {
        assert!(v("1.0.0-1") < v("1.0.0"));
        assert!(v("1.0.0") < v("1.0.1"));
        assert!(v("1.10.0") > v("1.9.0"));
    }

    #[test]
    fn serde_as_string() {
        let json = serde_json::to_value(v("v2.0.1-rc.1")).unwrap();
        assert_eq!(json, serde_json::json!("2.0.1-rc.1"));
        let back: Version = serde_json::from_value(serde_json::json!(" v3.1.4 ")).unwrap();
        assert_eq!(back, v("3.1.4"));
        assert!(serde_json::from_value::<Version>(serde_json::json!("x")).is_err());
    }

    #[test]
    fn requirements() {
        let exact = parse_requirement("v1.2.3").unwrap();
        assert_eq!(exact.to_string(), "=1.2.3");
        assert!(exact.matches(&semver::Version::new(1, 2, 3)));
        assert!(!exact.matches(&semver::Version::new(1, 2, 4)));
        let caret = parse_requirement("^1.2").unwrap();
        assert!(caret.matches(&semver::Version::new(1, 9, 0)));
        assert_eq!(parse_requirement(" "), Err(VersionError::Empty));
        assert!(matches!(
            parse_requirement("one"),
            Err(VersionError::InvalidRequirement { .. })
        ));
    }
}
