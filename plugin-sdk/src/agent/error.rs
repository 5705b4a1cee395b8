//! [`TaskError`] (how one task attempt fails) and [`AgentError`] (why an agent stops).

use std::fmt;

use crate::step::StepError;

/// A task failure, as the engine sees it (the proto `TaskError`).
///
/// `code` is a stable, machine-readable identifier (`"invalid_input"`, `"not_found"`, ...);
/// `retryable = false` tells the engine that running the same input again cannot succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

impl TaskError {
    /// The code of [`TaskError::invalid_input`].
    pub const INVALID_INPUT: &'static str = "invalid_input";
    /// The code of [`TaskError::cancelled`].
    pub const CANCELLED: &'static str = "cancelled";

    /// The input is wrong (code `invalid_input`, not retryable). The SDK answers with this
    /// itself when the input JSON does not deserialise into [`Task::Input`](super::Task::Input).
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::fatal(Self::INVALID_INPUT, message)
    }

    /// A failure that may go away if the engine runs the task again (a busy dependency, an I/O
    /// error, ...).
    pub fn retryable(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure that running the task again with the same input will repeat.
    pub fn fatal(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable: false,
        }
    }

    /// What a task returns when it stops early because the engine cancelled it
    /// ([`TaskContext::cancelled`](super::TaskContext::cancelled)); code `cancelled`, not
    /// retryable.
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::fatal(Self::CANCELLED, message)
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.retryable { "retryable" } else { "fatal" };
        write!(f, "{} ({kind}): {}", self.code, self.message)
    }
}

impl std::error::Error for TaskError {}

/// Code shared with Wasm steps keeps its errors.
impl From<StepError> for TaskError {
    fn from(e: StepError) -> Self {
        Self {
            code: e.code,
            message: e.message,
            retryable: e.retryable,
        }
    }
}

/// Why [`Agent::run_until`](super::Agent::run_until) gave up. Everything else (the engine is
/// unreachable, the stream broke) is retried until shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentError {
    /// The agent cannot start as configured: no task, a task registered twice, capacity 0, an
    /// engine URL that is not `http://` or `https://`, a token that cannot be sent as a header.
    Config(String),
    /// The engine answered `Unauthenticated`: the token is missing or wrong, and retrying with
    /// the same one will not help.
    Unauthenticated(String),
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(message) => write!(f, "invalid agent configuration: {message}"),
            Self::Unauthenticated(message) if message.is_empty() => {
                write!(f, "the engine refused the agent token")
            }
            Self::Unauthenticated(message) => {
                write!(f, "the engine refused the agent token: {message}")
            }
        }
    }
}

impl std::error::Error for AgentError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_set_code_and_retryability() {
        let e = TaskError::invalid_input("no");
        assert_eq!((e.code.as_str(), e.retryable), ("invalid_input", false));
        let e = TaskError::retryable("busy", "later");
        assert_eq!((e.code.as_str(), e.retryable), ("busy", true));
        let e = TaskError::fatal("boom", "never");
        assert_eq!((e.code.as_str(), e.retryable), ("boom", false));
        let e = TaskError::cancelled("stop");
        assert_eq!((e.code.as_str(), e.retryable), ("cancelled", false));
        let e: TaskError = StepError::retryable("busy", "later").into();
        assert_eq!(e, TaskError::retryable("busy", "later"));
    }

    #[test]
    fn display() {
        assert_eq!(
            TaskError::retryable("io", "disk").to_string(),
            "io (retryable): disk"
        );
        assert_eq!(
            AgentError::Unauthenticated("bad token".into()).to_string(),
            "the engine refused the agent token: bad token"
        );
    }
}
