//! A monotonic microsecond clock for `embedded-time`.

use embedded_time::{clock, fraction::Fraction, Clock, Instant};

/// Microseconds since the clock was created, read from [`std::time::Instant`] (monotonic).
#[derive(Debug, Clone, Copy)]
pub struct StdClock {
    origin: std::time::Instant,
}

impl StdClock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        Self {
            origin: std::time::Instant::now(),
        }
    }
}

impl Default for StdClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for StdClock {
    type T = u64;

    const SCALING_FACTOR: Fraction = Fraction::new(1, 1_000_000);

    fn try_now(&self) -> Result<Instant<Self>, clock::Error> {
        // u64 microseconds last 584 000 years; saturate rather than wrap if that ever matters.
        let micros = u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        Ok(Instant::new(micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_time::duration::{Generic, Microseconds, Milliseconds};

    fn micros(clock: &StdClock) -> u64 {
        let since: Generic<u64> = clock
            .try_now()
            .expect("std clock always runs")
            .duration_since_epoch();
        Microseconds::<u64>::try_from(since)
            .expect("microsecond ticks convert to microseconds")
            .0
    }

    #[test]
    fn reading_lies_between_two_std_measurements() {
        let clock = StdClock::new();
        let before = u64::try_from(clock.origin.elapsed().as_micros()).expect("small");
        let now = micros(&clock);
        let after = u64::try_from(clock.origin.elapsed().as_micros()).expect("small");
        assert!(
            before <= now && now <= after,
            "{before} <= {now} <= {after}"
        );
    }

    #[test]
    fn readings_never_go_backwards() {
        let clock = StdClock::default();
        let mut last = 0;
        for _ in 0..10_000 {
            let now = micros(&clock);
            assert!(now >= last);
            last = now;
        }
    }

    #[test]
    fn copies_share_the_origin() {
        let clock = StdClock::new();
        let copy = clock;
        let a = micros(&clock);
        let b = micros(&copy);
        let c = micros(&clock);
        assert!(a <= b && b <= c);
    }

    #[test]
    fn one_tick_is_one_microsecond() {
        let instant: Instant<StdClock> = Instant::new(2_500_000);
        let ms = Milliseconds::<u64>::try_from(instant.duration_since_epoch())
            .expect("2.5 s fits in milliseconds");
        assert_eq!(ms, Milliseconds(2_500_u64));
    }
}
