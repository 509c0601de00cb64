//! A scripted `TcpClientStack`, a hand-turned clock and a token source for driver tests.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::vec::Vec;

use embedded_nal::{nb, TcpClientStack, TcpError, TcpErrorKind};
use embedded_time::{fraction::Fraction, Clock, Instant};

use crate::driver::{Token, TokenSource};

/// One scripted answer to `receive`.
#[derive(Debug, Clone)]
pub enum Rx {
    Bytes(Vec<u8>),
    Eof,
}

/// What the mock network saw and will answer; shared with the test through an `Rc`.
#[derive(Default)]
pub struct Net {
    /// Bytes written, one stream per socket (index = socket id - 1).
    pub streams: Vec<Vec<u8>>,
    /// Broker bytes for the current socket, one chunk per `receive`.
    pub rx: VecDeque<Rx>,
    pub sockets: u32,
    pub connects: u32,
    pub closes: u32,
    /// Sockets closed, in order (each must appear once).
    pub closed: Vec<u32>,
    pub receives: u32,
    pub sends: u32,
    /// Bytes each `send` takes, in turn (0 = WouldBlock); `send_default` when empty.
    pub send_caps: VecDeque<usize>,
    /// Bytes a `send` takes when no scripted capacity is left; `None` takes everything.
    pub send_default: Option<usize>,
    /// `connect` answers WouldBlock this many more times.
    pub connect_blocks: u32,
    /// Offsets in the current socket's stream where a `send` stops short, then answers
    /// WouldBlock once.
    pub stall_at: Vec<usize>,
    /// A socket's stream never grows past this offset (a peer that stopped reading).
    pub wall: Option<(u32, usize)>,
    /// Each closed socket's stream length when it was closed.
    pub closed_at_len: Vec<usize>,
}

impl Net {
    pub fn push(&mut self, bytes: &[u8]) {
        self.rx.push_back(Rx::Bytes(bytes.to_vec()));
    }
}

#[derive(Debug)]
pub struct MockError(pub TcpErrorKind);

impl TcpError for MockError {
    fn kind(&self) -> TcpErrorKind {
        self.0
    }
}

#[derive(Clone, Default)]
pub struct MockStack(pub Rc<RefCell<Net>>);

impl TcpClientStack for MockStack {
    type TcpSocket = u32;
    type Error = MockError;

    fn socket(&mut self) -> Result<u32, MockError> {
        let mut n = self.0.borrow_mut();
        n.sockets += 1;
        n.streams.push(Vec::new());
        Ok(n.sockets)
    }

    fn connect(&mut self, _: &mut u32, _: core::net::SocketAddr) -> nb::Result<(), MockError> {
        let mut n = self.0.borrow_mut();
        n.connects += 1;
        if n.connect_blocks > 0 {
            n.connect_blocks -= 1;
            return Err(nb::Error::WouldBlock);
        }
        Ok(())
    }

    fn send(&mut self, s: &mut u32, buffer: &[u8]) -> nb::Result<usize, MockError> {
        let mut n = self.0.borrow_mut();
        n.sends += 1;
        assert!(!n.closed.contains(s), "send on closed socket {s}");
        let cap = match n.send_caps.pop_front() {
            Some(c) => c,
            None => n.send_default.unwrap_or(usize::MAX),
        };
        let written = n.streams[*s as usize - 1].len();
        if let Some(i) = n.stall_at.iter().position(|&p| p == written) {
            n.stall_at.remove(i);
            return Err(nb::Error::WouldBlock);
        }
        let mut cap = cap;
        if let Some(&p) = n.stall_at.iter().filter(|&&p| p > written).min() {
            cap = cap.min(p - written);
        }
        if let Some((socket, at)) = n.wall {
            if socket == *s {
                cap = cap.min(at.saturating_sub(written));
            }
        }
        if cap == 0 {
            return Err(nb::Error::WouldBlock);
        }
        let k = buffer.len().min(cap);
        n.streams[*s as usize - 1].extend_from_slice(&buffer[..k]);
        Ok(k)
    }

    fn receive(&mut self, s: &mut u32, buffer: &mut [u8]) -> nb::Result<usize, MockError> {
        let mut n = self.0.borrow_mut();
        n.receives += 1;
        assert!(!n.closed.contains(s), "receive on closed socket {s}");
        match n.rx.front_mut() {
            None => Err(nb::Error::WouldBlock),
            Some(Rx::Eof) => Ok(0),
            Some(Rx::Bytes(bytes)) => {
                let k = bytes.len().min(buffer.len());
                buffer[..k].copy_from_slice(&bytes[..k]);
                bytes.drain(..k);
                if bytes.is_empty() {
                    n.rx.pop_front();
                }
                Ok(k)
            }
        }
    }

    fn close(&mut self, s: u32) -> Result<(), MockError> {
        let mut n = self.0.borrow_mut();
        assert!(!n.closed.contains(&s), "socket {s} closed twice");
        n.closes += 1;
        n.closed.push(s);
        // What the broker had queued for this connection dies with it.
        n.rx.clear();
        let len = n.streams[s as usize - 1].len();
        n.closed_at_len.push(len);
        Ok(())
    }
}

/// Milliseconds that move only when a test says so.
#[derive(Clone, Default)]
pub struct MockClock(pub Rc<Cell<u64>>);

impl MockClock {
    pub fn advance(&self, ms: u64) {
        self.0.set(self.0.get() + ms);
    }
}

impl Clock for MockClock {
    type T = u64;
    const SCALING_FACTOR: Fraction = Fraction::new(1, 1_000);

    fn try_now(&self) -> Result<Instant<Self>, embedded_time::clock::Error> {
        Ok(Instant::new(self.0.get()))
    }
}

/// The token file, its watcher flag and the wall clock, as a test sets them.
#[derive(Default)]
pub struct TokenState {
    pub token: Vec<u8>,
    pub exp: Option<u64>,
    pub changed: bool,
    pub unix: Option<u64>,
    pub loads: u32,
}

#[derive(Clone, Default)]
pub struct MockTokens(pub Rc<RefCell<TokenState>>);

impl MockTokens {
    pub fn new(token: &[u8]) -> Self {
        let t = MockTokens::default();
        t.0.borrow_mut().token = token.to_vec();
        t
    }

    /// The token in the source expires at `exp`; the wall clock reads `unix` (Unix seconds).
    pub fn times(&self, exp: u64, unix: u64) {
        let mut s = self.0.borrow_mut();
        s.exp = Some(exp);
        s.unix = Some(unix);
    }

    /// A new token appears and the watcher says so.
    pub fn rotate(&self, token: &[u8], exp: Option<u64>) {
        let mut s = self.0.borrow_mut();
        s.token = token.to_vec();
        s.exp = exp;
        s.changed = true;
    }
}

#[derive(Debug)]
pub struct NoToken;

impl core::fmt::Display for NoToken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("no token")
    }
}

impl TokenSource for MockTokens {
    type Error = NoToken;

    fn load(&mut self, buf: &mut [u8]) -> Result<Token, NoToken> {
        let mut s = self.0.borrow_mut();
        s.loads += 1;
        if s.token.is_empty() {
            return Err(NoToken);
        }
        let len = s.token.len();
        buf[..len].copy_from_slice(&s.token);
        Ok(Token { len, exp: s.exp })
    }

    fn changed(&mut self) -> bool {
        core::mem::take(&mut self.0.borrow_mut().changed)
    }

    fn unix_now(&self) -> Option<u64> {
        self.0.borrow().unix
    }
}
