//! Watching the projected token volume for rotation.
//!
//! The kubelet never rewrites `mqtt-client-token` in place: it writes a new timestamped
//! directory and renames a fresh `..data` symlink over the old one. So the *directory* is
//! watched (inotify through `notify`), not the file; file systems without events are covered
//! by a periodic re-stat of the resolved file. A burst of events settles for a short quiet
//! period before the token is read, and the caller compares contents: an equal token is not a
//! change.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use notify::{RecursiveMode, Watcher};

/// Quiet time after the last event before the token is read.
pub const SETTLE: Duration = Duration::from_millis(20);

/// What [`TokenWatcher::check`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Nothing new.
    Quiet,
    /// Events arrived; check again after this long.
    Settling(Duration),
    /// The directory changed and has settled: read the token again.
    Changed,
}

/// Identity of the file a path resolves to, for the re-stat fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileId {
    target: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
}

fn file_id(path: &Path) -> Option<FileId> {
    let target = std::fs::canonicalize(path).ok()?;
    let meta = std::fs::metadata(&target).ok()?;
    Some(FileId {
        target,
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

/// Watches a token file's directory; wakes a sleeping driver through [`TokenWatcher::wake_fd`].
pub struct TokenWatcher {
    path: PathBuf,
    // Kept alive for its background thread; None when inotify is unavailable.
    watcher: Option<notify::RecommendedWatcher>,
    dirty: Arc<AtomicBool>,
    last_event_ms: Arc<AtomicU64>,
    origin: Instant,
    wake_rx: UnixStream,
    stat_every: Duration,
    last_stat: Instant,
    last_id: Option<FileId>,
}

impl TokenWatcher {
    /// Starts watching the directory of `path`. If inotify cannot be used, the watcher still
    /// works by re-stat every `stat_every`; the error is returned beside it so the caller can
    /// say so.
    pub fn new(
        path: &Path,
        stat_every: Duration,
    ) -> std::io::Result<(Self, Option<notify::Error>)> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let dirty = Arc::new(AtomicBool::new(false));
        let last_event_ms = Arc::new(AtomicU64::new(0));
        let origin = Instant::now();
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let (flag, last) = (Arc::clone(&dirty), Arc::clone(&last_event_ms));
        let handler = move |event: notify::Result<notify::Event>| {
            // Reads (ours included: the driver re-reads the token) are not changes.
            if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
                last.store(origin.elapsed().as_millis() as u64, Ordering::SeqCst);
                flag.store(true, Ordering::SeqCst);
                // A full pipe already holds a wake-up.
                let _ = std::io::Write::write(&mut &wake_tx, &[1]);
            }
        };
        let (watcher, error) = match notify::recommended_watcher(handler)
            .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w))
        {
            Ok(w) => (Some(w), None),
            Err(e) => (None, Some(e)),
        };
        Ok((
            TokenWatcher {
                path: path.to_path_buf(),
                watcher,
                dirty,
                last_event_ms,
                origin,
                wake_rx,
                stat_every,
                last_stat: Instant::now(),
                last_id: file_id(path),
            },
            error,
        ))
    }

    /// Whether inotify events are arriving (false: re-stat fallback only).
    pub fn has_events(&self) -> bool {
        self.watcher.is_some()
    }

    /// Descriptor that becomes readable when a directory event arrives.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake_rx.as_fd()
    }

    /// Reports whether the token may have changed since the last `Changed`.
    pub fn check(&mut self) -> Watch {
        self.check_after(true)
    }

    /// [`TokenWatcher::check`] for a caller that polls [`TokenWatcher::wake_fd`] itself:
    /// `woken` says whether that poll saw it readable. The pipe is drained only then (or when
    /// events are pending), so a quiet watcher costs no syscall.
    pub fn check_after(&mut self, woken: bool) -> Watch {
        if woken || self.dirty.load(Ordering::SeqCst) {
            let mut sink = [0u8; 64];
            while matches!(std::io::Read::read(&mut &self.wake_rx, &mut sink), Ok(n) if n > 0) {}
        }
        if self.last_stat.elapsed() >= self.stat_every {
            self.last_stat = Instant::now();
            let id = file_id(&self.path);
            if id != self.last_id {
                self.last_id = id;
                self.dirty.store(false, Ordering::SeqCst);
                return Watch::Changed;
            }
        }
        if !self.dirty.load(Ordering::SeqCst) {
            return Watch::Quiet;
        }
        let now = self.origin.elapsed().as_millis() as u64;
        let quiet =
            Duration::from_millis(now.saturating_sub(self.last_event_ms.load(Ordering::SeqCst)));
        if quiet < SETTLE {
            return Watch::Settling(SETTLE - quiet);
        }
        self.dirty.store(false, Ordering::SeqCst);
        self.last_id = file_id(&self.path);
        Watch::Changed
    }

    /// Longest the driver may sleep before [`TokenWatcher::check`] must run again.
    pub fn next_check_in(&self) -> Duration {
        self.stat_every.saturating_sub(self.last_stat.elapsed())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A kubelet-style projected volume with one token in it.
    fn kubelet_dir(dir: &Path, stamp: &str, token: &str) {
        let data = dir.join(format!("..{stamp}"));
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("mqtt-client-token"), token).unwrap();
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..{stamp}"), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
        let link = dir.join("mqtt-client-token");
        if !link.exists() {
            std::os::unix::fs::symlink("..data/mqtt-client-token", &link).unwrap();
        }
    }

    fn wait_for(w: &mut TokenWatcher) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match w.check() {
                Watch::Changed => return true,
                Watch::Settling(d) => std::thread::sleep(d),
                Watch::Quiet => {
                    crate::net::wait_fds(&[w.wake_fd()], Duration::from_millis(200)).unwrap();
                }
            }
        }
        false
    }

    #[test]
    fn symlink_swap_is_seen_through_inotify_and_wakes_the_fd() {
        let dir = tempfile::tempdir().unwrap();
        kubelet_dir(dir.path(), "2026_01_01", "one");
        let path = dir.path().join("mqtt-client-token");
        let (mut w, err) = TokenWatcher::new(&path, Duration::from_secs(3600)).unwrap();
        assert!(err.is_none(), "inotify: {err:?}");
        assert_eq!(w.check(), Watch::Quiet);
        kubelet_dir(dir.path(), "2026_01_02", "two");
        assert!(wait_for(&mut w), "rotation not seen");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
    }

    #[test]
    fn restat_fallback_sees_a_swap_without_events() {
        let dir = tempfile::tempdir().unwrap();
        kubelet_dir(dir.path(), "a", "one");
        let path = dir.path().join("mqtt-client-token");
        let (mut w, _) = TokenWatcher::new(&path, Duration::ZERO).unwrap();
        // Pretend no events arrive: only the re-stat can notice.
        w.watcher = None;
        assert_eq!(w.check(), Watch::Quiet);
        kubelet_dir(dir.path(), "b", "two!");
        w.dirty.store(false, Ordering::SeqCst);
        assert_eq!(w.check(), Watch::Changed);
    }

    #[test]
    fn reading_the_token_is_not_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mqtt-client-token");
        std::fs::write(&path, "plain file, no kubelet layout").unwrap();
        let (mut w, err) = TokenWatcher::new(&path, Duration::from_secs(3600)).unwrap();
        assert!(err.is_none(), "inotify: {err:?}");
        for _ in 0..3 {
            std::fs::read(&path).unwrap();
        }
        // Give inotify time to deliver what it would; a read must not register.
        crate::net::wait_fds(&[w.wake_fd()], Duration::from_millis(200)).unwrap();
        assert_eq!(w.check(), Watch::Quiet);
        std::fs::write(&path, "changed").unwrap();
        assert!(wait_for(&mut w));
    }
}
