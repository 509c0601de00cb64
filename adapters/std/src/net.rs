//! An [`embedded_nal::TcpClientStack`] over `std::net`, and a `poll(2)` wait for readability.
//!
//! Why not `std-embedded-nal`: its `connect` is a plain blocking `TcpStream::connect`, which can
//! hang for minutes (the kernel's SYN retries) when the broker's address blackholes packets, and
//! it cannot set `TCP_NODELAY`, so a lone small PUBLISH waits for Nagle's algorithm and the
//! previous segment's ACK. Here `connect` is bounded by [`StdStack::new`]'s timeout and every
//! connected socket has `TCP_NODELAY` on and is non-blocking.
//!
//! The socket exposes its file descriptor ([`StdSocket::as_fd`]) so that [`wait_readable`] can
//! block in `poll(2)` until the broker sends something or the caller's next deadline comes, which
//! is how the pod sleeps between publishes without busy polling.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use embedded_nal::{nb, TcpClientStack, TcpError, TcpErrorKind};
use rustix::event::{PollFd, PollFlags, Timespec};

/// A TCP client stack on std sockets with a bounded connect and `TCP_NODELAY`.
///
/// Its errors ([`StdError`]) carry the operation, the peer and the OS error; the core's driver
/// keeps the last one for the program (`Driver::take_stack_error`).
#[derive(Debug, Clone, Default)]
pub struct StdStack;

impl StdStack {
    /// A stack whose `connect` never blocks: it answers `WouldBlock` until the connection is up
    /// (the caller bounds the wait).
    pub fn new() -> Self {
        Self
    }
}

/// A TCP socket of [`StdStack`]: not connected until [`TcpClientStack::connect`] succeeds.
#[derive(Debug)]
pub struct StdSocket {
    stream: Option<TcpStream>,
    dial: Option<Dial>,
    // Kept so send/receive errors can name the broker even after the connection is gone.
    peer: Option<SocketAddr>,
}

impl StdSocket {
    /// The connected stream's file descriptor, for `poll(2)`; `None` when not connected.
    pub fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        tcp_fd(self.stream.as_ref(), self.dial.as_ref())
    }

    /// The connected stream and the peer, for `op`.
    fn connected(
        &mut self,
        op: &'static str,
    ) -> nb::Result<(&mut TcpStream, Option<SocketAddr>), StdError> {
        match self.stream.as_mut() {
            Some(stream) => Ok((stream, self.peer)),
            None => Err(nb::Error::Other(StdError::not_connected(op))),
        }
    }

    /// Whether `connect` succeeded and the socket has not been closed since.
    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    #[cfg(test)]
    fn stream(&self) -> Option<&TcpStream> {
        self.stream.as_ref()
    }
}

/// A failed socket operation: which one, with which peer, and the OS error.
#[derive(Debug)]
pub struct StdError {
    op: &'static str,
    peer: Option<SocketAddr>,
    source: io::Error,
}

impl StdError {
    pub(crate) fn new(op: &'static str, peer: Option<SocketAddr>, source: io::Error) -> Self {
        Self { op, peer, source }
    }

    fn not_connected(op: &'static str) -> Self {
        Self::new(
            op,
            None,
            io::Error::new(io::ErrorKind::NotConnected, "socket is not connected"),
        )
    }

    /// The operation that failed: `"connect"`, `"send"`, `"receive"`, `"socket"` or `"close"`.
    pub fn op(&self) -> &'static str {
        self.op
    }

    /// The remote address, when the socket had one.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The kind of the underlying OS error.
    pub fn io_kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

impl fmt::Display for StdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let preposition = match self.op {
            "connect" | "send" => " to",
            "receive" => " from",
            _ => " with",
        };
        match self.peer {
            Some(peer) => write!(f, "{}{preposition} {peer}: {}", self.op, self.source),
            None => write!(f, "{}: {}", self.op, self.source),
        }
    }
}

impl std::error::Error for StdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl TcpError for StdError {
    fn kind(&self) -> TcpErrorKind {
        io_error_kind(self.source.kind())
    }
}

/// A TCP connect under way without blocking: `socket(2)`, `O_NONBLOCK`, `connect(2)` →
/// `EINPROGRESS`, then `poll(2)` for writability and `SO_ERROR`. The caller (the core's driver)
/// owns the deadline, so a blackholed broker costs one connect per attempt and a stop request
/// is seen on the next poll, not after a kernel timeout.
#[derive(Debug)]
pub(crate) struct Dial {
    socket: socket2::Socket,
}

/// What starting a connect gave.
#[derive(Debug)]
enum Dialed {
    /// Connected at once (loopback sometimes is).
    Done(TcpStream),
    /// In progress: [`Dial::poll`] it.
    Pending(Dial),
}

impl Dial {
    /// Starts connecting to `remote`.
    fn start(remote: SocketAddr) -> io::Result<Dialed> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(remote),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_nonblocking(true)?;
        // One PUBLISH batch per write: it must leave now, not when the previous segment is acked.
        socket.set_tcp_nodelay(true)?;
        match socket.connect(&remote.into()) {
            Ok(()) => Ok(Dialed::Done(socket.into())),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => {
                Ok(Dialed::Pending(Dial { socket }))
            }
            Err(e) => Err(e),
        }
    }

    /// The connect's outcome, if it has one yet.
    fn poll(&self) -> nb::Result<(), io::Error> {
        let mut fds = [PollFd::new(&self.socket, PollFlags::OUT)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match rustix::event::poll(&mut fds, Some(&zero)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => return Err(nb::Error::WouldBlock),
            Ok(_) => {}
            Err(e) => return Err(nb::Error::Other(e.into())),
        }
        match self.socket.take_error() {
            Ok(None) => Ok(()),
            Ok(Some(e)) | Err(e) => Err(nb::Error::Other(e)),
        }
    }

    /// Starts connecting to `remote`, or goes on with the connect in `slot`: the stream once
    /// connected, `WouldBlock` (with the connect kept in `slot`) while under way.
    pub(crate) fn advance(
        slot: &mut Option<Dial>,
        remote: SocketAddr,
    ) -> nb::Result<TcpStream, io::Error> {
        let dial = match slot.take() {
            Some(dial) => dial,
            None => match Dial::start(remote)? {
                Dialed::Done(stream) => return Ok(stream),
                Dialed::Pending(dial) => dial,
            },
        };
        match dial.poll() {
            Ok(()) => Ok(dial.socket.into()),
            Err(nb::Error::WouldBlock) => {
                *slot = Some(dial);
                Err(nb::Error::WouldBlock)
            }
            Err(e) => Err(e),
        }
    }
}

/// The descriptor to `poll(2)` on: the connected stream's, else the connect's under way.
pub(crate) fn tcp_fd<'a>(
    stream: Option<&'a TcpStream>,
    dial: Option<&'a Dial>,
) -> Option<BorrowedFd<'a>> {
    stream
        .map(AsFd::as_fd)
        .or_else(|| dial.map(|d| d.socket.as_fd()))
}

/// Shuts the connection down both ways (a FIN even if another handle to the descriptor were
/// alive); after a reset the connection is already gone, which is what closing wants anyway.
pub(crate) fn shutdown(stream: &TcpStream, peer: Option<SocketAddr>) -> Result<(), StdError> {
    match stream.shutdown(Shutdown::Both) {
        Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(StdError::new("close", peer, e)),
        _ => Ok(()),
    }
}

/// Whether a non-blocking I/O error only means "not now": `Interrupted` is retried by the
/// caller's next poll like `WouldBlock`.
pub(crate) fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// The [`TcpErrorKind`] of an OS error: the ways a connection ends are a closed pipe.
pub(crate) fn io_error_kind(kind: io::ErrorKind) -> TcpErrorKind {
    match kind {
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::NotConnected
        | io::ErrorKind::UnexpectedEof => TcpErrorKind::PipeClosed,
        _ => TcpErrorKind::Other,
    }
}

/// Maps a non-blocking I/O error.
fn nb_error(op: &'static str, peer: Option<SocketAddr>, e: io::Error) -> nb::Error<StdError> {
    if would_block(&e) {
        nb::Error::WouldBlock
    } else {
        nb::Error::Other(StdError::new(op, peer, e))
    }
}

impl TcpClientStack for StdStack {
    type TcpSocket = StdSocket;
    type Error = StdError;

    fn socket(&mut self) -> Result<StdSocket, StdError> {
        // The OS socket is made by connect: std cannot create an unconnected TcpStream.
        Ok(StdSocket {
            stream: None,
            dial: None,
            peer: None,
        })
    }

    fn connect(&mut self, socket: &mut StdSocket, remote: SocketAddr) -> nb::Result<(), StdError> {
        if socket.stream.is_some() {
            return Ok(());
        }
        socket.peer = Some(remote);
        match Dial::advance(&mut socket.dial, remote) {
            Ok(stream) => {
                socket.stream = Some(stream);
                Ok(())
            }
            Err(nb::Error::WouldBlock) => Err(nb::Error::WouldBlock),
            Err(nb::Error::Other(e)) => {
                Err(nb::Error::Other(StdError::new("connect", Some(remote), e)))
            }
        }
    }

    fn send(&mut self, socket: &mut StdSocket, buffer: &[u8]) -> nb::Result<usize, StdError> {
        let (stream, peer) = socket.connected("send")?;
        stream.write(buffer).map_err(|e| nb_error("send", peer, e))
    }

    fn receive(
        &mut self,
        socket: &mut StdSocket,
        buffer: &mut [u8],
    ) -> nb::Result<usize, StdError> {
        let (stream, peer) = socket.connected("receive")?;
        // Ok(0) on a non-empty buffer is EOF; it is passed on as is, the core decides.
        stream
            .read(buffer)
            .map_err(|e| nb_error("receive", peer, e))
    }

    fn close(&mut self, socket: StdSocket) -> Result<(), StdError> {
        match &socket.stream {
            Some(stream) => shutdown(stream, socket.peer),
            None => Ok(()),
        }
    }
}

/// `poll(2)` takes milliseconds in a C int on some platforms; round up so a sub-millisecond wait
/// does not become a zero-timeout busy loop.
pub(crate) fn poll_timeout(timeout: Duration) -> Timespec {
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    let ms = i64::try_from(ms)
        .unwrap_or(i64::MAX)
        .min(i64::from(i32::MAX));
    Timespec {
        tv_sec: ms / 1000,
        tv_nsec: (ms % 1000) * 1_000_000,
    }
}

/// Blocks until `socket` is readable (data, EOF or an error is pending), or also writable when
/// `writable` is set or the socket [wants to write](Waitable::wants_write) (a write is pending),
/// or `wake` is readable, or `timeout` passes.
///
/// Returns `Ok(true)` at once when the socket [has buffered input](Waitable::has_buffered_input),
/// and when the socket or `wake` is ready. With no connected socket it waits on
/// `wake` alone (or just sleeps). A signal ends the wait early with `Ok(false)`, so the
/// caller's loop sees a SIGTERM flag promptly. Timeouts longer than `i32::MAX` ms are clamped.
pub fn wait_socket<W: Waitable>(
    socket: Option<&W>,
    timeout: Duration,
    writable: bool,
    wake: Option<BorrowedFd<'_>>,
) -> io::Result<bool> {
    if socket.is_some_and(|s| s.has_buffered_input()) {
        return Ok(true);
    }
    let writable = writable || socket.is_some_and(|s| s.wants_write());
    let interest = if writable {
        PollFlags::IN | PollFlags::OUT
    } else {
        PollFlags::IN
    };
    let socket = socket
        .and_then(W::fd)
        .map(|fd| PollFd::from_borrowed_fd(fd, interest));
    let wake = wake.map(|fd| PollFd::from_borrowed_fd(fd, PollFlags::IN));
    poll_pair(socket, wake, timeout)
}

/// Blocks until one of (at most two) `fds` is readable or `timeout` passes; `Ok(false)` on
/// timeout or signal.
pub fn wait_fds(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<bool> {
    let mut it = fds
        .iter()
        .map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN));
    poll_pair(it.next(), it.next(), timeout)
}

fn poll_pair(a: Option<PollFd<'_>>, b: Option<PollFd<'_>>, timeout: Duration) -> io::Result<bool> {
    let timeout = poll_timeout(timeout);
    let mut pair;
    let mut one;
    // With no descriptor, poll is still the sleep: unlike thread::sleep it is not restarted
    // after a signal handler runs, so SIGTERM wakes the loop.
    let fds: &mut [PollFd<'_>] = match (a, b) {
        (Some(a), Some(b)) => {
            pair = [a, b];
            &mut pair
        }
        (Some(a), None) | (None, Some(a)) => {
            one = [a];
            &mut one
        }
        (None, None) => &mut [],
    };
    match rustix::event::poll(fds, Some(&timeout)) {
        Ok(0) => Ok(false),
        Ok(_) => Ok(fds.iter().any(|fd| !fd.revents().is_empty())),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A socket the driver can sleep on.
pub trait Waitable {
    /// The file descriptor to poll, if connected.
    fn fd(&self) -> Option<BorrowedFd<'_>>;

    /// Whether input is already buffered in user space (e.g. decrypted TLS records), so a
    /// `receive` would not block even though the descriptor is not readable.
    fn has_buffered_input(&self) -> bool {
        false
    }

    /// Whether output is buffered in user space (e.g. encrypted TLS records the socket did not
    /// take yet), so the wait should also end when the descriptor becomes writable.
    fn wants_write(&self) -> bool {
        false
    }
}

impl Waitable for StdSocket {
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.as_fd()
    }

    fn wants_write(&self) -> bool {
        // A connect in progress completes by becoming writable.
        self.dial.is_some()
    }
}

/// [`wait_socket`] for readability only.
pub fn wait_readable(socket: Option<&StdSocket>, timeout: Duration) -> io::Result<bool> {
    wait_socket(socket, timeout, false, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};
    use std::time::Instant;

    const PATIENCE: Duration = Duration::from_secs(10);

    fn listener() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        (listener, addr)
    }

    /// A connected client socket and the server side of the same connection.
    trait AcceptConnecting {
        fn accept_connecting(
            &self,
            stack: &mut StdStack,
            socket: &mut StdSocket,
            addr: SocketAddr,
        ) -> (TcpStream, SocketAddr);
    }

    impl AcceptConnecting for TcpListener {
        /// Drives the non-blocking connect to completion (bounded), then accepts it.
        fn accept_connecting(
            &self,
            stack: &mut StdStack,
            socket: &mut StdSocket,
            addr: SocketAddr,
        ) -> (TcpStream, SocketAddr) {
            let started = Instant::now();
            loop {
                match stack.connect(socket, addr) {
                    Ok(()) => break,
                    Err(nb::Error::WouldBlock) if started.elapsed() < PATIENCE => {
                        let _ = wait_socket(Some(&*socket), Duration::from_millis(50), true, None);
                    }
                    Err(e) => panic!("connect: {e:?}"),
                }
            }
            self.accept().expect("accept")
        }
    }

    fn connected() -> (StdStack, StdSocket, TcpStream) {
        let (listener, addr) = listener();
        let mut stack = StdStack::new();
        let mut socket = stack.socket().expect("socket");
        let (server, _) = listener.accept_connecting(&mut stack, &mut socket, addr);
        (stack, socket, server)
    }

    /// A connection the server has reset (RST pending at the client), and the server's address.
    fn reset_by_peer() -> (StdStack, StdSocket, SocketAddr) {
        let (stack, socket, server) = connected();
        // SO_LINGER 0: close sends RST instead of FIN.
        socket2::SockRef::from(&server)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
        let server_addr = server.local_addr().expect("addr");
        drop(server);
        assert!(wait_readable(Some(&socket), PATIENCE).expect("poll"));
        (stack, socket, server_addr)
    }

    fn err<T: fmt::Debug>(result: nb::Result<T, StdError>) -> StdError {
        match result {
            Err(nb::Error::Other(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// Receives exactly `n` bytes, waiting with poll in between.
    fn receive_exactly(stack: &mut StdStack, socket: &mut StdSocket, n: usize) -> Vec<u8> {
        let mut got = vec![0; n];
        let mut filled = 0;
        while filled < n {
            assert!(wait_readable(Some(socket), PATIENCE).expect("poll"));
            match stack.receive(socket, &mut got[filled..]) {
                Ok(0) => panic!("EOF after {filled} of {n} bytes"),
                Ok(k) => filled += k,
                Err(nb::Error::WouldBlock) => {}
                Err(nb::Error::Other(e)) => panic!("receive: {e}"),
            }
        }
        got
    }

    #[test]
    fn connect_sets_nodelay_and_nonblocking() {
        let (mut stack, mut socket, _server) = connected();
        assert!(socket.is_connected());
        assert!(socket.as_fd().is_some());
        let stream = socket.stream().expect("connected");
        assert!(stream.nodelay().expect("nodelay"));
        let mut buf = [0; 8];
        assert!(matches!(
            stack.receive(&mut socket, &mut buf),
            Err(nb::Error::WouldBlock)
        ));
    }

    #[test]
    fn new_socket_is_not_connected() {
        let mut stack = StdStack::new();
        let socket = stack.socket().expect("socket");
        assert!(!socket.is_connected());
        assert!(socket.as_fd().is_none());
    }

    #[test]
    fn connecting_a_connected_socket_is_ok() {
        let (mut stack, mut socket, server) = connected();
        let other = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        assert!(stack.connect(&mut socket, other).is_ok());
        assert_eq!(socket.peer, Some(server.local_addr().expect("addr")));
    }

    #[test]
    fn bytes_flow_both_ways() {
        let (mut stack, mut socket, mut server) = connected();

        let connect = [0x10, 0x02, 0x00, 0x00];
        let mut sent = 0;
        while sent < connect.len() {
            match stack.send(&mut socket, &connect[sent..]) {
                Ok(n) => sent += n,
                Err(nb::Error::WouldBlock) => {}
                Err(nb::Error::Other(e)) => panic!("send: {e}"),
            }
        }
        let mut at_server = [0; 4];
        server.read_exact(&mut at_server).expect("server read");
        assert_eq!(at_server, connect);

        let connack = [0x20, 0x03, 0x00, 0x00, 0x00];
        server.write_all(&connack).expect("server write");
        assert_eq!(receive_exactly(&mut stack, &mut socket, 5), connack);
    }

    #[test]
    fn eof_is_passed_through_as_zero_bytes() {
        let (mut stack, mut socket, server) = connected();
        drop(server);
        assert!(wait_readable(Some(&socket), PATIENCE).expect("poll"));
        let mut buf = [0; 16];
        assert!(matches!(stack.receive(&mut socket, &mut buf), Ok(0)));
    }

    #[test]
    fn peer_reset_is_a_closed_pipe() {
        let (mut stack, mut socket, server_addr) = reset_by_peer();
        let e = err(stack.receive(&mut socket, &mut [0; 16]));
        assert_eq!(e.io_kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(e.kind(), TcpErrorKind::PipeClosed);
        assert_eq!(e.op(), "receive");
        assert_eq!(e.peer(), Some(server_addr));
        assert!(
            e.to_string()
                .starts_with(&format!("receive from {server_addr}: ")),
            "{e}"
        );
    }

    #[test]
    fn send_after_peer_reset_is_a_closed_pipe() {
        let (mut stack, mut socket, _) = reset_by_peer();
        let e = err(stack.send(&mut socket, b"\xe0\x00"));
        assert_eq!(e.kind(), TcpErrorKind::PipeClosed, "{e}");
        assert_eq!(e.op(), "send");
    }

    #[test]
    fn refused_connect_names_the_address() {
        let (listener, addr) = listener();
        drop(listener);
        let mut stack = StdStack::new();
        let mut socket = stack.socket().expect("socket");
        let e = err(stack.connect(&mut socket, addr));
        assert_eq!(e.io_kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(e.kind(), TcpErrorKind::Other);
        assert_eq!(e.op(), "connect");
        assert_eq!(e.peer(), Some(addr));
        assert!(
            e.to_string().starts_with(&format!("connect to {addr}: ")),
            "{e}"
        );
        assert!(!socket.is_connected());
    }

    #[test]
    fn never_connected_socket_cannot_send_or_receive() {
        let mut stack = StdStack::new();
        let mut socket = stack.socket().expect("socket");

        let e = err(stack.send(&mut socket, b"x"));
        assert_eq!(e.io_kind(), io::ErrorKind::NotConnected);
        assert_eq!(e.kind(), TcpErrorKind::PipeClosed);
        assert_eq!(e.to_string(), "send: socket is not connected");

        let e = err(stack.receive(&mut socket, &mut [0; 4]));
        assert_eq!(e.io_kind(), io::ErrorKind::NotConnected);
        assert_eq!(e.to_string(), "receive: socket is not connected");
    }

    #[test]
    fn close_sends_fin_to_the_peer() {
        let (mut stack, socket, mut server) = connected();
        stack.close(socket).expect("close");
        let mut buf = [0; 4];
        assert_eq!(server.read(&mut buf).expect("server read"), 0);
    }

    #[test]
    fn close_after_reset_or_without_connect_is_ok() {
        let mut stack = StdStack::new();
        let socket = stack.socket().expect("socket");
        stack.close(socket).expect("close unconnected");

        let (mut stack, mut socket, _) = reset_by_peer();
        let _ = stack.receive(&mut socket, &mut [0; 4]);
        stack.close(socket).expect("close after reset");
    }

    #[test]
    fn wait_readable_times_out_then_sees_data() {
        let (mut stack, mut socket, mut server) = connected();

        let start = Instant::now();
        assert!(!wait_readable(Some(&socket), Duration::from_millis(30)).expect("poll"));
        assert!(start.elapsed() >= Duration::from_millis(30));

        server.write_all(&[0xd0, 0x00]).expect("server write"); // PINGRESP
        let start = Instant::now();
        assert!(wait_readable(Some(&socket), PATIENCE).expect("poll"));
        assert!(start.elapsed() < PATIENCE);
        assert_eq!(receive_exactly(&mut stack, &mut socket, 2), [0xd0, 0x00]);
    }

    #[test]
    fn wait_readable_without_a_connection_sleeps_for_the_timeout() {
        let mut stack = StdStack::new();
        let unconnected = stack.socket().expect("socket");
        for socket in [None, Some(&unconnected)] {
            let start = Instant::now();
            assert!(!wait_readable(socket, Duration::from_millis(20)).expect("poll"));
            assert!(start.elapsed() >= Duration::from_millis(20));
        }
    }

    #[test]
    fn poll_timeout_rounds_up_and_clamps_to_i32_milliseconds() {
        let ts = |t: Timespec| (t.tv_sec, t.tv_nsec);
        assert_eq!(ts(poll_timeout(Duration::ZERO)), (0, 0));
        assert_eq!(ts(poll_timeout(Duration::from_nanos(1))), (0, 1_000_000));
        assert_eq!(
            ts(poll_timeout(Duration::from_millis(1500))),
            (1, 500_000_000)
        );
        assert_eq!(
            ts(poll_timeout(Duration::MAX)),
            (2_147_483, 647_000_000) // i32::MAX ms
        );
    }

    #[test]
    fn display_names_op_peer_and_os_error() {
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 1883));
        let e = StdError::new("connect", Some(peer), io::Error::from_raw_os_error(111));
        assert_eq!(
            e.to_string(),
            "connect to 127.0.0.1:1883: Connection refused (os error 111)"
        );
        let source = std::error::Error::source(&e).expect("source");
        assert_eq!(source.to_string(), "Connection refused (os error 111)");
    }

    #[test]
    fn closed_pipe_kinds() {
        use io::ErrorKind as K;
        for (io_kind, expected) in [
            (K::BrokenPipe, TcpErrorKind::PipeClosed),
            (K::ConnectionReset, TcpErrorKind::PipeClosed),
            (K::ConnectionAborted, TcpErrorKind::PipeClosed),
            (K::NotConnected, TcpErrorKind::PipeClosed),
            (K::UnexpectedEof, TcpErrorKind::PipeClosed),
            (K::ConnectionRefused, TcpErrorKind::Other),
            (K::TimedOut, TcpErrorKind::Other),
            (K::PermissionDenied, TcpErrorKind::Other),
            (K::Other, TcpErrorKind::Other),
        ] {
            let e = StdError::new("send", None, io::Error::from(io_kind));
            assert_eq!(e.kind(), expected, "{io_kind:?}");
        }
    }
}
