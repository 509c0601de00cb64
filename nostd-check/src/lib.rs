//! A `#![no_std]` artifact over the satmqtt core. It defines its own `#[panic_handler]`, so if
//! anything in the dependency tree linked `std` the build would fail with a duplicate
//! `panic_impl` lang item; `cargo xtask nostd` also checks the archive for allocator symbols.
#![no_std]
#![deny(unsafe_code)]

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::sync::atomic::{AtomicU32, Ordering};

use embedded_nal::{nb, TcpClientStack, TcpErrorKind};
use embedded_time::{fraction::Fraction, Clock, Instant};
use satmqtt::{Config, Publisher, Status};

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

/// Milliseconds, as an MCU timer interrupt would count them (32-bit ticks, as smoltcp-nal needs).
static TICKS: AtomicU32 = AtomicU32::new(0);

/// A clock reading [`TICKS`].
pub struct TickClock;

impl Clock for TickClock {
    type T = u32;
    const SCALING_FACTOR: Fraction = Fraction::new(1, 1_000);

    fn try_now(&self) -> Result<Instant<Self>, embedded_time::clock::Error> {
        Ok(Instant::new(TICKS.load(Ordering::Relaxed)))
    }
}

/// A stack with no network: every call is refused. It stands in for a real driver so the
/// whole core is instantiated and linked.
pub struct NoNetwork;

/// The only error [`NoNetwork`] gives.
#[derive(Debug)]
pub struct Unplugged;

impl embedded_nal::TcpError for Unplugged {
    fn kind(&self) -> TcpErrorKind {
        TcpErrorKind::Other
    }
}

impl TcpClientStack for NoNetwork {
    type TcpSocket = ();
    type Error = Unplugged;

    fn socket(&mut self) -> Result<(), Unplugged> {
        Ok(())
    }
    fn connect(&mut self, _: &mut (), _: SocketAddr) -> nb::Result<(), Unplugged> {
        Err(nb::Error::WouldBlock)
    }
    fn send(&mut self, _: &mut (), _: &[u8]) -> nb::Result<usize, Unplugged> {
        Err(nb::Error::Other(Unplugged))
    }
    fn receive(&mut self, _: &mut (), _: &mut [u8]) -> nb::Result<usize, Unplugged> {
        Err(nb::Error::WouldBlock)
    }
    fn close(&mut self, _: ()) -> Result<(), Unplugged> {
        Ok(())
    }
}

/// Runs a publisher for `polls` steps on a static-sized buffer; returns messages sent.
// `no_mangle` counts as unsafe (symbol clashes); one exported, uniquely named entry point is
// what keeps the linked core in the archive.
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn satmqtt_nostd_publish(polls: u32) -> u64 {
    let broker = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 1883);
    let Ok(mut publisher) = Publisher::new(NoNetwork, TickClock, Config::new(broker), 1) else {
        return 0;
    };
    let mut buffer = [0u8; 2048];
    if let Ok(mut session) = publisher.session(&mut buffer, "token") {
        for _ in 0..polls {
            TICKS.fetch_add(1, Ordering::Relaxed);
            if let Status::Ended(_) = session.poll(&mut |_| ()) {
                break;
            }
        }
    }
    publisher.progress().sent
}
