//! The publisher: what survives across connections ([`Publisher`]) and one connection made with
//! one token ([`Session`]).
//!
//! minimq 0.10 borrows the caller's buffer and copies the credentials into it for a client's
//! whole life, so a new token means a new `Session`. The caller drives two loops: build a
//! session when [`Publisher::wait_ms`] allows, then [`Session::poll`] it until it ends.

use core::cell::RefCell;
use core::net::SocketAddr;

use embedded_nal::{TcpClientStack, TcpErrorKind};
use embedded_time::Clock;
use minimq::{broker::IpBroker, ConfigBuilder, Minimq, Publication, QoS};

use crate::backoff::{Backoff, BackoffConfig};
use crate::clock::{ClockRef, Mono};
use crate::frame;
use crate::guard::{Guard, GuardStack, LinkEnd, Violation, WINDOW_MAX};

/// The MQTT user name Azure IoT MQ expects with a service-account token as password.
pub const SAT_USER: &str = "$sat";

/// Largest password MQTT can carry (a two-byte length).
pub const MAX_TOKEN_LEN: usize = 65_535;

/// Receive buffer: the largest packet the broker may send (advertised as Maximum Packet Size).
/// mosquitto's CONNACK with a 41-character assigned client id needs about 60 bytes.
pub const RX_LEN: usize = 256;

/// Most publishes one [`Session::poll`] writes before returning, so callers stay responsive.
const BURST: usize = 32;

/// Longest the session sleeps while idle, so keepalive pings go out on time.
const MAX_IDLE_MS: u64 = 1_000;

/// QoS levels this publisher uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    /// At most once.
    AtMostOnce,
    /// At least once: every message is acknowledged, and resent after a reconnect until it is.
    AtLeastOnce,
}

/// Everything the core needs to know about the job.
#[derive(Debug, Clone, Copy)]
pub struct Config<'a> {
    /// Broker address.
    pub broker: SocketAddr,
    /// MQTT client identifier (at most 64 bytes: minimq's limit).
    pub client_id: &'a str,
    /// Topic to publish to.
    pub topic: &'a str,
    /// Payload is this prefix followed by the counter in decimal.
    pub payload_prefix: &'a str,
    /// QoS of every publish.
    pub qos: Qos,
    /// Milliseconds between publishes; 0 publishes as fast as the connection allows.
    pub interval_ms: u64,
    /// First counter value.
    pub start: u64,
    /// Messages to publish, then finish; 0 is forever.
    pub count: u64,
    /// MQTT keepalive in seconds.
    pub keepalive_s: u16,
    /// Longest wait for TCP plus CONNACK.
    pub connect_timeout_ms: u64,
    /// Longest wait for in-flight acknowledgements when stopping or rotating.
    pub drain_timeout_ms: u64,
    /// Reconnect pacing.
    pub backoff: BackoffConfig,
}

impl<'a> Config<'a> {
    /// The Microsoft sample's job: `samplepayload<N>` to `sampletopic` as `sampleid`, QoS 1, 1/s.
    pub fn new(broker: SocketAddr) -> Self {
        Config {
            broker,
            client_id: "sampleid",
            topic: "sampletopic",
            payload_prefix: "samplepayload",
            qos: Qos::AtLeastOnce,
            interval_ms: 1_000,
            start: 0,
            count: 0,
            keepalive_s: 60,
            connect_timeout_ms: 5_000,
            drain_timeout_ms: 5_000,
            backoff: BackoffConfig::default(),
        }
    }

    /// Bytes of one PUBLISH of the largest counter, plus the 5 bytes minimq reserves for its
    /// fixed header.
    fn publish_len(&self) -> usize {
        5 + 2 + self.topic.len() + 2 + 1 + self.payload_prefix.len() + 20
    }

    /// Bytes minimq needs in the caller's buffer for a token of `token_len` bytes: the copied
    /// credentials, rx, tx (which must hold the CONNECT), and a session state that holds
    /// [`WINDOW_MAX`] publishes plus one tx buffer (minimq's `can_publish` test).
    pub fn buffer_len(&self, token_len: usize) -> usize {
        let (rx, tx, state) = self.buffer_parts(token_len);
        SAT_USER.len() + token_len + rx + tx + state
    }

    fn buffer_parts(&self, token_len: usize) -> (usize, usize, usize) {
        // CONNECT: 5 header + 10 variable header + 14 properties + three length-prefixed strings.
        let connect = 5 + 10 + 14 + 2 + self.client_id.len() + 2 + SAT_USER.len() + 2 + token_len;
        let tx = connect.max(self.publish_len()) + 16;
        let state = tx + WINDOW_MAX * self.publish_len() + 16;
        (RX_LEN, tx, state)
    }
}

/// Counters that survive across sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Next counter value to publish.
    pub next: u64,
    /// Every message below this one has been acknowledged (QoS 1) or sent (QoS 0).
    pub acked_next: u64,
    /// One past the highest counter ever written; a write below it is a duplicate.
    pub sent_high: u64,
    /// PUBLISH packets written, duplicates included.
    pub sent: u64,
    /// PUBACKs received.
    pub acked: u64,
    /// Messages written more than once (resent after a reconnect).
    pub duplicates: u64,
    /// PUBACKs with a failure reason code.
    pub rejected: u64,
    /// Sessions started.
    pub sessions: u32,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum End {
    /// `count` messages were published (and acknowledged at QoS 1).
    Completed,
    /// The caller stopped it ([`Session::stop`]).
    Stopped,
    /// The caller is changing the token ([`Session::rotate`]).
    Rotation,
    /// CONNACK 0x86 (bad user name or password) or 0x87 (not authorized): the token.
    TokenRejected(u8),
    /// CONNACK refused with another reason code.
    Refused(u8),
    /// The broker closed TCP.
    PeerClosed,
    /// The broker sent DISCONNECT with this reason code.
    ServerDisconnect(u8),
    /// The broker broke the protocol.
    Violation(Violation),
    /// No CONNACK within the connect timeout.
    ConnectTimeout,
    /// The link went quiet (keepalive ping unanswered).
    LinkLost,
    /// The network stack failed.
    Network(TcpErrorKind),
    /// minimq reported an error the guard did not foresee.
    Engine(&'static str),
}

impl End {
    /// Whether the session ended because of a problem (and the next one should back off).
    pub fn is_failure(&self) -> bool {
        !matches!(self, End::Completed | End::Stopped | End::Rotation)
    }

    fn from_link(end: LinkEnd) -> Self {
        match end {
            LinkEnd::PeerClosed => End::PeerClosed,
            LinkEnd::ServerDisconnect(r) => End::ServerDisconnect(r),
            LinkEnd::Refused(r @ (0x86 | 0x87)) => End::TokenRejected(r),
            LinkEnd::Refused(r) => End::Refused(r),
            LinkEnd::Violation(v) => End::Violation(v),
            LinkEnd::Network(kind) => End::Network(kind),
            LinkEnd::LinkLost => End::LinkLost,
        }
    }

    /// DISCONNECT reason to send, or None when the broker already ended the connection.
    fn disconnect_reason(&self) -> Option<u8> {
        match self {
            End::Completed | End::Stopped | End::Rotation | End::ConnectTimeout | End::LinkLost => {
                Some(0x00)
            }
            End::Violation(Violation::Malformed(_)) => Some(0x81),
            End::Violation(_) => Some(0x82),
            End::Engine(_) => Some(0x83),
            End::TokenRejected(_)
            | End::Refused(_)
            | End::PeerClosed
            | End::ServerDisconnect(_)
            | End::Network(_) => None,
        }
    }
}

impl core::fmt::Display for End {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let name = frame::reason_name;
        match *self {
            End::Completed => f.write_str("all messages published"),
            End::Stopped => f.write_str("stopped on request"),
            End::Rotation => f.write_str("token rotation"),
            End::TokenRejected(r) => write!(f, "token rejected: CONNACK 0x{r:02x} {}", name(r)),
            End::Refused(r) => write!(f, "connection refused: CONNACK 0x{r:02x} {}", name(r)),
            End::PeerClosed => f.write_str("broker closed the connection"),
            End::ServerDisconnect(r) => {
                write!(f, "broker sent DISCONNECT 0x{r:02x} {}", name(r))
            }
            End::Violation(v) => write!(f, "broker broke the protocol: {v}"),
            End::ConnectTimeout => f.write_str("no CONNACK within the connect timeout"),
            End::LinkLost => f.write_str("link lost: keepalive ping unanswered"),
            End::Network(kind) => write!(f, "network error ({kind:?})"),
            End::Engine(what) => write!(f, "MQTT engine error: {what}"),
        }
    }
}

/// What the core tells its adapter; the adapter decides what to log or count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    /// CONNACK success.
    Connected {
        /// Session Present flag from the broker.
        session_present: bool,
        /// The broker's Receive Maximum.
        receive_maximum: u16,
        /// QoS 1 messages this session keeps in flight: min(10, Receive Maximum).
        window: u8,
    },
    /// QoS 1 messages not acknowledged before the last session are being sent again.
    Republishing {
        /// First counter value resent.
        from: u64,
        /// How many.
        count: u64,
    },
    /// A PUBLISH was written.
    Published {
        /// Its counter value.
        n: u64,
        /// Whether this counter value was written before.
        duplicate: bool,
    },
    /// Every message up to and including `through` is acknowledged.
    Acked {
        /// Highest acknowledged counter value.
        through: u64,
    },
    /// A PUBACK carried a failure reason code: the broker will not deliver message `n`.
    PublishRejected {
        /// Counter value.
        n: u64,
        /// PUBACK reason code.
        reason: u8,
    },
    /// The broker refused the token (CONNACK 0x86/0x87); re-read it before the next attempt.
    TokenRejected {
        /// CONNACK reason code.
        reason: u8,
    },
    /// The session ended.
    Disconnected {
        /// Why.
        why: End,
        /// Whether a DISCONNECT packet was written before closing the socket.
        disconnect_sent: bool,
        /// Milliseconds before the next connection attempt is allowed.
        retry_in_ms: u64,
    },
    /// The first publish after a token rotation: publishing paused for `gap_ms` (drain,
    /// DISCONNECT, connect, CONNACK).
    Rotated {
        /// Milliseconds from [`Session::rotate`] to this publish.
        gap_ms: u64,
    },
    /// All `count` messages are published (and acknowledged at QoS 1).
    Finished {
        /// Counters at the end.
        progress: Progress,
    },
}

/// What the caller should do after a [`Session::poll`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Status {
    /// More work is ready: poll again at once.
    Busy,
    /// Nothing to do until the socket is readable, or `ms` milliseconds pass; with `writable`,
    /// also when the socket can take more bytes (a write is pending).
    Wait {
        /// Longest sleep.
        ms: u64,
        /// Also wake when writable.
        writable: bool,
    },
    /// The session is over; build a new one (after [`Publisher::wait_ms`]) unless finished.
    Ended(End),
}

/// Why a session could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// The backoff does not allow a connection attempt for this many milliseconds.
    Backoff {
        /// Milliseconds to wait.
        wait_ms: u64,
    },
    /// All `count` messages are done.
    Finished,
    /// The token is empty.
    EmptyToken,
    /// The token exceeds what an MQTT password can hold.
    TokenTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The caller's buffer cannot hold the credentials and minimq's buffers.
    BufferTooSmall {
        /// Bytes needed ([`Config::buffer_len`]).
        needed: usize,
        /// Bytes given.
        have: usize,
    },
}

/// A configuration the core cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// Client ids over 64 bytes do not fit minimq's client id.
    ClientIdTooLong(usize),
    /// Topics must be 1..=65535 bytes.
    TopicLength(usize),
    /// Publish topics may not contain `+` or `#`.
    TopicWildcard,
    /// The payload prefix must leave room in a PUBLISH.
    PrefixTooLong(usize),
}

/// What survives across connections: the stack (inside the guard), the clock, the counters,
/// and the backoff.
pub struct Publisher<'c, S: TcpClientStack, C: Clock> {
    guard: RefCell<Guard<S>>,
    mono: Mono<C>,
    config: Config<'c>,
    progress: Progress,
    backoff: Backoff,
    /// When the last rotation stopped publishing, until the next session publishes again.
    rotation_started_ms: Option<u64>,
}

impl<'c, S: TcpClientStack, C: Clock> Publisher<'c, S, C>
where
    u64: From<C::T>,
{
    /// A publisher on `stack` with `clock`; `seed` feeds the backoff jitter (use something that
    /// differs between devices, e.g. a hash of the client id and boot time).
    pub fn new(stack: S, clock: C, config: Config<'c>, seed: u64) -> Result<Self, ConfigError> {
        if config.client_id.len() > 64 {
            return Err(ConfigError::ClientIdTooLong(config.client_id.len()));
        }
        if config.topic.is_empty() || config.topic.len() > 65_535 {
            return Err(ConfigError::TopicLength(config.topic.len()));
        }
        if config.topic.contains(['+', '#']) {
            return Err(ConfigError::TopicWildcard);
        }
        if config.payload_prefix.len() > 60_000 {
            return Err(ConfigError::PrefixTooLong(config.payload_prefix.len()));
        }
        let progress = Progress {
            next: config.start,
            acked_next: config.start,
            sent_high: config.start,
            ..Progress::default()
        };
        Ok(Publisher {
            guard: RefCell::new(Guard::new(stack)),
            mono: Mono::new(clock),
            backoff: Backoff::new(config.backoff, seed),
            config,
            progress,
            rotation_started_ms: None,
        })
    }

    /// The job's configuration.
    pub fn config(&self) -> &Config<'c> {
        &self.config
    }

    /// Counters so far.
    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// Milliseconds since the publisher's clock was first read.
    pub fn now_ms(&self) -> u64 {
        self.mono.now_ms()
    }

    /// Milliseconds until the backoff allows the next connection attempt (0: now).
    pub fn wait_ms(&self) -> u64 {
        self.backoff.next_at_ms().saturating_sub(self.mono.now_ms())
    }

    /// Failed sessions in a row.
    pub fn failures(&self) -> u32 {
        self.backoff.failures()
    }

    /// Whether every message of a bounded job is done.
    pub fn is_finished(&self) -> bool {
        self.target()
            .is_some_and(|end| self.progress.acked_next >= end)
    }

    /// Records a failed attempt that never reached the network (e.g. the token could not be
    /// read) and returns the backoff delay before the next one.
    pub fn note_failure(&mut self) -> u64 {
        let now = self.mono.now_ms();
        self.backoff.fail(now)
    }

    /// Lifts the backoff: something changed that makes an attempt worthwhile now (a new token
    /// after a refusal, say).
    pub fn retry_now(&mut self) {
        let now = self.mono.now_ms();
        self.backoff.allow_now(now);
    }

    /// The user's stack, between sessions.
    pub fn stack_mut(&mut self) -> &mut S {
        self.guard.get_mut().stack_mut()
    }

    fn target(&self) -> Option<u64> {
        (self.config.count > 0).then(|| self.config.start.saturating_add(self.config.count))
    }

    /// Builds a session that connects with `token` as the `$sat` password, using `buffer` for
    /// minimq (at least [`Config::buffer_len`] bytes). Fails without touching the network when
    /// the backoff does not allow an attempt yet.
    pub fn session<'p>(
        &'p mut self,
        buffer: &'p mut [u8],
        token: &str,
    ) -> Result<Session<'p, 'c, S, C>, SessionError> {
        if self.is_finished() {
            return Err(SessionError::Finished);
        }
        let wait_ms = self.wait_ms();
        if wait_ms > 0 {
            return Err(SessionError::Backoff { wait_ms });
        }
        if token.is_empty() {
            return Err(SessionError::EmptyToken);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(SessionError::TokenTooLong { len: token.len() });
        }
        let needed = self.config.buffer_len(token.len());
        if buffer.len() < needed {
            return Err(SessionError::BufferTooSmall {
                needed,
                have: buffer.len(),
            });
        }

        let Publisher {
            guard,
            mono,
            config,
            progress,
            backoff,
            rotation_started_ms,
        } = self;
        let (rx, tx, state) = config.buffer_parts(token.len());
        let mut broker = IpBroker::new(config.broker.ip());
        minimq::Broker::set_port(&mut broker, config.broker.port());
        // The sizes were checked above, so minimq's builder cannot fail on them.
        let builder = ConfigBuilder::new(broker, buffer)
            .set_auth(SAT_USER, token)
            .and_then(|b| b.client_id(config.client_id))
            .map_err(|_| SessionError::BufferTooSmall {
                needed,
                have: needed,
            })?
            .keepalive_interval(config.keepalive_s)
            .rx_buffer(minimq::config::BufferConfig::Exactly(rx))
            .tx_buffer(minimq::config::BufferConfig::Exactly(tx))
            .session_state(minimq::config::BufferConfig::Exactly(state));

        guard.get_mut().begin();
        progress.sessions += 1;
        let republish = if config.qos == Qos::AtLeastOnce && progress.next > progress.acked_next {
            let count = progress.next - progress.acked_next;
            progress.next = progress.acked_next;
            Some((progress.acked_next, count))
        } else {
            None
        };
        let now = mono.now_ms();
        let guard = &*guard;
        let mono = &*mono;
        Ok(Session {
            mq: Minimq::new(GuardStack(guard), ClockRef(mono.clock()), builder),
            guard,
            mono,
            config,
            progress,
            backoff,
            rotation_started_ms,
            target: (config.count > 0).then(|| config.start.saturating_add(config.count)),
            started_ms: now,
            connected_ms: None,
            window: 0,
            next_publish_ms: now,
            partial: None,
            stopping: None,
            ended: None,
            republish,
            engine: None,
        })
    }
}

/// A session draining towards its end.
#[derive(Debug, Clone, Copy)]
struct Stopping {
    why: End,
    since: u64,
    deadline: u64,
}

/// One MQTT connection made with one token.
pub struct Session<'p, 'c, S: TcpClientStack, C: Clock> {
    mq: Minimq<'p, GuardStack<'p, S>, ClockRef<'p, C>, IpBroker>,
    guard: &'p RefCell<Guard<S>>,
    mono: &'p Mono<C>,
    config: &'p Config<'c>,
    progress: &'p mut Progress,
    backoff: &'p mut Backoff,
    rotation_started_ms: &'p mut Option<u64>,
    target: Option<u64>,
    started_ms: u64,
    connected_ms: Option<u64>,
    window: usize,
    next_publish_ms: u64,
    /// A QoS 0 publish whose bytes the stack has only partly taken.
    partial: Option<u64>,
    /// Why, since when and until when the session drains before ending.
    stopping: Option<Stopping>,
    ended: Option<End>,
    republish: Option<(u64, u64)>,
    /// An engine error minimq reported, ending the session at the next check.
    engine: Option<&'static str>,
}

impl<S: TcpClientStack, C: Clock> Session<'_, '_, S, C>
where
    u64: From<C::T>,
{
    /// Whether CONNACK success was received and the session has not ended.
    pub fn is_connected(&self) -> bool {
        self.connected_ms.is_some() && self.ended.is_none()
    }

    /// Runs `f` on the real socket (e.g. to wait on its file descriptor), if one is open.
    pub fn with_socket<T>(&self, f: impl FnOnce(&S::TcpSocket) -> T) -> Option<T> {
        self.guard.try_borrow().ok()?.socket().map(f)
    }

    /// Runs `f` on the user's stack (e.g. to poll a smoltcp interface).
    pub fn with_stack<T>(&self, f: impl FnOnce(&mut S) -> T) -> Option<T> {
        Some(f(self.guard.try_borrow_mut().ok()?.stack_mut()))
    }

    /// Stops publishing, waits (at most the drain timeout) for in-flight acknowledgements,
    /// then sends DISCONNECT and closes.
    pub fn stop(&mut self) {
        self.begin_stopping(End::Stopped);
    }

    /// Like [`Session::stop`], for a token change: the next session may connect at once.
    pub fn rotate(&mut self) {
        self.begin_stopping(End::Rotation);
    }

    fn begin_stopping(&mut self, why: End) {
        if self.stopping.is_none() {
            let since = self.mono.now_ms();
            self.stopping = Some(Stopping {
                why,
                since,
                deadline: since.saturating_add(self.config.drain_timeout_ms),
            });
        }
    }

    /// Does all work that is ready: reads the broker, publishes what is due, ends the session
    /// when needed. Events go to `sink`; the result says when to call again.
    pub fn poll(&mut self, sink: &mut impl FnMut(Event)) -> Status {
        if let Some(end) = self.ended {
            return Status::Ended(end);
        }
        if let Some((from, count)) = self.republish.take() {
            sink(Event::Republishing { from, count });
        }
        let now = self.mono.now_ms();
        // Before CONNACK minimq moves one state per poll (TCP connect, then CONNECT): two
        // rounds write the CONNECT as soon as TCP is up.
        let rounds = if self.connected_ms.is_none() { 2 } else { 1 };
        for _ in 0..rounds {
            if let Err(e) = self.mq.poll(|_, _, _, _| ()) {
                self.engine_error(e);
            }
        }
        self.harvest(now, sink);

        if let Some(end) = self.check_end(now) {
            return Status::Ended(self.finish(end, sink));
        }
        let burst_full = if self.connected_ms.is_some() && self.stopping.is_none() {
            let burst_full = self.publish_due(now, sink);
            let link = self.guard.borrow().end();
            if let Some(end) = link {
                return Status::Ended(self.finish(End::from_link(end), sink));
            }
            burst_full
        } else {
            false
        };
        if burst_full {
            return Status::Busy;
        }
        Status::Wait {
            ms: self.idle_ms(now),
            writable: self.guard.borrow().tx_partial(),
        }
    }

    fn engine_error<E>(&mut self, e: minimq::Error<E>) {
        let name = match e {
            // Not an error for a fresh client: it only says the broker had no session for us.
            minimq::Error::SessionReset => return,
            // The guard recorded the stack error itself.
            minimq::Error::Network(_) => return,
            minimq::Error::NotReady => "not ready",
            minimq::Error::WriteFail => "write failed",
            minimq::Error::Minimq(minimq::MinimqError::Clock(_)) => "clock failed",
            minimq::Error::Minimq(minimq::MinimqError::Protocol(p)) => protocol_name(&p),
            _ => "unknown error",
        };
        self.engine.get_or_insert(name);
    }

    /// Turns what the guard saw into events and counters.
    fn harvest(&mut self, now: u64, sink: &mut impl FnMut(Event)) {
        let mut guard = self.guard.borrow_mut();
        if self.connected_ms.is_none() {
            if let (Some(ack), None) = (guard.connack(), guard.end()) {
                self.connected_ms = Some(now);
                // minimq 0.10 takes max(10, Receive Maximum) and panics past 10; use the min.
                self.window = usize::from(ack.receive_maximum).clamp(1, WINDOW_MAX);
                sink(Event::Connected {
                    session_present: ack.session_present,
                    receive_maximum: ack.receive_maximum,
                    window: self.window as u8,
                });
            }
        }
        let mut through = None;
        while let Some(ack) = guard.take_acked() {
            self.progress.acked += 1;
            self.progress.acked_next = ack.n + 1;
            if !frame::is_success(ack.reason) {
                self.progress.rejected += 1;
                sink(Event::PublishRejected {
                    n: ack.n,
                    reason: ack.reason,
                });
            }
            through = Some(ack.n);
        }
        if let Some(through) = through {
            sink(Event::Acked { through });
        }
        if self.partial.is_some() && !guard.tx_partial() {
            self.partial = None;
        }
    }

    /// Decides whether this session is over, and why.
    fn check_end(&mut self, now: u64) -> Option<End> {
        let link = self.guard.borrow().end();
        if let Some(end) = link {
            return Some(End::from_link(end));
        }
        if let Some(name) = self.engine {
            return Some(End::Engine(name));
        }
        match self.connected_ms {
            None if now.saturating_sub(self.started_ms) >= self.config.connect_timeout_ms => {
                return Some(End::ConnectTimeout)
            }
            None => {}
            // minimq drops to Disconnected on its ping timeout, without touching the socket.
            Some(_) if !self.mq.client().is_connected() => return Some(End::LinkLost),
            Some(_) => {}
        }
        if self.is_done() {
            return Some(End::Completed);
        }
        if let Some(stopping) = self.stopping {
            let drained = self.guard.borrow().in_flight() == 0 && self.partial.is_none();
            if self.connected_ms.is_none() || drained || now >= stopping.deadline {
                return Some(stopping.why);
            }
        }
        None
    }

    fn is_done(&self) -> bool {
        let Some(target) = self.target else {
            return false;
        };
        match self.config.qos {
            Qos::AtLeastOnce => self.progress.acked_next >= target,
            Qos::AtMostOnce => self.progress.next >= target && self.partial.is_none(),
        }
    }

    /// Ends the session: DISCONNECT when the link allows, close, rewind, pace the next attempt.
    fn finish(&mut self, why: End, sink: &mut impl FnMut(Event)) -> End {
        let disconnect_sent = self.guard.borrow_mut().finish(why.disconnect_reason());
        self.ended = Some(why);
        let now = self.mono.now_ms();
        match self.config.qos {
            // Resent from the first unacknowledged message when the next session starts.
            Qos::AtLeastOnce => {}
            Qos::AtMostOnce => {
                if let Some(n) = self.partial.take() {
                    self.progress.next = n;
                }
                self.progress.acked_next = self.progress.next;
            }
        }
        if let Some(up_since) = self.connected_ms {
            // The broker took the token: a planned end (rotation, stop) or a connection that
            // stayed up long enough says past failures no longer predict the next attempt.
            let stayed_up = now.saturating_sub(up_since) >= self.config.backoff.reset_after_ms;
            if stayed_up || !why.is_failure() {
                self.backoff.reset();
            }
        }
        if why == End::Rotation {
            *self.rotation_started_ms = self.stopping.map(|s| s.since);
        }
        let retry_in_ms = if why.is_failure() {
            self.backoff.fail(now)
        } else {
            self.backoff.allow_now(now);
            0
        };
        if let End::TokenRejected(reason) = why {
            sink(Event::TokenRejected { reason });
        }
        sink(Event::Disconnected {
            why,
            disconnect_sent,
            retry_in_ms,
        });
        if why == End::Completed {
            sink(Event::Finished {
                progress: *self.progress,
            });
        }
        why
    }

    /// Publishes what is due; returns true when it stopped only because of the burst limit.
    fn publish_due(&mut self, now: u64, sink: &mut impl FnMut(Event)) -> bool {
        let qos = match self.config.qos {
            Qos::AtMostOnce => QoS::AtMostOnce,
            Qos::AtLeastOnce => QoS::AtLeastOnce,
        };
        for _ in 0..BURST {
            let n = self.progress.next;
            if self.target.is_some_and(|t| n >= t) || self.partial.is_some() {
                return false;
            }
            if self.config.interval_ms > 0 && now < self.next_publish_ms {
                return false;
            }
            if qos == QoS::AtLeastOnce && self.guard.borrow().in_flight() >= self.window {
                return false;
            }
            // minimq 0.10's `publish` drops the message and returns Ok when not connected.
            if !self.mq.client().is_connected() || !self.mq.client().can_publish(qos) {
                return false;
            }
            self.guard.borrow_mut().expect_publish(n);
            let prefix = self.config.payload_prefix.as_bytes();
            let publication = Publication::new(self.config.topic, |buf: &mut [u8]| {
                write_payload(buf, prefix, n)
            })
            .qos(qos);
            let result = self.mq.client().publish(publication);
            let (written, partial) = {
                let mut g = self.guard.borrow_mut();
                (g.take_publish_written() == Some(n), g.tx_partial())
            };
            if let Err(e) = result {
                match e {
                    minimq::PubError::Error(e) => self.engine_error(e),
                    minimq::PubError::Serialization(PayloadTooLarge) => {
                        self.engine
                            .get_or_insert("payload does not fit the tx buffer");
                    }
                }
            }
            if !written {
                // The counter moves only for a PUBLISH that reached the stack.
                return false;
            }
            let duplicate = n < self.progress.sent_high;
            self.progress.next = n + 1;
            self.progress.sent += 1;
            if duplicate {
                self.progress.duplicates += 1;
            }
            self.progress.sent_high = self.progress.sent_high.max(n + 1);
            if qos == QoS::AtMostOnce && partial {
                self.partial = Some(n);
            }
            sink(Event::Published { n, duplicate });
            if let Some(since) = self.rotation_started_ms.take() {
                sink(Event::Rotated {
                    gap_ms: now.saturating_sub(since),
                });
            }
            if self.config.interval_ms > 0 {
                // Keep the cadence, but never burst to catch up after a stall.
                self.next_publish_ms = (self.next_publish_ms + self.config.interval_ms)
                    .max(now + 1)
                    .min(now + self.config.interval_ms);
                return false;
            }
            if self.engine.is_some() {
                return false;
            }
        }
        true
    }

    /// How long the caller may sleep when no socket event comes.
    fn idle_ms(&self, now: u64) -> u64 {
        let mut wake = now + MAX_IDLE_MS.min(self.config.keepalive_s.max(1) as u64 * 250);
        match (self.connected_ms, self.stopping) {
            (None, _) => wake = wake.min(self.started_ms + self.config.connect_timeout_ms),
            (Some(_), Some(stopping)) => wake = wake.min(stopping.deadline),
            (Some(_), None) => {
                let more = self.target.is_none_or(|t| self.progress.next < t);
                if more && self.config.interval_ms > 0 {
                    wake = wake.min(self.next_publish_ms);
                }
            }
        }
        wake.saturating_sub(now)
    }
}

impl<S: TcpClientStack, C: Clock> Drop for Session<'_, '_, S, C> {
    fn drop(&mut self) {
        // A session dropped mid-flight still returns its socket to the stack (handle-based
        // stacks such as smoltcp-nal would leak it otherwise).
        if self.ended.is_none() {
            if let Ok(mut guard) = self.guard.try_borrow_mut() {
                guard.finish(Some(0x00));
            }
        }
    }
}

fn protocol_name(p: &minimq::ProtocolError) -> &'static str {
    use minimq::ProtocolError as P;
    match p {
        P::ProvidedClientIdTooLong => "client id too long",
        P::UnexpectedPacket => "unexpected packet",
        P::InvalidProperty => "invalid property",
        P::MalformedPacket => "malformed packet",
        P::BufferSize => "buffer too small",
        P::BadIdentifier => "bad packet identifier",
        P::Unacknowledged => "unacknowledged",
        P::WrongQos => "wrong QoS",
        P::UnsupportedPacket => "unsupported packet",
        P::NoTopic => "no topic",
        P::AuthAlreadySpecified => "auth already specified",
        P::WillAlreadySpecified => "will already specified",
        P::Failed(_) => "broker reported failure",
        P::Serialization(_) => "serialization failed",
        P::Deserialization(_) => "deserialization failed",
        _ => "protocol error",
    }
}

/// The payload does not fit the space minimq left in its tx buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadTooLarge;

/// Writes `prefix` then `n` in decimal into `buf`, without allocating.
pub fn write_payload(buf: &mut [u8], prefix: &[u8], n: u64) -> Result<usize, PayloadTooLarge> {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let digits = &digits[i..];
    let len = prefix.len() + digits.len();
    let out = buf.get_mut(..len).ok_or(PayloadTooLarge)?;
    out[..prefix.len()].copy_from_slice(prefix);
    out[prefix.len()..].copy_from_slice(digits);
    Ok(len)
}
