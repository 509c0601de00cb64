//! TLS to a real mosquitto: certificates made at test time, the real `pod-publisher` binary, an
//! independent subscriber on the same broker's plain listener.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use satmqtt_tests::wait::wait_until;
use satmqtt_tests::{
    assert_no_token_leak, fake_jwt, Broker, Publisher, PublisherBuilder, Sequence, Subscriber,
    TestPki, TokenDir,
};

/// Generous bound for a short run on a loaded CI machine; runs take well under a second.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a failing configuration is watched retrying.
const RETRY_WINDOW: Duration = Duration::from_secs(3);
/// A stop request must end the program this fast, whatever it was doing.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// The failure text must appear this fast (connect timeout 5 s, plus slack).
const FAILURE_TIMEOUT: Duration = Duration::from_secs(8);
/// `--backoff-floor-ms` of the retry tests (also the binary's default).
const BACKOFF_FLOOR_MS: u64 = 100;

/// A broker with a TLS listener, its certificates, and a token it accepts.
struct TlsBed {
    pki: TestPki,
    token: String,
    broker: Broker,
    tokens: TokenDir,
}

impl TlsBed {
    fn new(require_certificate: bool) -> TlsBed {
        let pki = TestPki::new();
        let token = fake_jwt(3600);
        let broker = Broker::start_tls(&token, &pki.listener(require_certificate));
        let tokens = TokenDir::new();
        tokens.write(&token);
        TlsBed {
            pki,
            token,
            broker,
            tokens,
        }
    }

    fn tls_port(&self) -> String {
        self.broker.tls_port().unwrap().to_string()
    }

    /// `pod-publisher --tls` at `localhost:<TLS port>` with `client_id`, nothing else about TLS.
    fn publisher(&self, client_id: &str) -> PublisherBuilder {
        Publisher::builder()
            .args(["--host", "localhost", "--port", &self.tls_port(), "--tls"])
            .token_file(self.tokens.path())
            .client_id(client_id)
    }

    /// [`TlsBed::publisher`] trusting the broker's CA.
    fn trusting_publisher(&self, client_id: &str) -> PublisherBuilder {
        self.publisher(client_id)
            .arg("--ca-file")
            .arg(self.pki.ca_file())
    }

    fn subscribe(&self, topic: &str) -> Subscriber {
        Subscriber::start(&self.broker, topic)
    }

    /// `New connection from ... on port <TLS port>.` lines: TCP connections the TLS listener took.
    fn tls_connections(&self) -> usize {
        let suffix = format!(" on port {}.", self.tls_port());
        self.broker
            .events()
            .messages()
            .filter(|m| m.starts_with("New connection from ") && m.ends_with(&suffix))
            .count()
    }
}

/// Most connection attempts the core's backoff allows in `window`: the first at once, then
/// waits of at least half of `floor · 2^k` (jitter stays in the upper half).
fn max_attempts(window: Duration, floor_ms: u64) -> usize {
    let window_ms = window.as_millis() as u64;
    let mut elapsed = 0;
    for k in 0..63 {
        let ceiling = floor_ms << k;
        elapsed += ceiling - ceiling / 2;
        if elapsed > window_ms {
            return k + 1;
        }
    }
    64
}

/// Log lines (at warn) reporting a failed connection, each with its attempt number.
fn failure_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("disconnected: ") && l.contains("; reconnecting in "))
        .collect()
}

/// Waits until the publisher has logged `needle` in at least `n` failure lines; returns its log.
fn wait_for_failures(publisher: &Publisher, needle: &str, n: usize) -> String {
    let found = wait_until(FAILURE_TIMEOUT, || {
        let log = publisher.stderr();
        let count = failure_lines(&log)
            .iter()
            .filter(|l| l.contains(needle))
            .count();
        (count >= n).then_some(log)
    });
    found.unwrap_or_else(|| {
        panic!(
            "no {n} failure lines containing `{needle}` within {FAILURE_TIMEOUT:?}\n{}",
            publisher.describe()
        )
    })
}

/// Watches a publisher that cannot connect: it names the failure with `needle`, keeps retrying
/// within the backoff bound, never connects as MQTT, exits promptly on SIGTERM, and never prints
/// the token. Returns the log.
fn assert_retries_with_clear_error(bed: &TlsBed, mut publisher: Publisher, needle: &str) -> String {
    wait_for_failures(&publisher, needle, 2);
    let window_end = publisher.started() + RETRY_WINDOW;
    let exited = publisher.wait_timeout(window_end.saturating_duration_since(Instant::now()));
    assert!(
        exited.is_none(),
        "gave up instead of retrying ({exited:?})\n{}",
        publisher.describe()
    );
    let log = publisher.stderr();
    let failures = failure_lines(&log);
    let bound = max_attempts(RETRY_WINDOW + Duration::from_millis(500), BACKOFF_FLOOR_MS);
    assert!(
        (2..=bound).contains(&failures.len()),
        "{} failed attempts in about {RETRY_WINDOW:?} (backoff allows at most {bound})\n{log}",
        failures.len()
    );
    for line in &failures {
        assert!(
            line.contains(needle),
            "a failure line without `{needle}`: {line}"
        );
    }
    // The attempt counter in the log follows the failures.
    let last = failures.last().unwrap();
    assert!(
        last.contains(&format!("(attempt {})", failures.len() + 1)),
        "{last}"
    );

    let stop = Instant::now();
    publisher.signal(Signal::SIGTERM);
    let status = publisher.wait_timeout(STOP_TIMEOUT);
    assert!(
        status.is_some_and(|s| s.success()),
        "no clean exit within {STOP_TIMEOUT:?} of SIGTERM ({status:?})\n{}",
        publisher.describe()
    );
    assert!(stop.elapsed() < STOP_TIMEOUT);

    assert!(
        bed.broker.events().all_connects().is_empty(),
        "an MQTT session was accepted:\n{}",
        bed.broker.log()
    );
    let output = publisher.output_text();
    assert_no_token_leak("pod-publisher output", &output, &bed.token);
    output
}

#[test]
fn qos1_over_tls_delivers_contiguous_sequence() {
    let bed = TlsBed::new(false);
    let subscriber = bed.subscribe("sampletopic");
    // No --server-name: it defaults to --host (localhost, a name in the broker's certificate).
    let mut publisher = bed
        .trusting_publisher("tls-qos1")
        .args(["--qos", "1", "--interval-ms", "0", "--count", "300"])
        .spawn();

    publisher.wait_for_success(RUN_TIMEOUT);
    let log = publisher.stderr();
    assert!(
        log.contains("finished: sent 300, acknowledged 300"),
        "{}",
        publisher.describe()
    );
    let ca = bed.pki.ca_file().display().to_string();
    assert!(
        log.contains(&format!(
            "TLS 1.2/1.3, server name \"localhost\", trusting the CAs in {ca}"
        )),
        "{log}"
    );
    let payloads = subscriber.sync(SYNC_TIMEOUT);
    Sequence::parse("samplepayload", &payloads).assert_contiguous(0, 300);

    // One MQTT v5 session as `$sat`, over the TLS listener, ended by DISCONNECT.
    let broker = &bed.broker;
    assert!(
        broker.wait_for_log(Duration::from_secs(5), |log| log
            .clean_disconnects("tls-qos1")
            == 1),
        "no `Client tls-qos1 disconnected.`:\n{}",
        broker.log()
    );
    let connects = broker.events().connects("tls-qos1");
    assert_eq!(connects.len(), 1, "{}", broker.log());
    assert!(connects[0].is_mqtt5());
    assert_eq!(connects[0].username.as_deref(), Some("$sat"));
    assert_eq!(bed.tls_connections(), 1, "{}", broker.log());
    assert_no_token_leak("pod-publisher output", &publisher.output_text(), &bed.token);
}

#[test]
fn system_trust_store_is_used_without_a_ca_file() {
    let bed = TlsBed::new(false);
    let subscriber = bed.subscribe("sampletopic");
    // rustls-native-certs reads SSL_CERT_FILE instead of /etc/ssl/certs when it is set. The
    // server name is an IP address here: the broker's certificate has 127.0.0.1 as an IP SAN.
    let mut publisher = Publisher::builder()
        .args(["--host", "127.0.0.1", "--port", &bed.tls_port(), "--tls"])
        .token_file(bed.tokens.path())
        .client_id("tls-system-roots")
        .args(["--count", "5", "--interval-ms", "0"])
        .env("SSL_CERT_FILE", bed.pki.ca_file())
        .spawn();

    publisher.wait_for_success(RUN_TIMEOUT);
    assert!(
        publisher
            .stderr()
            .contains("server name \"127.0.0.1\", trusting the CAs in the system trust store"),
        "{}",
        publisher.describe()
    );
    let payloads = subscriber.sync(SYNC_TIMEOUT);
    Sequence::parse("samplepayload", &payloads).assert_contiguous(0, 5);
}

#[test]
fn unknown_ca_is_logged_and_retried_with_backoff() {
    let bed = TlsBed::new(false);
    let other_ca = bed.pki.other_ca_file();
    let publisher = bed
        .publisher("tls-wrong-ca")
        .arg("--ca-file")
        .arg(&other_ca)
        .args(["--count", "1"])
        .spawn();

    let output = assert_retries_with_clear_error(
        &bed,
        publisher,
        "certificate verify failed: UnknownIssuer: the broker's certificate for server name \
         \"localhost\" is not signed by a CA in ",
    );
    assert!(
        output.contains(&format!("not signed by a CA in {}", other_ca.display())),
        "{output}"
    );
    // The broker saw the alert this client sends when it rejects the certificate, once per try.
    let alerts = bed
        .broker
        .events()
        .messages()
        .filter(|m| m.contains("tlsv1 alert unknown ca"))
        .count();
    assert!(alerts >= 2, "{}", bed.broker.log());
}

#[test]
fn wrong_server_name_is_logged_and_retried_with_backoff() {
    let bed = TlsBed::new(false);
    let publisher = bed
        .trusting_publisher("tls-wrong-name")
        .args(["--server-name", "broker.wrong.example", "--count", "1"])
        .spawn();

    let output = assert_retries_with_clear_error(
        &bed,
        publisher,
        "certificate verify failed: NotValidForName: the broker's certificate is not valid for \
         server name \"broker.wrong.example\"",
    );
    assert!(
        output.contains("\"broker.wrong.example\" (it is for: localhost, 127.0.0.1)"),
        "{output}"
    );
}

#[test]
fn mutual_tls_broker_accepts_the_client_certificate() {
    let bed = TlsBed::new(true);
    let subscriber = bed.subscribe("sampletopic");
    // Configured through the environment, as in a pod spec.
    let mut publisher = Publisher::builder()
        .env("SATMQTT_HOST", "localhost")
        .env("SATMQTT_PORT", bed.tls_port())
        .env("SATMQTT_TLS", "true")
        .env("SATMQTT_CA_FILE", bed.pki.ca_file())
        .env("SATMQTT_CLIENT_CERT", bed.pki.client_cert())
        .env("SATMQTT_CLIENT_KEY", bed.pki.client_key())
        .env("SATMQTT_TOKEN_FILE", bed.tokens.path())
        .env("SATMQTT_CLIENT_ID", "tls-mutual")
        .env("SATMQTT_COUNT", "20")
        .env("SATMQTT_INTERVAL_MS", "0")
        .spawn();

    publisher.wait_for_success(RUN_TIMEOUT);
    assert!(
        publisher.stderr().contains("with a client certificate"),
        "{}",
        publisher.describe()
    );
    let payloads = subscriber.sync(SYNC_TIMEOUT);
    Sequence::parse("samplepayload", &payloads).assert_contiguous(0, 20);
    assert_eq!(bed.broker.events().connects("tls-mutual").len(), 1);
}

#[test]
fn mutual_tls_broker_refuses_a_client_without_certificate() {
    let bed = TlsBed::new(true);
    let publisher = bed
        .trusting_publisher("tls-no-client-cert")
        .args(["--count", "1"])
        .spawn();

    assert_retries_with_clear_error(
        &bed,
        publisher,
        "failed: the broker sent TLS alert CertificateRequired (it requires a client \
         certificate and none is configured)",
    );
}

#[test]
fn plain_broker_on_the_tls_port_is_reported_without_hanging() {
    let bed = TlsBed::new(false);
    // The broker's plain MQTT listener, dialled with --tls.
    let publisher = Publisher::builder()
        .args(["--host", "localhost", "--tls", "--ca-file"])
        .arg(bed.pki.ca_file())
        .args(["--port", &bed.broker.port().to_string()])
        .token_file(bed.tokens.path())
        .client_id("tls-on-plain")
        .args(["--count", "1"])
        .spawn();

    assert_retries_with_clear_error(
        &bed,
        publisher,
        "the broker did not answer with TLS (plain MQTT on a TLS port?)",
    );
}

/// Runs the publisher with `args` and checks it exits with code 2 at start-up, saying `problem`,
/// without connecting anywhere.
fn assert_fails_at_startup(bed: &TlsBed, args: &[&str], paths: &[&Path], problem: &str) {
    let mut builder = bed.publisher("tls-bad-config").args(args);
    for path in paths {
        builder = builder.arg(path);
    }
    let mut publisher = builder.spawn();
    let status = publisher.wait_timeout(STOP_TIMEOUT).unwrap_or_else(|| {
        panic!(
            "still running after {STOP_TIMEOUT:?}\n{}",
            publisher.describe()
        )
    });
    assert_eq!(status.code(), Some(2), "{}", publisher.describe());
    let stderr = publisher.stderr();
    assert!(
        stderr.contains(problem),
        "stderr does not say `{problem}`:\n{stderr}"
    );
    assert_eq!(bed.tls_connections(), 0, "{}", bed.broker.log());
}

#[test]
fn unreadable_or_empty_ca_file_fails_at_startup_naming_it() {
    let bed = TlsBed::new(false);
    let missing = bed.pki.dir().join("missing.crt");
    assert_fails_at_startup(
        &bed,
        &["--ca-file"],
        &[&missing],
        &format!("cannot read the CA file {}: ", missing.display()),
    );
    let empty = bed.pki.dir().join("empty.crt");
    std::fs::write(&empty, "").unwrap();
    assert_fails_at_startup(
        &bed,
        &["--ca-file"],
        &[&empty],
        &format!("no certificates found in {}", empty.display()),
    );
}

#[test]
fn client_certificate_without_key_fails_at_startup() {
    let bed = TlsBed::new(true);
    let cert = bed.pki.client_cert();
    assert_fails_at_startup(
        &bed,
        &["--client-cert"],
        &[&cert],
        "mutual TLS needs both a client certificate and its key: the client key is missing",
    );
}
