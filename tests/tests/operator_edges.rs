//! What a demanding operator runs into (issue 16): settings the publisher could only retry
//! forever with are refused at start-up (exit 2) with the flag and the limit in words; clap's own
//! errors come in the log format asked for; a FIFO as the token file is refused instead of
//! blocking `open(2)`; a token that a broker will likely refuse (a BOM, whitespace, not a JWT)
//! is pointed at once, by byte offset, never by content; a directory is no heartbeat; and the
//! backoff lines count attempts truthfully.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use satmqtt_tests::wait::wait_until;
use satmqtt_tests::{assert_no_token_leak, fake_jwt, Broker, Publisher, TestBed, TokenDir};

/// A configuration error must end the process well inside this.
const STARTUP_FAILURE_TIMEOUT: Duration = Duration::from_secs(5);
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the publisher against `bed` with `args` added; asserts exit 2 within
/// [`STARTUP_FAILURE_TIMEOUT`], no connection to the broker, and returns stderr.
#[track_caller]
fn refused_at_startup(bed: &TestBed, client_id: &str, args: &[&str]) -> String {
    let mut publisher = bed.publisher(client_id).args(args).spawn();
    let status = publisher
        .wait_timeout(STARTUP_FAILURE_TIMEOUT)
        .unwrap_or_else(|| {
            panic!(
                "{args:?}: still running after {STARTUP_FAILURE_TIMEOUT:?}\n{}",
                publisher.describe()
            )
        });
    assert_eq!(status.code(), Some(2), "{args:?}\n{}", publisher.describe());
    assert_eq!(
        bed.broker.events().tcp_connections(),
        0,
        "{args:?}: it connected\n{}",
        bed.broker.log()
    );
    publisher.stderr()
}

#[track_caller]
fn assert_says(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} is not in\n{text}");
    }
}

#[test]
fn values_that_could_only_be_retried_forever_exit_2_naming_the_flag_and_the_limit() {
    let bed = TestBed::new();
    let cases: [(&[&str], &[&str]); 5] = [
        (&["--port", "0"], &["'--port <PORT>'", "1 to 65535"]),
        (
            &["--connect-timeout-ms", "0"],
            &["'--connect-timeout-ms <CONNECT_TIMEOUT_MS>'", "at least 1"],
        ),
        (
            &["--backoff-floor-ms", "0"],
            &["'--backoff-floor-ms <BACKOFF_FLOOR_MS>'", "at least 1"],
        ),
        (
            &["--backoff-cap-ms", "50", "--backoff-floor-ms", "100"],
            &["--backoff-cap-ms is 50 ms, below --backoff-floor-ms 100 ms"],
        ),
        (
            &["--host", "a b"],
            &[
                "'--host <HOST>'",
                "' ' at byte 1 is not allowed in a host name",
            ],
        ),
    ];
    for (args, says) in cases {
        // `bed.publisher` already gives --host and --port: the later one would be refused by
        // clap as given twice, so these go through a builder of their own.
        let mut builder = Publisher::builder()
            .token_file(bed.tokens.path())
            .client_id("edge-values");
        if !args.contains(&"--host") {
            builder = builder.arg("--host").arg(Broker::HOST);
        }
        if !args.contains(&"--port") {
            builder = builder.arg("--port").arg(bed.broker.port().to_string());
        }
        let mut publisher = builder.args(args).spawn();
        let status = publisher
            .wait_timeout(STARTUP_FAILURE_TIMEOUT)
            .unwrap_or_else(|| panic!("{args:?}: still running\n{}", publisher.describe()));
        assert_eq!(status.code(), Some(2), "{args:?}\n{}", publisher.describe());
        assert_says(&publisher.stderr(), says);
    }
    assert_eq!(
        bed.broker.events().tcp_connections(),
        0,
        "{}",
        bed.broker.log()
    );
}

#[test]
fn configuration_errors_say_the_flag_and_the_limit_in_words() {
    let bed = TestBed::new();
    let long_id = "c".repeat(200);
    let log = refused_at_startup(&bed, &long_id, &[]);
    assert_says(&log, &["--client-id is 200 bytes; at most 64"]);
    assert!(!log.contains("ClientIdTooLong"), "{log}");

    let log = refused_at_startup(&bed, "edge-topic", &["--topic", "a/+/b"]);
    assert_says(&log, &["--topic", "wildcard"]);
    assert!(!log.contains("TopicWildcard"), "{log}");

    let log = refused_at_startup(&bed, "edge-topic", &["--topic", ""]);
    assert_says(&log, &["--topic is empty"]);
    assert!(!log.contains("TopicLength"), "{log}");
}

/// Runs the binary with `args` (no broker needed: it is refused first) and returns its exit
/// code and stderr.
fn run_refused(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut builder = Publisher::builder().args(args);
    for (key, value) in env {
        builder = builder.env(key, value);
    }
    let mut publisher = builder.spawn();
    let status = publisher
        .wait_timeout(STARTUP_FAILURE_TIMEOUT)
        .unwrap_or_else(|| panic!("{args:?}: still running\n{}", publisher.describe()));
    (status.code(), publisher.stderr())
}

#[test]
fn clap_errors_obey_the_json_log_format() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 4] = [
        (&["--port", "0", "--log-format", "json"], &[], "--port"),
        (&["--log-format=json", "--host", "a b"], &[], "--host"),
        (
            &["--no-such-flag"],
            &[("SATMQTT_LOG_FORMAT", "json")],
            "--no-such-flag",
        ),
        (
            &["--client-id", "json-id"],
            &[("SATMQTT_LOG_FORMAT", "json"), ("SATMQTT_QOS", "7")],
            "SATMQTT_QOS",
        ),
    ];
    for (args, env, names) in cases {
        let (code, stderr) = run_refused(args, env);
        assert_eq!(code, Some(2), "{args:?} {env:?}\n{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{args:?} {env:?}: one line expected\n{stderr}"
        );
        let value: serde_json::Value = serde_json::from_str(lines[0])
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {}", lines[0]));
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["client_id", "level", "msg", "ts"], "{}", lines[0]);
        assert_eq!(value["level"], "error", "{}", lines[0]);
        assert!(
            value["msg"].as_str().unwrap().contains(names),
            "{}",
            lines[0]
        );
    }
    // The client id it could read names the line.
    let (_, stderr) = run_refused(
        &["--client-id", "json-id", "--port", "0"],
        &[("SATMQTT_LOG_FORMAT", "json")],
    );
    let value: serde_json::Value = serde_json::from_str(stderr.trim()).unwrap();
    assert_eq!(value["client_id"], "json-id");

    // In text format clap keeps its own layout for people at a terminal.
    let (code, stderr) = run_refused(&["--port", "0"], &[]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.starts_with("error: invalid value '0' for '--port <PORT>'"),
        "{stderr}"
    );
}

#[test]
fn a_fifo_as_the_token_file_is_refused_with_its_path_without_hanging() {
    let bed = TestBed::new();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let status = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap_or_else(|e| panic!("running mkfifo (coreutils) failed: {e}"));
    assert!(status.success(), "mkfifo {}", fifo.display());
    // As the kubelet mounts it: the configured path is a symlink.
    let link = dir.path().join("mqtt-client-token");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();

    let mut publisher = Publisher::builder()
        .broker(&bed.broker)
        .token_file(&link)
        .client_id("edge-fifo")
        .spawn();
    // open(2) on a FIFO without a writer blocks: exiting at all is the point.
    let status = publisher
        .wait_timeout(STARTUP_FAILURE_TIMEOUT)
        .unwrap_or_else(|| panic!("hangs on the FIFO\n{}", publisher.describe()));
    assert_eq!(status.code(), Some(2), "{}", publisher.describe());
    assert_says(
        &publisher.stderr(),
        &[&format!(
            "token file {}: a FIFO (named pipe), not a regular file",
            link.display()
        )],
    );
    assert_eq!(bed.broker.events().tcp_connections(), 0);
}

/// Runs the publisher with `token` in its file against a broker that accepts `accepted`: to
/// success if they are equal, else until the broker has seen `attempts` connections; returns
/// the log.
fn run_with_token(token: &str, accepted: &str, attempts: usize, client_id: &str) -> String {
    let broker = Broker::start(accepted);
    let tokens = TokenDir::new();
    tokens.write(token);
    let mut publisher = Publisher::builder()
        .broker(&broker)
        .token_file(tokens.path())
        .client_id(client_id)
        .args([
            "--count",
            "1",
            "--backoff-floor-ms",
            "10",
            "--backoff-cap-ms",
            "50",
        ])
        .spawn();
    if token == accepted {
        publisher.wait_for_success(RUN_TIMEOUT);
    } else {
        let done = wait_until(RUN_TIMEOUT, || {
            (broker.events().tcp_connections() >= attempts).then_some(())
        });
        assert!(
            done.is_some(),
            "fewer than {attempts} connections in {RUN_TIMEOUT:?}\n{}\n{}",
            broker.log(),
            publisher.describe()
        );
        publisher.kill();
    }
    let log = publisher.stderr();
    assert_no_token_leak("the publisher's log", &publisher.output_text(), token);
    log
}

#[track_caller]
fn assert_warned_once(log: &str, warning: &str) {
    let count = log.lines().filter(|l| l.contains(warning)).count();
    assert_eq!(count, 1, "{warning:?} expected once\n{log}");
}

#[test]
fn a_token_with_a_bom_or_whitespace_is_pointed_at_once_by_offset() {
    let jwt = fake_jwt(3600);
    // A UTF-8 BOM, as a Windows editor writes it.
    let log = run_with_token(&format!("\u{feff}{jwt}"), &jwt, 3, "edge-bom");
    assert_warned_once(&log, ": a UTF-8 byte order mark at byte offset 0");
    assert!(log.contains("token rejected"), "{log}");

    let log = run_with_token(&format!(" {jwt}"), &jwt, 3, "edge-leading");
    assert_warned_once(&log, ": whitespace at byte offset 0, before the token");

    // A line break where a pasted token was wrapped.
    let at = jwt.find('.').unwrap() + 1;
    let wrapped = format!("{}\n{}", &jwt[..at], &jwt[at..]);
    let log = run_with_token(&wrapped, &jwt, 3, "edge-inner");
    assert_warned_once(
        &log,
        &format!(": whitespace inside the token at byte offset {at}"),
    );
}

#[test]
fn a_token_that_is_not_a_jwt_is_used_and_said_once() {
    let token = "plain-opaque-token-for-the-hint-test";
    let log = run_with_token(token, token, 0, "edge-opaque");
    assert_warned_once(&log, ": not a JWT (header.payload.signature)");
    assert!(log.contains("finished: sent 1, acknowledged 1"), "{log}");
    // A JWT is not pointed at.
    let jwt = fake_jwt(3600);
    let log = run_with_token(&jwt, &jwt, 0, "edge-jwt");
    assert!(!log.contains("not a JWT"), "{log}");
}

#[test]
fn a_directory_is_no_heartbeat() {
    let bed = TestBed::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display().to_string();
    let log = refused_at_startup(&bed, "edge-heartbeat", &["--heartbeat-file", &path]);
    assert_says(
        &log,
        &[&format!(
            "cannot write the heartbeat file {path}: it is a directory"
        )],
    );

    // The probe does not take a directory's time for a heartbeat either.
    let output = Command::new(Publisher::binary())
        .args(["--check-heartbeat", &path])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_says(
        &String::from_utf8_lossy(&output.stdout),
        &["not a regular file"],
    );
}

/// A broker stand-in that accepts every CONNECT with CONNACK 0x00 and closes the connection at
/// once: every attempt connects, none makes progress. Stops when dropped.
struct ClosingBroker {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ClosingBroker {
    /// At most this many connections are served.
    const MAX_CONNECTIONS: usize = 50;

    fn start() -> ClosingBroker {
        let listener = TcpListener::bind((Broker::HOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (Arc::clone(&accepted), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming().take(Self::MAX_CONNECTIONS) {
                if halt.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                stream
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .unwrap();
                // The CONNECT (its bytes do not matter here), then CONNACK: fixed header 0x20,
                // remaining length 3, no session present, reason 0x00 Success, no properties.
                let mut buf = [0u8; 4096];
                if matches!(stream.read(&mut buf), Ok(n) if n > 0) {
                    let _ = stream.write_all(&[0x20, 0x03, 0x00, 0x00, 0x00]);
                }
                count.fetch_add(1, Ordering::SeqCst);
                // Dropped: closed right after CONNACK.
            }
        });
        ClosingBroker {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ClosingBroker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept; the thread sees `stop` and ends.
        let _ = TcpStream::connect((Broker::HOST, self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The `N` of every "(attempt N)" in `log`, in order.
fn attempts(log: &str) -> Vec<u32> {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find("(attempt ")? + "(attempt ".len()..];
            rest[..rest.find(')')?].parse().ok()
        })
        .collect()
}

#[test]
fn backoff_lines_count_consecutive_failures_when_every_connection_is_closed_at_once() {
    let broker = ClosingBroker::start();
    let tokens = TokenDir::new();
    tokens.write(&fake_jwt(3600));
    let mut publisher = Publisher::builder()
        .arg("--host")
        .arg(Broker::HOST)
        .arg("--port")
        .arg(broker.port.to_string())
        .token_file(tokens.path())
        .client_id("edge-attempts")
        .args(["--qos", "1", "--interval-ms", "0", "--count", "5"])
        .args(["--backoff-floor-ms", "10", "--backoff-cap-ms", "40"])
        .spawn();
    let seen = wait_until(RUN_TIMEOUT, || {
        let found = attempts(&publisher.stderr());
        (found.len() >= 5).then_some(found)
    });
    publisher.kill();
    let seen = seen.unwrap_or_else(|| {
        panic!(
            "fewer than 5 backoff lines (connections accepted: {})\n{}",
            broker.accepted.load(Ordering::SeqCst),
            publisher.describe()
        )
    });
    // Each connection got its CONNACK, none got a message acknowledged: 2, 3, 4, ...
    let expected: Vec<u32> = (2..).take(seen.len()).collect();
    assert_eq!(seen, expected, "{}", publisher.describe());
}

// --- Checks the core makes (issue 16 items 3 and 5): they pass once `Config::validate()`
// --- lands with the new engine; until then the binary accepts these values.

#[test]

fn a_topic_with_a_control_character_exits_2_naming_the_topic() {
    let bed = TestBed::new();
    let log = refused_at_startup(&bed, "edge-control", &["--topic", "a\u{1}b"]);
    assert_says(&log, &["--topic"]);
}

#[test]

fn a_counter_that_would_overflow_exits_2_naming_start_and_count() {
    let bed = TestBed::new();
    let log = refused_at_startup(
        &bed,
        "edge-overflow",
        &["--start", "18446744073709551614", "--count", "3"],
    );
    assert_says(&log, &["--start", "--count"]);
}

#[test]

fn an_interval_beyond_the_bound_exits_2_naming_the_interval() {
    let bed = TestBed::new();
    let log = refused_at_startup(
        &bed,
        "edge-interval",
        &["--interval-ms", "18446744073709551615"],
    );
    assert_says(&log, &["--interval-ms"]);
}
