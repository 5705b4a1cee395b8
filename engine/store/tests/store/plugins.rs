use std::sync::Arc;

use serde_json::json;
use weft_store::{NewPlugin, PluginRecord, Store, StoreError};

use crate::support::on_both_backends;

on_both_backends!(
    plugin_crud,
    plugin_conflicts,
    plugin_blobs_are_shared,
    plugin_delete_not_found,
    plugin_large_blob,
    plugin_concurrent_uploads_and_deletes,
);

/// A fake content hash: the store neither computes nor checks it.
fn hash(n: u32) -> String {
    format!("{n:064x}")
}

fn new_plugin(name: &str, version: &str, content: u32) -> NewPlugin {
    NewPlugin {
        name: name.to_owned(),
        version: version.to_owned(),
        sha256_hex: hash(content),
        wasm: wasm(content),
        description: format!("{name} {version}"),
        input_schema: json!({ "type": "object", "properties": { "text": { "type": "string" } } }),
        output_schema: json!({ "type": "object" }),
        limits: None,
    }
}

/// Bytes that stand for a component (never parsed).
fn wasm(content: u32) -> Vec<u8> {
    let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
    bytes.extend_from_slice(&content.to_le_bytes());
    bytes.extend((0..=255u8).rev());
    bytes
}

fn versions(records: &[PluginRecord]) -> Vec<(&str, &str)> {
    records
        .iter()
        .map(|r| (r.name.as_str(), r.version.as_str()))
        .collect()
}

async fn plugin_crud(store: Arc<dyn Store>) {
    assert!(store.list_plugins().await.unwrap().is_empty());
    assert_eq!(store.get_plugin("echo", "1.0.0").await.unwrap(), None);
    assert_eq!(store.plugin_wasm(&hash(1)).await.unwrap(), None);

    let echo2 = store
        .insert_plugin(NewPlugin {
            limits: Some(json!({ "fuel": 1_000_000, "memory_bytes": 16_777_216 })),
            description: String::new(),
            ..new_plugin("echo", "2.0.0", 2)
        })
        .await
        .unwrap();
    assert_eq!(echo2.id.get_version_num(), 7);
    assert_eq!(echo2.name, "echo");
    assert_eq!(echo2.version, "2.0.0");
    assert_eq!(echo2.sha256_hex, hash(2));
    assert_eq!(echo2.wasm_size, wasm(2).len() as u64);
    assert_eq!(echo2.description, "");
    assert_eq!(
        echo2.limits,
        Some(json!({ "fuel": 1_000_000, "memory_bytes": 16_777_216 }))
    );
    let upper = store
        .insert_plugin(new_plugin("Upper", "1", 3))
        .await
        .unwrap();
    let echo1 = store
        .insert_plugin(new_plugin("echo", "1.0.0", 1))
        .await
        .unwrap();
    assert_eq!(echo1.limits, None);
    assert_eq!(
        echo1.input_schema,
        json!({ "type": "object", "properties": { "text": { "type": "string" } } })
    );
    // The same version string under another name is another plugin.
    let abc = store
        .insert_plugin(new_plugin("abc", "1.0.0", 4))
        .await
        .unwrap();

    // Read back exactly as returned by the insert (ids, times, JSON, NULL limits).
    assert_eq!(
        store.get_plugin("echo", "2.0.0").await.unwrap(),
        Some(echo2.clone())
    );
    assert_eq!(
        store.get_plugin("echo", "1.0.0").await.unwrap(),
        Some(echo1.clone())
    );
    assert_eq!(store.get_plugin("echo", "3.0.0").await.unwrap(), None);
    assert_eq!(store.get_plugin("ECHO", "1.0.0").await.unwrap(), None);
    assert_eq!(store.plugin_wasm(&hash(2)).await.unwrap(), Some(wasm(2)));
    assert_eq!(store.plugin_wasm(&hash(1)).await.unwrap(), Some(wasm(1)));

    // By name (byte-wise on both backends: upper case first), then creation order.
    let listed = store.list_plugins().await.unwrap();
    assert_eq!(
        versions(&listed),
        [
            ("Upper", "1"),
            ("abc", "1.0.0"),
            ("echo", "2.0.0"),
            ("echo", "1.0.0"),
        ]
    );
    assert_eq!(listed, [upper, abc, echo2.clone(), echo1.clone()]);

    store.delete_plugin("echo", "1.0.0").await.unwrap();
    assert_eq!(store.get_plugin("echo", "1.0.0").await.unwrap(), None);
    assert_eq!(store.plugin_wasm(&hash(1)).await.unwrap(), None);
    assert_eq!(
        store.get_plugin("echo", "2.0.0").await.unwrap(),
        Some(echo2)
    );
    assert_eq!(store.plugin_wasm(&hash(2)).await.unwrap(), Some(wasm(2)));
    assert_eq!(
        versions(&store.list_plugins().await.unwrap()),
        [("Upper", "1"), ("abc", "1.0.0"), ("echo", "2.0.0")]
    );

    // A deleted version can be uploaded again: a new record.
    let again = store
        .insert_plugin(new_plugin("echo", "1.0.0", 1))
        .await
        .unwrap();
    assert_ne!(again.id, echo1.id);
    assert_eq!(store.plugin_wasm(&hash(1)).await.unwrap(), Some(wasm(1)));
}

async fn plugin_conflicts(store: Arc<dyn Store>) {
    let first = store
        .insert_plugin(new_plugin("echo", "1.0.0", 1))
        .await
        .unwrap();

    // Other bytes under the same (name, version).
    let err = store
        .insert_plugin(new_plugin("echo", "1.0.0", 2))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("\"echo\"") && m.contains("\"1.0.0\"")),
        "{err:?}"
    );
    // The transaction is atomic: the new bytes were not kept either.
    assert_eq!(store.plugin_wasm(&hash(2)).await.unwrap(), None);

    // The very same upload again is a conflict too: the caller decides what it means.
    let err = store
        .insert_plugin(new_plugin("echo", "1.0.0", 1))
        .await
        .unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(_)), "{err:?}");

    assert_eq!(store.list_plugins().await.unwrap(), [first]);
    assert_eq!(store.plugin_wasm(&hash(1)).await.unwrap(), Some(wasm(1)));
}

async fn plugin_blobs_are_shared(store: Arc<dyn Store>) {
    let one = store
        .insert_plugin(new_plugin("echo", "1.0.0", 7))
        .await
        .unwrap();
    let two = store
        .insert_plugin(new_plugin("echo", "1.0.1", 7))
        .await
        .unwrap();
    let other = store
        .insert_plugin(new_plugin("other", "1.0.0", 7))
        .await
        .unwrap();
    let unrelated = store
        .insert_plugin(new_plugin("unrelated", "1", 8))
        .await
        .unwrap();
    for record in [&one, &two, &other] {
        assert_eq!(record.sha256_hex, hash(7));
        assert_eq!(record.wasm_size, wasm(7).len() as u64);
    }

    store.delete_plugin("echo", "1.0.0").await.unwrap();
    assert_eq!(store.plugin_wasm(&hash(7)).await.unwrap(), Some(wasm(7)));
    store.delete_plugin("other", "1.0.0").await.unwrap();
    assert_eq!(store.plugin_wasm(&hash(7)).await.unwrap(), Some(wasm(7)));
    assert_eq!(store.list_plugins().await.unwrap(), [two, unrelated]);

    // The last reference goes: the bytes go with it, and nothing else does.
    store.delete_plugin("echo", "1.0.1").await.unwrap();
    assert_eq!(store.plugin_wasm(&hash(7)).await.unwrap(), None);
    assert_eq!(store.plugin_wasm(&hash(8)).await.unwrap(), Some(wasm(8)));
    assert_eq!(
        versions(&store.list_plugins().await.unwrap()),
        [("unrelated", "1")]
    );

    // The same bytes uploaded again are stored afresh.
    store
        .insert_plugin(new_plugin("echo", "1.0.2", 7))
        .await
        .unwrap();
    assert_eq!(store.plugin_wasm(&hash(7)).await.unwrap(), Some(wasm(7)));
}

async fn plugin_delete_not_found(store: Arc<dyn Store>) {
    let err = store.delete_plugin("nope", "1").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");

    store
        .insert_plugin(new_plugin("echo", "1.0.0", 1))
        .await
        .unwrap();
    for (name, version) in [("echo", "1.0.1"), ("Echo", "1.0.0"), ("nope", "1.0.0")] {
        let err = store.delete_plugin(name, version).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound), "{err:?}");
    }
    assert_eq!(store.list_plugins().await.unwrap().len(), 1);

    store.delete_plugin("echo", "1.0.0").await.unwrap();
    let err = store.delete_plugin("echo", "1.0.0").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

async fn plugin_large_blob(store: Arc<dyn Store>) {
    // 5 MiB of every byte value, in an order that a truncation or shift would break.
    let big: Vec<u8> = (0..5u32 * 1024 * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let record = store
        .insert_plugin(NewPlugin {
            wasm: big.clone(),
            ..new_plugin("big", "1.0.0", 99)
        })
        .await
        .unwrap();
    assert_eq!(record.wasm_size, 5 * 1024 * 1024);
    assert_eq!(
        store.get_plugin("big", "1.0.0").await.unwrap(),
        Some(record)
    );
    let read = store.plugin_wasm(&hash(99)).await.unwrap().unwrap();
    assert_eq!(read.len(), big.len());
    assert!(read == big, "the bytes read back differ");
}

/// Uploads and deletes of versions sharing one blob, all at once: none fails, and afterwards
/// the blob exists exactly when a version references it.
async fn plugin_concurrent_uploads_and_deletes(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                for round in 0..6 {
                    let version = format!("{task}.{round}");
                    store
                        .insert_plugin(new_plugin("shared", &version, 5))
                        .await
                        .unwrap();
                    // Keep the last round's version of even tasks.
                    if round < 5 || task % 2 == 1 {
                        store.delete_plugin("shared", &version).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let left = store.list_plugins().await.unwrap();
    assert_eq!(versions(&left).len(), 4, "{:?}", versions(&left));
    assert_eq!(store.plugin_wasm(&hash(5)).await.unwrap(), Some(wasm(5)));

    for record in &left {
        store
            .delete_plugin(&record.name, &record.version)
            .await
            .unwrap();
    }
    assert_eq!(store.plugin_wasm(&hash(5)).await.unwrap(), None);
}
