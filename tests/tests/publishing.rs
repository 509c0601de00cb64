//! What `pod-publisher` delivers: the counter sequence, as an independent subscriber sees it, and
//! how the broker saw the session.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use satmqtt_tests::{Sequence, TestBed};

/// Generous bound for a short run on a loaded CI machine; runs take well under a second.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn qos1_delivers_contiguous_sequence_in_order() {
    let bed = TestBed::new();
    let subscriber = bed.subscribe("sampletopic");
    let mut publisher = bed
        .publisher("qos1-sequence")
        .args(["--qos", "1", "--interval-ms", "0", "--count", "500"])
        .spawn();

    publisher.wait_for_success(RUN_TIMEOUT);
    let last = publisher.last_log_line().unwrap_or_default();
    assert!(
        last.contains("finished: sent 500, acknowledged 500"),
        "last log line: {last}\n{}",
        publisher.describe()
    );

    let payloads = subscriber.sync(SYNC_TIMEOUT);
    Sequence::parse("samplepayload", &payloads).assert_contiguous(0, 500);

    // The broker saw one MQTT v5 session as `$sat`, ended by the client's DISCONNECT
    // (`Client <id> disconnected.`), not by a bare TCP close (`... closed its connection.`).
    let broker = &bed.broker;
    assert!(
        broker.wait_for_log(Duration::from_secs(5), |log| log
            .clean_disconnects("qos1-sequence")
            == 1),
        "no `Client qos1-sequence disconnected.` in the broker log:\n{}",
        broker.log()
    );
    let log = broker.events();
    let connects = log.connects("qos1-sequence");
    assert_eq!(
        connects.len(),
        1,
        "expected one connection:\n{}",
        log.text()
    );
    assert!(connects[0].is_mqtt5(), "not MQTT v5: {:?}", connects[0]);
    assert_eq!(connects[0].username.as_deref(), Some("$sat"));
    assert_eq!(log.closed_without_disconnect("qos1-sequence"), 0);
}

#[test]
fn qos0_delivers_on_loopback() {
    let bed = TestBed::new();
    let subscriber = bed.subscribe("sampletopic");
    let mut publisher = bed
        .publisher("qos0-sequence")
        .args(["--qos", "0", "--count", "200", "--interval-ms", "0"])
        .spawn();

    publisher.wait_for_success(RUN_TIMEOUT);
    let last = publisher.last_log_line().unwrap_or_default();
    assert!(last.contains("finished: sent 200"), "last log line: {last}");

    let payloads = subscriber.sync(SYNC_TIMEOUT);
    Sequence::parse("samplepayload", &payloads).assert_contiguous(0, 200);
    assert_eq!(bed.broker.events().connects("qos0-sequence").len(), 1);
}

#[test]
fn start_and_prefix_and_topic_are_honoured() {
    let bed = TestBed::new();
    let subscriber = bed.subscribe("a/b");
    let mut publisher = bed
        .publisher("custom-sequence")
        .args(["--start", "1000", "--count", "5", "--interval-ms", "0"])
        .args(["--topic", "a/b", "--payload-prefix", "p-"])
        .spawn();

    publisher.wait_for_success(RUN_TIMEOUT);
    let payloads = subscriber.sync(SYNC_TIMEOUT);
    Sequence::parse("p-", &payloads).assert_contiguous(1000, 5);
}

#[test]
fn configuration_is_read_from_the_environment() {
    let bed = TestBed::new();
    let subscriber = bed.subscribe("env/topic");
    let port = bed.broker.port().to_string();
    let token_file = bed.tokens.path();
    let mut publisher = satmqtt_tests::Publisher::builder()
        .env("SATMQTT_HOST", "127.0.0.1")
        .env("SATMQTT_PORT", &port)
        .env("SATMQTT_CLIENT_ID", "env-client")
        .env("SATMQTT_TOPIC", "env/topic")
        .env("SATMQTT_PAYLOAD_PREFIX", "env-")
        .env("SATMQTT_TOKEN_FILE", &token_file)
        .env("SATMQTT_QOS", "1")
        .env("SATMQTT_INTERVAL_MS", "0")
        .env("SATMQTT_COUNT", "4")
        .env("SATMQTT_START", "7")
        .env("SATMQTT_KEEPALIVE_S", "30")
        .spawn();

    publisher.wait_for_success(RUN_TIMEOUT);
    let payloads = subscriber.sync(SYNC_TIMEOUT);
    Sequence::parse("env-", &payloads).assert_contiguous(7, 4);
    let connects = bed.broker.events().connects("env-client");
    assert_eq!(connects.len(), 1, "{}", bed.broker.log());
    assert_eq!(connects[0].keepalive_s, 30);
}

#[test]
fn interval_paces_publishes() {
    let bed = TestBed::new();
    let subscriber = bed.subscribe("sampletopic");
    let mut publisher = bed
        .publisher("paced")
        .args(["--interval-ms", "200", "--count", "6"])
        .spawn();

    let ran_for = publisher.wait_for_success(RUN_TIMEOUT);
    let payloads = subscriber.sync(SYNC_TIMEOUT);
    Sequence::parse("samplepayload", &payloads).assert_contiguous(0, 6);

    // Six messages 200 ms apart span five intervals: the run cannot be shorter than 1 s.
    assert!(
        ran_for >= Duration::from_secs(1),
        "the run took {ran_for:?}"
    );
    // And the pacing is between messages, not a delay before a burst: the subscriber saw them spread
    // out. One interval of slack for delivery jitter.
    let received = subscriber.received();
    let spread = received[5].at - received[0].at;
    assert!(
        spread >= Duration::from_millis(800),
        "six messages arrived within {spread:?}"
    );
}
