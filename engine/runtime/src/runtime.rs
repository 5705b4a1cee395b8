//! `Runtime`: owns the engine, the linker, the caches and the counters; loads and invokes plugins.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::cache::DiskCache;
use crate::config::{Grants, Limits, RuntimeConfig};
use crate::engine::{self, Allocator, MAX_INSTANCES};
use crate::error::{InvokeError, LoadError, RuntimeError};
use crate::invoke::{Call, Invocation, Returned, Sandbox, StepContext, finish_run};
use crate::plugin::{LoadedPlugin, PluginDescription};
use crate::sandbox::{self, HostState, LogTags, StepPre, WitStepContext};
use crate::stats::{Counters, RuntimeStats, bump};

/// The sandboxed Wasm step host. Cheap to clone; all clones share one engine, one epoch ticker
/// (a thread, stopped by the `shutdown` token or when the last clone is dropped), the caches and
/// the counters.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct Inner {
    engine: Engine,
    allocator: Allocator,
    linker: Linker<HostState>,
    defaults: Limits,
    maxima: Limits,
    compile_timeout: std::time::Duration,
    disk: Arc<DiskCache>,
    hot: moka::future::Cache<String, Arc<Prepared>>,
    compile_slots: Arc<Semaphore>,
    instance_slots: Semaphore,
    shutdown: CancellationToken,
    counters: Counters,
}

/// A linked, described component: what the hot set holds.
struct Prepared {
    pre: Arc<StepPre<HostState>>,
    description: PluginDescription,
    wasm_size: u64,
    compiled_size: u64,
}

/// How `load` got a component.
struct Obtained {
    component: Component,
    compiled_size: u64,
    /// Compiled by this load; the artifact is written to disk once the plugin proves valid.
    new_artifact: Option<Vec<u8>>,
}

impl Runtime {
    /// Builds the engine (pooling allocator if `cfg.pooling` and possible), opens the disk
    /// cache and starts the epoch ticker, which stops when `shutdown` is cancelled. After
    /// shutdown, running guests stop with `ShuttingDown` and new calls are refused.
    pub fn new(cfg: RuntimeConfig, shutdown: CancellationToken) -> Result<Runtime, RuntimeError> {
        if cfg.max_concurrent_compiles == 0 {
            return Err(RuntimeError::Config(
                "max_concurrent_compiles must be at least 1".into(),
            ));
        }
        let (engine, allocator) = engine::build(&cfg)?;
        let mut linker = Linker::new(&engine);
        sandbox::add_to_linker(&mut linker).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let disk = DiskCache::open(&cfg.cache_dir, engine::compatibility_hash(&engine)).map_err(
            |source| RuntimeError::CacheDir {
                path: cfg.cache_dir.clone(),
                source,
            },
        )?;
        let inner = Arc::new(Inner {
            engine: engine.clone(),
            allocator,
            linker,
            defaults: cfg.defaults.clamp_to(&cfg.maxima),
            maxima: cfg.maxima,
            compile_timeout: cfg.compile_timeout,
            disk: Arc::new(disk),
            hot: moka::future::Cache::builder()
                .max_capacity(cfg.hot_cache_capacity)
                .build(),
            compile_slots: Arc::new(Semaphore::new(cfg.max_concurrent_compiles)),
            instance_slots: Semaphore::new(MAX_INSTANCES as usize),
            shutdown: shutdown.clone(),
            counters: Counters::default(),
        });
        engine::start_ticker(engine, Arc::downgrade(&inner), shutdown)
            .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        tracing::info!(?allocator, cache_dir = %cfg.cache_dir.display(), "wasm runtime ready");
        Ok(Runtime { inner })
    }

    /// Validates, compiles (or fetches from the memory or disk cache) and links a component,
    /// then calls its `describe` under the default limits. Compilation runs on a blocking
    /// thread, at most `max_concurrent_compiles` at once, each bounded by `compile_timeout`
    /// (a compile that times out still finishes in the background and holds its slot until then).
    pub async fn load(&self, wasm: &[u8]) -> Result<LoadedPlugin, LoadError> {
        let result = self.load_inner(wasm).await;
        if result.is_err() {
            bump(&self.inner.counters.loads_failed);
        }
        result
    }

    async fn load_inner(&self, wasm: &[u8]) -> Result<LoadedPlugin, LoadError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(LoadError::ShuttingDown);
        }
        check_binary(wasm)?;
        let sha256 = hex::encode(Sha256::digest(wasm));
        // Set only if this call's own init ran; otherwise the hot set served it.
        let origin = AtomicU8::new(FROM_MEMORY);
        let prepared = self
            .inner
            .hot
            .try_get_with(sha256.clone(), async {
                let (prepared, compiled) = self.prepare(&sha256, wasm).await?;
                origin.store(
                    if compiled { COMPILED } else { FROM_DISK },
                    Ordering::Relaxed,
                );
                Ok::<_, LoadError>(Arc::new(prepared))
            })
            .await
            .map_err(|e| (*e).clone())?;
        let origin = origin.load(Ordering::Relaxed);
        if origin == FROM_MEMORY {
            bump(&self.inner.counters.memory_cache_hits);
        }
        Ok(LoadedPlugin {
            sha256,
            description: prepared.description.clone(),
            wasm_size: prepared.wasm_size,
            compiled_size: prepared.compiled_size,
            compiled_from_cache: origin != COMPILED,
            grants: Grants::default(),
            tag: Arc::from(prepared.description.name.as_str()),
            pre: prepared.pre.clone(),
        })
    }

    /// Gets the component from disk or by compiling, links it and describes it. Returns whether
    /// it was compiled.
    async fn prepare(&self, sha256: &str, wasm: &[u8]) -> Result<(Prepared, bool), LoadError> {
        let obtained = match self.load_from_disk(sha256).await {
            Some(o) => o,
            None => self.compile(wasm).await?,
        };
        let pre = self
            .inner
            .linker
            .instantiate_pre(&obtained.component)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let pre = StepPre::new(pre).map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let description = self.describe(&pre, sha256).await?;

        let compiled = obtained.new_artifact.is_some();
        if let Some(artifact) = obtained.new_artifact {
            let disk = self.inner.disk.clone();
            let sha = sha256.to_string();
            let written = tokio::task::spawn_blocking(move || disk.write(&sha, &artifact)).await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(sha256, error = %e, "cannot write the compiled artifact to the disk cache")
                }
                Err(e) => tracing::warn!(sha256, error = %e, "disk cache writer panicked"),
            }
        }
        tracing::info!(
            sha256,
            plugin = %description.name,
            version = %description.version,
            compiled,
            "plugin loaded"
        );
        Ok((
            Prepared {
                pre: Arc::new(pre),
                description,
                wasm_size: wasm.len() as u64,
                compiled_size: obtained.compiled_size,
            },
            compiled,
        ))
    }

    /// The verified artifact from the disk cache, if there is a usable one. An unusable file is
    /// deleted (and counted) so that the component is recompiled.
    async fn load_from_disk(&self, sha256: &str) -> Option<Obtained> {
        let (engine, disk, sha) = (
            self.inner.engine.clone(),
            self.inner.disk.clone(),
            sha256.to_string(),
        );
        let found = tokio::task::spawn_blocking(move || {
            let (path, size) = match disk.verified(&sha) {
                Ok(Some(found)) => found,
                Ok(None) => return Ok(None),
                Err(rejected) => {
                    disk.remove(&sha);
                    return Err(rejected.to_string());
                }
            };
            // SAFETY: `deserialize_file` maps this file and runs native code from it. The file
            // is one this runtime wrote, in its own cache directory, named by the sha256 of the
            // wasm and the engine's compatibility hash; its checksum was just verified; files are
            // replaced by rename, never modified in place. wasmtime additionally checks the
            // artifact's header against this engine's version and settings.
            match unsafe { Component::deserialize_file(&engine, &path) } {
                Ok(component) => Ok(Some((component, size))),
                Err(e) => {
                    disk.remove(&sha);
                    Err(format!("{e:#}"))
                }
            }
        })
        .await;
        match found {
            Ok(Ok(Some((component, compiled_size)))) => {
                bump(&self.inner.counters.disk_cache_hits);
                Some(Obtained {
                    component,
                    compiled_size,
                    new_artifact: None,
                })
            }
            Ok(Ok(None)) => None,
            Ok(Err(why)) => {
                bump(&self.inner.counters.disk_cache_rejects);
                tracing::warn!(sha256, why, "rejected a disk cache file; recompiling");
                None
            }
            Err(e) => {
                tracing::warn!(sha256, error = %e, "disk cache reader panicked; recompiling");
                None
            }
        }
    }

    async fn compile(&self, wasm: &[u8]) -> Result<Obtained, LoadError> {
        let permit = tokio::select! {
            p = self.inner.compile_slots.clone().acquire_owned() => p.map_err(|_| LoadError::ShuttingDown)?,
            _ = self.inner.shutdown.cancelled() => return Err(LoadError::ShuttingDown),
        };
        let (engine, wasm) = (self.inner.engine.clone(), wasm.to_vec());
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let component = Component::new(&engine, &wasm)?;
            let artifact = component.serialize()?;
            Ok::<_, wasmtime::Error>((component, artifact))
        });
        let limit = self.inner.compile_timeout;
        let (component, artifact) = match tokio::time::timeout(limit, task).await {
            Err(_) => return Err(LoadError::CompileTimeout { limit }),
            Ok(Err(join)) => {
                return Err(LoadError::Internal(format!("compiler task failed: {join}")));
            }
            Ok(Ok(Err(e))) => return Err(LoadError::InvalidComponent(format!("{e:#}"))),
            Ok(Ok(Ok(done))) => done,
        };
        bump(&self.inner.counters.compiles);
        Ok(Obtained {
            component,
            compiled_size: artifact.len() as u64,
            new_artifact: Some(artifact),
        })
    }

    async fn describe(
        &self,
        pre: &StepPre<HostState>,
        sha256: &str,
    ) -> Result<PluginDescription, LoadError> {
        let tags = LogTags {
            plugin: Arc::from(format!("sha256:{}", &sha256[..12])),
            run_id: String::new(),
            step_id: "describe".into(),
        };
        let limits = &self.inner.defaults;
        let (returned, _) = self
            .sandbox()
            .call(
                pre,
                &Grants::default(),
                Call::Describe,
                limits,
                tags,
                &CancellationToken::new(),
                Instant::now(),
            )
            .await;
        let raw = match returned.map_err(LoadError::Describe)? {
            Returned::Described(raw) => raw,
            Returned::Ran(_) => unreachable!("describe returns a description"),
        };
        let size = [
            &raw.name,
            &raw.version,
            &raw.description,
            &raw.input_schema,
            &raw.output_schema,
        ]
        .iter()
        .map(|s| s.len() as u64)
        .sum::<u64>();
        if size > limits.output_bytes {
            return Err(LoadError::Describe(InvokeError::OutputTooLarge {
                limit: limits.output_bytes,
                size,
            }));
        }
        PluginDescription::parse(raw)
    }

    /// Runs the plugin's `run` export on `input` in a fresh sandbox. `limits` are clamped to the
    /// server maxima. Cancelling `cancel` stops the guest (within one epoch tick) with
    /// `InvokeError::Cancelled`. A guest's own error is `Ok(Invocation { outcome: Err(..) })`.
    pub async fn invoke(
        &self,
        plugin: &LoadedPlugin,
        ctx: StepContext,
        input: &serde_json::Value,
        limits: &Limits,
        cancel: CancellationToken,
    ) -> Result<Invocation, InvokeError> {
        let started = Instant::now();
        bump(&self.inner.counters.invocations);
        let result = self
            .invoke_inner(plugin, ctx, input, limits, cancel, started)
            .await;
        match &result {
            Err(e) => {
                bump(&self.inner.counters.invocations_failed);
                tracing::debug!(plugin = %plugin.tag, code = e.code(), error = %e, "invocation stopped");
            }
            Ok(inv) if inv.outcome.is_err() => bump(&self.inner.counters.guest_errors),
            Ok(_) => {}
        }
        result
    }

    async fn invoke_inner(
        &self,
        plugin: &LoadedPlugin,
        ctx: StepContext,
        input: &serde_json::Value,
        limits: &Limits,
        cancel: CancellationToken,
        started: Instant,
    ) -> Result<Invocation, InvokeError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(InvokeError::ShuttingDown);
        }
        let limits = limits.clamp_to(&self.inner.maxima);
        let input =
            serde_json::to_string(input).map_err(|e| InvokeError::Internal(e.to_string()))?;
        let tags = LogTags {
            plugin: plugin.tag.clone(),
            run_id: ctx.run_id.clone(),
            step_id: ctx.step_id.clone(),
        };
        let call = Call::Run {
            ctx: WitStepContext {
                run_id: ctx.run_id,
                step_id: ctx.step_id,
                attempt: ctx.attempt,
            },
            input,
        };
        let (returned, usage) = self
            .sandbox()
            .call(
                &plugin.pre,
                &plugin.grants,
                call,
                &limits,
                tags,
                &cancel,
                started,
            )
            .await;
        let ran = match returned? {
            Returned::Ran(ran) => ran,
            Returned::Described(_) => unreachable!("run returns a result"),
        };
        Ok(Invocation {
            outcome: finish_run(ran, &limits)?,
            fuel_used: Some(usage.fuel_used),
            peak_memory_bytes: usage.peak_memory_bytes,
            duration: started.elapsed(),
        })
    }

    /// Counters since `new`.
    pub fn stats(&self) -> RuntimeStats {
        self.inner.counters.snapshot(self.inner.allocator)
    }

    /// The limits a plugin gets when it asks for none (already clamped to the maxima).
    pub fn default_limits(&self) -> &Limits {
        &self.inner.defaults
    }

    /// The process-wide engine, for benchmarks that compare against bare wasmtime.
    #[doc(hidden)]
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    fn sandbox(&self) -> Sandbox<'_> {
        Sandbox {
            engine: &self.inner.engine,
            shutdown: &self.inner.shutdown,
            slots: &self.inner.instance_slots,
        }
    }
}

const FROM_MEMORY: u8 = 0;
const FROM_DISK: u8 = 1;
const COMPILED: u8 = 2;

/// Refuses what is not a wasm component binary before hashing or compiling anything.
fn check_binary(wasm: &[u8]) -> Result<(), LoadError> {
    if wasm.starts_with(b"\x7fELF") || Engine::detect_precompiled(wasm).is_some() {
        return Err(LoadError::PrecompiledArtifact);
    }
    if wasm.len() < 8 || !wasm.starts_with(b"\0asm") {
        return Err(LoadError::NotWasm(
            "missing the `\\0asm` magic number (text format and other files are not accepted)"
                .into(),
        ));
    }
    match wasm[4..8] {
        [1, 0, 0, 0] => Err(LoadError::NotAComponent),
        [_, _, 1, 0] => Ok(()),
        _ => Err(LoadError::NotWasm("unknown binary version or layer".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_binary_names_what_it_refuses() {
        let code = |b: &[u8]| check_binary(b).map_err(|e| e.code());
        assert_eq!(code(b"\x7fELF\x02\x01\x01"), Err("precompiled_artifact"));
        assert_eq!(code(b"hello world"), Err("not_wasm"));
        assert_eq!(code(b"(component)"), Err("not_wasm"));
        assert_eq!(code(b"\0asm"), Err("not_wasm"));
        assert_eq!(code(b"\0asm\x01\0\0\0"), Err("not_a_component"));
        assert_eq!(code(b"\0asm\x0d\0\x01\0"), Ok(()));
    }
}
