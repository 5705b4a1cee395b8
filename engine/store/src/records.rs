//! What goes into and comes out of the store: plain data, no behaviour.

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use crate::filter::Filter;

/// A workflow definition to insert. The store validates nothing in it beyond uniqueness.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDefinition {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub is_draft: bool,
    pub is_enabled: bool,
    pub spec: serde_json::Value,
}

/// The new content of a draft.
#[derive(Debug, Clone, PartialEq)]
pub struct DefinitionUpdate {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub spec: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DefinitionRecord {
    pub id: Uuid,
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub is_draft: bool,
    pub is_enabled: bool,
    pub spec: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which definitions [`crate::Store::list_definitions`] returns: every condition that is set
/// must hold. Ordered by `(created_at, id)`.
#[derive(Debug, Clone, PartialEq)]
pub struct DefinitionQuery {
    /// Exact name.
    pub name: Option<String>,
    /// Case-insensitive substring of the name (free-text search; `%` and `_` are plain text).
    pub name_contains: Option<String>,
    pub enabled: Option<bool>,
    pub draft: Option<bool>,
    pub filter: Option<Filter>,
    /// Page size; 0 returns no items, only the total.
    pub limit: u32,
    pub offset: u64,
}

impl Default for DefinitionQuery {
    /// No condition, first page of 50.
    fn default() -> Self {
        DefinitionQuery {
            name: None,
            name_contains: None,
            enabled: None,
            draft: None,
            filter: None,
            limit: 50,
            offset: 0,
        }
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// How many items match the same conditions, over all pages.
    pub total: u64,
}

/// An API token to record; only its SHA-256 is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewToken {
    pub name: String,
    pub role: String,
    pub sha256_hex: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub sha256_hex: String,
    pub created_at: DateTime<Utc>,
}

/// The current time as the store records it: UTC, truncated to microseconds (PostgreSQL's
/// precision), so a record returned by an insert equals the same record read back.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A new time-ordered id.
pub(crate) fn new_id() -> Uuid {
    Uuid::now_v7()
}
