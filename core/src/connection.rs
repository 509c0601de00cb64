//! One MQTT v5 connection as a sans-IO state machine: bytes and `now` in; bytes, deadlines and
//! events out. Public for fuzzing and for firmware that writes its own driver; programs use
//! [`Driver`](crate::Driver).
//!
//! QoS 1 state is two counters, not stored packets: the broker must acknowledge in order (MQTT
//! v5 §4.6), so "in flight" is the range `acked..next`, and message `n`'s packet identifier is
//! `1 + (n - pid_origin) mod 65535`. The payload of `n` is `prefix + n`, so a resend re-encodes
//! it. RAM does not depend on the window.
//!
//! ```text
//!  new ──connect()──▶ AwaitConnack ──CONNACK 0x00──▶ Live ──drain()/done──▶ Draining
//!                        │  refused, timeout,            │  ▲ AUTH 0x19 / 0x00       │ in flight 0
//!                        ▼  EOF, protocol error          ▼  │ (re-authentication)    ▼ or deadline
//!                      Closing (DISCONNECT if we may) ◀──────────────────────────────┘
//!                        │ DISCONNECT written (or none owed)
//!                        ▼
//!                      Ended
//! ```

use heapless::Deque;

use crate::config::{Auth, Config, Qos, K8S_SAT_METHOD, SAT_USER};
use crate::event::{End, Event, Progress, ProtocolError, Text};
use crate::wire::{self, EmitError, Packet};

/// Rare events queued between two [`Connection::poll_event`] rounds; frequent ones (published,
/// acknowledged, rejected) are coalesced instead.
const EVENTS: usize = 4;

/// Where a new connection starts, from what earlier connections left.
#[derive(Debug, Clone, Copy)]
pub struct Resume {
    /// Counters so far.
    pub progress: Progress,
    /// Counter value whose packet identifier is 1.
    pub pid_origin: u64,
    /// Ask the broker to resume the session (Clean Start 0); only with a session expiry.
    pub resume_session: bool,
    /// When the next new message is due (milliseconds, the engine's clock).
    pub next_due_ms: u64,
    /// Bytes the caller's receive buffer holds: advertised as our Maximum Packet Size.
    pub rx_capacity: usize,
    /// No CONNACK by this time ends the attempt.
    pub connack_deadline_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// CONNECT not written yet.
    New,
    AwaitConnack,
    Live,
    /// The connection is over; `disconnect` holds the DISCONNECT reason still to write.
    Closing,
    Ended,
}

#[derive(Debug, Clone, Copy)]
struct Drain {
    why: Why,
    deadline: u64,
}

/// A planned end, kept small and `Copy` while draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// [`End::Stopped`].
    Stop,
    /// [`End::Rotation`].
    Rotation,
    /// [`End::TokenExpiring`].
    TokenExpiring,
}

impl From<Why> for End {
    fn from(why: Why) -> End {
        match why {
            Why::Stop => End::Stopped,
            Why::Rotation => End::Rotation,
            Why::TokenExpiring => End::TokenExpiring,
        }
    }
}

/// Why [`Connection::reauthenticate`] did not write an AUTH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReauthError {
    /// Only `K8S-SAT` connections re-authenticate in band.
    NotEnhanced,
    /// Not connected, draining, or a re-authentication is already pending.
    NotNow,
    /// The buffer cannot hold the AUTH packet.
    Emit(EmitError),
}

/// Counters of one PUBLISH batch or acknowledgement run, reported as one event.
#[derive(Debug, Clone, Copy, Default)]
struct Batch {
    first: u64,
    last: u64,
    duplicates: u64,
    any: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Rejections {
    first_n: u64,
    reason: u8,
    count: u64,
}

/// One MQTT connection; see the module doc.
#[derive(Debug)]
pub struct Connection<'c> {
    cfg: &'c Config<'c>,
    state: State,
    progress: Progress,
    pid_origin: u64,
    clean_start: bool,
    rx_capacity: usize,
    end: u64,
    next_due_ms: u64,
    // Negotiated at CONNACK.
    window: u16,
    max_packet: u32,
    keep_alive_ms: u64,
    alias: bool,
    alias_sent: bool,
    /// Messages below this were written by an earlier connection of a resumed session: DUP=1.
    dup_until: u64,
    // Timers.
    connack_deadline: u64,
    last_tx_ms: u64,
    ping_sent_ms: Option<u64>,
    ping_due: bool,
    drain: Option<Drain>,
    reauth_deadline: Option<u64>,
    reauth_exp: Option<u64>,
    reauth_deferred: bool,
    // What this connection achieved (for the backoff).
    acked_here: u64,
    flushed_here: u64,
    /// First QoS 0 message written since the last [`Connection::flushed`].
    unflushed_from: Option<u64>,
    /// Published while unflushed; counted as flushed by [`Connection::flushed`].
    unflushed_count: u64,
    disconnect: Option<u8>,
    disconnect_sent: bool,
    ended: Option<End>,
    events: Deque<Event, EVENTS>,
    published: Batch,
    acked_event: Option<u64>,
    rejections: Rejections,
}

impl<'c> Connection<'c> {
    /// A connection for `cfg` starting from `resume`; nothing is written until
    /// [`Connection::connect`].
    pub fn new(cfg: &'c Config<'c>, resume: Resume) -> Self {
        let p = resume.progress;
        Connection {
            cfg,
            state: State::New,
            progress: p,
            pid_origin: resume.pid_origin,
            clean_start: !(resume.resume_session && cfg.session_expiry_s > 0),
            rx_capacity: resume.rx_capacity,
            end: cfg.end(),
            next_due_ms: resume.next_due_ms,
            window: 1,
            max_packet: u32::MAX,
            keep_alive_ms: u64::from(cfg.keepalive_s) * 1_000,
            alias: false,
            alias_sent: false,
            dup_until: 0,
            connack_deadline: resume.connack_deadline_ms,
            last_tx_ms: 0,
            ping_sent_ms: None,
            ping_due: false,
            drain: None,
            reauth_deadline: None,
            reauth_exp: None,
            reauth_deferred: false,
            acked_here: 0,
            flushed_here: 0,
            unflushed_from: None,
            unflushed_count: 0,
            disconnect: None,
            disconnect_sent: false,
            ended: None,
            events: Deque::new(),
            published: Batch::default(),
            acked_event: None,
            rejections: Rejections::default(),
        }
    }

    /// Writes CONNECT with `token` (as `$sat` password or `K8S-SAT` Authentication Data) to the
    /// front of `buf`. The token is not kept.
    pub fn connect(&mut self, token: &[u8], buf: &mut [u8], now: u64) -> Result<usize, EmitError> {
        let (username, password, auth_method, auth_data) = match self.cfg.auth {
            Auth::Sat => (Some(SAT_USER), Some(token), None, None),
            Auth::K8sSat => (None, None, Some(K8S_SAT_METHOD), Some(token)),
        };
        let connect = wire::Connect {
            clean_start: self.clean_start,
            keep_alive: self.cfg.keepalive_s,
            session_expiry: self.cfg.session_expiry_s,
            receive_maximum: None,
            maximum_packet_size: u32::try_from(self.rx_capacity).ok(),
            topic_alias_maximum: None,
            auth_method,
            auth_data,
            client_id: self.cfg.client_id,
            username,
            password,
        };
        let len = wire::emit(&Packet::Connect(connect), buf)?;
        self.state = State::AwaitConnack;
        self.last_tx_ms = now;
        Ok(len)
    }

    /// Whether CONNACK success arrived and the connection is not over.
    pub fn is_connected(&self) -> bool {
        self.state == State::Live
    }

    /// Whether the connection is over and owes no more bytes: close the socket.
    pub fn is_closed(&self) -> bool {
        self.state == State::Ended
    }

    /// Why the connection ended (or is ending).
    pub fn end(&self) -> Option<&End> {
        self.ended.as_ref()
    }

    /// Whether a DISCONNECT was written.
    pub fn disconnect_sent(&self) -> bool {
        self.disconnect_sent
    }

    /// Counters, including this connection's.
    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// Counter value whose packet identifier is 1.
    pub fn pid_origin(&self) -> u64 {
        self.pid_origin
    }

    /// When the next new message is due.
    pub fn next_due_ms(&self) -> u64 {
        self.next_due_ms
    }

    /// QoS 1 messages written and not yet acknowledged.
    pub fn in_flight(&self) -> u64 {
        match self.cfg.qos {
            Qos::AtLeastOnce => self.progress.next - self.progress.acked_next,
            Qos::AtMostOnce => 0,
        }
    }

    /// The QoS 1 window in force (1 before CONNACK).
    pub fn window(&self) -> u16 {
        self.window
    }

    /// Whether this connection made progress (an acknowledgement at QoS 1, a message flushed at
    /// QoS 0): past failures no longer predict the next attempt.
    pub fn made_progress(&self) -> bool {
        self.acked_here > 0 || self.flushed_here > 0
    }

    /// Whether the broker answered the last re-authentication with AUTH 0x18 (try later);
    /// reading it clears it.
    pub fn take_reauth_deferred(&mut self) -> bool {
        core::mem::take(&mut self.reauth_deferred)
    }

    /// Whether a re-authentication is waiting for the broker's answer.
    pub fn reauth_pending(&self) -> bool {
        self.reauth_deadline.is_some()
    }

    /// Stops publishing new messages and ends the connection once every message in flight is
    /// acknowledged, or at `deadline`.
    pub fn drain(&mut self, why: Why, deadline: u64) {
        match self.state {
            State::New | State::AwaitConnack => self.close(why.into(), Some(0x00)),
            State::Live => {
                let d = self.drain.get_or_insert(Drain { why, deadline });
                d.deadline = d.deadline.min(deadline);
                self.check_drained();
            }
            _ => {}
        }
    }

    /// The transport ended (EOF, a stack error): no DISCONNECT can be written any more.
    pub fn abort(&mut self, why: End) {
        if self.state != State::Ended {
            self.finish(why);
        }
        self.state = State::Ended;
        self.disconnect = None;
    }

    /// Writes AUTH 0x19 (re-authenticate) with `token` to the front of `buf`. Publishing goes on
    /// while the broker decides.
    pub fn reauthenticate(
        &mut self,
        token: &[u8],
        exp: Option<u64>,
        buf: &mut [u8],
        now: u64,
    ) -> Result<usize, ReauthError> {
        if self.cfg.auth != Auth::K8sSat {
            return Err(ReauthError::NotEnhanced);
        }
        if self.state != State::Live || self.drain.is_some() || self.reauth_deadline.is_some() {
            return Err(ReauthError::NotNow);
        }
        let auth = wire::Auth {
            reason: 0x19,
            method: Some(K8S_SAT_METHOD),
            data: Some(token),
            reason_string: None,
        };
        let len = wire::emit(&Packet::Auth(auth), buf).map_err(ReauthError::Emit)?;
        self.reauth_deadline = Some(now.saturating_add(self.cfg.reauth_timeout_ms));
        self.reauth_exp = exp;
        self.last_tx_ms = now;
        self.push(Event::Reauthenticating { exp });
        Ok(len)
    }

    /// Consumes whole packets from the front of `bytes`; returns how many bytes were used (the
    /// caller keeps the rest, a partial packet, for the next call).
    pub fn handle_input(&mut self, bytes: &[u8], now: u64) -> usize {
        // A publisher's reactions to input do not depend on its arrival time; `now` keeps the
        // sans-IO contract uniform (every input carries its time).
        let _ = now;
        let mut used = 0;
        while matches!(self.state, State::AwaitConnack | State::Live) {
            let rest = bytes.get(used..).unwrap_or_default();
            let header = match wire::header(rest) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(m) => {
                    self.protocol(ProtocolError::Malformed(m));
                    break;
                }
            };
            if header.packet_len > self.rx_capacity {
                self.protocol(ProtocolError::PacketTooLarge {
                    len: header.packet_len,
                    max: self.rx_capacity,
                });
                break;
            }
            match wire::parse(rest) {
                Ok(Some((packet, len))) => {
                    used += len;
                    self.on_packet(packet);
                }
                Ok(None) => break,
                Err(m) => {
                    self.protocol(ProtocolError::Malformed(m));
                    break;
                }
            }
        }
        // After the end, what is left is of no use to anyone.
        if matches!(self.state, State::Closing | State::Ended) {
            bytes.len()
        } else {
            used
        }
    }

    fn on_packet(&mut self, packet: Packet<'_>) {
        // Any packet from the broker proves the link is alive.
        self.ping_sent_ms = None;
        match (self.state, packet) {
            (State::AwaitConnack, Packet::Connack(ack)) => self.on_connack(&ack),
            (State::AwaitConnack, Packet::Auth(auth)) if auth.reason == 0x18 => {
                self.close(End::AuthChallenge, Some(0x00))
            }
            (_, Packet::Disconnect(d)) => self.finish(End::ServerDisconnect {
                reason: d.reason,
                text: Text::new(d.reason_string.unwrap_or("")),
            }),
            (State::Live, Packet::Puback(ack)) => self.on_puback(ack.packet_id, ack.reason),
            (State::Live, Packet::Pingresp) => {}
            (State::Live, Packet::Auth(auth)) if self.reauth_deadline.is_some() => {
                if auth.method != Some(K8S_SAT_METHOD) {
                    return self.protocol(ProtocolError::UnexpectedAuth {
                        reason: auth.reason,
                    });
                }
                self.reauth_deadline = None;
                match auth.reason {
                    0x00 => {
                        self.progress.reauths += 1;
                        self.push(Event::Reauthenticated {
                            exp: self.reauth_exp,
                        });
                    }
                    // The driver hears of it through `take_reauth_deferred` and retries later.
                    0x18 => self.reauth_deferred = true,
                    r => self.protocol(ProtocolError::UnexpectedAuth { reason: r }),
                }
            }
            (State::Live, Packet::Auth(auth)) => self.protocol(ProtocolError::UnexpectedAuth {
                reason: auth.reason,
            }),
            // mosquitto 2.0.11 answers a refused re-authentication with CONNACK (fixed in 2.0.13).
            (State::Live, Packet::Connack(ack))
                if self.reauth_deadline.is_some() && ack.reason >= 0x80 =>
            {
                self.finish(End::ReauthRefused(ack.reason))
            }
            (_, other) => self.protocol(ProtocolError::Unexpected {
                kind: kind_of(&other),
            }),
        }
    }

    fn on_connack(&mut self, ack: &wire::Connack<'_>) {
        if ack.reason >= 0x80 {
            return self.finish(match ack.reason {
                0x86 | 0x87 => End::TokenRejected(ack.reason),
                0x8c => End::BadAuthMethod,
                r => End::Refused(r),
            });
        }
        if ack.session_present && self.clean_start {
            return self.protocol(ProtocolError::SessionPresentOnCleanStart);
        }
        let receive_maximum = ack.receive_maximum.unwrap_or(u16::MAX);
        self.window = receive_maximum.min(self.cfg.window_cap).max(1);
        self.max_packet = ack.maximum_packet_size.unwrap_or(u32::MAX);
        if let Some(ka) = ack.server_keep_alive {
            self.keep_alive_ms = u64::from(ka) * 1_000;
        }
        self.alias = ack.topic_alias_maximum.unwrap_or(0) >= 1;
        if self.cfg.qos == Qos::AtLeastOnce && ack.maximum_qos == Some(0) {
            return self.close(End::QosNotSupported, Some(0x00));
        }
        let largest = self.publish_len(self.end.saturating_sub(1), true);
        if largest > self.max_packet as usize {
            return self.close(
                End::PublishTooLarge {
                    len: largest,
                    max: self.max_packet,
                },
                Some(0x00),
            );
        }
        self.state = State::Live;
        let p = &mut self.progress;
        p.connections += 1;
        if ack.session_present {
            // The broker still holds our unacknowledged messages under their identifiers.
            self.dup_until = p.sent_high;
        } else {
            self.pid_origin = p.acked_next;
        }
        // QoS 1: resend from the first unacknowledged (QoS 0 was rewound by the driver).
        p.next = p.acked_next;
        let (from, resend) = (p.acked_next, p.sent_high.saturating_sub(p.acked_next));
        let keep_alive_s = u16::try_from(self.keep_alive_ms / 1_000).unwrap_or(u16::MAX);
        self.push(Event::Connected {
            session_present: ack.session_present,
            receive_maximum,
            window: self.window,
            keep_alive_s,
            topic_alias: self.alias,
            assigned_client_id: ack.assigned_client_id.map(Text::new),
        });
        if resend > 0 {
            self.push(Event::Republishing {
                from,
                count: resend,
                dup: ack.session_present,
            });
        }
        self.check_done();
    }

    fn on_puback(&mut self, id: u16, reason: u8) {
        if self.cfg.qos != Qos::AtLeastOnce || self.in_flight() == 0 {
            return self.protocol(ProtocolError::PubackNothingInFlight { id });
        }
        let n = self.progress.acked_next;
        let expected = self.pid(n);
        if id != expected {
            return self.protocol(ProtocolError::PubackOutOfOrder { expected, got: id });
        }
        self.progress.acked_next = n + 1;
        self.progress.acked += 1;
        self.acked_here += 1;
        self.acked_event = Some(n);
        if reason >= 0x80 {
            self.progress.rejected += 1;
            let r = &mut self.rejections;
            if r.count == 0 {
                r.first_n = n;
                r.reason = reason;
            }
            r.count += 1;
        }
        self.check_done();
        self.check_drained();
    }

    /// Writes what is due to the front of `buf`: DISCONNECT, PINGREQ, then as many PUBLISHes as
    /// fit, the window allows and the schedule has made due. Returns the bytes written.
    pub fn poll_transmit(&mut self, now: u64, buf: &mut [u8]) -> usize {
        let mut at = 0;
        if self.state == State::Closing {
            if let Some(reason) = self.disconnect {
                let d = wire::Disconnect {
                    reason,
                    ..Default::default()
                };
                match wire::emit(&Packet::Disconnect(d), buf) {
                    Ok(len) => {
                        at = len;
                        self.disconnect_sent = true;
                    }
                    // The caller flushes and asks again.
                    Err(_) => return 0,
                }
            }
            self.disconnect = None;
            self.state = State::Ended;
            return at;
        }
        if self.state != State::Live {
            return 0;
        }
        if self.ping_due {
            match wire::emit(&Packet::Pingreq, buf) {
                Ok(len) => {
                    at = len;
                    self.ping_due = false;
                    self.ping_sent_ms = Some(now);
                }
                Err(_) => return 0,
            }
        }
        at += self.publish_due(now, buf.get_mut(at..).unwrap_or_default());
        if at > 0 {
            self.last_tx_ms = now;
        }
        at
    }

    fn publish_due(&mut self, now: u64, buf: &mut [u8]) -> usize {
        if self.drain.is_some() {
            return 0;
        }
        let mut at = 0;
        let mut digits = [0u8; 20];
        while self.progress.next < self.end {
            let n = self.progress.next;
            let fresh = n >= self.progress.sent_high;
            if self.cfg.qos == Qos::AtLeastOnce && self.in_flight() >= u64::from(self.window) {
                break;
            }
            if fresh && self.cfg.interval_ms > 0 && now < self.next_due_ms {
                break;
            }
            let with_topic = !self.alias || !self.alias_sent;
            let number = decimal(n, &mut digits);
            let publish = self.publish_repr(n, with_topic);
            let parts: [&[u8]; 2] = [self.cfg.payload_prefix.as_bytes(), number];
            let out = buf.get_mut(at..).unwrap_or_default();
            let Ok(len) = wire::emit_publish(&publish, &parts, out) else {
                break;
            };
            at += len;
            self.alias_sent |= self.alias;
            self.count_published(n, fresh, now);
        }
        at
    }

    fn count_published(&mut self, n: u64, fresh: bool, now: u64) {
        let p = &mut self.progress;
        p.next = n + 1;
        p.sent += 1;
        if !fresh {
            p.duplicates += 1;
        }
        p.sent_high = p.sent_high.max(n + 1);
        if fresh && self.cfg.interval_ms > 0 {
            // Keep the cadence, but never burst to catch up after a stall.
            let interval = self.cfg.interval_ms;
            self.next_due_ms = self
                .next_due_ms
                .saturating_add(interval)
                .max(now + 1)
                .min(now.saturating_add(interval));
        }
        if self.cfg.qos == Qos::AtMostOnce {
            self.unflushed_from.get_or_insert(n);
            self.unflushed_count += 1;
        }
        let b = &mut self.published;
        if !b.any {
            *b = Batch {
                first: n,
                last: n,
                duplicates: 0,
                any: true,
            };
        }
        b.last = n;
        b.duplicates += u64::from(!fresh);
    }

    /// Everything written so far reached the network stack: QoS 0 messages count as sent.
    pub fn flushed(&mut self) {
        if self.unflushed_from.take().is_some() {
            self.progress.acked_next = self.progress.next;
            self.flushed_here += self.unflushed_count;
            self.unflushed_count = 0;
        }
        self.check_done();
        // A drain at QoS 0 waits only for this.
        self.check_drained();
    }

    /// QoS 0 messages written but never flushed: the first of them, to send again.
    pub fn unflushed_from(&self) -> Option<u64> {
        self.unflushed_from
    }

    fn publish_repr(&self, n: u64, with_topic: bool) -> wire::Publish<'c> {
        let qos1 = self.cfg.qos == Qos::AtLeastOnce;
        wire::Publish {
            dup: qos1 && n < self.dup_until,
            qos: u8::from(self.cfg.qos),
            retain: false,
            topic: if with_topic { self.cfg.topic } else { "" },
            packet_id: qos1.then(|| self.pid(n)),
            topic_alias: self.alias.then_some(1),
            payload: &[],
        }
    }

    /// Bytes of the PUBLISH of message `n`.
    fn publish_len(&self, n: u64, with_topic: bool) -> usize {
        let mut digits = [0u8; 20];
        let len = self.cfg.payload_prefix.len() + decimal(n, &mut digits).len();
        wire::publish_len(&self.publish_repr(n, with_topic), len).unwrap_or(usize::MAX)
    }

    fn pid(&self, n: u64) -> u16 {
        // Within 1..=65535 by construction.
        (n.wrapping_sub(self.pid_origin) % 65_535) as u16 + 1
    }

    /// The earliest time [`Connection::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.state {
            State::New | State::Closing | State::Ended => None,
            State::AwaitConnack => Some(self.connack_deadline),
            State::Live => {
                let mut t = self.reauth_deadline;
                let mut at = |x: u64| t = Some(t.map_or(x, |t| t.min(x)));
                if let Some(d) = self.drain {
                    at(d.deadline);
                }
                if self.keep_alive_ms > 0 {
                    match self.ping_sent_ms {
                        Some(sent) => at(sent.saturating_add(self.keep_alive_ms)),
                        None => at(self.last_tx_ms.saturating_add(self.keep_alive_ms)),
                    }
                }
                let more = self.progress.next < self.end && self.drain.is_none();
                let window_open =
                    self.cfg.qos == Qos::AtMostOnce || self.in_flight() < u64::from(self.window);
                if more && window_open && self.cfg.interval_ms > 0 {
                    at(self.next_due_ms);
                }
                t
            }
        }
    }

    /// Whether PUBLISHes are ready to write now (the caller has transmit work).
    pub fn wants_transmit(&self, now: u64) -> bool {
        match self.state {
            State::Closing => true,
            State::Live => {
                if self.ping_due {
                    return true;
                }
                let n = self.progress.next;
                let open =
                    self.cfg.qos == Qos::AtMostOnce || self.in_flight() < u64::from(self.window);
                let due = n < self.progress.sent_high
                    || self.cfg.interval_ms == 0
                    || now >= self.next_due_ms;
                self.drain.is_none() && n < self.end && open && due
            }
            _ => false,
        }
    }

    /// Acts on every deadline that has passed.
    pub fn handle_timeout(&mut self, now: u64) {
        match self.state {
            State::AwaitConnack if now >= self.connack_deadline => {
                self.close(End::ConnectTimeout, Some(0x00))
            }
            State::Live => {
                if self.reauth_deadline.is_some_and(|d| now >= d) {
                    self.reauth_deadline = None;
                    return self.close(End::ReauthTimeout, Some(0x00));
                }
                if let Some(d) = self.drain {
                    if now >= d.deadline {
                        return self.close(d.why.into(), Some(0x00));
                    }
                }
                if self.keep_alive_ms > 0 {
                    match self.ping_sent_ms {
                        Some(sent) if now >= sent.saturating_add(self.keep_alive_ms) => {
                            self.close(End::LinkLost, Some(0x00));
                        }
                        None if now >= self.last_tx_ms.saturating_add(self.keep_alive_ms) => {
                            self.ping_due = true;
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// The next event, if any; call until `None` after each step.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        if self.published.any {
            let b = core::mem::take(&mut self.published);
            return Some(Event::Published {
                first: b.first,
                last: b.last,
                duplicates: b.duplicates,
            });
        }
        if let Some(through) = self.acked_event.take() {
            return Some(Event::Acked { through });
        }
        if self.rejections.count > 0 {
            let r = core::mem::take(&mut self.rejections);
            return Some(Event::PublishRejected {
                n: r.first_n,
                reason: r.reason,
                count: r.count,
            });
        }
        None
    }

    fn push(&mut self, event: Event) {
        // Rare events only (one per connection phase); a full queue drops the oldest, which
        // cannot happen while the caller drains after every step.
        if self.events.is_full() {
            self.events.pop_front();
        }
        let _ = self.events.push_back(event);
    }

    fn check_done(&mut self) {
        if self.state != State::Live {
            return;
        }
        let done = match self.cfg.qos {
            Qos::AtLeastOnce => self.progress.acked_next >= self.end,
            Qos::AtMostOnce => self.progress.next >= self.end && self.unflushed_from.is_none(),
        };
        if done {
            self.close(End::Completed, Some(0x00));
        }
    }

    fn check_drained(&mut self) {
        if let (State::Live, Some(d)) = (self.state, self.drain) {
            if self.in_flight() == 0 && self.unflushed_from.is_none() {
                self.close(d.why.into(), Some(0x00));
            }
        }
    }

    fn protocol(&mut self, e: ProtocolError) {
        self.close(End::Protocol(e), Some(e.reason()));
    }

    /// Ends with a DISCONNECT to write (`Some(reason)`).
    fn close(&mut self, why: End, disconnect: Option<u8>) {
        if matches!(self.state, State::Closing | State::Ended) {
            return;
        }
        self.ended = Some(why);
        self.disconnect = disconnect;
        self.state = State::Closing;
    }

    /// Ends without a DISCONNECT: the broker already ended it.
    fn finish(&mut self, why: End) {
        if self.state == State::Ended {
            return;
        }
        if self.ended.is_none() {
            self.ended = Some(why);
        }
        self.disconnect = None;
        self.state = State::Ended;
    }
}

fn kind_of(packet: &Packet<'_>) -> u8 {
    match packet {
        Packet::Connect(_) => 1,
        Packet::Connack(_) => 2,
        Packet::Publish(_) => 3,
        Packet::Puback(_) => 4,
        Packet::Pingreq => 12,
        Packet::Pingresp => 13,
        Packet::Disconnect(_) => 14,
        Packet::Auth(_) => 15,
    }
}

/// `n` in decimal, in the tail of `buf`.
pub fn decimal(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut v = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}
