//! Bounded waits the scenario tests share, each failing with everything needed to see why: the
//! broker's log, the publisher's output.

use std::time::Duration;

use crate::wait::wait_until;
use crate::{Broker, BrokerLog, Publisher, Subscriber};

/// Waits until `condition` holds on the broker's log; panics naming `what`, with both logs.
#[track_caller]
pub fn broker_log(
    broker: &Broker,
    publisher: &Publisher,
    what: &str,
    timeout: Duration,
    condition: impl Fn(&BrokerLog) -> bool,
) {
    assert!(
        broker.wait_for_log(timeout, condition),
        "{what}: not in the broker log within {timeout:?}\n--- broker log ---\n{}\n{}",
        broker.log(),
        publisher.describe()
    );
}

/// Waits until `subscriber` holds at least `n` payloads.
#[track_caller]
pub fn received(subscriber: &Subscriber, n: usize, publisher: &Publisher, timeout: Duration) {
    let got = subscriber.wait_for(n, timeout).len();
    assert!(
        got >= n,
        "subscriber has {got} of {n} payloads after {timeout:?}\n{}",
        publisher.describe()
    );
}

/// Waits until the publisher's log contains `needle`; returns the log.
#[track_caller]
pub fn stderr(publisher: &Publisher, needle: &str, timeout: Duration) -> String {
    wait_until(timeout, || {
        let log = publisher.stderr();
        log.contains(needle).then_some(log)
    })
    .unwrap_or_else(|| {
        panic!(
            "the log never said {needle:?} within {timeout:?}\n{}",
            publisher.describe()
        )
    })
}

/// How many lines of `text` contain `needle`.
pub fn lines_with(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// Most connection attempts a publisher can start within `elapsed` of its first, with the backoff
/// it documents: the k-th failure (from 0) waits at least half of min(floor · 2^k, cap) (jitter in
/// [d/2, d]), and the first attempt is at once.
pub fn max_attempts(elapsed: Duration, floor_ms: u64, cap_ms: u64) -> u64 {
    let elapsed = elapsed.as_millis() as u64;
    let (mut attempts, mut at) = (1, 0u64);
    for k in 0..64 {
        let ceiling = floor_ms.saturating_mul(1 << k.min(40)).min(cap_ms).max(1);
        at = at.saturating_add(ceiling - ceiling / 2);
        if at > elapsed {
            break;
        }
        attempts += 1;
    }
    attempts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_bound_arithmetic() {
        let ms = Duration::from_millis;
        assert_eq!(max_attempts(ms(0), 100, 60_000), 1);
        assert_eq!(max_attempts(ms(49), 100, 60_000), 1);
        assert_eq!(max_attempts(ms(50), 100, 60_000), 2);
        assert_eq!(max_attempts(ms(150), 100, 60_000), 3);
        assert_eq!(max_attempts(ms(349), 100, 60_000), 3);
        assert_eq!(max_attempts(ms(350), 100, 200), 5);
    }
}
