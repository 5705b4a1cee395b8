//! The sandbox against components written in WAT: every limit, every refusal, the caches,
//! cancellation and shutdown. Needs no guest toolchain.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use weft_runtime::{Allocator, InvokeError, Limits, Runtime, RuntimeConfig};

async fn run(
    rt: &Runtime,
    body: &str,
    limits: &Limits,
) -> Result<weft_runtime::Invocation, InvokeError> {
    let plugin = rt.load(&component(body)).await.unwrap();
    rt.invoke(
        &plugin,
        ctx(),
        &json!({"a": 1}),
        limits,
        CancellationToken::new(),
    )
    .await
}

async fn code_of(body: &str, limits: Limits) -> &'static str {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    run(&rt, body, &limits).await.unwrap_err().code()
}

#[tokio::test]
async fn loads_a_component_and_echoes_input() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let plugin = rt.load(&component(ECHO)).await.unwrap();
    assert_eq!(plugin.description.name, "wat-step");
    assert_eq!(plugin.description.version.to_string(), "1.0.0");
    assert_eq!(plugin.description.description, "A step made of WAT.");
    assert_eq!(plugin.description.input_schema, json!({"type": "object"}));
    assert_eq!(plugin.description.output_schema, json!(true));
    assert_eq!(plugin.sha256.len(), 64);
    assert!(!plugin.compiled_from_cache);
    assert!(plugin.compiled_size > 0);

    let input = json!({"x": [1, 2, "three"]});
    let inv = rt
        .invoke(&plugin, ctx(), &input, &limits(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(inv.outcome, Ok(input));
    assert!(inv.fuel_used.unwrap() > 0);
    assert_eq!(inv.peak_memory_bytes, 2 * 65536);
    let stats = rt.stats();
    assert_eq!(
        (stats.compiles, stats.invocations, stats.invocations_failed),
        (1, 1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_and_invoke_can_be_spawned() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let plugin = tokio::spawn({
        let rt = rt.clone();
        async move { rt.load(&component(ECHO)).await }
    })
    .await
    .unwrap()
    .unwrap();
    let inv = tokio::spawn(async move {
        rt.invoke(
            &plugin,
            ctx(),
            &json!("hi"),
            &limits(),
            CancellationToken::new(),
        )
        .await
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(inv.outcome, Ok(json!("hi")));
}

#[tokio::test]
async fn guest_errors_come_back_typed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let inv = run(&rt, GUEST_ERROR, &limits()).await.unwrap();
    let err = inv.outcome.unwrap_err();
    assert_eq!(
        (err.code.as_str(), err.message.as_str(), err.retryable),
        ("invalid_input", "bad input", false)
    );
    assert_eq!(rt.stats().guest_errors, 1);
}

#[tokio::test]
async fn the_log_import_counts_against_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let one = Limits {
        log_lines: 1,
        ..limits()
    };
    assert!(run(&rt, LOG_THEN_ECHO, &one).await.unwrap().outcome.is_ok());
    let none = Limits {
        log_lines: 0,
        ..limits()
    };
    assert_eq!(
        run(&rt, LOG_THEN_ECHO, &none).await.unwrap_err(),
        InvokeError::LogLimit { limit: 0 }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_stops_the_guest_with_its_code() {
    let quick = Limits {
        timeout: Duration::from_millis(200),
        ..limits()
    };
    assert_eq!(code_of(LOOP, quick).await, "timeout");
    let fuel = Limits {
        fuel: Some(1_000_000),
        ..limits()
    };
    assert_eq!(code_of(LOOP, fuel).await, "out_of_fuel");
    assert_eq!(code_of(MEMORY_BOMB, limits()).await, "memory_limit");
    let tiny = Limits {
        memory_bytes: 65536,
        ..limits()
    };
    assert_eq!(
        code_of(ECHO, tiny).await,
        "memory_limit",
        "initial memory over the limit"
    );
    assert_eq!(code_of(STACK_OVERFLOW, limits()).await, "stack_overflow");
    assert_eq!(
        code_of(SHADOW_STACK_OVERFLOW, limits()).await,
        "stack_overflow"
    );
    assert_eq!(code_of(OUT_OF_BOUNDS, limits()).await, "trap");
    assert_eq!(code_of(TRAP, limits()).await, "trap");
    assert_eq!(
        code_of(
            LOG_FLOOD,
            Limits {
                log_lines: 10,
                ..limits()
            }
        )
        .await,
        "log_limit"
    );
    assert_eq!(code_of(NOT_JSON, limits()).await, "invalid_output");
    let small_output = Limits {
        output_bytes: 1 << 20,
        ..limits()
    };
    assert_eq!(
        code_of(&big_output(2 << 20), small_output).await,
        "output_too_large"
    );
}

#[tokio::test]
async fn errors_name_the_limit_and_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let l = Limits {
        memory_bytes: 1 << 20,
        ..limits()
    };
    let e = run(&rt, MEMORY_BOMB, &l).await.unwrap_err();
    assert_eq!(e, InvokeError::MemoryLimit { limit: 1 << 20 });
    assert!(e.to_string().contains("memory_bytes = 1048576"), "{e}");
    let l = Limits {
        output_bytes: 1000,
        ..limits()
    };
    let e = run(&rt, &big_output(5000), &l).await.unwrap_err();
    assert_eq!(
        e,
        InvokeError::OutputTooLarge {
            limit: 1000,
            size: 5000
        }
    );
    let e = run(&rt, STACK_OVERFLOW, &limits()).await.unwrap_err();
    assert_eq!(
        e,
        InvokeError::StackOverflow {
            limit: Some(512 << 10)
        }
    );
    assert!(
        e.to_string().contains("max wasm stack = 524288 bytes"),
        "{e}"
    );
    let e = run(&rt, SHADOW_STACK_OVERFLOW, &limits())
        .await
        .unwrap_err();
    assert_eq!(e, InvokeError::StackOverflow { limit: None });
    let e = run(&rt, TRAP, &limits()).await.unwrap_err();
    assert!(
        matches!(&e, InvokeError::Trap(m) if m.contains("unreachable")),
        "{e}"
    );
    assert!(!e.retryable());
}

#[tokio::test]
async fn limits_are_clamped_to_the_maxima() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RuntimeConfig {
        maxima: Limits {
            fuel: Some(1_000_000),
            ..Limits::default_maxima()
        },
        ..config(dir.path())
    };
    let rt = Runtime::new(cfg, CancellationToken::new()).unwrap();
    let e = run(
        &rt,
        LOOP,
        &Limits {
            fuel: None,
            ..limits()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e, InvokeError::OutOfFuel { limit: 1_000_000 });
}

#[tokio::test]
async fn refuses_what_is_not_a_step_component() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let code = |bytes: Vec<u8>| {
        let rt = rt.clone();
        async move { rt.load(&bytes).await.unwrap_err().code() }
    };
    assert_eq!(
        code(wat::parse_str("(module)").unwrap()).await,
        "not_a_component"
    );
    assert_eq!(code(b"random bytes, not wasm".to_vec()).await, "not_wasm");
    assert_eq!(code(b"(component)".to_vec()).await, "not_wasm");
    let precompiled = rt.engine().precompile_component(&component(ECHO)).unwrap();
    assert_eq!(code(precompiled).await, "precompiled_artifact");
    let mut broken = component(ECHO);
    broken.truncate(broken.len() / 2);
    assert_eq!(code(broken).await, "invalid_component");

    let v2 = step_world_at("2.0.0");
    assert_eq!(
        code(component_of_world(&v2, "2.0.0", true)).await,
        "wrong_world"
    );
    let no_run = step_world_at("1.0.0").replace(
        "export run: func(ctx: step-context, input: string) -> result<string, step-error>;",
        "",
    );
    assert_eq!(
        code(component_of_world(&no_run, "1.0.0", false)).await,
        "wrong_world"
    );

    for (name, version, schema) in [
        ("Bad Name", "1.0.0", "{}"),
        ("ok", "one", "{}"),
        ("ok", "1.0.0", "{"),
    ] {
        let desc = Desc {
            name,
            version,
            input_schema: schema,
        };
        let e = rt.load(&component_with(&desc, ECHO)).await.unwrap_err();
        assert_eq!(e.code(), "invalid_description", "{e}");
    }
    assert_eq!(rt.stats().loads_failed, 10);
}

#[tokio::test]
async fn describe_runs_under_the_default_limits() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RuntimeConfig {
        defaults: Limits {
            output_bytes: 10,
            ..Limits::default()
        },
        ..config(dir.path())
    };
    let rt = Runtime::new(cfg, CancellationToken::new()).unwrap();
    let e = rt.load(&component(ECHO)).await.unwrap_err();
    assert_eq!(e.code(), "describe_failed");
    assert!(e.to_string().contains("output_too_large"), "{e}");
}

#[tokio::test]
async fn compile_timeout_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RuntimeConfig {
        compile_timeout: Duration::ZERO,
        ..config(dir.path())
    };
    let rt = Runtime::new(cfg, CancellationToken::new()).unwrap();
    let e = rt.load(&component(ECHO)).await.unwrap_err();
    assert_eq!(e.code(), "compile_timeout");
    assert!(e.retryable());
}

#[tokio::test]
async fn compiled_components_are_cached_on_disk_and_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = component(ECHO);
    let first = runtime(dir.path());
    let a = first.load(&wasm).await.unwrap();
    assert!(!a.compiled_from_cache);
    let again = first.load(&wasm).await.unwrap();
    assert!(again.compiled_from_cache);
    let s = first.stats();
    assert_eq!(
        (s.compiles, s.memory_cache_hits, s.disk_cache_hits),
        (1, 1, 0)
    );

    // A second runtime on the same directory (a restart) compiles nothing.
    let second = runtime(dir.path());
    let b = second.load(&wasm).await.unwrap();
    assert!(b.compiled_from_cache);
    assert_eq!(b.compiled_size, a.compiled_size);
    let s = second.stats();
    assert_eq!((s.compiles, s.disk_cache_hits), (0, 1));
    let inv = second
        .invoke(&b, ctx(), &json!(7), &limits(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(inv.outcome, Ok(json!(7)));
}

#[tokio::test]
async fn a_corrupt_cache_file_is_recompiled_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = component(ECHO);
    runtime(dir.path()).load(&wasm).await.unwrap();
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&files[0], &bytes).unwrap();

    let rt = runtime(dir.path());
    let p = rt.load(&wasm).await.unwrap();
    assert!(!p.compiled_from_cache);
    let s = rt.stats();
    assert_eq!(
        (s.compiles, s.disk_cache_rejects, s.disk_cache_hits),
        (1, 1, 0)
    );
    // The rewritten file is good again.
    let s = {
        let rt = runtime(dir.path());
        rt.load(&wasm).await.unwrap();
        rt.stats()
    };
    assert_eq!((s.compiles, s.disk_cache_hits), (0, 1));
}

#[tokio::test]
async fn an_intact_artifact_of_another_engine_is_recompiled_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = component(ECHO);
    runtime(dir.path()).load(&wasm).await.unwrap();
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // A valid artifact of an engine with other settings, with a correct trailer (CRC-32, length,
    // magic) so that only wasmtime's own compatibility check can refuse it.
    let mut foreign = wasmtime::Engine::default()
        .precompile_component(&wasm)
        .unwrap();
    let (crc, len) = (crc32fast::hash(&foreign), foreign.len() as u64);
    foreign.extend_from_slice(&crc.to_le_bytes());
    foreign.extend_from_slice(&len.to_le_bytes());
    foreign.extend_from_slice(b"WEFTCWM1");
    std::fs::write(&file, &foreign).unwrap();

    let rt = runtime(dir.path());
    let p = rt.load(&wasm).await.unwrap();
    assert!(!p.compiled_from_cache);
    let s = rt.stats();
    assert_eq!((s.compiles, s.disk_cache_rejects), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_invocations_succeed_while_a_guest_spins() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let spinner = rt.load(&component(LOOP)).await.unwrap();
    let echo = rt.load(&component(ECHO)).await.unwrap();
    let spin = {
        let rt = rt.clone();
        let l = Limits {
            timeout: Duration::from_secs(2),
            ..limits()
        };
        tokio::spawn(async move {
            rt.invoke(&spinner, ctx(), &json!(0), &l, CancellationToken::new())
                .await
        })
    };
    let calls = (0..100).map(|i| {
        let (rt, echo) = (rt.clone(), echo.clone());
        tokio::spawn(async move {
            rt.invoke(&echo, ctx(), &json!(i), &limits(), CancellationToken::new())
                .await
        })
    });
    for (i, call) in calls.enumerate() {
        assert_eq!(call.await.unwrap().unwrap().outcome, Ok(json!(i)));
    }
    assert_eq!(spin.await.unwrap().unwrap_err().code(), "timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_guest() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let spinner = rt.load(&component(LOOP)).await.unwrap();
    let cancel = CancellationToken::new();
    let call = {
        let (rt, cancel) = (rt.clone(), cancel.clone());
        let l = Limits {
            timeout: Duration::from_secs(60),
            ..limits()
        };
        tokio::spawn(async move { rt.invoke(&spinner, ctx(), &json!(0), &l, cancel).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    cancel.cancel();
    let e = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(e, InvokeError::Cancelled);
    assert!(e.retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_running_guests_and_refuses_new_work() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let rt = Runtime::new(config(dir.path()), shutdown.clone()).unwrap();
    let spinner = rt.load(&component(LOOP)).await.unwrap();
    let call = {
        let rt = rt.clone();
        let spinner = spinner.clone();
        let l = Limits {
            timeout: Duration::from_secs(60),
            ..limits()
        };
        tokio::spawn(async move {
            rt.invoke(&spinner, ctx(), &json!(0), &l, CancellationToken::new())
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    shutdown.cancel();
    let e = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(e, InvokeError::ShuttingDown);
    let e = rt
        .invoke(
            &spinner,
            ctx(),
            &json!(0),
            &limits(),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(e, InvokeError::ShuttingDown);
    assert_eq!(
        rt.load(&component(ECHO)).await.unwrap_err().code(),
        "shutting_down"
    );
}

#[tokio::test]
async fn works_without_the_pooling_allocator() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RuntimeConfig {
        pooling: false,
        ..config(dir.path())
    };
    let rt = Runtime::new(cfg, CancellationToken::new()).unwrap();
    assert_eq!(rt.stats().allocator, Allocator::OnDemand);
    assert_eq!(
        run(&rt, ECHO, &limits()).await.unwrap().outcome,
        Ok(json!({"a": 1}))
    );
    assert_eq!(
        run(&rt, MEMORY_BOMB, &limits()).await.unwrap_err().code(),
        "memory_limit"
    );
}

#[tokio::test]
async fn uses_the_pooling_allocator_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(runtime(dir.path()).stats().allocator, Allocator::Pooling);
}

mod guest_log {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, SubscriberExt};

    type Events = Arc<Mutex<Vec<BTreeMap<String, String>>>>;

    struct Capture(Events);

    struct Fields<'a>(&'a mut BTreeMap<String, String>);

    impl Visit for Fields<'_> {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().into(), value.into());
        }
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name().into(), format!("{value:?}"));
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            if event.metadata().target() != "weft::guest" {
                return;
            }
            let mut fields = BTreeMap::new();
            fields.insert("tracing_level".into(), event.metadata().level().to_string());
            event.record(&mut Fields(&mut fields));
            self.0.lock().unwrap().push(fields);
        }
    }

    #[tokio::test]
    async fn log_lines_become_tracing_events_tagged_with_run_step_and_plugin() {
        let events = Events::default();
        let _guard = tracing::subscriber::set_default(
            tracing_subscriber::registry().with(Capture(events.clone())),
        );
        let dir = tempfile::tempdir().unwrap();
        let rt = super::runtime(dir.path());
        super::run(&rt, super::LOG_THEN_ECHO, &super::limits())
            .await
            .unwrap();
        let events = events.lock().unwrap();
        let logs: Vec<_> = events
            .iter()
            .filter(|e| e.contains_key("message"))
            .collect();
        assert_eq!(logs.len(), 1, "{events:?}");
        let e = logs[0];
        assert_eq!(e["message"], "hello");
        assert_eq!(e["run_id"], "run-1");
        assert_eq!(e["step_id"], "step-1");
        assert_eq!(e["plugin"], "wat-step");
        assert_eq!(e["level"], "info");
        assert_eq!(e["tracing_level"], "INFO");
    }
}
