//! The bridge between rustls and a non-blocking std socket: [`TlsStack`] and its
//! [`TlsSocket`]s, driven without blocking so the driver can sleep in `poll(2)`.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use embedded_nal::{nb, TcpClientStack, TcpErrorKind};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::config::{self, TlsConfig};
use super::error::{TlsError, TlsFailure};
use crate::net::{io_error_kind, shutdown, tcp_fd, would_block, Dial, StdError, Waitable};

/// Most rounds of socket I/O in one call: past it the call returns `WouldBlock` and the
/// driver's `poll(2)` says when to go on, so no call can spin.
const MAX_ROUNDS: usize = 16;

/// Most plaintext buffered in rustls before `send` reports `WouldBlock` (rustls' default too);
/// far above any packet this publisher writes.
const SEND_BUFFER_LIMIT: usize = 64 * 1024;

/// A TCP client stack whose sockets speak TLS; see the [module documentation](super).
#[derive(Debug, Clone)]
pub struct TlsStack {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    connect_timeout: Duration,
    trust: String,
    client_cert: bool,
}

impl TlsStack {
    /// Reads the CA file (or the system trust store) and the client certificate and key, and
    /// checks the server name. `connect_timeout` bounds the TCP connect and the handshake
    /// together; it must not be zero.
    pub fn new(cfg: &TlsConfig, connect_timeout: Duration) -> Result<TlsStack, TlsError> {
        let config::Client {
            config,
            server_name,
            trust,
        } = config::client(cfg)?;
        Ok(TlsStack {
            config,
            server_name,
            connect_timeout,
            trust,
            client_cert: cfg.client_cert.is_some(),
        })
    }

    /// One line for a start-up log: server name, trust, client certificate.
    pub fn describe(&self) -> String {
        format!(
            "TLS 1.2/1.3, server name {:?}, trusting the CAs in {}, {}",
            self.server_name.to_str(),
            self.trust,
            if self.client_cert {
                "with a client certificate"
            } else {
                "no client certificate"
            }
        )
    }

    /// Marks the socket failed and returns `e`.
    fn fail<T>(&self, socket: &mut TlsSocket, e: TlsError) -> nb::Result<T, TlsError> {
        // Tell the broker why, when rustls queued an alert; best effort.
        if let (Some(conn), Some(stream)) = (socket.conn.as_mut(), socket.stream.as_mut()) {
            let _ = flush(conn, stream);
        }
        socket.state = State::Failed;
        Err(nb::Error::Other(e))
    }

    fn tls_error(&self, peer: SocketAddr, handshake: bool, source: rustls::Error) -> TlsError {
        TlsError::Tls(Box::new(TlsFailure {
            peer,
            server_name: self.server_name.to_str().into_owned(),
            trust: self.trust.clone(),
            client_cert: self.client_cert,
            handshake,
            source,
        }))
    }

    /// Moves the handshake on until it completes, the socket would block, or it fails.
    fn handshake(&self, socket: &mut TlsSocket) -> nb::Result<(), TlsError> {
        let (State::Handshaking { started }, Some(peer)) = (socket.state, socket.peer) else {
            return Err(nb::Error::Other(TlsError::NotConnected { op: "connect" }));
        };
        for _ in 0..MAX_ROUNDS {
            let (Some(conn), Some(stream)) = (socket.conn.as_mut(), socket.stream.as_mut()) else {
                break;
            };
            if let Err(e) = flush(conn, stream) {
                return self.fail(socket, io_error("TLS handshake", peer, e));
            }
            if !conn.is_handshaking() {
                socket.state = State::Open;
                return Ok(());
            }
            match conn.read_tls(stream) {
                Ok(0) => return self.fail(socket, TlsError::ClosedDuringHandshake { peer }),
                Ok(_) => match conn.process_new_packets() {
                    Ok(io) => {
                        socket.plaintext = io.plaintext_bytes_to_read();
                        socket.peer_closed = io.peer_has_closed();
                    }
                    Err(e) => {
                        let e = self.tls_error(peer, true, e);
                        return self.fail(socket, e);
                    }
                },
                Err(e) if would_block(&e) => {
                    let after = started.elapsed();
                    if after >= self.connect_timeout {
                        return self.fail(socket, TlsError::HandshakeTimeout { peer, after });
                    }
                    return Err(nb::Error::WouldBlock);
                }
                // A peer that closes with our ClientHello unread sends a reset, not a FIN.
                Err(e) if io_error_kind(e.kind()) == TcpErrorKind::PipeClosed => {
                    return self.fail(socket, TlsError::ClosedDuringHandshake { peer })
                }
                Err(e) => return self.fail(socket, io_error("TLS handshake", peer, e)),
            }
        }
        Err(nb::Error::WouldBlock)
    }
}

fn io_error(op: &'static str, peer: SocketAddr, e: io::Error) -> TlsError {
    TlsError::Io(StdError::new(op, Some(peer), e))
}

/// Writes the records rustls has queued until it has none or the socket would block.
fn flush(conn: &mut ClientConnection, stream: &mut TcpStream) -> io::Result<()> {
    for _ in 0..MAX_ROUNDS {
        if !conn.wants_write() {
            break;
        }
        match conn.write_tls(stream) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if would_block(&e) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not connected yet.
    Idle,
    /// TCP is up, the handshake is in progress since `started` (the connect's start).
    Handshaking { started: Instant },
    /// The TCP connect is under way.
    Dialing { started: Instant },
    /// The handshake is done.
    Open,
    /// The connection failed; it is not retried on this socket.
    Failed,
}

/// A socket of [`TlsStack`]: TCP plus a rustls client connection.
pub struct TlsSocket {
    stream: Option<TcpStream>,
    dial: Option<Dial>,
    conn: Option<ClientConnection>,
    peer: Option<SocketAddr>,
    state: State,
    /// Decrypted bytes rustls holds that `receive` has not returned yet.
    plaintext: usize,
    /// The broker's close_notify has arrived and has not been reported as EOF yet.
    peer_closed: bool,
}

impl fmt::Debug for TlsSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSocket")
            .field("peer", &self.peer)
            .field("state", &self.state)
            .field("plaintext", &self.plaintext)
            .field("peer_closed", &self.peer_closed)
            .finish_non_exhaustive()
    }
}

impl TlsSocket {
    /// The TCP stream's file descriptor, for `poll(2)`; `None` before the TCP connect.
    pub fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        tcp_fd(self.stream.as_ref(), self.dial.as_ref())
    }

    /// Whether the handshake is complete and the connection has not failed.
    pub fn is_connected(&self) -> bool {
        self.state == State::Open
    }

    /// The negotiated TLS version, once the handshake is done (e.g. `TLSv1_3`).
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.as_ref().and_then(|c| c.protocol_version())
    }

    /// The open connection's parts (disjoint from the counters), or why there is none.
    fn open<'a>(
        state: State,
        conn: &'a mut Option<ClientConnection>,
        stream: &'a mut Option<TcpStream>,
        peer: Option<SocketAddr>,
        op: &'static str,
    ) -> nb::Result<(&'a mut ClientConnection, &'a mut TcpStream, SocketAddr), TlsError> {
        match (state, conn.as_mut(), stream.as_mut(), peer) {
            (State::Open, Some(conn), Some(stream), Some(peer)) => Ok((conn, stream, peer)),
            _ => Err(nb::Error::Other(TlsError::NotConnected { op })),
        }
    }
}

impl Waitable for TlsSocket {
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.as_fd()
    }

    fn has_buffered_input(&self) -> bool {
        self.state == State::Open && (self.plaintext > 0 || self.peer_closed)
    }

    fn wants_write(&self) -> bool {
        self.dial.is_some()
            || matches!(self.state, State::Open | State::Handshaking { .. })
                && self.conn.as_ref().is_some_and(|c| c.wants_write())
    }
}

impl TcpClientStack for TlsStack {
    type TcpSocket = TlsSocket;
    type Error = TlsError;

    fn socket(&mut self) -> Result<TlsSocket, TlsError> {
        Ok(TlsSocket {
            stream: None,
            dial: None,
            conn: None,
            peer: None,
            state: State::Idle,
            plaintext: 0,
            peer_closed: false,
        })
    }

    fn connect(&mut self, socket: &mut TlsSocket, remote: SocketAddr) -> nb::Result<(), TlsError> {
        match socket.state {
            State::Open => return Ok(()),
            State::Handshaking { .. } => return self.handshake(socket),
            // The failure was recorded when it happened; a second attempt needs a new socket.
            State::Failed => {
                return Err(nb::Error::Other(TlsError::NotConnected { op: "connect" }))
            }
            State::Idle | State::Dialing { .. } => {}
        }
        let started = match socket.state {
            State::Dialing { started } => started,
            _ => Instant::now(),
        };
        socket.peer = Some(remote);
        let stream = match Dial::advance(&mut socket.dial, remote) {
            Ok(stream) => stream,
            Err(nb::Error::WouldBlock) => {
                socket.state = State::Dialing { started };
                return Err(nb::Error::WouldBlock);
            }
            Err(nb::Error::Other(e)) => {
                let e = TlsError::Io(StdError::new("connect", Some(remote), e));
                return self.fail(socket, e);
            }
        };
        socket.stream = Some(stream);
        let mut conn = match ClientConnection::new(self.config.clone(), self.server_name.clone()) {
            Ok(conn) => conn,
            Err(e) => return self.fail(socket, TlsError::Config(e)),
        };
        conn.set_buffer_limit(Some(SEND_BUFFER_LIMIT));
        socket.conn = Some(conn);
        socket.state = State::Handshaking { started };
        self.handshake(socket)
    }

    fn send(&mut self, socket: &mut TlsSocket, buffer: &[u8]) -> nb::Result<usize, TlsError> {
        let (conn, stream, peer) = TlsSocket::open(
            socket.state,
            &mut socket.conn,
            &mut socket.stream,
            socket.peer,
            "send",
        )?;
        // Older records first, so the kernel sees them in order.
        if let Err(e) = flush(conn, stream) {
            return self.fail(socket, io_error("send", peer, e));
        }
        let taken = match conn.writer().write(buffer) {
            Ok(n) => n,
            Err(e) => return self.fail(socket, io_error("send", peer, e)),
        };
        if taken == 0 && !buffer.is_empty() {
            // rustls' buffer is full: the kernel is not taking our records.
            return Err(nb::Error::WouldBlock);
        }
        if let Err(e) = flush(conn, stream) {
            return self.fail(socket, io_error("send", peer, e));
        }
        Ok(taken)
    }

    fn receive(
        &mut self,
        socket: &mut TlsSocket,
        buffer: &mut [u8],
    ) -> nb::Result<usize, TlsError> {
        if buffer.is_empty() {
            return Ok(0);
        }
        for _ in 0..MAX_ROUNDS {
            let (conn, stream, peer) = TlsSocket::open(
                socket.state,
                &mut socket.conn,
                &mut socket.stream,
                socket.peer,
                "receive",
            )?;
            // Pending records (a partly sent packet, a key update reply) go out first.
            if let Err(e) = flush(conn, stream) {
                return self.fail(socket, io_error("send", peer, e));
            }
            match conn.reader().read(buffer) {
                // close_notify: the broker's orderly end.
                Ok(0) => {
                    socket.peer_closed = false;
                    return Ok(0);
                }
                Ok(n) => {
                    socket.plaintext = socket.plaintext.saturating_sub(n);
                    return Ok(n);
                }
                // TCP closed without close_notify: still the end of the stream for the core.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if would_block(&e) => {}
                Err(e) => return self.fail(socket, io_error("receive", peer, e)),
            }
            match conn.read_tls(stream) {
                // TCP EOF; rustls reports it through the reader on the next round.
                Ok(0) => {}
                Ok(_) => {}
                Err(e) if would_block(&e) => return Err(nb::Error::WouldBlock),
                Err(e) => return self.fail(socket, io_error("receive", peer, e)),
            }
            match conn.process_new_packets() {
                Ok(io) => {
                    socket.plaintext = io.plaintext_bytes_to_read();
                    socket.peer_closed = io.peer_has_closed();
                }
                Err(e) => {
                    let e = self.tls_error(peer, false, e);
                    return self.fail(socket, e);
                }
            }
        }
        // More records are waiting in the kernel; poll(2) sees them readable at once.
        Err(nb::Error::WouldBlock)
    }

    /// Closes the socket: close_notify first when the session is open. A socket closed in the
    /// middle of its handshake (the core's connect timeout, or a stop) is closed all the same,
    /// and the error says so, since the handshake itself reported nothing.
    fn close(&mut self, socket: TlsSocket) -> Result<(), TlsError> {
        let TlsSocket {
            stream,
            conn,
            peer,
            state,
            ..
        } = socket;
        let Some(mut stream) = stream else {
            return Ok(());
        };
        if let (State::Open, Some(mut conn)) = (state, conn) {
            conn.send_close_notify();
            let _ = flush(&mut conn, &mut stream);
        }
        shutdown(&stream, peer).map_err(TlsError::Io)?;
        match (state, peer) {
            (State::Handshaking { started }, Some(peer)) => Err(TlsError::HandshakeTimeout {
                peer,
                after: started.elapsed(),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Shutdown, TcpListener};
    use std::sync::mpsc;

    use embedded_nal::TcpError;

    use super::*;
    use crate::net::wait_socket;
    use crate::tls::testing::*;

    /// A stack trusting a fresh CA, connected to an echoing broker whose certificate (from that
    /// CA) is for `name`, which is also the server name checked.
    fn echo_session(
        name: &str,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> (TlsStack, TlsSocket, std::thread::JoinHandle<()>) {
        let ca = Ca::new("test CA");
        let (addr, server) = serve_echo(&ca, &[name], version);
        let mut stack = stack(&Files::new(), &ca, name);
        let socket = connected(&mut stack, addr);
        (stack, socket, server)
    }

    #[test]
    fn tls13_carries_bytes_both_ways_and_close_sends_close_notify() {
        let (mut stack, socket, server) = echo_session("localhost", &rustls::version::TLS13);
        assert!(socket.is_connected());
        assert!(socket.fd().is_some());
        assert_eq!(
            socket.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        exchange_and_close(&mut stack, socket, server);
    }

    #[test]
    fn tls12_broker_is_accepted() {
        let (mut stack, socket, server) = echo_session("localhost", &rustls::version::TLS12);
        assert_eq!(
            socket.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        exchange_and_close(&mut stack, socket, server);
    }

    #[test]
    fn ip_address_server_name_is_checked_against_ip_sans() {
        let (mut stack, socket, server) = echo_session("127.0.0.1", &rustls::version::TLS13);
        exchange_and_close(&mut stack, socket, server);
    }

    #[test]
    fn silent_peer_fails_at_the_connect_timeout_without_hanging() {
        let (release, hold) = mpsc::channel::<()>();
        let (addr, server) = serve_raw(move |_tcp| {
            let _ = hold.recv_timeout(PATIENCE);
        });
        let files = Files::new();
        let cfg = TlsConfig {
            ca_file: Some(files.write("ca.crt", &Ca::new("test CA").pem)),
            ..TlsConfig::new("localhost")
        };
        let timeout = Duration::from_millis(300);
        let mut stack = TlsStack::new(&cfg, timeout).expect("stack");
        let start = Instant::now();
        let (_, e) = failure(&mut stack, addr);
        let took = start.elapsed();
        assert!(took >= timeout && took < PATIENCE, "took {took:?}");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "TLS handshake with {addr} failed: no answer within "
            )),
            "{text}"
        );
        assert!(text.ends_with("(plain MQTT on a TLS port?)"), "{text}");
        let _ = release.send(());
        server.join().expect("server");
    }

    #[test]
    fn closing_during_the_handshake_says_why() {
        let (release, hold) = mpsc::channel::<()>();
        let (addr, server) = serve_raw(move |_tcp| {
            let _ = hold.recv_timeout(PATIENCE);
        });
        let files = Files::new();
        let mut stack = stack(&files, &Ca::new("test CA"), "localhost");
        let mut socket = stack.socket().expect("socket");
        // The TCP connect completes, then the handshake waits for a server that never answers.
        for _ in 0..5 {
            assert!(matches!(
                stack.connect(&mut socket, addr),
                Err(nb::Error::WouldBlock)
            ));
            wait_socket(Some(&socket), Duration::from_millis(50), false, None).expect("poll");
        }
        // The core gives up first (its own connect timeout) and closes the socket.
        let text = stack.close(socket).expect_err("why").to_string();
        assert!(
            text.starts_with(&format!(
                "TLS handshake with {addr} failed: no answer within "
            )),
            "{text}"
        );
        let _ = release.send(());
        server.join().expect("server");
    }

    #[test]
    fn client_certificate_is_presented_when_the_broker_requires_one() {
        let ca = Ca::new("test CA");
        let leaf = ca.leaf(&["localhost"], Purpose::Server, Validity::Current);
        let client = ca.leaf(&["client"], Purpose::Client, Validity::Current);
        let config = server_config(&leaf, &[&rustls::version::TLS13], Some(&ca));
        let (addr, server) = serve(config, |server| {
            echo_then_expect_close_notify(server);
            assert!(server
                .conn
                .peer_certificates()
                .is_some_and(|c| !c.is_empty()));
        });
        let files = Files::new();
        let cfg = TlsConfig {
            ca_file: Some(files.write("ca.crt", &ca.pem)),
            server_name: "localhost".into(),
            client_cert: Some(files.write("client.crt", &client.cert_pem)),
            client_key: Some(files.write("client.key", &client.key_pem)),
        };
        let mut stack = TlsStack::new(&cfg, Duration::from_secs(5)).expect("stack");
        assert!(stack.describe().contains("with a client certificate"));
        let socket = connected(&mut stack, addr);
        exchange_and_close(&mut stack, socket, server);
    }

    #[test]
    fn decrypted_bytes_not_yet_read_wake_the_driver() {
        let ca = Ca::new("test CA");
        let leaf = ca.leaf(&["localhost"], Purpose::Server, Validity::Current);
        let config = server_config(&leaf, &[&rustls::version::TLS13], None);
        let (addr, server) = serve(config, |server| {
            let mut connect = [0; 4];
            server.read_exact(&mut connect).expect("server read");
            // One record: CONNACK and a PINGRESP.
            server
                .write_all(&[0x20, 0x03, 0x00, 0x00, 0x00, 0xd0, 0x00])
                .expect("server write");
            server.flush().expect("flush");
            let mut rest = [0; 1];
            let _ = server.read(&mut rest);
        });
        let files = Files::new();
        let mut stack = stack(&files, &ca, "localhost");
        let mut socket = connected(&mut stack, addr);
        send_all(&mut stack, &mut socket, &CONNECT);
        assert!(!socket.has_buffered_input());
        assert_eq!(
            receive(&mut stack, &mut socket, 5, 5).expect("receive"),
            CONNACK
        );
        // The PINGRESP is decrypted and waiting: the fd will not become readable for it.
        assert!(socket.has_buffered_input());
        let start = Instant::now();
        assert!(wait_socket(Some(&socket), PATIENCE, false, None).expect("poll"));
        assert!(start.elapsed() < Duration::from_secs(1));
        let mut buf = [0; 8];
        assert_eq!(stack.receive(&mut socket, &mut buf).expect("receive"), 2);
        assert_eq!(&buf[..2], [0xd0, 0x00]);
        assert!(!socket.has_buffered_input());
        stack.close(socket).expect("close");
        server.join().expect("server");
    }

    #[test]
    fn close_notify_from_the_broker_is_end_of_stream() {
        let ca = Ca::new("test CA");
        let leaf = ca.leaf(&["localhost"], Purpose::Server, Validity::Current);
        let config = server_config(&leaf, &[&rustls::version::TLS13], None);
        let (release, hold) = mpsc::channel::<()>();
        let (addr, server) = serve(config, move |server| {
            let mut connect = [0; 4];
            server.read_exact(&mut connect).expect("server read");
            server.write_all(&CONNACK).expect("server write");
            server.conn.send_close_notify();
            server.flush().expect("flush");
            // TCP stays open: only the TLS layer says goodbye.
            let _ = hold.recv_timeout(PATIENCE);
        });
        let files = Files::new();
        let mut stack = stack(&files, &ca, "localhost");
        let mut socket = connected(&mut stack, addr);
        send_all(&mut stack, &mut socket, &CONNECT);
        // CONNACK, then Ok(0).
        assert_eq!(
            receive(&mut stack, &mut socket, 100, 64).expect("receive"),
            CONNACK
        );
        assert!(!socket.has_buffered_input());
        let _ = release.send(());
        stack.close(socket).expect("close");
        server.join().expect("server");
    }

    #[test]
    fn bare_tcp_close_after_the_handshake_is_end_of_stream() {
        let ca = Ca::new("test CA");
        let leaf = ca.leaf(&["localhost"], Purpose::Server, Validity::Current);
        let config = server_config(&leaf, &[&rustls::version::TLS13], None);
        let (addr, server) = serve(config, |server| {
            let mut connect = [0; 4];
            server.read_exact(&mut connect).expect("server read");
            server.sock.shutdown(Shutdown::Both).expect("shutdown");
        });
        let files = Files::new();
        let mut stack = stack(&files, &ca, "localhost");
        let mut socket = connected(&mut stack, addr);
        send_all(&mut stack, &mut socket, &CONNECT);
        server.join().expect("server");
        assert!(receive(&mut stack, &mut socket, 1, 64)
            .expect("EOF")
            .is_empty());
    }

    #[test]
    fn send_reports_would_block_when_the_broker_stops_reading() {
        let ca = Ca::new("test CA");
        let leaf = ca.leaf(&["localhost"], Purpose::Server, Validity::Current);
        let config = server_config(&leaf, &[&rustls::version::TLS13], None);
        let (release, hold) = mpsc::channel::<()>();
        let (addr, server) = serve(config, move |server| {
            let mut connect = [0; 4];
            server.read_exact(&mut connect).expect("server read");
            let _ = hold.recv_timeout(PATIENCE);
        });
        let files = Files::new();
        let mut stack = stack(&files, &ca, "localhost");
        let mut socket = connected(&mut stack, addr);
        send_all(&mut stack, &mut socket, &CONNECT);
        // Kernel buffers on loopback hold a few MiB at most; 64 MiB is a generous bound.
        let chunk = [0x30; 16 * 1024];
        let mut blocked = false;
        for _ in 0..4096 {
            match stack.send(&mut socket, &chunk) {
                Ok(n) => assert!(n > 0),
                Err(nb::Error::WouldBlock) => {
                    blocked = true;
                    break;
                }
                Err(nb::Error::Other(e)) => panic!("send: {e}"),
            }
        }
        assert!(blocked, "64 MiB were accepted by a peer that does not read");
        assert!(socket.wants_write());
        let _ = release.send(());
        server.join().expect("server");
        stack.close(socket).expect("close");
    }

    #[test]
    fn unconnected_socket_cannot_send_or_receive() {
        let files = Files::new();
        let mut stack = stack(&files, &Ca::new("test CA"), "localhost");
        let mut socket = stack.socket().expect("socket");
        assert!(socket.fd().is_none());
        assert!(!socket.has_buffered_input() && !socket.wants_write());
        let e = match stack.send(&mut socket, b"x") {
            Err(nb::Error::Other(e)) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(e.to_string(), "send: TLS socket is not connected");
        assert_eq!(e.kind(), TcpErrorKind::PipeClosed);
        assert!(matches!(
            stack.receive(&mut socket, &mut [0; 4]),
            Err(nb::Error::Other(TlsError::NotConnected { op: "receive" }))
        ));
        stack.close(socket).expect("close");
    }

    #[test]
    fn refused_tcp_connect_names_the_address() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let files = Files::new();
        let mut stack = stack(&files, &Ca::new("test CA"), "localhost");
        let (_, e) = failure(&mut stack, addr);
        assert!(
            e.to_string().starts_with(&format!("connect to {addr}: ")),
            "{e}"
        );
        assert!(
            matches!(&e, TlsError::Io(io) if io.op() == "connect"),
            "{e:?}"
        );
    }
}
