//! K8S-SAT enhanced authentication (issue 12) against real brokers: mosquitto 2.0.11 with the
//! tests' K8S-SAT auth plugin, and the scripted fake broker (alone, or as a man-in-the-middle in
//! front of that mosquitto) for what mosquitto cannot be made to do.
//!
//! Every scenario is judged from the outside: an independent subscriber (counters: gaps,
//! duplicates, order), the plugin's decisions and mosquitto's connection log, or the bytes the
//! fake broker recorded. The publisher is the real `pod-publisher` binary.
//!
//! Behaviour pinned down here (the product's, see core/src/driver.rs):
//! - a kubelet rotation is presented in band (AUTH 0x19); the connection stays;
//! - with no directory event, the new token is found by the re-read inside the expiry margin
//!   and presented in band before `exp`;
//! - with no new token at all, the broker cuts the connection at `exp`; the publisher reports
//!   it, never presents the expired token, and connects as soon as a new one is written;
//! - a re-authentication still unanswered close to `exp` is abandoned for a new connection
//!   with the new token before `exp`;
//! - a refused re-authentication (mosquitto 2.0.11: CONNACK 0x87, then close) leads to new
//!   connections with the new token, paced by the backoff, until the broker takes it.
//!
//! Every wait is bounded and polls a condition.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use satmqtt_tests::expect::{self, lines_with, max_attempts};
use satmqtt_tests::fake_broker::{ConnectionLog, FakeBroker, Step, Tamper};
use satmqtt_tests::mqtt::{self, prop, ConnackProps, Packet, PacketType, Property};
use satmqtt_tests::plugin::token_tag;
use satmqtt_tests::wait::wait_until;
use satmqtt_tests::{
    assert_no_token_leak, fake_jwt, jwt_exp, Broker, BrokerLog, Publisher, PublisherBuilder,
    Sequence, Subscriber, TokenDir,
};

const TOPIC: &str = "sampletopic";
const PREFIX: &str = "samplepayload";
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A K8S-SAT broker that accepts `token`, a token volume holding it, and a subscriber.
struct Bed {
    broker: Broker,
    tokens: TokenDir,
    subscriber: Subscriber,
}

impl Bed {
    fn new(token: &str) -> Bed {
        // The `$sat` password is unused by K8S-SAT clients; the subscriber logs in with its own.
        let broker = Broker::start_k8s_sat(&fake_jwt(3600));
        broker.allow_k8s_token(token);
        let tokens = TokenDir::new();
        tokens.write(token);
        let subscriber = Subscriber::start(&broker, TOPIC);
        Bed {
            broker,
            tokens,
            subscriber,
        }
    }

    /// `pod-publisher --auth k8s-sat` on this broker and token file.
    fn publisher(&self, id: &str) -> PublisherBuilder {
        Publisher::builder()
            .broker(&self.broker)
            .token_file(self.tokens.path())
            .client_id(id)
            .args(["--auth", "k8s-sat"])
    }

    /// Kubelet rotation the plugin takes: allowed first, then written to the volume.
    fn rotate(&self, token: &str) {
        self.broker.allow_k8s_token(token);
        self.tokens.write(token);
    }
}

/// `pod-publisher --auth k8s-sat` pointed at the fake broker's port.
fn publisher_via(fake: &FakeBroker, tokens: &TokenDir, id: &str) -> PublisherBuilder {
    Publisher::builder()
        .args(["--host", Broker::HOST, "--port", &fake.port().to_string()])
        .token_file(tokens.path())
        .client_id(id)
        .args(["--auth", "k8s-sat"])
}

fn upstream(broker: &Broker) -> SocketAddr {
    (std::net::Ipv4Addr::LOCALHOST, broker.port()).into()
}

/// The counters of the last `stopped by signal:` / `finished:` line.
#[derive(Debug, Clone, Copy)]
struct Summary {
    sent: u64,
    acked: u64,
    duplicates: u64,
    next: u64,
}

#[track_caller]
fn summary(publisher: &Publisher, what: &str) -> Summary {
    let last = publisher.last_log_line().unwrap_or_default();
    assert!(
        last.contains(what),
        "the last log line is not `{what}`: {last}\n{}",
        publisher.describe()
    );
    let field = |name: &str| -> u64 {
        let at = last.find(&format!("{name} ")).unwrap() + name.len() + 1;
        let digits: String = last[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap()
    };
    Summary {
        sent: field("sent"),
        acked: field("acknowledged"),
        duplicates: field("duplicates"),
        next: field("next"),
    }
}

/// SIGTERM, a clean exit within `within`, and the closing summary.
#[track_caller]
fn stop(publisher: &mut Publisher, within: Duration) -> (Summary, Duration) {
    let asked = Instant::now();
    publisher.signal(Signal::SIGTERM);
    let status = publisher.wait_timeout(within);
    let took = asked.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "no clean exit within {within:?} of SIGTERM: {status:?}\n{}",
        publisher.describe()
    );
    (summary(publisher, "stopped by signal:"), took)
}

/// Every counter of `0..next` arrived in order; returns the duplicates (allowed only where a
/// connection died with messages in flight).
#[track_caller]
fn assert_no_gaps(subscriber: &Subscriber, next: u64) -> u64 {
    let payloads = subscriber.sync(SYNC_TIMEOUT);
    let seq = Sequence::parse(PREFIX, &payloads);
    seq.assert_no_loss(0, next)
}

/// The properties of a CONNECT (after its 10-byte MQTT v5 variable header) or an AUTH.
fn props(packet: &Packet) -> Vec<Property> {
    match packet.kind() {
        PacketType::Connect => mqtt::parse_properties(&packet.body()[10..]).unwrap().0,
        _ => packet.properties().unwrap(),
    }
}

fn auth_method(packet: &Packet) -> Option<String> {
    props(packet).into_iter().find_map(|p| match p {
        Property::Str(id, s) if id == prop::AUTH_METHOD => Some(s),
        _ => None,
    })
}

/// Whether the packet's Authentication Data is exactly `token` (compared, never printed).
fn carries_token(packet: &Packet, token: &str) -> bool {
    props(packet).into_iter().any(|p| match p {
        Property::Bin(id, data) => id == prop::AUTH_DATA && data == token.as_bytes(),
        _ => false,
    })
}

/// The packet types of a fake-broker connection (for failure messages: no token bytes).
fn kinds(conn: &ConnectionLog) -> Vec<PacketType> {
    conn.packets.iter().map(|p| p.kind()).collect()
}

/// A K8S-SAT CONNECT: method K8S-SAT, no user name or password flag.
#[track_caller]
fn assert_k8s_sat_connect(packet: &Packet) {
    assert_eq!(packet.kind(), PacketType::Connect);
    assert_eq!(auth_method(packet).as_deref(), Some("K8S-SAT"));
    assert_eq!(packet.body()[7] & 0xC0, 0, "user name or password flag set");
}

/// A tamper that passes everything except the broker's packets `drop` picks.
fn tamper_with(mut change: impl FnMut(&Packet) -> Option<Vec<Vec<u8>>> + Send + 'static) -> Tamper {
    Box::new(move |p: &Packet| change(p).unwrap_or_else(|| vec![p.raw.clone()]))
}

/// Waits for a broker log condition, failing with both logs.
#[track_caller]
fn wait_log(broker: &Broker, publisher: &Publisher, what: &str, cond: impl Fn(&BrokerLog) -> bool) {
    expect::broker_log(broker, publisher, what, STEP_TIMEOUT, cond);
}

/// Waits until the publisher's log has a line containing `needle`.
#[track_caller]
fn wait_stderr(publisher: &Publisher, needle: &str) {
    expect::stderr(publisher, needle, STEP_TIMEOUT);
}

/// Waits until the subscriber holds at least `n` payloads.
#[track_caller]
fn wait_received(subscriber: &Subscriber, n: usize, publisher: &Publisher) {
    expect::received(subscriber, n, publisher, STEP_TIMEOUT);
}

// ---------------------------------------------------------------------------------------------
// 1. Connect with K8S-SAT
// ---------------------------------------------------------------------------------------------

/// `--auth k8s-sat`: CONNECT carries method K8S-SAT and the token, no user name; the plugin
/// accepts it and every message arrives.
#[test]
fn auth_flag_connects_with_k8s_sat_and_no_user_name() {
    let id = "k8s-connect";
    let token = fake_jwt(3600);
    let bed = Bed::new(&token);
    let mut publisher = bed
        .publisher(id)
        .args(["--qos", "1", "--interval-ms", "0", "--count", "20"])
        .spawn();
    publisher.wait_for_success(STEP_TIMEOUT * 2);
    assert_eq!(summary(&publisher, "finished:").next, 20);
    assert_eq!(assert_no_gaps(&bed.subscriber, 20), 0);

    let log = bed.broker.events();
    let connects = log.connects(id);
    assert_eq!(connects.len(), 1, "{}", log.text());
    assert!(
        connects[0].is_mqtt5() && connects[0].username.is_none(),
        "{connects:?}"
    );
    let decisions = log.k8s_sat_decisions();
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let d = &decisions[0];
    assert!(
        d.accepted && !d.reauth && d.method == "K8S-SAT" && d.client_id == id,
        "{d:?}"
    );
    assert_eq!(d.token_tag, Some(token_tag(token.as_bytes())));
    let stderr = publisher.stderr();
    assert!(
        stderr.contains("login scheme k8s-sat (--auth/SATMQTT_AUTH)"),
        "{stderr}"
    );
    assert_no_token_leak("pod-publisher output", &publisher.output_text(), &token);
}

/// `AIO_SAT_FILE` alone (no --auth, no --token-file) selects K8S-SAT, and the start-up log says
/// why.
#[test]
fn aio_sat_file_alone_selects_k8s_sat() {
    let id = "k8s-aio-env";
    let token = fake_jwt(3600);
    let bed = Bed::new(&token);
    let mut publisher = Publisher::builder()
        .broker(&bed.broker)
        .client_id(id)
        .env("AIO_SAT_FILE", bed.tokens.path())
        .args(["--qos", "1", "--interval-ms", "0", "--count", "5"])
        .spawn();
    publisher.wait_for_success(STEP_TIMEOUT * 2);
    assert_eq!(assert_no_gaps(&bed.subscriber, 5), 0);
    let stderr = publisher.stderr();
    assert!(
        stderr.contains("login scheme k8s-sat (the token file comes from AIO_SAT_FILE)"),
        "{stderr}"
    );
    let log = bed.broker.events();
    assert_eq!(log.connects(id).len(), 1, "{}", log.text());
    assert_eq!(log.connects(id)[0].username, None);
    let d = log.k8s_sat_decisions();
    assert!(
        d.len() == 1 && d[0].accepted && d[0].method == "K8S-SAT",
        "{d:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Kubelet rotations, in band
// ---------------------------------------------------------------------------------------------

/// 20 kubelet rotations at 50 msg/s QoS 1: each is an accepted AUTH 0x19 on the one connection;
/// the subscriber sees every counter exactly once, in order.
#[test]
fn twenty_rotations_reauthenticate_on_one_connection_without_gaps_or_duplicates() {
    const ROTATIONS: usize = 20;
    let id = "k8s-rotations";
    let first = fake_jwt(3600);
    let bed = Bed::new(&first);
    let mut publisher = bed
        .publisher(id)
        .args(["--qos", "1", "--interval-ms", "20", "--count", "0"])
        .spawn();
    let broker = &bed.broker;
    wait_received(&bed.subscriber, 10, &publisher);
    let mut used = vec![first];
    for round in 1..=ROTATIONS {
        let fresh = fake_jwt(3600 + round as i64);
        bed.rotate(&fresh);
        let tag = token_tag(fresh.as_bytes());
        wait_log(broker, &publisher, "the re-authentication", |log| {
            log.k8s_sat_decisions()
                .iter()
                .any(|d| d.reauth && d.token_tag.as_deref() == Some(tag.as_str()))
        });
        used.push(fresh);
        // Publishing goes on between rotations.
        let have = bed.subscriber.payloads().len();
        wait_received(&bed.subscriber, have + 3, &publisher);
    }
    let (done, _) = stop(&mut publisher, Duration::from_secs(10));
    assert_eq!(
        (done.sent, done.acked, done.duplicates),
        (done.next, done.next, 0)
    );
    assert_eq!(assert_no_gaps(&bed.subscriber, done.next), 0);

    let log = broker.events();
    assert_eq!(log.connects(id).len(), 1, "{}", log.text());
    let reauths: Vec<_> = log
        .k8s_sat_decisions()
        .into_iter()
        .filter(|d| d.reauth)
        .collect();
    assert_eq!(reauths.len(), ROTATIONS, "{reauths:?}");
    assert!(
        reauths.iter().all(|d| d.accepted && d.client_id == id),
        "{reauths:?}"
    );
    for (d, token) in reauths.iter().zip(&used[1..]) {
        assert_eq!(d.token_tag, Some(token_tag(token.as_bytes())));
    }
    let stderr = publisher.stderr();
    assert_eq!(
        lines_with(&stderr, "re-authenticated"),
        ROTATIONS,
        "{stderr}"
    );
    assert_eq!(lines_with(&stderr, "disconnected:"), 1, "{stderr}");
    let output = publisher.output_text();
    for token in &used {
        assert_no_token_leak("pod-publisher output", &output, token);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Expiry
// ---------------------------------------------------------------------------------------------

/// No directory event announces the new token (the publisher reads it through a symlink in
/// another directory; re-stat every hour): the re-read inside the expiry margin finds it and
/// presents it in band before `exp`; the old token is never cut, the connection stays.
#[test]
fn expiry_margin_reread_reauthenticates_before_exp() {
    const MARGIN_S: i64 = 3;
    let id = "k8s-expiry-reread";
    Publisher::binary();
    let old = fake_jwt(8);
    let exp = jwt_exp(&old).unwrap();
    let bed = Bed::new(&old);
    let elsewhere = tempfile::tempdir().unwrap();
    let link = elsewhere.path().join("mqtt-client-token");
    std::os::unix::fs::symlink(bed.tokens.path(), &link).unwrap();
    let mut publisher = Publisher::builder()
        .broker(&bed.broker)
        .token_file(&link)
        .client_id(id)
        .args([
            "--auth",
            "k8s-sat",
            "--qos",
            "1",
            "--interval-ms",
            "20",
            "--count",
            "0",
        ])
        .args(["--expiry-margin-s", "3", "--token-restat-s", "3600"])
        .spawn();
    wait_received(&bed.subscriber, 10, &publisher);
    let fresh = fake_jwt(3600);
    bed.rotate(&fresh);
    assert!(
        unix_now() + MARGIN_S < exp,
        "the machine is too slow for this test: the new token was written inside the margin"
    );
    // Nothing may happen before the margin (whole seconds; 300 ms slack for this polling).
    let margin_starts = UNIX_EPOCH + Duration::from_secs((exp - MARGIN_S) as u64);
    let quiet = (margin_starts - Duration::from_millis(300))
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let early = bed.broker.wait_for_log(quiet, |log| {
        log.k8s_sat_decisions().iter().any(|d| d.reauth)
    });
    assert!(
        !early,
        "re-authenticated before the margin\n{}",
        publisher.describe()
    );
    wait_log(&bed.broker, &publisher, "the re-authentication", |log| {
        log.k8s_sat_decisions()
            .iter()
            .any(|d| d.reauth && d.accepted)
    });
    let at = unix_now();
    assert!(at < exp, "re-authenticated at {at}, not before exp {exp}");
    // Past the old token's exp: still the one connection, nobody kicked.
    let have = bed.subscriber.payloads().len();
    let _ = wait_until(Duration::from_secs(4), || {
        (unix_now() > exp + 1).then_some(())
    });
    wait_received(&bed.subscriber, have + 20, &publisher);
    let (done, _) = stop(&mut publisher, Duration::from_secs(10));
    assert_eq!(done.duplicates, 0);
    assert_eq!(assert_no_gaps(&bed.subscriber, done.next), 0);
    let log = bed.broker.events();
    assert_eq!(log.connects(id).len(), 1, "{}", log.text());
    assert_eq!(log.k8s_sat_kicks(id), 0, "{}", log.text());
    let stderr = publisher.stderr();
    assert_eq!(lines_with(&stderr, "re-authenticated"), 1, "{stderr}");
}

/// No new token before `exp`: the publisher warns inside the margin, the broker cuts it at
/// `exp` (DISCONNECT 0x98), the publisher reports that and waits without presenting the expired
/// token; a new token written then is used at once, and nothing is lost.
#[test]
fn token_expiring_without_a_new_one_is_cut_then_a_new_token_resumes_without_gaps() {
    let id = "k8s-expiry-cut";
    Publisher::binary();
    let old = fake_jwt(5);
    let exp = jwt_exp(&old).unwrap();
    let bed = Bed::new(&old);
    let mut publisher = bed
        .publisher(id)
        .args(["--qos", "1", "--interval-ms", "20", "--count", "0"])
        .args(["--expiry-margin-s", "2", "--backoff-cap-ms", "500"])
        .spawn();
    wait_received(&bed.subscriber, 5, &publisher);
    wait_stderr(&publisher, "no new one has appeared");
    wait_log(&bed.broker, &publisher, "the kick at exp", |log| {
        log.k8s_sat_kicks(id) == 1
    });
    // Usually `broker sent DISCONNECT 0x98`; when a PUBLISH of ours crosses the broker's close,
    // the RST it earns can discard the unread DISCONNECT, and the end reads as a network error.
    wait_stderr(&publisher, "disconnected: ");
    wait_stderr(&publisher, "not connecting with it");
    // It keeps waiting: one more look at the volume passes with no connection attempt.
    let tcp = bed.broker.events().tcp_connections();
    let looks = lines_with(&publisher.stderr(), "not connecting with it");
    let again = wait_until(STEP_TIMEOUT, || {
        (lines_with(&publisher.stderr(), "not connecting with it") > looks).then_some(())
    });
    assert!(again.is_some(), "{}", publisher.describe());
    assert_eq!(
        bed.broker.events().tcp_connections(),
        tcp,
        "{}",
        bed.broker.log()
    );
    assert_eq!(
        publisher.wait_timeout(Duration::ZERO),
        None,
        "{}",
        publisher.describe()
    );

    let fresh = fake_jwt(3600);
    bed.rotate(&fresh);
    wait_log(
        &bed.broker,
        &publisher,
        "a connection with the new token",
        |log| log.connects(id).len() == 2,
    );
    let have = bed.subscriber.payloads().len();
    wait_received(&bed.subscriber, have + 10, &publisher);
    let (done, _) = stop(&mut publisher, Duration::from_secs(10));
    let duplicates = assert_no_gaps(&bed.subscriber, done.next);
    assert!(
        duplicates <= done.duplicates,
        "{duplicates} > {}",
        done.duplicates
    );

    let log = bed.broker.events();
    let decisions = log.k8s_sat_decisions();
    assert!(
        decisions.iter().all(|d| d.accepted),
        "a token was refused (the expired one presented?): {decisions:?}"
    );
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    assert_eq!(decisions[1].token_tag, Some(token_tag(fresh.as_bytes())));
    let stderr = publisher.stderr();
    let path = bed.tokens.path().display().to_string();
    let line = stderr
        .lines()
        .find(|l| l.contains("not connecting with it"))
        .unwrap();
    assert!(line.contains(&path), "{line}");
    assert!(unix_now() >= exp);
    assert_no_token_leak("pod-publisher output", &publisher.output_text(), &old);
}

// ---------------------------------------------------------------------------------------------
// 4. Re-authentication refused
// ---------------------------------------------------------------------------------------------

/// The kubelet writes a token the broker does not (yet) take: mosquitto 2.0.11 refuses the
/// AUTH 0x19 with CONNACK 0x87 and closes; the publisher says so and reconnects with the new
/// token (refused, paced by the backoff) until the broker takes it; nothing is lost.
#[test]
fn refused_reauthentication_moves_to_a_new_connection_without_gaps() {
    let id = "k8s-reauth-refused";
    let first = fake_jwt(3600);
    let bed = Bed::new(&first);
    let mut publisher = bed
        .publisher(id)
        .args(["--qos", "1", "--interval-ms", "20", "--count", "0"])
        .args(["--backoff-cap-ms", "400"])
        .spawn();
    let broker = &bed.broker;
    wait_received(&bed.subscriber, 20, &publisher);
    let fresh = fake_jwt(3600);
    let tag = token_tag(fresh.as_bytes());
    bed.tokens.write(&fresh);
    wait_log(broker, &publisher, "the refused re-authentication", |log| {
        log.k8s_sat_decisions()
            .iter()
            .any(|d| d.reauth && !d.accepted)
    });
    wait_log(broker, &publisher, "a CONNECT with the new token", |log| {
        log.k8s_sat_decisions()
            .iter()
            .any(|d| !d.reauth && !d.accepted && d.token_tag.as_deref() == Some(tag.as_str()))
    });
    broker.allow_k8s_token(&fresh);
    wait_log(broker, &publisher, "the second connection", |log| {
        log.connects(id).len() == 2
    });
    let have = bed.subscriber.payloads().len();
    wait_received(&bed.subscriber, have + 10, &publisher);
    let (done, _) = stop(&mut publisher, Duration::from_secs(10));
    let duplicates = assert_no_gaps(&bed.subscriber, done.next);
    assert!(
        duplicates <= done.duplicates,
        "{duplicates} > {}",
        done.duplicates
    );

    let log = broker.events();
    let d = log.k8s_sat_decisions();
    // After the refused AUTH 0x19, only the new token is presented.
    let refused_at = d.iter().position(|d| d.reauth).unwrap();
    assert!(
        d[refused_at + 1..]
            .iter()
            .all(|d| !d.reauth && d.token_tag.as_deref() == Some(tag.as_str())),
        "{d:?}"
    );
    assert!(d.last().unwrap().accepted);
    let stderr = publisher.stderr();
    assert!(
        stderr.contains("re-authentication refused: 0x87")
            && stderr.contains("the next connection presents the new token"),
        "{stderr}"
    );
    assert_no_token_leak("pod-publisher output", &publisher.output_text(), &fresh);
}

// ---------------------------------------------------------------------------------------------
// 5. Wrong token at CONNECT
// ---------------------------------------------------------------------------------------------

/// A token the broker never takes: refusals are paced by the backoff (floor 100 ms, doubling,
/// jitter [d/2, d]), each reported with the token file's path and never the token.
#[test]
fn wrong_token_at_connect_is_retried_with_bounded_backoff() {
    let id = "k8s-wrong";
    let bed = Bed::new(&fake_jwt(3600));
    let wrong = fake_jwt(3600);
    bed.tokens.write(&wrong);
    let mut publisher = bed
        .publisher(id)
        .args(["--qos", "1", "--interval-ms", "0", "--count", "3"])
        .spawn();
    let refused = |log: &BrokerLog| {
        log.k8s_sat_decisions()
            .iter()
            .filter(|d| !d.accepted && d.refusal.as_deref() == Some("unknown"))
            .count()
    };
    // Six refusals take at least 50 + 100 + 200 + 400 + 800 ms with this backoff.
    wait_log(&bed.broker, &publisher, "six refusals", |log| {
        refused(log) >= 6
    });
    // Counted before the elapsed time is taken: the bound can only be generous.
    let count = refused(&bed.broker.events());
    let bound = max_attempts(publisher.started().elapsed(), 100, 60_000);
    assert!(
        count as u64 <= bound,
        "{count} refusals, the backoff allows {bound}\n{}",
        bed.broker.log()
    );
    publisher.kill();
    let stderr = publisher.stderr();
    let path = bed.tokens.path().display().to_string();
    let lines: Vec<_> = stderr
        .lines()
        .filter(|l| l.contains("token rejected by the broker (CONNACK 0x87"))
        .collect();
    assert!(lines.len() >= 5, "{stderr}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains(&path) && l.contains("retrying in")),
        "{stderr}"
    );
    assert_no_token_leak("pod-publisher output", &publisher.output_text(), &wrong);
    assert!(bed.subscriber.sync(SYNC_TIMEOUT).is_empty());
    assert!(bed.broker.events().connects(id).is_empty());
}

// ---------------------------------------------------------------------------------------------
// 6. SIGTERM while a re-authentication is pending
// ---------------------------------------------------------------------------------------------

/// The broker's answer to AUTH 0x19 never arrives (the fake broker in front of mosquitto drops
/// it): SIGTERM drains, DISCONNECT is the last packet, exit 0 long before the re-auth timeout.
#[test]
fn sigterm_during_a_pending_reauth_drains_and_disconnects() {
    let id = "k8s-sigterm-pending";
    let first = fake_jwt(3600);
    let bed = Bed::new(&first);
    let up = upstream(&bed.broker);
    let fake = FakeBroker::start_same(move || {
        vec![Step::Proxy {
            upstream: up,
            tamper: Some(tamper_with(|p| {
                (p.kind() == PacketType::Auth).then(Vec::new)
            })),
        }]
    });
    let mut publisher = publisher_via(&fake, &bed.tokens, id)
        .args(["--qos", "1", "--interval-ms", "20", "--count", "0"])
        .spawn();
    wait_received(&bed.subscriber, 10, &publisher);
    let fresh = fake_jwt(3600);
    bed.rotate(&fresh);
    assert!(
        fake.wait_for_client_packet(0, PacketType::Auth, STEP_TIMEOUT)
            .is_some(),
        "no AUTH 0x19\n{}",
        publisher.describe()
    );
    // Publishing goes on while it is pending.
    let have = bed.subscriber.payloads().len();
    wait_received(&bed.subscriber, have + 5, &publisher);
    let (done, took) = stop(&mut publisher, Duration::from_secs(5));
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(
        (done.sent, done.acked, done.duplicates),
        (done.next, done.next, 0)
    );
    assert_eq!(assert_no_gaps(&bed.subscriber, done.next), 0);

    let conn = fake.connection(0).unwrap();
    let last = conn.packets.last().unwrap();
    assert_eq!(last.kind(), PacketType::Disconnect, "{:?}", kinds(&conn));
    assert!(fake.wait_for_client_close(0, STEP_TIMEOUT).is_some());
    assert_eq!(last.packet.reason(), 0x00);
    let auths = conn.packets_of(PacketType::Auth);
    assert_eq!(auths.len(), 1);
    assert_eq!(auths[0].packet.reason(), 0x19);
    assert_eq!(fake.connection_count(), 1);
    let stderr = publisher.stderr();
    assert!(
        stderr.contains("re-authenticating with the new token"),
        "{stderr}"
    );
    assert_eq!(lines_with(&stderr, "re-authenticated"), 0, "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// 7. What only the fake broker can do
// ---------------------------------------------------------------------------------------------

/// The first answer to AUTH 0x19 is replaced by AUTH 0x18 (try later): the publisher retries
/// after a pause on the same connection, the second try is accepted, publishing never stops.
#[test]
fn auth_0x18_is_retried_on_the_same_connection() {
    let id = "k8s-auth-continue";
    let first = fake_jwt(3600);
    let bed = Bed::new(&first);
    let up = upstream(&bed.broker);
    let fake = FakeBroker::start_same(move || {
        let mut answered = 0;
        vec![Step::Proxy {
            upstream: up,
            tamper: Some(tamper_with(move |p| {
                if p.kind() != PacketType::Auth {
                    return None;
                }
                answered += 1;
                (answered == 1).then(|| vec![mqtt::auth(0x18, Some("K8S-SAT"), None)])
            })),
        }]
    });
    let mut publisher = publisher_via(&fake, &bed.tokens, id)
        .args(["--qos", "1", "--interval-ms", "20", "--count", "0"])
        .spawn();
    wait_received(&bed.subscriber, 10, &publisher);
    let fresh = fake_jwt(3600);
    bed.rotate(&fresh);
    wait_stderr(&publisher, "re-authenticated");
    let have = bed.subscriber.payloads().len();
    wait_received(&bed.subscriber, have + 10, &publisher);
    let (done, _) = stop(&mut publisher, Duration::from_secs(10));
    assert_eq!(done.duplicates, 0);
    assert_eq!(assert_no_gaps(&bed.subscriber, done.next), 0);

    assert_eq!(fake.connection_count(), 1);
    let conn = fake.connection(0).unwrap();
    let auths = conn.packets_of(PacketType::Auth);
    assert_eq!(auths.len(), 2, "{:?}", kinds(&conn));
    for a in &auths {
        assert_eq!(a.packet.reason(), 0x19);
        assert!(
            carries_token(&a.packet, &fresh),
            "AUTH 0x19 without the new token"
        );
    }
    // Publishing went on between the two tries.
    let between = conn
        .packets
        .iter()
        .filter(|p| p.kind() == PacketType::Publish && p.at > auths[0].at && p.at < auths[1].at)
        .count();
    assert!(between > 0, "no PUBLISH between the two AUTH 0x19");
    let stderr = publisher.stderr();
    assert!(
        stderr.contains("asked to re-authenticate later (AUTH 0x18)"),
        "{stderr}"
    );
    assert_eq!(lines_with(&stderr, "re-authenticated"), 1, "{stderr}");
    assert_eq!(bed.broker.events().connects(id).len(), 1);
}

/// CONNECT answered by an AUTH 0x18 challenge: an error said in words, retried with backoff.
#[test]
fn auth_challenge_at_connect_is_reported_and_retried_with_backoff() {
    let fake = FakeBroker::start_same(|| {
        vec![
            Step::Expect(PacketType::Connect),
            Step::Send(mqtt::auth(0x18, Some("K8S-SAT"), Some(b"challenge"))),
        ]
    });
    let tokens = TokenDir::new();
    let token = fake_jwt(3600);
    tokens.write(&token);
    let mut publisher = publisher_via(&fake, &tokens, "k8s-challenge")
        .args([
            "--count",
            "3",
            "--backoff-floor-ms",
            "100",
            "--backoff-cap-ms",
            "400",
        ])
        .spawn();
    assert!(
        fake.wait_for_connections(4, STEP_TIMEOUT),
        "{}",
        publisher.describe()
    );
    let elapsed = fake.accept_times()[0].elapsed();
    let attempts = fake.connection_count();
    publisher.kill();
    assert!(
        attempts as u64 <= max_attempts(elapsed, 100, 400) + 1,
        "{attempts} attempts in {elapsed:?}"
    );
    for conn in fake.connections() {
        assert_k8s_sat_connect(&conn.packets[0].packet);
        assert!(carries_token(&conn.packets[0].packet, &token));
    }
    let stderr = publisher.stderr();
    let lines = lines_with(&stderr, "answered CONNECT with an AUTH challenge (0x18)");
    assert!(lines >= 3, "{stderr}");
    assert!(stderr.contains("reconnecting in"), "{stderr}");
    assert_no_token_leak("pod-publisher output", &publisher.output_text(), &token);
}

/// A broker without enhanced authentication (plain mosquitto, no plugin) answers CONNACK 0x8C:
/// the message says it does not take this login scheme.
#[test]
fn connack_0x8c_says_the_broker_does_not_take_this_scheme() {
    let token = fake_jwt(3600);
    let broker = Broker::start(&token);
    let tokens = TokenDir::new();
    tokens.write(&token);
    let subscriber = Subscriber::start(&broker, TOPIC);
    let mut publisher = Publisher::builder()
        .broker(&broker)
        .token_file(tokens.path())
        .client_id("k8s-no-enhanced")
        .args(["--auth", "k8s-sat", "--count", "3"])
        .spawn();
    wait_stderr(
        &publisher,
        "does not take this login scheme (try the other --auth)",
    );
    publisher.kill();
    assert!(
        publisher.stderr().contains("CONNACK 0x8c"),
        "{}",
        publisher.describe()
    );
    assert!(broker.events().connects("k8s-no-enhanced").is_empty());
    assert!(subscriber.sync(SYNC_TIMEOUT).is_empty());

    // The fake broker's CONNACK 0x8C with a reason string reads the same.
    let fake = FakeBroker::start_same(|| {
        vec![
            Step::Expect(PacketType::Connect),
            Step::Send(mqtt::connack(
                0x8C,
                false,
                &ConnackProps {
                    reason_string: Some("no enhanced auth".into()),
                    ..ConnackProps::default()
                },
            )),
        ]
    });
    let mut publisher = publisher_via(&fake, &tokens, "k8s-no-enhanced-fake")
        .args(["--count", "3"])
        .spawn();
    wait_stderr(&publisher, "does not take this login scheme");
    publisher.kill();
}

/// A new token is offered in band but the answer never comes (the fake broker in front of
/// mosquitto drops it) and the token in use expires before the re-auth timeout: the publisher
/// moves to a new connection with the new token before `exp`, so the broker never has to cut it.
#[test]
fn pending_reauth_near_exp_moves_to_a_new_connection_before_exp() {
    let id = "k8s-guard-exp";
    Publisher::binary();
    let old = fake_jwt(7);
    let exp = jwt_exp(&old).unwrap();
    let bed = Bed::new(&old);
    let up = upstream(&bed.broker);
    let fake = FakeBroker::start_same(move || {
        vec![Step::Proxy {
            upstream: up,
            tamper: Some(tamper_with(|p| {
                (p.kind() == PacketType::Auth).then(Vec::new)
            })),
        }]
    });
    let mut publisher = publisher_via(&fake, &bed.tokens, id)
        .args(["--qos", "1", "--interval-ms", "20", "--count", "0"])
        .args(["--expiry-margin-s", "3"])
        .spawn();
    wait_received(&bed.subscriber, 5, &publisher);
    let fresh = fake_jwt(3600);
    bed.rotate(&fresh);
    assert!(
        fake.wait_for_client_packet(0, PacketType::Auth, STEP_TIMEOUT)
            .is_some(),
        "no AUTH 0x19\n{}",
        publisher.describe()
    );
    assert!(
        fake.wait_for_connections(2, STEP_TIMEOUT),
        "{}",
        publisher.describe()
    );
    let at = unix_now();
    assert!(
        at < exp,
        "the new connection came at {at}, not before exp {exp}\n{}",
        publisher.describe()
    );
    let have = bed.subscriber.payloads().len();
    wait_received(&bed.subscriber, have + 10, &publisher);
    let (done, _) = stop(&mut publisher, Duration::from_secs(10));
    let duplicates = assert_no_gaps(&bed.subscriber, done.next);
    assert!(
        duplicates <= done.duplicates,
        "{duplicates} > {}",
        done.duplicates
    );

    let first = fake.connection(0).unwrap();
    let last = first.packets.last().unwrap();
    assert_eq!(last.kind(), PacketType::Disconnect, "{:?}", kinds(&first));
    let second = fake.connection(1).unwrap();
    assert_k8s_sat_connect(&second.packets[0].packet);
    assert!(
        carries_token(&second.packets[0].packet, &fresh),
        "the new connection does not carry the new token"
    );
    assert_eq!(fake.connection_count(), 2);
    assert_eq!(bed.broker.events().k8s_sat_kicks(id), 0);
    let stderr = publisher.stderr();
    assert!(
        stderr.contains("disconnected: the token in use is about to expire, DISCONNECT sent"),
        "{stderr}"
    );
}

/// The AIO broker closes TCP silently at `exp` (here: mosquitto's DISCONNECT 0x98 dropped by the
/// fake broker in front of it): the publisher notices, never presents the expired token, and
/// reconnects with the new token once written; nothing is lost.
#[test]
fn silent_close_at_exp_reconnects_with_the_new_token_without_gaps() {
    let id = "k8s-silent-close";
    Publisher::binary();
    let old = fake_jwt(6);
    let bed = Bed::new(&old);
    let up = upstream(&bed.broker);
    let fake = FakeBroker::start_same(move || {
        vec![Step::Proxy {
            upstream: up,
            tamper: Some(tamper_with(|p| {
                (p.kind() == PacketType::Disconnect).then(Vec::new)
            })),
        }]
    });
    let mut publisher = publisher_via(&fake, &bed.tokens, id)
        .args(["--qos", "1", "--interval-ms", "20", "--count", "0"])
        .args(["--expiry-margin-s", "2", "--backoff-cap-ms", "500"])
        .spawn();
    wait_received(&bed.subscriber, 5, &publisher);
    wait_log(&bed.broker, &publisher, "the kick at exp", |log| {
        log.k8s_sat_kicks(id) == 1
    });
    // Usually `broker closed the connection`; a PUBLISH racing the close reads as a network
    // error (PipeClosed, reset).
    wait_stderr(&publisher, "disconnected: ");
    wait_stderr(&publisher, "not connecting with it");
    assert_eq!(
        fake.connection_count(),
        1,
        "connected with the expired token"
    );
    let fresh = fake_jwt(3600);
    bed.rotate(&fresh);
    assert!(
        fake.wait_for_connections(2, STEP_TIMEOUT),
        "{}",
        publisher.describe()
    );
    let have = bed.subscriber.payloads().len();
    wait_received(&bed.subscriber, have + 10, &publisher);
    let (done, _) = stop(&mut publisher, Duration::from_secs(10));
    let duplicates = assert_no_gaps(&bed.subscriber, done.next);
    assert!(
        duplicates <= done.duplicates,
        "{duplicates} > {}",
        done.duplicates
    );

    let first = fake.connection(0).unwrap();
    assert!(first.packets_of(PacketType::Disconnect).is_empty());
    let second = fake.connection(1).unwrap();
    assert_k8s_sat_connect(&first.packets[0].packet);
    assert!(carries_token(&first.packets[0].packet, &old));
    assert_k8s_sat_connect(&second.packets[0].packet);
    assert!(
        carries_token(&second.packets[0].packet, &fresh),
        "the new connection does not carry the new token"
    );
    assert_eq!(fake.connection_count(), 2);
    let d = bed.broker.events().k8s_sat_decisions();
    assert!(d.iter().all(|d| d.accepted), "{d:?}");
}
