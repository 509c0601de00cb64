//! The service-account token: start-up validation, rejection and retry, recovery when the kubelet
//! writes a good token, and never printing it.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use satmqtt_tests::{
    assert_no_token_leak, fake_jwt, Broker, Publisher, Sequence, TestBed, TokenDir,
};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// Start-up validation must fail fast.
const STARTUP_FAILURE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the publisher on `token_file` and checks it exits with code 2 at start-up, naming the path
/// and `problem`, without ever connecting to the broker.
fn assert_fails_at_startup(bed: &TestBed, token_file: &Path, client_id: &str, problem: &str) {
    // Not `bed.publisher()`: that passes the bed's own token file, and clap refuses a flag given twice.
    let mut publisher = Publisher::builder()
        .broker(&bed.broker)
        .token_file(token_file)
        .client_id(client_id)
        .spawn();
    let status = publisher
        .wait_timeout(STARTUP_FAILURE_TIMEOUT)
        .unwrap_or_else(|| {
            panic!(
                "still running after {STARTUP_FAILURE_TIMEOUT:?}\n{}",
                publisher.describe()
            )
        });
    assert_eq!(status.code(), Some(2), "{}", publisher.describe());
    let stderr = publisher.stderr();
    let path = token_file.display().to_string();
    assert!(
        stderr.contains(&path),
        "stderr does not name {path}:\n{stderr}"
    );
    assert!(
        stderr.contains(problem),
        "stderr does not say `{problem}`:\n{stderr}"
    );
    assert_eq!(
        bed.broker.events().tcp_connections(),
        0,
        "it connected:\n{}",
        bed.broker.log()
    );
}

#[test]
fn missing_token_file_fails_at_startup() {
    let bed = TestBed::new();
    let missing = TokenDir::new(); // nothing written: its token path does not exist
    assert_fails_at_startup(&bed, &missing.path(), "missing-token", "not found");
}

#[test]
fn empty_token_file_fails_at_startup() {
    let bed = TestBed::new();
    let empty = TokenDir::new();
    empty.write("");
    assert_fails_at_startup(&bed, &empty.path(), "empty-token", "empty");
}

#[test]
fn whitespace_only_token_file_fails_at_startup() {
    let bed = TestBed::new();
    let blank = TokenDir::new();
    blank.write(" \n\t\n");
    assert_fails_at_startup(&bed, &blank.path(), "blank-token", "empty");
}

#[test]
fn trailing_newline_in_token_file_is_trimmed() {
    let bed = TestBed::new();
    bed.tokens.write(&format!("{}\n", bed.token));
    let mut publisher = bed.publisher("trimmed").args(["--count", "1"]).spawn();
    publisher.wait_for_success(RUN_TIMEOUT);
    assert_eq!(
        bed.broker.events().auth_rejections(),
        0,
        "{}",
        bed.broker.log()
    );
}

#[test]
fn wrong_token_is_retried_with_backoff_and_logged_without_the_token() {
    let accepted = fake_jwt(3600);
    let wrong = fake_jwt(3600);
    let broker = Broker::start(&accepted);
    let tokens = TokenDir::new();
    tokens.write(&wrong);
    let mut publisher = Publisher::builder()
        .broker(&broker)
        .token_file(tokens.path())
        .client_id("wrong-token")
        .args(["--count", "1"])
        .spawn();

    // It retries: a second CONNECT after the first CONNACK 0x87.
    assert!(
        broker.wait_for_log(Duration::from_secs(5), |log| log.auth_rejections() >= 2),
        "fewer than two connection attempts within 5 s:\n{}\n{}",
        broker.log(),
        publisher.describe()
    );
    // Then watch a 3 s window from start-up. Backoff (100 ms floor, doubling, jitter [d/2, d]) allows
    // at most 6 attempts in 3 s; minimq's own reconnect-on-every-poll would make hundreds.
    let window_end = publisher.started() + Duration::from_secs(3);
    let exited =
        publisher.wait_timeout(window_end.saturating_duration_since(std::time::Instant::now()));
    assert!(
        exited.is_none(),
        "gave up on a rejected token ({exited:?})\n{}",
        publisher.describe()
    );
    publisher.kill();

    let log = broker.events();
    let attempts = log.auth_rejections();
    assert!(
        (2..=10).contains(&attempts),
        "{attempts} rejected connection attempts in 3 s"
    );
    assert!(
        log.connects("wrong-token").is_empty(),
        "a wrong token was accepted"
    );
    let output = publisher.output_text();
    assert!(
        output.contains("token rejected"),
        "{}",
        publisher.describe()
    );
    assert_no_token_leak("pod-publisher output", &output, &wrong);
    assert_no_token_leak("pod-publisher output", &output, &accepted);
}

#[test]
fn wrong_token_recovers_when_file_is_fixed() {
    let bed = TestBed::new();
    let wrong = fake_jwt(3600);
    bed.tokens.write(&wrong);
    let subscriber = bed.subscribe("sampletopic");
    let mut publisher = bed
        .publisher("recovers")
        .args(["--count", "3", "--qos", "1", "--interval-ms", "0"])
        .spawn();

    assert!(
        bed.broker
            .wait_for_log(Duration::from_secs(10), |log| log.auth_rejections() >= 1),
        "the wrong token was never tried:\n{}\n{}",
        bed.broker.log(),
        publisher.describe()
    );
    // The kubelet rotates the projected token; the publisher re-reads it before its next attempt.
    bed.tokens.write(&bed.token);

    publisher.wait_for_success(RUN_TIMEOUT);
    let payloads = subscriber.sync(Duration::from_secs(10));
    Sequence::parse("samplepayload", &payloads).assert_contiguous(0, 3);
    assert_eq!(bed.broker.events().connects("recovers").len(), 1);
    let output = publisher.output_text();
    assert!(
        output.contains("token rejected"),
        "{}",
        publisher.describe()
    );
    assert_no_token_leak("pod-publisher output", &output, &wrong);
    assert_no_token_leak("pod-publisher output", &output, &bed.token);
}

#[test]
fn token_never_appears_in_output_at_trace_level() {
    let bed = TestBed::new();
    let mut publisher = bed
        .publisher("trace-level")
        .args([
            "--log-level",
            "trace",
            "--count",
            "20",
            "--qos",
            "1",
            "--interval-ms",
            "0",
        ])
        .spawn();

    publisher.wait_for_success(RUN_TIMEOUT);
    let output = publisher.output_text();
    assert!(
        output.contains("finished: sent 20, acknowledged 20"),
        "{}",
        publisher.describe()
    );
    assert_no_token_leak("pod-publisher output at trace level", &output, &bed.token);
}
