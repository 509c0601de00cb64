//! # satmqtt-smoltcp — the satmqtt core on a smoltcp interface
//!
//! What a microcontroller needs to run the no_std satmqtt core: a
//! [`TcpClientStack`](embedded_nal::TcpClientStack) and a clock built from a smoltcp
//! [`Interface`](smoltcp::iface::Interface) and [`Device`](smoltcp::phy::Device), and the loop
//! that keeps the interface running around the core's [`satmqtt::Driver`] ([`run()`]).
//! `#![no_std]`, no `alloc`: every buffer belongs to the caller.
//!
//! - [`SmolStack`]: smoltcp-nal 0.7's `NetworkStack` (embedded-nal 0.9 / embedded-time 0.12,
//!   as the core), corrected where it departs from the embedded-nal contract the core
//!   relies on: "no data yet" is `WouldBlock` and never `Ok(0)`, the peer's FIN *is* `Ok(0)`,
//!   and a closed socket finishes its closing handshake (DISCONNECT, FIN) before its handle is
//!   reused. See [`stack`] for the details.
//! - [`TickClock`] / [`Millis`]: a clock from a 32-bit tick counter (smoltcp-nal only takes
//!   clocks with ticks that fit a `u32`; wrapping is fine).
//! - [`run()`] with a [`Platform`]: sleeping, stop requests, notes. The token comes from the
//!   [`satmqtt::TokenSource`] the firmware gives the driver: when it says `changed()`, the
//!   driver re-reads it and presents the new one in band (`K8S-SAT`, AUTH 0x19) or by draining
//!   and reconnecting (`$sat`).
//!
//! Left out on purpose: DHCP and DNS (give the interface an address and the core a broker
//! IP; smoltcp-nal can do both if its sockets are in the set, but the core takes a
//! `SocketAddr`), TLS, IPv6 brokers (smoltcp-nal connects over IPv4 only), and more than one
//! MQTT connection per stack. A connection the broker refuses (RST) is retried by smoltcp-nal
//! on each poll until the core's connect timeout ends the attempt.
//!
//! ## The lines a firmware writes
//!
//! ```no_run
//! use core::net::{Ipv4Addr, SocketAddr};
//! use core::sync::atomic::{AtomicU32, Ordering};
//!
//! use satmqtt::{Auth, Buffers, Config, Driver, Token, TokenSource};
//! use satmqtt_smoltcp::smoltcp::iface::{self, Interface, SocketSet, SocketStorage};
//! use satmqtt_smoltcp::smoltcp::socket::tcp;
//! use satmqtt_smoltcp::smoltcp::wire::{EthernetAddress, IpCidr, Ipv4Address};
//! use satmqtt_smoltcp::{run, Millis, Platform, SmolStack};
//! # use satmqtt_smoltcp::smoltcp::phy::{self, DeviceCapabilities, Medium};
//! # use satmqtt_smoltcp::smoltcp::time::Instant;
//! # struct EthDriver;
//! # struct Rx; struct Tx;
//! # impl phy::RxToken for Rx { fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R { f(&[]) } }
//! # impl phy::TxToken for Tx { fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R { f(&mut [0; 1514][..len]) } }
//! # impl phy::Device for EthDriver {
//! #     type RxToken<'a> = Rx; type TxToken<'a> = Tx;
//! #     fn receive(&mut self, _: Instant) -> Option<(Rx, Tx)> { None }
//! #     fn transmit(&mut self, _: Instant) -> Option<Tx> { Some(Tx) }
//! #     fn capabilities(&self) -> DeviceCapabilities {
//! #         let mut caps = DeviceCapabilities::default();
//! #         caps.medium = Medium::Ethernet; caps.max_transmission_unit = 1514; caps
//! #     }
//! # }
//! # fn mac_from_otp() -> [u8; 6] { [0x02, 0, 0, 0, 0, 1] }
//! # fn read_token_from_flash() -> &'static [u8] { b"token" }
//! # fn token_was_provisioned() -> bool { false }
//! # fn sleep_until_irq_or(_: u32) {}
//! # fn boot_entropy() -> u64 { 1 }
//!
//! // 1. Time: a 1 kHz tick counter (incremented by a timer interrupt).
//! static TICKS: AtomicU32 = AtomicU32::new(0);
//! let clock = Millis::new(|| TICKS.load(Ordering::Relaxed));
//!
//! // 2. The device (your Ethernet driver) and the interface with a static address.
//! let mut device = EthDriver;
//! let mut config = iface::Config::new(EthernetAddress(mac_from_otp()).into());
//! config.random_seed = boot_entropy();
//! let mut interface = Interface::new(config, &mut device, Instant::from_millis(0));
//! interface.update_ip_addrs(|addrs| {
//!     let _ = addrs.push(IpCidr::new(Ipv4Address::new(10, 77, 0, 2).into(), 24));
//! });
//!
//! // 3. Socket storage: one TCP socket, its buffers static or on the stack.
//! let (mut rx, mut tx) = ([0u8; 1024], [0u8; 2048]);
//! let mut storage = [SocketStorage::EMPTY; 1];
//! let mut sockets = SocketSet::new(&mut storage[..]);
//! sockets.add(tcp::Socket::new(
//!     tcp::SocketBuffer::new(&mut rx[..]),
//!     tcp::SocketBuffer::new(&mut tx[..]),
//! ));
//! let stack = SmolStack::new(interface, device, sockets, clock);
//!
//! // 4. The token, from flash; a new one provisioned later is re-read and presented in band.
//! struct Flash;
//! impl TokenSource for Flash {
//!     type Error = core::convert::Infallible;
//!     fn load(&mut self, buf: &mut [u8]) -> Result<Token, Self::Error> {
//!         let token = read_token_from_flash();
//!         let len = token.len().min(buf.len());
//!         buf[..len].copy_from_slice(&token[..len]);
//!         Ok(Token { len, exp: None })
//!     }
//!     fn changed(&mut self) -> bool {
//!         token_was_provisioned()
//!     }
//! }
//!
//! // 5. The job, and the core's memory, sized for the longest token you accept.
//! const MAX_TOKEN: usize = 1536;
//! let broker = SocketAddr::from((Ipv4Addr::new(10, 77, 0, 1), 1883));
//! let mut config = Config::new(broker);
//! config.auth = Auth::K8sSat;
//! const TX: usize = satmqtt::tx_len(MAX_TOKEN, 8, 11, 13);
//! let (mut rx, mut tx, mut token) = ([0u8; satmqtt::RX_MIN], [0u8; TX], [0u8; MAX_TOKEN]);
//! let buffers = Buffers { rx: &mut rx, tx: &mut tx, token: &mut token };
//! let mut driver = Driver::new(&config, stack, clock, Flash, buffers, boot_entropy())
//!     .expect("valid config and buffers");
//!
//! // 6. How to sleep.
//! struct Board;
//! impl Platform for Board {
//!     fn wait(&mut self, ms: u32) {
//!         sleep_until_irq_or(ms);
//!     }
//! }
//! let outcome = run(&mut driver, &mut Board);
//! # let _ = outcome;
//! ```
//!
//! ## Clock
//!
//! Any [`embedded_time::Clock`] whose `T` converts into `u32` works; [`TickClock`] covers the
//! usual free-running counter. 32-bit ticks wrap (every 49.7 days at 1 kHz): the core and
//! smoltcp-nal both measure across a wrap, as long as [`SmolStack::poll`] and the driver are
//! polled at least once per half wrap period. [`run()`] polls at least every [`MAX_WAIT_MS`].
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clock;
pub mod run;
pub mod stack;

#[cfg(test)]
mod tests;

pub use clock::{Millis, TickClock};
pub use run::{run, Note, Outcome, Platform, MAX_WAIT_MS};
pub use stack::{SmolStack, SocketStats, LINGER_MS, POOL_MAX};

pub use smoltcp;
pub use smoltcp_nal;
