//! The harness itself, against real mosquitto and its own clients (no satmqtt code involved): if
//! these fail, the publisher tests cannot be trusted either way.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use satmqtt_tests::tools::{require_program, run_bounded};
use satmqtt_tests::{fake_jwt, Broker, BrokerLog, Sequence, Subscriber, SAT_USERNAME};

fn mosquitto_pub() -> PathBuf {
    require_program("mosquitto_pub")
}

/// `mosquitto_pub -V mqttv5 -u $sat -P <token> -q 1` of one message.
fn publish_as_sat(
    broker: &Broker,
    token: &str,
    client_id: &str,
    topic: &str,
    payload: &str,
) -> Output {
    let port = broker.port().to_string();
    run_bounded(
        Command::new(mosquitto_pub())
            .args(["-h", Broker::HOST, "-p", &port, "-V", "mqttv5"])
            .args(["-u", SAT_USERNAME, "-P", token, "-i", client_id])
            .args(["-q", "1", "-t", topic, "-m", payload]),
        Duration::from_secs(10),
    )
}

#[test]
fn subscriber_sees_what_mosquitto_pub_publishes_with_the_sat_token() {
    let token = fake_jwt(3600);
    let broker = Broker::start(&token);
    let subscriber = Subscriber::start(&broker, "sampletopic");

    for n in 0..3 {
        let out = publish_as_sat(
            &broker,
            &token,
            "harness-pub",
            "sampletopic",
            &format!("samplepayload{n}"),
        );
        assert!(out.status.success(), "mosquitto_pub failed: {out:?}");
    }

    let payloads = subscriber.sync(Duration::from_secs(5));
    Sequence::parse("samplepayload", &payloads).assert_contiguous(0, 3);

    // mosquitto_pub exits right after sending DISCONNECT; the broker may log it a moment later.
    let all_disconnected = |log: &BrokerLog| log.clean_disconnects("harness-pub") == 3;
    assert!(
        broker.wait_for_log(Duration::from_secs(5), all_disconnected),
        "{}",
        broker.log()
    );
    let log = broker.events();
    let connects = log.connects("harness-pub");
    assert_eq!(connects.len(), 3, "{}", log.text());
    assert!(connects
        .iter()
        .all(|c| c.is_mqtt5() && c.username.as_deref() == Some("$sat")));
    assert_eq!(log.clean_disconnects("harness-pub"), 3, "{}", log.text());
    assert_eq!(log.closed_without_disconnect("harness-pub"), 0);
    assert_eq!(log.auth_rejections(), 0);
}

#[test]
fn broker_rejects_a_wrong_token_and_accepts_a_new_one_after_reload() {
    let old = fake_jwt(3600);
    let new = fake_jwt(3600);
    let broker = Broker::start(&old);

    let rejected = publish_as_sat(&broker, &new, "harness-new", "t", "x");
    assert!(!rejected.status.success(), "a wrong token was accepted");
    assert!(
        broker.wait_for_log(Duration::from_secs(5), |log| log.auth_rejections() == 1),
        "{}",
        broker.log()
    );
    assert!(broker
        .events()
        .text()
        .contains("Sending CONNACK to 127.0.0.1 (0, 135)"));

    broker.set_sat_password(&new);
    let accepted = publish_as_sat(&broker, &new, "harness-new", "t", "x");
    assert!(accepted.status.success(), "{accepted:?}\n{}", broker.log());
    let revoked = publish_as_sat(&broker, &old, "harness-old", "t", "x");
    assert!(
        !revoked.status.success(),
        "the old token still works after the reload"
    );
    assert!(
        broker.wait_for_log(Duration::from_secs(5), |log| log.auth_rejections() == 2),
        "{}",
        broker.log()
    );
}

#[test]
fn subscriber_only_reports_its_topic_and_records_arrival_times() {
    let token = fake_jwt(3600);
    let broker = Broker::start(&token);
    let subscriber = Subscriber::start(&broker, "a/b");
    assert!(publish_as_sat(&broker, &token, "h1", "other", "p-1")
        .status
        .success());
    assert!(publish_as_sat(&broker, &token, "h2", "a/b", "p-2")
        .status
        .success());

    assert_eq!(subscriber.wait_for(1, Duration::from_secs(5)), vec!["p-2"]);
    assert_eq!(subscriber.sync(Duration::from_secs(5)), vec!["p-2"]);
    let received = subscriber.received();
    assert_eq!(received.len(), 1);
    assert!(received[0].at.elapsed() < Duration::from_secs(10));
}

#[test]
fn concurrent_brokers_get_distinct_ports() {
    let token = fake_jwt(60);
    let brokers: Vec<Broker> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| Broker::start(&token)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ports: Vec<u16> = brokers.iter().map(Broker::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4);
}
