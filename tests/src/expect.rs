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
