//! Step plugins written in Python, JavaScript and C (`plugins/{python,javascript,c}/`, their
//! templates in `templates/`), uploaded and invoked through HTTP, and one workflow mixing them
//! with a Rust step. Needs `cargo xtask plugins` (the test command runs it first).
//!
//! SQLite only, one test per scenario: the Python and JavaScript components are 12–19 MB and each
//! upload compiles for seconds.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use weft_store::Backend;

use crate::helpers::*;

/// Upload a built plugin (`templates/<name>` for a template); return its metadata.
async fn upload(app: &TestApp, name: &str) -> Value {
    let response = app
        .request(Method::POST, "/api/v1/plugins")
        .header("content-type", "application/wasm")
        .body(plugin_bytes(name))
        .send()
        .await
        .expect("POST");
    expect_status(response, StatusCode::CREATED).await
}

/// `POST /api/v1/plugins/{name}/0.1.0/invoke` with `input`: the report (200 whatever the outcome).
async fn invoke(app: &TestApp, name: &str, input: Value) -> Value {
    let response = app
        .post_json(
            &format!("/api/v1/plugins/{name}/0.1.0/invoke"),
            &json!({"input": input}),
        )
        .await;
    expect_status(response, StatusCode::OK).await
}

/// The output of a completed invocation.
async fn output(app: &TestApp, name: &str, input: Value) -> Value {
    let report = invoke(app, name, input.clone()).await;
    assert_eq!(report["status"], "completed", "{name} {input}: {report}");
    report["output"].clone()
}

/// The error of a failed invocation: a plugin error with `code` and `retryable`; its message.
async fn failure(app: &TestApp, name: &str, input: Value, code: &str, retryable: bool) -> String {
    let report = invoke(app, name, input.clone()).await;
    assert_eq!(report["status"], "failed", "{name} {input}: {report}");
    let error = &report["error"];
    assert_eq!(error["source"], "plugin", "{name} {input}: {report}");
    assert_eq!(error["code"], code, "{name} {input}: {report}");
    assert_eq!(error["retryable"], retryable, "{name} {input}: {report}");
    let message = error["message"].as_str().unwrap_or_default().to_string();
    assert!(!message.is_empty(), "{report}");
    message
}

fn assert_describes(info: &Value, name: &str) {
    assert_eq!(info["name"], name, "{info}");
    assert_eq!(info["version"], "0.1.0", "{info}");
    assert!(info["inputSchema"].is_object(), "{info}");
    assert!(info["outputSchema"].is_object(), "{info}");
    assert!(
        info["description"].as_str().is_some_and(|d| !d.is_empty()),
        "{info}"
    );
}

#[tokio::test]
async fn python_normalize_validates_and_normalises_records() {
    let app = spawn_app(Backend::Sqlite).await;
    let info = upload(&app, "py-normalize").await;
    assert_describes(&info, "py-normalize");
    assert!(
        info["wasmSize"].as_u64().is_some_and(|n| n > 1 << 20),
        "{info}"
    );
    assert_eq!(info["inputSchema"]["required"], json!(["record"]), "{info}");

    // Without a schema: keys to snake_case, strings cleaned, at every depth.
    let out = output(
        &app,
        "py-normalize",
        json!({"record": {"First Name": "  Ada   Lovelace ", "eMail": "ADA@Example.ORG",
                          "homeAddress": {"Zip Code": " 12345 "}, "tags": [" x ", ""], "age": 36}}),
    )
    .await;
    assert_eq!(
        out["record"],
        json!({"first_name": "Ada Lovelace", "e_mail": "ADA@Example.ORG",
               "home_address": {"zip_code": "12345"}, "tags": ["x", null], "age": 36})
    );
    assert!(
        out["changed"]
            .as_array()
            .is_some_and(|c| c.contains(&json!("/first_name"))
                && c.contains(&json!("/home_address/zip_code"))
                && !c.contains(&json!("/age"))),
        "{out}"
    );

    // With a schema: typed fields coerced, defaults, enums, unknown fields dropped.
    let schema = json!({"fields": {
        "email": {"type": "email", "required": true},
        "age": {"type": "integer", "min": 0, "max": 150},
        "active": {"type": "boolean"},
        "born": {"type": "date"},
        "country": {"type": "string", "enum": ["DE", "FR"], "default": "DE"},
        "name": {"type": "string", "case": "title"}},
        "unknown": "drop"});
    let out = output(
        &app,
        "py-normalize",
        json!({"record": {"Name": "ada  lovelace", "Email": " ADA@Example.ORG ", "age": "36",
                          "active": "yes", "born": "10.12.1815", "junk": 1},
               "schema": schema.clone()}),
    )
    .await;
    assert_eq!(
        out["record"],
        json!({"name": "Ada Lovelace", "email": "ada@example.org", "age": 36, "active": true,
               "born": "1815-12-10", "country": "DE"})
    );

    // Every problem of the record in one `validation_failed`, not retryable.
    let message = failure(
        &app,
        "py-normalize",
        json!({"record": {"email": "nope", "age": 200, "active": "maybe"}, "schema": schema.clone()}),
        "validation_failed",
        false,
    )
    .await;
    assert!(message.contains("3 problems"), "{message}");
    for part in ["/email: ", "/age: must be at most 150", "/active: "] {
        assert!(message.contains(part), "{part} in {message}");
    }
    let message = failure(
        &app,
        "py-normalize",
        json!({"record": {"age": 1}, "schema": schema}),
        "validation_failed",
        false,
    )
    .await;
    assert!(message.contains("/email: is required"), "{message}");
    let message = failure(
        &app,
        "py-normalize",
        json!({"record": {"a b": 1, "A_B": 2}}),
        "validation_failed",
        false,
    )
    .await;
    assert!(message.contains("/a_b"), "{message}");

    // The caller's mistakes: `invalid_input`.
    let message = failure(
        &app,
        "py-normalize",
        json!({"record": {}, "schema": {"fields": {"x": {"type": "blob"}}}}),
        "invalid_input",
        false,
    )
    .await;
    assert!(message.contains("/schema/fields/x/type"), "{message}");
    for input in [
        json!({}),
        json!({"record": [1]}),
        json!({"record": {}, "extra": 1}),
        json!([1, 2]),
    ] {
        failure(&app, "py-normalize", input, "invalid_input", false).await;
    }
}

#[tokio::test]
async fn javascript_render_fills_templates_with_loops_and_conditions() {
    let app = spawn_app(Backend::Sqlite).await;
    let info = upload(&app, "js-render").await;
    assert_describes(&info, "js-render");

    let out = output(
        &app,
        "js-render",
        json!({"template": "Hello {{ name | upper }}!", "values": {"name": "Ada"}}),
    )
    .await;
    assert_eq!(out, json!({"text": "Hello ADA!"}));

    let template = "Order {{order.id}} for {{customer.name}}:\n\
                    {{#each order.items}}\n\
                    - {{@index}}. {{name}} x{{qty}}{{#if @last}} (last){{/if}}\n\
                    {{else}}\n\
                    (nothing)\n\
                    {{/each}}\n\
                    {{#if customer.vip}}Thank you, VIP!{{else}}Thanks.{{/if}} \\{{literal}}";
    let values = json!({"customer": {"name": "Ada", "vip": true},
                        "order": {"id": 7, "items": [{"name": "tea", "qty": 2}, {"name": "cake", "qty": 1}]}});
    let out = output(
        &app,
        "js-render",
        json!({"template": template, "values": values}),
    )
    .await;
    assert_eq!(
        out["text"],
        "Order 7 for Ada:\n- 0. tea x2\n- 1. cake x1 (last)\nThank you, VIP! {{literal}}"
    );
    let out = output(
        &app,
        "js-render",
        json!({"template": template, "values": {"customer": {"name": "Bo"}, "order": {"id": 8, "items": []}}}),
    )
    .await;
    assert_eq!(
        out["text"],
        "Order 8 for Bo:\n(nothing)\nThanks. {{literal}}"
    );
    let out = output(
        &app,
        "js-render",
        json!({"template": "{{#each m}}{{@key}}={{this}};{{/each}} {{s | html}} {{o | json}} {{l | length}}",
               "values": {"m": {"a": 1, "b": "x"}, "s": "<b>", "o": {"k": [1]}, "l": [1, 2, 3]}}),
    )
    .await;
    assert_eq!(out["text"], "a=1;b=x; &lt;b&gt; {\"k\":[1]} 3");

    let message = failure(
        &app,
        "js-render",
        json!({"template": "Hi {{who}} and {{user.email}}", "values": {"user": {}}}),
        "missing_variable",
        false,
    )
    .await;
    assert!(message.contains("who, user.email"), "{message}");
    let message = failure(
        &app,
        "js-render",
        json!({"template": "line one\n{{#if x}}never closed", "values": {}}),
        "invalid_template",
        false,
    )
    .await;
    assert!(message.contains("line 2, column 1"), "{message}");
    failure(
        &app,
        "js-render",
        json!({"template": "{{ x | shout }}"}),
        "invalid_template",
        false,
    )
    .await;
    failure(
        &app,
        "js-render",
        json!({"template": "{{#each n}}x{{/each}}", "values": {"n": 3}}),
        "not_iterable",
        false,
    )
    .await;
    for input in [
        json!({}),
        json!({"template": 5}),
        json!({"template": "", "values": []}),
        json!({"template": "", "extra": 1}),
    ] {
        failure(&app, "js-render", input, "invalid_input", false).await;
    }
}

#[tokio::test]
async fn c_checksum_computes_crc32_and_adler32() {
    let app = spawn_app(Backend::Sqlite).await;
    let info = upload(&app, "c-checksum").await;
    assert_describes(&info, "c-checksum");

    let abc = json!({"bytes": 3, "crc32": "352441c2", "adler32": "024d0127"});
    assert_eq!(
        output(&app, "c-checksum", json!({"data": "abc"})).await,
        abc
    );
    assert_eq!(
        output(
            &app,
            "c-checksum",
            json!({"data": "YWJj", "encoding": "base64"})
        )
        .await,
        abc
    );
    assert_eq!(
        output(
            &app,
            "c-checksum",
            json!({"data": "616263", "encoding": "hex"})
        )
        .await,
        abc
    );
    // The CRC-32 check value, and the empty payload.
    assert_eq!(
        output(&app, "c-checksum", json!({"data": "123456789"})).await,
        json!({"bytes": 9, "crc32": "cbf43926", "adler32": "091e01de"})
    );
    assert_eq!(
        output(&app, "c-checksum", json!({"data": ""})).await,
        json!({"bytes": 0, "crc32": "00000000", "adler32": "00000001"})
    );
    // JSON escapes are decoded: the checksum is of the UTF-8 bytes of the string.
    let text = "h\u{e9} \u{1F600}\n\"\\\u{0}";
    let out = output(&app, "c-checksum", json!({"data": text})).await;
    assert_eq!(out["bytes"], text.len());
    assert_eq!(out["crc32"], format!("{:08x}", crc32(text.as_bytes())));
    // 1 MiB, beyond Adler-32's 5552-byte blocks.
    let big = "abcdefghij".repeat(100_000);
    let out = output(&app, "c-checksum", json!({"data": big})).await;
    assert_eq!(out["crc32"], format!("{:08x}", crc32(big.as_bytes())));

    for (input, what) in [
        (json!({}), "`data` is required"),
        (json!({"data": 5}), "`data` must be a string"),
        (
            json!({"data": "a", "extra": {"x": [1]}}),
            "unknown field `extra`",
        ),
        (
            json!({"data": "a", "encoding": "rot13"}),
            "`encoding` must be",
        ),
        (json!({"data": "YWJ", "encoding": "base64"}), "not base64"),
        (json!({"data": "zz", "encoding": "hex"}), "not hex"),
        (json!(["data"]), "must be a JSON object"),
    ] {
        let message = failure(&app, "c-checksum", input.clone(), "invalid_input", false).await;
        assert!(message.contains(what), "{input}: {message}");
    }
}

#[tokio::test]
async fn the_templates_build_into_steps_the_server_accepts() {
    let app = spawn_app(Backend::Sqlite).await;
    for name in ["py-hello", "js-hello", "c-hello"] {
        let info = upload(&app, &format!("templates/{name}")).await;
        assert_describes(&info, name);
        assert_eq!(
            output(&app, name, json!({"name": " Ada "})).await,
            json!({"greeting": "Hello, Ada!"}),
            "{name}"
        );
        assert_eq!(
            output(&app, name, json!({"name": "A \"q\" \u{e9}"})).await,
            json!({"greeting": "Hello, A \"q\" \u{e9}!"}),
            "{name}"
        );
        let message = failure(
            &app,
            name,
            json!({"name": "Ada", "simulateOutage": true}),
            "unavailable",
            true,
        )
        .await;
        assert!(message.contains("simulated outage"), "{name}: {message}");
        for input in [
            json!({}),
            json!({"name": ""}),
            json!({"name": "x", "nom": 1}),
        ] {
            failure(&app, name, input, "invalid_input", false).await;
        }
    }

    // In a workflow, the engine retries a retryable error and not the others.
    deploy(&app, json!({"name": "outage", "steps": [
        {"stepDefinitionId": "greet", "type": "task", "taskConfig": {"taskDefinitionId": "js-hello"},
         "retryPolicy": {"maxAttempts": 2, "initialIntervalSeconds": 0.1},
         "parameters": {"name": {"type": "constant", "value": "Ada"},
                        "simulateOutage": {"type": "constant", "value": true}}}]}))
    .await;
    let run = finished(&app, json!({"name": "outage"})).await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert_eq!(run["error"]["code"], "unavailable", "{run}");
    assert_eq!(attempts(&app, &run, "greet").await, 2);

    deploy(&app, json!({"name": "no-name", "steps": [
        {"stepDefinitionId": "greet", "type": "task", "taskConfig": {"taskDefinitionId": "py-hello"},
         "retryPolicy": {"maxAttempts": 3, "initialIntervalSeconds": 0.1},
         "parameters": {"name": {"type": "constant", "value": ""}}}]}))
    .await;
    let run = finished(&app, json!({"name": "no-name"})).await;
    assert_eq!(run["error"]["code"], "invalid_input", "{run}");
    assert_eq!(attempts(&app, &run, "greet").await, 1);
}

#[tokio::test]
async fn a_workflow_mixes_python_javascript_c_and_rust_steps() {
    let app = spawn_app(Backend::Sqlite).await;
    for name in ["py-normalize", "js-render", "c-checksum", "hash"] {
        upload(&app, name).await;
    }
    let task = |id: &str, plugin: &str, next: Option<&str>, parameters: Value| {
        let mut config = json!({"taskDefinitionId": plugin});
        if let Some(next) = next {
            config["nextStepId"] = json!(next);
        }
        json!({"stepDefinitionId": id, "type": "task", "taskConfig": config, "parameters": parameters})
    };
    let from = |step: &str, key: &str| json!({"type": "taskOutput", "value": {"taskId": step, "outputKey": key}});
    deploy(&app, json!({
        "name": "polyglot-letter",
        "inputParameters": [{"name": "customer", "type": "object", "required": true}],
        "outputParameters": [
            {"name": "letter", "value": {"type": "expression", "value": "steps.render.text"}},
            {"name": "bytes", "value": {"type": "expression", "value": "steps.checksum.bytes"}},
            {"name": "crc32", "value": {"type": "expression", "value": "steps.checksum.crc32"}},
            {"name": "crc32ByRust", "value": {"type": "expression", "value": "steps.hash.digest"}}
        ],
        "steps": [
            task("normalize", "py-normalize", Some("render"), json!({
                "record": {"type": "workflowInput", "value": "customer"},
                "schema": {"type": "constant", "value": {"fields": {
                    "name": {"type": "string", "case": "title", "required": true},
                    "email": {"type": "email", "required": true},
                    "orders": {"type": "array", "default": []}}}}})),
            task("render", "js-render", Some("checksum"), json!({
                "template": {"type": "constant", "value":
                    "Dear {{name}} <{{email}}>,\n{{#each orders}}\n* {{item}} x{{qty}}\n{{else}}\nno orders yet\n{{/each}}\n"},
                "values": from("normalize", "record")})),
            task("checksum", "c-checksum", Some("hash"), json!({"data": from("render", "text")})),
            task("hash", "hash", None, json!({
                "data": from("render", "text"),
                "algorithm": {"type": "constant", "value": "crc32"}}))
        ]
    }))
    .await;

    let customer = json!({"Name": "  ada LOVELACE ", "Email": "Ada@Example.ORG",
                          "orders": [{"item": "Tea", "qty": 2}, {"item": "Cake", "qty": 1}]});
    let run = finished(
        &app,
        json!({"name": "polyglot-letter", "input": {"customer": customer}}),
    )
    .await;
    assert_eq!(run["status"], "COMPLETED", "{run}");
    let letter = "Dear Ada Lovelace <ada@example.org>,\n* Tea x2\n* Cake x1\n";
    let crc = format!("{:08x}", crc32(letter.as_bytes()));
    assert_eq!(
        run["output"],
        json!({"letter": letter, "bytes": letter.len(), "crc32": crc, "crc32ByRust": crc})
    );
    for step in steps(&app, &run).await {
        assert_eq!(step["status"], "COMPLETED", "{step}");
        assert_eq!(step["runner"], "wasm", "{step}");
    }

    // A record the Python step refuses fails the run with its error, not retried.
    let run = finished(
        &app,
        json!({"name": "polyglot-letter", "input": {"customer": {"Name": "Bo", "email": "nope"}}}),
    )
    .await;
    assert_eq!(run["status"], "FAILED", "{run}");
    assert_eq!(run["error"]["code"], "validation_failed", "{run}");
    assert_eq!(attempts(&app, &run, "normalize").await, 1);
}

/// Create, publish and enable a definition.
async fn deploy(app: &TestApp, definition: Value) {
    let created = app.create_definition(&definition).await;
    let id = created["id"].as_str().expect("id").to_string();
    for action in ["publish", "enable"] {
        let path = format!("/api/v1/workflow-definitions/{id}/{action}");
        expect_status(app.post(&path).await, StatusCode::OK).await;
    }
}

/// Start a run and poll it until it is COMPLETED or FAILED.
async fn finished(app: &TestApp, start: Value) -> Value {
    let run = expect_status(
        app.post_json("/api/v1/workflow-instances", &start).await,
        StatusCode::CREATED,
    )
    .await;
    let id = run["id"].as_str().expect("id").to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let run = expect_status(
            app.get(&format!("/api/v1/workflow-instances/{id}")).await,
            StatusCode::OK,
        )
        .await;
        if matches!(run["status"].as_str(), Some("COMPLETED" | "FAILED")) {
            return run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {id} stuck: {run}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn steps(app: &TestApp, run: &Value) -> Vec<Value> {
    let id = run["id"].as_str().expect("id");
    let body = expect_status(
        app.get(&format!("/api/v1/workflow-instances/{id}/steps"))
            .await,
        StatusCode::OK,
    )
    .await;
    body["items"].as_array().expect("items").clone()
}

/// How many attempts the step `step_id` of `run` made.
async fn attempts(app: &TestApp, run: &Value, step_id: &str) -> usize {
    let steps = steps(app, run).await;
    let step = steps
        .iter()
        .find(|s| s["stepId"] == step_id)
        .unwrap_or_else(|| panic!("no step {step_id}: {steps:?}"));
    step["attempts"].as_array().map_or(0, Vec::len)
}

/// CRC-32/ISO-HDLC (zlib's), to check the C step against.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
