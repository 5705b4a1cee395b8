//! Retry policies: how many times a step is attempted and how long to wait in between.

use serde::{Deserialize, Serialize};

/// When and how often a failed step attempt is retried (Weft's `retryPolicy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Attempts in total, the first included (≥ 1; 1 = no retry).
    pub max_attempts: u32,
    /// Delay before the first retry, in seconds (≥ 0).
    #[serde(default = "default_initial_interval")]
    pub initial_interval_seconds: f64,
    /// Each retry's delay is the previous one times this (≥ 1).
    #[serde(default = "default_backoff_coefficient")]
    pub backoff_coefficient: f64,
    /// Upper bound of a delay, in seconds (≥ `initialIntervalSeconds`); none = unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval_seconds: Option<f64>,
    /// Random spread of each delay, as a fraction in [0, 1] (0.1 = ±10 %).
    #[serde(default)]
    pub jitter: f64,
    /// Error codes that fail the step at once, without retry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_retryable_error_codes: Vec<String>,
}

fn default_initial_interval() -> f64 {
    1.0
}

fn default_backoff_coefficient() -> f64 {
    2.0
}

impl Default for RetryPolicy {
    /// One attempt, no retry; the other fields at their documented defaults.
    fn default() -> Self {
        Self {
            max_attempts: 1,
            initial_interval_seconds: default_initial_interval(),
            backoff_coefficient: default_backoff_coefficient(),
            max_interval_seconds: None,
            jitter: 0.0,
            non_retryable_error_codes: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// The policy with `max_attempts` attempts and default delays.
    pub fn with_max_attempts(max_attempts: u32) -> Self {
        Self {
            max_attempts,
            ..Self::default()
        }
    }

    /// The delay in seconds before attempt number `attempt + 1`, after `attempt` failed
    /// attempts (`attempt` ≥ 1), jitter not applied: `initial × coefficient^(attempt−1)`, capped
    /// by `max_interval_seconds`.
    pub fn delay_seconds(&self, attempt: u32) -> f64 {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let delay = self.initial_interval_seconds * self.backoff_coefficient.powi(exponent);
        let delay = match self.max_interval_seconds {
            Some(max) => delay.min(max),
            None => delay,
        };
        if delay.is_finite() {
            delay.max(0.0)
        } else {
            f64::MAX
        }
    }

    /// Whether a failure with this error code may be retried.
    pub fn is_retryable(&self, error_code: &str) -> bool {
        !self
            .non_retryable_error_codes
            .iter()
            .any(|c| c == error_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_from_json() {
        let p: RetryPolicy = serde_json::from_value(json!({"maxAttempts": 3})).unwrap();
        assert_eq!(p, RetryPolicy::with_max_attempts(3));
        assert_eq!(p.initial_interval_seconds, 1.0);
        assert_eq!(p.backoff_coefficient, 2.0);
        assert_eq!(p.jitter, 0.0);
    }

    #[test]
    fn exponential_delays_with_cap() {
        let p = RetryPolicy {
            max_interval_seconds: Some(5.0),
            ..RetryPolicy::with_max_attempts(10)
        };
        assert_eq!(p.delay_seconds(1), 1.0);
        assert_eq!(p.delay_seconds(2), 2.0);
        assert_eq!(p.delay_seconds(3), 4.0);
        assert_eq!(p.delay_seconds(4), 5.0);
        assert_eq!(p.delay_seconds(u32::MAX), 5.0);
        let uncapped = RetryPolicy::with_max_attempts(10);
        assert_eq!(uncapped.delay_seconds(u32::MAX), f64::MAX);
    }

    #[test]
    fn non_retryable_codes() {
        let p = RetryPolicy {
            non_retryable_error_codes: vec!["bad_input".into()],
            ..RetryPolicy::with_max_attempts(3)
        };
        assert!(!p.is_retryable("bad_input"));
        assert!(p.is_retryable("timeout"));
    }
}
