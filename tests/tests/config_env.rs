//! Configuration from the environment, through the real binary: the Azure IoT Operations SDK
//! variables (`AIO_*`) alone configure the connection; flags and `SATMQTT_*` variables take
//! precedence over them; invalid values end the program with exit code 2 and name the
//! variable; `--log-format json` writes one JSON object per line.

#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::time::Duration;

use satmqtt_tests::{
    assert_no_token_leak, fake_jwt, Broker, Publisher, PublisherBuilder, Sequence, Subscriber,
    TestBed, TestPki, TokenDir,
};

const RUN_TIMEOUT: Duration = Duration::from_secs(30);
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages per run.
const COUNT: u64 = 3;

/// Every AIO variable the binary reads or warns about. The tests set each one (empty counts as
/// unset), so nothing from the test's own environment leaks into a run.
const AIO_VARIABLES: &[&str] = &[
    "AIO_BROKER_HOSTNAME",
    "AIO_BROKER_TCP_PORT",
    "AIO_MQTT_USE_TLS",
    "AIO_TLS_CA_FILE",
    "AIO_TLS_CERT_FILE",
    "AIO_TLS_KEY_FILE",
    "AIO_SAT_FILE",
    "AIO_MQTT_CLIENT_ID",
    "AIO_MQTT_KEEP_ALIVE",
    "AIO_MQTT_USERNAME",
    "AIO_MQTT_PASSWORD_FILE",
    "AIO_TLS_KEY_PASSWORD_FILE",
    "AIO_MQTT_CLEAN_START",
    "AIO_MQTT_SESSION_EXPIRY",
];

/// A publisher with no connection flag at all, `--count 3 --interval-ms 0`, and exactly the
/// `AIO_*` variables in `aio`.
fn aio_publisher(aio: &[(&str, String)]) -> PublisherBuilder {
    let mut builder =
        Publisher::builder().args(["--count", &COUNT.to_string(), "--interval-ms", "0"]);
    for name in AIO_VARIABLES {
        builder = builder.env(name, "");
    }
    for (name, value) in aio {
        builder = builder.env(name, value);
    }
    builder
}

/// The start-up `configuration:` line of a run's log.
fn configuration_line(log: &str) -> String {
    log.lines()
        .find(|l| l.contains("configuration: "))
        .unwrap_or_else(|| panic!("no `configuration:` line in the log:\n{log}"))
        .to_owned()
}

#[track_caller]
fn assert_mentions(line: &str, parts: &[&str]) {
    for part in parts {
        assert!(line.contains(part), "{part:?} is not in\n{line}");
    }
}

fn closed_port() -> u16 {
    // Bound then released: nothing listens there for the rest of the test.
    let listener = TcpListener::bind((Broker::HOST, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn aio_variables_alone_configure_the_connection() {
    let bed = TestBed::new();
    let subscriber = bed.subscribe("sampletopic");
    let mut publisher = aio_publisher(&[
        ("AIO_BROKER_HOSTNAME", Broker::HOST.into()),
        ("AIO_BROKER_TCP_PORT", bed.broker.port().to_string()),
        // Any case.
        ("AIO_MQTT_USE_TLS", "FALSE".into()),
        ("AIO_SAT_FILE", bed.tokens.path().display().to_string()),
        // AIO_SAT_FILE alone implies K8S-SAT (tests/tests/k8s_sat.rs); this broker is the seed's.
        ("SATMQTT_AUTH", "sat".into()),
        ("AIO_MQTT_CLIENT_ID", "aio-plain".into()),
        ("AIO_MQTT_KEEP_ALIVE", "42".into()),
    ])
    .spawn();
    publisher.wait_for_success(RUN_TIMEOUT);

    Sequence::parse("samplepayload", &subscriber.sync(SYNC_TIMEOUT)).assert_contiguous(0, COUNT);
    let connects = bed.broker.events().connects("aio-plain");
    assert_eq!(connects.len(), 1, "{}", bed.broker.log());
    assert!(connects[0].is_mqtt5());
    assert_eq!(connects[0].keepalive_s, 42);
    assert_eq!(connects[0].username.as_deref(), Some("$sat"));

    let log = publisher.stderr();
    assert_mentions(
        &configuration_line(&log),
        &[
            "host 127.0.0.1 (AIO_BROKER_HOSTNAME)",
            &format!("port {} (AIO_BROKER_TCP_PORT)", bed.broker.port()),
            "TLS off (AIO_MQTT_USE_TLS)",
            &format!("token file {} (AIO_SAT_FILE)", bed.tokens.path().display()),
            "client id aio-plain (AIO_MQTT_CLIENT_ID)",
            "keep-alive 42 s (AIO_MQTT_KEEP_ALIVE)",
        ],
    );
    assert_no_token_leak("the publisher's log", &publisher.output_text(), &bed.token);
}

#[test]
fn aio_variables_configure_mutual_tls_and_tls_is_on_by_default_with_an_aio_host() {
    let pki = TestPki::new();
    let token = fake_jwt(3600);
    let broker = Broker::start_tls(&token, &pki.listener(true));
    let tokens = TokenDir::new();
    tokens.write(&token);
    let subscriber = Subscriber::start(&broker, "sampletopic");
    let tls_port = broker.tls_port().unwrap();
    // No AIO_MQTT_USE_TLS: an AIO pod spec relies on the SDKs' default, TLS on.
    let mut publisher = aio_publisher(&[
        ("AIO_BROKER_HOSTNAME", "localhost".into()),
        ("AIO_BROKER_TCP_PORT", tls_port.to_string()),
        ("AIO_TLS_CA_FILE", pki.ca_file().display().to_string()),
        ("AIO_TLS_CERT_FILE", pki.client_cert().display().to_string()),
        ("AIO_TLS_KEY_FILE", pki.client_key().display().to_string()),
        ("AIO_SAT_FILE", tokens.path().display().to_string()),
        ("SATMQTT_AUTH", "sat".into()),
        ("AIO_MQTT_CLIENT_ID", "aio-mtls".into()),
    ])
    .spawn();
    publisher.wait_for_success(RUN_TIMEOUT);

    Sequence::parse("samplepayload", &subscriber.sync(SYNC_TIMEOUT)).assert_contiguous(0, COUNT);
    assert_eq!(broker.events().connects("aio-mtls").len(), 1);
    let tls_connections = broker
        .events()
        .messages()
        .filter(|m| {
            m.starts_with("New connection from ") && m.ends_with(&format!(" on port {tls_port}."))
        })
        .count();
    assert_eq!(tls_connections, 1, "{}", broker.log());
    assert_mentions(
        &configuration_line(&publisher.stderr()),
        &[
            "TLS on (AIO SDK default with AIO_BROKER_HOSTNAME)",
            "(AIO_TLS_CA_FILE)",
            "(AIO_TLS_CERT_FILE)",
            "(AIO_TLS_KEY_FILE)",
        ],
    );
    assert_no_token_leak("the publisher's log", &publisher.output_text(), &token);
}

#[test]
fn flags_beat_own_variables_which_beat_aio_variables() {
    let bed = TestBed::new();
    let subscriber = bed.subscribe("sampletopic");
    let mut publisher = aio_publisher(&[
        // Each of these would fail the run if it were used.
        ("AIO_BROKER_HOSTNAME", "no-such-broker.invalid".into()),
        ("AIO_BROKER_TCP_PORT", closed_port().to_string()),
        ("AIO_SAT_FILE", "/nonexistent/token".into()),
        ("AIO_MQTT_CLIENT_ID", "aio-id".into()),
        ("AIO_MQTT_KEEP_ALIVE", "42".into()),
    ])
    .arg("--host")
    .arg(Broker::HOST)
    .env("SATMQTT_PORT", bed.broker.port().to_string())
    .env("SATMQTT_TOKEN_FILE", bed.tokens.path())
    .env("SATMQTT_CLIENT_ID", "own-id")
    .arg("--client-id")
    .arg("flag-id")
    .env("SATMQTT_KEEPALIVE_S", "17")
    .spawn();
    publisher.wait_for_success(RUN_TIMEOUT);

    Sequence::parse("samplepayload", &subscriber.sync(SYNC_TIMEOUT)).assert_contiguous(0, COUNT);
    let events = bed.broker.events();
    assert!(events.connects("own-id").is_empty() && events.connects("aio-id").is_empty());
    let connects = events.connects("flag-id");
    assert_eq!(connects.len(), 1, "{}", bed.broker.log());
    assert_eq!(connects[0].keepalive_s, 17);
    assert_mentions(
        &configuration_line(&publisher.stderr()),
        &[
            "host 127.0.0.1 (--host)",
            "(SATMQTT_PORT)",
            "(SATMQTT_TOKEN_FILE)",
            "client id flag-id (--client-id)",
            "keep-alive 17 s (SATMQTT_KEEPALIVE_S)",
        ],
    );
}

/// Runs the binary with `env` and returns its exit code and log; no broker is needed, the
/// configuration is refused first.
fn refused(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let tokens = TokenDir::new();
    tokens.write("token");
    let mut builder = aio_publisher(&[]).token_file(tokens.path());
    for (name, value) in env {
        builder = builder.env(name, value);
    }
    let mut publisher = builder.spawn();
    let status = publisher
        .wait_timeout(RUN_TIMEOUT)
        .unwrap_or_else(|| panic!("still running with {env:?}\n{}", publisher.describe()));
    (status.code(), publisher.output_text())
}

#[test]
fn invalid_aio_values_exit_2_naming_the_variable() {
    for (name, value) in [
        ("AIO_MQTT_USE_TLS", "maybe"),
        ("AIO_BROKER_TCP_PORT", "99999"),
        ("AIO_MQTT_KEEP_ALIVE", "one minute"),
    ] {
        let (code, log) = refused(&[(name, value)]);
        assert_eq!(code, Some(2), "{name}={value}:\n{log}");
        assert!(
            log.contains(&format!(
                "invalid value \"{value}\" in the environment variable {name}"
            )),
            "{name}={value}:\n{log}"
        );
    }
}

#[test]
fn an_invalid_own_boolean_exits_2_naming_the_variable_and_the_words_it_takes() {
    let (code, log) = refused(&[("SATMQTT_TLS", "maybe")]);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains(
            "invalid value \"maybe\" in the environment variable SATMQTT_TLS (for --tls): \
             expected true/false, yes/no, on/off"
        ),
        "{log}"
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_the_client_id_and_never_the_token() {
    let bed = TestBed::new();
    let subscriber = bed.subscribe("sampletopic");
    let mut publisher = bed
        .publisher("json-logger")
        .args(["--count", &COUNT.to_string(), "--interval-ms", "0"])
        .args(["--log-level", "trace"])
        .env("SATMQTT_LOG_FORMAT", "json")
        .spawn();
    publisher.wait_for_success(RUN_TIMEOUT);
    Sequence::parse("samplepayload", &subscriber.sync(SYNC_TIMEOUT)).assert_contiguous(0, COUNT);

    let log = publisher.stderr();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() > COUNT as usize, "{log}");
    let mut messages = Vec::new();
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        let object = value.as_object().unwrap();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["client_id", "level", "msg", "ts"], "{line}");
        assert_eq!(object["client_id"], "json-logger", "{line}");
        let level = object["level"].as_str().unwrap();
        assert!(
            ["error", "warn", "info", "debug", "trace"].contains(&level),
            "{line}"
        );
        assert!(object["ts"].as_str().unwrap().ends_with('Z'), "{line}");
        messages.push(object["msg"].as_str().unwrap().to_owned());
    }
    assert!(messages.iter().any(|m| m.starts_with("connected to ")));
    assert!(messages
        .last()
        .is_some_and(|m| m.starts_with(&format!("finished: sent {COUNT}, acknowledged {COUNT}"))));
    assert_no_token_leak(
        "the publisher's JSON log",
        &publisher.output_text(),
        &bed.token,
    );
}

#[test]
fn text_logs_name_the_client_on_every_line() {
    let bed = TestBed::new();
    let mut publisher = bed
        .publisher("text-logger")
        .args(["--count", "1", "--log-level", "debug"])
        .spawn();
    publisher.wait_for_success(RUN_TIMEOUT);
    let log = publisher.stderr();
    assert!(!log.is_empty());
    for line in log.lines() {
        assert!(line.contains(" [text-logger] "), "{line}");
        assert!(serde_json::from_str::<serde_json::Value>(line).is_err());
    }
}
