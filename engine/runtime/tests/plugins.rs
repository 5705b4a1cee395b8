//! The runtime against the real plugins of `plugins/` (`cargo xtask plugins` builds them into
//! `target/plugins/*.wasm`; these tests fail with that hint when the files are missing).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use weft_runtime::{Invocation, InvokeError, Limits, LoadedPlugin, Runtime};

async fn load(rt: &Runtime, name: &str) -> LoadedPlugin {
    rt.load(&plugin(name))
        .await
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

async fn invoke(
    rt: &Runtime,
    name: &str,
    input: Value,
    limits: &Limits,
) -> Result<Invocation, InvokeError> {
    let p = load(rt, name).await;
    rt.invoke(&p, ctx(), &input, limits, CancellationToken::new())
        .await
}

async fn output(rt: &Runtime, name: &str, input: Value) -> Value {
    let inv = invoke(rt, name, input, &limits()).await.unwrap();
    inv.outcome
        .unwrap_or_else(|e| panic!("{name} failed: {e:?}"))
}

async fn guest_error(rt: &Runtime, name: &str, input: Value) -> weft_runtime::StepError {
    let inv = invoke(rt, name, input, &limits()).await.unwrap();
    inv.outcome.expect_err("expected the step to fail")
}

#[tokio::test]
async fn loads_each_example_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    for name in ["add", "hash", "template", "json-transform"] {
        let p = load(&rt, name).await;
        let d = &p.description;
        assert_eq!(d.name, name);
        assert!(!d.description.is_empty(), "{name}");
        assert!(d.input_schema.is_object(), "{name}: {}", d.input_schema);
        assert!(d.output_schema.is_object(), "{name}: {}", d.output_schema);
        assert_eq!(p.wasm_size, plugin(name).len() as u64);
        assert!(!p.compiled_from_cache);
    }
    assert_eq!(rt.stats().compiles, 4);
}

#[tokio::test]
async fn add() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    assert_eq!(
        output(&rt, "add", json!({"value": 2, "by": 3})).await,
        json!({"value": 5})
    );
    assert_eq!(
        output(&rt, "add", json!({"value": 2})).await,
        json!({"value": 3})
    );
    let e = guest_error(&rt, "add", json!({"value": "two"})).await;
    assert_eq!((e.code.as_str(), e.retryable), ("invalid_input", false));
    let e = guest_error(&rt, "add", json!({"value": u64::MAX, "by": 1})).await;
    assert_eq!(e.code, "overflow");
}

#[tokio::test]
async fn hash() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    assert_eq!(
        output(&rt, "hash", json!({"data": "abc", "algorithm": "crc32"})).await,
        json!({"algorithm": "crc32", "digest": "352441c2"})
    );
    let e = guest_error(&rt, "hash", json!({"algorithm": "crc32"})).await;
    assert_eq!(e.code, "invalid_input");
}

#[tokio::test]
async fn template() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let input = json!({"template": "Hello {{name}}!", "values": {"name": "Ada"}});
    assert_eq!(
        output(&rt, "template", input).await,
        json!({"text": "Hello Ada!"})
    );
    let e = guest_error(
        &rt,
        "template",
        json!({"template": "{{nope}}", "values": {}}),
    )
    .await;
    assert_eq!((e.code.as_str(), e.retryable), ("missing_variable", false));
}

#[tokio::test]
async fn json_transform() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let input = json!({"data": {"a": 1, "b": 2}, "pick": ["/a"]});
    assert_eq!(
        output(&rt, "json-transform", input).await,
        json!({"data": {"a": 1}})
    );
    let e = guest_error(
        &rt,
        "json-transform",
        json!({"data": {}, "pick": ["no-slash"]}),
    )
    .await;
    assert_eq!(e.code, "invalid_pointer");
}

async fn hostile(name: &str, input: Value, limits: Limits) -> InvokeError {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let err = invoke(&rt, name, input, &limits).await.unwrap_err();
    // The runtime keeps serving after the hostile guest.
    assert_eq!(
        output(&rt, "add", json!({"value": 1})).await,
        json!({"value": 2})
    );
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_loop_hits_the_timeout_or_its_fuel() {
    let l = Limits {
        timeout: Duration::from_millis(300),
        ..limits()
    };
    let e = hostile("hostile-loop", json!({}), l).await;
    assert_eq!(
        e,
        InvokeError::Timeout {
            limit: Duration::from_millis(300)
        }
    );
    let l = Limits {
        fuel: Some(10_000_000),
        ..limits()
    };
    let e = hostile("hostile-loop", json!({}), l).await;
    assert_eq!(e, InvokeError::OutOfFuel { limit: 10_000_000 });
}

#[tokio::test]
async fn hostile_memory_hits_the_memory_limit() {
    let l = Limits {
        memory_bytes: 32 << 20,
        ..limits()
    };
    let e = hostile("hostile-memory", json!({}), l).await;
    assert_eq!(e, InvokeError::MemoryLimit { limit: 32 << 20 });
}

#[tokio::test]
async fn hostile_stack_overflows_its_stack() {
    let e = hostile("hostile-stack", json!({}), limits()).await;
    assert_eq!(e.code(), "stack_overflow", "{e}");
}

#[tokio::test]
async fn hostile_trap_traps() {
    let e = hostile("hostile-trap", json!({}), limits()).await;
    assert_eq!(e.code(), "trap");
    let e = hostile("hostile-trap", json!({"mode": "panic"}), limits()).await;
    assert_eq!(e.code(), "trap");
    assert!(
        e.to_string().contains("panicked"),
        "the guest's stderr is in the message: {e}"
    );
}

#[tokio::test]
async fn hostile_output_hits_the_output_limit() {
    let l = Limits {
        memory_bytes: 512 << 20,
        output_bytes: 1 << 20,
        ..limits()
    };
    let e = hostile("hostile-output", json!({}), l).await;
    match e {
        InvokeError::OutputTooLarge { limit, size } => {
            assert_eq!(limit, 1 << 20);
            assert!(size > 100_000_000, "{size}");
        }
        other => panic!("expected output_too_large, got {other}"),
    }
}

#[tokio::test]
async fn hostile_log_flood_hits_the_log_limit() {
    let l = Limits {
        log_lines: 100,
        ..limits()
    };
    let e = hostile("hostile-log-flood", json!({}), l).await;
    assert_eq!(e, InvokeError::LogLimit { limit: 100 });
}

#[tokio::test]
async fn hostile_wrong_world_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let e = rt.load(&plugin("hostile-wrong-world")).await.unwrap_err();
    assert_eq!(e.code(), "wrong_world", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_keeps_working_while_hostile_loop_spins() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let spinner = load(&rt, "hostile-loop").await;
    let add = load(&rt, "add").await;
    let spin = {
        let rt = rt.clone();
        let l = Limits {
            timeout: Duration::from_secs(3),
            ..limits()
        };
        tokio::spawn(async move {
            rt.invoke(&spinner, ctx(), &json!({}), &l, CancellationToken::new())
                .await
        })
    };
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let (rt, add) = (rt.clone(), add.clone());
            tokio::spawn(async move {
                rt.invoke(
                    &add,
                    ctx(),
                    &json!({"value": i}),
                    &limits(),
                    CancellationToken::new(),
                )
                .await
            })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let inv = call.await.unwrap().unwrap();
        assert_eq!(inv.outcome, Ok(json!({"value": i + 1})));
    }
    assert_eq!(spin.await.unwrap().unwrap_err().code(), "timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_hostile_loop() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let spinner = load(&rt, "hostile-loop").await;
    let cancel = CancellationToken::new();
    let call = {
        let (rt, cancel) = (rt.clone(), cancel.clone());
        let l = Limits {
            timeout: Duration::from_secs(60),
            ..limits()
        };
        tokio::spawn(async move { rt.invoke(&spinner, ctx(), &json!({}), &l, cancel).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    cancel.cancel();
    let e = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(e, InvokeError::Cancelled);
}

#[tokio::test]
async fn a_restarted_runtime_loads_from_the_disk_cache() {
    let dir = tempfile::tempdir().unwrap();
    let first = load(&runtime(dir.path()), "add").await;
    assert!(!first.compiled_from_cache);
    let rt = runtime(dir.path());
    let again = load(&rt, "add").await;
    assert!(again.compiled_from_cache);
    assert_eq!(again.description, first.description);
    let s = rt.stats();
    assert_eq!((s.compiles, s.disk_cache_hits), (0, 1));
    assert_eq!(
        output(&rt, "add", json!({"value": 1, "by": 1})).await,
        json!({"value": 2})
    );
}
