//! Liveness for Kubernetes: a heartbeat file, and a probe mode of the same binary that checks it.
//!
//! The publisher refreshes `--heartbeat-file` whenever its loop makes progress: a publish, an
//! acknowledgement, a connection, and also every failed attempt while it retries with backoff
//! (a publisher that retries correctly is alive; only a wedged loop is not). The refresh is at
//! most once a second. `pod-publisher --check-heartbeat FILE --max-age-s N` exits 0 if the file
//! was refreshed in the last N seconds and 1 otherwise; run as an exec liveness probe it needs
//! no shell, so it works in a distroless or scratch image, and unlike an HTTP endpoint it opens
//! no port and needs no extra thread.
//!
//! Freshness is the file's modification time against the wall clock (the probe runs in the same
//! container, so both read the same clock); a time in the future counts as fresh.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use log::warn;

/// Shortest time between two writes.
const MIN_GAP: Duration = Duration::from_secs(1);

/// The publisher's side: refreshes the file, at most once per [`MIN_GAP`].
#[derive(Debug)]
pub struct Heartbeat {
    path: PathBuf,
    last: Instant,
    failing: bool,
}

impl Heartbeat {
    /// Writes the file once; an error here is a configuration error (wrong path, read-only
    /// directory) and is returned.
    pub fn start(path: &Path) -> io::Result<Heartbeat> {
        if path.is_dir() {
            // The probe would read the directory's own time: say so now instead.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is a directory; name a file in it (e.g. /run/satmqtt/heartbeat)",
            ));
        }
        write(path)?;
        Ok(Heartbeat {
            path: path.to_owned(),
            last: Instant::now(),
            failing: false,
        })
    }

    /// Records progress: refreshes the file unless it was refreshed less than a second ago.
    /// A failed write is logged once per failure streak; the probe will tell the rest.
    pub fn beat(&mut self) {
        if self.last.elapsed() < MIN_GAP {
            return;
        }
        self.last = Instant::now();
        match write(&self.path) {
            Ok(()) => self.failing = false,
            Err(e) if !self.failing => {
                self.failing = true;
                warn!(
                    "cannot refresh the heartbeat file {}: {e}",
                    self.path.display()
                );
            }
            Err(_) => {}
        }
    }
}

fn write(path: &Path) -> io::Result<()> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // The content is for people; the probe reads the modification time.
    fs::write(path, format!("{now}\n"))
}

/// Longest time a healthy publisher can go without refreshing the heartbeat: the publish
/// interval, a full backoff delay plus a connect attempt, the keep-alive (a silent broker is
/// noticed at the ping timeout) or the DNS retry cap, whichever is longest, plus the write
/// throttle. A probe's `--max-age-s` must be above it.
pub fn quiet_bound(
    interval_ms: u64,
    backoff_cap_ms: u64,
    connect_timeout_ms: u64,
    keepalive_s: u16,
) -> Duration {
    let longest_ms = interval_ms
        .max(backoff_cap_ms.saturating_add(connect_timeout_ms))
        .max(u64::from(keepalive_s) * 1500)
        .max(crate::DNS_RETRY_CAP.as_millis() as u64);
    Duration::from_millis(longest_ms) + MIN_GAP
}

/// How old the heartbeat is; only a regular file is a heartbeat (a directory's time moves
/// whenever anything in it changes).
pub fn age(path: &Path) -> io::Result<Duration> {
    let metadata = fs::metadata(path)?;
    if !metadata.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let modified = metadata.modified()?;
    Ok(SystemTime::now()
        .duration_since(modified)
        .unwrap_or(Duration::ZERO))
}

/// The probe: prints one line (the kubelet shows it in the pod's events when the probe fails)
/// and exits 0 if `path` is at most `max_age_s` old, 1 otherwise.
pub fn check(path: &Path, max_age_s: u64) -> ExitCode {
    match age(path) {
        Ok(age) if age.as_secs() <= max_age_s => {
            println!(
                "heartbeat {} is {} s old (limit {max_age_s} s): alive",
                path.display(),
                age.as_secs()
            );
            ExitCode::SUCCESS
        }
        Ok(age) => {
            println!(
                "heartbeat {} is {} s old (limit {max_age_s} s): the publisher has made no \
                 progress since",
                path.display(),
                age.as_secs()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            println!(
                "cannot read the heartbeat {}: {e} (the publisher has not started, or runs \
                 without --heartbeat-file {0})",
                path.display()
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn start_writes_the_file_and_beat_is_throttled() {
        let dir = std::env::temp_dir().join(format!("satmqtt-hb-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("heartbeat");
        let mut heartbeat = Heartbeat::start(&path).unwrap();
        assert!(age(&path).unwrap() < Duration::from_secs(5));
        let old = SystemTime::now() - Duration::from_secs(300);
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        // Within a second of the last write: not written.
        heartbeat.beat();
        assert!(age(&path).unwrap() >= Duration::from_secs(299));
        // After it: written.
        heartbeat.last -= MIN_GAP;
        heartbeat.beat();
        assert!(age(&path).unwrap() < Duration::from_secs(5));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn start_fails_in_a_missing_directory() {
        let error = Heartbeat::start(Path::new("/nonexistent-satmqtt-dir/heartbeat")).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_directory_is_no_heartbeat() {
        let dir = std::env::temp_dir();
        assert_eq!(
            Heartbeat::start(&dir).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(age(&dir).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn the_quiet_bound_covers_the_longest_healthy_silence() {
        // Defaults: 1 s interval, 60 s backoff cap, 5 s connect timeout, 60 s keep-alive.
        assert_eq!(quiet_bound(1000, 60_000, 5000, 60), Duration::from_secs(91));
        assert_eq!(
            quiet_bound(600_000, 60_000, 5000, 60),
            Duration::from_secs(601)
        );
        assert_eq!(quiet_bound(0, 1000, 1000, 0), Duration::from_secs(31));
    }
}
