//! Reconnect pacing: exponential backoff with jitter. Pure arithmetic; the adapter supplies the
//! random seed and the core supplies the time.

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Delay before the first retry, in milliseconds.
    pub floor_ms: u64,
    /// Largest delay, in milliseconds.
    pub cap_ms: u64,
    /// A connection that stays up this long resets the delay to the floor.
    pub reset_after_ms: u64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            floor_ms: 100,
            cap_ms: 60_000,
            reset_after_ms: 10_000,
        }
    }
}

/// Backoff state: failures in a row and when the next attempt may start.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    config: BackoffConfig,
    failures: u32,
    next_at_ms: u64,
    rng: u64,
}

impl Backoff {
    /// New backoff; `seed` feeds the jitter (any value; 0 is replaced).
    pub fn new(config: BackoffConfig, seed: u64) -> Self {
        Backoff {
            config,
            failures: 0,
            next_at_ms: 0,
            rng: seed | 1,
        }
    }

    /// Failures in a row since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Earliest time the next connection attempt may start.
    pub fn next_at_ms(&self) -> u64 {
        self.next_at_ms
    }

    /// Forgets past failures (the last connection stayed up long enough).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Allows the next attempt at once (a planned reconnect, e.g. a token rotation).
    pub fn allow_now(&mut self, now_ms: u64) {
        self.next_at_ms = now_ms;
    }

    /// Records a failure at `now_ms` and returns the delay before the next attempt: the
    /// `floor · 2^failures` ceiling, capped, then jittered uniformly into its upper half so
    /// a fleet of pods does not reconnect in lockstep.
    pub fn fail(&mut self, now_ms: u64) -> u64 {
        let ceiling = self
            .config
            .floor_ms
            .saturating_mul(1u64 << self.failures.min(40))
            .min(self.config.cap_ms)
            .max(1);
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        let delay = ceiling - half + self.next_random() % (half + 1);
        self.next_at_ms = now_ms.saturating_add(delay);
        delay
    }

    /// xorshift64*: small, deterministic for a seed, good enough for jitter.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_floor_within_jitter_and_stop_at_the_cap() {
        let mut b = Backoff::new(BackoffConfig::default(), 42);
        let mut ceiling = 100;
        for _ in 0..15 {
            let d = b.fail(1_000);
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d} outside [{}, {ceiling}]",
                ceiling / 2
            );
            assert_eq!(b.next_at_ms(), 1_000 + d);
            ceiling = (ceiling * 2).min(60_000);
        }
        assert_eq!(ceiling, 60_000);
    }

    #[test]
    fn reset_returns_to_the_floor() {
        let mut b = Backoff::new(BackoffConfig::default(), 7);
        for _ in 0..6 {
            b.fail(0);
        }
        b.reset();
        assert!(b.fail(0) <= 100);
        assert_eq!(b.failures(), 1);
    }

    #[test]
    fn jitter_differs_between_seeds() {
        let delays = |seed| {
            let mut b = Backoff::new(BackoffConfig::default(), seed);
            (0..8).map(|_| b.fail(0)).collect::<std::vec::Vec<_>>()
        };
        assert_ne!(delays(1), delays(2));
    }
}
