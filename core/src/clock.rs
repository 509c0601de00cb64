//! Time for the core: a wrap-safe millisecond count from any `embedded_time::Clock`.

use core::cell::Cell;

use embedded_time::{Clock, Instant};

/// Milliseconds since the first reading, kept in 64 bits so 32-bit tick clocks (smoltcp-nal
/// needs them) may wrap: each reading adds the wrap-aware difference to the previous one, which
/// is right as long as the core is polled at least once per half wrap period.
pub struct Mono<C: Clock> {
    clock: C,
    last: Cell<Option<Instant<C>>>,
    ticks: Cell<u64>,
}

impl<C: Clock> Mono<C>
where
    u64: From<C::T>,
{
    /// Wraps a clock.
    pub fn new(clock: C) -> Self {
        Mono {
            clock,
            last: Cell::new(None),
            ticks: Cell::new(0),
        }
    }

    /// Milliseconds since the first call; a clock error leaves time standing still.
    pub fn now_ms(&self) -> u64 {
        if let Ok(now) = self.clock.try_now() {
            if let Some(last) = self.last.get() {
                // None means the clock went backwards: keep time standing still.
                if let Some(delta) = now.checked_duration_since(&last) {
                    let delta = u64::from(delta.integer());
                    self.ticks.set(self.ticks.get().saturating_add(delta));
                }
            }
            self.last.set(Some(now));
        }
        let f = C::SCALING_FACTOR;
        let ms = u128::from(self.ticks.get()) * u128::from(*f.numerator()) * 1000
            / u128::from((*f.denominator()).max(1));
        u64::try_from(ms).unwrap_or(u64::MAX)
    }
}
