//! The independent subscriber: a raw MQTT v5 client in its own thread that counts what the
//! broker delivers.
//!
//! `mosquitto_sub` prints a line per message and cannot keep up with 300 000 messages a second
//! on two cores, so a slow subscriber would be measured instead of the publisher. This one reads
//! in 256 KiB chunks, parses PUBLISH packets in place, acknowledges QoS 1 deliveries in one write
//! per chunk, and asks the broker (Receive Maximum 65 535) to keep many deliveries in flight.
//! It records each counter in a bitset, so the report says exactly how many distinct messages
//! arrived, how many twice, and when the first and the last came.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::wire::{self, kind};

/// What the subscriber saw.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Distinct counters in `0..expected` received.
    pub distinct: u64,
    /// PUBLISH packets received, duplicates included.
    pub total: u64,
    /// Counters received more than once.
    pub duplicates: u64,
    /// Payloads that were not `<prefix><N>` with N below `expected`.
    pub foreign: u64,
    /// Arrival of the first message.
    pub first: Option<Instant>,
    /// Arrival of the last message.
    pub last: Option<Instant>,
    /// (counter, arrival) of every delivery in arrival order, when started with
    /// [`Subscriber::start_recording`]; empty otherwise.
    pub arrivals: Vec<(u64, Instant)>,
}

struct Shared {
    base: Instant,
    distinct: AtomicU64,
    /// Nanoseconds after `base` of the last arrival, plus one (0: none yet).
    last_ns: AtomicU64,
}

/// A running subscriber; stopped (and its thread joined) by [`Subscriber::finish`] or on drop.
pub struct Subscriber {
    stream: TcpStream,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<io::Result<Tally>>>,
}

impl Subscriber {
    /// Connects as `user`, subscribes to `topic` at `qos`, waits for the SUBACK, and starts
    /// counting `<prefix><N>` payloads with N in `0..expected`.
    pub fn start(
        broker: SocketAddr,
        auth: (&str, &str),
        topic: &str,
        qos: u8,
        prefix: &str,
        expected: u64,
    ) -> io::Result<Subscriber> {
        Subscriber::start_with(broker, auth, topic, qos, prefix, expected, false)
    }

    /// [`Subscriber::start`], also keeping every arrival's time (for pauses in a fixed-rate
    /// stream; one entry per delivery, so meant for thousands of messages, not millions).
    pub fn start_recording(
        broker: SocketAddr,
        auth: (&str, &str),
        topic: &str,
        qos: u8,
        prefix: &str,
        expected: u64,
    ) -> io::Result<Subscriber> {
        Subscriber::start_with(broker, auth, topic, qos, prefix, expected, true)
    }

    fn start_with(
        broker: SocketAddr,
        auth: (&str, &str),
        topic: &str,
        qos: u8,
        prefix: &str,
        expected: u64,
        record: bool,
    ) -> io::Result<Subscriber> {
        let mut stream = TcpStream::connect_timeout(&broker, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let id = format!("bench-sub-{}", std::process::id());
        let id = format!("{id}-{}", topic.replace('/', "-"));
        stream.write_all(&wire::connect(
            &id,
            auth.0,
            auth.1.as_bytes(),
            600,
            Some(u16::MAX),
        ))?;
        stream.write_all(&wire::subscribe(1, topic, qos))?;
        // CONNACK then SUBACK, nothing else can come before the SUBACK.
        let mut buf = vec![0u8; 4096];
        let mut have = 0;
        let mut suback = false;
        while !suback {
            let n = stream.read(&mut buf[have..])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "broker closed the subscriber's connection",
                ));
            }
            have += n;
            let mut refused = None;
            let used = wire::split(&buf[..have], |p| match p.kind() {
                kind::CONNACK if p.body.get(1).is_some_and(|&r| r >= 0x80) => {
                    refused = p.body.get(1).copied()
                }
                kind::SUBACK => suback = true,
                _ => {}
            });
            if let Some(reason) = refused {
                return Err(io::Error::other(format!(
                    "subscriber refused: CONNACK 0x{reason:02x}"
                )));
            }
            buf.copy_within(used..have, 0);
            have -= used;
        }
        stream.set_read_timeout(None)?;
        let shared = Arc::new(Shared {
            base: Instant::now(),
            distinct: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
        });
        let reader = stream.try_clone()?;
        let prefix = prefix.as_bytes().to_vec();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("bench-subscriber".into())
            .spawn(move || count(reader, &prefix, expected, record, &thread_shared))?;
        Ok(Subscriber {
            stream,
            shared,
            thread: Some(thread),
        })
    }

    /// Distinct messages so far.
    pub fn distinct(&self) -> u64 {
        self.shared.distinct.load(Ordering::Relaxed)
    }

    /// Arrival of the last message so far.
    pub fn last_arrival(&self) -> Option<Instant> {
        match self.shared.last_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(self.shared.base + Duration::from_nanos(ns - 1)),
        }
    }

    /// Waits until `n` distinct messages arrived, or nothing new arrived for `quiet`, or
    /// `timeout` passed; returns the distinct count.
    pub fn wait_for(&self, n: u64, quiet: Duration, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut seen = self.distinct();
        let mut changed = Instant::now();
        while seen < n && Instant::now() < deadline && changed.elapsed() < quiet {
            std::thread::sleep(Duration::from_millis(1));
            let now = self.distinct();
            if now != seen {
                seen = now;
                changed = Instant::now();
            }
        }
        seen
    }

    /// Disconnects and returns the tally.
    pub fn finish(mut self) -> io::Result<Tally> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<Tally> {
        let _ = self.stream.write_all(&wire::DISCONNECT);
        let _ = self.stream.shutdown(Shutdown::Both);
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("subscriber thread panicked"))),
            None => Ok(Tally::default()),
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn count(
    mut stream: TcpStream,
    prefix: &[u8],
    expected: u64,
    record: bool,
    shared: &Shared,
) -> io::Result<Tally> {
    let mut seen = vec![0u64; expected.div_ceil(64) as usize];
    let mut tally = Tally::default();
    let mut buf = vec![0u8; 256 * 1024];
    let mut acks = Vec::with_capacity(64 * 1024);
    let mut have = 0;
    loop {
        if have == buf.len() {
            // A packet larger than the buffer: not one of ours.
            return Err(io::Error::other("oversized packet for the subscriber"));
        }
        let n = match stream.read(&mut buf[have..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Our own shutdown while reading.
            Err(_) => break,
        };
        let now = Instant::now();
        have += n;
        let mut arrived = false;
        let used = wire::split(&buf[..have], |p| {
            if p.kind() != kind::PUBLISH {
                return;
            }
            let Some((qos, id, payload)) = p.publish() else {
                tally.foreign += 1;
                return;
            };
            if let (1, Some(id)) = (qos, id) {
                wire::put_puback(&mut acks, id);
            }
            tally.total += 1;
            arrived = true;
            match wire::counter(payload, prefix).filter(|&c| c < expected) {
                Some(c) => {
                    if record {
                        tally.arrivals.push((c, now));
                    }
                    let (word, bit) = ((c / 64) as usize, 1u64 << (c % 64));
                    if seen[word] & bit != 0 {
                        tally.duplicates += 1;
                    } else {
                        seen[word] |= bit;
                        tally.distinct += 1;
                    }
                }
                None => tally.foreign += 1,
            }
        });
        buf.copy_within(used..have, 0);
        have -= used;
        if !acks.is_empty() {
            if stream.write_all(&acks).is_err() {
                break;
            }
            acks.clear();
        }
        if arrived {
            tally.first.get_or_insert(now);
            tally.last = Some(now);
            let ns = now.duration_since(shared.base).as_nanos() as u64 + 1;
            shared.last_ns.store(ns, Ordering::Relaxed);
            shared.distinct.store(tally.distinct, Ordering::Relaxed);
        }
    }
    Ok(tally)
}
