//! Static RAM of the core and of the smoltcp adapter: `core::mem::size_of` of every piece of
//! state, and the buffers the caller provides. Run by `cargo xtask size`, which turns the
//! tab-separated lines (`key`, bytes, what it is) into docs/footprint.md.
//!
//! Sizes are for the target this runs on (x86_64: 8-byte pointers and `usize`); a 32-bit MCU
//! has smaller ones wherever a pointer, a slice or a `usize` is stored.

use core::mem::size_of;
use core::net::{Ipv4Addr, SocketAddr};

use embedded_nal::{nb, TcpClientStack, TcpErrorKind};
use embedded_time::{clock, fraction::Fraction, Clock, Instant};
use satmqtt::{Config, Connection, Driver, Event, TokenSource, RX_MIN};
use satmqtt_smoltcp::smoltcp::iface::{Interface, SocketStorage};
use satmqtt_smoltcp::smoltcp::phy::{self, DeviceCapabilities, Medium};
use satmqtt_smoltcp::smoltcp::socket::tcp;
use satmqtt_smoltcp::smoltcp_nal::NetworkStack;
use satmqtt_smoltcp::{Millis, SmolStack};

/// A stack that holds nothing, so the core's own state is measured alone.
struct NoStack;

#[derive(Debug)]
struct Unplugged;

impl embedded_nal::TcpError for Unplugged {
    fn kind(&self) -> TcpErrorKind {
        TcpErrorKind::Other
    }
}

impl TcpClientStack for NoStack {
    type TcpSocket = ();
    type Error = Unplugged;

    fn socket(&mut self) -> Result<(), Unplugged> {
        Ok(())
    }
    fn connect(&mut self, _: &mut (), _: SocketAddr) -> nb::Result<(), Unplugged> {
        Err(nb::Error::WouldBlock)
    }
    fn send(&mut self, _: &mut (), _: &[u8]) -> nb::Result<usize, Unplugged> {
        Err(nb::Error::WouldBlock)
    }
    fn receive(&mut self, _: &mut (), _: &mut [u8]) -> nb::Result<usize, Unplugged> {
        Err(nb::Error::WouldBlock)
    }
    fn close(&mut self, _: ()) -> Result<(), Unplugged> {
        Ok(())
    }
}

/// A clock that holds nothing.
struct NoClock;

impl Clock for NoClock {
    type T = u32;
    const SCALING_FACTOR: Fraction = Fraction::new(1, 1_000);

    fn try_now(&self) -> Result<Instant<Self>, clock::Error> {
        Ok(Instant::new(0))
    }
}

/// A token source that holds nothing (the token lives in the caller's buffer).
struct NoTokens;

impl TokenSource for NoTokens {
    type Error = Unplugged;

    fn load(&mut self, _: &mut [u8]) -> Result<satmqtt::Token, Unplugged> {
        Err(Unplugged)
    }
}

impl core::fmt::Display for Unplugged {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("unplugged")
    }
}

/// A device that holds nothing (a real MAC driver adds its own descriptors and buffers).
struct NoDevice;

struct Token;

impl phy::RxToken for Token {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&[])
    }
}

impl phy::TxToken for Token {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, _: usize, f: F) -> R {
        f(&mut [])
    }
}

impl phy::Device for NoDevice {
    type RxToken<'a> = Token;
    type TxToken<'a> = Token;

    fn receive(&mut self, _: satmqtt_smoltcp::smoltcp::time::Instant) -> Option<(Token, Token)> {
        None
    }

    fn transmit(&mut self, _: satmqtt_smoltcp::smoltcp::time::Instant) -> Option<Token> {
        None
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps
    }
}

type Smol = SmolStack<'static, NoDevice, Millis>;

fn row(key: &str, bytes: usize, what: &str) {
    println!("{key}\t{bytes}\t{what}");
}

fn main() {
    row(
        "core.driver",
        size_of::<Driver<'static, 'static, NoStack, NoClock, NoTokens>>(),
        "Driver: counters, schedule, backoff, token bookkeeping, event queue, buffer slices, and \
         the live connection (below) — lives as long as the job",
    );
    row(
        "core.connection",
        size_of::<Connection<'static>>(),
        "  of which the Connection: one MQTT connection's state machine, QoS 1 window as two \
         counters",
    );
    row(
        "core.event",
        size_of::<Event>(),
        "  one queued Event (the driver queues 8, a connection 4): a broker reason string or \
         assigned client id is kept inline, bounded",
    );

    row(
        "smoltcp.stack",
        size_of::<Smol>(),
        "SmolStack: smoltcp-nal's NetworkStack plus handle and closing bookkeeping",
    );
    row(
        "smoltcp.nal",
        size_of::<NetworkStack<'static, NoDevice, Millis>>(),
        "  of which smoltcp-nal's NetworkStack (interface, socket set handle, DNS table, handle pools)",
    );
    row(
        "smoltcp.interface",
        size_of::<Interface>(),
        "    of which smoltcp's Interface (addresses, routes, neighbor cache)",
    );
    row(
        "smoltcp.driver",
        size_of::<Driver<'static, 'static, Smol, Millis, NoTokens>>(),
        "Driver on SmolStack (the stack lives inside the driver)",
    );
    row(
        "smoltcp.tcp_socket",
        size_of::<tcp::Socket<'static>>(),
        "one smoltcp TCP socket's state (its buffers are extra)",
    );
    row(
        "smoltcp.socket_storage",
        size_of::<SocketStorage<'static>>(),
        "one SocketSet slot",
    );

    let config = Config::new(SocketAddr::from((Ipv4Addr::new(10, 77, 0, 1), 1883)));
    for token in [1024, 1536, 2048] {
        let tx = satmqtt::tx_len(
            token,
            config.client_id.len(),
            config.topic.len(),
            config.payload_prefix.len(),
        );
        row(
            &format!("buffer.{token}"),
            RX_MIN + tx + token,
            &format!(
                "Buffers for a {token}-byte token and the sample job: rx {RX_MIN} (satmqtt::RX_MIN), \
                 tx {tx} (satmqtt::tx_len: a CONNECT with the token, or an AUTH beside a few \
                 PUBLISHes), token {token}"
            ),
        );
    }
}
