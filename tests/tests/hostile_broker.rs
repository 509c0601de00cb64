//! A broker that misbehaves: one behaviour per test, each checked against `pod-publisher` from
//! the outside (exit code or continued retry, the log line, time bounds, what the fake broker
//! recorded of the client's bytes, and, where messages matter, what an honest mosquitto behind a
//! tampering proxy delivered to an independent subscriber). The table is docs/hostile-broker.md.
//!
//! Timeouts and backoff are set small (`--connect-timeout-ms`, `--backoff-floor-ms`,
//! `--keepalive-s`) so the whole file runs in well under a minute.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use satmqtt_tests::fake_broker::{tamper, ConnectionLog, FakeBroker, Step, Tamper};
use satmqtt_tests::mqtt::{
    auth, connack, disconnect, packet, puback, publish, ConnackProps, Packet, PacketType, Property,
};
use satmqtt_tests::{
    fake_jwt, Publisher, PublisherBuilder, Sequence, Subscriber, TestBed, TokenDir,
};

/// Bound for anything the publisher should do promptly (a loaded CI machine included).
const PROMPT: Duration = Duration::from_secs(10);
/// Bound for a whole short run against an honest broker behind the proxy.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect timeout given to the publisher.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(800);
/// Backoff floor given to the publisher.
const FLOOR_MS: u64 = 200;
/// Timer and scheduling slack for lower time bounds measured at the fake broker.
const SLACK: Duration = Duration::from_millis(60);

/// A publisher aimed at `port` with small timeouts, `client_id`, and the token in `tokens`. The
/// default 60 s keepalive never fires in these short tests; the keepalive test sets its own.
fn publisher(port: u16, tokens: &TokenDir, client_id: &str) -> PublisherBuilder {
    Publisher::builder()
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .token_file(tokens.path())
        .client_id(client_id)
        .args([
            "--connect-timeout-ms",
            &CONNECT_TIMEOUT.as_millis().to_string(),
            "--backoff-floor-ms",
            &FLOOR_MS.to_string(),
            "--backoff-cap-ms",
            "10000",
            "--stats-interval-s",
            "0",
            "--drain-timeout-ms",
            "1000",
        ])
}

/// A token directory holding a fresh token (for scripted brokers, which check nothing).
fn tokens() -> TokenDir {
    let tokens = TokenDir::new();
    tokens.write(&fake_jwt(3600));
    tokens
}

fn connack_ok() -> Vec<u8> {
    connack(0, false, &ConnackProps::default())
}

/// CONNACK success followed, in the same write, by `bytes`.
fn connack_then(bytes: &[u8]) -> Step {
    let mut out = connack_ok();
    out.extend_from_slice(bytes);
    Step::Send(out)
}

/// The reason code of the DISCONNECT the client sent on connection `index` (waits for it).
#[track_caller]
fn client_disconnect_reason(fake: &FakeBroker, index: usize, publisher: &Publisher) -> u8 {
    let p = fake
        .wait_for_client_packet(index, PacketType::Disconnect, PROMPT)
        .unwrap_or_else(|| {
            panic!(
                "no DISCONNECT from the client on connection {index}: {:?}\n{}",
                fake.connection(index),
                publisher.describe()
            )
        });
    p.packet.reason()
}

/// The client's packet types on a connection.
fn kinds(log: &ConnectionLog) -> Vec<PacketType> {
    log.packets.iter().map(|p| p.kind()).collect()
}

/// The publisher keeps retrying: a connection after the first is accepted, and it is still running.
#[track_caller]
fn assert_reconnects(fake: &FakeBroker, publisher: &mut Publisher) {
    assert!(
        fake.wait_for_connections(2, PROMPT),
        "no reconnect after the hostile connection\n{}",
        publisher.describe()
    );
    assert_eq!(
        publisher.wait_timeout(Duration::ZERO),
        None,
        "the publisher exited instead of retrying\n{}",
        publisher.describe()
    );
}

/// A fake broker that proxies every connection to `bed`'s mosquitto; connection 0's broker→client
/// packets go through `first`.
fn proxy_with_first(bed: &TestBed, first: impl FnOnce() -> Tamper + Send + 'static) -> FakeBroker {
    let upstream = format!("127.0.0.1:{}", bed.broker.port()).parse().unwrap();
    let first = Mutex::new(Some(first));
    FakeBroker::start(move |n| {
        let tamper = if n == 0 {
            first.lock().unwrap().take().map(|make| make())
        } else {
            None
        };
        vec![Step::Proxy { upstream, tamper }]
    })
}

/// Waits until the subscriber saw `count` messages from 0, then asserts none is missing.
/// Duplicates (a resend of something the broker got but whose PUBACK was thrown away) are allowed.
#[track_caller]
fn assert_nothing_lost(subscriber: &Subscriber, prefix: &str, count: u64) -> Sequence {
    let payloads = subscriber.sync(PROMPT);
    let seq = Sequence::parse(prefix, &payloads);
    assert!(
        seq.missing_in(0, count).is_empty() && seq.outside(0, count).is_empty(),
        "{}",
        seq.report(0, count)
    );
    seq
}

/// Waits until the log contains `needle`; panics with the output otherwise.
#[track_caller]
fn wait_for_log(publisher: &Publisher, needle: &str) -> String {
    satmqtt_tests::expect::stderr(publisher, needle, PROMPT)
}

// ---- broken acknowledgements ----

#[test]
fn puback_for_nothing_in_flight_is_a_protocol_error_and_nothing_is_lost() {
    let bed = TestBed::new();
    let subscriber = bed.subscribe("hostile/stray-puback");
    // After the real PUBACK of the first message nothing is in flight (one message per 200 ms):
    // a PUBACK for id 77 right behind it acknowledges nothing.
    let fake = proxy_with_first(&bed, || {
        tamper::insert_after_first(PacketType::Puback, puback(77, 0))
    });
    let mut publisher = publisher(fake.port(), &bed.tokens, "hostile-stray-puback")
        .args([
            "--topic",
            "hostile/stray-puback",
            "--payload-prefix",
            "stray-",
        ])
        .args(["--count", "5", "--interval-ms", "200"])
        .spawn();

    assert_eq!(client_disconnect_reason(&fake, 0, &publisher), 0x82);
    publisher.wait_for_success(RUN_TIMEOUT);
    let log = publisher.stderr();
    assert!(
        log.contains("broker broke the protocol: PUBACK for id 77 while nothing was in flight"),
        "{}",
        publisher.describe()
    );
    assert!(fake.connection_count() >= 2, "no reconnect");
    let first = fake.connection(0).unwrap();
    assert_eq!(
        first.packets.last().map(|p| p.kind()),
        Some(PacketType::Disconnect),
        "{:?}",
        kinds(&first)
    );
    let seq = assert_nothing_lost(&subscriber, "stray-", 5);
    assert_eq!(seq.duplicates, 0, "{}", seq.report(0, 5));
}

#[test]
fn pubacks_out_of_order_are_a_protocol_error_and_nothing_is_lost() {
    let bed = TestBed::new();
    let subscriber = bed.subscribe("hostile/swapped");
    let fake = proxy_with_first(&bed, tamper::swap_first_two_pubacks);
    let mut publisher = publisher(fake.port(), &bed.tokens, "hostile-swapped")
        .args(["--topic", "hostile/swapped", "--payload-prefix", "swap-"])
        .args(["--count", "20", "--interval-ms", "0"])
        .spawn();

    assert_eq!(client_disconnect_reason(&fake, 0, &publisher), 0x82);
    publisher.wait_for_success(RUN_TIMEOUT);
    assert!(
        publisher.stderr().contains(
            "broker broke the protocol: PUBACK for id 2 out of order (expected 1; MQTT v5 §4.6)"
        ),
        "{}",
        publisher.describe()
    );
    assert_nothing_lost(&subscriber, "swap-", 20);
}

#[test]
fn receive_maximum_1_keeps_at_most_one_message_in_flight() {
    let bed = TestBed::new();
    let subscriber = bed.subscribe("hostile/rm1");
    // The broker's PUBACKs pass through here; their times are recorded just before they are sent.
    let pubacks: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = Arc::clone(&pubacks);
    let fake = proxy_with_first(&bed, move || -> Tamper {
        let mut replace = tamper::replace_connack(connack(
            0,
            false,
            &ConnackProps {
                receive_maximum: Some(1),
                ..ConnackProps::default()
            },
        ));
        Box::new(move |p: &Packet| {
            if p.kind() == PacketType::Puback {
                seen.lock().unwrap().push(Instant::now());
            }
            replace(p)
        })
    });
    let count = 30;
    let mut publisher = publisher(fake.port(), &bed.tokens, "hostile-rm1")
        .args(["--topic", "hostile/rm1", "--payload-prefix", "rm1-"])
        .args(["--count", &count.to_string(), "--interval-ms", "0"])
        .spawn();
    publisher.wait_for_success(RUN_TIMEOUT);
    assert!(
        publisher
            .stderr()
            .contains("receive maximum 1, QoS 1 window 1"),
        "{}",
        publisher.describe()
    );
    assert_eq!(fake.connection_count(), 1, "{}", publisher.describe());

    // Merge the client's PUBLISHes and the PUBACKs sent to it by time: at most one unanswered.
    let log = fake.connection(0).unwrap();
    let publishes: Vec<Instant> = log
        .packets_of(PacketType::Publish)
        .iter()
        .map(|p| p.at)
        .collect();
    assert_eq!(publishes.len(), count);
    let mut timeline: Vec<(Instant, i32)> = publishes.iter().map(|&t| (t, 1)).collect();
    timeline.extend(pubacks.lock().unwrap().iter().map(|&t| (t, -1)));
    timeline.sort();
    let mut in_flight = 0;
    for (at, step) in &timeline {
        in_flight += step;
        assert!(
            (0..=1).contains(&in_flight),
            "{in_flight} in flight at {:?} after the first PUBLISH",
            *at - publishes[0]
        );
    }
    Sequence::parse("rm1-", &subscriber.sync(PROMPT)).assert_contiguous(0, count as u64);
}

#[test]
fn maximum_packet_size_below_one_publish_exits_2_without_publishing() {
    let tokens = tokens();
    let fake = FakeBroker::start_same(|| {
        vec![
            Step::Expect(PacketType::Connect),
            Step::Send(connack(
                0,
                false,
                &ConnackProps {
                    maximum_packet_size: Some(20),
                    ..ConnackProps::default()
                },
            )),
        ]
    });
    let mut publisher = publisher(fake.port(), &tokens, "hostile-mps")
        .args(["--topic", "hostile/maximum-packet-size", "--count", "5"])
        .spawn();
    let status = publisher.wait_timeout(PROMPT);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(2),
        "{}",
        publisher.describe()
    );
    assert!(
        publisher.stderr().contains(
            "over the broker's Maximum Packet Size 20: shorten the topic or payload prefix"
        ),
        "{}",
        publisher.describe()
    );
    assert_eq!(fake.connection_count(), 1, "it retried a fatal mismatch");
    let log = fake.connection(0).unwrap();
    assert!(
        log.packets_of(PacketType::Publish).is_empty(),
        "{:?}",
        kinds(&log)
    );
}

// ---- CONNACK problems ----

#[test]
fn connack_never_sent_times_out_and_the_next_connect_waits_for_the_backoff() {
    let tokens = tokens();
    let fake = FakeBroker::start_same(|| vec![Step::Expect(PacketType::Connect)]);
    let mut publisher = publisher(fake.port(), &tokens, "hostile-no-connack").spawn();

    let closed = fake.wait_for_client_close(0, PROMPT).expect("never closed");
    let first = fake.connection(0).unwrap();
    let waited = closed - first.accepted_at;
    assert!(
        waited + SLACK >= CONNECT_TIMEOUT && waited < CONNECT_TIMEOUT + Duration::from_secs(2),
        "closed {waited:?} after the accept; the connect timeout is {CONNECT_TIMEOUT:?}"
    );
    let log = wait_for_log(&publisher, "no CONNACK within the connect timeout");
    let retry_ms: u64 = log
        .split("no CONNACK within the connect timeout")
        .nth(1)
        .and_then(|rest| rest.split("reconnecting in ").nth(1))
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no retry delay in the log\n{log}"));
    assert!(
        (FLOOR_MS / 2..=FLOOR_MS).contains(&retry_ms),
        "first retry in {retry_ms} ms, floor {FLOOR_MS}"
    );
    assert_reconnects(&fake, &mut publisher);
    let second = fake.connection(1).unwrap().accepted_at;
    assert!(
        second - closed + SLACK >= Duration::from_millis(retry_ms),
        "the next connection came {:?} after the close; the backoff said {retry_ms} ms",
        second - closed
    );
}

#[test]
fn connack_with_session_present_on_a_clean_start_is_a_protocol_error() {
    let tokens = tokens();
    let fake = FakeBroker::start_same(|| {
        vec![
            Step::Expect(PacketType::Connect),
            Step::Send(connack(0, true, &ConnackProps::default())),
        ]
    });
    let mut publisher = publisher(fake.port(), &tokens, "hostile-session-present").spawn();
    assert_eq!(client_disconnect_reason(&fake, 0, &publisher), 0x82);
    // It did ask for a clean start: CONNECT flags bit 1 (after "MQTT" and the version byte).
    let connect = fake.connection(0).unwrap().packets[0].packet.clone();
    assert_eq!(connect.kind(), PacketType::Connect);
    assert_eq!(connect.body()[7] & 0x02, 0x02, "Clean Start not set");
    wait_for_log(
        &publisher,
        "broker broke the protocol: CONNACK with Session Present on a clean start",
    );
    assert_reconnects(&fake, &mut publisher);
    let log = fake.connection(0).unwrap();
    assert!(
        log.packets_of(PacketType::Publish).is_empty(),
        "{:?}",
        kinds(&log)
    );
}

#[test]
fn a_five_byte_remaining_length_is_malformed() {
    let tokens = tokens();
    let fake = FakeBroker::start_same(|| {
        vec![
            Step::Expect(PacketType::Connect),
            connack_then(&[0x40, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
        ]
    });
    let mut publisher = publisher(fake.port(), &tokens, "hostile-varint").spawn();
    assert_eq!(client_disconnect_reason(&fake, 0, &publisher), 0x81);
    wait_for_log(
        &publisher,
        "broker broke the protocol: malformed packet: variable byte integer longer than four bytes",
    );
    assert_reconnects(&fake, &mut publisher);
}

#[test]
fn slowloris_connack_does_not_stretch_the_connect_timeout() {
    let tokens = tokens();
    // Five bytes at one a second: complete only after 4 s.
    let fake = FakeBroker::start_same(|| {
        vec![
            Step::Expect(PacketType::Connect),
            Step::Trickle {
                bytes: connack_ok(),
                delay: Duration::from_secs(1),
            },
        ]
    });
    let mut publisher = publisher(fake.port(), &tokens, "hostile-slow-connack").spawn();
    let closed = fake.wait_for_client_close(0, PROMPT).expect("never closed");
    let waited = closed - fake.connection(0).unwrap().accepted_at;
    assert!(
        // The CONNACK's last byte comes 4 s after its first: closing before that is the point.
        waited + SLACK >= CONNECT_TIMEOUT && waited < CONNECT_TIMEOUT + Duration::from_secs(2),
        "closed {waited:?} after the accept; the connect timeout is {CONNECT_TIMEOUT:?}"
    );
    wait_for_log(&publisher, "no CONNACK within the connect timeout");
    assert!(
        !publisher.stderr().contains("connected to"),
        "{}",
        publisher.describe()
    );
    assert_reconnects(&fake, &mut publisher);
}

#[test]
fn slowloris_after_connack_ends_at_the_keepalive() {
    let tokens = tokens();
    // A DISCONNECT with a long reason string, one byte a second: never complete in this test.
    let slow = disconnect(0x89, Some(&"z".repeat(100)));
    let fake = FakeBroker::start(move |n| {
        let mut steps = vec![Step::Expect(PacketType::Connect), Step::Send(connack_ok())];
        if n == 0 {
            steps.push(Step::Trickle {
                bytes: slow.clone(),
                delay: Duration::from_secs(1),
            });
        }
        steps
    });
    let keepalive = Duration::from_secs(1);
    let mut publisher = publisher(fake.port(), &tokens, "hostile-slow-later")
        .args(["--keepalive-s", "1", "--interval-ms", "60000"])
        .spawn();
    let closed = fake
        .wait_for_client_close(0, PROMPT)
        .unwrap_or_else(|| panic!("never closed\n{}", publisher.describe()));
    let log = fake.connection(0).unwrap();
    let ping = log
        .packets_of(PacketType::Pingreq)
        .first()
        .map(|p| p.at)
        .unwrap_or_else(|| panic!("no PINGREQ: {:?}\n{}", kinds(&log), publisher.describe()));
    // PINGREQ a keepalive after the last write; no PINGRESP (a partial packet is no answer): the
    // link is declared lost one keepalive after the ping.
    let after_ping = closed - ping;
    assert!(
        after_ping + SLACK >= keepalive && after_ping < keepalive + Duration::from_secs(2),
        "closed {after_ping:?} after the PINGREQ; keepalive {keepalive:?}"
    );
    assert!(closed - log.accepted_at < Duration::from_secs(5));
    wait_for_log(&publisher, "link lost: keepalive ping unanswered");
    assert_reconnects(&fake, &mut publisher);
}

#[test]
fn a_256_kib_connack_property_block_is_refused_by_its_header() {
    let tokens = tokens();
    // 256 KiB of User Properties in one CONNACK.
    let pair = Property::Pair(0x26, "k".repeat(500), "v".repeat(500));
    let big = connack(
        0,
        false,
        &ConnackProps {
            extra: vec![pair; 262_144 / 1005 + 1],
            ..ConnackProps::default()
        },
    );
    assert!(big.len() > 256 * 1024);
    let fake = FakeBroker::start(move |n| {
        let mut steps = vec![Step::Expect(PacketType::Connect)];
        if n == 0 {
            // Time for the test to read the publisher's peak memory before the big packet.
            steps.push(Step::Wait(Duration::from_millis(300)));
            steps.push(Step::Send(big.clone()));
        }
        steps
    });
    let mut publisher = publisher(fake.port(), &tokens, "hostile-big-connack").spawn();
    fake.wait_for_client_packet(0, PacketType::Connect, PROMPT)
        .expect("no CONNECT");
    let before = vm_hwm_kib(publisher.id());
    assert_eq!(client_disconnect_reason(&fake, 0, &publisher), 0x95);
    wait_for_log(&publisher, "over our Maximum Packet Size");
    let after = vm_hwm_kib(publisher.id());
    // Buffering the packet would cost at least its 256 KiB; what is left is page-touch noise
    // (log formatting, the token file re-read before the reconnect).
    assert!(
        after < before + 256,
        "peak memory grew from {before} KiB to {after} KiB: the packet was buffered"
    );
    assert_reconnects(&fake, &mut publisher);
}

/// The process's peak resident set (VmHWM), KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

// ---- what the broker says ----

#[test]
fn a_disconnect_reason_string_is_shown_sanitized_and_bounded() {
    let tokens = tokens();
    let reason = format!("evil\nforged line\u{1b}[31m{}", "x".repeat(300));
    let fake = FakeBroker::start_same(move || {
        vec![
            Step::Expect(PacketType::Connect),
            connack_then(&disconnect(0x89, Some(&reason))),
        ]
    });
    let mut publisher = publisher(fake.port(), &tokens, "hostile-reason").spawn();
    let log = wait_for_log(&publisher, "broker sent DISCONNECT 0x89 Server busy (\"");
    let line = log
        .lines()
        .find(|l| l.contains("broker sent DISCONNECT 0x89"))
        .unwrap();
    let shown = line
        .split("(\"")
        .nth(1)
        .and_then(|rest| rest.split("\")").next())
        .unwrap_or_else(|| panic!("no quoted reason string in {line:?}"));
    assert!(shown.starts_with("evil?forged line?[31mxxx"), "{line}");
    assert!(shown.len() <= 96, "{} bytes shown: {line}", shown.len());
    assert!(
        !log.contains('\u{1b}'),
        "an escape character reached the log"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("forged")),
        "the reason string forged a log line:\n{log}"
    );
    assert_reconnects(&fake, &mut publisher);
}

#[test]
fn an_unsolicited_publish_is_a_protocol_error() {
    let tokens = tokens();
    let fake = FakeBroker::start_same(|| {
        vec![
            Step::Expect(PacketType::Connect),
            connack_then(&publish("hostile/unasked", b"surprise", 0, 0)),
        ]
    });
    let mut publisher = publisher(fake.port(), &tokens, "hostile-publish").spawn();
    assert_eq!(client_disconnect_reason(&fake, 0, &publisher), 0x82);
    wait_for_log(
        &publisher,
        "broker broke the protocol: unexpected PUBLISH packet",
    );
    assert_reconnects(&fake, &mut publisher);
}

#[test]
fn an_unsolicited_suback_is_malformed_for_a_publisher() {
    let tokens = tokens();
    // SUBACK for packet id 1, no properties, granted QoS 0.
    let suback = packet(0x90, &[0x00, 0x01, 0x00, 0x00]);
    let fake = FakeBroker::start_same(move || {
        vec![Step::Expect(PacketType::Connect), connack_then(&suback)]
    });
    let mut publisher = publisher(fake.port(), &tokens, "hostile-suback").spawn();
    // A publisher never subscribes, so its parser knows no SUBACK: the packet is malformed for
    // it (0x81), which also ends the connection as MQTT v5 asks of a packet nobody asked for.
    assert_eq!(client_disconnect_reason(&fake, 0, &publisher), 0x81);
    wait_for_log(
        &publisher,
        "broker broke the protocol: malformed packet: packet type 9 not supported here",
    );
    assert_reconnects(&fake, &mut publisher);
}

#[test]
fn an_unsolicited_auth_is_a_protocol_error() {
    let tokens = tokens();
    let fake = FakeBroker::start_same(|| {
        vec![
            Step::Expect(PacketType::Connect),
            connack_then(&auth(0x18, Some("K8S-SAT"), Some(b"challenge"))),
        ]
    });
    let mut publisher = publisher(fake.port(), &tokens, "hostile-auth").spawn();
    assert_eq!(client_disconnect_reason(&fake, 0, &publisher), 0x82);
    wait_for_log(
        &publisher,
        "broker broke the protocol: AUTH 0x18 nobody asked for",
    );
    assert_reconnects(&fake, &mut publisher);
}

#[test]
fn garbage_after_a_valid_connack_is_malformed() {
    let tokens = tokens();
    // Packet type 0 is reserved; the rest is text.
    let fake = FakeBroker::start_same(|| {
        vec![
            Step::Expect(PacketType::Connect),
            connack_then(b"\x00\x07garbage"),
        ]
    });
    let mut publisher = publisher(fake.port(), &tokens, "hostile-garbage").spawn();
    assert_eq!(client_disconnect_reason(&fake, 0, &publisher), 0x81);
    let log = wait_for_log(
        &publisher,
        "broker broke the protocol: malformed packet: packet type 0 not supported here",
    );
    assert!(log.contains("connected to"), "{log}");
    assert_reconnects(&fake, &mut publisher);
}

// ---- the transport ----

#[test]
fn tcp_reset_mid_packet_reconnects_and_nothing_is_lost() {
    let bed = TestBed::new();
    let subscriber = bed.subscribe("hostile/rst");
    let upstream = format!("127.0.0.1:{}", bed.broker.port()).parse().unwrap();
    // Connection 0: CONNACK, two PUBLISHes taken (never delivered, never acknowledged), half a
    // PUBACK, RST. Connection 1 and later: the honest broker.
    let fake = FakeBroker::start(move |n| {
        if n == 0 {
            vec![
                Step::Expect(PacketType::Connect),
                Step::Send(connack_ok()),
                Step::Expect(PacketType::Publish),
                Step::Expect(PacketType::Publish),
                Step::Send(puback(1, 0)[..2].to_vec()),
                Step::Reset,
            ]
        } else {
            vec![Step::Proxy {
                upstream,
                tamper: None,
            }]
        }
    });
    let mut publisher = publisher(fake.port(), &bed.tokens, "hostile-rst")
        .args(["--topic", "hostile/rst", "--payload-prefix", "rst-"])
        .args(["--count", "10", "--interval-ms", "50"])
        .spawn();
    publisher.wait_for_success(RUN_TIMEOUT);
    assert_eq!(fake.wait_for_script(0, PROMPT), Ok(()));
    assert!(fake.connection_count() >= 2);
    let log = publisher.stderr();
    assert!(
        log.contains("disconnected: network error")
            && log.contains("Connection reset by peer")
            && log.contains("resending 2 unacknowledged message(s) from 0"),
        "{}",
        publisher.describe()
    );
    // The first two were only ever sent to the fake: the honest broker got each exactly once.
    Sequence::parse("rst-", &subscriber.sync(PROMPT)).assert_contiguous(0, 10);
}

#[test]
fn accept_and_close_in_a_loop_is_paced_by_the_backoff() {
    let tokens = tokens();
    let fake = FakeBroker::start_same(|| vec![Step::Close]);
    let mut publisher = publisher(fake.port(), &tokens, "hostile-flap").spawn();
    let watch = Duration::from_secs(3);
    // An observation window, not a wait for a condition: what matters is how many connections
    // the publisher makes in a fixed time.
    std::thread::sleep(watch);
    let accepts = fake.accept_times();
    // Delay k (from 1) is at least floor·2^(k-1)/2: accepts at ≥ 0, 100, 300, 700, 1500, 3100 ms.
    let mut earliest = Duration::ZERO;
    let mut bound = 0;
    for k in 0.. {
        if earliest > watch {
            break;
        }
        bound += 1;
        earliest += Duration::from_millis(FLOOR_MS << k) / 2;
    }
    assert!(
        (3..=bound).contains(&accepts.len()),
        "{} connections in {watch:?}; the backoff allows at most {bound}\n{}",
        accepts.len(),
        publisher.describe()
    );
    for (k, pair) in accepts.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let min = Duration::from_millis(FLOOR_MS << k) / 2;
        assert!(
            gap + SLACK >= min,
            "gap {k}: {gap:?}, the backoff allows no less than {min:?}"
        );
    }
    wait_for_log(
        &publisher,
        "disconnected: broker closed the connection; reconnecting in",
    );
    assert_eq!(publisher.wait_timeout(Duration::ZERO), None, "it gave up");
}
