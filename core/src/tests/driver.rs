//! `Driver` over the scripted network stack: sockets, backoff, token lifecycle, stop.

use std::boxed::Box;
use std::cell::RefCell;
use std::format;
use std::rc::Rc;
use std::string::String;
use std::vec;
use std::vec::Vec;

use super::mock::{MockClock, MockStack, MockTokens, Net, Rx};
use super::*;
use crate::backoff::BackoffConfig;
use crate::config::{Auth, Config, Qos};
use crate::driver::{Buffers, Driver, DriverError, Ready, Status};
use crate::event::{End, Event};

type Drv<'b> = Driver<'static, 'b, MockStack, MockClock, MockTokens>;

/// Client id `c1`, topic `t`, payload `p<N>`, QoS 1 as fast as allowed, `count` messages.
fn cfg(auth: Auth, count: u64) -> Config<'static> {
    Config {
        client_id: "c1",
        topic: "t",
        payload_prefix: "p",
        qos: Qos::AtLeastOnce,
        interval_ms: 0,
        count,
        auth,
        backoff: BackoffConfig {
            floor_ms: 100,
            cap_ms: 60_000,
            reset_after_ms: 10_000,
        },
        ..Config::default()
    }
}

/// How the scripted broker answers what the client writes.
struct Broker {
    /// Answer to CONNECT; `None` leaves it unanswered.
    connack: Option<Vec<u8>>,
    /// Acknowledge every QoS 1 PUBLISH at once.
    ack: bool,
    /// Answer to AUTH 0x19.
    auth_answer: Option<Vec<u8>>,
}

impl Default for Broker {
    fn default() -> Self {
        Broker {
            connack: Some(CONNACK_OK.to_vec()),
            ack: true,
            auth_answer: Some(auth(0x00)),
        }
    }
}

/// A driver, the mocks behind it, and what it reported.
struct T<'b> {
    d: Drv<'b>,
    net: Rc<RefCell<Net>>,
    clock: MockClock,
    tokens: MockTokens,
    events: Vec<Event>,
    broker: Broker,
    /// Bytes of each socket's stream already read by the broker.
    seen: Vec<usize>,
    /// Every packet the client wrote, per socket.
    sent: Vec<Vec<Sent>>,
}

/// Buffers: receive 256, transmit 1 024, token 64.
struct Mem {
    rx: [u8; 256],
    tx: [u8; 1024],
    token: [u8; 64],
}

impl Mem {
    fn new() -> Box<Mem> {
        Box::new(Mem {
            rx: [0; 256],
            tx: [0; 1024],
            token: [0; 64],
        })
    }
}

impl<'b> T<'b> {
    fn new(cfg: Config<'static>, token: &[u8], mem: &'b mut Mem) -> Self {
        let cfg: &'static Config<'static> = Box::leak(Box::new(cfg));
        let stack = MockStack::default();
        let net = stack.0.clone();
        let clock = MockClock::default();
        let tokens = MockTokens::new(token);
        let bufs = Buffers {
            rx: &mut mem.rx,
            tx: &mut mem.tx,
            token: &mut mem.token,
        };
        let d = Driver::new(cfg, stack, clock.clone(), tokens.clone(), bufs, 7).expect("driver");
        T {
            d,
            net,
            clock,
            tokens,
            events: Vec::new(),
            broker: Broker::default(),
            seen: Vec::new(),
            sent: Vec::new(),
        }
    }

    fn poll_ready(&mut self, ready: Ready) -> Status {
        let s = self.d.poll(ready).expect("driver error");
        while let Some(e) = self.d.poll_event() {
            self.events.push(e);
        }
        s
    }

    fn poll(&mut self) -> Status {
        self.poll_ready(Ready::ALL)
    }

    /// The broker reads what is new and answers per its script; returns the new packets.
    fn serve(&mut self) -> Vec<Sent> {
        let mut net = self.net.borrow_mut();
        let mut fresh = Vec::new();
        for (i, stream) in net.streams.iter().enumerate() {
            if self.seen.len() <= i {
                self.seen.push(0);
                self.sent.push(Vec::new());
            }
            let (p, rest) = packets(&stream[self.seen[i]..]);
            self.seen[i] = stream.len() - rest;
            self.sent[i].extend(p.iter().cloned());
            // Only the current socket's broker answers.
            if i + 1 == net.streams.len() && !net.closed.contains(&(i as u32 + 1)) {
                fresh = p;
            }
        }
        for p in &fresh {
            match p {
                Sent::Connect { .. } => {
                    if let Some(c) = &self.broker.connack {
                        net.rx.push_back(Rx::Bytes(c.clone()));
                    }
                }
                Sent::Publish { id: Some(id), .. } if self.broker.ack => {
                    net.rx.push_back(Rx::Bytes(puback(*id)));
                }
                Sent::Auth { reason: 0x19, .. } => {
                    if let Some(a) = &self.broker.auth_answer {
                        net.rx.push_back(Rx::Bytes(a.clone()));
                    }
                }
                _ => {}
            }
        }
        fresh
    }

    /// Polls and serves until `done` or the job ends, advancing the clock by what the driver
    /// asks to wait (at most `step_ms` at a time); at most `max` rounds.
    fn run(&mut self, max: usize, step_ms: u64, done: impl Fn(&T<'b>) -> bool) -> Status {
        for _ in 0..max {
            let s = self.poll();
            self.serve();
            if done(self) {
                return s;
            }
            match s {
                Status::Finished(_) | Status::Stopped(_) => return s,
                Status::Wait { ms, .. } => {
                    if self.net.borrow().rx.is_empty() && ms > 0 {
                        self.clock.advance(ms.min(step_ms));
                    }
                }
            }
        }
        panic!("not done after {max} rounds; events: {:#?}", self.events);
    }

    fn connects(&self) -> u32 {
        self.net.borrow().connects
    }

    fn disconnects(&self) -> Vec<(End, u64, u32)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Disconnected {
                    why,
                    retry_in_ms,
                    failures,
                    ..
                } => Some((why.clone(), *retry_in_ms, *failures)),
                _ => None,
            })
            .collect()
    }

    /// Every socket was closed once, after the client's last byte.
    fn assert_all_closed(&self) {
        let net = self.net.borrow();
        assert_eq!(net.closes, net.sockets, "one close() per socket");
        self.assert_closed_after_last_byte();
    }

    fn assert_closed_after_last_byte(&self) {
        let net = self.net.borrow();
        for (i, s) in net.closed.iter().enumerate() {
            assert_eq!(
                net.closed_at_len[i],
                net.streams[*s as usize - 1].len(),
                "nothing written to socket {s} after its close"
            );
        }
    }
}

/// The last packet written on each socket.
fn last_packets(t: &T) -> Vec<Sent> {
    t.sent.iter().filter_map(|s| s.last().cloned()).collect()
}

#[test]
fn refused_connack_is_token_rejected_and_no_reconnect_before_the_backoff_allows_it() {
    let mut mem = Mem::new();
    let mut t = T::new(cfg(Auth::Sat, 0), b"tok", &mut mem);
    t.broker.connack = Some(connack_refused(0x87));
    let mut delays = Vec::new();
    for attempt in 1..=4u32 {
        t.run(10, 0, |t| t.disconnects().len() == attempt as usize);
        let (why, delay, failures) = t.disconnects().last().cloned().expect("a disconnect");
        assert_eq!(why, End::TokenRejected(0x87));
        assert_eq!(failures, attempt);
        let ceiling = 100 << (attempt - 1);
        assert!(
            delay >= ceiling / 2 && delay <= ceiling,
            "{delay} for {attempt}"
        );
        delays.push(delay);
        // Time passes one millisecond at a time: no connect() before the delay is over.
        for _ in 0..delay - 1 {
            t.clock.advance(1);
            let s = t.poll();
            assert!(matches!(s, Status::Wait { .. }));
            assert_eq!(t.connects(), attempt, "reconnected early");
        }
        t.clock.advance(1);
    }
    t.poll();
    assert_eq!(t.connects(), 5);
    // Each refused connection got its CONNECT, no DISCONNECT (the broker ends it), one close.
    assert!(t.sent[..4]
        .iter()
        .all(|s| matches!(s[..], [Sent::Connect { .. }])));
    assert_eq!(
        t.net.borrow().closes,
        4,
        "one close() per refused connection"
    );
    t.assert_closed_after_last_byte();
}

#[test]
fn eof_from_the_broker_is_noticed_at_once() {
    let mut mem = Mem::new();
    let mut t = T::new(cfg(Auth::Sat, 0), b"tok", &mut mem);
    t.broker.ack = false;
    t.run(10, 0, |t| t.d.progress().next >= 64);
    t.net.borrow_mut().rx.push_back(Rx::Eof);
    let before = t.clock.0.get();
    t.poll_ready(Ready {
        readable: true,
        writable: false,
    });
    assert_eq!(t.clock.0.get(), before);
    let (why, delay, failures) = t.disconnects()[0].clone();
    assert_eq!((why, failures), (End::PeerClosed, 1));
    assert!(delay <= 100);
    t.assert_all_closed();
}

#[test]
fn every_session_end_writes_disconnect_then_closes_the_socket() {
    // Completed: all acknowledged.
    let mut mem = Mem::new();
    let mut t = T::new(cfg(Auth::Sat, 3), b"tok", &mut mem);
    let s = t.run(20, 0, |_| false);
    assert!(matches!(s, Status::Finished(p) if p.acked_next == 3));
    assert_eq!(last_packets(&t), [Sent::Disconnect(0x00)]);
    assert_eq!(t.disconnects()[0].0, End::Completed);
    t.assert_all_closed();

    // No CONNACK: connect timeout.
    let mut mem = Mem::new();
    let mut t = T::new(cfg(Auth::Sat, 3), b"tok", &mut mem);
    t.broker.connack = None;
    t.run(20, 1_000, |t| !t.disconnects().is_empty());
    assert_eq!(t.disconnects()[0].0, End::ConnectTimeout);
    assert_eq!(t.clock.0.get(), 5_000);
    assert_eq!(last_packets(&t), [Sent::Disconnect(0x00)]);
    t.assert_all_closed();

    // A protocol error: a PUBACK for a message never sent.
    let mut mem = Mem::new();
    let mut t = T::new(cfg(Auth::Sat, 3), b"tok", &mut mem);
    t.broker.connack = Some([CONNACK_OK, &puback(9)].concat());
    t.run(20, 0, |t| !t.disconnects().is_empty());
    assert!(matches!(t.disconnects()[0].0, End::Protocol(_)));
    assert_eq!(last_packets(&t), [Sent::Disconnect(0x82)]);
    t.assert_all_closed();

    // Link lost: the broker stops answering, pings included.
    let mut mem = Mem::new();
    let mut t = T::new(
        Config {
            keepalive_s: 1,
            ..cfg(Auth::Sat, 3)
        },
        b"tok",
        &mut mem,
    );
    t.broker.ack = false;
    t.run(20, 10_000, |t| !t.disconnects().is_empty());
    assert_eq!(t.disconnects()[0].0, End::LinkLost);
    assert_eq!(t.clock.0.get(), 2_000, "ping at 1 s, given up at 2 s");
    let sent = &t.sent[0];
    assert_eq!(
        sent[sent.len() - 2..],
        [Sent::Pingreq, Sent::Disconnect(0x00)]
    );
    t.assert_all_closed();
}

#[test]
fn partial_writes_and_would_block_at_every_byte_boundary_give_the_exact_byte_stream() {
    let job = || Config {
        window_cap: 2,
        ..cfg(Auth::Sat, 4)
    };
    let reference = {
        let mut mem = Mem::new();
        let mut t = T::new(job(), b"tok", &mut mem);
        t.run(50, 0, |_| false);
        let stream = t.net.borrow().streams[0].clone();
        stream
    };
    assert_eq!(
        counters(&whole(&reference)),
        [0, 1, 2, 3],
        "CONNECT, 4 PUBLISH, DISCONNECT"
    );
    for cut in 0..=reference.len() {
        let mut mem = Mem::new();
        let mut t = T::new(job(), b"tok", &mut mem);
        // Stop short at `cut`, then WouldBlock once; then one byte per send for a while.
        t.net.borrow_mut().stall_at = vec![cut];
        t.net.borrow_mut().send_caps = [1; 7].into_iter().chain([0, 3, 0, 1]).collect();
        let s = t.run(400, 0, |_| false);
        assert!(matches!(s, Status::Finished(_)), "cut {cut}: {s:?}");
        assert_eq!(t.net.borrow().streams[0], reference, "cut at byte {cut}");
        assert_eq!(t.connects(), 1);
        t.assert_all_closed();
    }
    // One byte per send, the whole way.
    let mut mem = Mem::new();
    let mut t = T::new(job(), b"tok", &mut mem);
    t.net.borrow_mut().send_default = Some(1);
    t.run(2_000, 0, |_| false);
    assert_eq!(t.net.borrow().streams[0], reference);
}

#[test]
fn qos1_resend_after_reconnect_reencodes_the_same_payloads_with_fresh_ids() {
    let mut mem = Mem::new();
    let mut t = T::new(
        Config {
            window_cap: 4,
            ..cfg(Auth::Sat, 6)
        },
        b"tok",
        &mut mem,
    );
    t.broker.ack = false;
    t.run(10, 0, |t| t.d.progress().next == 4);
    // Only message 0 is acknowledged; then the broker goes away.
    t.net.borrow_mut().push(&puback(1));
    t.net.borrow_mut().rx.push_back(Rx::Eof);
    t.broker.ack = true;
    t.run(100, 1_000, |t| {
        t.sent.len() == 2 && t.d.progress().acked_next == 6
    });
    let first: Vec<_> = t.sent[0]
        .iter()
        .filter(|p| p.n().is_some())
        .cloned()
        .collect();
    let second: Vec<_> = t.sent[1]
        .iter()
        .filter(|p| p.n().is_some())
        .cloned()
        .collect();
    // The acknowledgement opened a slot for 4 before the EOF was read.
    assert_eq!(counters(&first), [0, 1, 2, 3, 4]);
    assert_eq!(counters(&second), [1, 2, 3, 4, 5]);
    // Same payloads, not DUP (a clean start), packet ids from 1 again.
    for (a, b) in first[1..].iter().zip(&second) {
        let (
            Sent::Publish {
                payload: pa,
                dup: false,
                ..
            },
            Sent::Publish {
                payload: pb,
                dup: false,
                ..
            },
        ) = (a, b)
        else {
            panic!("{a:?} {b:?}");
        };
        assert_eq!(pa, pb);
    }
    let ids: Vec<_> = second
        .iter()
        .map(|p| match p {
            Sent::Publish { id, .. } => id.expect("QoS 1 id"),
            _ => 0,
        })
        .collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    assert!(matches!(
        t.sent[1][0],
        Sent::Connect {
            clean_start: true,
            ..
        }
    ));
    assert!(t.events.contains(&Event::Republishing {
        from: 1,
        count: 4,
        dup: false
    }));
    assert_eq!(t.d.progress().duplicates, 4);
}

#[test]
fn qos0_messages_written_but_not_flushed_are_sent_again_never_skipped() {
    let mut mem = Mem::new();
    let mut t = T::new(
        Config {
            qos: Qos::AtMostOnce,
            ..cfg(Auth::Sat, 5)
        },
        b"tok",
        &mut mem,
    );
    // The peer stops reading 3 bytes into the first PUBLISH (CONNECT is 31 bytes).
    t.net.borrow_mut().wall = Some((1, 31 + 3));
    t.run(10, 0, |t| t.d.progress().next == 5);
    assert_eq!(t.d.progress().acked_next, 0, "nothing counted as sent");
    t.net.borrow_mut().rx.push_back(Rx::Eof);
    let s = t.run(50, 1_000, |_| false);
    assert!(matches!(s, Status::Finished(p) if p.acked_next == 5));
    assert_eq!(counters(&t.sent[1]), [0, 1, 2, 3, 4]);
    t.assert_all_closed();
}

#[test]
fn backoff_resets_when_a_connection_made_progress_against_a_cutting_proxy() {
    // The proxy: each connection is cut after some bytes, each one having published
    // and been acknowledged.
    let mut mem = Mem::new();
    let mut t = T::new(
        Config {
            window_cap: 5,
            ..cfg(Auth::Sat, 2_000)
        },
        b"tok",
        &mut mem,
    );
    for cut in 1..=10 {
        t.run(50, 1_000, |t| t.d.progress().acked_next >= cut * 20);
        t.net.borrow_mut().rx.push_back(Rx::Eof);
        t.run(10, 0, |t| t.disconnects().len() == cut as usize);
    }
    let ends = t.disconnects();
    assert_eq!(ends.len(), 10);
    for (why, delay, failures) in &ends {
        assert_eq!(*why, End::PeerClosed);
        assert_eq!(*failures, 1, "each connection made progress: {ends:?}");
        assert!(*delay <= 100, "delay {delay} above the floor: {ends:?}");
    }
    let attempts: Vec<_> = t
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Connecting { attempt } => Some(*attempt),
            _ => None,
        })
        .collect();
    // The cut itself counts as the one failure in a row: never more than "attempt 2".
    assert!(attempts.iter().all(|&a| a <= 2), "{attempts:?}");
    assert!(t.d.progress().acked_next >= 200);
    t.assert_all_closed();
}

#[test]
fn a_broker_that_accepts_then_drops_before_any_progress_still_backs_off() {
    let mut mem = Mem::new();
    let mut t = T::new(cfg(Auth::Sat, 10), b"tok", &mut mem);
    t.broker.connack = Some(CONNACK_OK.to_vec());
    t.broker.ack = false;
    for drop in 1..=6u32 {
        t.run(20, 1_000, |t| t.sent.len() == drop as usize);
        t.net.borrow_mut().rx.push_back(Rx::Eof);
        t.run(10, 0, |t| t.disconnects().len() == drop as usize);
        let (_, delay, failures) = t.disconnects().last().cloned().expect("a disconnect");
        assert_eq!(failures, drop);
        let ceiling = 100u64 << (drop - 1);
        assert!(delay >= ceiling / 2, "delay {delay} after {drop} drops");
    }
}

#[test]
fn a_full_window_with_a_stalled_broker_waits_for_readable_without_busy_looping() {
    let mut mem = Mem::new();
    let mut t = T::new(
        Config {
            window_cap: 10,
            ..cfg(Auth::Sat, 0)
        },
        b"tok",
        &mut mem,
    );
    t.broker.ack = false;
    t.run(10, 0, |t| t.d.progress().next == 10);
    let s = t.poll();
    assert_eq!(
        s,
        Status::Wait {
            ms: 60_000,
            readable: true,
            writable: false
        },
        "until the keepalive ping, or readable"
    );
    let (receives, sends) = {
        let n = t.net.borrow();
        (n.receives, n.sends)
    };
    for _ in 0..100 {
        let s = t.poll_ready(Ready {
            readable: false,
            writable: false,
        });
        assert!(matches!(s, Status::Wait { ms, readable: true, .. } if ms > 0));
    }
    let n = t.net.borrow();
    assert_eq!(
        (n.receives, n.sends),
        (receives, sends),
        "no call without readiness"
    );
}

#[test]
fn k8s_sat_token_change_reauthenticates_on_the_same_connection_without_pausing() {
    let mut mem = Mem::new();
    let mut t = T::new(
        Config {
            interval_ms: 100,
            ..cfg(Auth::K8sSat, 40)
        },
        b"tok1",
        &mut mem,
    );
    t.broker.auth_answer = None;
    t.run(100, 100, |t| t.d.progress().acked_next >= 10);
    t.tokens.rotate(b"tok2", Some(9_999_999_999));
    t.run(10, 100, |t| {
        t.sent[0]
            .iter()
            .any(|p| matches!(p, Sent::Auth { reason: 0x19, .. }))
    });
    let auth_at = t.sent[0].len();
    // The broker takes its time; publishing goes on at its pace meanwhile.
    let before = t.d.progress().next;
    t.run(100, 100, |t| t.d.progress().next >= before + 5);
    assert_eq!(t.clock.0.get() % 100, 0);
    t.net.borrow_mut().push(&auth(0x00));
    let s = t.run(200, 100, |_| false);
    assert!(matches!(s, Status::Finished(p) if p.acked_next == 40 && p.reauths == 1));
    assert_eq!(t.connects(), 1, "re-authenticated in band");
    let Sent::Auth {
        method: Some(m),
        data: Some(d),
        ..
    } = &t.sent[0][auth_at - 1]
    else {
        panic!("{:?}", t.sent[0][auth_at - 1]);
    };
    assert_eq!((m.as_str(), &d[..]), ("K8S-SAT", &b"tok2"[..]));
    assert!(t.events.contains(&Event::Reauthenticated {
        exp: Some(9_999_999_999)
    }));
    // No gap: consecutive PUBLISHes 100 ms apart all the way through.
    assert_eq!(counters(&t.sent[0]), (0..40).collect::<Vec<_>>());
}

#[test]
fn an_identical_token_reread_is_not_a_change() {
    let mut mem = Mem::new();
    let mut t = T::new(
        Config {
            interval_ms: 100,
            ..cfg(Auth::K8sSat, 10)
        },
        b"tok1",
        &mut mem,
    );
    t.run(20, 100, |t| t.d.progress().acked_next >= 3);
    t.tokens.rotate(b"tok1", None);
    let s = t.run(100, 100, |_| false);
    assert!(matches!(s, Status::Finished(_)));
    assert!(!t.sent[0].iter().any(|p| matches!(p, Sent::Auth { .. })));
    assert!(!t
        .events
        .iter()
        .any(|e| matches!(e, Event::TokenChanged { .. })));
    assert_eq!(t.connects(), 1);
}

#[test]
fn a_token_expiring_while_its_reauthentication_is_pending_moves_to_a_new_connection_first() {
    let mut mem = Mem::new();
    let mut t = T::new(
        Config {
            interval_ms: 100,
            reauth_timeout_ms: 600_000,
            ..cfg(Auth::K8sSat, 0)
        },
        b"tok1",
        &mut mem,
    );
    t.tokens.times(10_000, 9_000);
    t.broker.auth_answer = None; // the broker never answers the re-authentication
    t.run(20, 100, |t| t.d.progress().acked_next >= 3);
    t.tokens.rotate(b"tok2", Some(20_000));
    t.run(10, 100, |t| {
        t.sent[0]
            .iter()
            .any(|p| matches!(p, Sent::Auth { reason: 0x19, .. }))
    });
    assert_eq!(t.connects(), 1);
    // The wall clock nears tok1's exp.
    for unix in 9_990..10_000 {
        t.tokens.0.borrow_mut().unix = Some(unix);
        t.run(20, 100, |_| true);
        if t.sent.len() == 2 {
            break;
        }
    }
    let unix = t.tokens.0.borrow().unix.expect("wall clock set");
    assert!(unix < 10_000, "a new connection before exp");
    assert_eq!(t.disconnects()[0].0, End::TokenExpiring);
    assert_eq!(t.sent[0].last(), Some(&Sent::Disconnect(0x00)));
    let Sent::Connect { data: Some(d), .. } = &t.sent[1][0] else {
        panic!("{:?}", t.sent[1]);
    };
    assert_eq!(&d[..], b"tok2");
}

#[test]
fn sat_token_change_drains_disconnects_reconnects_and_republishes_from_the_first_unacked() {
    let mut mem = Mem::new();
    let mut t = T::new(
        Config {
            window_cap: 4,
            drain_timeout_ms: 1_000,
            ..cfg(Auth::Sat, 8)
        },
        b"tok1",
        &mut mem,
    );
    t.broker.ack = false;
    t.run(10, 0, |t| t.d.progress().next == 4);
    t.net.borrow_mut().push(&[puback(1), puback(2)].concat());
    t.poll();
    t.tokens.rotate(b"tok2", None);
    t.run(10, 0, |t| {
        t.events
            .iter()
            .any(|e| matches!(e, Event::TokenChanged { .. }))
    });
    // Messages 2 to 5 are never acknowledged on this connection: the drain gives up at 1 s.
    let s = t.run(100, 100, |t| t.sent.len() == 2 && t.sent[1].len() > 1);
    assert!(matches!(s, Status::Wait { .. }));
    assert_eq!(t.sent[0].last(), Some(&Sent::Disconnect(0x00)));
    assert_eq!(t.disconnects()[0].0, End::Rotation);
    let Sent::Connect {
        password: Some(p), ..
    } = &t.sent[1][0]
    else {
        panic!("{:?}", t.sent[1]);
    };
    assert_eq!(&p[..], b"tok2");
    t.broker.ack = true;
    // Acknowledge what the second connection wrote before the broker turned helpful.
    let ids: Vec<u16> = t.sent[1]
        .iter()
        .filter_map(|p| match p {
            Sent::Publish { id, .. } => *id,
            _ => None,
        })
        .collect();
    for id in ids {
        t.net.borrow_mut().push(&puback(id));
    }
    let s = t.run(100, 100, |_| false);
    assert!(matches!(s, Status::Finished(p) if p.acked_next == 8));
    assert_eq!(counters(&t.sent[1]), [2, 3, 4, 5, 6, 7]);
    assert!(t.events.iter().any(|e| matches!(e, Event::Rotated { .. })));
    assert_eq!(t.connects(), 2);
    t.assert_all_closed();
}

#[test]
fn stop_drains_then_disconnects_then_reports_stopped() {
    let mut mem = Mem::new();
    let mut t = T::new(cfg(Auth::Sat, 0), b"tok", &mut mem);
    t.broker.ack = false;
    t.run(10, 0, |t| t.d.progress().next == 64);
    t.d.stop();
    let s = t.poll();
    assert!(matches!(s, Status::Wait { .. }), "draining: {s:?}");
    let ids: Vec<u16> = (1..=64).collect();
    for id in ids {
        t.net.borrow_mut().push(&puback(id));
    }
    let s = t.run(100, 0, |_| false);
    assert!(matches!(s, Status::Stopped(p) if p.acked_next == 64 && p.next == 64));
    assert_eq!(t.sent[0].last(), Some(&Sent::Disconnect(0x00)));
    assert_eq!(counters(&t.sent[0]).len(), 64, "nothing new after the stop");
    t.assert_all_closed();
}

#[test]
fn stop_gives_up_draining_at_the_deadline() {
    let mut mem = Mem::new();
    let mut t = T::new(cfg(Auth::Sat, 0), b"tok", &mut mem);
    t.broker.ack = false;
    t.run(10, 0, |t| t.d.progress().next == 64);
    t.d.stop();
    let s = t.run(20, 1_000, |_| false);
    assert!(matches!(s, Status::Stopped(p) if p.acked_next == 0));
    assert_eq!(t.clock.0.get(), 5_000);
    assert_eq!(t.sent[0].last(), Some(&Sent::Disconnect(0x00)));
    t.assert_all_closed();
}

#[test]
fn stop_during_a_pending_tcp_connect_ends_at_once() {
    let mut mem = Mem::new();
    let mut t = T::new(cfg(Auth::Sat, 0), b"tok", &mut mem);
    t.net.borrow_mut().connect_blocks = 1_000;
    let s = t.poll();
    assert!(matches!(s, Status::Wait { writable: true, .. }), "{s:?}");
    t.d.stop();
    let s = t.poll();
    assert!(matches!(s, Status::Stopped(_)), "{s:?}");
    assert!(t.net.borrow().streams[0].is_empty());
    t.assert_all_closed();
}

#[test]
fn token_bytes_never_appear_in_events_nor_stay_in_the_token_buffer() {
    const SECRET: &[u8] = b"SECRET-TOKEN-1";
    const SECRET2: &[u8] = b"SECRET-TOKEN-2";
    let mut mem = Mem::new();
    let shown = {
        let mut t = T::new(
            Config {
                interval_ms: 100,
                ..cfg(Auth::K8sSat, 20)
            },
            SECRET,
            &mut mem,
        );
        t.run(50, 100, |t| t.d.progress().acked_next >= 5);
        t.tokens.rotate(SECRET2, Some(9_999_999_999));
        t.run(200, 100, |_| false);
        assert!(t
            .events
            .iter()
            .any(|e| matches!(e, Event::Reauthenticated { .. })));
        // Both tokens did go out on the wire.
        let stream = t.net.borrow().streams[0].clone();
        assert!(stream.windows(SECRET.len()).any(|w| w == SECRET));
        assert!(stream.windows(SECRET2.len()).any(|w| w == SECRET2));
        t.events
            .iter()
            .map(|e| format!("{e:?} {e}"))
            .collect::<Vec<String>>()
            .join("\n")
    };
    assert!(!shown.contains("SECRET"), "{shown}");
    assert!(mem.token.iter().all(|&b| b == 0), "{:?}", mem.token);
}

#[test]
fn a_configured_session_is_resumed_with_dup_and_the_same_packet_ids() {
    let mut mem = Mem::new();
    let mut t = T::new(
        Config {
            window_cap: 4,
            session_expiry_s: 3_600,
            ..cfg(Auth::Sat, 6)
        },
        b"tok",
        &mut mem,
    );
    t.broker.ack = false;
    t.run(10, 0, |t| t.d.progress().next == 4);
    t.net.borrow_mut().rx.push_back(Rx::Eof);
    // The broker kept the session: Session Present.
    t.broker.connack = Some(vec![
        0x20, 0x03, // CONNACK, remaining length 3
        0x01, 0x00, // Session Present, Success
        0x00, // no properties
    ]);
    t.broker.ack = true;
    let s = t.run(100, 1_000, |_| false);
    assert!(
        matches!(s, Status::Finished(p) if p.acked_next == 6),
        "{s:?}"
    );
    assert!(
        matches!(
            t.sent[1][0],
            Sent::Connect {
                clean_start: false,
                session_expiry: 3_600,
                ..
            }
        ),
        "{:?}",
        t.sent[1][0]
    );
    let resent: Vec<(bool, Option<u16>, Option<u64>)> = t.sent[1]
        .iter()
        .filter_map(|p| match p {
            Sent::Publish { dup, id, .. } => Some((*dup, *id, p.n())),
            _ => None,
        })
        .collect();
    assert_eq!(
        resent,
        [
            (true, Some(1), Some(0)),
            (true, Some(2), Some(1)),
            (true, Some(3), Some(2)),
            (true, Some(4), Some(3)),
            (false, Some(5), Some(4)),
            (false, Some(6), Some(5)),
        ]
    );
}

#[test]
fn a_disconnect_that_meets_a_full_socket_is_still_sent_whole_before_close() {
    let mut mem = Mem::new();
    let mut t = T::new(cfg(Auth::Sat, 0), b"tok", &mut mem);
    t.broker.ack = false;
    t.run(10, 0, |t| t.d.progress().next == 64);
    t.d.stop();
    t.poll();
    // The socket is full right when the DISCONNECT goes out.
    let at = t.net.borrow().streams[0].len();
    t.net.borrow_mut().stall_at = vec![at, at + 1];
    for id in 1..=64 {
        t.net.borrow_mut().push(&puback(id));
    }
    let s = t.run(100, 10, |_| false);
    assert!(matches!(s, Status::Stopped(_)), "{s:?}");
    let (p, rest) = packets(&t.net.borrow().streams[0]);
    assert_eq!((p.last(), rest), (Some(&Sent::Disconnect(0x00)), 0));
    t.assert_all_closed();
}

#[test]
fn a_sat_rotation_at_qos0_ends_as_soon_as_everything_written_is_flushed() {
    let mut mem = Mem::new();
    let mut t = T::new(
        Config {
            qos: Qos::AtMostOnce,
            interval_ms: 10,
            ..cfg(Auth::Sat, 0)
        },
        b"tok1",
        &mut mem,
    );
    t.run(20, 10, |t| t.d.progress().next >= 5);
    // A PUBLISH is due and the socket takes it only one byte at a time.
    t.net.borrow_mut().send_default = Some(0);
    for _ in 0..20 {
        t.clock.advance(1);
        t.poll();
    }
    assert!(
        t.d.progress().next > t.d.progress().acked_next,
        "a PUBLISH waits to be flushed"
    );
    t.tokens.rotate(b"tok2", None);
    t.poll();
    assert!(t
        .events
        .iter()
        .any(|e| matches!(e, Event::TokenChanged { .. })));
    t.net.borrow_mut().send_default = None;
    // The socket drains; the rotation should not wait for the drain deadline (5 s).
    let rotating = t.clock.0.get();
    t.run(50, 100, |t| t.sent.len() == 2);
    let waited = t.clock.0.get() - rotating;
    assert!(waited < 100, "the rotation waited {waited} ms");
}

/// Polls up to `n` times, a second apart on both clocks, with nothing readable or writable,
/// until the connection ends; returns the shortest wait asked for.
fn shortest_wait(t: &mut T, n: usize) -> u64 {
    let mut shortest = u64::MAX;
    for _ in 0..n {
        let s = t.poll_ready(Ready {
            readable: false,
            writable: false,
        });
        let Status::Wait { ms, .. } = s else {
            panic!("{s:?}");
        };
        if !t.disconnects().is_empty() {
            // The connection ended (a timeout or the expiry guard): waits of 0 are work now.
            break;
        }
        shortest = shortest.min(ms);
        // A busy caller comes straight back: no time passes on a zero wait.
        if ms > 0 {
            t.clock.advance(ms.min(1_000));
            let mut s = t.tokens.0.borrow_mut();
            s.unix = s.unix.map(|u| u + ms.min(1_000) / 1_000);
        }
    }
    shortest
}

#[test]
fn a_second_token_change_while_a_reauthentication_is_pending_does_not_spin() {
    let mut mem = Mem::new();
    let mut t = T::new(
        Config {
            window_cap: 2,
            ..cfg(Auth::K8sSat, 0)
        },
        b"tok1",
        &mut mem,
    );
    t.broker.ack = false;
    t.broker.auth_answer = None;
    t.run(10, 0, |t| t.d.progress().next == 2);
    t.tokens.rotate(b"tok2", None);
    t.poll();
    t.serve();
    assert!(t.sent[0].iter().any(|p| matches!(p, Sent::Auth { .. })));
    t.tokens.rotate(b"tok3", None);
    let shortest = shortest_wait(&mut t, 50);
    assert!(
        shortest >= 100,
        "waits of {shortest} ms while the broker decides"
    );
}

#[test]
fn an_expiring_token_with_its_reauthentication_pending_does_not_spin_and_still_moves_before_exp() {
    let mut mem = Mem::new();
    let mut t = T::new(
        Config {
            window_cap: 2,
            reauth_timeout_ms: 600_000,
            keepalive_s: 0,
            ..cfg(Auth::K8sSat, 0)
        },
        b"tok1",
        &mut mem,
    );
    t.tokens.times(10_000, 9_000);
    t.broker.ack = false;
    t.broker.auth_answer = None;
    t.run(10, 0, |t| t.d.progress().next == 2);
    // Inside the 60 s margin: a new token is offered and the broker sits on it.
    t.tokens.0.borrow_mut().unix = Some(9_950);
    t.tokens.rotate(b"tok2", Some(20_000));
    t.poll();
    t.serve();
    assert!(t.sent[0].iter().any(|p| matches!(p, Sent::Auth { .. })));
    let shortest = shortest_wait(&mut t, 100);
    assert!(
        shortest >= 100,
        "waits of {shortest} ms while the broker decides"
    );
    // Time went on a second per poll: the connection moved before exp.
    assert_eq!(t.disconnects()[0].0, End::TokenExpiring);
    assert!(t.tokens.0.borrow().unix.expect("unix") < 10_000);
}

#[test]
fn a_deferred_reauthentication_is_retried_after_the_delay_on_the_same_connection() {
    let mut mem = Mem::new();
    let mut t = T::new(
        Config {
            interval_ms: 100,
            ..cfg(Auth::K8sSat, 60)
        },
        b"tok1",
        &mut mem,
    );
    t.broker.auth_answer = Some(auth(0x18));
    t.run(50, 100, |t| t.d.progress().acked_next >= 5);
    t.tokens.rotate(b"tok2", None);
    t.run(10, 100, |t| {
        t.events
            .iter()
            .any(|e| matches!(e, Event::ReauthDeferred { .. }))
    });
    let deferred_at = t.clock.0.get();
    let retry = t
        .events
        .iter()
        .find_map(|e| match e {
            Event::ReauthDeferred { retry_in_ms } => Some(*retry_in_ms),
            _ => None,
        })
        .expect("deferred");
    assert_eq!(retry, 100, "the first retry waits the backoff floor");
    t.broker.auth_answer = Some(auth(0x00));
    let auths = |t: &T| {
        t.sent[0]
            .iter()
            .filter(|p| matches!(p, Sent::Auth { reason: 0x19, .. }))
            .count()
    };
    t.run(50, 10, |t| auths(t) == 2);
    assert!(t.clock.0.get() >= deferred_at + retry, "retried early");
    let s = t.run(200, 100, |_| false);
    assert!(matches!(s, Status::Finished(p) if p.reauths == 1 && p.acked_next == 60));
    assert_eq!(t.connects(), 1);
    assert_eq!(counters(&t.sent[0]), (0..60).collect::<Vec<_>>(), "no gap");
}

#[test]
fn a_refused_failed_or_unanswered_reauthentication_reconnects_with_the_new_token() {
    for (answer, end) in [
        (Some(connack_refused(0x87)), End::ReauthRefused(0x87)), // mosquitto 2.0.11
        (
            Some(vec![0xe0, 0x01, 0x87]),
            End::ServerDisconnect {
                reason: 0x87,
                text: crate::event::Text::new(""),
            },
        ),
        (None, End::ReauthTimeout),
    ] {
        let mut mem = Mem::new();
        let mut t = T::new(
            Config {
                window_cap: 3,
                reauth_timeout_ms: 2_000,
                ..cfg(Auth::K8sSat, 20)
            },
            b"tok1",
            &mut mem,
        );
        t.broker.ack = false;
        t.broker.auth_answer = answer;
        t.run(10, 0, |t| t.d.progress().next == 3);
        t.net.borrow_mut().push(&puback(1));
        t.tokens.rotate(b"tok2", None);
        t.run(10, 0, |t| {
            t.sent[0]
                .iter()
                .any(|p| matches!(p, Sent::Auth { reason: 0x19, .. }))
        });
        t.broker.ack = true;
        t.broker.auth_answer = None;
        let s = t.run(200, 500, |_| false);
        assert!(
            matches!(s, Status::Finished(p) if p.acked_next == 20),
            "{end:?}: {s:?}"
        );
        assert_eq!(t.disconnects()[0].0, end);
        assert_eq!(t.connects(), 2, "{end:?}");
        let Sent::Connect { data: Some(d), .. } = &t.sent[1][0] else {
            panic!("{:?}", t.sent[1]);
        };
        assert_eq!(&d[..], b"tok2", "{end:?}");
        // From the first unacknowledged: 0 was acknowledged, 1 and 2 go again.
        assert_eq!(counters(&t.sent[1])[..2], [1, 2], "{end:?}");
        t.assert_all_closed();
    }
}

#[test]
fn a_job_the_broker_cannot_take_is_a_driver_error_after_disconnect_and_close() {
    let mut mem = Mem::new();
    let mut t = T::new(cfg(Auth::Sat, 0), b"tok", &mut mem);
    #[rustfmt::skip]
    let small: Vec<u8> = vec![
        0x20, 0x08, 0x00, 0x00, // CONNACK, remaining length 8, Success
        0x05, 0x27, 0x00, 0x00, 0x00, 0x08, // Maximum Packet Size 8
    ];
    t.broker.connack = Some(small);
    let mut result = None;
    for _ in 0..5 {
        match t.d.poll(Ready::ALL) {
            Ok(_) => {
                t.serve();
            }
            Err(e) => {
                result = Some(e);
                break;
            }
        }
    }
    assert_eq!(
        result,
        Some(DriverError::PublishTooLarge { len: 29, max: 8 })
    );
    t.serve();
    assert_eq!(t.sent[0].last(), Some(&Sent::Disconnect(0x00)));
    t.assert_all_closed();
}

#[test]
fn a_broker_that_twice_says_our_packets_are_wrong_is_a_driver_error_not_a_retry_loop() {
    let mut mem = Mem::new();
    let mut t = T::new(cfg(Auth::Sat, 0), b"tok", &mut mem);
    // CONNACK, then DISCONNECT 0x95 Packet too large.
    t.broker.connack = Some([CONNACK_OK, &[0xe0, 0x01, 0x95]].concat());
    let mut result = None;
    for _ in 0..100 {
        match t.d.poll(Ready::ALL) {
            Ok(Status::Wait { ms, .. }) => {
                t.serve();
                t.clock.advance(ms.min(1_000));
            }
            Ok(s) => panic!("{s:?}"),
            Err(e) => {
                result = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(result, Some(DriverError::Rejected { reason: 0x95 })),
        "{result:?}"
    );
    assert_eq!(t.connects(), 2);
    t.assert_all_closed();
}

#[test]
fn token_bytes_do_not_linger_in_the_transmit_buffer_once_sent() {
    const SECRET: &[u8] = b"SECRET-TOKEN-LONGER-THAN-A-FEW-PUBLISHES-0123456789";
    const SECRET2: &[u8] = b"SECRET-TOKEN-LONGER-THAN-A-FEW-PUBLISHES-abcdefghij";
    let mut mem = Mem::new();
    {
        let mut t = T::new(
            Config {
                interval_ms: 100,
                ..cfg(Auth::K8sSat, 4)
            },
            SECRET,
            &mut mem,
        );
        t.run(50, 100, |t| t.d.progress().acked_next >= 2);
        t.tokens.rotate(SECRET2, None);
        let s = t.run(50, 100, |_| false);
        assert!(matches!(s, Status::Finished(p) if p.reauths == 1));
    }
    for secret in [SECRET, SECRET2] {
        assert!(
            !mem.tx.windows(secret.len()).any(|w| w == secret),
            "a token is still in the transmit buffer"
        );
    }
}

#[test]
fn a_new_token_is_tried_at_once_after_a_rejected_one() {
    let mut mem = Mem::new();
    let mut t = T::new(cfg(Auth::Sat, 2), b"old", &mut mem);
    t.broker.connack = Some(connack_refused(0x86));
    t.run(10, 1_000, |t| t.disconnects().len() == 2);
    assert!(t.disconnects()[1].1 > 0);
    t.broker.connack = Some(CONNACK_OK.to_vec());
    t.tokens.rotate(b"new", None);
    // No time passes: the backoff does not hold back a token it has not seen refused.
    let s = t.run(20, 0, |_| false);
    assert!(matches!(s, Status::Finished(_)), "{s:?}");
    assert_eq!(t.connects(), 3);
}

#[test]
fn a_busy_poll_loses_no_event_even_when_the_caller_drains_only_after_it() {
    let mut mem = Mem::new();
    let mut t = T::new(
        Config {
            window_cap: 1,
            ..cfg(Auth::Sat, 40)
        },
        b"tok",
        &mut mem,
    );
    // The broker's answers are all waiting, one read each: CONNACK, then a PUBACK for every
    // message as soon as it is written.
    t.net.borrow_mut().push(CONNACK_OK);
    for id in 1..=40 {
        t.net.borrow_mut().push(&puback(id));
    }
    t.broker.connack = None;
    t.broker.ack = false;
    let s = t.run(50, 0, |_| false);
    assert!(
        matches!(s, Status::Finished(p) if p.acked_next == 40),
        "{s:?}"
    );
    let has = |f: fn(&Event) -> bool| t.events.iter().any(f);
    assert!(has(|e| matches!(e, Event::Connecting { .. })));
    assert!(has(|e| matches!(e, Event::Connected { .. })));
    assert!(has(|e| matches!(e, Event::Acked { through: 39 })));
    assert!(has(|e| matches!(e, Event::Finished { .. })));
    // Every message's publication was reported.
    let mut published = Vec::new();
    for e in &t.events {
        if let Event::Published { first, last, .. } = e {
            published.extend(*first..=*last);
        }
    }
    assert_eq!(published, (0..40).collect::<Vec<_>>());
}
