//! The guard: a `TcpClientStack` decorator between minimq 0.10 and the user's stack.
//!
//! minimq 0.10 has behaviours that must never reach a user (see DESIGN.md, "minimq 0.10 as it
//! really behaves"): it wedges after a refused CONNACK, misses EOF until its ping timeout,
//! reconnects in a tight loop, ignores a server DISCONNECT, never closes its socket, and panics
//! on a PUBACK it does not expect. The guard owns the real socket and reads every byte minimq
//! reads. Once it decides a connection is over it records why ([`LinkEnd`]) and fails every
//! further call, so minimq never sees the packet that would hurt it; the session then ends.

use core::cell::RefCell;
use core::net::SocketAddr;

use embedded_nal::{nb, TcpClientStack, TcpError, TcpErrorKind};
use heapless::{Deque, Vec};

use crate::frame::{self, ConnAck, Header, Malformed, PacketType, PubAck, PublishHead};

/// Most QoS 1 publishes minimq 0.10 can track (its republication deque holds 10).
pub const WINDOW_MAX: usize = 10;

/// Bytes of each inbound packet the guard keeps to read it: a CONNACK carrying an assigned
/// client id, a reason string and user properties fits; properties past it are not read.
pub const CAPTURE: usize = 256;

/// A broker behaviour that breaks MQTT v5 or this client's expectations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// Bytes that are not a valid packet.
    Malformed(Malformed),
    /// A packet this publisher never asks for (its first byte), e.g. PUBLISH or SUBACK.
    UnexpectedPacket(u8),
    /// A packet other than CONNACK before the CONNACK.
    BeforeConnAck(u8),
    /// A PUBACK for nothing in flight, or not for the oldest one (MQTT v5 §4.6 orders them).
    UnexpectedPubAck {
        /// The identifier the broker acknowledged.
        packet_id: u16,
        /// The identifier the oldest in-flight publish has, if any.
        expected: Option<u16>,
    },
}

impl core::fmt::Display for Violation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Violation::Malformed(m) => write!(f, "malformed packet ({m:?})"),
            Violation::UnexpectedPacket(b) => write!(f, "unexpected packet type {}", b >> 4),
            Violation::BeforeConnAck(b) => write!(f, "packet type {} before CONNACK", b >> 4),
            Violation::UnexpectedPubAck {
                packet_id,
                expected: Some(e),
            } => write!(f, "PUBACK for packet {packet_id}, oldest in flight is {e}"),
            Violation::UnexpectedPubAck {
                packet_id,
                expected: None,
            } => write!(f, "PUBACK for packet {packet_id} with nothing in flight"),
        }
    }
}

/// Why the guard considers a connection over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinkEnd {
    /// The broker closed TCP (EOF).
    PeerClosed,
    /// The broker sent DISCONNECT with this reason code.
    ServerDisconnect(u8),
    /// The broker refused the CONNECT with this CONNACK reason code.
    Refused(u8),
    /// The broker broke the protocol.
    Violation(Violation),
    /// The stack reported an error of this kind.
    Network(TcpErrorKind),
    /// minimq lost the link on its own (ping timeout) and asked to reconnect.
    LinkLost,
}

/// An acknowledgement the guard matched to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// The counter value of the acknowledged message.
    pub n: u64,
    /// The PUBACK reason code (below 0x80 is success).
    pub reason: u8,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    n: u64,
    packet_id: u16,
}

/// Connection permission: one TCP connect per session, only once the core allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Closed,
    Open,
    Connected,
}

/// Incremental splitter of the inbound byte stream into packets.
struct Framer {
    capture: Vec<u8, CAPTURE>,
    seen: usize,
    total: Option<usize>,
}

impl Framer {
    const fn new() -> Self {
        Framer {
            capture: Vec::new(),
            seen: 0,
            total: None,
        }
    }

    fn reset(&mut self) {
        *self = Self::new();
    }
}

/// Errors the guard hands to minimq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardError<E> {
    /// The user's stack failed.
    Stack(E),
    /// The guard has ended this connection (see [`LinkEnd`]); minimq treats it as a closed pipe.
    Ended,
}

impl<E: TcpError> TcpError for GuardError<E> {
    fn kind(&self) -> TcpErrorKind {
        match self {
            GuardError::Stack(e) => e.kind(),
            GuardError::Ended => TcpErrorKind::PipeClosed,
        }
    }
}

/// Bytes read from the stack in one go, then handed to minimq as it asks.
pub const READ_AHEAD: usize = 128;

/// Socket handle given to minimq; the real socket stays inside the guard.
#[derive(Debug)]
pub struct GuardSocket(());

/// The guard's state: the user's stack, the real socket, and what it has seen on the wire.
pub struct Guard<S: TcpClientStack> {
    stack: S,
    socket: Option<S::TcpSocket>,
    gate: Gate,
    framer: Framer,
    ahead: [u8; READ_AHEAD],
    /// Unread bytes of `ahead`: `ahead_start..ahead_end`.
    ahead_start: usize,
    ahead_end: usize,
    connack: Option<ConnAck>,
    inflight: Deque<InFlight, WINDOW_MAX>,
    acked: Deque<Acked, WINDOW_MAX>,
    end: Option<LinkEnd>,
    expect_publish: Option<u64>,
    publish_written: Option<u64>,
    tx_partial: bool,
}

impl<S: TcpClientStack> Guard<S> {
    /// Wraps the user's stack; no connection is allowed until [`Guard::begin`].
    pub fn new(stack: S) -> Self {
        Guard {
            stack,
            socket: None,
            gate: Gate::Closed,
            framer: Framer::new(),
            ahead: [0; READ_AHEAD],
            ahead_start: 0,
            ahead_end: 0,
            connack: None,
            inflight: Deque::new(),
            acked: Deque::new(),
            end: None,
            expect_publish: None,
            publish_written: None,
            tx_partial: false,
        }
    }

    /// Starts a session: forgets the last connection and allows exactly one connect.
    pub fn begin(&mut self) {
        self.gate = Gate::Open;
        self.framer.reset();
        (self.ahead_start, self.ahead_end) = (0, 0);
        self.connack = None;
        self.inflight.clear();
        self.acked.clear();
        self.end = None;
        self.expect_publish = None;
        self.publish_written = None;
        self.tx_partial = false;
    }

    /// Why the connection is over, if it is.
    pub fn end(&self) -> Option<LinkEnd> {
        self.end
    }

    /// Records why the connection is over; the first reason wins.
    pub fn set_end(&mut self, end: LinkEnd) {
        self.end.get_or_insert(end);
    }

    /// The broker's CONNACK, once seen.
    pub fn connack(&self) -> Option<ConnAck> {
        self.connack
    }

    /// Whether TCP is connected in this session.
    pub fn is_connected(&self) -> bool {
        self.gate == Gate::Connected
    }

    /// QoS 1 publishes written and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// The next acknowledgement matched since the last call, oldest first.
    pub fn take_acked(&mut self) -> Option<Acked> {
        self.acked.pop_front()
    }

    /// Announces that the next bytes minimq writes are the PUBLISH of message `n`.
    pub fn expect_publish(&mut self, n: u64) {
        self.expect_publish = Some(n);
        self.publish_written = None;
    }

    /// Whether the announced PUBLISH reached the stack (fully, or partly with the rest pending).
    pub fn take_publish_written(&mut self) -> Option<u64> {
        self.expect_publish = None;
        self.publish_written.take()
    }

    /// Whether the stack took only part of the last packet minimq wrote.
    pub fn tx_partial(&self) -> bool {
        self.tx_partial
    }

    /// The real socket, e.g. for the adapter to wait on its file descriptor.
    pub fn socket(&self) -> Option<&S::TcpSocket> {
        self.socket.as_ref()
    }

    /// The user's stack, e.g. for an adapter that must poll its interface.
    pub fn stack_mut(&mut self) -> &mut S {
        &mut self.stack
    }

    /// Ends the connection: writes DISCONNECT with `reason` when given and the stream is at a
    /// packet boundary, then closes the real socket. Returns whether DISCONNECT was written.
    pub fn finish(&mut self, disconnect: Option<u8>) -> bool {
        let mut sent = false;
        if let Some(mut socket) = self.socket.take() {
            // DISCONNECT only on an accepted MQTT connection, and only at a packet boundary.
            let accepted = self
                .connack
                .is_some_and(|ack| frame::is_success(ack.reason));
            if let (Some(reason), true, false) = (disconnect, accepted, self.tx_partial) {
                sent = write_disconnect(&mut self.stack, &mut socket, reason);
            }
            // A close error leaves nothing to do: the socket is gone from our side either way.
            let _ = self.stack.close(socket);
        }
        self.gate = Gate::Closed;
        self.set_end(LinkEnd::LinkLost);
        sent
    }

    fn ended<T>(&self) -> nb::Result<T, GuardError<S::Error>> {
        Err(nb::Error::Other(GuardError::Ended))
    }

    fn stack_error<T>(&mut self, e: nb::Error<S::Error>) -> nb::Result<T, GuardError<S::Error>> {
        match e {
            nb::Error::WouldBlock => Err(nb::Error::WouldBlock),
            nb::Error::Other(e) => {
                self.set_end(LinkEnd::Network(e.kind()));
                Err(nb::Error::Other(GuardError::Stack(e)))
            }
        }
    }

    fn open_socket(&mut self) -> Result<GuardSocket, GuardError<S::Error>> {
        if self.socket.is_none() {
            let socket = self.stack.socket().map_err(|e| {
                self.set_end(LinkEnd::Network(e.kind()));
                GuardError::Stack(e)
            })?;
            self.socket = Some(socket);
        }
        Ok(GuardSocket(()))
    }

    fn connect(&mut self, remote: SocketAddr) -> nb::Result<(), GuardError<S::Error>> {
        match self.gate {
            Gate::Closed => Err(nb::Error::WouldBlock),
            Gate::Connected => {
                // minimq only reconnects after losing the link; pacing is the core's job.
                self.set_end(LinkEnd::LinkLost);
                Err(nb::Error::WouldBlock)
            }
            Gate::Open => {
                let Some(socket) = self.socket.as_mut() else {
                    return self.ended();
                };
                match self.stack.connect(socket, remote) {
                    Ok(()) => {
                        self.gate = Gate::Connected;
                        Ok(())
                    }
                    Err(e) => self.stack_error(e),
                }
            }
        }
    }

    fn send(&mut self, buffer: &[u8]) -> nb::Result<usize, GuardError<S::Error>> {
        if self.end.is_some() || self.gate != Gate::Connected {
            return self.ended();
        }
        let Some(socket) = self.socket.as_mut() else {
            return self.ended();
        };
        let result = self.stack.send(socket, buffer);
        if let Some(n) = self.expect_publish.take() {
            if !matches!(result, Err(nb::Error::Other(_))) {
                self.note_publish(n, buffer);
            }
        }
        match result {
            Ok(written) => {
                self.tx_partial = written < buffer.len();
                Ok(written)
            }
            Err(nb::Error::WouldBlock) => {
                self.tx_partial = true;
                Err(nb::Error::WouldBlock)
            }
            Err(e) => self.stack_error(e),
        }
    }

    /// Records a PUBLISH that reached the stack; QoS 1 ones join the in-flight queue.
    fn note_publish(&mut self, n: u64, packet: &[u8]) {
        self.publish_written = Some(n);
        if let Ok(PublishHead {
            packet_id: Some(packet_id),
            ..
        }) = PublishHead::parse(packet)
        {
            if self.inflight.push_back(InFlight { n, packet_id }).is_err() {
                // The session keeps the window below WINDOW_MAX; past it acks cannot be matched.
                self.set_end(LinkEnd::Violation(Violation::UnexpectedPacket(packet[0])));
            }
        }
    }

    /// Serves minimq from the read-ahead buffer, refilling it with one stack read. minimq asks
    /// for a fixed header byte by byte; without read-ahead every PUBACK costs three or four
    /// socket reads, with it one read serves a whole window of acknowledgements.
    fn receive(&mut self, buffer: &mut [u8]) -> nb::Result<usize, GuardError<S::Error>> {
        if self.end.is_some() || self.gate != Gate::Connected {
            return self.ended();
        }
        if buffer.is_empty() {
            return Ok(0);
        }
        if self.ahead_start == self.ahead_end {
            let Some(socket) = self.socket.as_mut() else {
                return self.ended();
            };
            match self.stack.receive(socket, &mut self.ahead) {
                Ok(0) => {
                    // embedded-nal: no data is WouldBlock, so Ok(0) is the peer's FIN.
                    self.set_end(LinkEnd::PeerClosed);
                    return self.ended();
                }
                Ok(n) => {
                    let n = n.min(READ_AHEAD);
                    let chunk = self.ahead;
                    // Judged as they arrive: a bad packet ends the connection before minimq
                    // sees any byte of it.
                    if let Err(end) = self.inspect(&chunk[..n]) {
                        self.set_end(end);
                        return self.ended();
                    }
                    (self.ahead_start, self.ahead_end) = (0, n);
                }
                Err(e) => return self.stack_error(e),
            }
        }
        let ready = &self.ahead[self.ahead_start..self.ahead_end];
        let n = buffer.len().min(ready.len());
        buffer[..n].copy_from_slice(&ready[..n]);
        self.ahead_start += n;
        Ok(n)
    }

    /// Frames inbound bytes and judges each complete packet before minimq may act on it.
    fn inspect(&mut self, mut bytes: &[u8]) -> Result<(), LinkEnd> {
        while !bytes.is_empty() {
            let f = &mut self.framer;
            match f.total {
                None => {
                    let (&b, rest) = bytes.split_first().ok_or(LinkEnd::PeerClosed)?;
                    bytes = rest;
                    f.seen += 1;
                    // The header is at most 5 bytes, always below CAPTURE.
                    let _ = f.capture.push(b);
                    match frame::parse_header(&f.capture) {
                        Header::Incomplete => continue,
                        Header::Malformed(m) => {
                            return Err(LinkEnd::Violation(Violation::Malformed(m)))
                        }
                        Header::Packet { total_len, .. } => f.total = Some(total_len),
                    }
                }
                Some(total) => {
                    let take = (total - f.seen).min(bytes.len());
                    let (head, rest) = bytes.split_at(take);
                    let room = CAPTURE - f.capture.len();
                    let _ = f.capture.extend_from_slice(&head[..take.min(room)]);
                    f.seen += take;
                    bytes = rest;
                }
            }
            if let Some(total) = self.framer.total {
                if self.framer.seen == total {
                    let capture = core::mem::replace(&mut self.framer.capture, Vec::new());
                    self.framer.reset();
                    self.judge(&capture, total)?;
                }
            }
        }
        Ok(())
    }

    fn judge(&mut self, packet: &[u8], total: usize) -> Result<(), LinkEnd> {
        let first = packet.first().copied().unwrap_or(0);
        let malformed = |m| LinkEnd::Violation(Violation::Malformed(m));
        let kind = PacketType::from_first_byte(first).ok_or(malformed(Malformed::ReservedType))?;
        if kind == PacketType::Disconnect {
            return Err(LinkEnd::ServerDisconnect(
                frame::parse_disconnect(packet).map_err(malformed)?,
            ));
        }
        if self.connack.is_none() && kind != PacketType::ConnAck {
            return Err(LinkEnd::Violation(Violation::BeforeConnAck(first)));
        }
        match kind {
            PacketType::ConnAck if self.connack.is_none() => {
                let ack = ConnAck::parse(packet, total).map_err(malformed)?;
                self.connack = Some(ack);
                if !frame::is_success(ack.reason) {
                    return Err(LinkEnd::Refused(ack.reason));
                }
            }
            PacketType::PubAck => {
                let ack = PubAck::parse(packet).map_err(malformed)?;
                match self.inflight.front() {
                    Some(oldest) if oldest.packet_id == ack.packet_id => {
                        let n = oldest.n;
                        self.inflight.pop_front();
                        // Never full: acked holds at most what inflight held.
                        let _ = self.acked.push_back(Acked {
                            n,
                            reason: ack.reason,
                        });
                    }
                    oldest => {
                        return Err(LinkEnd::Violation(Violation::UnexpectedPubAck {
                            packet_id: ack.packet_id,
                            expected: oldest.map(|o| o.packet_id),
                        }))
                    }
                }
            }
            PacketType::PingResp if packet == [0xd0, 0x00] => {}
            PacketType::PingResp => return Err(malformed(Malformed::BadFlags(first))),
            _ => return Err(LinkEnd::Violation(Violation::UnexpectedPacket(first))),
        }
        Ok(())
    }
}

/// Writes DISCONNECT; a handful of tries, as the core never blocks.
fn write_disconnect<S: TcpClientStack>(
    stack: &mut S,
    socket: &mut S::TcpSocket,
    reason: u8,
) -> bool {
    let normal = [0xe0, 0x00];
    let with_reason = [0xe0, 0x01, reason];
    let packet: &[u8] = if reason == 0 { &normal } else { &with_reason };
    let mut written = 0;
    for _ in 0..4 {
        match stack.send(socket, &packet[written..]) {
            Ok(n) => written += n,
            Err(nb::Error::WouldBlock) => {}
            Err(nb::Error::Other(_)) => return false,
        }
        if written >= packet.len() {
            return true;
        }
    }
    false
}

/// The handle minimq owns: a shared reference to the guard, so the session can read it too.
pub struct GuardStack<'a, S: TcpClientStack>(pub(crate) &'a RefCell<Guard<S>>);

impl<S: TcpClientStack> GuardStack<'_, S> {
    fn with<T>(
        &mut self,
        f: impl FnOnce(&mut Guard<S>) -> nb::Result<T, GuardError<S::Error>>,
    ) -> nb::Result<T, GuardError<S::Error>> {
        match self.0.try_borrow_mut() {
            Ok(mut guard) => f(&mut guard),
            // Unreachable by construction (the session never holds a borrow across minimq calls);
            // failing the call is safer than panicking.
            Err(_) => Err(nb::Error::Other(GuardError::Ended)),
        }
    }
}

impl<S: TcpClientStack> TcpClientStack for GuardStack<'_, S> {
    type TcpSocket = GuardSocket;
    type Error = GuardError<S::Error>;

    fn socket(&mut self) -> Result<GuardSocket, Self::Error> {
        self.with(|g| g.open_socket().map_err(nb::Error::Other))
            .map_err(|e| match e {
                nb::Error::Other(e) => e,
                nb::Error::WouldBlock => GuardError::Ended,
            })
    }

    fn connect(&mut self, _: &mut GuardSocket, remote: SocketAddr) -> nb::Result<(), Self::Error> {
        self.with(|g| g.connect(remote))
    }

    fn send(&mut self, _: &mut GuardSocket, buffer: &[u8]) -> nb::Result<usize, Self::Error> {
        self.with(|g| g.send(buffer))
    }

    fn receive(
        &mut self,
        _: &mut GuardSocket,
        buffer: &mut [u8],
    ) -> nb::Result<usize, Self::Error> {
        self.with(|g| g.receive(buffer))
    }

    fn close(&mut self, _: GuardSocket) -> Result<(), Self::Error> {
        // minimq closes only to reconnect; the guard keeps the real socket until the session ends.
        Ok(())
    }
}
