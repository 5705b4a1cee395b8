use std::sync::Arc;

use uuid::Uuid;
use weft_store::{NewToken, Store, StoreError};

use crate::support::on_both_backends;

on_both_backends!(token_crud, token_conflicts);

fn token(name: &str, hash_byte: char) -> NewToken {
    NewToken {
        name: name.to_owned(),
        role: "admin".to_owned(),
        sha256_hex: hash_byte.to_string().repeat(64),
    }
}

async fn token_crud(store: Arc<dyn Store>) {
    assert!(store.list_tokens().await.unwrap().is_empty());
    let ci = store.insert_token(token("ci", 'a')).await.unwrap();
    assert_eq!(ci.id.get_version_num(), 7);
    assert_eq!(ci.name, "ci");
    assert_eq!(ci.role, "admin");
    let ops = store
        .insert_token(NewToken {
            role: "viewer".into(),
            ..token("ops", 'b')
        })
        .await
        .unwrap();

    assert_eq!(
        store.find_token_by_hash(&"a".repeat(64)).await.unwrap(),
        Some(ci.clone())
    );
    assert_eq!(
        store.find_token_by_hash(&"c".repeat(64)).await.unwrap(),
        None
    );
    assert_eq!(
        store.list_tokens().await.unwrap(),
        vec![ci.clone(), ops.clone()]
    );

    store.delete_token(ci.id).await.unwrap();
    assert_eq!(
        store.find_token_by_hash(&"a".repeat(64)).await.unwrap(),
        None
    );
    assert_eq!(store.list_tokens().await.unwrap(), vec![ops]);
    let err = store.delete_token(ci.id).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    let err = store.delete_token(Uuid::now_v7()).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

async fn token_conflicts(store: Arc<dyn Store>) {
    store.insert_token(token("ci", 'a')).await.unwrap();
    let err = store.insert_token(token("ci", 'b')).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("named \"ci\"")),
        "{err:?}"
    );
    let err = store.insert_token(token("other", 'a')).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("hash") && !m.contains("aaaa")),
        "{err:?}"
    );
    assert_eq!(store.list_tokens().await.unwrap().len(), 1);
}
