//! A deterministic random walk over the driver: a mostly honest broker that picks its Receive
//! Maximum, acknowledges in order (sometimes with a failure reason), answers pings and
//! re-authentications at random, and now and then sends junk or closes; random send capacities
//! (WouldBlock, one byte, a few, all), clock jumps, token changes and a stop. After every step
//! the invariants a user relies on are checked.

use std::collections::VecDeque;
use std::format;
use std::vec;
use std::vec::Vec;

use super::mock::{MockClock, MockStack, MockTokens, Net, Rx};
use super::*;
use crate::config::{Auth, Config, Qos};
use crate::driver::{Buffers, Driver, Ready, Status};
use crate::event::{End, Event};

/// xorshift64: deterministic, no crate needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const TOKENS: [&[u8]; 3] = [b"RANDOM-SECRET-A", b"RANDOM-SECRET-B", b"RANDOM-SECRET-C"];

/// The broker side of the walk.
#[derive(Default)]
struct Broker {
    /// Bytes of each socket's stream already parsed.
    seen: Vec<usize>,
    /// Whether each stream has ended with a DISCONNECT.
    disconnected: Vec<bool>,
    /// Packet ids of PUBLISHes not yet acknowledged, on the current connection.
    outstanding: VecDeque<u16>,
    /// Window the current connection may use: min(Receive Maximum, cap).
    window: usize,
    /// Bytes to send, delivered in random chunks.
    out: Vec<u8>,
    /// Highest counter seen in a whole PUBLISH.
    max_n: Option<u64>,
    connected: bool,
    /// Whether this connection's CONNACK offered a Topic Alias, and whether it was set up.
    alias_offered: bool,
    alias_set: bool,
}

fn connack(rng: &mut Rng) -> (Vec<u8>, u16, bool) {
    let rm = 1 + rng.below(10) as u16;
    let mut props = vec![0x21, 0x00, rm as u8]; // Receive Maximum
    let alias = rng.chance(50);
    if alias {
        props.extend_from_slice(&[0x22, 0x00, 0x01]); // Topic Alias Maximum 1
    }
    if rng.chance(30) {
        props.extend_from_slice(&[0x13, 0x00, 1 + rng.below(3) as u8]); // Server Keep Alive
    }
    let mut v = vec![0x20, 3 + props.len() as u8, 0x00, 0x00, props.len() as u8];
    v.extend(props);
    (v, rm, alias)
}

fn walk(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let qos = if rng.chance(70) {
        Qos::AtLeastOnce
    } else {
        Qos::AtMostOnce
    };
    let scheme = if rng.chance(50) {
        Auth::K8sSat
    } else {
        Auth::Sat
    };
    let cap = 1 + rng.below(8) as u16;
    let cfg = Config {
        client_id: "c1",
        topic: "t",
        payload_prefix: "p",
        qos,
        auth: scheme,
        interval_ms: [0, 0, 10, 250][rng.below(4) as usize],
        count: [0, 0, 40, 300][rng.below(4) as usize],
        keepalive_s: 1 + rng.below(5) as u16,
        connect_timeout_ms: 1_000,
        drain_timeout_ms: 500,
        reauth_timeout_ms: 2_000,
        window_cap: cap,
        ..Config::default()
    };
    let stack = MockStack::default();
    let net = stack.0.clone();
    let clock = MockClock::default();
    let tokens = MockTokens::new(TOKENS[0]);
    tokens.0.borrow_mut().unix = Some(1_000_000);
    let (mut rx, mut tx, mut token) = ([0u8; 256], [0u8; 1024], [0u8; 64]);
    let bufs = Buffers {
        rx: &mut rx,
        tx: &mut tx,
        token: &mut token,
    };
    let mut d: Driver<'_, '_, MockStack, MockClock, MockTokens> =
        Driver::new(&cfg, stack, clock.clone(), tokens.clone(), bufs, seed).expect("driver");
    let mut b = Broker::default();
    let mut acked_before = 0;
    let mut stopped_at: Option<usize> = None;
    let mut events: Vec<Event> = Vec::new();
    let steps = 600;
    let mut ended = false;
    let mut last_footprint = (0, 0, 0, 0, 0);
    let mut idle_zero_waits = 0;
    for step in 0..steps + 400 {
        let stopping = stopped_at.is_some();
        // Send capacities for the next calls: WouldBlock, one byte, a few, everything.
        {
            let mut n = net.borrow_mut();
            n.send_caps.clear();
            if !stopping {
                for _ in 0..rng.below(4) {
                    let c = [0, 1, 1 + rng.below(40) as usize, usize::MAX][rng.below(4) as usize];
                    n.send_caps.push_back(c);
                }
            }
        }
        let ready = if rng.chance(80) {
            Ready::ALL
        } else {
            Ready {
                readable: rng.chance(50),
                writable: rng.chance(50),
            }
        };
        let status = match d.poll(ready) {
            Ok(s) => s,
            // Junk can make the broker look like it refuses our packets twice: a clean end.
            Err(e) => {
                let _ = format!("{e}");
                ended = true;
                break;
            }
        };
        while let Some(e) = d.poll_event() {
            let shown = format!("{e:?} {e}");
            assert!(!shown.contains("RANDOM-SECRET"), "seed {seed}: {shown}");
            events.push(e);
        }

        // The broker reads what the client wrote.
        {
            let mut n = net.borrow_mut();
            let current = n.sockets as usize;
            for i in 0..n.streams.len() {
                if b.seen.len() <= i {
                    b.seen.push(0);
                    b.disconnected.push(false);
                }
                let (ps, rest) = packets(&n.streams[i][b.seen[i]..]);
                if b.seen[i] == 0 && !ps.is_empty() {
                    assert!(
                        matches!(ps[0], Sent::Connect { .. }),
                        "seed {seed}: stream {i} starts with {:?}",
                        ps[0]
                    );
                }
                b.seen[i] = n.streams[i].len() - rest;
                let live = i + 1 == current && !n.closed.contains(&(i as u32 + 1));
                for p in ps {
                    assert!(
                        !b.disconnected[i],
                        "seed {seed}: {p:?} after DISCONNECT on stream {i}"
                    );
                    if let Some(k) = p.n() {
                        b.max_n = Some(b.max_n.map_or(k, |m| m.max(k)));
                    }
                    if let (true, Sent::Publish { topic, alias, .. }) = (live, &p) {
                        // A Topic Alias only when offered; an empty topic only once it is set.
                        assert!(
                            (alias.is_none() || b.alias_offered)
                                && (!topic.is_empty() || b.alias_set),
                            "seed {seed}: topic {topic:?} alias {alias:?} on stream {i}"
                        );
                        b.alias_set |= alias.is_some();
                    }
                    match p {
                        Sent::Disconnect(_) => b.disconnected[i] = true,
                        _ if !live => {}
                        Sent::Connect { .. } => {
                            b.outstanding.clear();
                            b.out.clear();
                            b.connected = false;
                            if !stopping && rng.chance(5) {
                                b.out.extend(connack_refused(0x87));
                            } else {
                                let (c, rm, alias) = connack(&mut rng);
                                b.alias_offered = alias;
                                b.alias_set = false;
                                b.window = usize::from(rm.min(cap));
                                b.connected = true;
                                b.out.extend(c);
                            }
                        }
                        Sent::Publish { qos: 1, id, .. } => {
                            b.outstanding.push_back(id.expect("QoS 1 id"));
                            assert!(
                                b.outstanding.len() <= b.window,
                                "seed {seed}: {} in flight, window {}",
                                b.outstanding.len(),
                                b.window
                            );
                        }
                        Sent::Pingreq => b.out.extend_from_slice(PINGRESP),
                        Sent::Auth { reason: 0x19, .. } => match rng.below(5) {
                            0 | 1 => b.out.extend(auth(0x00)),
                            2 => b.out.extend(auth(0x18)),
                            3 if !stopping => b.out.extend(connack_refused(0x87)),
                            _ => {}
                        },
                        _ => {}
                    }
                }
            }
            if current > 0 && n.closed.contains(&(current as u32)) {
                b.out.clear();
                b.outstanding.clear();
                b.connected = false;
            }
            // Acknowledge some, in order.
            if b.connected {
                for _ in 0..rng.below(b.outstanding.len() as u64 + 1) {
                    let id = b.outstanding.pop_front().expect("outstanding");
                    if rng.chance(5) {
                        b.out.extend(puback_reason(id, 0x97));
                    } else {
                        b.out.extend(puback(id));
                    }
                }
            }
            // Deliver part of what the broker has to say.
            if !b.out.is_empty() && rng.chance(80) {
                let k = 1 + rng.below(b.out.len() as u64) as usize;
                let chunk: Vec<u8> = b.out.drain(..k).collect();
                n.rx.push_back(Rx::Bytes(chunk));
            }
            if !stopping && current > 0 {
                if rng.chance(1) {
                    n.rx.push_back(Rx::Eof);
                } else if rng.chance(1) {
                    let junk: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                    n.rx.push_back(Rx::Bytes(junk));
                }
            }
        }

        // Invariants.
        let p = d.progress();
        assert!(
            p.acked_next >= acked_before,
            "seed {seed} step {step}: acked went back"
        );
        acked_before = p.acked_next;
        assert!(
            p.acked_next <= p.sent_high,
            "seed {seed}: acked past sent {p:?}"
        );
        if p.acked_next > cfg.start {
            let max_n = b.max_n.expect("a PUBLISH reached the broker");
            assert!(
                p.acked_next <= max_n + 1,
                "seed {seed}: acknowledged through {} but the broker saw only up to {max_n}",
                p.acked_next - 1
            );
        }
        if qos == Qos::AtLeastOnce {
            assert!(
                p.next - p.acked_next <= u64::from(cap),
                "seed {seed}: {p:?}"
            );
        }
        check_net(&net.borrow(), seed);

        // No busy waiting: a zero wait is followed by work (bytes, events, a new socket).
        let footprint = {
            let n = net.borrow();
            let bytes: usize = n.streams.iter().map(Vec::len).sum();
            (bytes, n.sockets, n.closes, events.len(), n.rx.len())
        };
        if matches!(status, Status::Wait { ms: 0, .. }) && footprint == last_footprint {
            idle_zero_waits += 1;
            assert!(
                idle_zero_waits < 20,
                "seed {seed} step {step}: {idle_zero_waits} zero waits without work; {:?}",
                events.last()
            );
        } else {
            idle_zero_waits = 0;
        }
        last_footprint = footprint;
        match status {
            Status::Finished(_) | Status::Stopped(_) => {
                ended = true;
                break;
            }
            Status::Wait { ms, .. } => {
                if rng.chance(60) || ms == u64::MAX {
                    clock.advance(rng.below(ms.min(1_500) + 1));
                }
            }
        }
        if !stopping {
            let mut s = tokens.0.borrow_mut();
            s.unix = Some(1_000_000 + clock.0.get() / 1_000);
            if rng.chance(2) {
                drop(s);
                let t = TOKENS[rng.below(3) as usize];
                // Some tokens live long, some expire within the walk (inside the 60 s margin).
                let unix = 1_000_000 + clock.0.get() / 1_000;
                let exp = if rng.chance(50) {
                    unix + 1_000_000
                } else {
                    unix + 30 + rng.below(90)
                };
                tokens.rotate(t, Some(exp));
            }
        }
        let stop_now = step >= steps / 2 && rng.chance(2) || step == steps;
        if stopped_at.is_none() && stop_now {
            stopped_at = Some(step);
            d.stop();
            // The broker stays honest from here on: the stop must end with our DISCONNECT.
            net.borrow_mut().rx.retain(|r| matches!(r, Rx::Bytes(_)));
        }
    }
    assert!(
        ended,
        "seed {seed}: no end within the step bound; {events:#?}"
    );
    drop(d);
    assert!(
        token.iter().all(|&x| x == 0),
        "seed {seed}: token left in its buffer"
    );
    for t in TOKENS {
        assert!(
            !tx.windows(t.len()).any(|w| w == t),
            "seed {seed}: a token left in the transmit buffer"
        );
    }
    // A stop that ended a connection ended it with DISCONNECT, written whole.
    let net = net.borrow();
    if let Some(Event::Disconnected {
        why: End::Stopped, ..
    }) = events
        .iter()
        .rev()
        .find(|e| matches!(e, Event::Disconnected { .. }))
    {
        let last = net.streams.last().expect("a stream");
        let (ps, rest) = packets(last);
        assert_eq!(rest, 0, "seed {seed}: a partial packet after the stop");
        assert!(
            matches!(ps.last(), Some(Sent::Disconnect(_))),
            "seed {seed}: last packet {:?}",
            ps.last()
        );
    }
}

/// Every socket closed at most once, and nothing written after its close.
fn check_net(n: &Net, seed: u64) {
    assert!(n.closes <= n.sockets, "seed {seed}");
    for (i, s) in n.closed.iter().enumerate() {
        assert_eq!(
            n.closed_at_len[i],
            n.streams[*s as usize - 1].len(),
            "seed {seed}: bytes after close on socket {s}"
        );
    }
}

#[test]
fn random_brokers_send_paths_clocks_tokens_and_stops_keep_the_invariants() {
    for seed in 1..=60 {
        walk(seed);
    }
}
