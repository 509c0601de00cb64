//! The loop for a smoltcp interface: the core's [`Driver`] does the MQTT work (connections,
//! tokens, rotation, re-authentication, backoff, stop-and-drain); this module only keeps the
//! interface running around it and lets the platform sleep.
//!
//! Two things are smoltcp's own: frames move only when [`SmolStack::poll`] runs, so the
//! interface is polled before and after every [`Driver::poll`] and at least every
//! [`MAX_WAIT_MS`]; and smoltcp-nal hands a closed socket's handle out again (aborting it) on the
//! next `socket()`, so between connections the interface keeps running until the closed
//! socket's closing handshake is over ([`SmolStack::is_settled`]) before the driver may open
//! the next one.

use embedded_time::Clock;
use satmqtt::{Driver, DriverError, Event, Progress, Ready, Status, TokenSource};
use smoltcp::phy::Device;

use crate::stack::{SmolStack, SocketStats};

/// Longest single [`Platform::wait`]: smoltcp-nal hides smoltcp's own next deadline
/// (retransmissions, delayed ACKs), so the interface is polled at least this often.
pub const MAX_WAIT_MS: u32 = 10;

/// What the firmware supplies to [`run()`] besides the driver (whose [`TokenSource`] gives the
/// token: a new one from it is presented in band with `K8S-SAT`, or by reconnecting with `$sat`).
pub trait Platform {
    /// Sleeps until a frame may have arrived or `ms` milliseconds passed (a timer plus `WFI`
    /// on an MCU, `select(2)` on a TAP descriptor). Returning early is always fine.
    fn wait(&mut self, ms: u32);

    /// Whether to stop: in-flight messages are drained (bounded by the drain timeout),
    /// DISCONNECT is sent, the closing handshake finishes, and [`run()`] returns.
    fn stop_requested(&mut self) -> bool {
        false
    }

    /// What happened; the platform decides what to log or count.
    fn note(&mut self, note: Note) {
        let _ = note;
    }
}

/// What [`run()`] reports to the platform.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// An event from the core.
    Event(Event),
    /// A connection is over and its socket is back in the pool with its closing handshake
    /// finished (or given up after the linger time, see [`SocketStats::lingered`]).
    SocketReturned {
        /// The stack's socket counters afterwards.
        stats: SocketStats,
        /// Milliseconds spent waiting for the closing handshake.
        waited_ms: u64,
    },
    /// smoltcp-nal's poll failed: the stack's clock could not be read or converted.
    ClockError,
}

/// How [`run()`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every message of the job is published (and acknowledged at QoS 1).
    Finished(Progress),
    /// [`Platform::stop_requested`] said so; in-flight messages were drained (bounded) first.
    Stopped(Progress),
}

/// Publishes until the job is done or the platform asks to stop; see the module doc. An error
/// is the driver's: a configuration or buffer it refuses, or a broker that refuses the job.
// The error carries the broker's reason string (bounded, inline): without alloc there is
// nothing to box it in, and it is returned once, at the end of the run.
#[allow(clippy::result_large_err)]
pub fn run<D, C, K, T, P>(
    driver: &mut Driver<'_, '_, SmolStack<'_, D, C>, K, T>,
    platform: &mut P,
) -> Result<Outcome, DriverError>
where
    D: Device,
    C: Clock + Clone,
    u32: From<C::T>,
    K: Clock,
    u64: From<K::T>,
    T: TokenSource,
    P: Platform + ?Sized,
{
    // Sockets closed so far whose return was reported, and when the last close was noticed.
    let mut returned = driver.stack_mut().stats().closed;
    let mut closed_at: Option<u64> = None;
    loop {
        if platform.stop_requested() {
            driver.stop();
        }
        poll_stack(driver, platform);
        if driver.socket().is_none() && settle(driver, platform, &mut returned, &mut closed_at) {
            continue;
        }
        let status = driver.poll(Ready::ALL);
        while let Some(event) = driver.poll_event() {
            platform.note(Note::Event(event));
        }
        // Send what the driver just wrote now, not one wait later.
        let moved = poll_stack(driver, platform);
        match status? {
            Status::Wait { ms, .. } => {
                // A socket changed state after the driver looked (the connection came up,
                // bytes arrived with the ACK of what it sent): let it look again at once.
                if ms > 0 && !moved {
                    platform.wait(clamp_wait(ms));
                }
            }
            Status::Finished(p) => {
                finish(driver, platform, &mut returned, &mut closed_at);
                return Ok(Outcome::Finished(p));
            }
            Status::Stopped(p) => {
                finish(driver, platform, &mut returned, &mut closed_at);
                return Ok(Outcome::Stopped(p));
            }
        }
    }
}

/// Moves frames; true when a socket changed state.
fn poll_stack<D, C, K, T, P>(
    driver: &mut Driver<'_, '_, SmolStack<'_, D, C>, K, T>,
    platform: &mut P,
) -> bool
where
    D: Device,
    C: Clock + Clone,
    u32: From<C::T>,
    K: Clock,
    u64: From<K::T>,
    T: TokenSource,
    P: Platform + ?Sized,
{
    match driver.stack_mut().poll() {
        Ok(moved) => moved,
        Err(_) => {
            platform.note(Note::ClockError);
            false
        }
    }
}

/// Between connections: true (and one wait) while a closed socket's handshake is still running;
/// once it is over, reports the socket's return.
fn settle<D, C, K, T, P>(
    driver: &mut Driver<'_, '_, SmolStack<'_, D, C>, K, T>,
    platform: &mut P,
    returned: &mut u32,
    closed_at: &mut Option<u64>,
) -> bool
where
    D: Device,
    C: Clock + Clone,
    u32: From<C::T>,
    K: Clock,
    u64: From<K::T>,
    T: TokenSource,
    P: Platform + ?Sized,
{
    let stats = driver.stack_mut().stats();
    if stats.closed == *returned {
        return false;
    }
    let at = *closed_at.get_or_insert_with(|| driver.now_ms());
    if !driver.stack_mut().is_settled() {
        platform.wait(MAX_WAIT_MS);
        return true;
    }
    *returned = stats.closed;
    *closed_at = None;
    let waited_ms = driver.now_ms().saturating_sub(at);
    platform.note(Note::SocketReturned { stats, waited_ms });
    false
}

/// After the last connection: lets its closing handshake finish (bounded by the linger time).
fn finish<D, C, K, T, P>(
    driver: &mut Driver<'_, '_, SmolStack<'_, D, C>, K, T>,
    platform: &mut P,
    returned: &mut u32,
    closed_at: &mut Option<u64>,
) where
    D: Device,
    C: Clock + Clone,
    u32: From<C::T>,
    K: Clock,
    u64: From<K::T>,
    T: TokenSource,
    P: Platform + ?Sized,
{
    // The stack lingers out a handshake that does not finish, so this ends; the count bounds
    // it even on a clock that stands still.
    for _ in 0..100_000 {
        poll_stack(driver, platform);
        if !settle(driver, platform, returned, closed_at) {
            return;
        }
    }
}

fn clamp_wait(ms: u64) -> u32 {
    u32::try_from(ms).unwrap_or(u32::MAX).min(MAX_WAIT_MS)
}
