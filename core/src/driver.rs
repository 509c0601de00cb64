//! The one loop every adapter shares: sockets from an `embedded_nal::TcpClientStack`, time from
//! an `embedded_time::Clock`, tokens from a [`TokenSource`]; it runs [`Connection`]s one after
//! the other and keeps what survives them (counters, packet identifiers, the schedule, the
//! backoff, the token in use).
//!
//! [`Driver::poll`] does all work that is ready and answers with a [`Status`]: wait until a
//! deadline, or until the socket is readable or writable. The std adapter sleeps in `poll(2)`
//! on that; a microcontroller sleeps in its own idle loop. Nothing here blocks.
//!
//! Token lifecycle: the token is loaded before every connection and never kept (only a hash, to
//! tell a new token from the same one re-read). When the source says it changed, or the token
//! in use nears its `exp`, the driver re-reads it; a different token is presented in band with
//! AUTH 0x19 (`K8S-SAT`) or by draining and reconnecting (`$sat`). A connection whose token
//! would expire before a pending re-authentication finishes is moved to a new one before `exp`.

use core::fmt;

use embedded_nal::{nb, TcpClientStack, TcpError};
use embedded_time::Clock;
use heapless::Deque;

use crate::backoff::Backoff;
use crate::clock::Mono;
use crate::config::{Auth, Config, ConfigError, MAX_TOKEN_LEN};
use crate::connection::{Connection, ReauthError, Resume, Why};
use crate::event::{End, Event, Progress};
use crate::token::{freshness, Freshness, TokenTimes};

/// Smallest receive buffer: a CONNACK with an assigned client id, PUBACKs, a short DISCONNECT.
pub const RX_MIN: usize = 64;

/// Seconds before `exp` at which a connection whose new token is not yet accepted is replaced.
pub const EXPIRY_GUARD_S: u64 = 2;

/// How often the token is re-read while the one in use is inside its expiry margin.
const EXPIRING_RECHECK_MS: u64 = 1_000;

/// Most read/transmit rounds in one [`Driver::poll`], so the caller regains control (signals,
/// other work) even when the broker keeps the socket busy.
const ROUNDS: usize = 16;

/// Events the driver holds between two [`Driver::poll`] calls.
const EVENTS: usize = 8;

/// Longest deferral of a re-authentication the broker answered with AUTH 0x18.
const REAUTH_RETRY_CAP_MS: u64 = 30_000;

/// A token the source loaded into the driver's token buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// Bytes used at the front of the buffer.
    pub len: usize,
    /// `exp` (Unix seconds), when the token says.
    pub exp: Option<u64>,
}

/// Where tokens come from: a projected-volume file, flash, a provisioning service.
pub trait TokenSource {
    /// Why a token could not be loaded; shown to the operator, so it must never contain the
    /// token itself.
    type Error: fmt::Debug + fmt::Display;

    /// Writes the current token to the front of `buf` (re-reading its source). Called before
    /// every connection and every re-authentication.
    fn load(&mut self, buf: &mut [u8]) -> Result<Token, Self::Error>;

    /// Whether the token may have changed since the last [`TokenSource::load`] (a file
    /// watcher's flag); cheap, called on every poll.
    fn changed(&mut self) -> bool {
        false
    }

    /// Wall-clock Unix seconds, when known: without it `exp` is not checked.
    fn unix_now(&self) -> Option<u64> {
        None
    }
}

/// The caller's memory: nothing else is allocated.
pub struct Buffers<'b> {
    /// Broker bytes; its length is advertised as our Maximum Packet Size (at least [`RX_MIN`]).
    pub rx: &'b mut [u8],
    /// Bytes to send: at least one CONNECT with the longest token ([`tx_len`]).
    pub tx: &'b mut [u8],
    /// The token while a CONNECT or AUTH is written; zeroed right after.
    pub token: &'b mut [u8],
}

/// Bytes of the transmit buffer a configuration needs with tokens of up to `max_token` bytes: a
/// CONNECT with the token, or a re-authentication beside a few PUBLISHes.
pub const fn tx_len(max_token: usize, client_id: usize, topic: usize, prefix: usize) -> usize {
    // CONNECT: fixed header 5, variable header 10, properties ≤ 5 + 5 + 5 + 3 + 10 (expiry,
    // maximum packet size, method) + 3 (data header), client id, user name, password.
    let connect = 5 + 10 + 31 + 2 + client_id + 2 + 4 + 2 + max_token;
    // PUBLISH: fixed header 5, topic, id, properties (alias), payload with 20 digits.
    let publish = 5 + 2 + topic + 2 + 4 + prefix + 20;
    let both = connect + 4 * publish;
    if both > connect {
        both
    } else {
        connect
    }
}

/// What the caller should wait for before the next [`Driver::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Sleep at most `ms` (0: poll again at once), waking early when the socket is readable
    /// (`readable`) or writable (`writable`).
    Wait {
        /// Longest sleep in milliseconds.
        ms: u64,
        /// Wake when the socket has bytes (or EOF).
        readable: bool,
        /// Wake when the socket takes bytes (a write or a connect is pending).
        writable: bool,
    },
    /// Every message of the job is published (and acknowledged at QoS 1).
    Finished(Progress),
    /// Stopped on request; in-flight messages were drained (bounded) first.
    Stopped(Progress),
}

/// What the socket can do, as the caller's wait saw it; [`Ready::ALL`] when unknown (reading a
/// socket that has nothing is then one wasted call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// Bytes (or EOF) are waiting.
    pub readable: bool,
    /// The socket takes bytes.
    pub writable: bool,
}

impl Ready {
    /// Try everything.
    pub const ALL: Ready = Ready {
        readable: true,
        writable: true,
    };
}

/// Why the driver cannot go on; retrying would not help.
#[derive(Debug, Clone, PartialEq)]
pub enum DriverError {
    /// The configuration is invalid.
    Config(ConfigError),
    /// A buffer is too small for this configuration.
    Buffer {
        /// Which buffer: `"rx"`, `"tx"` or `"token"`.
        which: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        have: usize,
    },
    /// One PUBLISH of this job is larger than the broker's Maximum Packet Size.
    PublishTooLarge {
        /// Bytes of the largest PUBLISH.
        len: usize,
        /// The broker's limit.
        max: u32,
    },
    /// The broker's Maximum QoS is 0 and the job publishes at QoS 1.
    QosNotSupported,
    /// The broker said twice in a row that a packet of ours was wrong (its reason code).
    Rejected {
        /// The DISCONNECT or CONNACK reason code.
        reason: u8,
    },
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Config(e) => write!(f, "invalid --{}: {e}", e.field().name()),
            DriverError::Buffer {
                which,
                needed,
                have,
            } => write!(
                f,
                "the {which} buffer is {have} bytes; this configuration needs {needed}"
            ),
            DriverError::PublishTooLarge { len, max } => write!(
                f,
                "{}",
                End::PublishTooLarge {
                    len: *len,
                    max: *max
                }
            ),
            DriverError::QosNotSupported => write!(f, "{}", End::QosNotSupported),
            DriverError::Rejected { reason } => write!(
                f,
                "the broker answered 0x{reason:02x} {}, twice in a row: it refuses what this \
                 configuration sends (check the topic, client id and payload prefix against its \
                 rules)",
                crate::wire::reason_name(*reason)
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Connecting { deadline: u64 },
    Live,
}

/// The token in use, or on its way in: identified by a hash, never kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TokenId {
    hash: u64,
    exp: Option<u64>,
}

/// Runs connections until the job is done or stopped; see the module doc.
pub struct Driver<'c, 'b, S: TcpClientStack, C: Clock, T: TokenSource> {
    cfg: &'c Config<'c>,
    stack: S,
    clock: Mono<C>,
    tokens: T,
    bufs: Buffers<'b>,
    rx_len: usize,
    tx_start: usize,
    tx_end: usize,
    /// A send failed and the transmit buffer was dropped unsent (its DISCONNECT too).
    tx_lost: bool,
    socket: Option<S::TcpSocket>,
    phase: Phase,
    conn: Option<Connection<'c>>,
    attempt_started: u64,
    /// Bytes of the token waiting in the token buffer for CONNECT while TCP (and TLS) connect.
    token_len: usize,
    // What survives connections.
    progress: Progress,
    pid_origin: u64,
    next_due_ms: u64,
    session_on_broker: bool,
    backoff: Backoff,
    blamed: u32,
    in_use: Option<TokenId>,
    offered: Option<TokenId>,
    token_dirty: bool,
    last_token_check: u64,
    expiring_warned: bool,
    reauth_retry_at: u64,
    reauth_retry_ms: u64,
    rotation_started: Option<u64>,
    stop: bool,
    events: Deque<Event, EVENTS>,
    stack_error: Option<S::Error>,
    /// A closed connection's DISCONNECT may wait for a full socket until then.
    closing_deadline: Option<u64>,
    /// The transmit buffer holds a token (CONNECT or AUTH) up to here until it is zeroed.
    secret_end: usize,
}

impl<'c, 'b, S, C, T> Driver<'c, 'b, S, C, T>
where
    S: TcpClientStack,
    C: Clock,
    u64: From<C::T>,
    T: TokenSource,
{
    /// A driver for `cfg`; `seed` feeds the backoff jitter (make it differ between devices).
    pub fn new(
        cfg: &'c Config<'c>,
        stack: S,
        clock: C,
        tokens: T,
        bufs: Buffers<'b>,
        seed: u64,
    ) -> Result<Self, DriverError> {
        cfg.validate().map_err(DriverError::Config)?;
        let need_tx = tx_len(
            0,
            cfg.client_id.len(),
            cfg.topic.len(),
            cfg.payload_prefix.len(),
        ) + bufs.token.len().min(MAX_TOKEN_LEN);
        for (which, needed, have) in [
            ("rx", RX_MIN, bufs.rx.len()),
            ("tx", need_tx, bufs.tx.len()),
            ("token", 1, bufs.token.len()),
        ] {
            if have < needed {
                return Err(DriverError::Buffer {
                    which,
                    needed,
                    have,
                });
            }
        }
        let progress = Progress {
            next: cfg.start,
            acked_next: cfg.start,
            sent_high: cfg.start,
            ..Progress::default()
        };
        Ok(Driver {
            cfg,
            stack,
            clock: Mono::new(clock),
            tokens,
            bufs,
            rx_len: 0,
            tx_start: 0,
            tx_end: 0,
            tx_lost: false,
            socket: None,
            phase: Phase::Idle,
            conn: None,
            attempt_started: 0,
            token_len: 0,
            progress,
            pid_origin: cfg.start,
            next_due_ms: 0,
            session_on_broker: false,
            backoff: Backoff::new(cfg.backoff, seed),
            blamed: 0,
            in_use: None,
            offered: None,
            token_dirty: false,
            last_token_check: 0,
            expiring_warned: false,
            reauth_retry_at: 0,
            reauth_retry_ms: 0,
            rotation_started: None,
            stop: false,
            events: Deque::new(),
            stack_error: None,
            closing_deadline: None,
            secret_end: 0,
        })
    }

    /// Asks for a stop: publishing ends, in-flight messages drain (bounded), DISCONNECT is sent
    /// and [`Driver::poll`] answers [`Status::Stopped`].
    pub fn stop(&mut self) {
        self.stop = true;
    }

    /// Counters so far.
    pub fn progress(&self) -> Progress {
        self.conn
            .as_ref()
            .map_or(self.progress, Connection::progress)
    }

    /// Milliseconds on the driver's clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The socket of the live connection attempt (to wait on its file descriptor).
    pub fn socket(&self) -> Option<&S::TcpSocket> {
        self.socket.as_ref()
    }

    /// The network stack (to poll an interface).
    pub fn stack_mut(&mut self) -> &mut S {
        &mut self.stack
    }

    /// The token source.
    pub fn tokens(&self) -> &T {
        &self.tokens
    }

    /// The token source, to change it.
    pub fn tokens_mut(&mut self) -> &mut T {
        &mut self.tokens
    }

    /// The last error the stack returned, with all its detail (the events carry only its kind).
    pub fn take_stack_error(&mut self) -> Option<S::Error> {
        self.stack_error.take()
    }

    /// The next event; call until `None` after every [`Driver::poll`].
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Does all work that is ready; see [`Status`].
    pub fn poll(&mut self, ready: Ready) -> Result<Status, DriverError> {
        let now = self.clock.now_ms();
        match self.phase {
            Phase::Idle => self.idle(now),
            Phase::Connecting { deadline } => self.connecting(now, deadline),
            Phase::Live => self.live(now, ready),
        }
    }

    fn idle(&mut self, now: u64) -> Result<Status, DriverError> {
        if self.progress.acked_next >= self.cfg.end() {
            return Ok(Status::Finished(self.progress));
        }
        if self.stop {
            return Ok(Status::Stopped(self.progress));
        }
        if self.tokens.changed() {
            // A new token deserves an attempt now, whatever the last one earned.
            if let Ok(id) = self.peek_token() {
                if self.in_use.is_some_and(|u| u.hash != id.hash) {
                    self.backoff.allow_now(now);
                }
            }
        }
        let wait = self.backoff.next_at_ms().saturating_sub(now);
        if wait > 0 {
            return Ok(wait_for(wait, false, false));
        }
        let token = match self.tokens.load(self.bufs.token) {
            Ok(t) if t.len <= self.bufs.token.len() => t,
            Ok(t) => {
                return Err(DriverError::Buffer {
                    which: "token",
                    needed: t.len,
                    have: self.bufs.token.len(),
                })
            }
            Err(_) => {
                let retry_in_ms = self.backoff.fail(now);
                self.push(Event::TokenUnavailable { retry_in_ms });
                return Ok(wait_for(retry_in_ms, false, false));
            }
        };
        let times = TokenTimes {
            exp: token.exp,
            iat: None,
        };
        if let Some(unix) = self.tokens.unix_now() {
            if let Freshness::Expired { ago_s } = freshness(times, unix, 0) {
                self.zero_token(token.len);
                let retry_in_ms = self.backoff.fail(now);
                self.push(Event::TokenExpired { ago_s, retry_in_ms });
                return Ok(wait_for(retry_in_ms, false, false));
            }
        }
        self.in_use = Some(TokenId {
            hash: hash(self.bufs.token.get(..token.len).unwrap_or_default()),
            exp: token.exp,
        });
        self.token_dirty = false;
        self.expiring_warned = false;
        self.offered = None;
        self.attempt_started = now;
        self.token_len = token.len;
        self.push(Event::Connecting {
            attempt: self.backoff.failures() + 1,
        });
        let mut socket = match self.stack.socket() {
            Ok(s) => s,
            Err(e) => return Ok(self.attempt_failed(now, e, token.len)),
        };
        match self.stack.connect(&mut socket, self.cfg.broker) {
            Ok(()) => {
                self.socket = Some(socket);
                self.start_mqtt(now, token.len)
            }
            Err(nb::Error::WouldBlock) => {
                self.socket = Some(socket);
                let deadline = now.saturating_add(self.cfg.connect_timeout_ms);
                self.phase = Phase::Connecting { deadline };
                Ok(wait_for(deadline - now, false, true))
            }
            Err(nb::Error::Other(e)) => {
                let _ = self.stack.close(socket);
                Ok(self.attempt_failed(now, e, token.len))
            }
        }
    }

    fn connecting(&mut self, now: u64, deadline: u64) -> Result<Status, DriverError> {
        let token_len = self.bufs.token.len();
        let Some(socket) = self.socket.as_mut() else {
            self.phase = Phase::Idle;
            return Ok(wait_for(0, false, false));
        };
        if self.stop {
            self.close_socket();
            self.zero_token(token_len);
            self.phase = Phase::Idle;
            return Ok(Status::Stopped(self.progress));
        }
        match self.stack.connect(socket, self.cfg.broker) {
            Ok(()) => self.start_mqtt(now, self.token_len),
            Err(nb::Error::WouldBlock) if now >= deadline => {
                self.close_socket();
                self.zero_token(token_len);
                self.phase = Phase::Idle;
                self.ended(now, End::ConnectTimeout, false, false);
                Ok(wait_for(0, false, false))
            }
            Err(nb::Error::WouldBlock) => Ok(wait_for(deadline - now, false, true)),
            Err(nb::Error::Other(e)) => {
                self.close_socket();
                Ok(self.attempt_failed(now, e, token_len))
            }
        }
    }

    fn start_mqtt(&mut self, now: u64, token_len: usize) -> Result<Status, DriverError> {
        let resume = Resume {
            progress: self.progress,
            pid_origin: self.pid_origin,
            resume_session: self.session_on_broker,
            next_due_ms: self.next_due_ms,
            rx_capacity: self.bufs.rx.len(),
            connack_deadline_ms: self
                .attempt_started
                .saturating_add(self.cfg.connect_timeout_ms),
        };
        let mut conn = Connection::new(self.cfg, resume);
        let token = self.bufs.token.get(..token_len).unwrap_or_default();
        let written = conn.connect(token, self.bufs.tx, now);
        self.zero_token(token_len);
        let len = written.map_err(|_| DriverError::Buffer {
            which: "tx",
            needed: tx_len(
                token_len,
                self.cfg.client_id.len(),
                self.cfg.topic.len(),
                self.cfg.payload_prefix.len(),
            ),
            have: self.bufs.tx.len(),
        })?;
        self.tx_start = 0;
        self.tx_end = len;
        self.secret_end = len;
        self.tx_lost = false;
        self.rx_len = 0;
        self.conn = Some(conn);
        self.phase = Phase::Live;
        self.live(now, Ready::ALL)
    }

    fn live(&mut self, now: u64, ready: Ready) -> Result<Status, DriverError> {
        let mut read = ready.readable;
        for _ in 0..ROUNDS {
            let mut moved = self.flush();
            let mut more = false;
            if read {
                let (came, full) = self.receive(now);
                moved |= came;
                more = full;
            }
            let Some(conn) = self.conn.as_mut() else {
                break;
            };
            conn.handle_timeout(now);
            if self.stop {
                conn.drain(Why::Stop, now.saturating_add(self.cfg.drain_timeout_ms));
            }
            self.tokens_live(now);
            moved |= self.transmit(now);
            moved |= self.flush();
            self.take_deferred(now);
            if self.conn.as_ref().is_some_and(Connection::is_closed) {
                self.collect_events(now);
                if let Some(wait) = self.disconnect_owed(now) {
                    return Ok(wait);
                }
                return self.end_connection(now);
            }
            if !moved {
                break;
            }
            // Read again at once only when the last read filled the buffer: otherwise the socket
            // was empty a moment ago, and poll(2) says when it is not (a read now would mostly
            // answer EAGAIN).
            read = more;
        }
        // Once per poll: the connection coalesces what is frequent (published, acknowledged),
        // so the driver's queue holds a handful of events whatever the rounds did.
        self.collect_events(now);
        let Some(conn) = self.conn.as_ref() else {
            return Ok(wait_for(0, false, false));
        };
        let pending_tx = self.tx_start < self.tx_end;
        if !pending_tx && conn.wants_transmit(now) {
            // Only the round limit stopped us: the caller should come straight back.
            return Ok(wait_for(0, true, false));
        }
        let mut deadline = conn.poll_timeout();
        let mut at = |t: u64| deadline = Some(deadline.map_or(t, |d| d.min(t)));
        // Token work can only start on a live connection with no re-authentication pending;
        // until then CONNACK or the broker's answer (readable) or its timeout wakes us, and a
        // wake-up that cannot act would spin.
        let can_reauth = conn.is_connected() && !conn.reauth_pending();
        if self.token_dirty && self.cfg.auth == Auth::K8sSat && can_reauth {
            at(self.reauth_retry_at.max(now + 1));
        }
        if self.watching_expiry() {
            // Once a second, never in the past: the expiry guard needs these wake-ups too.
            let check = self.last_token_check + EXPIRING_RECHECK_MS;
            at(if check > now {
                check
            } else {
                now + EXPIRING_RECHECK_MS
            });
        }
        let ms = deadline.map_or(u64::MAX, |d| d.saturating_sub(now));
        Ok(wait_for(ms, true, pending_tx))
    }

    /// A DISCONNECT still in the transmit buffer of a closed connection gets until the drain
    /// timeout to reach a full socket, so the broker sees a clean end rather than a cut.
    fn disconnect_owed(&mut self, now: u64) -> Option<Status> {
        let owed = self.tx_start < self.tx_end
            && self.conn.as_ref().is_some_and(Connection::disconnect_sent);
        if !owed {
            self.closing_deadline = None;
            return None;
        }
        let deadline = *self
            .closing_deadline
            .get_or_insert(now.saturating_add(self.cfg.drain_timeout_ms));
        if now >= deadline {
            self.closing_deadline = None;
            return None;
        }
        Some(wait_for(deadline - now, false, true))
    }

    /// Sends what the transmit buffer holds; true when bytes left.
    fn flush(&mut self) -> bool {
        let Some(socket) = self.socket.as_mut() else {
            return false;
        };
        let mut moved = false;
        while self.tx_start < self.tx_end {
            let pending = self
                .bufs
                .tx
                .get(self.tx_start..self.tx_end)
                .unwrap_or_default();
            match self.stack.send(socket, pending) {
                Ok(0) | Err(nb::Error::WouldBlock) => break,
                Ok(n) => {
                    self.tx_start += n.min(self.tx_end - self.tx_start);
                    moved = true;
                }
                Err(nb::Error::Other(e)) => {
                    let kind = e.kind();
                    self.stack_error = Some(e);
                    if let Some(conn) = self.conn.as_mut() {
                        conn.abort(End::Network(kind));
                    }
                    self.tx_start = self.tx_end;
                    self.tx_lost = true;
                    return true;
                }
            }
        }
        if self.tx_start == self.tx_end {
            self.zero_sent_token();
            self.tx_start = 0;
            self.tx_end = 0;
            // Only bytes the stack took count: after a send error the buffer was dropped, not
            // sent, and its QoS 0 messages must be sent again.
            if moved {
                if let Some(conn) = self.conn.as_mut() {
                    conn.flushed();
                }
            }
        }
        moved
    }

    /// Reads once and hands whole packets to the connection; answers whether bytes came and
    /// whether the read filled the buffer (so more may be waiting).
    fn receive(&mut self, now: u64) -> (bool, bool) {
        let (Some(socket), Some(conn)) = (self.socket.as_mut(), self.conn.as_mut()) else {
            return (false, false);
        };
        let space = self.bufs.rx.get_mut(self.rx_len..).unwrap_or_default();
        if space.is_empty() {
            // Cannot happen (whole packets fit and are consumed), but an empty read would look
            // like EOF.
            return (false, false);
        }
        let room = space.len();
        match self.stack.receive(socket, space) {
            Err(nb::Error::WouldBlock) => (false, false),
            // The broker closed TCP: noticed now, not at the next keepalive.
            Ok(0) => {
                conn.abort(End::PeerClosed);
                (true, false)
            }
            Ok(n) => {
                self.rx_len = (self.rx_len + n).min(self.bufs.rx.len());
                let data = self.bufs.rx.get(..self.rx_len).unwrap_or_default();
                let used = conn.handle_input(data, now).min(self.rx_len);
                self.bufs.rx.copy_within(used..self.rx_len, 0);
                self.rx_len -= used;
                (true, n == room)
            }
            Err(nb::Error::Other(e)) => {
                conn.abort(End::Network(e.kind()));
                self.stack_error = Some(e);
                (true, false)
            }
        }
    }

    /// Lets the connection write into the free tail of the transmit buffer.
    fn transmit(&mut self, now: u64) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let free = self.bufs.tx.get_mut(self.tx_end..).unwrap_or_default();
        let n = conn.poll_transmit(now, free);
        self.tx_end += n;
        n > 0
    }

    /// Re-reads a changed or expiring token and presents a new one.
    fn tokens_live(&mut self, now: u64) {
        if self.tokens.changed() {
            self.token_dirty = true;
        }
        let expiring = self.watching_expiry() && now >= self.last_token_check + EXPIRING_RECHECK_MS;
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let ready = conn.is_connected() && !conn.reauth_pending() && now >= self.reauth_retry_at;
        if (self.token_dirty || expiring) && ready {
            self.last_token_check = now;
            self.token_dirty = false;
            self.present_new_token(now);
        }
        self.guard_expiry(now);
    }

    /// Whether the token in use is inside its expiry margin (re-read it every second).
    fn watching_expiry(&self) -> bool {
        let (Some(id), Some(unix)) = (self.in_use, self.tokens.unix_now()) else {
            return false;
        };
        let times = TokenTimes {
            exp: id.exp,
            iat: None,
        };
        !matches!(
            freshness(times, unix, self.cfg.expiry_margin_s),
            Freshness::Fresh { .. }
        )
    }

    fn present_new_token(&mut self, now: u64) {
        let token = match self.tokens.load(self.bufs.token) {
            Ok(t) if t.len <= self.bufs.token.len() => t,
            // Keep the token in use; the next change or check tries again.
            _ => return,
        };
        let id = TokenId {
            hash: hash(self.bufs.token.get(..token.len).unwrap_or_default()),
            exp: token.exp,
        };
        if self.in_use.is_some_and(|u| u.hash == id.hash) || self.offered == Some(id) {
            self.zero_token(token.len);
            if !self.expiring_warned && self.watching_expiry() {
                self.expiring_warned = true;
                let left = match (id.exp, self.tokens.unix_now()) {
                    (Some(exp), Some(unix)) => exp.saturating_sub(unix),
                    _ => 0,
                };
                self.push(Event::TokenExpiring { expires_in_s: left });
            }
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match self.cfg.auth {
            Auth::Sat => {
                conn.drain(Why::Rotation, now.saturating_add(self.cfg.drain_timeout_ms));
                self.push(Event::TokenChanged { exp: id.exp });
                self.rotation_started = Some(now);
                self.zero_token(token.len);
            }
            Auth::K8sSat => {
                let data = self.bufs.token.get(..token.len).unwrap_or_default();
                let free = self.bufs.tx.get_mut(self.tx_end..).unwrap_or_default();
                match conn.reauthenticate(data, id.exp, free, now) {
                    Ok(n) => {
                        self.tx_end += n;
                        self.secret_end = self.tx_end;
                        self.offered = Some(id);
                        // Only now: a busy transmit buffer retries, and must not report the
                        // same token twice.
                        self.push(Event::TokenChanged { exp: id.exp });
                    }
                    // The transmit buffer is busy: try again on the next poll.
                    Err(ReauthError::Emit(_)) => self.token_dirty = true,
                    // Draining (tokens_live checked the rest): the next connection loads the
                    // new token anyway; retrying would wake every millisecond until it ends.
                    Err(ReauthError::NotNow | ReauthError::NotEnhanced) => {}
                }
                self.zero_token(token.len);
            }
        }
    }

    /// Replaces a connection before its token's `exp` when a newer token is waiting.
    fn guard_expiry(&mut self, now: u64) {
        let (Some(id), Some(unix), Some(conn)) =
            (self.in_use, self.tokens.unix_now(), self.conn.as_mut())
        else {
            return;
        };
        let Some(exp) = id.exp else {
            return;
        };
        let newer = self.offered.is_some() || self.token_dirty;
        if newer && conn.is_connected() && unix + EXPIRY_GUARD_S >= exp {
            let left_ms = exp.saturating_sub(unix).saturating_sub(1) * 1_000;
            conn.drain(Why::TokenExpiring, now.saturating_add(left_ms));
        }
    }

    /// Schedules the retry of a re-authentication the broker deferred (AUTH 0x18).
    fn take_deferred(&mut self, now: u64) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if conn.take_reauth_deferred() {
            self.reauth_retry_ms = (self.reauth_retry_ms * 2)
                .clamp(self.cfg.backoff.floor_ms.max(1), REAUTH_RETRY_CAP_MS);
            self.reauth_retry_at = now.saturating_add(self.reauth_retry_ms);
            self.offered = None;
            self.token_dirty = true;
            let retry_in_ms = self.reauth_retry_ms;
            self.push(Event::ReauthDeferred { retry_in_ms });
        }
    }

    fn collect_events(&mut self, now: u64) {
        while let Some(event) = self.conn.as_mut().and_then(Connection::poll_event) {
            match &event {
                Event::Reauthenticated { .. } => {
                    self.in_use = self.offered.take().or(self.in_use);
                    self.reauth_retry_ms = 0;
                    self.expiring_warned = false;
                }
                Event::Published { .. } => {
                    if let Some(since) = self.rotation_started.take() {
                        self.push(event);
                        self.push(Event::Rotated {
                            gap_ms: now.saturating_sub(since),
                        });
                        continue;
                    }
                }
                _ => {}
            }
            self.push(event);
        }
    }

    fn end_connection(&mut self, now: u64) -> Result<Status, DriverError> {
        let Some(conn) = self.conn.take() else {
            return Ok(wait_for(0, false, false));
        };
        // The DISCONNECT is in the transmit buffer: one last try to send it.
        self.flush();
        let disconnect_sent =
            conn.disconnect_sent() && self.tx_start == self.tx_end && !self.tx_lost;
        self.close_socket();
        // The connection is over (not "connected") by now: whether it reached CONNACK success
        // shows in its connection count.
        let reached_connack = conn.progress().connections > self.progress.connections;
        self.progress = conn.progress();
        if let Some(n) = conn.unflushed_from() {
            // QoS 0 written but never handed to the stack: send again, never skip.
            self.progress.next = n;
            self.progress.acked_next = n;
        }
        self.pid_origin = conn.pid_origin();
        self.next_due_ms = conn.next_due_ms();
        self.session_on_broker = self.cfg.session_expiry_s > 0 && reached_connack
            || (self.session_on_broker && !conn.made_progress());
        let why = conn.end().cloned().unwrap_or(End::PeerClosed);
        if matches!(why, End::TokenExpiring | End::ReauthTimeout) {
            self.rotation_started.get_or_insert(now);
        }
        self.ended(now, why.clone(), disconnect_sent, conn.made_progress());
        match why {
            End::PublishTooLarge { len, max } => {
                return Err(DriverError::PublishTooLarge { len, max })
            }
            End::QosNotSupported => return Err(DriverError::QosNotSupported),
            _ => {}
        }
        if let Some(reason) = why.blames_us() {
            self.blamed += 1;
            if self.blamed >= 2 {
                return Err(DriverError::Rejected { reason });
            }
        } else if conn.made_progress() {
            self.blamed = 0;
        }
        Ok(wait_for(0, false, false))
    }

    /// Books a connection's end: backoff, events.
    fn ended(&mut self, now: u64, why: End, disconnect_sent: bool, progress: bool) {
        self.phase = Phase::Idle;
        self.closing_deadline = None;
        self.zero_sent_token();
        self.rx_len = 0;
        self.tx_start = 0;
        self.tx_end = 0;
        if progress || !why.is_failure() {
            self.backoff.reset();
        }
        let retry_in_ms = if why.is_failure() {
            self.backoff.fail(now)
        } else {
            self.backoff.allow_now(now);
            0
        };
        let failures = if why.is_failure() {
            self.backoff.failures()
        } else {
            0
        };
        let completed = why == End::Completed;
        self.push(Event::Disconnected {
            why,
            disconnect_sent,
            retry_in_ms,
            failures,
        });
        if completed {
            self.push(Event::Finished {
                progress: self.progress,
            });
        }
    }

    fn attempt_failed(&mut self, now: u64, e: S::Error, token_len: usize) -> Status {
        self.zero_token(token_len);
        let kind = e.kind();
        self.stack_error = Some(e);
        self.socket = None;
        self.ended(now, End::Network(kind), false, false);
        wait_for(0, false, false)
    }

    fn close_socket(&mut self) {
        if let Some(socket) = self.socket.take() {
            // A failed close leaves nothing to retry: the socket is gone either way.
            let _ = self.stack.close(socket);
        }
    }

    /// A CONNECT or AUTH sent (or abandoned) still holds the token in the transmit buffer.
    fn zero_sent_token(&mut self) {
        let end = core::mem::take(&mut self.secret_end).min(self.bufs.tx.len());
        self.bufs.tx[..end].fill(0);
    }

    fn zero_token(&mut self, len: usize) {
        let len = len.min(self.bufs.token.len());
        self.bufs.token[..len].fill(0);
    }

    /// Loads the token only to identify it.
    fn peek_token(&mut self) -> Result<TokenId, ()> {
        let t = self.tokens.load(self.bufs.token).map_err(|_| ())?;
        let id = TokenId {
            hash: hash(self.bufs.token.get(..t.len).unwrap_or_default()),
            exp: t.exp,
        };
        self.zero_token(t.len);
        Ok(id)
    }

    fn push(&mut self, event: Event) {
        if self.events.is_full() {
            // The caller did not drain; the oldest report is the least useful.
            self.events.pop_front();
        }
        let _ = self.events.push_back(event);
    }
}

fn wait_for(ms: u64, readable: bool, writable: bool) -> Status {
    Status::Wait {
        ms,
        readable,
        writable,
    }
}

/// FNV-1a: tells tokens apart without keeping them.
fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
