//! [`StepError`]: how a step fails.

use std::fmt;

/// A step failure, as the engine sees it.
///
/// `code` is a stable, machine-readable identifier (`"invalid_input"`, `"missing_variable"`,
/// ...); `retryable = false` tells the engine that running the same input again cannot succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    pub message: String,
    pub code: String,
    pub retryable: bool,
}

impl StepError {
    /// The code of [`StepError::invalid_input`].
    pub const INVALID_INPUT: &'static str = "invalid_input";

    /// The input is wrong (code `invalid_input`, not retryable).
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::fatal(Self::INVALID_INPUT, message)
    }

    /// A failure that may go away if the engine runs the step again (a busy dependency, ...).
    pub fn retryable(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: code.into(),
            retryable: true,
        }
    }

    /// A failure that running the step again with the same input will repeat.
    pub fn fatal(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: code.into(),
            retryable: false,
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.retryable { "retryable" } else { "fatal" };
        write!(f, "{} ({kind}): {}", self.code, self.message)
    }
}

impl std::error::Error for StepError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_set_code_and_retryability() {
        let e = StepError::invalid_input("no");
        assert_eq!((e.code.as_str(), e.retryable), ("invalid_input", false));
        let e = StepError::retryable("busy", "later");
        assert_eq!((e.code.as_str(), e.retryable), ("busy", true));
        let e = StepError::fatal("boom", "never");
        assert_eq!((e.code.as_str(), e.retryable), ("boom", false));
    }

    #[test]
    fn display_names_code_and_kind() {
        assert_eq!(
            StepError::retryable("busy", "try later").to_string(),
            "busy (retryable): try later"
        );
    }
}
