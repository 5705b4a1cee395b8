//! The search expression over workflow definitions: the Go engine's
//! `POST /api/workflow-definitions/search` body, done right.
//!
//! ```json
//! { "and": [ { "compare": { "field": "isEnabled", "operator": "=", "value": true } },
//!            { "not": { "compare": { "field": "name", "operator": "contains", "value": "tmp" } } } ] }
//! ```
//!
//! An expression is an object with `and` (array), `or` (array), `not` (expression) or `compare`
//! (`{field, operator, value}`); the first non-null of these, in that order, wins, and one with
//! none of them (`{}`) matches everything. Unlike the Go engine's, `or` is a real OR, `not` is the
//! exact complement (De Morgan, and rows whose `description` is NULL included), fields come from
//! an allowlist and are never spliced into SQL, values are typed per field, and bad input is an
//! error with a JSON pointer to it, never a panic.

mod parse;
pub(crate) mod sql;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Deepest nesting accepted (the root expression is at depth 1).
pub const MAX_DEPTH: usize = 16;
/// Most expression objects accepted in one filter.
pub const MAX_NODES: usize = 256;

/// A predicate over workflow definitions.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Matches everything (`{}`).
    All,
    /// All of them; `And(vec![])` matches everything.
    And(Vec<Filter>),
    /// Any of them; `Or(vec![])` matches nothing.
    Or(Vec<Filter>),
    /// Exactly the rows the inner filter does not match.
    Not(Box<Filter>),
    Compare {
        field: Field,
        op: CompareOp,
        value: FilterValue,
    },
}

/// The fields a filter may name (JSON names in camelCase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Id,
    Name,
    Description,
    Version,
    IsEnabled,
    IsDraft,
    CreatedAt,
    UpdatedAt,
}

/// The type of a field's values, which decides the operators and values it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A UUID, written as a string; ordered (ids are time-ordered UUID v7).
    Uuid,
    /// A string; compared byte-wise.
    Text,
    /// A string that may be absent (null).
    NullableText,
    Bool,
    /// A time, written as an RFC 3339 string.
    Time,
}

impl Field {
    pub const ALL: [Field; 8] = [
        Field::Id,
        Field::Name,
        Field::Description,
        Field::Version,
        Field::IsEnabled,
        Field::IsDraft,
        Field::CreatedAt,
        Field::UpdatedAt,
    ];

    /// The name in JSON.
    pub fn json_name(self) -> &'static str {
        match self {
            Field::Id => "id",
            Field::Name => "name",
            Field::Description => "description",
            Field::Version => "version",
            Field::IsEnabled => "isEnabled",
            Field::IsDraft => "isDraft",
            Field::CreatedAt => "createdAt",
            Field::UpdatedAt => "updatedAt",
        }
    }

    pub fn from_json_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.json_name() == name)
    }

    pub fn kind(self) -> FieldKind {
        match self {
            Field::Id => FieldKind::Uuid,
            Field::Name | Field::Version => FieldKind::Text,
            Field::Description => FieldKind::NullableText,
            Field::IsEnabled | Field::IsDraft => FieldKind::Bool,
            Field::CreatedAt | Field::UpdatedAt => FieldKind::Time,
        }
    }

    /// The column in `workflow_definitions`: a constant, never user text.
    pub(crate) fn column(self) -> &'static str {
        match self {
            Field::Id => "id",
            Field::Name => "name",
            Field::Description => "description",
            Field::Version => "version",
            Field::IsEnabled => "is_enabled",
            Field::IsDraft => "is_draft",
            Field::CreatedAt => "created_at",
            Field::UpdatedAt => "updated_at",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    /// The value is a non-empty list of the field's type.
    In,
    /// Case-insensitive substring; strings only. The needle is plain text (no wildcards).
    /// Case folding is ASCII-only on SQLite, Unicode-aware on PostgreSQL.
    Contains,
}

impl CompareOp {
    pub const ALL: [CompareOp; 8] = [
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Gt,
        CompareOp::Lt,
        CompareOp::Ge,
        CompareOp::Le,
        CompareOp::In,
        CompareOp::Contains,
    ];

    /// The operator in JSON.
    pub fn symbol(self) -> &'static str {
        match self {
            CompareOp::Eq => "=",
            CompareOp::Ne => "!=",
            CompareOp::Gt => ">",
            CompareOp::Lt => "<",
            CompareOp::Ge => ">=",
            CompareOp::Le => "<=",
            CompareOp::In => "in",
            CompareOp::Contains => "contains",
        }
    }

    pub fn from_symbol(symbol: &str) -> Option<CompareOp> {
        CompareOp::ALL.into_iter().find(|op| op.symbol() == symbol)
    }

    fn is_ordering(self) -> bool {
        matches!(
            self,
            CompareOp::Gt | CompareOp::Lt | CompareOp::Ge | CompareOp::Le
        )
    }
}

/// A value a field is compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterValue {
    /// Only `description = null` / `description != null`.
    Null,
    Bool(bool),
    Text(String),
    Uuid(Uuid),
    Time(DateTime<Utc>),
    /// Only with [`CompareOp::In`]: a non-empty list of single values.
    List(Vec<FilterValue>),
}

/// Why a filter was refused, and where: `path` is a JSON pointer into the expression
/// (`"/and/1/compare/field"`; `""` is the whole expression).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at \"{path}\")")]
pub struct FilterError {
    pub path: String,
    pub message: String,
}

impl FilterError {
    fn new(path: &str, message: impl Into<String>) -> FilterError {
        FilterError {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

impl Filter {
    /// Parse the JSON form (see the module doc). Never panics, whatever the input.
    pub fn from_json(value: &serde_json::Value) -> Result<Filter, FilterError> {
        parse::parse(value)
    }

    /// Check a filter built in code against the rules [`Filter::from_json`] enforces: depth,
    /// size, operators and values per field. Errors carry the path the JSON form would have.
    pub fn validate(&self) -> Result<(), FilterError> {
        let mut nodes = 0;
        self.validate_at(&mut String::new(), 1, &mut nodes)
    }

    fn validate_at(
        &self,
        path: &mut String,
        depth: usize,
        nodes: &mut usize,
    ) -> Result<(), FilterError> {
        check_limits(path, depth, nodes)?;
        let len = path.len();
        let result = match self {
            Filter::All => Ok(()),
            Filter::And(children) | Filter::Or(children) => {
                let key = if matches!(self, Filter::And(_)) {
                    "and"
                } else {
                    "or"
                };
                children.iter().enumerate().try_for_each(|(i, child)| {
                    let len = path.len();
                    path.push_str(&format!("/{key}/{i}"));
                    let result = child.validate_at(path, depth + 1, nodes);
                    path.truncate(len);
                    result
                })
            }
            Filter::Not(inner) => {
                path.push_str("/not");
                inner.validate_at(path, depth + 1, nodes)
            }
            Filter::Compare { field, op, value } => {
                path.push_str("/compare");
                check_compare(path, *field, *op, value)
            }
        };
        path.truncate(len);
        result
    }
}

/// Count one more expression node at `path` and `depth`; refuse past the limits.
fn check_limits(path: &str, depth: usize, nodes: &mut usize) -> Result<(), FilterError> {
    if depth > MAX_DEPTH {
        return Err(FilterError::new(
            path,
            format!("expression nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    *nodes += 1;
    if *nodes > MAX_NODES {
        return Err(FilterError::new(
            path,
            format!("expression has more than {MAX_NODES} nodes"),
        ));
    }
    Ok(())
}

/// Whether `op` applies to `field`; `compare_path` points at the `compare` object.
fn check_operator(compare_path: &str, field: Field, op: CompareOp) -> Result<(), FilterError> {
    let kind = field.kind();
    let refused = match kind {
        FieldKind::Bool => op.is_ordering() || op == CompareOp::Contains,
        FieldKind::Uuid | FieldKind::Time => op == CompareOp::Contains,
        FieldKind::Text | FieldKind::NullableText => false,
    };
    if refused {
        return Err(FilterError::new(
            &format!("{compare_path}/operator"),
            format!(
                "operator \"{}\" does not apply to {} field \"{}\"",
                op.symbol(),
                kind_name(kind),
                field.json_name()
            ),
        ));
    }
    Ok(())
}

/// Whether `value` fits `field` under `op`; `compare_path` points at the `compare` object.
fn check_compare(
    compare_path: &str,
    field: Field,
    op: CompareOp,
    value: &FilterValue,
) -> Result<(), FilterError> {
    check_operator(compare_path, field, op)?;
    let value_path = format!("{compare_path}/value");
    match (op, value) {
        (CompareOp::In, FilterValue::List(items)) => {
            if items.is_empty() {
                return Err(FilterError::new(
                    &value_path,
                    "\"in\" takes a non-empty array",
                ));
            }
            items.iter().enumerate().try_for_each(|(i, item)| {
                check_scalar(&format!("{value_path}/{i}"), field, item, false)
            })
        }
        (CompareOp::In, _) => Err(FilterError::new(
            &value_path,
            format!(
                "\"in\" takes a non-empty array of {}",
                value_description(field.kind())
            ),
        )),
        (_, FilterValue::List(_)) => Err(FilterError::new(
            &value_path,
            format!(
                "expected {}, not an array (only \"in\" takes an array)",
                value_description(field.kind())
            ),
        )),
        (CompareOp::Eq | CompareOp::Ne, value) => check_scalar(&value_path, field, value, true),
        (_, value) => check_scalar(&value_path, field, value, false),
    }
}

/// Whether a single value has the field's type; `null_ok` for `=`/`!=` on a nullable field.
fn check_scalar(
    path: &str,
    field: Field,
    value: &FilterValue,
    null_ok: bool,
) -> Result<(), FilterError> {
    let kind = field.kind();
    let fits = match (kind, value) {
        (FieldKind::Uuid, FilterValue::Uuid(_))
        | (FieldKind::Text | FieldKind::NullableText, FilterValue::Text(_))
        | (FieldKind::Bool, FilterValue::Bool(_))
        | (FieldKind::Time, FilterValue::Time(_)) => true,
        (FieldKind::NullableText, FilterValue::Null) => null_ok,
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(FilterError::new(
            path,
            expected_message(field, null_ok && kind == FieldKind::NullableText),
        ))
    }
}

fn expected_message(field: Field, null_ok: bool) -> String {
    let or_null = if null_ok { " or null" } else { "" };
    format!(
        "field \"{}\" takes {}{or_null}",
        field.json_name(),
        value_description(field.kind())
    )
}

fn kind_name(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::Uuid => "id",
        FieldKind::Text | FieldKind::NullableText => "string",
        FieldKind::Bool => "boolean",
        FieldKind::Time => "time",
    }
}

fn value_description(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::Uuid => "a UUID string",
        FieldKind::Text | FieldKind::NullableText => "a string",
        FieldKind::Bool => "a boolean",
        FieldKind::Time => "an RFC 3339 time string",
    }
}
