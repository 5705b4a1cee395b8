//! What a guest sees: the `weft:step` bindings, the store data of one invocation, the host `log`
//! import, and a WASI context that grants nothing (no files, env, args, sockets; stdio captured).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::config::Grants;
use crate::limits::{MemoryLimiter, Stop};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "step",
        imports: { default: trappable },
        exports: { default: async },
    });
}

pub(crate) use bindings::StepPre;
pub(crate) use bindings::weft::step::host::LogLevel;
pub(crate) use bindings::weft::step::types::{
    StepContext as WitStepContext, StepDescription as WitStepDescription, StepError as WitStepError,
};

/// Bytes of guest stdout and of guest stderr kept per invocation; the rest is dropped.
pub(crate) const STDIO_CAPTURE_BYTES: usize = 64 << 10;
/// Longest `log` message forwarded to `tracing`; longer ones are cut at a char boundary.
const LOG_MESSAGE_BYTES: usize = 8 << 10;

/// Who a guest's log lines are attributed to.
#[derive(Debug, Clone)]
pub(crate) struct LogTags {
    pub(crate) plugin: Arc<str>,
    pub(crate) run_id: String,
    pub(crate) step_id: String,
}

/// The data of one invocation's `Store`. Built fresh for every call, dropped after it.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    tags: LogTags,
    log_calls: u32,
    log_cap: u32,
    pub(crate) stdout: CapturedOutput,
    pub(crate) stderr: CapturedOutput,
}

impl HostState {
    pub(crate) fn new(memory_bytes: u64, log_cap: u32, tags: LogTags, _grants: &Grants) -> Self {
        let stdout = CapturedOutput::new(STDIO_CAPTURE_BYTES);
        let stderr = CapturedOutput::new(STDIO_CAPTURE_BYTES);
        // Deny by default: no preopened directories, no environment variables, no arguments, a
        // closed stdin, no sockets and no name lookup. Grants (none yet) would be applied here.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_bytes),
            tags,
            log_calls: 0,
            log_cap,
            stdout,
            stderr,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::weft::step::types::Host for HostState {}

impl bindings::weft::step::host::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        self.log_calls += 1;
        if self.log_calls > self.log_cap {
            return Err(wasmtime::Error::new(Stop::LogLimit));
        }
        let message = truncate(&message, LOG_MESSAGE_BYTES);
        let LogTags {
            plugin,
            run_id,
            step_id,
        } = &self.tags;
        let plugin = &**plugin;
        macro_rules! emit {
            ($lvl:expr, $name:literal) => {
                tracing::event!(target: "weft::guest", $lvl, run_id, step_id, plugin, level = $name, "{message}")
            };
        }
        match level {
            LogLevel::Trace => emit!(tracing::Level::TRACE, "trace"),
            LogLevel::Debug => emit!(tracing::Level::DEBUG, "debug"),
            LogLevel::Info => emit!(tracing::Level::INFO, "info"),
            LogLevel::Warn => emit!(tracing::Level::WARN, "warn"),
            LogLevel::Error => emit!(tracing::Level::ERROR, "error"),
        }
        Ok(())
    }
}

/// Adds WASI p2 and `weft:step/host` to a linker.
pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<HostState>,
) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    bindings::weft::step::host::add_to_linker::<_, wasmtime::component::HasSelf<_>>(linker, |s| s)?;
    bindings::weft::step::types::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
        linker,
        |s| s,
    )?;
    Ok(())
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A guest stdout or stderr: keeps the first `capacity` bytes, silently drops the rest (a guest
/// that prints too much is not failed for it, unlike wasmtime's `MemoryOutputPipe`).
#[derive(Debug, Clone)]
pub(crate) struct CapturedOutput(Arc<Mutex<Captured>>);

#[derive(Debug)]
struct Captured {
    bytes: Vec<u8>,
    capacity: usize,
    dropped: u64,
}

impl CapturedOutput {
    pub(crate) fn new(capacity: usize) -> Self {
        CapturedOutput(Arc::new(Mutex::new(Captured {
            bytes: Vec::new(),
            capacity,
            dropped: 0,
        })))
    }

    fn append(&self, buf: &[u8]) {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let room = c.capacity - c.bytes.len();
        let kept = buf.len().min(room);
        c.bytes.extend_from_slice(&buf[..kept]);
        c.dropped += (buf.len() - kept) as u64;
    }

    /// What was kept, as text, and how many bytes were dropped.
    pub(crate) fn contents(&self) -> (String, u64) {
        let c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        (String::from_utf8_lossy(&c.bytes).into_owned(), c.dropped)
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(STDIO_CAPTURE_BYTES)
    }
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_output_keeps_a_prefix_and_counts_the_rest() {
        let mut out = CapturedOutput::new(4);
        OutputStream::write(&mut out, Bytes::from_static(b"abc")).unwrap();
        OutputStream::write(&mut out, Bytes::from_static(b"def")).unwrap();
        assert_eq!(out.contents(), ("abcd".to_string(), 2));
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("hello", 10), "hello");
    }
}
