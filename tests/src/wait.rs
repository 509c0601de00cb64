//! Bounded waiting on a condition.

use std::time::{Duration, Instant};

/// How often bounded waits re-check their condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Calls `check` every [`POLL_INTERVAL`] until it returns `Some`, for at most `timeout`.
///
/// `check` runs at least once, and once more at the deadline, so a condition that became true while
/// sleeping is never missed. Returns `None` if the deadline passed without the condition holding.
pub fn wait_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_as_soon_as_the_condition_holds() {
        let mut calls = 0;
        let got = wait_until(Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(got, Some(3));
    }

    #[test]
    fn gives_up_at_the_deadline() {
        let start = Instant::now();
        let got: Option<()> = wait_until(Duration::from_millis(100), || None);
        assert_eq!(got, None);
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
