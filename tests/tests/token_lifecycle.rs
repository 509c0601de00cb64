//! Token lifecycle and zero-loss resilience (issue 4): the kubelet rotates the token, the broker
//! revokes it, it nears or passes its `exp`, the broker restarts, the network cuts connections,
//! the pod is stopped. In every case an independent subscriber must see every counter, in order,
//! with no gap; duplicates are allowed at QoS 1 only where a connection died with messages in
//! flight, and are counted.
//!
//! mosquitto keeps one password per user, so a rotation is acted out in two steps: the new token
//! goes into the projected volume, the publisher drains and sends DISCONNECT (`Received
//! DISCONNECT from <id>` in the broker log; `Client <id> disconnected.` is not used for that
//! because mosquitto logs it again for the offline session on every SIGHUP), its first attempts
//! with the new token are refused (CONNACK 0x87), then the test installs the new password (SIGHUP)
//! and the next attempt is accepted.
//!
//! Nothing here measures speed; every wait is bounded and polls a condition.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use nix::sys::signal::Signal;
use satmqtt_tests::expect::{self, lines_with, max_attempts};
use satmqtt_tests::{
    assert_no_token_leak, fake_jwt, Broker, BrokerLog, FaultProxy, Faults, Publisher, Sequence,
    Subscriber, TestBed, TokenDir,
};

const TOPIC: &str = "sampletopic";
const PREFIX: &str = "samplepayload";
/// Bound for a whole run on a loaded 2-core machine; runs take a few seconds.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound for one step (a rotation noticed, a reconnect, a subscriber catching up).
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `Received DISCONNECT from <id>`: the client sent DISCONNECT (logged once per session).
fn received_disconnect(id: &str) -> String {
    format!("Received DISCONNECT from {id}")
}

/// How many times the broker logged exactly `message`.
fn count(log: &BrokerLog, message: &str) -> usize {
    log.messages().filter(|m| *m == message).count()
}

/// Positions (line numbers) of the log lines that satisfy `wanted`.
fn positions(log: &BrokerLog, wanted: impl Fn(&str) -> bool) -> Vec<usize> {
    log.messages()
        .enumerate()
        .filter(|(_, m)| wanted(m))
        .map(|(i, _)| i)
        .collect()
}

/// Positions of the accepted CONNECTs of `id`.
fn connect_positions(log: &BrokerLog, id: &str) -> Vec<usize> {
    let suffix = format!(" as {id} (");
    positions(log, |m| {
        m.starts_with("New client connected from ") && m.contains(&suffix)
    })
}

/// The `exp` claim of a JWT.
fn jwt_exp(token: &str) -> u64 {
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["exp"].as_u64().unwrap()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The publisher's closing summary: `<what>: sent A, acknowledged B, duplicates D, rejected R,
/// next N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Summary {
    sent: u64,
    acked: u64,
    duplicates: u64,
    rejected: u64,
    next: u64,
}

/// Finds the last log line containing `what` (e.g. `finished:`) and parses its summary.
#[track_caller]
fn summary(publisher: &Publisher, what: &str) -> Summary {
    let stderr = publisher.stderr();
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no `{what}` line\n{}", publisher.describe()));
    let field = |name: &str| -> u64 {
        let rest = &line[line.find(&format!("{name} ")).unwrap_or_else(|| {
            panic!("no `{name}` in `{line}`");
        }) + name.len()
            + 1..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap()
    };
    Summary {
        sent: field("sent"),
        acked: field("acknowledged"),
        duplicates: field("duplicates"),
        rejected: field("rejected"),
        next: field("next"),
    }
}

/// Asserts the last log line is the summary `what` and returns it.
#[track_caller]
fn last_line_summary(publisher: &Publisher, what: &str) -> Summary {
    let last = publisher.last_log_line().unwrap_or_default();
    assert!(
        last.contains(what),
        "last log line is not `{what}`: {last}\n{}",
        publisher.describe()
    );
    summary(publisher, what)
}

/// Waits for a broker log condition, failing with both logs.
#[track_caller]
fn wait_log(broker: &Broker, publisher: &Publisher, what: &str, cond: impl Fn(&BrokerLog) -> bool) {
    expect::broker_log(broker, publisher, what, STEP_TIMEOUT, cond);
}

/// Waits until the subscriber holds at least `n` payloads.
#[track_caller]
fn wait_received(subscriber: &Subscriber, n: usize, publisher: &Publisher) {
    expect::received(subscriber, n, publisher, STEP_TIMEOUT);
}

// ---------------------------------------------------------------------------------------------
// 1. Kubelet-style rotation
// ---------------------------------------------------------------------------------------------

/// Three kubelet rotations (symlink swap of `..data`) during a QoS 1 run: each new token is seen
/// through inotify, the session drains, sends DISCONNECT and the next session uses the new
/// token; nothing is lost and nothing is sent twice.
#[test]
fn kubelet_rotation_moves_to_the_new_token_without_loss_or_duplicates() {
    const COUNT: u64 = 600;
    const ROTATIONS: usize = 3;
    let id = "kubelet-rotation";
    let bed = TestBed::new();
    let subscriber = bed.subscribe(TOPIC);
    let mut publisher = bed
        .publisher(id)
        .args(["--qos", "1", "--interval-ms", "5", "--count", "600"])
        .args(["--backoff-cap-ms", "200"])
        .spawn();
    let broker = &bed.broker;
    let mut tokens_used = vec![bed.token.clone()];

    for round in 1..=ROTATIONS {
        // Rotate at 100, 200, 300 of 600 messages (at most one per 5 ms): the run cannot finish
        // before the last rotation is noticed.
        wait_received(&subscriber, round * 100, &publisher);
        let fresh = fake_jwt(3600);
        bed.tokens.write(&fresh);
        wait_log(
            broker,
            &publisher,
            "DISCONNECT after the token change",
            |log| count(log, &received_disconnect(id)) >= round,
        );
        broker.set_sat_password(&fresh);
        wait_log(broker, &publisher, "a session with the new token", |log| {
            log.connects(id).len() > round
        });
        tokens_used.push(fresh);
    }

    publisher.wait_for_success(RUN_TIMEOUT);
    let done = last_line_summary(&publisher, "finished:");
    let payloads = subscriber.sync(SYNC_TIMEOUT);
    let seq = Sequence::parse(PREFIX, &payloads);
    seq.assert_contiguous(0, COUNT);
    assert_eq!(done.duplicates, 0, "{}", publisher.describe());
    assert_eq!((done.sent, done.acked, done.next), (COUNT, COUNT, COUNT));

    // Each rotation: session k ends with the client's DISCONNECT, then the password reload, then
    // session k+1 is accepted; nothing else connected as this client.
    let log = broker.events();
    let connects = connect_positions(&log, id);
    let disconnects = positions(&log, |m| m == received_disconnect(id));
    let reloads = positions(&log, |m| m == "Reloading config.");
    assert_eq!(connects.len(), ROTATIONS + 1, "{}", log.text());
    assert!(
        broker.wait_for_log(STEP_TIMEOUT, |log| count(log, &received_disconnect(id))
            == ROTATIONS + 1),
        "the last session did not end with DISCONNECT:\n{}",
        broker.log()
    );
    assert_eq!(reloads.len(), ROTATIONS, "{}", log.text());
    for k in 0..ROTATIONS {
        assert!(
            connects[k] < disconnects[k]
                && disconnects[k] < reloads[k]
                && reloads[k] < connects[k + 1],
            "rotation {}: expected connect < DISCONNECT < reload < next connect, got lines \
             {} {} {} {}\n{}",
            k + 1,
            connects[k],
            disconnects[k],
            reloads[k],
            connects[k + 1],
            log.text()
        );
    }
    assert_eq!(log.closed_without_disconnect(id), 0, "{}", log.text());

    let stderr = publisher.stderr();
    assert_eq!(
        lines_with(&stderr, "new token in"),
        ROTATIONS,
        "{}",
        publisher.describe()
    );
    assert!(stderr.contains("rotating the connection"), "{stderr}");
    assert_eq!(
        lines_with(&stderr, "rotated to the new token"),
        ROTATIONS,
        "{}",
        publisher.describe()
    );
    let output = publisher.output_text();
    for token in &tokens_used {
        assert_no_token_leak("pod-publisher output", &output, token);
    }
    eprintln!(
        "kubelet rotation: {ROTATIONS} rotations, {} refused attempt(s) with a token the broker \
         did not know yet",
        log.auth_rejections()
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Broker-side revocation
// ---------------------------------------------------------------------------------------------

/// The broker revokes the token in use (new password, SIGHUP: mosquitto drops the client with a
/// bare TCP close) at the moment the kubelet writes the new one: the publisher reconnects with
/// the new token and resends what was not acknowledged; no gap.
#[test]
fn broker_revoking_the_token_loses_nothing() {
    const COUNT: u64 = 1500;
    let id = "revoked";
    let bed = TestBed::new();
    let subscriber = bed.subscribe(TOPIC);
    // 1 ms apart, so the broker may drop the connection with messages in flight.
    let mut publisher = bed
        .publisher(id)
        .args(["--qos", "1", "--interval-ms", "1", "--count", "1500"])
        .args(["--backoff-cap-ms", "200"])
        .spawn();
    let broker = &bed.broker;

    // Revoke at 200 of 1500 messages (at most one per ms): well before the run can end.
    wait_received(&subscriber, 200, &publisher);
    let fresh = fake_jwt(3600);
    broker.set_sat_password(&fresh);
    bed.tokens.write(&fresh);

    publisher.wait_for_success(RUN_TIMEOUT);
    let done = last_line_summary(&publisher, "finished:");
    let payloads = subscriber.sync(SYNC_TIMEOUT);
    let seq = Sequence::parse(PREFIX, &payloads);
    let duplicates = seq.assert_no_loss(0, COUNT);
    assert!(
        duplicates <= done.duplicates,
        "subscriber saw {duplicates} duplicates, publisher resent only {}",
        done.duplicates
    );
    assert_eq!(done.next, COUNT);

    let log = broker.events();
    let connects = log.connects(id);
    assert_eq!(connects.len(), 2, "{}", log.text());
    // The first session was ended by the broker (the reload), not by a DISCONNECT of ours: the
    // only DISCONNECT the broker received is the last session's.
    let reload = positions(&log, |m| m == "Reloading config.")[0];
    let second = connect_positions(&log, id)[1];
    assert!(reload < second, "{}", log.text());
    assert!(
        broker.wait_for_log(STEP_TIMEOUT, |log| count(log, &received_disconnect(id))
            == 1),
        "{}",
        broker.log()
    );
    assert_eq!(count(&broker.events(), &received_disconnect(id)), 1);
    // How the publisher noticed: usually `broker closed the connection`; a write racing the
    // close gives `network error (PipeClosed)`.
    let stderr = publisher.stderr();
    let noticed = stderr
        .lines()
        .find(|l| l.contains("disconnected: "))
        .unwrap_or_else(|| panic!("no disconnection logged\n{}", publisher.describe()));
    eprintln!(
        "revocation: subscriber duplicates {duplicates}, publisher resent {}, refused attempts \
         {}; {noticed}",
        done.duplicates,
        log.auth_rejections()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Expiry
// ---------------------------------------------------------------------------------------------

/// A token close to its `exp`: the publisher re-reads the file inside the expiry margin and moves
/// to the new token before `exp`, even when no directory event announces the new token.
///
/// The publisher is pointed at a symlink in another directory, so inotify (which watches the
/// directory of the configured path) never sees the kubelet's swap, and the re-stat fallback is
/// set to an hour: the only way to find the new token is the margin's re-read.
#[test]
fn rotation_inside_the_expiry_margin_happens_before_exp() {
    const MARGIN_S: u64 = 3;
    let id = "expiry-margin";
    // Build (or find) the binary before the clock starts: the token's lifetime is short.
    Publisher::binary();
    let old = fake_jwt(8);
    let exp = jwt_exp(&old);
    let broker = Broker::start(&old);
    let tokens = TokenDir::new();
    tokens.write(&old);
    let elsewhere = tempfile::tempdir().unwrap();
    let link = elsewhere.path().join("mqtt-client-token");
    std::os::unix::fs::symlink(tokens.path(), &link).unwrap();
    let subscriber = Subscriber::start(&broker, TOPIC);
    let mut publisher = Publisher::builder()
        .broker(&broker)
        .token_file(&link)
        .client_id(id)
        .args(["--qos", "1", "--interval-ms", "10", "--count", "0"])
        .args(["--expiry-margin-s", "3", "--token-restat-s", "3600"])
        .args(["--backoff-cap-ms", "200"])
        .spawn();

    wait_log(&broker, &publisher, "the first session", |log| {
        !log.connects(id).is_empty()
    });
    let fresh = fake_jwt(3600);
    tokens.write(&fresh);
    let written_at = unix_now();
    assert!(
        written_at + MARGIN_S < exp,
        "the machine is too slow for this test: the new token was written at {written_at}, \
         already inside the margin of exp {exp}"
    );

    // Times come from this test's clock, not from the broker log: mosquitto stamps a line with
    // the time its event loop last read the clock, which can be a second behind (seen: a
    // DISCONNECT sent at x.001 s logged as x - 1).
    let margin_starts = UNIX_EPOCH + Duration::from_secs(exp - MARGIN_S);
    let expires = UNIX_EPOCH + Duration::from_secs(exp);
    // Nothing announces the new token, so nothing may happen before the margin (the publisher
    // compares whole seconds: it rotates at exp - 3 s at the earliest). 300 ms of slack for
    // this test's polling.
    let quiet = (margin_starts - Duration::from_millis(300))
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let early = broker.wait_for_log(quiet, |log| count(log, &received_disconnect(id)) >= 1);
    assert!(
        !early,
        "rotated before the expiry margin (exp {exp} - {MARGIN_S} s): the new token was seen \
         some other way than the margin's re-read\n{}\n{}",
        broker.log(),
        publisher.describe()
    );
    wait_log(&broker, &publisher, "DISCONNECT inside the margin", |log| {
        count(log, &received_disconnect(id)) >= 1
    });
    broker.set_sat_password(&fresh);
    wait_log(&broker, &publisher, "a session with the new token", |log| {
        log.connects(id).len() >= 2
    });
    // The session started before this test saw it in the log.
    let seen = SystemTime::now();
    assert!(
        seen < expires,
        "the session with the new token was not up before the old token's exp {exp} (seen at \
         {seen:?})\n{}\n{}",
        broker.log(),
        publisher.describe()
    );
    let margin_left = expires.duration_since(seen).unwrap_or_default();

    wait_received(&subscriber, subscriber.payloads().len() + 20, &publisher);
    publisher.signal(Signal::SIGTERM);
    publisher.wait_for_success(STEP_TIMEOUT);
    let stopped = last_line_summary(&publisher, "stopped by signal:");
    assert_eq!(stopped.sent, stopped.acked, "{}", publisher.describe());
    assert_eq!(stopped.duplicates, 0);
    let payloads = subscriber.sync(SYNC_TIMEOUT);
    Sequence::parse(PREFIX, &payloads).assert_contiguous(0, stopped.next);

    let stderr = publisher.stderr();
    assert_eq!(lines_with(&stderr, "new token in"), 1, "{stderr}");
    assert_eq!(
        lines_with(&stderr, "rotated to the new token"),
        1,
        "{stderr}"
    );
    eprintln!("expiry margin: the session with the new token was up {margin_left:?} before exp");
}

/// A token already past its `exp` at start-up is never presented: the publisher says so and
/// waits; when the kubelet writes a fresh one, it connects and publishes.
#[test]
fn expired_token_is_never_presented_and_a_fresh_one_connects() {
    let id = "expired-at-start";
    let expired = fake_jwt(-60);
    let fresh = fake_jwt(3600);
    let broker = Broker::start(&fresh);
    let tokens = TokenDir::new();
    tokens.write(&expired);
    let subscriber = Subscriber::start(&broker, TOPIC);
    let connections_before = broker.events().tcp_connections();
    let mut publisher = Publisher::builder()
        .broker(&broker)
        .token_file(tokens.path())
        .client_id(id)
        .args(["--qos", "1", "--interval-ms", "0", "--count", "5"])
        .spawn();

    let said = satmqtt_tests::wait::wait_until(STEP_TIMEOUT, || {
        let stderr = publisher.stderr();
        (stderr.contains("expired") && stderr.contains("not connecting")).then_some(())
    });
    assert!(
        said.is_some(),
        "no `expired ... not connecting` line\n{}",
        publisher.describe()
    );
    let stderr = publisher.stderr();
    let path = tokens.path().display().to_string();
    assert!(
        stderr.contains(&path),
        "the message does not name {path}\n{stderr}"
    );
    assert_eq!(
        broker.events().tcp_connections(),
        connections_before,
        "the publisher connected with an expired token:\n{}",
        broker.log()
    );
    assert_eq!(
        publisher.wait_timeout(Duration::ZERO),
        None,
        "the publisher gave up\n{}",
        publisher.describe()
    );

    tokens.write(&fresh);
    let written = Instant::now();
    let connected = broker.wait_for_log(STEP_TIMEOUT, |log| !log.connects(id).is_empty());
    let recovery = written.elapsed();
    assert!(
        connected,
        "no session after the fresh token was written\n{}",
        publisher.describe()
    );
    publisher.wait_for_success(RUN_TIMEOUT);
    let payloads = subscriber.sync(SYNC_TIMEOUT);
    Sequence::parse(PREFIX, &payloads).assert_contiguous(0, 5);
    let log = broker.events();
    assert_eq!(log.connects(id).len(), 1, "{}", log.text());
    assert_eq!(log.auth_rejections(), 0, "{}", log.text());
    assert_eq!(
        log.tcp_connections(),
        connections_before + 2, // the publisher, and the subscriber's sync marker
        "{}",
        log.text()
    );
    let output = publisher.output_text();
    assert_no_token_leak("pod-publisher output", &output, &expired);
    assert_no_token_leak("pod-publisher output", &output, &fresh);
    eprintln!("expired token: connected {recovery:?} after the fresh token was written");
}

// ---------------------------------------------------------------------------------------------
// 4. Connections cut at random byte offsets
// ---------------------------------------------------------------------------------------------

/// A fault proxy cuts 25 connections at random byte offsets (inside CONNECT, CONNACK, PUBLISH or
/// PUBACK): the publisher reconnects after each and resends what was not acknowledged; the
/// subscriber sees every counter in order, and no more duplicates than the publisher resent.
#[test]
fn connections_cut_at_random_offsets_lose_nothing_at_qos1() {
    const COUNT: u64 = 2000;
    const CUTS: u64 = 25;
    let id = "cut-at-random";
    let bed = TestBed::new();
    let subscriber = bed.subscribe(TOPIC);
    let upstream: SocketAddr = (std::net::Ipv4Addr::LOCALHOST, bed.broker.port()).into();
    let proxy = FaultProxy::start(
        upstream,
        Faults {
            seed: None,
            // The CONNECT alone is about 750 bytes (the token); a PUBLISH and its PUBACK about 30.
            cut_after: 1..=2_400,
            max_cuts: CUTS,
        },
    );
    let mut publisher = Publisher::builder()
        .args(["--host", "127.0.0.1", "--port", &proxy.port().to_string()])
        .token_file(bed.tokens.path())
        .client_id(id)
        .args(["--qos", "1", "--interval-ms", "0", "--count", "2000"])
        .args(["--backoff-floor-ms", "20", "--backoff-cap-ms", "200"])
        .spawn();

    let exited = publisher.wait_timeout(RUN_TIMEOUT);
    let stats = proxy.stats();
    assert!(
        exited.is_some_and(|s| s.success()),
        "publisher did not finish ({exited:?}); proxy seed {}, {stats:?}\n{}",
        proxy.seed(),
        publisher.describe()
    );
    assert!(
        stats.cuts >= 20,
        "only {} cuts (seed {}): {stats:?}",
        stats.cuts,
        proxy.seed()
    );
    let done = last_line_summary(&publisher, "finished:");
    let payloads = subscriber.sync(SYNC_TIMEOUT);
    let seq = Sequence::parse(PREFIX, &payloads);
    let duplicates = seq.assert_no_loss(0, COUNT);
    assert!(
        duplicates <= done.duplicates,
        "subscriber saw {duplicates} duplicates but the publisher resent only {} (seed {})",
        done.duplicates,
        proxy.seed()
    );
    assert_eq!(done.next, COUNT);
    assert_eq!(done.sent, COUNT + done.duplicates);
    eprintln!(
        "fault proxy seed {}: {stats:?}; publisher sent {}, acknowledged {}, resent {}; \
         subscriber duplicates {duplicates}; broker sessions {}",
        proxy.seed(),
        done.sent,
        done.acked,
        done.duplicates,
        bed.broker.events().connects(id).len()
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Broker restart
// ---------------------------------------------------------------------------------------------

/// mosquitto is stopped (SIGTERM, it saves its database) and started again on the same port; a
/// subscriber with a persistent session gets everything, in order, across the restart.
#[test]
fn broker_restart_with_persistence_loses_nothing_at_qos1() {
    const COUNT: u64 = 600;
    let id = "broker-restart";
    let token = fake_jwt(3600);
    let mut broker = Broker::start_persistent(&token);
    let tokens = TokenDir::new();
    tokens.write(&token);
    let mut subscriber = Subscriber::start_persistent(&broker, TOPIC, "broker-restart-sub");
    let mut publisher = Publisher::builder()
        .broker(&broker)
        .token_file(tokens.path())
        .client_id(id)
        .args(["--qos", "1", "--interval-ms", "5", "--count", "600"])
        .args(["--backoff-floor-ms", "50", "--backoff-cap-ms", "200"])
        .spawn();

    wait_received(&subscriber, 150, &publisher);
    broker.stop();
    assert!(
        broker.persistence_path().exists(),
        "mosquitto saved no database:\n{}",
        broker.log()
    );
    let noticed = satmqtt_tests::wait::wait_until(STEP_TIMEOUT, || {
        publisher.stderr().contains("disconnected: ").then_some(())
    });
    assert!(
        noticed.is_some(),
        "the publisher did not notice the broker going away\n{}",
        publisher.describe()
    );
    broker.resume();

    publisher.wait_for_success(RUN_TIMEOUT);
    let done = last_line_summary(&publisher, "finished:");
    assert!(
        subscriber.is_running(),
        "mosquitto_sub exited on the restart"
    );
    let payloads = subscriber.sync(SYNC_TIMEOUT);
    let seq = Sequence::parse(PREFIX, &payloads);
    let duplicates = seq.assert_no_loss(0, COUNT);
    assert_eq!(done.next, COUNT);

    let log = broker.events();
    assert!(log.connects(id).len() >= 2, "{}", log.text());
    let sub_connects = log.connects("broker-restart-sub");
    assert!(sub_connects.len() >= 2, "{}", log.text());
    assert!(
        sub_connects.iter().all(|c| !c.clean_start),
        "{sub_connects:?}"
    );
    eprintln!(
        "broker restart: subscriber duplicates {duplicates}, publisher resent {}, publisher \
         sessions {}",
        done.duplicates,
        log.connects(id).len()
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Wrong token, then the right one
// ---------------------------------------------------------------------------------------------

/// A wrong token is retried with the documented backoff (the broker counts no more refusals than
/// floor 100 ms, doubling, jitter [d/2, d] allows in the time it took); a correct token written
/// into the volume lifts the backoff at once, without a restart.
/// (`token_handling.rs` checks the basic recovery; this checks its pacing.)
#[test]
fn wrong_token_is_paced_by_the_backoff_and_a_written_fix_lifts_it() {
    const REFUSALS_BEFORE_FIX: usize = 5;
    let id = "wrong-then-right";
    let accepted = fake_jwt(3600);
    let wrong = fake_jwt(3600);
    let broker = Broker::start(&accepted);
    let tokens = TokenDir::new();
    tokens.write(&wrong);
    let subscriber = Subscriber::start(&broker, TOPIC);
    let mut publisher = Publisher::builder()
        .broker(&broker)
        .token_file(tokens.path())
        .client_id(id)
        .args(["--qos", "1", "--interval-ms", "0", "--count", "3"])
        .spawn();

    // After 5 refusals the next delay is 1.6 to 3.2 s: a recovery within 1 s of the write can only
    // come from the write lifting the backoff.
    wait_log(&broker, &publisher, "five refusals", |log| {
        log.auth_rejections() >= REFUSALS_BEFORE_FIX
    });
    tokens.write(&accepted);
    let written = Instant::now();
    let bound = max_attempts(written - publisher.started(), 100, 60_000);
    let recovered = broker.wait_for_log(STEP_TIMEOUT, |log| !log.connects(id).is_empty());
    let recovery = written.elapsed();
    assert!(
        recovered,
        "no session after the fix\n{}\n{}",
        broker.log(),
        publisher.describe()
    );
    publisher.wait_for_success(RUN_TIMEOUT);
    let payloads = subscriber.sync(SYNC_TIMEOUT);
    Sequence::parse(PREFIX, &payloads).assert_contiguous(0, 3);

    let log = broker.events();
    let refusals = log.auth_rejections() as u64;
    assert!(
        (REFUSALS_BEFORE_FIX as u64..=bound).contains(&refusals),
        "{refusals} refused attempts; the backoff allows at most {bound} in {:?}\n{}",
        written - publisher.started(),
        log.text()
    );
    assert_eq!(log.connects(id).len(), 1, "{}", log.text());
    assert!(
        recovery < Duration::from_secs(1),
        "connected {recovery:?} after the correct token was written: the new token did not lift \
         the backoff\n{}",
        publisher.describe()
    );

    // The publisher's own account of each delay: the k-th refusal waits within [d/2, d],
    // d = min(100 ms · 2^k, 60 s).
    let stderr = publisher.stderr();
    let delays: Vec<u64> = stderr
        .lines()
        .filter(|l| l.contains("token rejected by the broker"))
        .map(|l| {
            let rest = &l[l.find("retrying in ").unwrap() + "retrying in ".len()..];
            rest.split(' ').next().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(delays.len() as u64, refusals, "{stderr}");
    for (k, &delay) in delays.iter().enumerate() {
        let ceiling = (100u64 << k).min(60_000);
        assert!(
            (ceiling - ceiling / 2..=ceiling).contains(&delay),
            "refusal {k}: delay {delay} ms outside [{}, {ceiling}]\n{stderr}",
            ceiling - ceiling / 2
        );
    }
    let output = publisher.output_text();
    assert_no_token_leak("pod-publisher output", &output, &wrong);
    assert_no_token_leak("pod-publisher output", &output, &accepted);
    eprintln!(
        "wrong token: {refusals} refusals (bound {bound}), connected {recovery:?} after the fix"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. SIGTERM
// ---------------------------------------------------------------------------------------------

/// SIGTERM during an endless QoS 1 run: the publisher drains, sends DISCONNECT and exits 0 within
/// a few seconds; everything it sent was acknowledged and arrived exactly once.
#[test]
fn sigterm_drains_disconnects_and_exits_zero() {
    let id = "sigterm";
    let bed = TestBed::new();
    let subscriber = bed.subscribe(TOPIC);
    let mut publisher = bed
        .publisher(id)
        .args(["--qos", "1", "--interval-ms", "1", "--count", "0"])
        .spawn();

    wait_received(&subscriber, 300, &publisher);
    publisher.signal(Signal::SIGTERM);
    let status = publisher.wait_timeout(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "not a clean exit within 10 s of SIGTERM: {status:?}\n{}",
        publisher.describe()
    );
    let stopped = last_line_summary(&publisher, "stopped by signal:");
    assert_eq!(stopped.sent, stopped.acked, "{}", publisher.describe());
    assert_eq!(stopped.duplicates, 0);
    assert_eq!(stopped.next, stopped.sent);
    assert!(
        bed.broker
            .wait_for_log(STEP_TIMEOUT, |log| count(log, &received_disconnect(id))
                == 1),
        "no DISCONNECT:\n{}",
        bed.broker.log()
    );
    let payloads = subscriber.sync(SYNC_TIMEOUT);
    Sequence::parse(PREFIX, &payloads).assert_contiguous(0, stopped.sent);
    assert_eq!(bed.broker.events().connects(id).len(), 1);
}
