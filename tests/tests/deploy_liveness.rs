//! The liveness heartbeat `deploy/base/deployment.yaml`'s probe checks: fresh while the publisher
//! publishes or retries, stale when its loop is wedged (SIGSTOP), and the check itself.
//!
//! Needs: mosquitto. A missing one fails the test that needs it, naming it.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use satmqtt_tests::deploy::{RUN_TIMEOUT, TOOL_TIMEOUT};
use satmqtt_tests::tools::run_bounded;
use satmqtt_tests::wait::wait_until;
use satmqtt_tests::{Broker, Publisher, TestBed};
use tempfile::TempDir;

/// `pod-publisher --check-heartbeat <file> --max-age-s <max_age_s>`: exit code and output.
fn check_heartbeat(file: &Path, max_age_s: u64) -> (Option<i32>, String) {
    let output = run_bounded(
        Command::new(Publisher::binary())
            .env_clear()
            .arg("--check-heartbeat")
            .arg(file)
            .args(["--max-age-s", &max_age_s.to_string()]),
        TOOL_TIMEOUT,
    );
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn heartbeat_value(file: &Path) -> Option<u64> {
    fs::read_to_string(file).ok()?.trim().parse().ok()
}

#[test]
fn the_heartbeat_is_fresh_while_publishing_and_goes_stale_when_the_loop_is_wedged() {
    let bed = TestBed::new();
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("heartbeat");
    let mut publisher = bed
        .publisher("heartbeat-live")
        .args(["--interval-ms", "100"])
        .arg("--heartbeat-file")
        .arg(&file)
        .spawn();
    // It keeps being refreshed: the content (unix seconds) moves on.
    let first = wait_until(RUN_TIMEOUT, || heartbeat_value(&file))
        .unwrap_or_else(|| panic!("no heartbeat\n{}", publisher.describe()));
    assert!(
        wait_until(RUN_TIMEOUT, || (heartbeat_value(&file)? >= first + 2)
            .then_some(()))
        .is_some(),
        "the heartbeat was not refreshed\n{}",
        publisher.describe()
    );
    let (code, output) = check_heartbeat(&file, 5);
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("alive"), "{output}");
    assert!(publisher.stderr().contains("connected to"));

    // A stopped process is what a wedged loop looks like from outside.
    signal_child_pid(&publisher, Signal::SIGSTOP);
    let stale = wait_until(Duration::from_secs(10), || {
        let (code, output) = check_heartbeat(&file, 1);
        (code == Some(1)).then_some(output)
    });
    signal_child_pid(&publisher, Signal::SIGCONT);
    let output = stale.expect("the heartbeat stayed fresh while the publisher was stopped");
    assert!(output.contains("made no progress"), "{output}");
    publisher.signal(Signal::SIGTERM);
    publisher.wait_for_success(RUN_TIMEOUT);
}

fn signal_child_pid(publisher: &Publisher, signal: Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(publisher.id()).unwrap());
    nix::sys::signal::kill(pid, signal).unwrap();
}

#[test]
fn the_heartbeat_stays_fresh_while_retrying_an_absent_broker() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("heartbeat");
    let tokens = satmqtt_tests::TokenDir::new();
    tokens.write("token");
    let port = {
        let listener = std::net::TcpListener::bind((Broker::HOST, 0)).unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut publisher = Publisher::builder()
        .args(["--host", Broker::HOST, "--port", &port.to_string()])
        .token_file(tokens.path())
        .client_id("heartbeat-retry")
        .args(["--backoff-floor-ms", "100", "--backoff-cap-ms", "400"])
        .arg("--heartbeat-file")
        .arg(&file)
        .spawn();
    let first = wait_until(RUN_TIMEOUT, || heartbeat_value(&file)).expect("no heartbeat");
    assert!(
        wait_until(RUN_TIMEOUT, || (heartbeat_value(&file)? >= first + 2)
            .then_some(()))
        .is_some(),
        "the heartbeat was not refreshed while retrying\n{}",
        publisher.describe()
    );
    let (code, output) = check_heartbeat(&file, 5);
    assert_eq!(code, Some(0), "{output}");
    let log = publisher.stderr();
    assert!(log.contains("reconnecting in"), "{log}");
    assert!(!log.contains("connected to"), "{log}");
    publisher.signal(Signal::SIGTERM);
    publisher.wait_for_success(RUN_TIMEOUT);
}

#[test]
fn the_heartbeat_check_fails_for_a_missing_or_old_file_and_passes_for_a_fresh_one() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("heartbeat");
    let (code, output) = check_heartbeat(&file, 120);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("cannot read the heartbeat"), "{output}");

    fs::write(&file, "0\n").unwrap();
    let set_mtime = |age_s: i64| {
        let now = SystemTime::now();
        let at = if age_s >= 0 {
            now - Duration::from_secs(age_s.unsigned_abs())
        } else {
            now + Duration::from_secs(age_s.unsigned_abs())
        };
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(at)
            .unwrap();
    };
    set_mtime(600);
    let (code, output) = check_heartbeat(&file, 120);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("s old (limit 120 s)"), "{output}");
    set_mtime(10);
    assert_eq!(check_heartbeat(&file, 120).0, Some(0));
    // A clock stepped back: counted as fresh rather than restarting the pod.
    set_mtime(-3600);
    assert_eq!(check_heartbeat(&file, 120).0, Some(0));
}

#[test]
fn an_unwritable_heartbeat_file_is_a_configuration_error() {
    let bed = TestBed::new();
    let mut publisher = bed
        .publisher("heartbeat-unwritable")
        .args([
            "--heartbeat-file",
            "/nonexistent-satmqtt/heartbeat",
            "--count",
            "1",
        ])
        .spawn();
    let status = publisher.wait_timeout(RUN_TIMEOUT).expect("still running");
    assert_eq!(status.code(), Some(2), "{}", publisher.describe());
    assert!(
        publisher
            .stderr()
            .contains("cannot write the heartbeat file /nonexistent-satmqtt/heartbeat"),
        "{}",
        publisher.describe()
    );
    assert!(bed.broker.events().all_connects().is_empty());
}
