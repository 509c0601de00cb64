//! The adapter against a real smoltcp peer: two interfaces joined by an in-memory Ethernet
//! wire, the "broker" side a plain smoltcp socket the test drives, time moved by hand.
#![allow(clippy::unwrap_used)]

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::vec::Vec;

use embedded_nal::{nb, TcpClientStack};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{EthernetAddress, IpCidr, Ipv4Address};
use smoltcp_nal::NetworkError;

use crate::{Millis, SmolStack, LINGER_MS};

const PORT: u16 = 1883;

std::thread_local! {
    /// Milliseconds on this test's clock; each test runs on its own thread.
    static NOW: Cell<u32> = const { Cell::new(0) };
}

fn now() -> u32 {
    NOW.with(Cell::get)
}

fn advance(ms: u32) {
    NOW.with(|t| t.set(t.get().wrapping_add(ms)));
}

fn clock() -> Millis {
    Millis::new(now)
}

type Queue = Rc<RefCell<VecDeque<Vec<u8>>>>;

/// One end of an Ethernet cable.
struct Port {
    rx: Queue,
    tx: Queue,
}

fn wire() -> (Port, Port) {
    let (a, b) = (Queue::default(), Queue::default());
    (
        Port {
            rx: a.clone(),
            tx: b.clone(),
        },
        Port { rx: b, tx: a },
    )
}

struct Rx(Vec<u8>);
struct Tx(Queue);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let r = f(&mut frame);
        self.0.borrow_mut().push_back(frame);
        r
    }
}

impl phy::Device for Port {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;

    fn receive(&mut self, _: SmolInstant) -> Option<(Rx, Tx)> {
        let frame = self.rx.borrow_mut().pop_front()?;
        Some((Rx(frame), Tx(self.tx.clone())))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<Tx> {
        Some(Tx(self.tx.clone()))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

fn interface(device: &mut Port, last_octet: u8) -> Interface {
    let mac = EthernetAddress([0x02, 0, 0, 0, 0, last_octet]);
    let mut iface = Interface::new(Config::new(mac.into()), device, SmolInstant::from_millis(0));
    iface.update_ip_addrs(|addrs| {
        addrs
            .push(IpCidr::new(
                Ipv4Address::new(10, 0, 0, last_octet).into(),
                24,
            ))
            .unwrap();
    });
    iface
}

fn leak<T>(value: T) -> &'static mut T {
    Box::leak(Box::new(value))
}

fn tcp_socket(rx: usize, tx: usize) -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(leak(vec![0u8; rx]).as_mut_slice()),
        tcp::SocketBuffer::new(leak(vec![0u8; tx]).as_mut_slice()),
    )
}

/// The broker's side: an interface with one listening socket; what arrives is collected in
/// `received`, and the socket listens again once a connection is over.
struct Peer {
    iface: Interface,
    device: Port,
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    received: Vec<u8>,
    /// Connections that ended.
    ended: u32,
    /// Close our side as soon as the client's FIN arrives.
    close_on_fin: bool,
}

impl Peer {
    fn new(mut device: Port) -> Peer {
        let iface = interface(&mut device, 1);
        let mut sockets = SocketSet::new(leak([SocketStorage::EMPTY; 1]).as_mut_slice());
        let mut socket = tcp_socket(4096, 4096);
        socket.listen(PORT).unwrap();
        let handle = sockets.add(socket);
        Peer {
            iface,
            device,
            sockets,
            handle,
            received: Vec::new(),
            ended: 0,
            close_on_fin: true,
        }
    }

    fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut(self.handle)
    }

    fn poll(&mut self) {
        let now = SmolInstant::from_millis(i64::from(now()));
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        let mut buf = [0u8; 512];
        let socket = self.sockets.get_mut::<tcp::Socket>(self.handle);
        while let Ok(n @ 1..) = socket.recv_slice(&mut buf) {
            self.received.extend_from_slice(&buf[..n]);
        }
        match socket.state() {
            tcp::State::CloseWait if self.close_on_fin => socket.close(),
            tcp::State::Closed | tcp::State::TimeWait => {
                socket.abort();
                socket.listen(PORT).unwrap();
                self.ended += 1;
            }
            _ => {}
        }
    }
}

type Stack = SmolStack<'static, Port, Millis>;

fn client(device: Port, sockets: usize, tx: usize) -> Stack {
    let mut device = device;
    let iface = interface(&mut device, 2);
    let storage = leak(
        (0..sockets)
            .map(|_| SocketStorage::EMPTY)
            .collect::<Vec<_>>(),
    );
    let mut set = SocketSet::new(storage.as_mut_slice());
    for _ in 0..sockets {
        set.add(tcp_socket(1024, tx));
    }
    SmolStack::new(iface, device, set, clock())
}

/// Runs both sides for `ms` milliseconds of simulated time.
fn pump(stack: &mut Stack, peer: &mut Peer, ms: u32) {
    for _ in 0..ms {
        advance(1);
        stack.poll().unwrap();
        peer.poll();
        stack.poll().unwrap();
    }
}

fn broker() -> core::net::SocketAddr {
    core::net::SocketAddr::from(([10, 0, 0, 1], PORT))
}

fn connected(tx: usize, sockets: usize) -> (Stack, Peer, SocketHandle) {
    let (a, b) = wire();
    let mut stack = client(a, sockets, tx);
    let mut peer = Peer::new(b);
    let mut socket = stack.socket().unwrap();
    for _ in 0..100 {
        match stack.connect(&mut socket, broker()) {
            Ok(()) => {
                // Let the peer see the handshake's last ACK too.
                pump(&mut stack, &mut peer, 2);
                return (stack, peer, socket);
            }
            Err(nb::Error::WouldBlock) => pump(&mut stack, &mut peer, 1),
            Err(nb::Error::Other(e)) => panic!("connect failed: {e:?}"),
        }
    }
    panic!("no connection within 100 ms");
}

#[test]
fn nothing_received_yet_is_would_block_never_end_of_stream() {
    let (mut stack, mut peer, mut socket) = connected(1024, 1);
    pump(&mut stack, &mut peer, 5);
    let mut buf = [0u8; 16];
    // smoltcp-nal itself says Ok(0) here, which embedded-nal readers take for EOF.
    assert_eq!(
        stack.network_mut().receive(&mut socket, &mut buf).ok(),
        Some(0)
    );
    assert!(matches!(
        stack.receive(&mut socket, &mut buf),
        Err(nb::Error::WouldBlock)
    ));
}

#[test]
fn bytes_then_the_peers_fin_read_as_bytes_then_end_of_stream() {
    let (mut stack, mut peer, mut socket) = connected(1024, 1);
    peer.socket().send_slice(b"\x20\x03\x00\x00\x00").unwrap();
    peer.socket().close();
    pump(&mut stack, &mut peer, 5);
    let mut buf = [0u8; 16];
    assert_eq!(stack.receive(&mut socket, &mut buf).ok(), Some(5));
    assert_eq!(&buf[..5], b"\x20\x03\x00\x00\x00");
    for _ in 0..3 {
        assert_eq!(stack.receive(&mut socket, &mut buf).ok(), Some(0), "EOF");
    }
}

#[test]
fn a_full_transmit_buffer_is_would_block() {
    let (mut stack, _peer, mut socket) = connected(64, 1);
    assert_eq!(stack.send(&mut socket, &[0x30; 100]).ok(), Some(64));
    assert!(matches!(
        stack.send(&mut socket, &[0x30; 10]),
        Err(nb::Error::WouldBlock)
    ));
}

#[test]
fn a_reset_connection_is_a_closed_pipe() {
    let (mut stack, mut peer, mut socket) = connected(1024, 1);
    peer.socket().abort();
    pump(&mut stack, &mut peer, 5);
    let mut buf = [0u8; 16];
    match stack.receive(&mut socket, &mut buf) {
        Err(nb::Error::Other(e)) => assert_eq!(
            embedded_nal::TcpError::kind(&e),
            embedded_nal::TcpErrorKind::PipeClosed
        ),
        other => panic!("expected a closed pipe, got {other:?}"),
    }
}

#[test]
fn a_closed_socket_settles_once_the_peer_closes_and_its_handle_is_reused() {
    let (a, b) = wire();
    let mut stack = client(a, 1, 1024);
    let mut peer = Peer::new(b);
    // Far more connections than smoltcp-nal's pool holds; one socket in the set.
    for round in 0..40u32 {
        let mut socket = stack
            .socket()
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        let mut up = false;
        for _ in 0..100 {
            match stack.connect(&mut socket, broker()) {
                Ok(()) => {
                    up = true;
                    break;
                }
                Err(nb::Error::WouldBlock) => pump(&mut stack, &mut peer, 1),
                Err(nb::Error::Other(e)) => panic!("round {round}: {e:?}"),
            }
        }
        assert!(up, "round {round}: no connection");
        assert_eq!(stack.send(&mut socket, &[0xe0, 0x00]).ok(), Some(2));
        stack.close(socket).unwrap();
        assert!(!stack.is_settled(), "round {round}: FIN not even sent yet");
        for _ in 0..100 {
            if stack.is_settled() {
                break;
            }
            pump(&mut stack, &mut peer, 1);
        }
        assert!(
            stack.is_settled(),
            "round {round}: handshake never finished"
        );
        let received = core::mem::take(&mut peer.received);
        assert_eq!(received, [0xe0, 0x00], "round {round}: DISCONNECT");
        pump(&mut stack, &mut peer, 2);
    }
    let stats = stack.stats();
    assert_eq!(
        (
            stats.pool,
            stats.in_use,
            stats.closing,
            stats.opened,
            stats.closed
        ),
        (1, 0, 0, 40, 40)
    );
    assert_eq!((stats.settled, stats.lingered), (40, 0));
    assert_eq!(peer.ended, 40, "every connection ended at the broker");
}

#[test]
fn why_the_wait_matters_reusing_a_handle_at_once_drops_the_unsent_disconnect() {
    let (mut stack, mut peer, mut socket) = connected(1024, 2);
    assert_eq!(stack.send(&mut socket, &[0xe0, 0x00]).ok(), Some(2));
    stack.close(socket).unwrap();
    // smoltcp-nal's pool is last-in, first-out: the same handle comes back, aborted.
    let again = stack.socket().unwrap();
    assert_eq!(again, socket);
    pump(&mut stack, &mut peer, 50);
    assert!(peer.received.is_empty(), "{:?}", peer.received);
    assert_eq!(stack.stats().lingered, 1, "counted as given up");
}

#[test]
fn a_peer_that_never_closes_is_given_up_after_the_linger_time() {
    let (mut stack, mut peer, socket) = connected(1024, 1);
    peer.close_on_fin = false;
    stack.close(socket).unwrap();
    pump(&mut stack, &mut peer, LINGER_MS - 10);
    assert!(!stack.is_settled());
    pump(&mut stack, &mut peer, 20);
    assert!(stack.is_settled());
    assert_eq!((stack.stats().settled, stack.stats().lingered), (0, 1));
}

#[test]
fn closing_a_handle_twice_is_refused_instead_of_overflowing_the_pool() {
    let (mut stack, _peer, socket) = connected(1024, 1);
    stack.close(socket).unwrap();
    assert!(matches!(stack.close(socket), Err(NetworkError::NoSocket)));
    assert_eq!(stack.stats().closed, 1);
}

#[test]
fn an_empty_pool_is_an_error() {
    let (a, _b) = wire();
    let mut stack = client(a, 1, 1024);
    let _first = stack.socket().unwrap();
    assert!(matches!(stack.socket(), Err(NetworkError::NoSocket)));
    assert_eq!(stack.stats().in_use, 1);
}

#[test]
fn nagle_is_off_so_small_writes_leave_at_once() {
    let (mut stack, mut peer, mut socket) = connected(1024, 1);
    // Two small writes, no ACK in between: with Nagle the second would wait for one.
    assert_eq!(stack.send(&mut socket, b"ab").ok(), Some(2));
    stack.poll().unwrap();
    assert_eq!(stack.send(&mut socket, b"cd").ok(), Some(2));
    stack.poll().unwrap();
    let frames = peer.device.rx.borrow().len();
    assert!(frames >= 2, "{frames} frame(s) on the wire");
    peer.poll();
    assert_eq!(peer.received, b"abcd");
}

mod with_the_core {
    //! The whole core on the adapter, against a scripted MQTT v5 broker on the peer side.

    use super::*;
    use crate::{run, Note, Outcome, Platform};
    use satmqtt::{Auth, Buffers, Driver, Event, Token, TokenSource};

    /// Parses what the client sent and answers like a broker: CONNACK, PUBACK, PINGRESP, and
    /// AUTH 0x00 to a re-authentication with the token handed out last; DISCONNECT is recorded
    /// and the connection closed after it.
    struct Broker {
        peer: Peer,
        inbox: Vec<u8>,
        tokens: Rc<RefCell<Tokens>>,
        connects: u32,
        refused: u32,
        reauths: u32,
        disconnects: u32,
        payloads: Vec<String>,
    }

    const AUTH_OK: [u8; 14] = [
        0xf0, 0x0c, 0x00, 0x0a, 0x15, 0x00, 0x07, b'K', b'8', b'S', b'-', b'S', b'A', b'T',
    ];

    impl Broker {
        fn serve(&mut self) {
            self.peer.poll();
            let data = core::mem::take(&mut self.peer.received);
            self.inbox.extend(data);
            while let Some((first, body, len)) = packet(&self.inbox) {
                let expected = self.tokens.borrow().handed_out.clone();
                let reply: Vec<u8> = match first >> 4 {
                    1 => {
                        if contains(&body, expected.as_bytes()) {
                            self.connects += 1;
                            vec![0x20, 0x03, 0x00, 0x00, 0x00]
                        } else {
                            self.refused += 1;
                            vec![0x20, 0x03, 0x00, 0x87, 0x00]
                        }
                    }
                    3 => {
                        let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                        let id = &body[2 + topic_len..4 + topic_len];
                        // Skip the properties length byte (none are sent).
                        let payload = &body[5 + topic_len..];
                        self.payloads
                            .push(String::from_utf8_lossy(payload).into_owned());
                        vec![0x40, 0x02, id[0], id[1]]
                    }
                    12 => vec![0xd0, 0x00],
                    14 => {
                        self.disconnects += 1;
                        Vec::new()
                    }
                    15 => {
                        assert_eq!(body[0], 0x19, "AUTH reason");
                        assert!(contains(&body, b"K8S-SAT"), "AUTH method");
                        assert!(contains(&body, expected.as_bytes()), "AUTH data");
                        self.reauths += 1;
                        AUTH_OK.to_vec()
                    }
                    other => panic!("unexpected packet type {other}"),
                };
                self.inbox.drain(..len);
                if !reply.is_empty() {
                    // After the client's FIN nothing can be sent, and nothing needs to be.
                    let _ = self.peer.socket().send_slice(&reply);
                }
                if reply.starts_with(&[0x20, 0x03, 0x00, 0x87]) {
                    self.peer.socket().close();
                }
            }
            self.peer.poll();
        }
    }

    /// (first byte, body, total length) of the first complete packet in `bytes`.
    fn packet(bytes: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
        let (&first, rest) = bytes.split_first()?;
        let (mut len, mut shift, mut used) = (0usize, 0, 0);
        loop {
            let b = *rest.get(used)?;
            used += 1;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let body = rest.get(used..used + len)?;
        Some((first, body.to_vec(), 1 + used + len))
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// The firmware's token store: a new token is provisioned by the board; the broker accepts
    /// the one the driver loaded last, and no other.
    #[derive(Default)]
    struct Tokens {
        current: String,
        handed_out: String,
        changed: bool,
        rotations: u32,
    }

    struct Source(Rc<RefCell<Tokens>>);

    impl TokenSource for Source {
        type Error = core::convert::Infallible;

        fn load(&mut self, buf: &mut [u8]) -> Result<Token, Self::Error> {
            let mut t = self.0.borrow_mut();
            t.handed_out = t.current.clone();
            buf[..t.current.len()].copy_from_slice(t.current.as_bytes());
            Ok(Token {
                len: t.current.len(),
                exp: None,
            })
        }

        fn changed(&mut self) -> bool {
            core::mem::take(&mut self.0.borrow_mut().changed)
        }
    }

    /// Provisions a new token every `rotate_every` acknowledged messages.
    struct Board {
        broker: Broker,
        tokens: Rc<RefCell<Tokens>>,
        rotate_every: u64,
        next_rotation: u64,
        acked: u64,
        sockets_returned: Vec<crate::SocketStats>,
        events: Vec<Event>,
    }

    impl Board {
        fn rotate(&mut self) {
            let mut t = self.tokens.borrow_mut();
            t.rotations += 1;
            t.current = format!("token-{}", t.rotations);
            t.changed = true;
        }
    }

    impl Platform for Board {
        fn wait(&mut self, ms: u32) {
            advance(ms.max(1));
            self.broker.serve();
        }

        fn note(&mut self, note: Note) {
            match note {
                Note::Event(event @ (Event::Connected { .. } | Event::Reauthenticated { .. })) => {
                    self.next_rotation = self.acked + self.rotate_every;
                    self.events.push(event);
                }
                Note::Event(event @ Event::Acked { through }) => {
                    self.acked = through + 1;
                    if self.acked >= self.next_rotation {
                        self.next_rotation = u64::MAX;
                        self.rotate();
                    }
                    self.events.push(event);
                }
                Note::Event(event) => self.events.push(event),
                Note::SocketReturned { stats, .. } => self.sockets_returned.push(stats),
                Note::ClockError => panic!("the test clock cannot fail"),
            }
        }
    }

    /// Runs 500 messages at QoS 1 with a rotation every 10 acknowledgements.
    fn rotating_run(auth: Auth) -> (Outcome, Board) {
        let (a, b) = wire();
        let stack = client(a, 1, 2048);
        let tokens = Rc::new(RefCell::new(Tokens {
            current: "token-0".into(),
            ..Tokens::default()
        }));
        let mut board = Board {
            broker: Broker {
                peer: Peer::new(b),
                inbox: Vec::new(),
                tokens: Rc::clone(&tokens),
                connects: 0,
                refused: 0,
                reauths: 0,
                disconnects: 0,
                payloads: Vec::new(),
            },
            tokens: Rc::clone(&tokens),
            rotate_every: 10,
            next_rotation: u64::MAX,
            acked: 0,
            sockets_returned: Vec::new(),
            events: Vec::new(),
        };
        let mut config = satmqtt::Config::new(broker());
        config.interval_ms = 0;
        config.count = 500;
        config.auth = auth;
        // A small window, so acknowledgements come often and rotations land mid-stream.
        config.window_cap = 10;
        let (mut rx, mut tx, mut token) = (
            [0u8; satmqtt::RX_MIN],
            vec![0u8; satmqtt::tx_len(64, 8, 11, 13)],
            [0u8; 64],
        );
        let buffers = Buffers {
            rx: &mut rx,
            tx: &mut tx,
            token: &mut token,
        };
        let mut driver = Driver::new(
            &config,
            stack,
            clock(),
            Source(Rc::clone(&tokens)),
            buffers,
            7,
        )
        .unwrap();
        let outcome = run(&mut driver, &mut board).unwrap();
        (outcome, board)
    }

    fn assert_all_published(outcome: Outcome, board: &Board) {
        let Outcome::Finished(progress) = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!((progress.acked_next, progress.duplicates), (500, 0));
        let want: Vec<String> = (0..500).map(|n| format!("samplepayload{n}")).collect();
        assert_eq!(board.broker.payloads, want, "contiguous, no duplicates");
        assert!(
            board
                .events
                .iter()
                .any(|e| matches!(e, Event::Finished { .. })),
            "{:?}",
            board.events
        );
    }

    fn changes(board: &Board) -> usize {
        board
            .events
            .iter()
            .filter(|e| matches!(e, Event::TokenChanged { .. }))
            .count()
    }

    #[test]
    fn sat_rotations_reconnect_return_every_socket_and_publishing_goes_on() {
        let (outcome, board) = rotating_run(Auth::Sat);
        assert_all_published(outcome, &board);
        let rotations = board.tokens.borrow().rotations;
        assert!(rotations >= 20, "{rotations} rotations");
        // Every token change mid-connection starts a new one (the last one may coincide with
        // the end of the job).
        let sessions = board.broker.connects;
        assert!(
            sessions == rotations + 1 || sessions == rotations,
            "{sessions} connections for {rotations} rotations"
        );
        assert_eq!((board.broker.refused, board.broker.reauths), (0, 0));
        let changes = changes(&board) as u32;
        assert!(
            changes + 1 >= sessions && changes <= rotations,
            "{changes} TokenChanged for {rotations} rotations, {sessions} connections"
        );
        assert_eq!(
            board.broker.disconnects, sessions,
            "DISCONNECT on every end"
        );
        assert_eq!(board.sockets_returned.len(), sessions as usize);
        for (i, stats) in board.sockets_returned.iter().enumerate() {
            assert_eq!(
                (stats.in_use, stats.closing, stats.lingered),
                (0, 0, 0),
                "after connection {i}: {stats:?}"
            );
            assert_eq!(stats.closed, i as u32 + 1);
        }
    }

    #[test]
    fn k8s_sat_rotations_reauthenticate_on_one_connection() {
        let (outcome, board) = rotating_run(Auth::K8sSat);
        assert_all_published(outcome, &board);
        let rotations = board.tokens.borrow().rotations;
        assert!(rotations >= 20, "{rotations} rotations");
        assert_eq!(board.broker.connects, 1, "one connection");
        assert_eq!(board.broker.refused, 0);
        // The last rotation may coincide with the end of the job.
        let reauths = board.broker.reauths;
        assert!(
            reauths == rotations || reauths + 1 == rotations,
            "{reauths} AUTH for {rotations} rotations"
        );
        let accepted = board
            .events
            .iter()
            .filter(|e| matches!(e, Event::Reauthenticated { .. }))
            .count();
        // The answer to the last one may come after the last acknowledgement ended the job.
        assert!(
            accepted == reauths as usize || accepted + 1 == reauths as usize,
            "{accepted} accepted of {reauths}"
        );
        assert_eq!(
            changes(&board),
            reauths as usize,
            "one TokenChanged per AUTH"
        );
        assert_eq!(board.broker.disconnects, 1);
        assert_eq!(board.sockets_returned.len(), 1);
        let stats = board.sockets_returned[0];
        assert_eq!(
            (stats.in_use, stats.closing, stats.lingered, stats.closed),
            (0, 0, 0, 1)
        );
    }
}
