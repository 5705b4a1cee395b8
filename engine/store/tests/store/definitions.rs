use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;
use weft_store::{DefinitionQuery, DefinitionUpdate, NewDefinition, Store, StoreError};

use crate::support::{names, new_definition, on_both_backends};

on_both_backends!(
    insert_and_get,
    spec_round_trips,
    duplicate_name_and_version_conflicts,
    update_draft_replaces_content,
    update_draft_refused_once_published,
    update_draft_conflict_and_not_found,
    publish_twice_is_not_draft,
    enable_and_disable,
    delete_then_not_found,
    list_versions_oldest_first,
    pagination_total_and_stable_order,
    list_conditions,
    name_contains_takes_wildcards_literally,
    concurrent_inserts,
);

async fn insert_and_get(store: Arc<dyn Store>) {
    let new = NewDefinition {
        description: Some("says hello".into()),
        is_enabled: true,
        ..new_definition("hello", "1.0.0")
    };
    let inserted = store.insert_definition(new.clone()).await.unwrap();
    assert_eq!(inserted.id.get_version_num(), 7);
    assert_eq!(inserted.name, "hello");
    assert_eq!(inserted.version, "1.0.0");
    assert_eq!(inserted.description.as_deref(), Some("says hello"));
    assert!(inserted.is_draft);
    assert!(inserted.is_enabled);
    assert_eq!(inserted.spec, new.spec);
    assert_eq!(inserted.created_at, inserted.updated_at);
    let age = chrono::Utc::now() - inserted.created_at;
    assert!(
        age >= chrono::Duration::zero() && age < chrono::Duration::seconds(30),
        "{age}"
    );

    // Read back exactly as returned, timestamps (microseconds) included.
    let read = store.get_definition(inserted.id).await.unwrap();
    assert_eq!(read, Some(inserted));
    assert_eq!(store.get_definition(Uuid::now_v7()).await.unwrap(), None);
}

async fn spec_round_trips(store: Arc<dyn Store>) {
    let spec = json!({
        "steps": [{"id": "a", "next": ["b", "c"]}, {"id": "b"}, {"id": "c"}],
        "metadata": {"emoji": "🧵", "quote": "it's \"quoted\"", "nested": {"deep": [1, 2.5, -3]}},
        "big": 9_007_199_254_740_993_u64,
        "nothing": null,
        "flag": false
    });
    let record = store
        .insert_definition(NewDefinition {
            spec: spec.clone(),
            ..new_definition("json", "1")
        })
        .await
        .unwrap();
    let read = store.get_definition(record.id).await.unwrap().unwrap();
    assert_eq!(read.spec, spec);
}

async fn duplicate_name_and_version_conflicts(store: Arc<dyn Store>) {
    store
        .insert_definition(new_definition("flow", "1.0.0"))
        .await
        .unwrap();
    let err = store
        .insert_definition(new_definition("flow", "1.0.0"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("flow") && m.contains("1.0.0")),
        "{err:?}"
    );
    // The same version under another name, and another version of the same name, are fine
    // (the Go engine made version unique on its own).
    store
        .insert_definition(new_definition("other", "1.0.0"))
        .await
        .unwrap();
    store
        .insert_definition(new_definition("flow", "1.0.1"))
        .await
        .unwrap();
}

async fn update_draft_replaces_content(store: Arc<dyn Store>) {
    let draft = store
        .insert_definition(new_definition("draft", "0.1.0"))
        .await
        .unwrap();
    let update = DefinitionUpdate {
        name: "renamed".into(),
        version: "0.2.0".into(),
        description: Some("now described".into()),
        spec: json!({"steps": []}),
    };
    let updated = store.update_draft(draft.id, update.clone()).await.unwrap();
    assert_eq!(updated.id, draft.id);
    assert_eq!(updated.name, "renamed");
    assert_eq!(updated.version, "0.2.0");
    assert_eq!(updated.description.as_deref(), Some("now described"));
    assert_eq!(updated.spec, update.spec);
    assert!(updated.is_draft);
    assert_eq!(updated.created_at, draft.created_at);
    assert!(updated.updated_at >= draft.updated_at);
    assert_eq!(
        store.get_definition(draft.id).await.unwrap(),
        Some(updated.clone())
    );

    // The description can be removed again.
    let cleared = store
        .update_draft(
            draft.id,
            DefinitionUpdate {
                description: None,
                ..update
            },
        )
        .await
        .unwrap();
    assert_eq!(cleared.description, None);
}

async fn update_draft_refused_once_published(store: Arc<dyn Store>) {
    let draft = store
        .insert_definition(new_definition("pub", "1.0.0"))
        .await
        .unwrap();
    let published = store.publish_definition(draft.id).await.unwrap();
    let err = store
        .update_draft(
            draft.id,
            DefinitionUpdate {
                name: "pub".into(),
                version: "1.0.0".into(),
                description: Some("sneaky".into()),
                spec: json!({}),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotDraft), "{err:?}");
    assert_eq!(
        store.get_definition(draft.id).await.unwrap(),
        Some(published)
    );
}

async fn update_draft_conflict_and_not_found(store: Arc<dyn Store>) {
    store
        .insert_definition(new_definition("taken", "1.0.0"))
        .await
        .unwrap();
    let draft = store
        .insert_definition(new_definition("mine", "1.0.0"))
        .await
        .unwrap();
    let collide = DefinitionUpdate {
        name: "taken".into(),
        version: "1.0.0".into(),
        description: None,
        spec: json!({}),
    };
    let err = store
        .update_draft(draft.id, collide.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let err = store
        .update_draft(Uuid::now_v7(), collide)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

async fn publish_twice_is_not_draft(store: Arc<dyn Store>) {
    let draft = store
        .insert_definition(new_definition("p", "1"))
        .await
        .unwrap();
    let published = store.publish_definition(draft.id).await.unwrap();
    assert!(!published.is_draft);
    assert!(published.updated_at >= draft.updated_at);
    let err = store.publish_definition(draft.id).await.unwrap_err();
    assert!(matches!(err, StoreError::NotDraft), "{err:?}");
    let err = store.publish_definition(Uuid::now_v7()).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

async fn enable_and_disable(store: Arc<dyn Store>) {
    let d = store
        .insert_definition(new_definition("e", "1"))
        .await
        .unwrap();
    assert!(!d.is_enabled);
    let on = store.set_definition_enabled(d.id, true).await.unwrap();
    assert!(on.is_enabled);
    assert!(
        store
            .get_definition(d.id)
            .await
            .unwrap()
            .unwrap()
            .is_enabled
    );
    // Published definitions can be enabled and disabled too.
    store.publish_definition(d.id).await.unwrap();
    let off = store.set_definition_enabled(d.id, false).await.unwrap();
    assert!(!off.is_enabled);
    assert!(!off.is_draft);
    let err = store
        .set_definition_enabled(Uuid::now_v7(), true)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

async fn delete_then_not_found(store: Arc<dyn Store>) {
    let d = store
        .insert_definition(new_definition("gone", "1"))
        .await
        .unwrap();
    let kept = store
        .insert_definition(new_definition("kept", "1"))
        .await
        .unwrap();
    store.delete_definition(d.id).await.unwrap();
    assert_eq!(store.get_definition(d.id).await.unwrap(), None);
    let err = store.delete_definition(d.id).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    assert!(store.get_definition(kept.id).await.unwrap().is_some());
    // The (name, version) is free again.
    store
        .insert_definition(new_definition("gone", "1"))
        .await
        .unwrap();
}

async fn list_versions_oldest_first(store: Arc<dyn Store>) {
    for version in ["1.0.0", "0.9.0", "2.0.0"] {
        store
            .insert_definition(new_definition("versioned", version))
            .await
            .unwrap();
        store
            .insert_definition(new_definition("noise", version))
            .await
            .unwrap();
    }
    let versions = store.list_versions("versioned").await.unwrap();
    let listed: Vec<&str> = versions.iter().map(|r| r.version.as_str()).collect();
    assert_eq!(listed, ["1.0.0", "0.9.0", "2.0.0"]);
    assert!(versions.iter().all(|r| r.name == "versioned"));
    assert!(store.list_versions("VERSIONED").await.unwrap().is_empty());
    assert!(store.list_versions("nothing").await.unwrap().is_empty());
}

async fn pagination_total_and_stable_order(store: Arc<dyn Store>) {
    let mut inserted = Vec::new();
    for i in 0..7 {
        inserted.push(
            store
                .insert_definition(new_definition(&format!("p{i}"), "1"))
                .await
                .unwrap(),
        );
    }
    let page = |limit, offset| {
        let store = store.clone();
        async move {
            store
                .list_definitions(&DefinitionQuery {
                    limit,
                    offset,
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    };
    let mut all = Vec::new();
    for offset in [0, 3, 6] {
        let p = page(3, offset).await;
        assert_eq!(p.total, 7);
        all.extend(p.items);
    }
    assert_eq!(all, inserted, "pages concatenate to the insertion order");
    assert_eq!(page(100, 0).await.items, inserted);

    let past_end = page(3, 50).await;
    assert!(past_end.items.is_empty());
    assert_eq!(past_end.total, 7);
    let count_only = page(0, 0).await;
    assert!(count_only.items.is_empty());
    assert_eq!(count_only.total, 7);
    let huge_offset = page(3, u64::MAX).await;
    assert!(huge_offset.items.is_empty());
    assert_eq!(huge_offset.total, 7);
}

async fn list_conditions(store: Arc<dyn Store>) {
    let specs = [
        ("orders", "1", true, false),
        ("orders", "2", false, true),
        ("Order-archive", "1", true, true),
        ("billing", "1", false, false),
    ];
    for (name, version, is_draft, is_enabled) in specs {
        store
            .insert_definition(NewDefinition {
                is_draft,
                is_enabled,
                ..new_definition(name, version)
            })
            .await
            .unwrap();
    }
    let list = |q: DefinitionQuery| {
        let store = store.clone();
        async move {
            let page = store.list_definitions(&q).await.unwrap();
            let listed: Vec<String> = page
                .items
                .iter()
                .map(|r| format!("{}@{}", r.name, r.version))
                .collect();
            assert_eq!(page.total as usize, listed.len());
            listed
        }
    };
    let q = DefinitionQuery::default;
    assert_eq!(
        list(DefinitionQuery {
            name: Some("orders".into()),
            ..q()
        })
        .await,
        ["orders@1", "orders@2"]
    );
    assert_eq!(
        list(DefinitionQuery {
            name_contains: Some("ORDER".into()),
            ..q()
        })
        .await,
        ["orders@1", "orders@2", "Order-archive@1"]
    );
    assert_eq!(
        list(DefinitionQuery {
            enabled: Some(true),
            ..q()
        })
        .await,
        ["orders@2", "Order-archive@1"]
    );
    assert_eq!(
        list(DefinitionQuery {
            draft: Some(false),
            ..q()
        })
        .await,
        ["orders@2", "billing@1"]
    );
    assert_eq!(
        list(DefinitionQuery {
            name_contains: Some("order".into()),
            enabled: Some(true),
            draft: Some(true),
            ..q()
        })
        .await,
        ["Order-archive@1"]
    );
    // Total counts under the same conditions, whatever the page.
    let page = store
        .list_definitions(&DefinitionQuery {
            name_contains: Some("order".into()),
            limit: 1,
            offset: 1,
            ..q()
        })
        .await
        .unwrap();
    assert_eq!(names(&page.items), ["orders"]);
    assert_eq!(page.items[0].version, "2");
    assert_eq!(page.total, 3);
}

async fn name_contains_takes_wildcards_literally(store: Arc<dyn Store>) {
    for name in [
        "100% done",
        "1000 done",
        "snake_case",
        "snakeXcase",
        "back\\slash",
    ] {
        store
            .insert_definition(new_definition(name, "1"))
            .await
            .unwrap();
    }
    let search = |text: &str| {
        let store = store.clone();
        let q = DefinitionQuery {
            name_contains: Some(text.to_owned()),
            ..Default::default()
        };
        async move {
            let page = store.list_definitions(&q).await.unwrap();
            names(&page.items)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(search("0%").await, ["100% done"]);
    assert_eq!(search("%").await, ["100% done"]);
    assert_eq!(search("e_c").await, ["snake_case"]);
    assert_eq!(search("_").await, ["snake_case"]);
    assert_eq!(search("k\\s").await, ["back\\slash"]);
    assert_eq!(search("' OR '1'='1").await, Vec::<String>::new());
    assert_eq!(search("").await.len(), 5);
}

async fn concurrent_inserts(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .insert_definition(new_definition(&format!("c{i}"), "1"))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let page = store
        .list_definitions(&DefinitionQuery::default())
        .await
        .unwrap();
    assert_eq!(page.total, 24);
}
