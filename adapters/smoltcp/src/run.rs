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
    let returned = driver.stack_mut().stats().closed;
    let mut run = Loop {
        driver,
        platform,
        returned,
        closed_at: None,
    };
    loop {
        if run.platform.stop_requested() {
            run.driver.stop();
        }
        run.poll_stack();
        if run.driver.socket().is_none() && run.settle() {
            continue;
        }
        let status = run.driver.poll(Ready::ALL);
        while let Some(event) = run.driver.poll_event() {
            run.platform.note(Note::Event(event));
        }
        // Send what the driver just wrote now, not one wait later.
        let moved = run.poll_stack();
        let outcome = match status? {
            Status::Wait { ms, .. } => {
                // A socket changed state after the driver looked (the connection came up,
                // bytes arrived with the ACK of what it sent): let it look again at once.
                if ms > 0 && !moved {
                    run.platform.wait(clamp_wait(ms));
                }
                continue;
            }
            Status::Finished(p) => Outcome::Finished(p),
            Status::Stopped(p) => Outcome::Stopped(p),
        };
        run.finish();
        return Ok(outcome);
    }
}

/// The driver, the platform, and what the loop keeps between connections.
struct Loop<'r, Dr, P: ?Sized> {
    driver: &'r mut Dr,
    platform: &'r mut P,
    /// Sockets closed so far whose return was reported.
    returned: u32,
    /// When the last close was noticed, while its handshake runs.
    closed_at: Option<u64>,
}

impl<D, C, K, T, P> Loop<'_, Driver<'_, '_, SmolStack<'_, D, C>, K, T>, P>
where
    D: Device,
    C: Clock + Clone,
    u32: From<C::T>,
    K: Clock,
    u64: From<K::T>,
    T: TokenSource,
    P: Platform + ?Sized,
{
    /// Moves frames; true when a socket changed state.
    fn poll_stack(&mut self) -> bool {
        match self.driver.stack_mut().poll() {
            Ok(moved) => moved,
            Err(_) => {
                self.platform.note(Note::ClockError);
                false
            }
        }
    }

    /// Between connections: true (and one wait) while a closed socket's handshake is still
    /// running; once it is over, reports the socket's return.
    fn settle(&mut self) -> bool {
        let stats = self.driver.stack_mut().stats();
        if stats.closed == self.returned {
            return false;
        }
        let at = *self.closed_at.get_or_insert_with(|| self.driver.now_ms());
        if !self.driver.stack_mut().is_settled() {
            self.platform.wait(MAX_WAIT_MS);
            return true;
        }
        self.returned = stats.closed;
        self.closed_at = None;
        let waited_ms = self.driver.now_ms().saturating_sub(at);
        self.platform
            .note(Note::SocketReturned { stats, waited_ms });
        false
    }

    /// After the last connection: lets its closing handshake finish (bounded by the linger
    /// time).
    fn finish(&mut self) {
        // The stack lingers out a handshake that does not finish, so this ends; the count
        // bounds it even on a clock that stands still.
        for _ in 0..100_000 {
            self.poll_stack();
            if !self.settle() {
                return;
            }
        }
    }
}

fn clamp_wait(ms: u64) -> u32 {
    u32::try_from(ms).unwrap_or(u32::MAX).min(MAX_WAIT_MS)
}
