//! A `#![no_std]` artifact over the satmqtt core and its smoltcp adapter. It defines its own
//! `#[panic_handler]`, so if anything in the dependency tree linked `std` the build would fail
//! with a duplicate `panic_impl` lang item; `cargo xtask nostd` also checks the archive for
//! allocator symbols.
//!
//! One entry point per feature: `satmqtt_nostd_publish` runs the core's driver on a stack that
//! refuses everything (the core alone), `satmqtt_nostd_smoltcp` runs it through `satmqtt_smoltcp::run`
//! on a smoltcp interface with a device of our own (smoltcp's `Loopback` needs `alloc`), and
//! `satmqtt_nostd_smoltcp_baseline` (not a default feature) drives the same stack as a plain TCP
//! client without MQTT, the baseline `cargo xtask size` subtracts.
#![no_std]
#![deny(unsafe_code)]

use core::sync::atomic::AtomicU32;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

/// Milliseconds, as an MCU timer interrupt would count them (32-bit ticks, as smoltcp-nal needs).
static TICKS: AtomicU32 = AtomicU32::new(0);

/// Longest token the firmware accepts: sizes the core's buffers at compile time.
#[cfg(any(feature = "no-network", feature = "smoltcp"))]
const MAX_TOKEN: usize = 1536;

/// The core's transmit buffer for the sample job (`sampleid`, `sampletopic`, `samplepayload`).
#[cfg(any(feature = "no-network", feature = "smoltcp"))]
const TX: usize = satmqtt::tx_len(MAX_TOKEN, 8, 11, 13);

/// A token kept in flash: one fixed token, never changed.
#[cfg(any(feature = "no-network", feature = "smoltcp"))]
struct Flash;

#[cfg(any(feature = "no-network", feature = "smoltcp"))]
impl satmqtt::TokenSource for Flash {
    type Error = core::convert::Infallible;

    fn load(&mut self, buf: &mut [u8]) -> Result<satmqtt::Token, Self::Error> {
        const TOKEN: &[u8] = b"token";
        let len = TOKEN.len().min(buf.len());
        buf[..len].copy_from_slice(&TOKEN[..len]);
        Ok(satmqtt::Token { len, exp: None })
    }
}

#[cfg(feature = "no-network")]
mod no_network {
    use core::net::{IpAddr, Ipv4Addr, SocketAddr};
    use core::sync::atomic::Ordering;

    use embedded_nal::{nb, TcpClientStack, TcpErrorKind};
    use embedded_time::{fraction::Fraction, Clock, Instant};
    use satmqtt::{Buffers, Config, Driver, Ready, Status, RX_MIN};

    use super::{Flash, MAX_TOKEN, TICKS, TX};

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

    /// Runs the driver for `polls` steps on buffers sized at compile time; returns messages sent.
    // `no_mangle` counts as unsafe (symbol clashes); one exported, uniquely named entry point is
    // what keeps the linked core in the archive.
    #[allow(unsafe_code)]
    #[no_mangle]
    pub extern "C" fn satmqtt_nostd_publish(polls: u32) -> u64 {
        let broker = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 1883);
        let config = Config::new(broker);
        let (mut rx, mut tx, mut token) = ([0u8; RX_MIN], [0u8; TX], [0u8; MAX_TOKEN]);
        let buffers = Buffers {
            rx: &mut rx,
            tx: &mut tx,
            token: &mut token,
        };
        let Ok(mut driver) = Driver::new(&config, NoNetwork, TickClock, Flash, buffers, 1) else {
            return 0;
        };
        for _ in 0..polls {
            TICKS.fetch_add(1, Ordering::Relaxed);
            let status = driver.poll(Ready::ALL);
            while driver.poll_event().is_some() {}
            if !matches!(status, Ok(Status::Wait { .. })) {
                break;
            }
        }
        driver.progress().sent
    }
}

#[cfg(any(feature = "smoltcp", feature = "smoltcp-baseline"))]
mod on_smoltcp {
    use core::net::{Ipv4Addr, SocketAddr};
    use core::sync::atomic::Ordering;

    #[cfg(feature = "smoltcp")]
    use satmqtt::{Buffers, Config, Driver, RX_MIN};
    use satmqtt_smoltcp::smoltcp::iface::{self, Interface, SocketSet, SocketStorage};
    use satmqtt_smoltcp::smoltcp::phy::{self, DeviceCapabilities, Medium};
    use satmqtt_smoltcp::smoltcp::socket::tcp;
    use satmqtt_smoltcp::smoltcp::time::Instant;
    use satmqtt_smoltcp::smoltcp::wire::{EthernetAddress, IpCidr, Ipv4Address};
    #[cfg(feature = "smoltcp")]
    use satmqtt_smoltcp::{run, Outcome, Platform};

    #[cfg(feature = "smoltcp")]
    use super::{Flash, MAX_TOKEN, TX};
    use satmqtt_smoltcp::{Millis, SmolStack};

    use super::TICKS;

    const MTU: usize = 1514;

    /// An Ethernet device with nothing on the wire: frames sent are dropped, none arrive. It
    /// stands in for an MCU's MAC driver.
    pub struct Unplugged;

    pub struct Rx;
    pub struct Tx;

    impl phy::RxToken for Rx {
        fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
            f(&[])
        }
    }

    impl phy::TxToken for Tx {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
            let mut frame = [0u8; MTU];
            f(&mut frame[..len.min(MTU)])
        }
    }

    impl phy::Device for Unplugged {
        type RxToken<'a> = Rx;
        type TxToken<'a> = Tx;

        fn receive(&mut self, _: Instant) -> Option<(Rx, Tx)> {
            None
        }

        fn transmit(&mut self, _: Instant) -> Option<Tx> {
            Some(Tx)
        }

        fn capabilities(&self) -> DeviceCapabilities {
            let mut caps = DeviceCapabilities::default();
            caps.medium = Medium::Ethernet;
            caps.max_transmission_unit = MTU;
            caps
        }
    }

    fn ticks() -> u32 {
        TICKS.load(Ordering::Relaxed)
    }

    /// Time passes in `wait`; stops after a number of waits.
    #[cfg(feature = "smoltcp")]
    struct Board {
        waits_left: u32,
    }

    #[cfg(feature = "smoltcp")]
    impl Platform for Board {
        fn wait(&mut self, ms: u32) {
            TICKS.fetch_add(ms.max(1), Ordering::Relaxed);
            self.waits_left = self.waits_left.saturating_sub(1);
        }

        fn stop_requested(&mut self) -> bool {
            self.waits_left == 0
        }
    }

    /// A smoltcp interface on the unplugged device with one TCP socket, as firmware builds it.
    fn with_stack<R>(f: impl FnOnce(SmolStack<'_, Unplugged, Millis>) -> R) -> R {
        let mut device = Unplugged;
        let mac = EthernetAddress([0x02, 0, 0, 0, 0, 2]);
        let mut interface =
            Interface::new(iface::Config::new(mac.into()), &mut device, Instant::ZERO);
        interface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(Ipv4Address::new(192, 0, 2, 2).into(), 24));
        });
        let (mut rx, mut tx) = ([0u8; 1024], [0u8; 2048]);
        let mut storage = [SocketStorage::EMPTY; 1];
        let mut sockets = SocketSet::new(&mut storage[..]);
        sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(&mut rx[..]),
            tcp::SocketBuffer::new(&mut tx[..]),
        ));
        f(SmolStack::new(
            interface,
            device,
            sockets,
            Millis::new(ticks),
        ))
    }

    fn broker() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 1883))
    }

    /// Runs the core through `satmqtt_smoltcp::run` on a smoltcp interface for `waits` sleeps;
    /// returns messages sent (none: the device is unplugged).
    #[cfg(feature = "smoltcp")]
    #[allow(unsafe_code)]
    #[no_mangle]
    pub extern "C" fn satmqtt_nostd_smoltcp(waits: u32) -> u64 {
        with_stack(|stack| {
            let config = Config::new(broker());
            let (mut rx, mut tx, mut token) = ([0u8; RX_MIN], [0u8; TX], [0u8; MAX_TOKEN]);
            let buffers = Buffers {
                rx: &mut rx,
                tx: &mut tx,
                token: &mut token,
            };
            let clock = Millis::new(ticks);
            let Ok(mut driver) = Driver::new(&config, stack, clock, Flash, buffers, 1) else {
                return 0;
            };
            match run(&mut driver, &mut Board { waits_left: waits }) {
                Ok(Outcome::Finished(p) | Outcome::Stopped(p)) => p.sent,
                Err(_) => 0,
            }
        })
    }

    /// The same stack as a plain TCP client: connect, write, read, close, `polls` times; returns
    /// bytes read. No MQTT: `cargo xtask size` subtracts this build from the one above.
    #[cfg(feature = "smoltcp-baseline")]
    #[allow(unsafe_code)]
    #[no_mangle]
    pub extern "C" fn satmqtt_nostd_smoltcp_baseline(polls: u32) -> u64 {
        use embedded_nal::{nb, TcpClientStack};
        with_stack(|mut stack| {
            let mut read = 0u64;
            let Ok(mut socket) = stack.socket() else {
                return 0;
            };
            for _ in 0..polls {
                TICKS.fetch_add(1, Ordering::Relaxed);
                let _ = stack.poll();
                if let Err(nb::Error::WouldBlock) = stack.connect(&mut socket, broker()) {
                    continue;
                }
                let _ = stack.send(&mut socket, &[0xc0, 0x00]);
                let mut buf = [0u8; 64];
                match stack.receive(&mut socket, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => read += n as u64,
                    Err(_) => {}
                }
            }
            let _ = stack.close(socket);
            while !stack.is_settled() {
                TICKS.fetch_add(1, Ordering::Relaxed);
                let _ = stack.poll();
            }
            read
        })
    }
}
