//! A scripted fake broker: what mosquitto cannot be made to do (AUTH 0x18, a silent close at `exp`,
//! slowloris, out-of-order PUBACKs, garbage after CONNACK, RST mid-packet, ...).
//!
//! It listens on `127.0.0.1:0`. Every accepted connection runs its own script, a list of [`Step`]s
//! made by the function given to [`FakeBroker::start`] from the connection's number (0, 1, ...). The
//! client's bytes are always read and framed (by [`crate::mqtt`], not satmqtt), and every packet is
//! recorded with its arrival time, whatever step runs; [`Step::Expect`] consumes the next one. When a
//! script ends without closing, the connection stays open and recorded until the client closes it or
//! the fake broker is dropped.
//!
//! Bounded: every read and write has a timeout, every expect a deadline, at most
//! [`MAX_CONNECTIONS`] connections run scripts, and dropping the [`FakeBroker`] stops and joins all
//! its threads: within a few ticks, or at most the 5 s write timeout when a write is blocked on a
//! client that does not read.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::mqtt::{frame_len, Packet, PacketType};
use crate::wait::wait_until;

/// Connections beyond this many are accepted (and counted) but closed at once.
pub const MAX_CONNECTIONS: usize = 2_000;
/// Deadline of [`Step::Expect`].
pub const EXPECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often blocked reads wake up to check whether the fake broker is being dropped.
const TICK: Duration = Duration::from_millis(10);
/// A write that makes no progress for this long fails the script (a client that never reads).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// After [`Step::Close`] sends FIN, how long the client's remaining bytes are still read (and
/// recorded) before the socket is closed.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);
/// How long [`Step::Proxy`] may take to connect to the real broker.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Rewrites the real broker's packets on their way to the client, in a [`Step::Proxy`]: gets each
/// complete broker→client packet and returns the byte chunks to send instead, in order (the packet
/// itself, nothing, a replacement, extra packets or garbage). See [`tamper`] for common ones.
pub type Tamper = Box<dyn FnMut(&Packet) -> Vec<Vec<u8>> + Send>;

/// One step of a connection's script.
pub enum Step {
    /// Waits up to [`EXPECT_TIMEOUT`] for the client's next packet and checks its type. A different
    /// type, EOF or the deadline ends the script with an error ([`FakeBroker::script_errors`]) and
    /// closes the connection.
    Expect(PacketType),
    /// [`Step::Expect`] with its own deadline.
    ExpectWithin(PacketType, Duration),
    /// Writes these bytes.
    Send(Vec<u8>),
    /// Writes these bytes one at a time, waiting `delay` after each (slowloris).
    Trickle {
        /// The bytes.
        bytes: Vec<u8>,
        /// Pause after each byte.
        delay: Duration,
    },
    /// Sends nothing for this long (still recording what the client sends).
    Wait(Duration),
    /// Closes with FIN: shuts down the write side, records what the client still sends (up to 2 s or
    /// its own close), then closes. Ends the script.
    Close,
    /// Closes with RST (SO_LINGER 0). Ends the script.
    Reset,
    /// Connects to a real broker and forwards both ways until either side closes: a
    /// man-in-the-middle. Client packets not yet consumed by an [`Step::Expect`] are forwarded
    /// first. Client packets keep being recorded; broker packets go through `tamper`, if any. Ends
    /// the script.
    Proxy {
        /// The real broker.
        upstream: SocketAddr,
        /// Rewrites broker→client packets.
        tamper: Option<Tamper>,
    },
}

/// A packet the client sent, and when it was complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPacket {
    /// When its last byte was read.
    pub at: Instant,
    /// The packet.
    pub packet: Packet,
}

impl ClientPacket {
    /// Its type.
    pub fn kind(&self) -> PacketType {
        self.packet.kind()
    }
}

/// What happened on one accepted connection.
#[derive(Debug, Clone)]
pub struct ConnectionLog {
    /// When it was accepted.
    pub accepted_at: Instant,
    /// Every complete packet the client sent, in order.
    pub packets: Vec<ClientPacket>,
    /// When the client closed (EOF) or reset its side, if it did.
    pub client_closed_at: Option<Instant>,
    /// Whether the client reset the connection (rather than closing it with FIN).
    pub client_reset: bool,
    /// Why the script failed: an unexpected packet, a missed deadline, a write error, a client byte
    /// stream that is not valid MQTT framing.
    pub script_error: Option<String>,
    /// When the script's last step finished (with or without an error).
    pub script_done_at: Option<Instant>,
}

impl ConnectionLog {
    fn new(accepted_at: Instant) -> ConnectionLog {
        ConnectionLog {
            accepted_at,
            packets: Vec::new(),
            client_closed_at: None,
            client_reset: false,
            script_error: None,
            script_done_at: None,
        }
    }

    /// The client's packets of type `kind`.
    pub fn packets_of(&self, kind: PacketType) -> Vec<&ClientPacket> {
        self.packets.iter().filter(|p| p.kind() == kind).collect()
    }
}

/// Makes each connection's script from its number (0 for the first accepted connection).
pub type Script = dyn Fn(usize) -> Vec<Step> + Send + Sync;

struct Shared {
    stop: AtomicBool,
    connections: Mutex<Vec<ConnectionLog>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn connections(&self) -> MutexGuard<'_, Vec<ConnectionLog>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn with<T>(&self, index: usize, f: impl FnOnce(&mut ConnectionLog) -> T) -> T {
        f(&mut self.connections()[index])
    }
}

/// The fake broker. Stops all its threads when dropped.
pub struct FakeBroker {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeBroker {
    /// Listens on `127.0.0.1:0` and runs `script(n)` for the `n`-th accepted connection.
    ///
    /// ```no_run
    /// use satmqtt_tests::fake_broker::{FakeBroker, Step};
    /// use satmqtt_tests::mqtt::{connack, ConnackProps, PacketType};
    /// // Every connection: CONNACK 0x00, then close.
    /// let fake = FakeBroker::start(|_| {
    ///     vec![
    ///         Step::Expect(PacketType::Connect),
    ///         Step::Send(connack(0, false, &ConnackProps::default())),
    ///         Step::Close,
    ///     ]
    /// });
    /// ```
    ///
    /// # Panics
    /// If it cannot bind the listener.
    pub fn start(script: impl Fn(usize) -> Vec<Step> + Send + Sync + 'static) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fake broker");
        let addr = listener.local_addr().expect("the fake broker's address");
        listener
            .set_nonblocking(true)
            .expect("making the fake broker's listener non-blocking");
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let script: Arc<Script> = Arc::new(script);
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || accept_loop(&listener, &shared, &script))
        };
        FakeBroker {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Every connection gets the same script, made by `steps()`.
    pub fn start_same(steps: impl Fn() -> Vec<Step> + Send + Sync + 'static) -> FakeBroker {
        FakeBroker::start(move |_| steps())
    }

    /// Its address (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// How many connections were accepted so far.
    pub fn connection_count(&self) -> usize {
        self.shared.connections().len()
    }

    /// When each connection was accepted, in order.
    pub fn accept_times(&self) -> Vec<Instant> {
        self.shared
            .connections()
            .iter()
            .map(|c| c.accepted_at)
            .collect()
    }

    /// A snapshot of every connection's log.
    pub fn connections(&self) -> Vec<ConnectionLog> {
        self.shared.connections().clone()
    }

    /// A snapshot of connection `index`'s log.
    pub fn connection(&self, index: usize) -> Option<ConnectionLog> {
        self.shared.connections().get(index).cloned()
    }

    /// Every script error so far, with its connection's number.
    pub fn script_errors(&self) -> Vec<(usize, String)> {
        self.shared
            .connections()
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.script_error.clone().map(|e| (i, e)))
            .collect()
    }

    /// Waits until at least `count` connections were accepted; `false` on timeout.
    pub fn wait_for_connections(&self, count: usize, timeout: Duration) -> bool {
        wait_until(timeout, || (self.connection_count() >= count).then_some(())).is_some()
    }

    /// Waits until connection `index` has received a client packet of type `kind`; returns the first.
    pub fn wait_for_client_packet(
        &self,
        index: usize,
        kind: PacketType,
        timeout: Duration,
    ) -> Option<ClientPacket> {
        wait_until(timeout, || {
            let c = self.connection(index)?;
            c.packets.into_iter().find(|p| p.kind() == kind)
        })
    }

    /// Waits until the client closed connection `index`; returns when it did.
    pub fn wait_for_client_close(&self, index: usize, timeout: Duration) -> Option<Instant> {
        wait_until(timeout, || self.connection(index)?.client_closed_at)
    }

    /// Waits until connection `index`'s script has finished; returns its error, if any.
    ///
    /// # Panics
    /// If the script does not finish within `timeout`.
    pub fn wait_for_script(&self, index: usize, timeout: Duration) -> Result<(), String> {
        let log = wait_until(timeout, || {
            self.connection(index)
                .filter(|c| c.script_done_at.is_some())
        })
        .unwrap_or_else(|| {
            panic!("the script of connection {index} did not finish within {timeout:?}")
        });
        log.script_error.map_or(Ok(()), Err)
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, script: &Arc<Script>) {
    while !shared.stopping() {
        match listener.accept() {
            Ok((stream, _)) => {
                let index = {
                    let mut connections = shared.connections();
                    connections.push(ConnectionLog::new(Instant::now()));
                    connections.len() - 1
                };
                if index >= MAX_CONNECTIONS {
                    shared.with(index, |c| {
                        c.script_error = Some(format!("over {MAX_CONNECTIONS} connections"));
                        c.script_done_at = Some(Instant::now());
                    });
                    continue;
                }
                let steps = script(index);
                let thread_shared = Arc::clone(shared);
                let thread = std::thread::spawn(move || {
                    let mut conn = Conn::new(stream, index, thread_shared);
                    let result = conn.run(steps);
                    conn.shared.with(index, |c| {
                        c.script_error = result.err();
                        c.script_done_at = Some(Instant::now());
                    });
                    conn.tail();
                });
                shared
                    .threads
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(thread);
            }
            // Non-blocking accept: poll, so a drop is noticed within a tick.
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => std::thread::sleep(TICK),
        }
    }
}

struct Conn {
    stream: TcpStream,
    index: usize,
    shared: Arc<Shared>,
    buf: Vec<u8>,
    unconsumed: VecDeque<Packet>,
    closed: bool,
    done: bool,
}

impl Conn {
    fn new(stream: TcpStream, index: usize, shared: Arc<Shared>) -> Conn {
        // One segment per write, so a trickle really is one byte at a time on the wire.
        let _ = stream.set_nodelay(true);
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        Conn {
            stream,
            index,
            shared,
            buf: Vec::new(),
            unconsumed: VecDeque::new(),
            closed: false,
            done: false,
        }
    }

    fn run(&mut self, steps: Vec<Step>) -> Result<(), String> {
        for (n, step) in steps.into_iter().enumerate() {
            if self.shared.stopping() {
                return Ok(());
            }
            self.step(step).map_err(|e| format!("step {n}: {e}"))?;
            if self.done {
                return Ok(());
            }
        }
        Ok(())
    }

    fn step(&mut self, step: Step) -> Result<(), String> {
        match step {
            Step::Expect(kind) => self.expect(kind, EXPECT_TIMEOUT),
            Step::ExpectWithin(kind, timeout) => self.expect(kind, timeout),
            Step::Send(bytes) => self.write(&bytes),
            Step::Trickle { bytes, delay } => {
                for byte in bytes {
                    self.write(&[byte])?;
                    self.idle(delay)?;
                }
                Ok(())
            }
            Step::Wait(duration) => self.idle(duration),
            Step::Close => {
                self.done = true;
                let _ = self.stream.shutdown(Shutdown::Write);
                // Closing with unread bytes in the receive buffer would make the kernel send RST, not
                // FIN; read until the client closes too (bounded).
                self.idle_until_closed(CLOSE_DRAIN)
            }
            Step::Reset => {
                self.done = true;
                socket2::SockRef::from(&self.stream)
                    .set_linger(Some(Duration::ZERO))
                    .map_err(|e| format!("setting SO_LINGER 0: {e}"))?;
                let _ = self.stream.shutdown(Shutdown::Read);
                Ok(())
            }
            Step::Proxy { upstream, tamper } => {
                self.done = true;
                self.proxy(upstream, tamper)
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("writing {} bytes to the client: {e}", bytes.len()))
    }

    /// One read of at most [`TICK`]; frames and records what arrived, notes a close. `Err` only for
    /// client bytes that are not MQTT framing.
    fn read_once(&mut self) -> Result<(), String> {
        if self.closed {
            std::thread::sleep(TICK);
            return Ok(());
        }
        let _ = self.stream.set_read_timeout(Some(TICK));
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.mark_closed(false);
                Ok(())
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.frame()?;
                Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(()),
            Err(e) => {
                self.mark_closed(e.kind() == ErrorKind::ConnectionReset);
                Ok(())
            }
        }
    }

    fn mark_closed(&mut self, reset: bool) {
        self.closed = true;
        self.shared.with(self.index, |c| {
            c.client_closed_at.get_or_insert_with(Instant::now);
            c.client_reset |= reset;
        });
    }

    fn frame(&mut self) -> Result<(), String> {
        while let Some(len) = frame_len(&self.buf).map_err(|e| format!("client bytes: {e}"))? {
            if self.buf.len() < len {
                break;
            }
            let raw: Vec<u8> = self.buf.drain(..len).collect();
            let packet = Packet { raw };
            let at = Instant::now();
            self.shared.with(self.index, |c| {
                c.packets.push(ClientPacket {
                    at,
                    packet: packet.clone(),
                })
            });
            self.unconsumed.push_back(packet);
        }
        Ok(())
    }

    fn expect(&mut self, kind: PacketType, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(packet) = self.unconsumed.pop_front() {
                return if packet.kind() == kind {
                    Ok(())
                } else {
                    Err(format!("expected {kind:?}, got {:?}", packet.kind()))
                };
            }
            if self.closed {
                return Err(format!(
                    "expected {kind:?}, the client closed the connection"
                ));
            }
            if Instant::now() >= deadline || self.shared.stopping() {
                return Err(format!("expected {kind:?}, nothing within {timeout:?}"));
            }
            self.read_once()?;
        }
    }

    fn idle(&mut self, duration: Duration) -> Result<(), String> {
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline && !self.shared.stopping() {
            if self.closed {
                std::thread::sleep(TICK.min(deadline.saturating_duration_since(Instant::now())));
            } else {
                self.read_once()?;
            }
        }
        Ok(())
    }

    fn idle_until_closed(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while !self.closed && Instant::now() < deadline && !self.shared.stopping() {
            self.read_once()?;
        }
        Ok(())
    }

    /// After the script: keep recording until the client closes or the fake broker is dropped.
    fn tail(&mut self) {
        while !self.done && !self.closed && !self.shared.stopping() {
            if self.read_once().is_err() {
                break;
            }
        }
    }

    fn proxy(&mut self, upstream: SocketAddr, tamper: Option<Tamper>) -> Result<(), String> {
        let mut broker = TcpStream::connect_timeout(&upstream, UPSTREAM_CONNECT_TIMEOUT)
            .map_err(|e| format!("connecting to the real broker at {upstream}: {e}"))?;
        let _ = broker.set_nodelay(true);
        let _ = broker.set_write_timeout(Some(WRITE_TIMEOUT));
        for packet in std::mem::take(&mut self.unconsumed) {
            broker
                .write_all(&packet.raw)
                .map_err(|e| format!("forwarding to the real broker: {e}"))?;
        }
        broker
            .write_all(&self.buf)
            .map_err(|e| format!("forwarding to the real broker: {e}"))?;

        let finished = Arc::new(AtomicBool::new(false));
        let downstream = {
            let broker = broker
                .try_clone()
                .map_err(|e| format!("cloning the upstream socket: {e}"))?;
            let client = self
                .stream
                .try_clone()
                .map_err(|e| format!("cloning the client socket: {e}"))?;
            let finished = Arc::clone(&finished);
            let shared = Arc::clone(&self.shared);
            std::thread::spawn(move || broker_to_client(broker, client, tamper, &finished, &shared))
        };
        // Client → broker here, so the recording stays in this `Conn`.
        let mut result = Ok(());
        while !self.closed && !finished.load(Ordering::Relaxed) && !self.shared.stopping() {
            let before = self.unconsumed.len();
            if let Err(e) = self.read_once() {
                result = Err(e);
                break;
            }
            let fresh: Vec<Packet> = self.unconsumed.drain(before..).collect();
            if let Some(e) = fresh.iter().find_map(|p| broker.write_all(&p.raw).err()) {
                result = Err(format!("forwarding to the real broker: {e}"));
                break;
            }
        }
        finished.store(true, Ordering::Relaxed);
        let downstream = downstream
            .join()
            .unwrap_or_else(|_| Err("the broker→client thread panicked".into()));
        let _ = self.stream.shutdown(Shutdown::Write);
        // When the broker→client side stopped first (the broker closed, or the client reset the
        // connection under our writes because it closed with PUBACKs unread), the client's last
        // packets, e.g. its DISCONNECT, are still in our receive queue: record and forward them
        // until it closes (bounded, as after Step::Close).
        let deadline = Instant::now() + CLOSE_DRAIN;
        while result.is_ok() && !self.closed && Instant::now() < deadline && !self.shared.stopping()
        {
            let before = self.unconsumed.len();
            if self.read_once().is_err() {
                break;
            }
            for packet in self.unconsumed.drain(before..) {
                let _ = broker.write_all(&packet.raw);
            }
        }
        let _ = broker.shutdown(Shutdown::Write);
        result.and(downstream)
    }
}

fn broker_to_client(
    mut broker: TcpStream,
    mut client: TcpStream,
    mut tamper: Option<Tamper>,
    finished: &AtomicBool,
    shared: &Shared,
) -> Result<(), String> {
    let _ = broker.set_read_timeout(Some(TICK));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let result = loop {
        if finished.load(Ordering::Relaxed) || shared.stopping() {
            break Ok(());
        }
        match broker.read(&mut chunk) {
            Ok(0) => break Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => break Err(format!("reading the real broker: {e}")),
        }
        let mut out: Vec<Vec<u8>> = Vec::new();
        loop {
            match frame_len(&buf) {
                Ok(Some(len)) if buf.len() >= len => {
                    let packet = Packet {
                        raw: buf.drain(..len).collect(),
                    };
                    match tamper.as_mut() {
                        Some(tamper) => out.extend(tamper(&packet)),
                        None => out.push(packet.raw),
                    }
                }
                Ok(_) => break,
                Err(e) => {
                    finished.store(true, Ordering::Relaxed);
                    return Err(format!("the real broker's bytes: {e}"));
                }
            }
        }
        if let Some(e) = out.iter().find_map(|bytes| client.write_all(bytes).err()) {
            break Err(format!("writing to the client: {e}"));
        }
    };
    finished.store(true, Ordering::Relaxed);
    result
}

/// Common [`Tamper`]s for [`Step::Proxy`].
pub mod tamper {
    use super::Tamper;
    use crate::mqtt::{Packet, PacketType};

    /// Replaces the broker's CONNACK with `connack` (e.g. other properties); the rest passes.
    pub fn replace_connack(connack: Vec<u8>) -> Tamper {
        Box::new(move |p: &Packet| {
            if p.kind() == PacketType::Connack {
                vec![connack.clone()]
            } else {
                vec![p.raw.clone()]
            }
        })
    }

    /// Sends `bytes` right after the broker's first packet of type `kind` (a PUBACK for nothing in
    /// flight after the CONNACK, garbage after the CONNACK, ...).
    pub fn insert_after_first(kind: PacketType, bytes: Vec<u8>) -> Tamper {
        let mut pending = Some(bytes);
        Box::new(move |p: &Packet| {
            let mut out = vec![p.raw.clone()];
            if p.kind() == kind {
                out.extend(pending.take());
            }
            out
        })
    }

    /// Holds the broker's first PUBACK back and sends it after the second, so the client sees them
    /// out of order; later PUBACKs pass unchanged.
    pub fn swap_first_two_pubacks() -> Tamper {
        let mut held: Option<Vec<u8>> = None;
        let mut swapped = false;
        Box::new(move |p: &Packet| {
            if p.kind() != PacketType::Puback || swapped {
                return vec![p.raw.clone()];
            }
            match held.take() {
                None => {
                    held = Some(p.raw.clone());
                    Vec::new()
                }
                Some(first) => {
                    swapped = true;
                    vec![p.raw.clone(), first]
                }
            }
        })
    }
}
