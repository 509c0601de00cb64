//! Mock-socket tests of the core: exact bytes on the wire, and one test for every minimq 0.10
//! behaviour the guard must keep from users (DESIGN.md's table).
#![allow(clippy::unwrap_used)]

use std::vec;
use std::vec::Vec;

use embedded_nal::{nb, TcpClientStack, TcpErrorKind};

use crate::guard::{Guard, GuardError, GuardStack, LinkEnd, Violation};
use crate::mock::{MockClock, MockStack, Rx, Wire};
use crate::{Config, End, Event, Publisher, Qos, SessionError, Status};

const TOKEN: &str = "tok";
const BUF: usize = 4096;

/// The exact CONNECT minimq 0.10 writes for client id `pod-1`, `$sat`/`tok`, keepalive 60.
const CONNECT: [u8; 44] = [
    0x10, 0x2a, // CONNECT, remaining length 42
    0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
    0x05, // protocol level 5
    0xc2, // flags: user name, password, clean start
    0x00, 0x3c, // keepalive 60 s
    0x0d, // properties: 13 bytes
    0x27, 0x00, 0x00, 0x01, 0x00, // Maximum Packet Size 256 (our rx buffer)
    0x11, 0xff, 0xff, 0xff, 0xff, // Session Expiry Interval u32::MAX
    0x21, 0x00, 0x0a, // Receive Maximum 10
    0x00, 0x05, b'p', b'o', b'd', b'-', b'1', // client id
    0x00, 0x04, b'$', b's', b'a', b't', // user name
    0x00, 0x03, b't', b'o', b'k', // password: the token
];

/// mosquitto's CONNACK shape: success, Receive Maximum `rm`, plus a Topic Alias Maximum.
fn connack(rm: u16) -> Vec<u8> {
    let [hi, lo] = rm.to_be_bytes();
    vec![
        0x20, 0x09, // CONNACK, remaining length 9
        0x00, 0x00, // no session, success
        0x06, // properties: 6 bytes
        0x21, hi, lo, // Receive Maximum
        0x22, 0x00, 0x0a, // Topic Alias Maximum 10
    ]
}

fn puback(packet_id: u16, reason: u8) -> Vec<u8> {
    let [hi, lo] = packet_id.to_be_bytes();
    vec![0x40, 0x03, hi, lo, reason]
}

/// PUBLISH of `p<n>` to topic `t`, QoS 1 with `packet_id`, or QoS 0 when None.
fn publish(n: u64, packet_id: Option<u16>) -> Vec<u8> {
    let payload = format!("p{n}");
    let mut body = vec![0x00, 0x01, b't'];
    if let Some(id) = packet_id {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.push(0x00); // no properties
    body.extend_from_slice(payload.as_bytes());
    let first = if packet_id.is_some() { 0x32 } else { 0x30 };
    let mut packet = vec![first, body.len() as u8];
    packet.extend(body);
    packet
}

fn config(qos: Qos, count: u64) -> Config<'static> {
    let mut c = Config::new("127.0.0.1:1883".parse().unwrap());
    c.client_id = "pod-1";
    c.topic = "t";
    c.payload_prefix = "p";
    c.qos = qos;
    c.interval_ms = 0;
    c.count = count;
    c
}

struct Rig {
    wire: MockStack,
    clock: MockClock,
    publisher: Publisher<'static, MockStack, MockClock>,
    events: Vec<Event>,
}

impl Rig {
    fn new(config: Config<'static>) -> Self {
        let wire = MockStack::default();
        let clock = MockClock::default();
        let publisher = Publisher::new(wire.clone(), clock.clone(), config, 1).unwrap();
        Rig {
            wire,
            clock,
            publisher,
            events: Vec::new(),
        }
    }

    fn wire(&self) -> std::cell::RefMut<'_, Wire> {
        self.wire.0.borrow_mut()
    }

    /// Runs one session: `script` is called before each poll with the poll index and the
    /// wire; it returns false to stop polling. Returns the last status.
    fn session(&mut self, mut script: impl FnMut(usize, &mut Wire, &MockClock) -> bool) -> Status {
        let mut buf = [0u8; BUF];
        let events = &mut self.events;
        let mut s = self.publisher.session(&mut buf, TOKEN).expect("session");
        let mut status = Status::Busy;
        for i in 0..200 {
            if !script(i, &mut self.wire.0.borrow_mut(), &self.clock) {
                break;
            }
            status = s.poll(&mut |e| events.push(e));
            if let Status::Ended(_) = status {
                break;
            }
        }
        status
    }

    fn published(&self) -> Vec<(u64, bool)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Published { n, duplicate } => Some((*n, *duplicate)),
                _ => None,
            })
            .collect()
    }
}

fn count_publishes(bytes: &[u8]) -> usize {
    let mut i = 0;
    let mut count = 0;
    while i + 1 < bytes.len() {
        if bytes[i] >> 4 == 3 {
            count += 1;
        }
        i += 2 + bytes[i + 1] as usize;
    }
    count
}

#[test]
fn connect_is_exact_mqtt5_with_sat_user_and_token_password() {
    let mut rig = Rig::new(config(Qos::AtLeastOnce, 0));
    rig.session(|i, _, _| i < 1);
    assert_eq!(rig.wire().written, CONNECT);
    assert_eq!(rig.wire().connects, 1);
}

#[test]
fn qos0_publishes_exact_packets_and_counts_up() {
    let mut rig = Rig::new(config(Qos::AtMostOnce, 3));
    let status = rig.session(|i, w, _| {
        if i == 1 {
            w.take_written();
            w.push(&connack(20));
        }
        true
    });
    assert_eq!(status, Status::Ended(End::Completed));
    let mut expected = Vec::new();
    for n in 0..3 {
        expected.extend(publish(n, None));
    }
    expected.extend([0xe0, 0x00]); // DISCONNECT, normal
    assert_eq!(rig.wire().written, expected);
    assert_eq!(rig.published(), vec![(0, false), (1, false), (2, false)]);
    assert_eq!(rig.publisher.progress().next, 3);
}

#[test]
fn qos1_publishes_carry_packet_ids_and_puback_0x10_counts_as_success() {
    let mut rig = Rig::new(config(Qos::AtLeastOnce, 2));
    let status = rig.session(|i, w, _| {
        match i {
            1 => {
                w.take_written();
                w.push(&connack(20));
            }
            2 => {
                assert_eq!(
                    w.take_written(),
                    [publish(0, Some(1)), publish(1, Some(2))].concat()
                );
                w.push(&puback(1, 0x10)); // no matching subscribers
                w.push(&[0x40, 0x02, 0x00, 0x02]); // short form: success
            }
            _ => {}
        }
        true
    });
    assert_eq!(status, Status::Ended(End::Completed));
    assert_eq!(rig.wire().written, [0xe0, 0x00]);
    assert!(rig.events.contains(&Event::Acked { through: 1 }));
    assert!(!rig
        .events
        .iter()
        .any(|e| matches!(e, Event::PublishRejected { .. })));
    let p = rig.publisher.progress();
    assert_eq!((p.acked, p.acked_next, p.rejected), (2, 2, 0));
    assert!(rig.publisher.is_finished());
}

#[test]
fn puback_failure_reason_is_reported_and_not_resent() {
    let mut rig = Rig::new(config(Qos::AtLeastOnce, 1));
    let status = rig.session(|i, w, _| {
        match i {
            1 => w.push(&connack(20)),
            2 => w.push(&puback(1, 0x97)), // quota exceeded
            _ => {}
        }
        true
    });
    assert_eq!(status, Status::Ended(End::Completed));
    assert!(rig
        .events
        .contains(&Event::PublishRejected { n: 0, reason: 0x97 }));
    assert_eq!(rig.publisher.progress().rejected, 1);
}

#[test]
fn token_rejected_rebuilds_session_only_after_backoff() {
    let mut rig = Rig::new(config(Qos::AtLeastOnce, 0));
    let status = rig.session(|i, w, _| {
        if i == 1 {
            w.push(&[0x20, 0x03, 0x00, 0x87, 0x00]); // CONNACK: Not authorized
        }
        true
    });
    // minimq alone would report 0x87 once and then return Ok(None) forever.
    assert_eq!(status, Status::Ended(End::TokenRejected(0x87)));
    assert!(rig.events.contains(&Event::TokenRejected { reason: 0x87 }));
    assert_eq!(rig.wire().closes, 1, "the refused socket is closed");
    let wait = rig.publisher.wait_ms();
    assert!(
        (50..=100).contains(&wait),
        "first retry after 50..100 ms, got {wait}"
    );
    let mut buf = [0u8; BUF];
    assert!(matches!(
        rig.publisher.session(&mut buf, TOKEN).err(),
        Some(SessionError::Backoff { .. })
    ));
    assert_eq!(
        rig.wire().connects,
        1,
        "no connect before the backoff allows it"
    );
    rig.clock.advance(wait);
    rig.session(|i, _, _| i < 1);
    assert_eq!(rig.wire().connects, 2);
    assert_eq!(&rig.wire().written[CONNECT.len()..], CONNECT);
}

#[test]
fn eof_from_broker_is_noticed_without_waiting_for_ping() {
    let mut rig = Rig::new(config(Qos::AtLeastOnce, 0));
    let status = rig.session(|i, w, _| {
        match i {
            1 => w.push(&connack(20)),
            2 => w.rx.push_back(Rx::Eof),
            _ => {}
        }
        true
    });
    // The clock never moved: minimq alone would notice only at keepalive/2 + 5 s.
    assert_eq!(status, Status::Ended(End::PeerClosed));
    assert_eq!(rig.wire().closes, 1);
    assert!(rig.events.iter().any(|e| matches!(
        e,
        Event::Disconnected {
            why: End::PeerClosed,
            disconnect_sent: false,
            ..
        }
    )));
}

#[test]
fn guard_refuses_minimq_reconnects_within_a_session() {
    let wire = MockStack::default();
    let guard = core::cell::RefCell::new(Guard::new(wire.clone()));
    let mut stack = GuardStack(&guard);
    let mut socket = stack.socket().unwrap();
    let addr = "127.0.0.1:1883".parse().unwrap();
    assert!(matches!(
        stack.connect(&mut socket, addr),
        Err(nb::Error::WouldBlock)
    ));
    guard.borrow_mut().begin();
    assert!(stack.connect(&mut socket, addr).is_ok());
    for _ in 0..100 {
        // minimq reconnects on every poll after a drop (≈900 connects/s in a 1 ms loop).
        assert!(matches!(
            stack.connect(&mut socket, addr),
            Err(nb::Error::WouldBlock)
        ));
    }
    assert_eq!(wire.0.borrow().connects, 1);
    assert_eq!(guard.borrow().end(), Some(LinkEnd::LinkLost));
}

#[test]
fn link_drop_is_followed_by_growing_backoff_not_a_reconnect_storm() {
    let mut rig = Rig::new(config(Qos::AtLeastOnce, 0));
    let mut waits = Vec::new();
    for _ in 0..4 {
        rig.session(|i, w, _| {
            if i == 0 {
                w.push(&connack(20));
                w.rx.push_back(Rx::Eof);
            }
            true
        });
        rig.wire().rx.clear();
        let wait = rig.publisher.wait_ms();
        waits.push(wait);
        rig.clock.advance(wait);
    }
    assert_eq!(rig.wire().connects, 4);
    for (k, w) in waits.iter().enumerate() {
        let ceiling = 100u64 << k;
        assert!(*w >= ceiling / 2 && *w <= ceiling, "attempt {k}: {w} ms");
    }
}

#[test]
fn server_disconnect_is_reported_with_its_reason() {
    for (bytes, reason) in [(vec![0xe0, 0x01, 0x8b], 0x8b), (vec![0xe0, 0x00], 0x00)] {
        let mut rig = Rig::new(config(Qos::AtLeastOnce, 0));
        let status = rig.session(|i, w, _| {
            match i {
                1 => w.push(&connack(20)),
                2 => {
                    w.take_written();
                    w.push(&bytes);
                }
                _ => {}
            }
            true
        });
        assert_eq!(status, Status::Ended(End::ServerDisconnect(reason)));
        assert_eq!(rig.wire().closes, 1);
        assert!(
            rig.wire().written.is_empty(),
            "no DISCONNECT back to a DISCONNECT"
        );
    }
}

#[test]
fn completion_writes_disconnect_then_closes_the_socket() {
    let mut rig = Rig::new(config(Qos::AtLeastOnce, 1));
    rig.session(|i, w, _| {
        match i {
            1 => w.push(&connack(20)),
            2 => {
                w.take_written();
                w.push(&puback(1, 0));
            }
            _ => {}
        }
        true
    });
    assert_eq!(rig.wire().written, [0xe0, 0x00]);
    assert_eq!(
        rig.wire().closes,
        1,
        "minimq 0.10 never closes; the guard must"
    );
    assert!(rig
        .events
        .iter()
        .any(|e| matches!(e, Event::Finished { .. })));
    let mut buf = [0u8; BUF];
    assert_eq!(
        rig.publisher.session(&mut buf, TOKEN).err(),
        Some(SessionError::Finished)
    );
}

#[test]
fn in_flight_is_capped_by_receive_maximum_2() {
    let mut rig = Rig::new(config(Qos::AtLeastOnce, 5));
    let mut seen = Vec::new();
    let status = rig.session(|i, w, _| {
        match i {
            1 => w.push(&connack(2)),
            2..=4 => {
                seen.push(count_publishes(&w.take_written()));
                w.push(&puback(i as u16 - 1, 0));
            }
            _ => {}
        }
        true
    });
    // minimq 0.10 would use max(10, 2) = 10 and overrun the broker's quota.
    assert_eq!(seen, vec![2, 1, 1]);
    assert!(matches!(status, Status::Wait { .. }));
    assert!(rig.events.contains(&Event::Connected {
        session_present: false,
        receive_maximum: 2,
        window: 2
    }));
}

#[test]
fn in_flight_is_capped_at_ten_with_receive_maximum_20() {
    let mut rig = Rig::new(config(Qos::AtLeastOnce, 30));
    let status = rig.session(|i, w, _| {
        match i {
            1 => w.push(&connack(20)),
            2..=4 => {
                // minimq 0.10 would write an 11th, then panic on the next PUBACK.
                assert_eq!(count_publishes(&w.take_written()), 10);
                for id in 1..=10u16 {
                    w.push(&puback(id + (i as u16 - 2) * 10, 0));
                }
            }
            _ => {}
        }
        true
    });
    assert!(matches!(status, Status::Ended(End::Completed)));
    assert_eq!(rig.publisher.progress().acked_next, 30);
}

#[test]
fn unexpected_puback_ends_the_connection_instead_of_panicking() {
    // Nothing in flight (minimq 0.10: unwrap on None), then a wrong identifier.
    for (qos, ack, expected) in [
        (Qos::AtMostOnce, 1u16, None),
        (Qos::AtLeastOnce, 7, Some(1)),
    ] {
        let mut rig = Rig::new(config(qos, 0));
        let status = rig.session(|i, w, _| {
            match i {
                1 => w.push(&connack(20)),
                2 => {
                    w.take_written();
                    w.push(&puback(ack, 0));
                }
                _ => {}
            }
            true
        });
        let violation = Violation::UnexpectedPubAck {
            packet_id: ack,
            expected,
        };
        assert_eq!(status, Status::Ended(End::Violation(violation)));
        // DISCONNECT with reason 0x82 Protocol Error, after whatever was published at i == 2.
        assert!(rig.wire().written.ends_with(&[0xe0, 0x01, 0x82]));
        assert_eq!(rig.wire().closes, 1);
    }
}

#[test]
fn packets_a_publisher_never_asks_for_end_the_connection() {
    let cases: [(&[u8], Violation); 3] = [
        (
            &[0x30, 0x04, 0x00, 0x01, b'x', 0x00],
            Violation::UnexpectedPacket(0x30),
        ),
        (
            &[0x90, 0x03, 0x00, 0x01, 0x00],
            Violation::UnexpectedPacket(0x90),
        ),
        (
            &[0x20, 0x03, 0x00, 0x00, 0x00],
            Violation::UnexpectedPacket(0x20),
        ),
    ];
    for (bytes, violation) in cases {
        let mut rig = Rig::new(config(Qos::AtMostOnce, 0));
        let status = rig.session(|i, w, _| {
            match i {
                1 => w.push(&connack(20)),
                2 => w.push(bytes),
                _ => {}
            }
            true
        });
        assert_eq!(status, Status::Ended(End::Violation(violation)));
    }
}

#[test]
fn malformed_or_premature_broker_bytes_end_the_connection() {
    let cases: [(&[u8], Violation); 3] = [
        (
            &[0x00, 0x00],
            Violation::Malformed(crate::frame::Malformed::ReservedType),
        ),
        (
            &[0x20, 0xff, 0xff, 0xff, 0xff, 0x01],
            Violation::Malformed(crate::frame::Malformed::LengthTooLong),
        ),
        (&[0xd0, 0x00], Violation::BeforeConnAck(0xd0)),
    ];
    for (bytes, violation) in cases {
        let mut rig = Rig::new(config(Qos::AtMostOnce, 0));
        let status = rig.session(|i, w, _| {
            if i == 1 {
                w.push(bytes);
            }
            true
        });
        assert_eq!(status, Status::Ended(End::Violation(violation)));
        assert_eq!(rig.wire().closes, 1);
    }
}

#[test]
fn counter_is_not_advanced_by_a_publish_that_was_not_sent() {
    let mut rig = Rig::new(config(Qos::AtMostOnce, 0));
    let status = rig.session(|i, w, _| {
        if i == 1 {
            w.push(&connack(20));
            w.send_error = Some(TcpErrorKind::PipeClosed);
        }
        true
    });
    assert_eq!(
        status,
        Status::Ended(End::Network(TcpErrorKind::PipeClosed))
    );
    assert!(rig.published().is_empty());
    assert_eq!(rig.publisher.progress().next, 0);
}

#[test]
fn qos0_publish_cut_mid_packet_is_sent_again_by_the_next_session() {
    let mut rig = Rig::new(config(Qos::AtMostOnce, 0));
    rig.session(|i, w, _| {
        match i {
            1 => {
                w.take_written();
                w.push(&connack(20));
                w.send_limit = Some(3);
            }
            2 => {
                w.send_limit = Some(0);
                w.rx.push_back(Rx::Eof);
            }
            _ => {}
        }
        true
    });
    assert_eq!(rig.published(), vec![(0, false)]);
    assert_eq!(rig.publisher.progress().next, 0, "p0 never fully left");
    rig.wire().send_limit = None;
    rig.wire().rx.clear();
    rig.clock.advance(rig.publisher.wait_ms());
    rig.session(|i, w, _| {
        if i == 1 {
            w.take_written();
            w.push(&connack(20));
        }
        i < 3
    });
    assert_eq!(rig.published()[1], (0, true));
}

#[test]
fn would_block_and_partial_writes_still_produce_the_exact_connect() {
    let mut rig = Rig::new(config(Qos::AtLeastOnce, 0));
    rig.wire().send_blocked = 2;
    rig.wire().send_limit = Some(5);
    let mut statuses = Vec::new();
    rig.session(|i, w, _| {
        if i > 0 {
            statuses.push(w.written.len());
        }
        i < 15
    });
    assert_eq!(rig.wire().written, CONNECT);
    assert!(statuses.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn qos1_resends_from_first_unacknowledged_after_a_reconnect() {
    let mut rig = Rig::new(config(Qos::AtLeastOnce, 5));
    rig.session(|i, w, _| {
        match i {
            1 => w.push(&connack(20)),
            2 => {
                assert_eq!(count_publishes(&w.take_written()), 5);
                w.push(&puback(1, 0));
                w.push(&puback(2, 0));
                w.rx.push_back(Rx::Eof);
            }
            _ => {}
        }
        true
    });
    assert_eq!(rig.publisher.progress().acked_next, 2);
    rig.wire().rx.clear();
    rig.clock.advance(rig.publisher.wait_ms());
    let status = rig.session(|i, w, _| {
        match i {
            1 => {
                w.take_written();
                w.push(&connack(20));
            }
            2 => {
                // Clean start: identifiers begin at 1 again.
                let expected = [
                    publish(2, Some(1)),
                    publish(3, Some(2)),
                    publish(4, Some(3)),
                ];
                assert_eq!(w.take_written(), expected.concat());
                for id in 1..=3 {
                    w.push(&puback(id, 0));
                }
            }
            _ => {}
        }
        true
    });
    assert_eq!(status, Status::Ended(End::Completed));
    assert!(rig
        .events
        .contains(&Event::Republishing { from: 2, count: 3 }));
    let p = rig.publisher.progress();
    assert_eq!((p.duplicates, p.acked_next, p.sent), (3, 5, 8));
    assert_eq!(&rig.published()[5..], [(2, true), (3, true), (4, true)]);
}

#[test]
fn no_connack_within_the_timeout_ends_the_session() {
    let mut rig = Rig::new(config(Qos::AtLeastOnce, 0));
    let status = rig.session(|i, _, clock| {
        if i > 0 {
            clock.advance(1_000);
        }
        true
    });
    assert_eq!(status, Status::Ended(End::ConnectTimeout));
    assert_eq!(rig.wire().closes, 1);
}

#[test]
fn unanswered_ping_ends_the_session_as_link_lost() {
    // A QoS 0 job: one publish at connect, then nothing due for a minute but keepalive.
    let mut c = config(Qos::AtMostOnce, 0);
    c.keepalive_s = 10;
    c.interval_ms = 60_000;
    let mut rig = Rig::new(c);
    let mut pinged = false;
    let status = rig.session(|i, w, clock| {
        if i == 1 {
            w.push(&connack(20));
        }
        if i > 1 {
            pinged |= w.take_written().ends_with(&[0xc0, 0x00]);
            clock.advance(1_000);
        }
        true
    });
    assert!(pinged, "minimq sends PINGREQ at keepalive/2");
    assert_eq!(status, Status::Ended(End::LinkLost));
}

#[test]
fn stop_drains_in_flight_then_disconnects() {
    let mut rig = Rig::new(config(Qos::AtLeastOnce, 0));
    let mut buf = [0u8; BUF];
    let mut events = Vec::new();
    let mut s = rig.publisher.session(&mut buf, TOKEN).unwrap();
    s.poll(&mut |e| events.push(e));
    rig.wire.0.borrow_mut().push(&connack(3));
    s.poll(&mut |e| events.push(e));
    assert_eq!(count_publishes(&rig.wire.0.borrow_mut().take_written()), 3);
    s.stop();
    rig.wire.0.borrow_mut().push(&puback(1, 0));
    assert!(matches!(
        s.poll(&mut |e| events.push(e)),
        Status::Wait { .. }
    ));
    assert!(
        rig.wire.0.borrow_mut().take_written().is_empty(),
        "no new publish while stopping"
    );
    rig.wire.0.borrow_mut().push(&puback(2, 0));
    rig.wire.0.borrow_mut().push(&puback(3, 0));
    assert_eq!(s.poll(&mut |e| events.push(e)), Status::Ended(End::Stopped));
    drop(s);
    assert_eq!(rig.wire().take_written(), [0xe0, 0x00]);
    assert_eq!(rig.publisher.progress().acked_next, 3);
    assert_eq!(
        rig.publisher.wait_ms(),
        0,
        "a planned stop does not back off"
    );
}

#[test]
fn stop_gives_up_on_missing_acks_after_the_drain_timeout() {
    let mut rig = Rig::new(config(Qos::AtLeastOnce, 0));
    let mut buf = [0u8; BUF];
    let mut s = rig.publisher.session(&mut buf, TOKEN).unwrap();
    s.poll(&mut |_| ());
    rig.wire.0.borrow_mut().push(&connack(20));
    s.poll(&mut |_| ());
    s.rotate();
    rig.clock.advance(4_999);
    assert!(matches!(s.poll(&mut |_| ()), Status::Wait { .. }));
    rig.clock.advance(1);
    assert_eq!(s.poll(&mut |_| ()), Status::Ended(End::Rotation));
}

#[test]
fn dropping_a_live_session_still_closes_its_socket() {
    let mut rig = Rig::new(config(Qos::AtLeastOnce, 0));
    rig.session(|i, w, _| {
        if i == 1 {
            w.push(&connack(20));
        }
        i < 3
    });
    assert_eq!(rig.wire().closes, 1);
    assert!(rig.wire().written.ends_with(&[0xe0, 0x00]));
}

#[test]
fn interval_paces_publishes_by_the_clock() {
    let mut c = config(Qos::AtMostOnce, 3);
    c.interval_ms = 1_000;
    let mut rig = Rig::new(c);
    let mut per_poll = Vec::new();
    rig.session(|i, w, clock| {
        if i == 1 {
            w.push(&connack(20));
        }
        if i >= 2 {
            per_poll.push(count_publishes(&w.take_written()));
            clock.advance(500);
        }
        true
    });
    // Polls every 500 ms: one publish per 1 000 ms.
    assert_eq!(&per_poll[..5], [1, 0, 1, 0, 1]);
}

#[test]
fn buffer_too_small_and_empty_token_are_errors_not_panics() {
    let mut rig = Rig::new(config(Qos::AtLeastOnce, 0));
    let mut small = [0u8; 64];
    assert!(matches!(
        rig.publisher.session(&mut small, TOKEN).err(),
        Some(SessionError::BufferTooSmall { have: 64, .. })
    ));
    let mut buf = [0u8; BUF];
    assert_eq!(
        rig.publisher.session(&mut buf, "").err(),
        Some(SessionError::EmptyToken)
    );
    assert_eq!(rig.wire().connects, 0);
}

#[test]
fn guard_errors_look_like_a_closed_pipe_to_minimq() {
    use embedded_nal::TcpError;
    assert_eq!(
        GuardError::<crate::mock::MockError>::Ended.kind(),
        TcpErrorKind::PipeClosed
    );
}

#[test]
fn stack_receive_error_ends_the_session_with_its_kind() {
    let mut rig = Rig::new(config(Qos::AtLeastOnce, 0));
    let status = rig.session(|i, w, _| {
        match i {
            1 => w.push(&connack(20)),
            2 => w.rx.push_back(Rx::Error(TcpErrorKind::Other)),
            _ => {}
        }
        true
    });
    assert_eq!(status, Status::Ended(End::Network(TcpErrorKind::Other)));
    assert_eq!(rig.wire().closes, 1);
}

#[test]
fn payload_is_prefix_and_decimal_counter_without_allocation() {
    let mut buf = [0u8; 40];
    let n = crate::publisher::write_payload(&mut buf, b"samplepayload", u64::MAX).unwrap();
    assert_eq!(&buf[..n], b"samplepayload18446744073709551615");
    let n = crate::publisher::write_payload(&mut buf, b"", 0).unwrap();
    assert_eq!(&buf[..n], b"0");
    assert!(crate::publisher::write_payload(&mut buf[..3], b"abc", 7).is_err());
}

#[test]
fn rotation_drains_disconnects_and_reconnects_with_the_new_token_without_gap_or_duplicate() {
    let mut rig = Rig::new(config(Qos::AtLeastOnce, 6));
    let mut buf = [0u8; BUF];
    let mut events = Vec::new();
    {
        let mut s = rig.publisher.session(&mut buf, "old").unwrap();
        s.poll(&mut |e| events.push(e));
        rig.wire.0.borrow_mut().push(&connack(3));
        s.poll(&mut |e| events.push(e));
        rig.wire.0.borrow_mut().take_written();
        s.rotate();
        rig.clock.advance(2);
        for id in 1..=3 {
            rig.wire.0.borrow_mut().push(&puback(id, 0));
        }
        assert_eq!(
            s.poll(&mut |e| events.push(e)),
            Status::Ended(End::Rotation)
        );
    }
    assert_eq!(
        rig.wire().take_written(),
        [0xe0, 0x00],
        "drained, then DISCONNECT"
    );
    assert_eq!(rig.wire().closes, 1);
    assert_eq!(rig.publisher.wait_ms(), 0, "a rotation reconnects at once");
    {
        let mut s = rig.publisher.session(&mut buf, "new").unwrap();
        s.poll(&mut |e| events.push(e));
        let connect = rig.wire.0.borrow_mut().take_written();
        assert!(
            connect.ends_with(&[0x00, 0x03, b'n', b'e', b'w']),
            "new password"
        );
        rig.clock.advance(3);
        rig.wire.0.borrow_mut().push(&connack(3));
        s.poll(&mut |e| events.push(e));
        assert_eq!(
            rig.wire.0.borrow_mut().take_written(),
            [
                publish(3, Some(1)),
                publish(4, Some(2)),
                publish(5, Some(3))
            ]
            .concat()
        );
    }
    let published: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Published { n, .. } => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(published, vec![0, 1, 2, 3, 4, 5], "no gap, no duplicate");
    assert!(events.contains(&Event::Rotated { gap_ms: 5 }));
    assert_eq!(rig.publisher.progress().duplicates, 0);
}

#[test]
fn one_socket_read_serves_a_whole_window_of_acknowledgements() {
    let mut rig = Rig::new(config(Qos::AtLeastOnce, 10));
    let status = rig.session(|i, w, _| {
        match i {
            1 => w.push(&connack(20)),
            2 => {
                assert_eq!(count_publishes(&w.take_written()), 10);
                let acks: Vec<u8> = (1..=10u16).flat_map(|id| puback(id, 0x10)).collect();
                w.push(&acks);
                w.receives = 0;
            }
            _ => {}
        }
        true
    });
    assert_eq!(status, Status::Ended(End::Completed));
    // minimq reads 1 + 1 + 3 bytes per PUBACK: 30 socket reads without the read-ahead.
    assert!(rig.wire().receives <= 2, "{} reads", rig.wire().receives);
}

/// Random broker bytes in random chunks: the session may end, but never panics, and never
/// writes after it ended.
#[test]
fn random_broker_bytes_never_panic() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for case in 0..2_000 {
        let mut rig = Rig::new(config(Qos::AtLeastOnce, 0));
        let mut stream = connack(20);
        // Half the cases start from a valid CONNACK, so later packets reach PUBACK handling.
        if case % 2 == 0 {
            stream.clear();
        }
        let len = (next() % 64) as usize;
        stream.extend((0..len).map(|_| {
            let r = next();
            // Bias towards the packet types the guard reads.
            match r % 4 {
                0 => [0x20, 0x40, 0xd0, 0xe0][(r >> 8) as usize % 4],
                _ => (r >> 16) as u8,
            }
        }));
        let status = rig.session(|i, w, _| {
            if i == 1 {
                let mut rest = &stream[..];
                while !rest.is_empty() {
                    let take = ((next() % 7) as usize + 1).min(rest.len());
                    w.push(&rest[..take]);
                    rest = &rest[take..];
                }
                w.rx.push_back(Rx::Eof);
            }
            i < 40
        });
        assert!(
            matches!(status, Status::Ended(_)),
            "case {case}: {status:?}"
        );
        assert_eq!(rig.wire().closes, 1, "case {case}");
    }
}

#[test]
fn a_rotation_after_refusals_starts_the_backoff_again_from_the_floor() {
    // QoS 0: nothing in flight, so the rotation ends at the next poll.
    let mut rig = Rig::new(config(Qos::AtMostOnce, 0));
    for _ in 0..5 {
        rig.session(|i, w, _| {
            if i == 1 {
                w.push(&[0x20, 0x03, 0x00, 0x87, 0x00]);
            }
            true
        });
        rig.wire().rx.clear();
        rig.clock.advance(rig.publisher.wait_ms());
    }
    assert_eq!(rig.publisher.failures(), 5);
    let mut buf = [0u8; BUF];
    {
        let mut s = rig.publisher.session(&mut buf, TOKEN).unwrap();
        s.poll(&mut |_| ());
        rig.wire.0.borrow_mut().push(&connack(20));
        s.poll(&mut |_| ());
        s.rotate();
        assert_eq!(s.poll(&mut |_| ()), Status::Ended(End::Rotation));
    }
    assert_eq!(rig.publisher.failures(), 0);
    rig.session(|i, w, _| {
        if i == 1 {
            w.rx.clear();
            w.push(&[0x20, 0x03, 0x00, 0x87, 0x00]);
        }
        true
    });
    assert!(rig.publisher.wait_ms() <= 100, "back at the floor");
}
