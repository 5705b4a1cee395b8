//! [`Filter`] → a SQL `WHERE` predicate, with `QueryBuilder` and bound parameters only.
//!
//! Every predicate emitted here is two-valued (never NULL): comparisons on the nullable
//! `description` column are guarded, so `NOT (p)` is exactly the complement of `p`.

use sqlx::{Database, QueryBuilder};

use super::{CompareOp, Field, FieldKind, Filter, FilterValue};
use crate::records::DefinitionQuery;
use crate::runs::RunQuery;

/// What differs between backends in a filter's SQL.
pub(crate) trait Dialect: Database {
    /// Text comparison that orders byte-wise, as SQLite's default does (appended to the column).
    const BYTEWISE: &'static str;

    /// Bind one value (not [`FilterValue::List`] nor [`FilterValue::Null`]).
    fn push_value(qb: &mut QueryBuilder<Self>, value: &FilterValue);

    /// Case-insensitive "`column` contains `needle`", for a non-NULL column.
    fn push_contains(qb: &mut QueryBuilder<Self>, column: &'static str, needle: &str);

    fn push_i64(qb: &mut QueryBuilder<Self>, n: i64);
}

/// `WHERE <the query's conditions>` for `workflow_definitions`. The filter must have passed
/// [`Filter::validate`] (which bounds the recursion here).
pub(crate) fn push_definition_where<DB: Dialect>(qb: &mut QueryBuilder<DB>, q: &DefinitionQuery) {
    let eq = |field, value| Filter::Compare {
        field,
        op: CompareOp::Eq,
        value,
    };
    let mut conditions = Vec::new();
    if let Some(name) = &q.name {
        conditions.push(eq(Field::Name, FilterValue::Text(name.clone())));
    }
    if let Some(needle) = &q.name_contains {
        conditions.push(Filter::Compare {
            field: Field::Name,
            op: CompareOp::Contains,
            value: FilterValue::Text(needle.clone()),
        });
    }
    if let Some(enabled) = q.enabled {
        conditions.push(eq(Field::IsEnabled, FilterValue::Bool(enabled)));
    }
    if let Some(draft) = q.draft {
        conditions.push(eq(Field::IsDraft, FilterValue::Bool(draft)));
    }
    qb.push(" WHERE ");
    push_filter(qb, &Filter::And(conditions));
    if let Some(filter) = &q.filter {
        qb.push(" AND ");
        push_filter(qb, filter);
    }
}

/// ` LIMIT n OFFSET m` for a page.
pub(crate) fn push_page<DB: Dialect>(qb: &mut QueryBuilder<DB>, q: &DefinitionQuery) {
    push_limit_offset(qb, q.limit, q.offset);
}

/// ` LIMIT n OFFSET m`. The limit is an expression, not a bare parameter: SQLite's planner reads
/// a bare `LIMIT ?` and then prepares the statement again at every execution (see
/// `sqlite/runs.rs`); PostgreSQL folds `n + 0` as it would `n`.
pub(crate) fn push_limit_offset<DB: Dialect>(qb: &mut QueryBuilder<DB>, limit: u32, offset: u64) {
    qb.push(" LIMIT ");
    DB::push_i64(qb, i64::from(limit));
    qb.push(" + 0 OFFSET ");
    DB::push_i64(qb, i64::try_from(offset).unwrap_or(i64::MAX));
}

/// `WHERE <the query's conditions>` for `workflow_runs` (nothing when there is none). The
/// creation window is half-open: `created_after <= created_at < created_before`.
pub(crate) fn push_run_where<DB: Dialect>(qb: &mut QueryBuilder<DB>, q: &RunQuery) {
    let mut conditions: Vec<(&'static str, FilterValue)> = Vec::new();
    if let Some(status) = q.status {
        conditions.push(("status = ", FilterValue::Text(status.as_str().to_owned())));
    }
    if let Some(id) = q.definition_id {
        conditions.push(("definition_id = ", FilterValue::Uuid(id)));
    }
    if let Some(name) = &q.definition_name {
        conditions.push(("definition_name = ", FilterValue::Text(name.clone())));
    }
    if let Some(id) = q.parent_run_id {
        conditions.push(("parent_run_id = ", FilterValue::Uuid(id)));
    }
    if let Some(after) = q.created_after {
        conditions.push(("created_at >= ", FilterValue::Time(after)));
    }
    if let Some(before) = q.created_before {
        conditions.push(("created_at < ", FilterValue::Time(before)));
    }
    for (i, (condition, value)) in conditions.iter().enumerate() {
        qb.push(if i == 0 { " WHERE " } else { " AND " });
        qb.push(*condition);
        DB::push_value(qb, value);
    }
}

pub(crate) fn push_filter<DB: Dialect>(qb: &mut QueryBuilder<DB>, filter: &Filter) {
    match filter {
        Filter::All => {
            qb.push("1=1");
        }
        Filter::And(children) => push_junction(qb, children, " AND ", "1=1"),
        Filter::Or(children) => push_junction(qb, children, " OR ", "1=0"),
        Filter::Not(inner) => {
            qb.push("NOT (");
            push_filter(qb, inner);
            qb.push(")");
        }
        Filter::Compare { field, op, value } => push_compare(qb, *field, *op, value),
    }
}

fn push_junction<DB: Dialect>(
    qb: &mut QueryBuilder<DB>,
    children: &[Filter],
    separator: &str,
    empty: &str,
) {
    if children.is_empty() {
        qb.push(empty);
        return;
    }
    qb.push("(");
    for (i, child) in children.iter().enumerate() {
        if i > 0 {
            qb.push(separator);
        }
        push_filter(qb, child);
    }
    qb.push(")");
}

fn push_compare<DB: Dialect>(
    qb: &mut QueryBuilder<DB>,
    field: Field,
    op: CompareOp,
    value: &FilterValue,
) {
    let column = field.column();
    let nullable = field.kind() == FieldKind::NullableText;
    // A NULL column satisfies no comparison but `!=` (and `= null`).
    let guarded = |qb: &mut QueryBuilder<DB>, body: &dyn Fn(&mut QueryBuilder<DB>)| {
        if nullable {
            qb.push("(").push(column).push(" IS NOT NULL AND ");
            body(qb);
            qb.push(")");
        } else {
            body(qb);
        }
    };
    match (op, value) {
        (CompareOp::Eq, FilterValue::Null) => {
            qb.push(column).push(" IS NULL");
        }
        (CompareOp::Ne, FilterValue::Null) => {
            qb.push(column).push(" IS NOT NULL");
        }
        (CompareOp::In, FilterValue::List(items)) if !items.is_empty() => {
            guarded(qb, &|qb| {
                qb.push(column).push(" IN (");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        qb.push(", ");
                    }
                    DB::push_value(qb, item);
                }
                qb.push(")");
            });
        }
        (CompareOp::Contains, FilterValue::Text(needle)) => {
            guarded(qb, &|qb| DB::push_contains(qb, column, needle));
        }
        (CompareOp::Ne, value) if nullable && is_single(value) => {
            qb.push("(").push(column).push(" IS NULL OR ");
            qb.push(column).push(" <> ");
            DB::push_value(qb, value);
            qb.push(")");
        }
        (
            CompareOp::Eq
            | CompareOp::Ne
            | CompareOp::Gt
            | CompareOp::Lt
            | CompareOp::Ge
            | CompareOp::Le,
            value,
        ) if is_single(value) => {
            let ordering_text = matches!(field.kind(), FieldKind::Text | FieldKind::NullableText)
                && !matches!(op, CompareOp::Eq | CompareOp::Ne);
            guarded(qb, &|qb| {
                qb.push(column);
                if ordering_text {
                    qb.push(DB::BYTEWISE);
                }
                qb.push(" ").push(sql_operator(op)).push(" ");
                DB::push_value(qb, value);
            });
        }
        // Ill-typed; `Filter::validate` refuses these before any SQL is built.
        _ => {
            qb.push("1=0");
        }
    }
}

fn is_single(value: &FilterValue) -> bool {
    !matches!(value, FilterValue::Null | FilterValue::List(_))
}

fn sql_operator(op: CompareOp) -> &'static str {
    match op {
        CompareOp::Eq => "=",
        CompareOp::Ne => "<>",
        CompareOp::Gt => ">",
        CompareOp::Lt => "<",
        CompareOp::Ge => ">=",
        CompareOp::Le => "<=",
        CompareOp::In => "IN",
        CompareOp::Contains => "CONTAINS",
    }
}
