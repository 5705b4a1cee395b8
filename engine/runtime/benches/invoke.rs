//! `cargo bench -p weft-runtime`: the cost of the sandbox over bare wasmtime, on the `add`
//! plugin (`target/plugins/add.wasm`, built by `cargo xtask plugins`), in one run:
//! - `bare`: Store + instantiate + call + drop with the runtime's engine (same config), WASI
//!   context, fuel and epoch deadline set as wasmtime requires; input/output as raw strings;
//! - `runtime_invoke`: `Runtime::invoke`, JSON in and out, limits, tracing, captured stdio;
//! - `warm_call`: one more call on an already instantiated component;
//! - `load_50_from_disk_cache`: a fresh `Runtime` loading 50 distinct copies of `add` that an
//!   earlier runtime compiled into the same cache directory.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use weft_runtime::{Limits, Runtime, RuntimeConfig, StepContext};

mod bare {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "step",
        imports: { default: trappable },
        exports: { default: async },
    });
}

struct BareState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for BareState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bare::weft::step::types::Host for BareState {}

impl bare::weft::step::host::Host for BareState {
    fn log(&mut self, _: bare::weft::step::host::LogLevel, _: String) -> wasmtime::Result<()> {
        Ok(())
    }
}

fn bare_store(engine: &Engine) -> Store<BareState> {
    let mut store = Store::new(
        engine,
        BareState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        },
    );
    store.set_fuel(u64::MAX).unwrap();
    store.set_epoch_deadline(1 << 40);
    store
}

const INPUT: &str = r#"{"value":2,"by":3}"#;

fn add_wasm() -> Vec<u8> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = target.join("plugins/add.wasm");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run `cargo xtask plugins` first",
            path.display()
        )
    })
}

/// `wasm` with a trailing custom section that makes its bytes (and sha256) unique.
fn variant(wasm: &[u8], i: usize) -> Vec<u8> {
    let name = b"weft-bench";
    let payload = format!("copy {i}");
    let size = 1 + name.len() + payload.len();
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    out.push(size as u8); // LEB128, < 128
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(payload.as_bytes());
    out
}

fn ctx() -> StepContext {
    StepContext {
        run_id: "bench".into(),
        step_id: "add".into(),
        attempt: 1,
    }
}

fn benches(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let wasm = add_wasm();
    let runtime = Runtime::new(RuntimeConfig::new(cache.path()), CancellationToken::new()).unwrap();
    let plugin = tokio.block_on(runtime.load(&wasm)).unwrap();
    println!("allocator: {:?}", runtime.stats().allocator);

    let engine = runtime.engine().clone();
    let mut linker = Linker::<BareState>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    bare::Step::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s).unwrap();
    let component = Component::new(&engine, &wasm).unwrap();
    let pre = bare::StepPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    let wit_ctx = bare::weft::step::types::StepContext {
        run_id: "bench".into(),
        step_id: "add".into(),
        attempt: 1,
    };

    let input = json!({"value": 2, "by": 3});
    let limits = Limits::default();
    let check = tokio
        .block_on(runtime.invoke(&plugin, ctx(), &input, &limits, CancellationToken::new()))
        .unwrap();
    assert_eq!(check.outcome, Ok(json!({"value": 5})));

    let mut group = c.benchmark_group("add");
    group.bench_function("bare", |b| {
        b.iter(|| {
            tokio.block_on(async {
                let mut store = bare_store(&engine);
                let step = pre.instantiate_async(&mut store).await.unwrap();
                let out = step.call_run(&mut store, &wit_ctx, INPUT).await.unwrap();
                assert!(out.is_ok());
            })
        })
    });
    group.bench_function("runtime_invoke", |b| {
        b.iter(|| {
            tokio.block_on(async {
                let inv = runtime
                    .invoke(&plugin, ctx(), &input, &limits, CancellationToken::new())
                    .await
                    .unwrap();
                assert!(inv.outcome.is_ok());
            })
        })
    });
    let mut store = bare_store(&engine);
    let step = tokio.block_on(pre.instantiate_async(&mut store)).unwrap();
    group.bench_function("warm_call", |b| {
        b.iter(|| {
            tokio.block_on(async {
                let out = step.call_run(&mut store, &wit_ctx, INPUT).await.unwrap();
                assert!(out.is_ok());
            })
        })
    });
    group.finish();

    // 50 distinct plugins compiled once into a shared cache directory.
    const N: usize = 50;
    let variants: Vec<Vec<u8>> = (0..N).map(|i| variant(&wasm, i)).collect();
    let disk = tempfile::tempdir().unwrap();
    {
        let rt = Runtime::new(RuntimeConfig::new(disk.path()), CancellationToken::new()).unwrap();
        for v in &variants {
            tokio.block_on(rt.load(v)).unwrap();
        }
        assert_eq!(rt.stats().compiles, N as u64);
    }
    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    group.bench_function("load_50_from_disk_cache", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let shutdown = CancellationToken::new();
                let rt = Runtime::new(RuntimeConfig::new(disk.path()), shutdown.clone()).unwrap();
                let started = Instant::now();
                tokio.block_on(async {
                    for v in &variants {
                        let p = rt.load(v).await.unwrap();
                        assert!(p.compiled_from_cache);
                    }
                });
                total += started.elapsed();
                let stats = rt.stats();
                assert_eq!((stats.compiles, stats.disk_cache_hits), (0, N as u64));
                shutdown.cancel();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(name = invoke; config = Criterion::default().measurement_time(Duration::from_secs(5)); targets = benches);
criterion_main!(invoke);
