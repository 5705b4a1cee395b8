//! Step plugins through HTTP: upload, list, get, download, delete, invoke, limits, restart, the
//! plugins directory. Needs `cargo xtask plugins` (the test command runs it first).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use weft_store::Backend;

use crate::both_backends;
use crate::helpers::*;

async fn upload(app: &TestApp, wasm: Vec<u8>) -> reqwest::Response {
    app.request(Method::POST, "/api/v1/plugins")
        .header("content-type", "application/wasm")
        .body(wasm)
        .send()
        .await
        .expect("POST")
}

async fn uploaded(app: &TestApp, name: &str) -> Value {
    expect_status(upload(app, plugin_bytes(name)).await, StatusCode::CREATED).await
}

async fn invoke(app: &TestApp, name: &str, version: &str, body: Value) -> Value {
    let response = app
        .post_json(&format!("/api/v1/plugins/{name}/{version}/invoke"), &body)
        .await;
    expect_status(response, StatusCode::OK).await
}

/// The same component with a custom section appended: other bytes, same description.
fn with_custom_section(mut wasm: Vec<u8>) -> Vec<u8> {
    wasm.extend_from_slice(&[0x00, 0x05, 0x04, b'n', b'o', b't', b'e']);
    wasm
}

both_backends! {
    async fn upload_list_get_download_delete(backend: Backend) {
        let app = spawn_app_with_auth(backend).await;
        let wasm = plugin_bytes("add");
        let info = expect_status(upload(&app, wasm.clone()).await, StatusCode::CREATED).await;
        assert_eq!(info["name"], "add");
        let version = info["version"].as_str().expect("version").to_string();
        assert_eq!(info["sha256"], hex::encode(Sha256::digest(&wasm)));
        assert_eq!(info["wasmSize"], wasm.len());
        assert!(info["compiledSize"].as_u64().is_some_and(|n| n > 0), "{info}");
        assert!(info["inputSchema"].is_object(), "{info}");
        assert_eq!(info["source"]["kind"], "upload");

        // An identical re-upload is not an error.
        let again = expect_status(upload(&app, wasm.clone()).await, StatusCode::OK).await;
        assert_eq!(again["sha256"], info["sha256"]);
        // Same name and version, other bytes: refused.
        let response = upload(&app, with_custom_section(wasm.clone())).await;
        expect_error(response, StatusCode::CONFLICT, "version_exists").await;

        let list = expect_status(app.get("/api/v1/plugins").await, StatusCode::OK).await;
        assert_eq!(list["totalCount"], 1);
        let versions = expect_status(app.get("/api/v1/plugins/add").await, StatusCode::OK).await;
        assert_eq!(versions["items"][0]["version"], version.as_str());
        let path = format!("/api/v1/plugins/add/{version}");
        let got = expect_status(app.get(&path).await, StatusCode::OK).await;
        assert_eq!(got["sha256"], info["sha256"]);
        let response = app.get(&format!("{path}/wasm")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/wasm");
        assert_eq!(response.bytes().await.expect("bytes").to_vec(), wasm);

        // Only admins manage plugins; readers read.
        let client = reqwest::Client::new();
        let response = client.delete(app.url(&path)).bearer_auth(WRITE_TOKEN).send().await.expect("DELETE");
        expect_error(response, StatusCode::FORBIDDEN, "forbidden").await;
        let response = client.post(app.url("/api/v1/plugins")).bearer_auth(WRITE_TOKEN).body(wasm.clone()).send().await.expect("POST");
        expect_error(response, StatusCode::FORBIDDEN, "forbidden").await;
        let response = client.get(app.url(&path)).bearer_auth(READ_TOKEN).send().await.expect("GET");
        expect_status(response, StatusCode::OK).await;

        expect_status(app.delete(&path).await, StatusCode::NO_CONTENT).await;
        expect_error(app.get(&path).await, StatusCode::NOT_FOUND, "not_found").await;
        expect_error(app.get("/api/v1/plugins/add").await, StatusCode::NOT_FOUND, "not_found").await;
        expect_error(app.delete(&path).await, StatusCode::NOT_FOUND, "not_found").await;
    }
}

both_backends! {
    async fn delete_is_refused_while_an_enabled_definition_uses_it(backend: Backend) {
        let app = spawn_app(backend).await;
        let info = uploaded(&app, "add").await;
        let path = format!("/api/v1/plugins/add/{}", info["version"].as_str().expect("version"));
        let definition = app.create_definition(&simple_definition("uses-add")).await;
        let base = format!("/api/v1/workflow-definitions/{}", definition["id"].as_str().expect("id"));
        expect_status(app.post(&format!("{base}/enable")).await, StatusCode::OK).await;
        let body = expect_error(app.delete(&path).await, StatusCode::CONFLICT, "plugin_in_use").await;
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("uses-add@0.1.0")), "{body}");
        expect_status(app.post(&format!("{base}/disable")).await, StatusCode::OK).await;
        expect_status(app.delete(&path).await, StatusCode::NO_CONTENT).await;
    }
}

#[tokio::test]
async fn bad_uploads_are_refused_with_the_reason() {
    let app = spawn_app_with(Backend::Sqlite, |c| c.plugin_max_bytes = 4096).await;
    let cases: [(&str, Vec<u8>); 3] = [
        ("random bytes", b"definitely not wasm".to_vec()),
        ("a core module", b"\0asm\x01\0\0\0".to_vec()),
        ("a wrong world", plugin_bytes("hostile-wrong-world")),
    ];
    for (what, bytes) in cases {
        if bytes.len() > 4096 {
            continue;
        }
        let body = expect_error(
            upload(&app, bytes).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_plugin",
        )
        .await;
        assert!(
            body["error"]["details"][0]["code"].as_str().is_some(),
            "{what}: {body}"
        );
    }
    let response = upload(&app, plugin_bytes("add")).await;
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    let app = spawn_app(Backend::Sqlite).await;
    let body = expect_error(
        upload(&app, plugin_bytes("hostile-wrong-world")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_plugin",
    )
    .await;
    let code = body["error"]["details"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(code == "wrong_world" || code == "missing_export", "{body}");
    let body = expect_error(
        upload(&app, b"\0asm\x01\0\0\0".to_vec()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_plugin",
    )
    .await;
    assert_eq!(
        body["error"]["details"][0]["code"], "not_a_component",
        "{body}"
    );
    let response = app
        .request(Method::POST, "/api/v1/plugins")
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .expect("POST");
    expect_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let response = app
        .request(Method::POST, "/api/v1/plugins")
        .header("content-type", "application/wasm")
        .send()
        .await
        .expect("POST");
    expect_error(response, StatusCode::BAD_REQUEST, "empty_body").await;
    let list = expect_status(app.get("/api/v1/plugins").await, StatusCode::OK).await;
    assert_eq!(list["totalCount"], 0, "nothing was stored");
}

#[tokio::test]
async fn examples_invoke_with_good_and_bad_input() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut versions = std::collections::BTreeMap::new();
    for name in ["add", "hash", "template", "json-transform"] {
        let info = uploaded(&app, name).await;
        versions.insert(name, info["version"].as_str().expect("version").to_string());
    }
    let v = |name: &str| versions[name].clone();

    let report = invoke(&app, "add", &v("add"), json!({"input": {"value": 41}})).await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["output"], json!({"value": 42}));
    assert!(report["fuelUsed"].as_u64().is_some(), "{report}");
    assert!(
        report["peakMemoryBytes"].as_u64().is_some_and(|n| n > 0),
        "{report}"
    );
    assert!(report["durationMs"].as_f64().is_some(), "{report}");

    let report = invoke(&app, "add", &v("add"), json!({"input": {"value": "forty"}})).await;
    assert_eq!(report["status"], "failed");
    assert_eq!(report["error"]["source"], "plugin");
    assert_eq!(report["error"]["code"], "invalid_input");
    assert_eq!(report["error"]["retryable"], false);

    let report = invoke(
        &app,
        "hash",
        &v("hash"),
        json!({"input": {"data": "abc", "algorithm": "sha256"}}),
    )
    .await;
    assert_eq!(
        report["output"]["digest"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "{report}"
    );

    let report = invoke(
        &app,
        "template",
        &v("template"),
        json!({"input": {"template": "Hello {{name}}!", "values": {"name": "Weft"}}}),
    )
    .await;
    assert_eq!(report["output"]["text"], "Hello Weft!", "{report}");
    let report = invoke(
        &app,
        "template",
        &v("template"),
        json!({"input": {"template": "Hello {{who}}!", "values": {}}}),
    )
    .await;
    assert_eq!(report["error"]["code"], "missing_variable", "{report}");

    let report = invoke(
        &app,
        "json-transform",
        &v("json-transform"),
        json!({"input": {"data": {"a": 1, "b": 2}, "pick": ["/a"]}}),
    )
    .await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["output"]["data"]["a"], 1, "{report}");
    assert!(report["output"]["data"].get("b").is_none(), "{report}");

    let response = app
        .post_json("/api/v1/plugins/nope/1.0.0/invoke", &json!({"input": {}}))
        .await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = app
        .post_json(
            &format!("/api/v1/plugins/add/{}/invoke", v("add")),
            &json!({"input": {}, "limits": {"memory": 1}}),
        )
        .await;
    expect_error(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
}

#[tokio::test]
async fn every_limit_is_enforced_and_named() {
    let app = spawn_app(Backend::Sqlite).await;
    let cases = [
        ("hostile-loop", json!({"timeoutMs": 300}), "timeout"),
        ("hostile-loop", json!({"fuel": 5_000_000}), "out_of_fuel"),
        (
            "hostile-memory",
            json!({"memoryBytes": 32 << 20}),
            "memory_limit",
        ),
        ("hostile-stack", json!({}), "stack_overflow"),
        // It builds ~100 MB of JSON: give it the memory, so the output limit is what stops it.
        (
            "hostile-output",
            json!({"memoryBytes": 400 << 20}),
            "output_too_large",
        ),
        ("hostile-trap", json!({}), "trap"),
        ("hostile-log-flood", json!({"logLines": 100}), "log_limit"),
    ];
    for (name, limits, code) in cases {
        let info = match upload(&app, plugin_bytes(name)).await {
            r if r.status().is_success() => r.json::<Value>().await.expect("json"),
            r => panic!(
                "{name} upload: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ),
        };
        let version = info["version"].as_str().expect("version");
        let report = invoke(&app, name, version, json!({"input": {}, "limits": limits})).await;
        assert_eq!(report["status"], "failed", "{name}: {report}");
        assert_eq!(report["error"]["source"], "sandbox", "{name}: {report}");
        assert_eq!(report["error"]["code"], code, "{name}: {report}");
        assert!(
            report["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{report}"
        );
    }
}

#[tokio::test]
async fn others_keep_being_served_while_a_hostile_plugin_spins() {
    let app = spawn_app(Backend::Sqlite).await;
    let looping = uploaded(&app, "hostile-loop").await;
    let add = uploaded(&app, "add").await;
    let spin_path = format!(
        "/api/v1/plugins/hostile-loop/{}/invoke",
        looping["version"].as_str().expect("v")
    );
    let spin_body = json!({"input": {}, "limits": {"timeoutMs": 3000}});
    let spin = app.post_json(&spin_path, &spin_body);
    let add_path = format!(
        "/api/v1/plugins/add/{}/invoke",
        add["version"].as_str().expect("v")
    );
    let adds = async {
        let mut results = Vec::new();
        for i in 0..20 {
            let report: Value = app
                .post_json(&add_path, &json!({"input": {"value": i}}))
                .await
                .json()
                .await
                .expect("json");
            results.push(report["output"]["value"].as_i64());
        }
        results
    };
    let (spun, results) = tokio::join!(spin, adds);
    let spun: Value = spun.json().await.expect("json");
    assert_eq!(spun["error"]["code"], "timeout", "{spun}");
    assert_eq!(results, (1..=20).map(Some).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_restart_loads_plugins_from_the_compiled_cache() {
    let mut app = spawn_app(Backend::Sqlite).await;
    let info = uploaded(&app, "hash").await;
    assert_eq!(info["loadedFromCache"], false);
    app.restart().await;
    let path = format!(
        "/api/v1/plugins/hash/{}",
        info["version"].as_str().expect("version")
    );
    let after = expect_status(app.get(&path).await, StatusCode::OK).await;
    assert_eq!(after["loadedFromCache"], true, "{after}");
    assert_eq!(after["sha256"], info["sha256"]);
    let report = invoke(
        &app,
        "hash",
        info["version"].as_str().expect("v"),
        json!({"input": {"data": ""}}),
    )
    .await;
    assert_eq!(report["status"], "completed", "{report}");
}

#[tokio::test]
async fn the_plugins_directory_is_loaded_and_reloaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(plugin_path("add"), dir.path().join("add.wasm")).expect("copy");
    std::fs::write(dir.path().join("broken.wasm"), b"nope").expect("write");
    let plugins_dir = dir.path().to_path_buf();
    let app = spawn_app_with(Backend::Sqlite, move |c| c.plugins_dir = Some(plugins_dir)).await;
    let list = expect_status(app.get("/api/v1/plugins").await, StatusCode::OK).await;
    assert_eq!(list["totalCount"], 1, "{list}");
    assert_eq!(list["items"][0]["source"]["kind"], "directory");
    let version = list["items"][0]["version"]
        .as_str()
        .expect("version")
        .to_string();
    let response = app.delete(&format!("/api/v1/plugins/add/{version}")).await;
    expect_error(response, StatusCode::CONFLICT, "managed_by_directory").await;

    std::fs::copy(plugin_path("hash"), dir.path().join("hash.wasm")).expect("copy");
    std::fs::remove_file(dir.path().join("add.wasm")).expect("remove");
    let report = expect_status(app.post("/api/v1/plugins/reload").await, StatusCode::OK).await;
    assert_eq!(
        report["loaded"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert!(
        report["loaded"][0]
            .as_str()
            .is_some_and(|s| s.starts_with("hash@")),
        "{report}"
    );
    assert!(
        report["removed"][0]
            .as_str()
            .is_some_and(|s| s.starts_with("add@")),
        "{report}"
    );
    assert_eq!(report["failed"][0]["code"], "not_wasm", "{report}");
    let list = expect_status(app.get("/api/v1/plugins").await, StatusCode::OK).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["hash"]);
}
