//! The MQTT client id defaults to the pod's name, so replicas of one Deployment never collide.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use satmqtt_tests::{Publisher, TestBed};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs one message with no `--client-id` and the given environment; returns the client ids the
/// broker saw and the publisher's log.
fn run_without_client_id(envs: &[(&str, &str)]) -> (Vec<String>, String) {
    let bed = TestBed::new();
    let mut builder = Publisher::builder()
        .broker(&bed.broker)
        .token_file(bed.tokens.path())
        .args(["--count", "1"]);
    for (key, value) in envs {
        builder = builder.env(key, value);
    }
    let mut publisher = builder.spawn();
    publisher.wait_for_success(RUN_TIMEOUT);
    let ids = bed
        .broker
        .events()
        .all_connects()
        .into_iter()
        .map(|c| c.client_id)
        .collect();
    (ids, publisher.stderr())
}

#[test]
fn client_id_defaults_to_pod_name() {
    let (ids, log) =
        run_without_client_id(&[("POD_NAME", "pod-abc-123"), ("HOSTNAME", "node-host-9")]);
    assert_eq!(ids, vec!["pod-abc-123"]);
    assert!(
        log.contains("pod-abc-123"),
        "the log does not name the client:\n{log}"
    );
}

#[test]
fn client_id_falls_back_to_hostname() {
    let (ids, _) = run_without_client_id(&[("HOSTNAME", "node-host-9")]);
    assert_eq!(ids, vec!["node-host-9"]);
}

#[test]
fn client_id_is_sampleid_without_pod_name_or_hostname() {
    let (ids, _) = run_without_client_id(&[]);
    assert_eq!(ids, vec!["sampleid"]);
}
