//! Time for the core: a wrap-safe millisecond count from any `embedded_time::Clock`, and the
//! clock handle minimq borrows.

use core::cell::Cell;

use embedded_time::{clock::Error, Clock, Instant};

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

    /// The wrapped clock.
    pub fn clock(&self) -> &C {
        &self.clock
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

/// The clock handle minimq owns: a shared reference to the caller's clock.
pub struct ClockRef<'a, C: Clock>(pub(crate) &'a C);

impl<C: Clock> Clock for ClockRef<'_, C> {
    type T = C::T;
    const SCALING_FACTOR: embedded_time::fraction::Fraction = C::SCALING_FACTOR;

    fn try_now(&self) -> Result<Instant<Self>, Error> {
        Ok(Instant::new(
            self.0.try_now()?.duration_since_epoch().integer(),
        ))
    }
}
