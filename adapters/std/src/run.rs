//! The std driver: the two loops the core asks for (build a session when the backoff allows,
//! then poll it), sleeping in poll(2) between steps instead of spinning.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use embedded_nal::TcpClientStack;
use satmqtt::{Event, Progress, Publisher, SessionError, Status};
use zeroize::Zeroizing;

use crate::net::{wait_socket, Waitable};
use crate::token::{TokenError, TokenFile};
use crate::StdClock;

/// Longest single sleep, so a stop request is seen even if a signal is missed.
const MAX_SLEEP: Duration = Duration::from_millis(500);

/// What the driver reports to the program; the program decides what to log.
#[derive(Debug)]
pub enum Note<'a> {
    /// An event from the core.
    Event(Event),
    /// The token file could not be read before a connection attempt.
    TokenUnavailable {
        /// What is wrong with it (never its content).
        error: &'a TokenError,
        /// Milliseconds before the next attempt.
        retry_in_ms: u64,
    },
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every message of the job is published (and acknowledged at QoS 1).
    Finished(Progress),
    /// The stop flag was raised; in-flight messages were drained (bounded) first.
    Stopped(Progress),
}

/// A run that cannot go on.
#[derive(Debug)]
pub enum RunError {
    /// The core refused to build a session for a reason retrying cannot fix.
    Session(SessionError),
    /// Waiting on the socket failed.
    Wait(io::Error),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Session(e) => write!(f, "cannot start an MQTT session: {e:?}"),
            RunError::Wait(e) => write!(f, "waiting on the socket failed: {e}"),
        }
    }
}

impl std::error::Error for RunError {}

/// Publishes until the job is done or `stop` is raised, re-reading `tokens` before every
/// connection attempt.
pub fn run<S>(
    publisher: &mut Publisher<'_, S, StdClock>,
    tokens: &TokenFile,
    stop: &AtomicBool,
    mut notify: impl FnMut(Note<'_>),
) -> Result<Outcome, RunError>
where
    S: TcpClientStack,
    S::TcpSocket: Waitable,
{
    // minimq copies the token into this buffer; zeroed when dropped.
    let mut buffer = Zeroizing::new(Vec::new());
    loop {
        if publisher.is_finished() {
            return Ok(Outcome::Finished(publisher.progress()));
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(Outcome::Stopped(publisher.progress()));
        }
        let wait = publisher.wait_ms();
        if wait > 0 {
            sleep(Duration::from_millis(wait))?;
            continue;
        }
        let token = match tokens.load() {
            Ok(token) => token,
            Err(error) => {
                let retry_in_ms = publisher.note_failure();
                notify(Note::TokenUnavailable {
                    error: &error,
                    retry_in_ms,
                });
                continue;
            }
        };
        buffer.clear();
        buffer.resize(publisher.config().buffer_len(token.len()), 0);
        let mut session = match publisher.session(&mut buffer, token.as_str()) {
            Ok(session) => session,
            // The loop's head handles both.
            Err(SessionError::Backoff { .. } | SessionError::Finished) => continue,
            Err(e) => return Err(RunError::Session(e)),
        };
        drop(token);
        let mut stopping = false;
        loop {
            if !stopping && stop.load(Ordering::SeqCst) {
                session.stop();
                stopping = true;
            }
            match session.poll(&mut |event| notify(Note::Event(event))) {
                Status::Busy => {}
                Status::Wait { ms, writable } => {
                    let timeout = Duration::from_millis(ms).min(MAX_SLEEP);
                    session
                        .with_socket(|socket| wait_socket(Some(socket), timeout, writable))
                        .unwrap_or_else(|| wait_socket::<S::TcpSocket>(None, timeout, false))
                        .map_err(RunError::Wait)?;
                }
                Status::Ended(_) => break,
            }
        }
    }
}

fn sleep(d: Duration) -> Result<(), RunError> {
    wait_socket::<crate::StdSocket>(None, d.min(MAX_SLEEP), false)
        .map(|_| ())
        .map_err(RunError::Wait)
}
