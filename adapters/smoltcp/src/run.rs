//! The driver loop for a smoltcp interface: the no_std sibling of the std adapter's `run`.
//!
//! Two loops, as the core asks: between sessions, keep the interface running until the last
//! socket's closing handshake is over and the backoff allows an attempt, then build a session
//! with the platform's token; during a session, poll the stack and the session in turn and let
//! the platform sleep in between. A new token from the platform rotates the session
//! ([`satmqtt::Session::rotate`]: drain, DISCONNECT, close) and the next one logs in with it.

use embedded_time::Clock;
use satmqtt::{Event, Progress, Publisher, Session, SessionError, Status};
use smoltcp::phy::Device;

use crate::stack::{SmolStack, SocketStats};

/// Longest single [`Platform::wait`]: smoltcp-nal hides smoltcp's own next deadline
/// (retransmissions, delayed ACKs), so the interface is polled at least this often.
pub const MAX_WAIT_MS: u32 = 10;

/// What the firmware supplies to [`run()`].
pub trait Platform {
    /// Sleeps until a frame may have arrived or `ms` milliseconds passed (a timer plus `WFI`
    /// on an MCU, `select(2)` on a TAP descriptor). Returning early is always fine.
    fn wait(&mut self, ms: u32);

    /// The token to log in with as `$sat` (from flash, a config block, a provisioning
    /// service). Called before every connection attempt; it must fit the buffer given to
    /// [`run()`] ([`satmqtt::Config::buffer_len`]).
    fn token(&mut self) -> Result<&str, TokenUnavailable>;

    /// Whether a new token was handed in since the last call. During a session this rotates
    /// it: in-flight messages are drained, DISCONNECT is sent, and the next session logs in
    /// with [`Platform::token`].
    fn token_changed(&mut self) -> bool {
        false
    }

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

/// The platform has no token to give right now; [`run()`] retries after the backoff delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenUnavailable;

/// What [`run()`] reports to the platform.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Note {
    /// An event from the core.
    Event(Event),
    /// A new token was handed in: the session drains and ends, the next one uses it.
    Rotating,
    /// A session is over and its socket is back in the pool with its closing handshake
    /// finished (or given up after the linger time, see [`SocketStats::lingered`]).
    SocketReturned {
        /// The stack's socket counters afterwards.
        stats: SocketStats,
        /// Milliseconds spent waiting for the closing handshake.
        waited_ms: u64,
    },
    /// [`Platform::token`] had nothing; the next attempt is in `retry_in_ms`.
    TokenUnavailable {
        /// Milliseconds before the next attempt.
        retry_in_ms: u64,
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

/// A run that cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunError {
    /// The core refused to build a session for a reason retrying cannot fix (a token too
    /// long for the buffer, an empty token).
    Session(SessionError),
}

impl core::fmt::Display for RunError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RunError::Session(e) => write!(f, "cannot start an MQTT session: {e:?}"),
        }
    }
}

/// One turn of a session on smoltcp: frames in, the core's work, frames out. Returns what
/// the session wants next (poll again, wait, or build the next session).
pub fn poll_session<D, C, K>(
    session: &mut Session<'_, '_, SmolStack<'_, D, C>, K>,
    sink: &mut impl FnMut(Event),
) -> Status
where
    D: Device,
    C: Clock + Clone,
    u32: From<C::T>,
    K: Clock,
    u64: From<K::T>,
{
    // Clock errors only; the core notices a broken clock on its own.
    let _ = session.with_stack(|stack| stack.poll());
    let status = session.poll(sink);
    // Send what the core just wrote now, not one wait later.
    let moved = session
        .with_stack(|stack| stack.poll())
        .and_then(Result::ok)
        .unwrap_or(false);
    match status {
        // A socket changed state after the session looked (the connection came up, bytes
        // arrived with the ACK of what it sent): let it look again before sleeping.
        Status::Wait { .. } if moved => Status::Busy,
        status => status,
    }
}

/// Publishes until the job is done or the platform asks to stop, logging in with the
/// platform's token and rotating when it hands in a new one. `buffer` is minimq's memory:
/// at least [`satmqtt::Config::buffer_len`] of the longest token the platform will give.
pub fn run<D, C, K, P>(
    publisher: &mut Publisher<'_, SmolStack<'_, D, C>, K>,
    buffer: &mut [u8],
    platform: &mut P,
) -> Result<Outcome, RunError>
where
    D: Device,
    C: Clock + Clone,
    u32: From<C::T>,
    K: Clock,
    u64: From<K::T>,
    P: Platform + ?Sized,
{
    // When the last session ended, until its socket is settled and reported.
    let mut ended_at: Option<u64> = None;
    loop {
        if publisher.stack_mut().poll().is_err() {
            platform.note(Note::ClockError);
        }
        if !publisher.stack_mut().is_settled() {
            platform.wait(MAX_WAIT_MS);
            continue;
        }
        if let Some(at) = ended_at.take() {
            let stats = publisher.stack_mut().stats();
            let waited_ms = publisher.now_ms().saturating_sub(at);
            platform.note(Note::SocketReturned { stats, waited_ms });
        }
        if publisher.is_finished() {
            return Ok(Outcome::Finished(publisher.progress()));
        }
        if platform.stop_requested() {
            return Ok(Outcome::Stopped(publisher.progress()));
        }
        let wait = publisher.wait_ms();
        if wait > 0 {
            platform.wait(clamp_wait(wait));
            continue;
        }
        // The session below logs in with the current token: a change until now is included.
        let _ = platform.token_changed();
        let token = match platform.token() {
            Ok(token) => token,
            Err(TokenUnavailable) => {
                let retry_in_ms = publisher.note_failure();
                platform.note(Note::TokenUnavailable { retry_in_ms });
                continue;
            }
        };
        let mut session = match publisher.session(&mut *buffer, token) {
            Ok(session) => session,
            // The loop's head handles both.
            Err(SessionError::Backoff { .. } | SessionError::Finished) => continue,
            Err(e) => return Err(RunError::Session(e)),
        };
        let mut stopping = false;
        let mut rotating = false;
        loop {
            if !stopping && platform.stop_requested() {
                session.stop();
                stopping = true;
            }
            if !stopping && !rotating && platform.token_changed() {
                platform.note(Note::Rotating);
                session.rotate();
                rotating = true;
            }
            match poll_session(&mut session, &mut |event| platform.note(Note::Event(event))) {
                Status::Busy => {}
                Status::Wait { ms, .. } => platform.wait(clamp_wait(ms)),
                Status::Ended(_) => break,
            }
        }
        drop(session);
        ended_at = Some(publisher.now_ms());
    }
}

fn clamp_wait(ms: u64) -> u32 {
    u32::try_from(ms).unwrap_or(u32::MAX).min(MAX_WAIT_MS)
}
