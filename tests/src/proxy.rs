//! A TCP fault proxy: sits between the publisher and the broker on `127.0.0.1` and cuts
//! connections at random byte offsets.
//!
//! Every accepted connection draws a cut offset from a seeded generator: once that many bytes
//! (both directions together, in the order the proxy forwards them) have passed, the proxy
//! forwards only the bytes up to the offset and shuts both sockets down. The cut therefore lands
//! anywhere: inside CONNECT, between CONNECT and CONNACK, in the middle of a PUBLISH or of a
//! PUBACK. After `max_cuts` cuts the proxy forwards everything, so a bounded job can finish.
//!
//! The seed is printed when the proxy starts (to stderr, which the test harness shows for a
//! failing test); set `SATMQTT_PROXY_SEED` to replay the same sequence of offsets. Timing still
//! differs between runs, so a replay cuts the same connection numbers at the same offsets, not
//! necessarily the same packets.
//!
//! What it deliberately leaves out: delays, reordering, RST instead of FIN, and stalls.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::tools::random_bytes;
use crate::wait::wait_until;

/// Environment variable that fixes the seed (decimal).
pub const SEED_ENV: &str = "SATMQTT_PROXY_SEED";

/// How connections are cut.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Seed of the offset generator; `None`: [`SEED_ENV`] if set, else random.
    pub seed: Option<u64>,
    /// A connection is cut after a number of bytes drawn uniformly from this range.
    pub cut_after: RangeInclusive<u64>,
    /// At most this many cuts; later connections are forwarded untouched.
    pub max_cuts: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            seed: None,
            cut_after: 1..=2_000,
            max_cuts: 25,
        }
    }
}

/// What the proxy did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client connections accepted.
    pub connections: u64,
    /// Connections the proxy cut.
    pub cuts: u64,
    /// Connections whose upstream connect failed (broker down): closed at once.
    pub upstream_failures: u64,
    /// Bytes forwarded from the client to the broker (counted as they are handed to the socket).
    pub bytes_to_broker: u64,
    /// Bytes forwarded from the broker to the client (likewise).
    pub bytes_to_client: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    cuts: AtomicU64,
    upstream_failures: AtomicU64,
    bytes_to_broker: AtomicU64,
    bytes_to_client: AtomicU64,
}

/// A running fault proxy; stops accepting and closes every connection on drop.
pub struct FaultProxy {
    port: u16,
    seed: u64,
    counters: Arc<Counters>,
    shutdown: Arc<AtomicBool>,
    /// Both sockets of every connection, to shut them down on drop.
    streams: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl FaultProxy {
    /// Listens on a free port of `127.0.0.1` and forwards to `upstream`, cutting as `faults` says.
    ///
    /// # Panics
    /// If the listener cannot be bound, or [`SEED_ENV`] is not a decimal number.
    pub fn start(upstream: SocketAddr, faults: Faults) -> FaultProxy {
        let seed = faults
            .seed
            .unwrap_or_else(|| match std::env::var(SEED_ENV) {
                Ok(text) => text
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{SEED_ENV}={text:?} is not a decimal u64")),
                Err(_) => u64::from_le_bytes(
                    random_bytes(8)
                        .try_into()
                        .expect("random_bytes(8) returns 8 bytes"),
                ),
            });
        eprintln!("fault proxy seed {seed} (replay with {SEED_ENV}={seed})");
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("binding the fault proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let counters = Arc::new(Counters::default());
        let shutdown = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (counters, shutdown, streams) = (
                Arc::clone(&counters),
                Arc::clone(&shutdown),
                Arc::clone(&streams),
            );
            std::thread::spawn(move || {
                accept_loop(
                    listener, upstream, faults, seed, &counters, &shutdown, &streams,
                )
            })
        };
        FaultProxy {
            port,
            seed,
            counters,
            shutdown,
            streams,
            acceptor: Some(acceptor),
        }
    }

    /// The port clients connect to (on `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The seed in use.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Counters so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        ProxyStats {
            connections: c.connections.load(Ordering::SeqCst),
            cuts: c.cuts.load(Ordering::SeqCst),
            upstream_failures: c.upstream_failures.load(Ordering::SeqCst),
            bytes_to_broker: c.bytes_to_broker.load(Ordering::SeqCst),
            bytes_to_client: c.bytes_to_client.load(Ordering::SeqCst),
        }
    }

    /// Waits until at least `n` cuts happened, for at most `timeout`.
    pub fn wait_for_cuts(&self, n: u64, timeout: Duration) -> bool {
        wait_until(timeout, || (self.stats().cuts >= n).then_some(())).is_some()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        // Wakes the blocking accept; it sees the flag and returns.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for stream in lock(&self.streams).iter() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        if let Some(acceptor) = self.acceptor.take() {
            if let Ok(pumps) = acceptor.join() {
                for pump in pumps {
                    let _ = pump.join();
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// splitmix64: small, and every seed (0 included) gives a good sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn in_range(&mut self, range: &RangeInclusive<u64>) -> u64 {
        let (lo, hi) = (*range.start(), *range.end());
        let span = hi.saturating_sub(lo).saturating_add(1);
        lo + self.next() % span.max(1)
    }
}

fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    faults: Faults,
    seed: u64,
    counters: &Arc<Counters>,
    shutdown: &AtomicBool,
    streams: &Mutex<Vec<TcpStream>>,
) -> Vec<JoinHandle<()>> {
    let mut rng = Rng(seed);
    let mut pumps = Vec::new();
    for client in listener.incoming() {
        if shutdown.load(Ordering::SeqCst) {
            break;
        }
        let Ok(client) = client else { continue };
        counters.connections.fetch_add(1, Ordering::SeqCst);
        // Drawn for every connection, so a seed maps connection numbers to offsets.
        let cut_at = rng.in_range(&faults.cut_after);
        let Ok(server) = TcpStream::connect(upstream) else {
            counters.upstream_failures.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let clones = (client.try_clone(), server.try_clone());
        let (Ok(client2), Ok(server2)) = clones else {
            continue;
        };
        {
            let mut all = lock(streams);
            for s in [&client, &server] {
                if let Ok(s) = s.try_clone() {
                    all.push(s);
                }
            }
        }
        let link = Arc::new(Link {
            client: client.try_clone().ok(),
            server: server.try_clone().ok(),
            cut_at,
            max_cuts: faults.max_cuts,
            passed: Mutex::new(0),
            cut: AtomicBool::new(false),
            counters: Arc::clone(counters),
        });
        let up = Arc::clone(&link);
        pumps.push(std::thread::spawn(move || {
            up.pump(client, server2, Direction::ToBroker)
        }));
        pumps.push(std::thread::spawn(move || {
            link.pump(server, client2, Direction::ToClient)
        }));
    }
    pumps
}

#[derive(Clone, Copy)]
enum Direction {
    ToBroker,
    ToClient,
}

/// One proxied connection: both sockets and its byte budget.
struct Link {
    client: Option<TcpStream>,
    server: Option<TcpStream>,
    cut_at: u64,
    max_cuts: u64,
    /// Bytes both directions together have been allowed through (reserved before writing).
    passed: Mutex<u64>,
    cut: AtomicBool,
    counters: Arc<Counters>,
}

impl Link {
    /// Copies `from` to `to` until EOF, an error or the cut.
    fn pump(&self, mut from: TcpStream, mut to: TcpStream, direction: Direction) {
        let mut buf = [0u8; 4096];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if self.cut.load(Ordering::SeqCst) {
                return;
            }
            let (allowed, cut_now) = self.reserve(n as u64);
            if allowed > 0 {
                // Counted before the write, so a peer that has read the bytes sees them counted.
                let counter = match direction {
                    Direction::ToBroker => &self.counters.bytes_to_broker,
                    Direction::ToClient => &self.counters.bytes_to_client,
                };
                counter.fetch_add(allowed, Ordering::SeqCst);
                if to.write_all(&buf[..allowed as usize]).is_err() {
                    counter.fetch_sub(allowed, Ordering::SeqCst);
                    break;
                }
            }
            if cut_now {
                self.close_both();
                return;
            }
        }
        // A normal end in one direction: pass the FIN on, let the other direction finish.
        let _ = to.shutdown(Shutdown::Write);
    }

    /// How many of `n` new bytes may pass, and whether the connection is cut after them.
    /// Accounting is done under the lock but writing is not, so the two directions never wait
    /// on each other's socket.
    fn reserve(&self, n: u64) -> (u64, bool) {
        let mut passed = lock(&self.passed);
        if *passed + n < self.cut_at {
            *passed += n;
            return (n, false);
        }
        // This read reaches the offset: cut here if the budget allows, else never cut.
        let budget = self
            .counters
            .cuts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                (c < self.max_cuts).then_some(c + 1)
            });
        if budget.is_err() {
            *passed = u64::MAX / 2; // past any offset: this link is left alone
            return (n, false);
        }
        let allowed = self.cut_at - *passed;
        *passed = self.cut_at;
        self.cut.store(true, Ordering::SeqCst);
        (allowed, true)
    }

    fn close_both(&self) {
        for s in [&self.client, &self.server].into_iter().flatten() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server that answers every byte; returns its address.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Sends bytes one at a time through the proxy and returns how many echoes came back
    /// before the connection ended.
    fn echoed_before_cut(port: u16, send: usize) -> usize {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = 0;
        for _ in 0..send {
            if s.write_all(b"x").is_err() {
                break;
            }
            let mut b = [0u8; 1];
            match s.read(&mut b) {
                Ok(1) => got += 1,
                _ => break,
            }
        }
        got
    }

    #[test]
    fn cuts_at_the_drawn_offset_then_stops_cutting_after_the_budget() {
        let proxy = FaultProxy::start(
            echo_server(),
            Faults {
                seed: Some(7),
                cut_after: 10..=10,
                max_cuts: 2,
            },
        );
        // 10 bytes both directions together: 5 sent and 5 echoed, then the cut.
        assert_eq!(echoed_before_cut(proxy.port(), 50), 5);
        assert_eq!(echoed_before_cut(proxy.port(), 50), 5);
        // Budget spent: the third connection is not cut.
        assert_eq!(echoed_before_cut(proxy.port(), 50), 50);
        let stats = proxy.stats();
        assert_eq!(stats.connections, 3);
        assert_eq!(stats.cuts, 2);
        assert_eq!(stats.bytes_to_broker, 5 + 5 + 50);
        assert_eq!(stats.bytes_to_client, 5 + 5 + 50);
    }

    #[test]
    fn the_same_seed_draws_the_same_offsets() {
        let draw = |seed| {
            let mut rng = Rng(seed);
            (0..8)
                .map(|_| rng.in_range(&(1..=2000)))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
        assert!(draw(0).iter().all(|n| (1..=2000).contains(n)));
    }

    #[test]
    fn a_dead_upstream_closes_the_client() {
        // A port nobody listens on: bind, read the port, drop the listener.
        let dead = TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap();
        let proxy = FaultProxy::start(dead, Faults::default());
        let mut s = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        assert!(matches!(s.read(&mut b), Ok(0) | Err(_)));
        assert_eq!(proxy.stats().upstream_failures, 1);
    }
}
