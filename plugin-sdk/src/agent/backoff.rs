//! [`Backoff`]: how long to wait before reconnecting.

use std::time::Duration;

/// Exponential backoff with jitter: the n-th delay is drawn from `[d/2, d]` where
/// `d = min(initial * 2^n, max)`, so that agents cut off together do not come back together.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            failures: 0,
        }
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        let jitter = rand::random_range(0..=(ceiling - half).as_millis() as u64);
        half + Duration::from_millis(jitter)
    }

    /// After a stream that was welcomed: the next failure starts from `initial` again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    fn ceiling(&self) -> Duration {
        let factor = 2u32.checked_pow(self.failures.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_then_resets() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(1000));
        for ceiling in [100, 200, 400, 800, 1000, 1000] {
            let delay = backoff.next_delay();
            assert!(
                delay >= ms(ceiling / 2) && delay <= ms(ceiling),
                "{delay:?} not in [{}, {ceiling}] ms",
                ceiling / 2
            );
        }
        for _ in 0..100 {
            assert!(backoff.next_delay() <= ms(1000));
        }
        backoff.reset();
        assert!(backoff.next_delay() <= ms(100));
    }

    #[test]
    fn a_cap_below_the_first_delay_is_raised_to_it() {
        let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert!(backoff.next_delay() <= Duration::from_secs(2));
    }
}
