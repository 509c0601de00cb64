//! The std driver: the two loops the core asks for (build a session when the backoff allows,
//! then poll it), sleeping in poll(2) between steps instead of spinning, and the token
//! lifecycle: re-read before every connect, rotate when the kubelet swaps the token, never
//! connect with a token past its `exp`, rotate before `exp` minus a margin.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use embedded_nal::TcpClientStack;
use satmqtt::{freshness, Event, Freshness, Progress, Publisher, SessionError, Status, TokenTimes};
use zeroize::Zeroizing;

use crate::net::{wait_socket, Waitable};
use crate::token::{jwt_expiry, Token, TokenError, TokenFile};
use crate::watch::{TokenWatcher, Watch};
use crate::StdClock;

/// Longest single sleep, so a stop request is seen even if a signal is missed.
const MAX_SLEEP: Duration = Duration::from_millis(1_000);

/// How often the token file is re-read while the current token is inside its expiry margin.
const EXPIRING_RECHECK: Duration = Duration::from_secs(1);

/// Driver settings beyond the core's [`satmqtt::Config`].
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Rotate this long before the token's `exp`.
    pub expiry_margin: Duration,
    /// Re-stat period of the token file when inotify events are missing.
    pub restat_every: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            expiry_margin: Duration::from_secs(60),
            restat_every: Duration::from_secs(5),
        }
    }
}

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
    /// The token on disk differs from the one in use; the session rotates to it.
    TokenChanged {
        /// `exp` of the new token, if it is a JWT.
        exp: Option<u64>,
    },
    /// The token in use is inside its expiry margin and no new one has appeared yet.
    TokenExpiring {
        /// Seconds until `exp`.
        expires_in_s: u64,
    },
    /// The token of the live connection is past its `exp` and no new one has appeared; the
    /// broker may drop the connection at any time.
    TokenExpiredInUse {
        /// Seconds since `exp`.
        ago_s: u64,
    },
    /// The token on disk is past its `exp`; no connection is attempted with it.
    TokenExpired {
        /// Seconds since `exp`.
        ago_s: u64,
        /// Milliseconds before the file is read again.
        retry_in_ms: u64,
    },
    /// inotify is unavailable; rotation is noticed by re-stat only.
    WatchDegraded(&'a notify::Error),
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn times(token: &Token) -> TokenTimes {
    jwt_expiry(token.as_str()).map_or_else(TokenTimes::default, |t| TokenTimes {
        exp: t.exp,
        iat: t.iat,
    })
}

/// Publishes until the job is done or `stop` is raised; see the module doc for the token
/// lifecycle.
pub fn run<S>(
    publisher: &mut Publisher<'_, S, StdClock>,
    tokens: &TokenFile,
    options: RunOptions,
    stop: &AtomicBool,
    mut notify: impl FnMut(Note<'_>),
) -> Result<Outcome, RunError>
where
    S: TcpClientStack,
    S::TcpSocket: Waitable,
{
    let (mut watcher, watch_error) =
        TokenWatcher::new(tokens.path(), options.restat_every).map_err(RunError::Wait)?;
    if let Some(e) = &watch_error {
        notify(Note::WatchDegraded(e));
    }
    let margin_s = options.expiry_margin.as_secs();
    // minimq copies the token into this buffer; zeroed when dropped.
    let mut buffer = Zeroizing::new(Vec::new());
    // The token of the last attempt: only a different one lifts the backoff.
    let mut last_token: Option<Token> = None;
    let mut backoff_settle: Option<Duration> = None;
    loop {
        if publisher.is_finished() {
            return Ok(Outcome::Finished(publisher.progress()));
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(Outcome::Stopped(publisher.progress()));
        }
        let wait = publisher.wait_ms();
        if wait > 0 {
            let mut timeout = Duration::from_millis(wait).min(MAX_SLEEP);
            if let Some(d) = backoff_settle {
                timeout = timeout.min(d);
            }
            wait_socket::<crate::StdSocket>(None, timeout, false, Some(watcher.wake_fd()))
                .map_err(RunError::Wait)?;
            backoff_settle = None;
            match watcher.check() {
                Watch::Changed => {
                    // A new token deserves an attempt now, whatever the last one earned.
                    let fresh = tokens.load().ok();
                    if fresh.is_some() && fresh != last_token {
                        publisher.retry_now();
                    }
                }
                // The wake pipe is drained: wait out the settling period, not MAX_SLEEP.
                Watch::Settling(d) => backoff_settle = Some(d),
                Watch::Quiet => {}
            }
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
        last_token = Some(token.clone());
        let mut token_times = times(&token);
        if let Freshness::Expired { ago_s } = freshness(token_times, unix_now(), 0) {
            let retry_in_ms = publisher.note_failure();
            notify(Note::TokenExpired { ago_s, retry_in_ms });
            continue;
        }
        buffer.clear();
        buffer.resize(publisher.config().buffer_len(token.len()), 0);
        let mut session = match publisher.session(&mut buffer, token.as_str()) {
            Ok(session) => session,
            // The loop's head handles both.
            Err(SessionError::Backoff { .. } | SessionError::Finished) => continue,
            Err(e) => return Err(RunError::Session(e)),
        };
        let mut stopping = false;
        let mut rotating = false;
        let mut expiring_warned = false;
        let mut last_recheck = Instant::now();
        loop {
            if !stopping && stop.load(Ordering::SeqCst) {
                session.stop();
                stopping = true;
            }
            let mut settle = None;
            // Checked even while draining: it also empties the wake pipe, which would
            // otherwise keep poll(2) returning at once.
            let watched = watcher.check();
            if !stopping && !rotating {
                let mut reread = false;
                match watched {
                    Watch::Changed => reread = true,
                    Watch::Settling(d) => settle = Some(d),
                    Watch::Quiet => {}
                }
                let mut expiring = None;
                if let f @ (Freshness::Expiring { .. } | Freshness::Expired { .. }) =
                    freshness(token_times, unix_now(), margin_s)
                {
                    if last_recheck.elapsed() >= EXPIRING_RECHECK {
                        reread = true;
                        last_recheck = Instant::now();
                        expiring = Some(f);
                    }
                    settle = Some(
                        settle.map_or(EXPIRING_RECHECK, |d: Duration| d.min(EXPIRING_RECHECK)),
                    );
                }
                let mut changed = false;
                if reread {
                    if let Ok(fresh) = tokens.load() {
                        if fresh != token {
                            changed = true;
                            token_times = times(&fresh);
                            notify(Note::TokenChanged {
                                exp: token_times.exp,
                            });
                            session.rotate();
                            rotating = true;
                        }
                    }
                }
                // Warn once, and only when the re-read found nothing newer.
                if let (Some(f), false, false) = (expiring, changed, expiring_warned) {
                    expiring_warned = true;
                    notify(match f {
                        Freshness::Expired { ago_s } => Note::TokenExpiredInUse { ago_s },
                        _ => Note::TokenExpiring {
                            expires_in_s: token_times
                                .exp
                                .map_or(0, |e| e.saturating_sub(unix_now())),
                        },
                    });
                }
            }
            match session.poll(&mut |event| notify(Note::Event(event))) {
                Status::Busy => {}
                Status::Wait { ms, writable } => {
                    let mut timeout = Duration::from_millis(ms)
                        .min(MAX_SLEEP)
                        .min(watcher.next_check_in());
                    if let Some(d) = settle {
                        timeout = timeout.min(d);
                    }
                    let wake = Some(watcher.wake_fd());
                    session
                        .with_socket(|socket| wait_socket(Some(socket), timeout, writable, wake))
                        .unwrap_or_else(|| wait_socket::<S::TcpSocket>(None, timeout, false, wake))
                        .map_err(RunError::Wait)?;
                }
                Status::Ended(_) => break,
            }
        }
    }
}
