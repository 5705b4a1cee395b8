use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};
use weft_store::filter::{CompareOp, Field, FilterValue};
use weft_store::{DefinitionQuery, DefinitionRecord, Filter, NewDefinition, Store, StoreError};

use crate::support::{new_definition, on_both_backends};

on_both_backends!(
    text_operators,
    nullable_description,
    boolean_operators,
    time_operators,
    id_operators,
    junctions_and_empty,
    not_is_the_exact_complement,
    filter_combines_with_query_conditions,
    hand_built_invalid_filter_is_refused,
    values_are_bound_not_spliced,
);

/// Four definitions, inserted in this order.
async fn fixture(store: &Arc<dyn Store>) -> Vec<DefinitionRecord> {
    let rows = [
        ("alpha", "1.0.0", Some("First Flow"), false, true),
        ("beta", "2.0.0", None, true, false),
        ("gamma", "1.0.0", Some("third"), false, false),
        ("Delta", "10.0.0", Some("50% off_sale"), true, true),
    ];
    let mut records = Vec::new();
    for (name, version, description, is_draft, is_enabled) in rows {
        records.push(
            store
                .insert_definition(NewDefinition {
                    description: description.map(str::to_owned),
                    is_draft,
                    is_enabled,
                    ..new_definition(name, version)
                })
                .await
                .unwrap(),
        );
    }
    records
}

/// The names matching a JSON filter, in list order.
async fn matching(store: &Arc<dyn Store>, filter: Value) -> Vec<String> {
    let filter = Filter::from_json(&filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
    matching_filter(store, filter).await
}

async fn matching_filter(store: &Arc<dyn Store>, filter: Filter) -> Vec<String> {
    let page = store
        .list_definitions(&DefinitionQuery {
            filter: Some(filter),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total as usize, page.items.len());
    page.items.into_iter().map(|r| r.name).collect()
}

fn cmp(field: &str, operator: &str, value: Value) -> Value {
    json!({ "compare": { "field": field, "operator": operator, "value": value } })
}

async fn text_operators(store: Arc<dyn Store>) {
    fixture(&store).await;
    let cases: Vec<(Value, &[&str])> = vec![
        (cmp("name", "=", json!("beta")), &["beta"]),
        (cmp("name", "=", json!("BETA")), &[]),
        (
            cmp("name", "!=", json!("beta")),
            &["alpha", "gamma", "Delta"],
        ),
        // Byte-wise order on both backends: uppercase sorts before lowercase.
        (cmp("name", ">", json!("beta")), &["gamma"]),
        (cmp("name", ">=", json!("beta")), &["beta", "gamma"]),
        (cmp("name", "<", json!("beta")), &["alpha", "Delta"]),
        (cmp("name", "<=", json!("alpha")), &["alpha", "Delta"]),
        (
            cmp("name", "in", json!(["gamma", "alpha", "nope"])),
            &["alpha", "gamma"],
        ),
        (cmp("name", "contains", json!("MM")), &["gamma"]),
        (cmp("name", "contains", json!("ta")), &["beta", "Delta"]),
        // Versions are strings: compared as text, not as semver.
        (cmp("version", "=", json!("1.0.0")), &["alpha", "gamma"]),
        (cmp("version", ">", json!("1.0.0")), &["beta", "Delta"]),
        (
            cmp("version", "<", json!("2.0.0")),
            &["alpha", "gamma", "Delta"],
        ),
        (
            cmp("version", "contains", json!("0.0")),
            &["alpha", "beta", "gamma", "Delta"],
        ),
        (cmp("version", "in", json!(["10.0.0"])), &["Delta"]),
    ];
    for (filter, expected) in cases {
        assert_eq!(matching(&store, filter.clone()).await, expected, "{filter}");
    }
}

async fn nullable_description(store: Arc<dyn Store>) {
    fixture(&store).await;
    let cases: Vec<(Value, &[&str])> = vec![
        (cmp("description", "=", json!("third")), &["gamma"]),
        // A missing description differs from every string.
        (
            cmp("description", "!=", json!("third")),
            &["alpha", "beta", "Delta"],
        ),
        (cmp("description", "=", Value::Null), &["beta"]),
        (
            cmp("description", "!=", Value::Null),
            &["alpha", "gamma", "Delta"],
        ),
        // ...but is not ordered, contained nor listed.
        (
            cmp("description", ">", json!("")),
            &["alpha", "gamma", "Delta"],
        ),
        (cmp("description", "<", json!("t")), &["alpha", "Delta"]),
        (
            cmp("description", "<=", json!("third")),
            &["alpha", "gamma", "Delta"],
        ),
        (cmp("description", ">=", json!("third")), &["gamma"]),
        (cmp("description", "contains", json!("FLOW")), &["alpha"]),
        (cmp("description", "contains", json!("% off_")), &["Delta"]),
        (
            cmp("description", "contains", json!("")),
            &["alpha", "gamma", "Delta"],
        ),
        (
            cmp("description", "in", json!(["third", "First Flow"])),
            &["alpha", "gamma"],
        ),
        // Their negations take the NULL row in.
        (
            json!({"not": cmp("description", "=", json!("third"))}),
            &["alpha", "beta", "Delta"],
        ),
        (
            json!({"not": cmp("description", "!=", json!("third"))}),
            &["gamma"],
        ),
        (
            json!({"not": cmp("description", ">", json!(""))}),
            &["beta"],
        ),
        (
            json!({"not": cmp("description", "contains", json!("flow"))}),
            &["beta", "gamma", "Delta"],
        ),
        (
            json!({"not": cmp("description", "in", json!(["third"]))}),
            &["alpha", "beta", "Delta"],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(matching(&store, filter.clone()).await, expected, "{filter}");
    }
}

async fn boolean_operators(store: Arc<dyn Store>) {
    fixture(&store).await;
    let cases: Vec<(Value, &[&str])> = vec![
        (cmp("isEnabled", "=", json!(true)), &["alpha", "Delta"]),
        (cmp("isEnabled", "!=", json!(true)), &["beta", "gamma"]),
        (cmp("isDraft", "=", json!(true)), &["beta", "Delta"]),
        (cmp("isDraft", "!=", json!(true)), &["alpha", "gamma"]),
        (cmp("isDraft", "in", json!([false])), &["alpha", "gamma"]),
        (
            cmp("isDraft", "in", json!([true, false])),
            &["alpha", "beta", "gamma", "Delta"],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(matching(&store, filter.clone()).await, expected, "{filter}");
    }
}

async fn time_operators(store: Arc<dyn Store>) {
    let records = fixture(&store).await;
    let at = |i: usize| json!(records[i].created_at.to_rfc3339());
    let cases: Vec<(Value, &[&str])> = vec![
        (cmp("createdAt", "=", at(1)), &["beta"]),
        (cmp("createdAt", "!=", at(1)), &["alpha", "gamma", "Delta"]),
        (cmp("createdAt", ">", at(1)), &["gamma", "Delta"]),
        (cmp("createdAt", ">=", at(1)), &["beta", "gamma", "Delta"]),
        (cmp("createdAt", "<", at(1)), &["alpha"]),
        (cmp("createdAt", "<=", at(1)), &["alpha", "beta"]),
        (
            cmp("createdAt", "in", json!([at(0), at(3)])),
            &["alpha", "Delta"],
        ),
        (cmp("updatedAt", "<", json!("2000-01-01T00:00:00Z")), &[]),
        (
            cmp("updatedAt", ">", json!("2000-01-01T01:00:00+01:00")),
            &["alpha", "beta", "gamma", "Delta"],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(matching(&store, filter.clone()).await, expected, "{filter}");
    }
    // A time written with another offset is the same instant.
    let shifted = records[2]
        .created_at
        .with_timezone(&chrono::FixedOffset::east_opt(5 * 3600).unwrap())
        .to_rfc3339();
    assert_eq!(
        matching(&store, cmp("createdAt", "=", json!(shifted))).await,
        ["gamma"]
    );
}

async fn id_operators(store: Arc<dyn Store>) {
    let records = fixture(&store).await;
    let id = |i: usize| json!(records[i].id.to_string());
    let cases: Vec<(Value, &[&str])> = vec![
        (cmp("id", "=", id(2)), &["gamma"]),
        (cmp("id", "!=", id(2)), &["alpha", "beta", "Delta"]),
        // UUID v7 ids are time-ordered.
        (cmp("id", ">", id(1)), &["gamma", "Delta"]),
        (cmp("id", "<=", id(1)), &["alpha", "beta"]),
        (cmp("id", "in", json!([id(3), id(0)])), &["alpha", "Delta"]),
        (
            cmp("id", "=", json!(records[0].id.to_string().to_uppercase())),
            &["alpha"],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(matching(&store, filter.clone()).await, expected, "{filter}");
    }
}

async fn junctions_and_empty(store: Arc<dyn Store>) {
    fixture(&store).await;
    let all = ["alpha", "beta", "gamma", "Delta"];
    let cases: Vec<(Value, &[&str])> = vec![
        (json!({}), &all),
        (json!({"and": []}), &all),
        (json!({"or": []}), &[]),
        (json!({"not": {}}), &[]),
        (json!({"not": {"or": []}}), &all),
        (
            json!({"and": [cmp("isEnabled", "=", json!(true)), cmp("isDraft", "=", json!(false))]}),
            &["alpha"],
        ),
        // A real OR of its members (the Go engine AND-ed them).
        (
            json!({"or": [cmp("name", "=", json!("beta")), cmp("name", "=", json!("gamma"))]}),
            &["beta", "gamma"],
        ),
        (
            json!({"or": [
                {"and": [cmp("isEnabled", "=", json!(true)), cmp("isDraft", "=", json!(true))]},
                cmp("version", "=", json!("2.0.0")),
            ]}),
            &["beta", "Delta"],
        ),
        // De Morgan: NOT(enabled AND draft) = not enabled OR not draft.
        (
            json!({"not": {"and": [cmp("isEnabled", "=", json!(true)), cmp("isDraft", "=", json!(true))]}}),
            &["alpha", "beta", "gamma"],
        ),
        (
            json!({"not": {"or": [cmp("isEnabled", "=", json!(true)), cmp("isDraft", "=", json!(true))]}}),
            &["gamma"],
        ),
        (
            json!({"not": {"not": cmp("name", "=", json!("beta"))}}),
            &["beta"],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(matching(&store, filter.clone()).await, expected, "{filter}");
    }
}

/// For many filters F: F and NOT F split the rows exactly in two.
async fn not_is_the_exact_complement(store: Arc<dyn Store>) {
    let records = fixture(&store).await;
    let all: BTreeSet<String> = records.iter().map(|r| r.name.clone()).collect();
    let filters = vec![
        cmp("description", "=", json!("third")),
        cmp("description", "!=", json!("third")),
        cmp("description", "<", json!("m")),
        cmp("description", "contains", json!("o")),
        cmp("description", "in", json!(["third", "x"])),
        cmp("description", "=", Value::Null),
        cmp("name", "contains", json!("a")),
        json!({"and": [cmp("description", ">", json!("a")), cmp("isEnabled", "=", json!(true))]}),
        json!({"or": [cmp("description", "<", json!("a")), cmp("isDraft", "=", json!(true))]}),
        json!({"and": [{"not": cmp("description", "contains", json!("i"))}, cmp("version", "<", json!("2"))]}),
        json!({"or": []}),
        json!({}),
    ];
    for filter in filters {
        let yes: BTreeSet<String> = matching(&store, filter.clone()).await.into_iter().collect();
        let no: BTreeSet<String> = matching(&store, json!({ "not": filter.clone() }))
            .await
            .into_iter()
            .collect();
        assert!(yes.is_disjoint(&no), "{filter}: {yes:?} / {no:?}");
        let union: BTreeSet<String> = yes.union(&no).cloned().collect();
        assert_eq!(union, all, "{filter}");
    }
}

async fn filter_combines_with_query_conditions(store: Arc<dyn Store>) {
    fixture(&store).await;
    let page = store
        .list_definitions(&DefinitionQuery {
            enabled: Some(true),
            filter: Some(
                Filter::from_json(&json!({"or": [
                    cmp("name", "=", json!("beta")),
                    cmp("name", "=", json!("Delta")),
                ]}))
                .unwrap(),
            ),
            ..Default::default()
        })
        .await
        .unwrap();
    let names: Vec<&str> = page.items.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["Delta"]);
    assert_eq!(page.total, 1);
}

async fn hand_built_invalid_filter_is_refused(store: Arc<dyn Store>) {
    fixture(&store).await;
    let bad = Filter::Or(vec![
        Filter::All,
        Filter::Compare {
            field: Field::CreatedAt,
            op: CompareOp::Gt,
            value: FilterValue::Bool(true),
        },
    ]);
    let err = store
        .list_definitions(&DefinitionQuery {
            filter: Some(bad),
            ..Default::default()
        })
        .await
        .unwrap_err();
    match err {
        StoreError::InvalidFilter(e) => assert_eq!(e.path, "/or/1/compare/value"),
        other => panic!("{other:?}"),
    }
    // A valid hand-built one works.
    let good = Filter::Not(Box::new(Filter::Compare {
        field: Field::Name,
        op: CompareOp::In,
        value: FilterValue::List(vec![FilterValue::Text("alpha".into())]),
    }));
    assert_eq!(
        matching_filter(&store, good).await,
        ["beta", "gamma", "Delta"]
    );
}

async fn values_are_bound_not_spliced(store: Arc<dyn Store>) {
    fixture(&store).await;
    for evil in [
        "x' OR '1'='1",
        "x\" OR \"1\"=\"1",
        "'); DROP TABLE workflow_definitions; --",
        "%",
        "_",
    ] {
        assert_eq!(
            matching(&store, cmp("name", "=", json!(evil))).await,
            Vec::<String>::new()
        );
        assert_eq!(
            matching(&store, cmp("name", "<", json!(evil))).await.len()
                + matching(&store, cmp("name", ">=", json!(evil))).await.len(),
            4
        );
    }
    assert_eq!(matching(&store, json!({})).await.len(), 4);
}
