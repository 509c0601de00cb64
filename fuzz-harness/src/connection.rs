//! `connection`: the engine fed an arbitrary script of broker byte chunks, clock advances, write
//! capacities (0 and 1 byte included), token changes and stop requests.
//!
//! The same [`Script`] runs twice: against the [`Driver`] over a mock stack, clock and token
//! source, and against a bare [`Connection`] whose every transmitted byte the harness owns.
//! Invariants checked after every step:
//! - no panic; the script's end (stop, time passing, a silent broker) reaches a stop in a bounded
//!   number of polls (no hang);
//! - acked-through (`acked_next`) and the PUBACK count never decrease, and acked-through never
//!   passes what was sent (`sent_high`);
//! - QoS 1 messages in flight ≤ the window (`window_cap`, and the window of the CONNACK);
//! - nothing counted as sent that was not written: the bare connection's `sent` equals the
//!   PUBLISH packets it handed out, the driver's is at least those the stack took, and at QoS 0
//!   every message counted as delivered was taken by the stack whole;
//! - every transmitted byte stream parses as MQTT v5 client packets (`satmqtt::wire::parse`):
//!   CONNECT first, then PUBLISH (our topic, QoS and payload), PINGREQ, AUTH or DISCONNECT, and
//!   nothing after a DISCONNECT;
//! - after a stop no PUBLISH is written, and a stop that owes a DISCONNECT ends with it as the
//!   last packet.
//!
//! Memory is bounded by construction (the core has no allocator; every buffer is the harness's,
//! of fixed size), so it is not measured here.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;

use arbitrary::{Arbitrary, Unstructured};
use satmqtt::connection::{Resume, Why};
use satmqtt::embedded_nal::{nb, TcpClientStack, TcpError, TcpErrorKind};
use satmqtt::embedded_time::{clock, fraction::Fraction, Clock, Instant};
use satmqtt::wire::{self, Packet};
use satmqtt::{
    tx_len, Auth, BackoffConfig, Buffers, Config, Connection, Driver, DriverError, End, Event,
    Progress, Qos, Ready, Status, Token, TokenSource, RX_MIN,
};

const CLIENT_ID: &str = "fuzz";
const TOPIC: &str = "t/fuzz";
const PREFIX: &str = "p";
/// Token buffer of the driver: the longest token the mock source hands out.
const TOKEN_BUF: usize = 64;
/// Steps taken from one input at most (each is bounded work).
const MAX_STEPS: usize = 256;

/// The job and the environment, chosen by the fuzzer (each field is reduced to a useful range
/// by [`config`]).
#[derive(Debug, Clone, Default, Arbitrary)]
pub struct Setup {
    /// QoS 1 (else 0).
    pub qos1: bool,
    /// `K8S-SAT` (else `$sat`).
    pub k8s_sat: bool,
    /// Window cap, 1..=7.
    pub window_cap: u8,
    /// Interval, 0, 10, 20 or 30 ms.
    pub interval_ms: u8,
    /// Messages, 0 (forever) ..=31.
    pub count: u8,
    /// Keepalive, 0..=3 s.
    pub keepalive_s: u8,
    /// Ask for a session (expiry 60 s).
    pub session: bool,
    /// Receive buffer beyond [`RX_MIN`] (bare connection).
    pub rx_extra: u8,
    /// Connect calls answering WouldBlock before success, 0..=2.
    pub connect_delays: u8,
    /// The token source knows the wall clock (so `exp` matters).
    pub wall_clock: bool,
    /// The first token's `exp`, seconds after the start.
    pub first_token_exp_s: Option<u16>,
    /// Backoff jitter seed.
    pub seed: u8,
}

impl Setup {
    /// Bytes that [`Setup::arbitrary`] reads back as `self`.
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend([
            u8::from(self.qos1),
            u8::from(self.k8s_sat),
            self.window_cap,
            self.interval_ms,
            self.count,
            self.keepalive_s,
            u8::from(self.session),
            self.rx_extra,
            self.connect_delays,
            u8::from(self.wall_clock),
        ]);
        opt(out, self.first_token_exp_s.map(u16::to_le_bytes));
        out.push(self.seed);
    }
}

fn opt<const N: usize>(out: &mut Vec<u8>, v: Option<[u8; N]>) {
    match v {
        Some(b) => {
            out.push(1);
            out.extend(b);
        }
        None => out.push(0),
    }
}

/// One thing that happens to the engine.
#[derive(Debug, Clone)]
pub enum Step {
    /// Raw bytes from the broker.
    Bytes(Vec<u8>),
    /// A CONNACK with these fields.
    Connack {
        /// Session Present.
        session_present: bool,
        /// Index into a list of CONNACK reason codes.
        reason: u8,
        /// Receive Maximum (0 is left out: the codec refuses it).
        receive_maximum: Option<u16>,
        /// Maximum Packet Size (0 is left out).
        maximum_packet_size: Option<u32>,
        /// Server Keep Alive.
        server_keep_alive: Option<u8>,
        /// Topic Alias Maximum.
        topic_alias_maximum: Option<u8>,
        /// Maximum QoS 0 (true) or 1 (false).
        maximum_qos_0: Option<bool>,
    },
    /// A PUBACK for the oldest PUBLISH written and not yet acknowledged by the script.
    AckNext {
        /// Index into the PUBACK reason codes.
        reason: u8,
    },
    /// A PUBACK with any packet identifier.
    Ack(u16),
    /// An AUTH.
    Auth {
        /// Index into the AUTH reason codes.
        reason: u8,
        /// Carry Authentication Method `K8S-SAT`.
        method: bool,
    },
    /// A DISCONNECT from the broker.
    Disconnect {
        /// Index into the DISCONNECT reason codes.
        reason: u8,
        /// With a Reason String.
        text: bool,
    },
    /// PINGRESP.
    Pingresp,
    /// The broker closes TCP.
    Eof,
    /// The next read fails.
    RecvError,
    /// The next write fails.
    SendError,
    /// Milliseconds pass.
    Advance(u16),
    /// Seconds pass.
    AdvanceSeconds(u8),
    /// How many bytes the socket takes per step from now on (0, 1, a few, unlimited).
    WriteCap(u16),
    /// The token source has a new token.
    Token {
        /// Which letter the token repeats.
        fill: u8,
        /// Its length (1..=64).
        len: u8,
        /// Its `exp`, seconds after the script's wall-clock start.
        exp_s: Option<u16>,
    },
    /// The token source fails from now on (until the next `Token`).
    TokenFails,
    /// A stop request (SIGTERM).
    Stop,
    /// Just poll.
    Poll,
}

/// Steps are read by hand (a tag byte, then the fields, `Bytes` as a length byte and the bytes)
/// rather than derived, so seed scripts can be written back as bytes ([`Script::encode`]).
impl<'a> Arbitrary<'a> for Step {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u8::arbitrary(u)? % 17 {
            0 => {
                let len = usize::from(u8::arbitrary(u)?).min(u.len());
                Step::Bytes(u.bytes(len)?.to_vec())
            }
            1 => Step::Connack {
                session_present: u.arbitrary()?,
                reason: u.arbitrary()?,
                receive_maximum: u.arbitrary()?,
                maximum_packet_size: u.arbitrary()?,
                server_keep_alive: u.arbitrary()?,
                topic_alias_maximum: u.arbitrary()?,
                maximum_qos_0: u.arbitrary()?,
            },
            2 => Step::AckNext {
                reason: u.arbitrary()?,
            },
            3 => Step::Ack(u.arbitrary()?),
            4 => Step::Auth {
                reason: u.arbitrary()?,
                method: u.arbitrary()?,
            },
            5 => Step::Disconnect {
                reason: u.arbitrary()?,
                text: u.arbitrary()?,
            },
            6 => Step::Pingresp,
            7 => Step::Eof,
            8 => Step::RecvError,
            9 => Step::SendError,
            10 => Step::Advance(u.arbitrary()?),
            11 => Step::AdvanceSeconds(u.arbitrary()?),
            12 => Step::WriteCap(u.arbitrary()?),
            13 => Step::Token {
                fill: u.arbitrary()?,
                len: u.arbitrary()?,
                exp_s: u.arbitrary()?,
            },
            14 => Step::TokenFails,
            15 => Step::Stop,
            _ => Step::Poll,
        })
    }
}

impl Step {
    /// Bytes that [`Step::arbitrary`] reads back as `self` (`Bytes` longer than 255 are cut).
    fn encode(&self, out: &mut Vec<u8>) {
        let b = u8::from;
        match *self {
            Step::Bytes(ref bytes) => {
                let bytes = &bytes[..bytes.len().min(255)];
                out.extend([0, bytes.len() as u8]);
                out.extend(bytes);
            }
            Step::Connack {
                session_present,
                reason,
                receive_maximum,
                maximum_packet_size,
                server_keep_alive,
                topic_alias_maximum,
                maximum_qos_0,
            } => {
                out.extend([1, b(session_present), reason]);
                opt(out, receive_maximum.map(u16::to_le_bytes));
                opt(out, maximum_packet_size.map(u32::to_le_bytes));
                opt(out, server_keep_alive.map(|v| [v]));
                opt(out, topic_alias_maximum.map(|v| [v]));
                opt(out, maximum_qos_0.map(|v| [b(v)]));
            }
            Step::AckNext { reason } => out.extend([2, reason]),
            Step::Ack(id) => {
                out.push(3);
                out.extend(id.to_le_bytes());
            }
            Step::Auth { reason, method } => out.extend([4, reason, b(method)]),
            Step::Disconnect { reason, text } => out.extend([5, reason, b(text)]),
            Step::Pingresp => out.push(6),
            Step::Eof => out.push(7),
            Step::RecvError => out.push(8),
            Step::SendError => out.push(9),
            Step::Advance(ms) => {
                out.push(10);
                out.extend(ms.to_le_bytes());
            }
            Step::AdvanceSeconds(s) => out.extend([11, s]),
            Step::WriteCap(v) => {
                out.push(12);
                out.extend(v.to_le_bytes());
            }
            Step::Token { fill, len, exp_s } => {
                out.extend([13, fill, len]);
                opt(out, exp_s.map(u16::to_le_bytes));
            }
            Step::TokenFails => out.push(14),
            Step::Stop => out.push(15),
            Step::Poll => out.push(16),
        }
    }
}

/// A whole fuzz input.
#[derive(Debug, Clone)]
pub struct Script {
    /// The job and the environment.
    pub setup: Setup,
    /// What happens, in order.
    pub steps: Vec<Step>,
}

impl Script {
    /// The fuzz input that decodes to this script (for seed corpora).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.setup.encode(&mut out);
        for step in &self.steps {
            step.encode(&mut out);
        }
        out
    }
}

impl<'a> Arbitrary<'a> for Script {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let setup = Setup::arbitrary(u)?;
        let mut steps = Vec::new();
        while !u.is_empty() && steps.len() < MAX_STEPS {
            steps.push(Step::arbitrary(u)?);
        }
        Ok(Script { setup, steps })
    }
}

/// Runs the script `data` decodes to against the driver and a bare connection; panics on a
/// broken invariant. Inputs too short to decode a script are ignored.
pub fn run(data: &[u8]) {
    let Ok(script) = Script::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    run_script(&script);
}

/// Runs `script` against the driver, then against a bare connection.
pub fn run_script(script: &Script) {
    let cfg = config(&script.setup);
    DriverRun::new(&cfg, &script.setup).run(&script.steps);
    ConnectionRun::new(&cfg, &script.setup).run(&script.steps);
}

fn config(s: &Setup) -> Config<'static> {
    let mut cfg = Config::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 1883)));
    cfg.client_id = CLIENT_ID;
    cfg.topic = TOPIC;
    cfg.payload_prefix = PREFIX;
    cfg.qos = if s.qos1 {
        Qos::AtLeastOnce
    } else {
        Qos::AtMostOnce
    };
    cfg.auth = if s.k8s_sat { Auth::K8sSat } else { Auth::Sat };
    cfg.window_cap = u16::from(s.window_cap % 8).max(1);
    cfg.interval_ms = u64::from(s.interval_ms % 4) * 10;
    cfg.count = u64::from(s.count % 32);
    cfg.start = 7;
    cfg.keepalive_s = u16::from(s.keepalive_s % 4);
    cfg.session_expiry_s = if s.session { 60 } else { 0 };
    cfg.connect_timeout_ms = 1_000;
    cfg.drain_timeout_ms = 500;
    cfg.reauth_timeout_ms = 1_000;
    cfg.expiry_margin_s = 10;
    cfg.backoff = BackoffConfig {
        floor_ms: 10,
        cap_ms: 1_000,
        reset_after_ms: 2_000,
    };
    cfg
}

fn end_of(cfg: &Config<'_>) -> u64 {
    if cfg.count == 0 {
        u64::MAX
    } else {
        cfg.start + cfg.count
    }
}

fn pick(table: &[u8], i: u8) -> u8 {
    table[usize::from(i) % table.len()]
}

const CONNACK_REASONS: &[u8] = &[0x00, 0x00, 0x00, 0x80, 0x86, 0x87, 0x88, 0x8C, 0x97, 0x9C];
const PUBACK_REASONS: &[u8] = &[0x00, 0x00, 0x00, 0x10, 0x80, 0x87, 0x97];
const AUTH_REASONS: &[u8] = &[0x00, 0x18, 0x19];
const DISCONNECT_REASONS: &[u8] = &[0x00, 0x81, 0x82, 0x8B, 0x8E, 0x98, 0x9C];

/// The bytes a broker sends for a canned step (`None` for steps that are not broker packets);
/// `next_pid` is the identifier of the oldest PUBLISH not yet acknowledged by the script.
fn broker_bytes(step: &Step, next_pid: Option<u16>) -> Option<Vec<u8>> {
    let packet = match *step {
        Step::Bytes(ref b) => return Some(b.clone()),
        Step::Connack {
            session_present,
            reason,
            receive_maximum,
            maximum_packet_size,
            server_keep_alive,
            topic_alias_maximum,
            maximum_qos_0,
        } => {
            let reason = pick(CONNACK_REASONS, reason);
            Packet::Connack(wire::Connack {
                session_present: session_present && reason < 0x80,
                reason,
                receive_maximum: receive_maximum.filter(|&n| n > 0),
                maximum_packet_size: maximum_packet_size.filter(|&n| n > 0),
                server_keep_alive: server_keep_alive.map(|s| u16::from(s % 4)),
                topic_alias_maximum: topic_alias_maximum.map(u16::from),
                maximum_qos: maximum_qos_0.map(|z| u8::from(!z)),
                ..Default::default()
            })
        }
        Step::AckNext { reason } => Packet::Puback(wire::Puback {
            packet_id: next_pid.unwrap_or(1),
            reason: pick(PUBACK_REASONS, reason),
            reason_string: None,
        }),
        Step::Ack(id) => Packet::Puback(wire::Puback {
            packet_id: id.max(1),
            reason: 0,
            reason_string: None,
        }),
        Step::Auth { reason, method } => Packet::Auth(wire::Auth {
            reason: pick(AUTH_REASONS, reason),
            method: method.then_some(satmqtt::K8S_SAT_METHOD),
            data: None,
            reason_string: None,
        }),
        Step::Disconnect { reason, text } => Packet::Disconnect(wire::Disconnect {
            reason: pick(DISCONNECT_REASONS, reason),
            reason_string: text.then_some("going away\u{1b}[31m"),
            ..Default::default()
        }),
        Step::Pingresp => Packet::Pingresp,
        _ => return None,
    };
    let mut buf = vec![0u8; wire::encoded_len(&packet).expect("canned packet length")];
    wire::emit(&packet, &mut buf).expect("canned packet");
    Some(buf)
}

fn write_cap(v: u16) -> usize {
    match v % 4 {
        0 => 0,
        1 => 1,
        2 => usize::from(v >> 2),
        _ => usize::MAX,
    }
}

/// What the harness learned from one transmitted byte stream (one TCP connection).
#[derive(Debug, Default)]
struct Stream {
    bytes: Vec<u8>,
    /// Bytes parsed so far (whole packets).
    parsed: usize,
    packets: usize,
    publishes: u64,
    /// End of the DISCONNECT, once one was written.
    disconnect_end: Option<usize>,
    /// Packet identifiers of QoS 1 PUBLISHes, in order; `acked` of them the script acknowledged.
    pids: Vec<u16>,
    acked: usize,
}

/// Checks that every transmitted byte is a client packet of this job.
struct Checker<'c> {
    cfg: &'c Config<'c>,
    end: u64,
    /// Counter values whose PUBLISH was written whole.
    written: std::collections::BTreeSet<u64>,
    /// Smallest counter value from `cfg.start` on never written whole.
    written_through: u64,
}

impl<'c> Checker<'c> {
    fn new(cfg: &'c Config<'c>) -> Self {
        Checker {
            cfg,
            end: end_of(cfg),
            written: Default::default(),
            written_through: cfg.start,
        }
    }

    /// Parses what `s` gained since the last call.
    fn update(&mut self, s: &mut Stream) {
        if let Some(end) = s.disconnect_end {
            assert_eq!(s.bytes.len(), end, "bytes written after DISCONNECT");
            return;
        }
        loop {
            let rest = &s.bytes[s.parsed..];
            let (packet, len) = match wire::parse(rest) {
                Ok(Some(p)) => p,
                Ok(None) => return,
                Err(e) => panic!(
                    "transmitted bytes are not MQTT v5 ({e}) at offset {} of {:02x?}",
                    s.parsed, s.bytes
                ),
            };
            let first = s.packets == 0;
            s.packets += 1;
            s.parsed += len;
            match packet {
                Packet::Connect(c) => {
                    assert!(first, "CONNECT after the first packet");
                    assert_eq!(c.client_id, CLIENT_ID);
                    match self.cfg.auth {
                        Auth::Sat => assert_eq!(c.username, Some(satmqtt::SAT_USER)),
                        Auth::K8sSat => assert_eq!(c.auth_method, Some(satmqtt::K8S_SAT_METHOD)),
                    }
                }
                _ if first => panic!("first packet is {packet:?}, not CONNECT"),
                Packet::Publish(p) => {
                    assert_eq!(p.qos, u8::from(self.cfg.qos), "PUBLISH with another QoS");
                    assert!(p.topic == TOPIC || (p.topic.is_empty() && p.topic_alias.is_some()));
                    let digits = p
                        .payload
                        .strip_prefix(PREFIX.as_bytes())
                        .expect("payload starts with the prefix");
                    let n: u64 = std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| d.parse().ok())
                        .expect("payload ends with a decimal counter");
                    assert!(
                        n >= self.cfg.start && n < self.end,
                        "counter {n} outside the job"
                    );
                    if let Some(id) = p.packet_id {
                        s.pids.push(id);
                    }
                    s.publishes += 1;
                    self.written.insert(n);
                    while self.written.contains(&self.written_through) {
                        self.written_through += 1;
                    }
                }
                Packet::Pingreq => {}
                Packet::Auth(a) => {
                    assert_eq!(self.cfg.auth, Auth::K8sSat, "AUTH on a $sat connection");
                    assert_eq!(a.reason, 0x19);
                    assert_eq!(a.method, Some(satmqtt::K8S_SAT_METHOD));
                }
                Packet::Disconnect(_) => {
                    s.disconnect_end = Some(s.parsed);
                    assert_eq!(s.parsed, s.bytes.len(), "bytes written after DISCONNECT");
                    return;
                }
                other => panic!("a client never sends {other:?}"),
            }
        }
    }
}

/// Progress invariants common to both runs.
#[derive(Debug, Default)]
struct Monotonic {
    acked_next: u64,
    acked: u64,
}

impl Monotonic {
    fn check(&mut self, p: &Progress, window: u64) {
        assert!(
            p.acked_next >= self.acked_next,
            "acked-through went back: {p:?}"
        );
        assert!(p.acked >= self.acked, "PUBACK count went back: {p:?}");
        assert!(
            p.acked_next <= p.sent_high,
            "acked-through passed what was sent: {p:?}"
        );
        assert!(p.next >= p.acked_next, "next below acked-through: {p:?}");
        assert!(
            p.next - p.acked_next <= window,
            "{} in flight, window {window}: {p:?}",
            p.next - p.acked_next
        );
        self.acked_next = p.acked_next;
        self.acked = p.acked;
    }
}

// ---- the driver over mocks ----

#[derive(Debug, Default)]
struct Net {
    inbox: VecDeque<u8>,
    /// Broker bytes scripted while no socket was open: the next connection reads them.
    next_inbox: VecDeque<u8>,
    eof: bool,
    recv_error: bool,
    send_error: bool,
    /// Bytes the socket still takes in this step.
    budget: usize,
    streams: Vec<Stream>,
    open: Option<usize>,
    connect_delays: u8,
    pending_connect: u8,
}

/// A stack with one socket at a time, fed by the script.
#[derive(Clone)]
struct MockStack(Rc<RefCell<Net>>);

/// The mock stack's only error.
#[derive(Debug)]
struct NetError;

impl TcpError for NetError {
    fn kind(&self) -> TcpErrorKind {
        TcpErrorKind::PipeClosed
    }
}

impl TcpClientStack for MockStack {
    type TcpSocket = usize;
    type Error = NetError;

    fn socket(&mut self) -> Result<usize, NetError> {
        let mut n = self.0.borrow_mut();
        assert!(n.open.is_none(), "a second socket while one is open");
        n.streams.push(Stream::default());
        let id = n.streams.len() - 1;
        n.open = Some(id);
        n.inbox = std::mem::take(&mut n.next_inbox);
        n.eof = false;
        n.pending_connect = n.connect_delays % 3;
        Ok(id)
    }

    fn connect(&mut self, s: &mut usize, _: SocketAddr) -> nb::Result<(), NetError> {
        let mut n = self.0.borrow_mut();
        assert_eq!(n.open, Some(*s), "connect on a closed socket");
        if n.pending_connect > 0 {
            n.pending_connect -= 1;
            return Err(nb::Error::WouldBlock);
        }
        Ok(())
    }

    fn send(&mut self, s: &mut usize, data: &[u8]) -> nb::Result<usize, NetError> {
        let mut n = self.0.borrow_mut();
        assert_eq!(n.open, Some(*s), "send on a closed socket");
        if std::mem::take(&mut n.send_error) {
            return Err(nb::Error::Other(NetError));
        }
        let take = data.len().min(n.budget);
        if take == 0 {
            return Err(nb::Error::WouldBlock);
        }
        n.budget -= take;
        n.streams[*s].bytes.extend_from_slice(&data[..take]);
        Ok(take)
    }

    fn receive(&mut self, s: &mut usize, buf: &mut [u8]) -> nb::Result<usize, NetError> {
        let mut n = self.0.borrow_mut();
        assert_eq!(n.open, Some(*s), "receive on a closed socket");
        assert!(!buf.is_empty(), "receive into an empty buffer");
        if std::mem::take(&mut n.recv_error) {
            return Err(nb::Error::Other(NetError));
        }
        if n.inbox.is_empty() {
            return if n.eof {
                Ok(0)
            } else {
                Err(nb::Error::WouldBlock)
            };
        }
        let take = buf.len().min(n.inbox.len());
        for (slot, b) in buf.iter_mut().zip(n.inbox.drain(..take)) {
            *slot = b;
        }
        Ok(take)
    }

    fn close(&mut self, s: usize) -> Result<(), NetError> {
        let mut n = self.0.borrow_mut();
        assert_eq!(n.open, Some(s), "close of a socket not open");
        n.open = None;
        n.inbox.clear();
        Ok(())
    }
}

/// Milliseconds the script controls.
struct MockClock(Rc<Cell<u64>>);

impl Clock for MockClock {
    type T = u64;
    const SCALING_FACTOR: Fraction = Fraction::new(1, 1_000);

    fn try_now(&self) -> Result<Instant<Self>, clock::Error> {
        Ok(Instant::new(self.0.get()))
    }
}

#[derive(Debug)]
struct Tokens {
    token: Vec<u8>,
    exp: Option<u64>,
    changed: bool,
    fails: bool,
    /// Unix seconds at clock 0, when the source knows the wall clock.
    unix_base: Option<u64>,
    now_ms: Rc<Cell<u64>>,
}

/// A token source the script changes.
struct MockTokens(Rc<RefCell<Tokens>>);

/// The mock source's error.
#[derive(Debug)]
struct Unavailable;

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("token unavailable")
    }
}

impl TokenSource for MockTokens {
    type Error = Unavailable;

    fn load(&mut self, buf: &mut [u8]) -> Result<Token, Unavailable> {
        let t = self.0.borrow();
        if t.fails || t.token.len() > buf.len() {
            return Err(Unavailable);
        }
        buf[..t.token.len()].copy_from_slice(&t.token);
        Ok(Token {
            len: t.token.len(),
            exp: t.exp,
        })
    }

    fn changed(&mut self) -> bool {
        std::mem::take(&mut self.0.borrow_mut().changed)
    }

    fn unix_now(&self) -> Option<u64> {
        let t = self.0.borrow();
        t.unix_base.map(|b| b + t.now_ms.get() / 1_000)
    }
}

const UNIX_BASE: u64 = 1_700_000_000;

/// The driver over the mocks.
type FuzzDriver<'c, 'b> = Driver<'c, 'b, MockStack, MockClock, MockTokens>;

struct DriverRun<'c> {
    cfg: &'c Config<'c>,
    setup_seed: u64,
    net: Rc<RefCell<Net>>,
    now: Rc<Cell<u64>>,
    tokens: Rc<RefCell<Tokens>>,
    cap: usize,
    checker: Checker<'c>,
    mono: Monotonic,
    window: u64,
    /// The stream of the last connection that ended, and whether its DISCONNECT was sent.
    last_disconnect: Option<(usize, bool)>,
    finished: bool,
}

impl<'c> DriverRun<'c> {
    fn new(cfg: &'c Config<'c>, s: &Setup) -> Self {
        let now = Rc::new(Cell::new(0));
        let unix_base = s.wall_clock.then_some(UNIX_BASE);
        let tokens = Tokens {
            token: b"header.payload.signature".to_vec(),
            exp: s
                .first_token_exp_s
                .and_then(|e| unix_base.map(|b| b + u64::from(e))),
            changed: false,
            fails: false,
            unix_base,
            now_ms: now.clone(),
        };
        let net = Net {
            budget: usize::MAX,
            connect_delays: s.connect_delays,
            ..Net::default()
        };
        DriverRun {
            cfg,
            setup_seed: u64::from(s.seed),
            net: Rc::new(RefCell::new(net)),
            now,
            tokens: Rc::new(RefCell::new(tokens)),
            cap: usize::MAX,
            checker: Checker::new(cfg),
            // Before the first CONNACK the window is 1 (and nothing is in flight).
            mono: Monotonic::default(),
            window: u64::from(cfg.window_cap),
            last_disconnect: None,
            finished: false,
        }
    }

    fn run(mut self, steps: &[Step]) {
        let cfg = self.cfg;
        let mut rx = vec![0u8; RX_MIN + 64];
        let mut tx = vec![0u8; tx_len(TOKEN_BUF, CLIENT_ID.len(), TOPIC.len(), PREFIX.len())];
        let mut token = vec![0u8; TOKEN_BUF];
        let bufs = Buffers {
            rx: &mut rx,
            tx: &mut tx,
            token: &mut token,
        };
        let mut driver = Driver::new(
            cfg,
            MockStack(self.net.clone()),
            MockClock(self.now.clone()),
            MockTokens(self.tokens.clone()),
            bufs,
            self.setup_seed,
        )
        .expect("the harness's configuration and buffers are valid");
        self.mono.acked_next = cfg.start;
        for step in steps {
            self.apply(step, &mut driver);
            if !self.poll(&mut driver) {
                return;
            }
        }
        // The end of every script: a stop, a silent broker, time passing. It must end.
        driver.stop();
        self.cap = usize::MAX;
        for _ in 0..64 {
            match self.poll_status(&mut driver) {
                None => return,
                Some(Status::Wait { ms, .. }) => {
                    self.now.set(self.now.get() + ms.min(10_000));
                }
                Some(Status::Stopped(_) | Status::Finished(_)) => {
                    self.after_stop(&mut driver);
                    return;
                }
            }
        }
        panic!("the driver did not stop within 64 polls of a stop request");
    }

    fn apply(&mut self, step: &Step, driver: &mut FuzzDriver<'c, '_>) {
        {
            let mut n = self.net.borrow_mut();
            let next_pid = n.open.and_then(|i| {
                let s = &n.streams[i];
                s.pids.get(s.acked).copied()
            });
            if let Some(bytes) = broker_bytes(step, next_pid) {
                if n.open.is_none() {
                    n.next_inbox.extend(bytes);
                } else {
                    n.inbox.extend(bytes);
                    if matches!(step, Step::AckNext { .. }) {
                        if let Some(i) = n.open {
                            let s = &mut n.streams[i];
                            s.acked = (s.acked + 1).min(s.pids.len());
                        }
                    }
                }
            }
        }
        match *step {
            Step::Eof => self.net.borrow_mut().eof = true,
            Step::RecvError => self.net.borrow_mut().recv_error = true,
            Step::SendError => self.net.borrow_mut().send_error = true,
            Step::Advance(ms) => self.now.set(self.now.get() + u64::from(ms)),
            Step::AdvanceSeconds(s) => self.now.set(self.now.get() + u64::from(s) * 1_000),
            Step::WriteCap(v) => self.cap = write_cap(v),
            Step::Token { fill, len, exp_s } => {
                let mut t = self.tokens.borrow_mut();
                let len = usize::from(len % TOKEN_BUF as u8).max(1);
                t.token = vec![b'a' + fill % 26; len];
                t.exp = exp_s.and_then(|e| t.unix_base.map(|b| b + u64::from(e)));
                t.changed = true;
                t.fails = false;
            }
            Step::TokenFails => {
                let mut t = self.tokens.borrow_mut();
                t.fails = true;
                t.changed = true;
            }
            Step::Stop => {
                driver.stop();
            }
            _ => {}
        }
    }

    /// One poll; false once the driver is done (an error, or stopped/finished and checked).
    fn poll(&mut self, driver: &mut FuzzDriver<'c, '_>) -> bool {
        match self.poll_status(driver) {
            None => false,
            Some(Status::Wait { .. }) => true,
            Some(Status::Stopped(_) | Status::Finished(_)) => {
                self.after_stop(driver);
                false
            }
        }
    }

    fn poll_status(&mut self, driver: &mut FuzzDriver<'c, '_>) -> Option<Status> {
        self.net.borrow_mut().budget = self.cap;
        let result = driver.poll(Ready::ALL);
        while let Some(event) = driver.poll_event() {
            match event {
                Event::Connected { window, .. } => self.window = u64::from(window),
                Event::Disconnected {
                    disconnect_sent, ..
                } => {
                    // The connection that ended is the last socket opened.
                    let stream = self.net.borrow().streams.len().saturating_sub(1);
                    self.last_disconnect = Some((stream, disconnect_sent));
                }
                Event::Finished { .. } => self.finished = true,
                _ => {}
            }
        }
        self.check(driver);
        match result {
            Ok(status) => Some(status),
            Err(
                DriverError::PublishTooLarge { .. }
                | DriverError::QosNotSupported
                | DriverError::Rejected { .. },
            ) => None,
            Err(e) => panic!("the driver gave up on its own configuration: {e}"),
        }
    }

    fn check(&mut self, driver: &FuzzDriver<'c, '_>) {
        let p = driver.progress();
        let window = match self.cfg.qos {
            Qos::AtLeastOnce => self.window.min(u64::from(self.cfg.window_cap)),
            // QoS 0 "in flight" is written but not yet flushed: bounded by the tx buffer.
            Qos::AtMostOnce => u64::MAX,
        };
        self.mono.check(&p, window);
        let mut n = self.net.borrow_mut();
        let mut whole = 0;
        for s in &mut n.streams {
            self.checker.update(s);
            whole += s.publishes;
        }
        assert!(
            p.sent >= whole,
            "{whole} PUBLISH packets reached the stack, {} counted as sent",
            p.sent
        );
        if self.cfg.qos == Qos::AtMostOnce {
            assert!(
                p.acked_next <= self.checker.written_through,
                "QoS 0 message {} counted as sent, never written whole",
                self.checker.written_through
            );
        }
    }

    /// After Stopped or Finished: the last packet is the DISCONNECT owed, and nothing moves.
    fn after_stop(&mut self, driver: &mut FuzzDriver<'c, '_>) {
        let n = self.net.borrow();
        assert!(n.open.is_none(), "stopped with a socket open");
        if let Some((stream, true)) = self.last_disconnect {
            let last = &n.streams[stream];
            assert_eq!(
                last.disconnect_end,
                Some(last.bytes.len()),
                "DISCONNECT is not the last packet of stream {stream}: {:02x?} ({} parsed)",
                last.bytes,
                last.parsed
            );
        }
        let written: usize = n.streams.iter().map(|s| s.bytes.len()).sum();
        let streams = n.streams.len();
        drop(n);
        self.net.borrow_mut().budget = usize::MAX;
        let again = driver.poll(Ready::ALL);
        assert!(
            matches!(again, Ok(Status::Stopped(_) | Status::Finished(_))),
            "after the end the driver answered {again:?}"
        );
        let n = self.net.borrow();
        assert_eq!(n.streams.len(), streams, "a connection after the end");
        let after: usize = n.streams.iter().map(|s| s.bytes.len()).sum();
        assert_eq!(after, written, "bytes written after the end");
    }
}

// ---- a bare connection ----

struct ConnectionRun<'c> {
    cfg: &'c Config<'c>,
    conn: Connection<'c>,
    now: u64,
    cap: usize,
    rx: Vec<u8>,
    rx_capacity: usize,
    pending: VecDeque<u8>,
    stream: Stream,
    checker: Checker<'c>,
    mono: Monotonic,
    stop_publishes: Option<u64>,
    /// The transport failed: no DISCONNECT can be owed any more.
    aborted: bool,
}

impl<'c> ConnectionRun<'c> {
    fn new(cfg: &'c Config<'c>, s: &Setup) -> Self {
        let rx_capacity = RX_MIN + usize::from(s.rx_extra);
        let progress = Progress {
            next: cfg.start,
            acked_next: cfg.start,
            sent_high: cfg.start,
            ..Progress::default()
        };
        let resume = Resume {
            progress,
            pid_origin: cfg.start,
            resume_session: s.session,
            next_due_ms: 0,
            rx_capacity,
            connack_deadline_ms: cfg.connect_timeout_ms,
        };
        let mut run = ConnectionRun {
            cfg,
            conn: Connection::new(cfg, resume),
            now: 0,
            cap: usize::MAX,
            rx: Vec::with_capacity(rx_capacity),
            rx_capacity,
            pending: VecDeque::new(),
            stream: Stream::default(),
            checker: Checker::new(cfg),
            mono: Monotonic {
                acked_next: cfg.start,
                acked: 0,
            },
            stop_publishes: None,
            aborted: false,
        };
        let mut buf = vec![0u8; 512];
        let n = run
            .conn
            .connect(b"header.payload.signature", &mut buf, 0)
            .expect("CONNECT fits 512 bytes");
        run.stream.bytes.extend_from_slice(&buf[..n]);
        run.check();
        run
    }

    fn run(mut self, steps: &[Step]) {
        for step in steps {
            self.apply(step);
            self.check();
        }
        // The end of every script: a stop, a silent broker, room to write. It must end, and
        // with a DISCONNECT when the stop is what ended it.
        self.conn
            .drain(Why::Stop, self.now + self.cfg.drain_timeout_ms);
        self.stop_publishes.get_or_insert(self.stream.publishes);
        self.cap = usize::MAX;
        for _ in 0..16 {
            if self.conn.is_closed() {
                break;
            }
            self.transmit();
            if let Some(t) = self.conn.poll_timeout() {
                self.now = self.now.max(t);
            }
            self.conn.handle_timeout(self.now);
            self.check();
        }
        assert!(
            self.conn.is_closed(),
            "the connection did not end after a stop"
        );
        if self.conn.end() == Some(&End::Stopped) && !self.aborted {
            assert!(
                self.conn.disconnect_sent(),
                "a stop with room to write sent no DISCONNECT"
            );
        }
        if self.conn.disconnect_sent() {
            assert_eq!(
                self.stream.disconnect_end,
                Some(self.stream.bytes.len()),
                "DISCONNECT is not the last packet"
            );
        }
    }

    fn transmit(&mut self) {
        let mut buf = vec![0u8; self.cap.min(2_048)];
        let n = self.conn.poll_transmit(self.now, &mut buf);
        assert!(n <= buf.len(), "poll_transmit claims more than the buffer");
        self.stream.bytes.extend_from_slice(&buf[..n]);
        // Everything returned is on its way: QoS 0 may count it.
        self.conn.flushed();
    }

    fn apply(&mut self, step: &Step) {
        let next_pid = self.stream.pids.get(self.stream.acked).copied();
        if let Some(bytes) = broker_bytes(step, next_pid) {
            if matches!(step, Step::AckNext { .. }) {
                self.stream.acked = (self.stream.acked + 1).min(self.stream.pids.len());
            }
            self.pending.extend(bytes);
            self.feed();
        }
        match *step {
            Step::Eof | Step::RecvError | Step::SendError => {
                self.conn.abort(End::PeerClosed);
                self.aborted = true;
            }
            Step::Advance(ms) => {
                self.now += u64::from(ms);
                self.conn.handle_timeout(self.now);
            }
            Step::AdvanceSeconds(s) => {
                self.now += u64::from(s) * 1_000;
                self.conn.handle_timeout(self.now);
            }
            Step::WriteCap(v) => {
                self.cap = write_cap(v);
                self.transmit();
            }
            Step::Token { fill, len, exp_s } => {
                let token = vec![b'a' + fill % 26; usize::from(len % 64).max(1)];
                let mut buf = vec![0u8; self.cap.min(512)];
                if let Ok(n) =
                    self.conn
                        .reauthenticate(&token, exp_s.map(u64::from), &mut buf, self.now)
                {
                    assert!(n <= buf.len());
                    self.stream.bytes.extend_from_slice(&buf[..n]);
                }
            }
            Step::Stop => {
                self.conn
                    .drain(Why::Stop, self.now + self.cfg.drain_timeout_ms);
                self.stop_publishes.get_or_insert(self.stream.publishes);
            }
            Step::Poll => {
                if self.conn.poll_timeout().is_some_and(|t| t <= self.now) {
                    self.conn.handle_timeout(self.now);
                }
                self.transmit();
            }
            _ => {}
        }
    }

    /// Hands the connection what fits its receive buffer, as a driver would.
    fn feed(&mut self) {
        for _ in 0..64 {
            let room = self.rx_capacity - self.rx.len();
            let take = room.min(self.pending.len());
            if take == 0 {
                return;
            }
            self.rx.extend(self.pending.drain(..take));
            let used = self.conn.handle_input(&self.rx, self.now);
            assert!(
                used <= self.rx.len(),
                "handle_input used more than it was given"
            );
            self.rx.drain(..used);
            if self.conn.is_closed() || self.conn.end().is_some() {
                self.rx.clear();
                self.pending.clear();
                return;
            }
        }
    }

    fn check(&mut self) {
        for _ in 0..64 {
            if self.conn.poll_event().is_none() {
                break;
            }
        }
        let p = self.conn.progress();
        let window = match self.cfg.qos {
            Qos::AtLeastOnce => u64::from(self.conn.window().min(self.cfg.window_cap)),
            Qos::AtMostOnce => u64::MAX,
        };
        self.mono.check(&p, window);
        assert!(
            self.conn.in_flight() <= u64::from(self.conn.window()),
            "in flight {} > window {}",
            self.conn.in_flight(),
            self.conn.window()
        );
        self.checker.update(&mut self.stream);
        assert_eq!(
            self.stream.parsed,
            self.stream.bytes.len(),
            "the connection handed out part of a packet"
        );
        assert_eq!(
            p.sent, self.stream.publishes,
            "PUBLISH packets counted as sent differ from those written"
        );
        if self.cfg.qos == Qos::AtMostOnce {
            assert!(p.acked_next <= self.checker.written_through);
        }
        if let Some(at_stop) = self.stop_publishes {
            assert_eq!(
                self.stream.publishes, at_stop,
                "PUBLISH written after a stop"
            );
        }
        if self.conn.is_closed() && self.conn.disconnect_sent() {
            assert_eq!(self.stream.disconnect_end, Some(self.stream.bytes.len()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_is_read_back_by_arbitrary() {
        let script = Script {
            setup: Setup {
                qos1: true,
                window_cap: 3,
                first_token_exp_s: Some(500),
                seed: 9,
                ..Setup::default()
            },
            steps: vec![
                Step::Bytes(vec![0x20, 0x03, 0x00, 0x00, 0x00]),
                Step::Connack {
                    session_present: true,
                    reason: 2,
                    receive_maximum: Some(7),
                    maximum_packet_size: None,
                    server_keep_alive: Some(1),
                    topic_alias_maximum: None,
                    maximum_qos_0: Some(false),
                },
                Step::Advance(1_234),
                Step::Token {
                    fill: 1,
                    len: 9,
                    exp_s: None,
                },
                Step::WriteCap(1),
                Step::Stop,
            ],
        };
        let bytes = script.encode();
        let back = Script::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decodes");
        assert_eq!(format!("{back:?}"), format!("{script:?}"));
    }
}
