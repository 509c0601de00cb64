//! A scripted `TcpClientStack` and a hand-turned clock for host tests.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::vec::Vec;

use embedded_nal::{nb, TcpClientStack, TcpError, TcpErrorKind};
use embedded_time::{fraction::Fraction, Clock, Instant};

/// One scripted answer to `receive`.
pub enum Rx {
    Bytes(Vec<u8>),
    Eof,
    Error(TcpErrorKind),
}

/// Everything the mock broker side records and replays.
#[derive(Default)]
pub struct Wire {
    pub written: Vec<u8>,
    pub rx: VecDeque<Rx>,
    pub sockets: u32,
    pub connects: u32,
    pub closes: u32,
    /// Calls to `receive`.
    pub receives: u32,
    /// Largest chunk one `send` accepts.
    pub send_limit: Option<usize>,
    /// `send` answers WouldBlock this many more times.
    pub send_blocked: u32,
    /// `send` fails with this kind.
    pub send_error: Option<TcpErrorKind>,
}

impl Wire {
    pub fn push(&mut self, bytes: &[u8]) {
        self.rx.push_back(Rx::Bytes(bytes.to_vec()));
    }

    /// Takes what was written since the last call.
    pub fn take_written(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.written)
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
pub struct MockStack(pub Rc<RefCell<Wire>>);

impl TcpClientStack for MockStack {
    type TcpSocket = u32;
    type Error = MockError;

    fn socket(&mut self) -> Result<u32, MockError> {
        let mut w = self.0.borrow_mut();
        w.sockets += 1;
        Ok(w.sockets)
    }

    fn connect(&mut self, _: &mut u32, _: core::net::SocketAddr) -> nb::Result<(), MockError> {
        self.0.borrow_mut().connects += 1;
        Ok(())
    }

    fn send(&mut self, _: &mut u32, buffer: &[u8]) -> nb::Result<usize, MockError> {
        let mut w = self.0.borrow_mut();
        if let Some(kind) = w.send_error {
            return Err(nb::Error::Other(MockError(kind)));
        }
        if w.send_blocked > 0 {
            w.send_blocked -= 1;
            return Err(nb::Error::WouldBlock);
        }
        let n = buffer.len().min(w.send_limit.unwrap_or(usize::MAX));
        w.written.extend_from_slice(&buffer[..n]);
        Ok(n)
    }

    fn receive(&mut self, _: &mut u32, buffer: &mut [u8]) -> nb::Result<usize, MockError> {
        let mut w = self.0.borrow_mut();
        w.receives += 1;
        match w.rx.front_mut() {
            None => Err(nb::Error::WouldBlock),
            Some(Rx::Eof) => Ok(0),
            Some(Rx::Error(kind)) => {
                let kind = *kind;
                w.rx.pop_front();
                Err(nb::Error::Other(MockError(kind)))
            }
            Some(Rx::Bytes(bytes)) => {
                let n = bytes.len().min(buffer.len());
                buffer[..n].copy_from_slice(&bytes[..n]);
                bytes.drain(..n);
                if bytes.is_empty() {
                    w.rx.pop_front();
                }
                Ok(n)
            }
        }
    }

    fn close(&mut self, _: u32) -> Result<(), MockError> {
        self.0.borrow_mut().closes += 1;
        Ok(())
    }
}

/// Milliseconds that only move when a test says so.
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
