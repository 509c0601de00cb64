//! The std side of the core's [`Driver`]: the token file as a [`TokenSource`] (re-read before
//! every connection and re-authentication, watched for the kubelet's `..data` swap), and the
//! wait between polls in `poll(2)` on the socket and the watcher's wake descriptor, so the
//! process sleeps until the broker speaks, the socket takes bytes, the token changes, a deadline
//! comes, or a signal arrives. It reads the socket only when `poll(2)` said it is readable.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use embedded_nal::TcpClientStack;
use rustix::event::{PollFd, PollFlags};
use satmqtt::{
    Buffers, Config, Driver, DriverError, Event, Progress, Ready, Status, Token as CoreToken,
    TokenSource, MAX_TOKEN_LEN, RX_MIN,
};
use zeroize::Zeroizing;

use crate::net::{poll_timeout, Waitable};
use crate::token::{jwt_expiry, TokenError, TokenFile};
use crate::watch::{TokenWatcher, Watch};
use crate::StdClock;

/// Longest single sleep: a stop flag raised by a signal that raced the wait is seen this fast.
const MAX_SLEEP: Duration = Duration::from_millis(1_000);

/// Receive buffer: the largest packet the broker may send us (our Maximum Packet Size).
pub const RX_LEN: usize = 4_096;

/// Driver settings beyond the core's [`Config`].
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Re-stat period of the token file when inotify events are missing.
    pub restat_every: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            restat_every: Duration::from_secs(5),
        }
    }
}

/// The projected token file as the core's token source.
pub struct FileTokens {
    file: TokenFile,
    watcher: TokenWatcher,
    /// Events arrived and are settling: look again after this long.
    settle: Option<Duration>,
    /// The last wait saw the watcher's wake descriptor readable.
    woken: bool,
    last_error: Option<TokenError>,
}

impl FileTokens {
    /// Watches `file`'s directory; the error says why inotify is unavailable (re-stat only).
    pub fn new(
        file: TokenFile,
        restat_every: Duration,
    ) -> io::Result<(FileTokens, Option<notify::Error>)> {
        let (watcher, error) = TokenWatcher::new(file.path(), restat_every)?;
        Ok((
            FileTokens {
                file,
                watcher,
                settle: None,
                woken: true,
                last_error: None,
            },
            error,
        ))
    }

    /// Why the last load failed.
    pub fn last_error(&self) -> Option<&TokenError> {
        self.last_error.as_ref()
    }

    /// The token file.
    pub fn file(&self) -> &TokenFile {
        &self.file
    }
}

/// The token file could not be used; [`FileTokens::last_error`] says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the token file could not be used")
    }
}

impl TokenSource for FileTokens {
    type Error = Unavailable;

    fn load(&mut self, buf: &mut [u8]) -> Result<CoreToken, Unavailable> {
        let token = match self.file.load() {
            Ok(token) => token,
            Err(e) => {
                self.last_error = Some(e);
                return Err(Unavailable);
            }
        };
        let bytes = token.as_str().as_bytes();
        let Some(dst) = buf.get_mut(..bytes.len()) else {
            self.last_error = Some(TokenError::TooLarge {
                path: self.file.path().to_owned(),
                len: bytes.len(),
            });
            return Err(Unavailable);
        };
        dst.copy_from_slice(bytes);
        self.last_error = None;
        Ok(CoreToken {
            len: bytes.len(),
            exp: jwt_expiry(token.as_str()).and_then(|t| t.exp),
        })
    }

    fn changed(&mut self) -> bool {
        match self.watcher.check_after(std::mem::take(&mut self.woken)) {
            Watch::Changed => {
                self.settle = None;
                true
            }
            Watch::Settling(d) => {
                self.settle = Some(d);
                false
            }
            Watch::Quiet => {
                self.settle = None;
                false
            }
        }
    }

    fn unix_now(&self) -> Option<u64> {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    }
}

/// What the driver reports to the program; the program decides what to log.
pub enum Note<'a> {
    /// An event from the core, with the stack's own words when it is about a network error.
    Event {
        /// The event.
        event: &'a Event,
        /// The last socket or TLS error, in full (the event carries only its kind).
        stack_error: Option<&'a dyn std::fmt::Display>,
    },
    /// The token file could not be read before a connection attempt.
    TokenUnavailable {
        /// What is wrong with it (never its content).
        error: &'a TokenError,
        /// Milliseconds before the next attempt.
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
    /// The driver refused (configuration, buffers) or gave up (the broker refuses the job).
    Driver(Box<DriverError>),
    /// Waiting on the socket, or watching the token directory, failed.
    Wait(io::Error),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Driver(e) => write!(f, "{e}"),
            RunError::Wait(e) => write!(f, "waiting on the socket failed: {e}"),
        }
    }
}

impl std::error::Error for RunError {}

/// Publishes the job `cfg` on `stack` with the token in `tokens` until it is done or `stop` is
/// raised; `seed` feeds the backoff jitter.
pub fn run<S>(
    cfg: &Config<'_>,
    stack: S,
    tokens: TokenFile,
    options: RunOptions,
    seed: u64,
    stop: &AtomicBool,
    mut notify: impl FnMut(Note<'_>),
) -> Result<Outcome, RunError>
where
    S: TcpClientStack,
    S::TcpSocket: Waitable,
    S::Error: std::fmt::Display,
{
    let (source, watch_error) =
        FileTokens::new(tokens, options.restat_every).map_err(RunError::Wait)?;
    if let Some(e) = &watch_error {
        notify(Note::WatchDegraded(e));
    }
    let mut rx = vec![0u8; RX_LEN.max(RX_MIN)];
    let token_room = MAX_TOKEN_LEN;
    let tx_room = satmqtt::tx_len(
        token_room,
        cfg.client_id.len(),
        cfg.topic.len(),
        cfg.payload_prefix.len(),
    )
    // Room for a window of PUBLISHes in one write: coalescing is what keeps syscalls down.
    .max(64 * 1024);
    // Both can hold the token (CONNECT, AUTH): zeroed when dropped.
    let mut tx = Zeroizing::new(vec![0u8; tx_room]);
    let mut token = Zeroizing::new(vec![0u8; token_room]);
    let buffers = Buffers {
        rx: &mut rx,
        tx: &mut tx,
        token: &mut token,
    };
    let mut driver = Driver::new(cfg, stack, StdClock::new(), source, buffers, seed)
        .map_err(|e| RunError::Driver(Box::new(e)))?;
    let mut ready = Ready::ALL;
    loop {
        if stop.load(Ordering::SeqCst) {
            driver.stop();
        }
        let status = driver
            .poll(ready)
            .map_err(|e| RunError::Driver(Box::new(e)));
        while let Some(event) = driver.poll_event() {
            report(&mut driver, &event, &mut notify);
        }
        let (ms, readable, writable) = match status? {
            Status::Finished(p) => return Ok(Outcome::Finished(p)),
            Status::Stopped(p) => return Ok(Outcome::Stopped(p)),
            Status::Wait {
                ms,
                readable,
                writable,
            } => (ms, readable, writable),
        };
        if ms == 0 {
            ready = Ready::ALL;
            continue;
        }
        let tokens = driver.tokens_mut();
        let mut timeout = Duration::from_millis(ms)
            .min(MAX_SLEEP)
            .min(tokens.watcher.next_check_in());
        if let Some(d) = tokens.settle {
            timeout = timeout.min(d);
        }
        let (socket, woken) = wait(&driver, readable, writable, timeout).map_err(RunError::Wait)?;
        driver.tokens_mut().woken |= woken;
        ready = socket;
    }
}

fn report<S>(
    driver: &mut Driver<'_, '_, S, StdClock, FileTokens>,
    event: &Event,
    notify: &mut impl FnMut(Note<'_>),
) where
    S: TcpClientStack,
    S::Error: std::fmt::Display,
{
    match event {
        Event::TokenUnavailable { retry_in_ms } => {
            if let Some(error) = driver.tokens().last_error() {
                return notify(Note::TokenUnavailable {
                    error,
                    retry_in_ms: *retry_in_ms,
                });
            }
        }
        Event::Disconnected { .. } => {
            let error = driver.take_stack_error();
            return notify(Note::Event {
                event,
                stack_error: error.as_ref().map(|e| e as &dyn std::fmt::Display),
            });
        }
        _ => {}
    }
    notify(Note::Event {
        event,
        stack_error: None,
    })
}

/// Sleeps in `poll(2)` until the socket is ready as asked, the token directory changes, a signal
/// arrives, or `timeout` passes; answers what the socket can do, and whether the watcher woke.
fn wait<S>(
    driver: &Driver<'_, '_, S, StdClock, FileTokens>,
    readable: bool,
    writable: bool,
    timeout: Duration,
) -> io::Result<(Ready, bool)>
where
    S: TcpClientStack,
    S::TcpSocket: Waitable,
{
    let socket = driver.socket();
    if readable && socket.is_some_and(|s| s.has_buffered_input()) {
        let ready = Ready {
            readable: true,
            writable: false,
        };
        return Ok((ready, false));
    }
    let writable = writable || socket.is_some_and(|s| s.wants_write());
    let mut interest = PollFlags::empty();
    if readable {
        interest |= PollFlags::IN;
    }
    if writable {
        interest |= PollFlags::OUT;
    }
    let socket_fd: Option<BorrowedFd<'_>> =
        socket.filter(|_| !interest.is_empty()).and_then(|s| s.fd());
    let wake = driver.tokens().watcher.wake_fd();
    let wake_fd = PollFd::from_borrowed_fd(wake, PollFlags::IN);
    // A fixed array, not a Vec: this runs on every wait, and the publisher allocates nothing
    // per message.
    let mut pair;
    let mut one;
    let list: &mut [PollFd<'_>] = match socket_fd {
        Some(fd) => {
            pair = [PollFd::from_borrowed_fd(fd, interest), wake_fd];
            &mut pair
        }
        None => {
            one = [wake_fd];
            &mut one
        }
    };
    match rustix::event::poll(list, Some(&poll_timeout(timeout))) {
        Ok(_) => {}
        // A signal: the caller looks at its stop flag at once.
        Err(rustix::io::Errno::INTR) => {}
        Err(e) => return Err(e.into()),
    }
    let (got, woken) = match list {
        [socket, wake] => (socket.revents(), !wake.revents().is_empty()),
        [wake] => (PollFlags::empty(), !wake.revents().is_empty()),
        _ => (PollFlags::empty(), false),
    };
    // Errors and hang-ups are reported by the next read or write: let both happen.
    let trouble = got.intersects(PollFlags::ERR | PollFlags::HUP);
    let ready = Ready {
        readable: got.contains(PollFlags::IN) || trouble,
        writable: got.contains(PollFlags::OUT) || trouble,
    };
    Ok((ready, woken))
}
