//! Finding the external programs the tests drive, and small process helpers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The command that installs everything the broker-backed tests need on Debian/Ubuntu.
pub const MOSQUITTO_INSTALL_HINT: &str =
    "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto mosquitto-clients";

/// Directories searched after `PATH`: Debian installs the broker as `/usr/sbin/mosquitto`, which is
/// not on a non-root user's `PATH`.
const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/local/sbin"];

/// Looks `name` up on `PATH`, then in the sbin directories. `None` if it is nowhere.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Like [`find_program`], but panics with the install command if the program is missing.
///
/// The broker-backed tests are the point of this crate: a machine without mosquitto must fail them
/// loudly, not skip them.
pub fn require_program(name: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| {
        panic!(
            "`{name}` was not found on PATH or in /usr/sbin. The satmqtt integration tests run a real \
             mosquitto broker and its clients; install them with:\n    {MOSQUITTO_INSTALL_HINT}\n\
             (or run `cargo xtask test`, which installs them when run as root)"
        )
    })
}

/// Whether this process runs with effective uid 0, read from `/proc/self/status`.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Sends `signal` to `child` unless it has already been reaped. Errors (already gone) are ignored.
pub fn signal_child(child: &Child, signal: Signal) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// Stops `child`: SIGTERM, up to `grace` for it to exit, then SIGKILL; always reaps it.
pub fn terminate(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal_child(child, Signal::SIGTERM);
    let exited = crate::wait::wait_until(grace, || match child.try_wait() {
        Ok(Some(_)) | Err(_) => Some(()),
        Ok(None) => None,
    });
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Runs a short-lived command with a deadline and returns its output.
///
/// stdout and stderr are pipes read after the exit, so this is only for commands that print little
/// (less than a pipe buffer, 64 KiB).
///
/// # Panics
/// If the command cannot be spawned or runs longer than `timeout` (it is killed first).
pub fn run_bounded(command: &mut Command, timeout: Duration) -> Output {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {program}: {e}"));
    if crate::wait::wait_until(timeout, || child.try_wait().ok().flatten()).is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{program} did not finish within {timeout:?}");
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("collecting the output of {program}: {e}"))
}

/// Reads `len` random bytes from the kernel (`/dev/urandom`).
pub fn random_bytes(len: usize) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes
}

/// `len` random lowercase hex characters (`len` is rounded up to even).
pub fn random_hex(len: usize) -> String {
    random_bytes(len.div_ceil(2))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..len]
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_not_a_made_up_program() {
        assert!(find_program("sh").is_some());
        assert!(find_program("satmqtt-no-such-program").is_none());
    }

    #[test]
    #[should_panic(expected = "apt-get install -y mosquitto mosquitto-clients")]
    fn a_missing_program_panics_with_the_install_command() {
        require_program("satmqtt-no-such-program");
    }

    #[test]
    fn random_hex_has_the_requested_length_and_varies() {
        let a = random_hex(11);
        assert_eq!(a.len(), 11);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(random_hex(32), random_hex(32));
    }
}
