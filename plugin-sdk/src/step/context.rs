//! [`Context`]: who is calling, and the host's log.

use std::fmt;

#[cfg(not(target_arch = "wasm32"))]
use std::cell::RefCell;

/// Severity of a log line; mirrors the WIT `log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// One captured log line (native builds only; in a component logs go to the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub level: Level,
    pub message: String,
}

/// The run, step and attempt a [`Step::run`](super::Step::run) call belongs to.
///
/// Logging goes to the engine's log (the WIT `host.log` import), which tags each line with the
/// run and step ids. Outside WebAssembly (unit tests) lines are kept in memory instead: see
/// [`Context::take_logs`].
#[derive(Debug)]
pub struct Context {
    pub run_id: String,
    pub step_id: String,
    /// Which attempt this is, starting at 1.
    pub attempt: u32,
    #[cfg(not(target_arch = "wasm32"))]
    captured: RefCell<Vec<LogRecord>>,
}

impl Context {
    pub fn new(run_id: impl Into<String>, step_id: impl Into<String>, attempt: u32) -> Self {
        Self {
            run_id: run_id.into(),
            step_id: step_id.into(),
            attempt,
            #[cfg(not(target_arch = "wasm32"))]
            captured: RefCell::default(),
        }
    }

    /// Write one line to the engine's log. Each call crosses into the host: log sparingly.
    pub fn log(&self, level: Level, message: impl fmt::Display) {
        let message = message.to_string();
        #[cfg(target_arch = "wasm32")]
        super::bindings::host_log(level, &message);
        #[cfg(not(target_arch = "wasm32"))]
        self.captured
            .borrow_mut()
            .push(LogRecord { level, message });
    }

    pub fn trace(&self, message: impl fmt::Display) {
        self.log(Level::Trace, message);
    }

    pub fn debug(&self, message: impl fmt::Display) {
        self.log(Level::Debug, message);
    }

    pub fn info(&self, message: impl fmt::Display) {
        self.log(Level::Info, message);
    }

    pub fn warn(&self, message: impl fmt::Display) {
        self.log(Level::Warn, message);
    }

    pub fn error(&self, message: impl fmt::Display) {
        self.log(Level::Error, message);
    }

    /// The lines logged so far through this context, oldest first, and forgets them.
    /// Native builds only: in a component, lines go to the host and are not kept.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn take_logs(&self) -> Vec<LogRecord> {
        self.captured.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_captured_natively_in_order() {
        let ctx = Context::new("run-1", "step-a", 2);
        ctx.info("hello");
        ctx.error(format_args!("n = {}", 3));
        assert_eq!(
            ctx.take_logs(),
            vec![
                LogRecord {
                    level: Level::Info,
                    message: "hello".into()
                },
                LogRecord {
                    level: Level::Error,
                    message: "n = 3".into()
                },
            ]
        );
        assert!(ctx.take_logs().is_empty());
    }
}
