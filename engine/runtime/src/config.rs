//! What the server tells the runtime: where to cache, which limits apply, what a plugin may use.

use std::path::PathBuf;
use std::time::Duration;

/// Process-wide settings of the Wasm step host.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Directory of compiled artifacts (`<sha256>-<engine hash>.cwasm`). Created if missing.
    pub cache_dir: PathBuf,
    /// Limits of an invocation when a plugin sets none; also the limits of `describe` at load.
    pub defaults: Limits,
    /// Hard server caps: every requested limit is clamped to these.
    pub maxima: Limits,
    /// Longest a component may take to compile before `load` gives up with `compile_timeout`.
    pub compile_timeout: Duration,
    /// Compilations running at once (each on a blocking thread).
    pub max_concurrent_compiles: usize,
    /// Loaded components kept in memory (entries); others are reloaded from the disk cache.
    pub hot_cache_capacity: u64,
    /// Try wasmtime's pooling allocator; fall back to on-demand allocation (logged) when the
    /// address space does not allow the pool.
    pub pooling: bool,
}

impl RuntimeConfig {
    /// Defaults for everything but the cache directory.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        RuntimeConfig {
            cache_dir: cache_dir.into(),
            defaults: Limits::default(),
            maxima: Limits::default_maxima(),
            compile_timeout: Duration::from_secs(60),
            max_concurrent_compiles: 2,
            hot_cache_capacity: 256,
            pooling: true,
        }
    }
}

/// What one invocation may use. Every field is a limit the sandbox enforces and names when hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory, all memories of the instance together (bytes).
    pub memory_bytes: u64,
    /// Wasm fuel (≈ instructions); `None` is unmetered (the wall-clock timeout still applies).
    pub fuel: Option<u64>,
    /// Wall clock, enforced by epoch interruption from the runtime's single ticker.
    pub timeout: Duration,
    /// Size of the returned JSON text, or of the returned error's message and code (bytes).
    pub output_bytes: u64,
    /// Calls to the host `log` import per invocation; the call past the cap stops the guest.
    pub log_lines: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            fuel: None,
            timeout: Duration::from_secs(10),
            output_bytes: 1 << 20,
            log_lines: 1_000,
        }
    }
}

impl Limits {
    /// Default hard caps of a server.
    pub fn default_maxima() -> Self {
        Limits {
            memory_bytes: 512 << 20,
            fuel: None,
            timeout: Duration::from_secs(300),
            output_bytes: 16 << 20,
            log_lines: 10_000,
        }
    }

    /// Each limit lowered to the cap in `maxima` where it exceeds it. A cap on fuel applies to an
    /// unmetered request too.
    pub fn clamp_to(&self, maxima: &Limits) -> Limits {
        Limits {
            memory_bytes: self.memory_bytes.min(maxima.memory_bytes),
            fuel: match (self.fuel, maxima.fuel) {
                (Some(want), Some(cap)) => Some(want.min(cap)),
                (want, None) => want,
                (None, cap) => cap,
            },
            timeout: self.timeout.min(maxima.timeout),
            output_bytes: self.output_bytes.min(maxima.output_bytes),
            log_lines: self.log_lines.min(maxima.log_lines),
        }
    }
}

/// Capabilities a plugin is explicitly granted (`LoadedPlugin::grants`). Empty (deny everything)
/// by default; only the empty set is implemented today: the sandbox has no preopened directories,
/// no environment, no arguments, no sockets and no name lookup. Later grants (a directory, an
/// environment variable, an outbound host) are added here, one field each, and applied where the
/// WASI context is built (`HostState::new` in `sandbox.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Grants {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamp_lowers_each_limit_to_its_cap() {
        let want = Limits {
            memory_bytes: 1 << 30,
            fuel: Some(10),
            timeout: Duration::from_secs(600),
            output_bytes: 10,
            log_lines: 5,
        };
        let caps = Limits {
            memory_bytes: 1 << 20,
            fuel: Some(5),
            timeout: Duration::from_secs(1),
            output_bytes: 100,
            log_lines: 100,
        };
        let got = want.clamp_to(&caps);
        assert_eq!(got.memory_bytes, 1 << 20);
        assert_eq!(got.fuel, Some(5));
        assert_eq!(got.timeout, Duration::from_secs(1));
        assert_eq!(got.output_bytes, 10);
        assert_eq!(got.log_lines, 5);
    }

    #[test]
    fn a_fuel_cap_meters_an_unmetered_request() {
        let caps = Limits {
            fuel: Some(7),
            ..Limits::default_maxima()
        };
        assert_eq!(Limits::default().clamp_to(&caps).fuel, Some(7));
        assert_eq!(
            Limits {
                fuel: Some(3),
                ..Limits::default()
            }
            .clamp_to(&Limits::default_maxima())
            .fuel,
            Some(3)
        );
    }
}
