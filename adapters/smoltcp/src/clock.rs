//! A clock from a free-running 32-bit tick counter, the kind every microcontroller has.

use embedded_time::{clock, fraction::Fraction, Clock, Instant};

/// A clock that reads a 32-bit counter ticking `HZ` times per second through a plain function,
/// e.g. a millisecond count kept by a SysTick interrupt in an atomic.
///
/// smoltcp-nal only takes clocks whose ticks convert into `u32`, and the core keeps its own
/// 64-bit time on top, so the counter may wrap: both sides handle it as long as they are polled
/// at least once per half wrap period (24.8 days at 1 kHz, 35.8 minutes at 1 MHz).
///
/// ```
/// use core::sync::atomic::{AtomicU32, Ordering};
/// use satmqtt_smoltcp::Millis;
///
/// static TICKS: AtomicU32 = AtomicU32::new(0); // incremented by a 1 kHz timer interrupt
///
/// let clock = Millis::new(|| TICKS.load(Ordering::Relaxed));
/// # let _ = clock;
/// ```
#[derive(Clone, Copy)]
pub struct TickClock<const HZ: u32> {
    now: fn() -> u32,
}

/// A [`TickClock`] counting milliseconds.
pub type Millis = TickClock<1_000>;

impl<const HZ: u32> TickClock<HZ> {
    /// A clock reading `now`, which returns the counter's current value.
    pub const fn new(now: fn() -> u32) -> Self {
        TickClock { now }
    }
}

impl<const HZ: u32> core::fmt::Debug for TickClock<HZ> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "TickClock<{HZ} Hz>")
    }
}

impl<const HZ: u32> Clock for TickClock<HZ> {
    type T = u32;
    const SCALING_FACTOR: Fraction = Fraction::new(1, HZ);

    fn try_now(&self) -> Result<Instant<Self>, clock::Error> {
        Ok(Instant::new((self.now)()))
    }
}

/// Milliseconds from `earlier` to `later` on a wrapping clock; `None` if `later` is more than
/// half a wrap period behind (the clock went backwards, or nobody looked for too long).
pub(crate) fn elapsed_ms<C: Clock>(later: &Instant<C>, earlier: &Instant<C>) -> Option<u64>
where
    u32: From<C::T>,
{
    let ticks = u64::from(u32::from(later.checked_duration_since(earlier)?.integer()));
    let f = C::SCALING_FACTOR;
    let ms = u128::from(ticks) * u128::from(*f.numerator()) * 1000
        / u128::from((*f.denominator()).max(1));
    Some(u64::try_from(ms).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Micros = TickClock<1_000_000>;

    fn at<C: Clock<T = u32>>(ticks: u32) -> Instant<C> {
        Instant::new(ticks)
    }

    #[test]
    fn milliseconds_between_two_readings() {
        assert_eq!(
            elapsed_ms::<Millis>(&at(1_500), &at(1_000)),
            Some(500),
            "1 kHz"
        );
        assert_eq!(
            elapsed_ms::<Micros>(&at(2_500_000), &at(500_000)),
            Some(2_000),
            "1 MHz"
        );
    }

    #[test]
    fn a_wrapped_counter_still_measures_forwards() {
        assert_eq!(
            elapsed_ms::<Millis>(&at(99), &at(u32::MAX - 100)),
            Some(200)
        );
    }

    #[test]
    fn a_reading_behind_the_other_is_not_elapsed_time() {
        assert_eq!(elapsed_ms::<Millis>(&at(1_000), &at(1_500)), None);
    }

    #[test]
    fn the_clock_reads_the_function() {
        fn fixed() -> u32 {
            42
        }
        let clock = Millis::new(fixed);
        let now = clock.try_now().map(|i| i.duration_since_epoch().integer());
        assert_eq!(now, Ok(42));
    }
}
