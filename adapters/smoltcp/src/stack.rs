//! [`SmolStack`]: smoltcp-nal's `NetworkStack`, corrected where it departs from what the core
//! relies on.
//!
//! | smoltcp-nal 0.7 on smoltcp 0.12 | what [`SmolStack`] does |
//! |---|---|
//! | `receive` returns `Ok(0)` when nothing has arrived yet; embedded-nal (and the core's driver) read `Ok(0)` as end of stream | `Ok(0)` becomes `WouldBlock`. smoltcp's `recv_slice` only returns `Ok` while the socket may still receive (`may_recv()`), so this never hides an EOF |
//! | the peer's FIN shows up as `Err(TcpReadFailure(Finished))` (smoltcp: the receive half closed gracefully, all data read) | becomes `Ok(0)`, the embedded-nal EOF, so the driver ends the connection at once as "broker closed the connection" |
//! | `send` returns `Ok(0)` when the transmit buffer is full | becomes `WouldBlock` |
//! | `close` queues a FIN and returns the handle to a last-in-first-out pool; the next `socket()` pops that same handle and *aborts* it, dropping a DISCONNECT and FIN not yet on the wire | the closed socket is watched until its closing handshake is over (the peer's FIN arrived) or a linger time ran out: [`SmolStack::is_settled`]. [`crate::run()`] waits for it before the next connection |
//! | a fixed pool of TCP handles (its `heapless::Vec<_, 16>`: at most 16, whatever the socket set holds), `close` `unwrap`s a push into it | handles given out are counted, and a `close` of a handle that is not out is refused instead of overflowing the pool |
//! | Nagle's algorithm on (smoltcp's default) | turned off on every TCP socket in [`SmolStack::new`] |
//! | needs `poll()` to move any frame | [`SmolStack::poll`]; [`crate::run()`] calls it around every driver poll |

use embedded_nal::{nb, TcpClientStack};
use embedded_time::{Clock, Instant};
use heapless::Vec;
use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::tcp::RecvError;
use smoltcp::socket::Socket;
use smoltcp_nal::{NetworkError, NetworkStack};

use crate::clock::elapsed_ms;

/// Most TCP sockets smoltcp-nal 0.7 manages (the capacity of its handle pool).
pub const POOL_MAX: usize = 16;

/// Default longest wait for a closed socket's closing handshake, in milliseconds.
pub const LINGER_MS: u32 = 1_000;

/// Bytes read and dropped per [`SmolStack::poll`] from a socket that is closing, so data the
/// broker sent after our close cannot keep it looking busy.
const DRAIN_CHUNK: usize = 64;
const DRAIN_CHUNKS: usize = 4;

/// A closed socket whose closing handshake has not been seen to finish.
struct Closing<C: Clock> {
    handle: SocketHandle,
    since: Option<Instant<C>>,
}

// Derived impls would ask for `C: Copy`; the fields are Copy for every clock.
impl<C: Clock> Clone for Closing<C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C: Clock> Copy for Closing<C> {}

/// What happened to the sockets so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketStats {
    /// TCP sockets in the socket set that smoltcp-nal manages (at most [`POOL_MAX`]).
    pub pool: usize,
    /// Handed out by `socket()` and not closed yet.
    pub in_use: usize,
    /// Closed, with the closing handshake still running.
    pub closing: usize,
    /// `socket()` calls that succeeded.
    pub opened: u32,
    /// `close()` calls that returned a handle to the pool.
    pub closed: u32,
    /// Closing handshakes that finished (the peer's FIN arrived, or the connection was gone).
    pub settled: u32,
    /// Closing handshakes given up after the linger time (the socket is reset on reuse).
    pub lingered: u32,
}

/// An [`embedded_nal::TcpClientStack`] on a smoltcp interface: smoltcp-nal's `NetworkStack`
/// with end-of-stream, full-buffer and socket-reuse behaviour the core can rely on (see the
/// module documentation).
///
/// `C` is the stack's clock; it must tick into a `u32` (smoltcp-nal's requirement), e.g.
/// [`crate::Millis`]. A clone drives the linger timer.
pub struct SmolStack<'a, D, C>
where
    D: Device,
    C: Clock + Clone,
    u32: From<C::T>,
{
    nal: NetworkStack<'a, D, C>,
    clock: C,
    linger_ms: u32,
    out: Vec<SocketHandle, POOL_MAX>,
    closing: Vec<Closing<C>, POOL_MAX>,
    stats: SocketStats,
}

impl<'a, D, C> SmolStack<'a, D, C>
where
    D: Device,
    C: Clock + Clone,
    u32: From<C::T>,
{
    /// A stack on `interface` and `device`; every TCP socket in `sockets` joins the pool (up
    /// to [`POOL_MAX`]). One socket is enough for the core, which holds one connection at a
    /// time; a second lets a new connection start while the last one's handshake lingers.
    ///
    /// Nagle's algorithm is turned off on every TCP socket: MQTT writes small packets and
    /// waits for their acknowledgements, and Nagle would hold each one back until the previous
    /// segment is ACKed (up to a delayed-ACK period of the broker's OS per message).
    pub fn new(interface: Interface, device: D, mut sockets: SocketSet<'a>, clock: C) -> Self {
        let mut pool = 0;
        for (_, socket) in sockets.iter_mut() {
            if let Socket::Tcp(tcp) = socket {
                tcp.set_nagle_enabled(false);
                pool += 1;
            }
        }
        let pool = pool.min(POOL_MAX);
        SmolStack {
            nal: NetworkStack::new(interface, device, sockets, clock.clone()),
            clock,
            linger_ms: LINGER_MS,
            out: Vec::new(),
            closing: Vec::new(),
            stats: SocketStats {
                pool,
                ..SocketStats::default()
            },
        }
    }

    /// Sets the longest wait for a closed socket's closing handshake (default [`LINGER_MS`]).
    pub fn with_linger_ms(mut self, linger_ms: u32) -> Self {
        self.linger_ms = linger_ms;
        self
    }

    /// Seeds the local port randomizer (use something that differs between boots).
    pub fn seed_random_port(&mut self, seed: &[u8]) {
        self.nal.seed_random_port(seed);
    }

    /// Moves frames in and out and runs smoltcp's timers; call it often (every loop turn).
    /// Returns whether a socket changed state. Errors come from the clock only.
    pub fn poll(&mut self) -> Result<bool, smoltcp_nal::Error> {
        let changed = self.nal.poll()?;
        self.watch_closing();
        Ok(changed)
    }

    /// Whether every closed socket has finished its closing handshake (or lingered out), so
    /// the next `socket()` cannot reset a connection whose DISCONNECT is still in flight.
    pub fn is_settled(&self) -> bool {
        self.closing.is_empty()
    }

    /// Socket counters: what is in use, what is closing, what was opened and closed.
    pub fn stats(&self) -> SocketStats {
        SocketStats {
            in_use: self.out.len(),
            closing: self.closing.len(),
            ..self.stats
        }
    }

    /// The smoltcp interface (addresses, routes).
    pub fn interface(&self) -> &Interface {
        self.nal.interface()
    }

    /// The smoltcp interface, mutably: e.g. to change the address. Sockets in use are not
    /// told; prefer doing it between connections.
    pub fn interface_mut(&mut self) -> &mut Interface {
        self.nal.interface_mut()
    }

    /// smoltcp-nal's stack, for what this wrapper does not cover (UDP, DNS). Closing TCP
    /// sockets behind this wrapper's back makes its counters wrong.
    pub fn network_mut(&mut self) -> &mut NetworkStack<'a, D, C> {
        &mut self.nal
    }

    /// Follows closed sockets until the peer's FIN arrived (TIME-WAIT), the connection is gone
    /// (CLOSED), or the linger time is over. It reads them with the plain embedded-nal call: a
    /// closed handle stays valid in the socket set until `socket()` hands it out again.
    fn watch_closing(&mut self) {
        let now = self.clock.try_now().ok();
        let mut i = 0;
        while let Some(c) = self.closing.get(i).copied() {
            let lingered = match (&now, &c.since) {
                (Some(now), Some(since)) => {
                    elapsed_ms(now, since).is_none_or(|ms| ms >= u64::from(self.linger_ms))
                }
                // No clock: never wait on time we cannot measure.
                _ => true,
            };
            if self.closing_finished(c.handle) {
                self.stats.settled += 1;
                self.closing.swap_remove(i);
            } else if lingered {
                self.stats.lingered += 1;
                self.closing.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    fn closing_finished(&mut self, mut handle: SocketHandle) -> bool {
        let mut scratch = [0u8; DRAIN_CHUNK];
        for _ in 0..DRAIN_CHUNKS {
            match self.nal.receive(&mut handle, &mut scratch) {
                // FIN-WAIT: our FIN is out, the peer's has not come yet.
                Ok(0) => return false,
                // The broker wrote after our close; nobody will read it.
                Ok(_) => {}
                // Finished: the peer's FIN is in (TIME-WAIT, LAST-ACK, CLOSING).
                // InvalidState: CLOSED (reset, or never connected).
                Err(_) => return true,
            }
        }
        false
    }

    fn stop_watching(&mut self, handle: SocketHandle) {
        if let Some(i) = self.closing.iter().position(|c| c.handle == handle) {
            self.closing.swap_remove(i);
            self.stats.lingered += 1;
        }
    }
}

impl<D, C> TcpClientStack for SmolStack<'_, D, C>
where
    D: Device,
    C: Clock + Clone,
    u32: From<C::T>,
{
    type TcpSocket = SocketHandle;
    type Error = NetworkError;

    fn socket(&mut self) -> Result<SocketHandle, NetworkError> {
        let handle = self.nal.socket()?;
        // smoltcp-nal has just aborted it: whatever closing handshake it had is over.
        self.stop_watching(handle);
        if self.out.push(handle).is_err() {
            // More handles than smoltcp-nal's pool holds: impossible, but never leak one.
            let _ = self.nal.close(handle);
            return Err(NetworkError::NoSocket);
        }
        self.stats.opened += 1;
        Ok(handle)
    }

    fn connect(
        &mut self,
        socket: &mut SocketHandle,
        remote: core::net::SocketAddr,
    ) -> nb::Result<(), NetworkError> {
        self.nal.connect(socket, remote)
    }

    fn send(
        &mut self,
        socket: &mut SocketHandle,
        buffer: &[u8],
    ) -> nb::Result<usize, NetworkError> {
        match self.nal.send(socket, buffer) {
            // The transmit buffer is full.
            Ok(0) if !buffer.is_empty() => Err(nb::Error::WouldBlock),
            other => other,
        }
    }

    fn receive(
        &mut self,
        socket: &mut SocketHandle,
        buffer: &mut [u8],
    ) -> nb::Result<usize, NetworkError> {
        match self.nal.receive(socket, buffer) {
            // smoltcp returns Ok only while the socket may receive: nothing has arrived yet.
            Ok(0) if !buffer.is_empty() => Err(nb::Error::WouldBlock),
            // The peer closed its side and every byte before its FIN has been read.
            Err(nb::Error::Other(NetworkError::TcpReadFailure(RecvError::Finished))) => Ok(0),
            other => other,
        }
    }

    fn close(&mut self, socket: SocketHandle) -> Result<(), NetworkError> {
        let Some(i) = self.out.iter().position(|h| *h == socket) else {
            // Not ours to close (closed twice?): smoltcp-nal would push it into a full pool.
            return Err(NetworkError::NoSocket);
        };
        self.out.swap_remove(i);
        self.nal.close(socket)?;
        self.stats.closed += 1;
        let since = self.clock.try_now().ok();
        // Never full: at most as many closing as the pool holds.
        let _ = self.closing.push(Closing {
            handle: socket,
            since,
        });
        Ok(())
    }
}
