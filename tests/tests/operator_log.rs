//! What the log tells an operator about who the broker thinks we are: the client id it
//! assigned to an empty `--client-id`, and the likely cause when two publishers share one id.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use satmqtt_tests::{Publisher, Sequence, TestBed};

const PATIENCE: Duration = Duration::from_secs(30);

#[test]
fn an_empty_client_id_logs_the_id_the_broker_assigned() {
    let bed = TestBed::new();
    let subscriber = bed.subscribe("sampletopic");
    let mut publisher = Publisher::builder()
        .broker(&bed.broker)
        .token_file(bed.tokens.path())
        .args(["--client-id", "", "--count", "3", "--interval-ms", "0"])
        .spawn();
    publisher.wait_for_success(PATIENCE);
    let stderr = publisher.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("connected to "))
        .unwrap_or_else(|| panic!("no connected line\n{stderr}"));
    // mosquitto names assigned ids `auto-<uuid>`.
    assert!(
        line.contains("the broker assigned client id \"auto-"),
        "{line}"
    );
    Sequence::parse("samplepayload", &subscriber.sync(Duration::from_secs(5)))
        .assert_contiguous(0, 3);
}

#[test]
fn two_publishers_with_one_client_id_are_told_it_is_a_takeover() {
    let bed = TestBed::new();
    let spawn = || {
        Publisher::builder()
            .broker(&bed.broker)
            .token_file(bed.tokens.path())
            .args([
                "--client-id",
                "twin",
                "--interval-ms",
                "50",
                "--backoff-floor-ms",
                "50",
                "--backoff-cap-ms",
                "200",
            ])
            .spawn()
    };
    let mut first = spawn();
    let mut second = spawn();
    let hint = "another client with the same client id is the likely cause";
    let deadline = Instant::now() + PATIENCE;
    while !(first.stderr().contains(hint) || second.stderr().contains(hint)) {
        assert!(
            Instant::now() < deadline,
            "no takeover hint\n{}\n{}",
            first.describe(),
            second.describe()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // mosquitto 2.0.11 ends the taken-over connection by closing it (no DISCONNECT 0x8E).
    let both = first.stderr() + &second.stderr();
    assert!(
        both.contains("disconnected: broker closed the connection"),
        "{both}"
    );
    for p in [&mut first, &mut second] {
        p.signal(Signal::SIGTERM);
        let status = p.wait_timeout(PATIENCE).expect("publisher did not stop");
        assert!(status.success(), "{}", p.describe());
    }
}
