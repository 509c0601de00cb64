//! Running a measured client: CPU time and peak RSS from `getrusage`, CPU samples from
//! `/proc/<pid>/task/*/schedstat`, and a bounded wait.
//!
//! `getrusage(RUSAGE_CHILDREN)` sums over *all* reaped children and reports the largest peak
//! RSS among them, so the bench cannot call it for one of many children. Each measured client
//! therefore runs under a tiny wrapper, `satmqtt-bench rusage <file> -- <program> <args>`,
//! which has exactly one child: it writes the child's pid to `<file>` at once, waits for it,
//! and appends the child's user and system time and peak RSS. No `unsafe`: `nix` wraps
//! `getrusage`.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// What the kernel accounted to one finished client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// User CPU time.
    pub user: Duration,
    /// System CPU time.
    pub sys: Duration,
    /// Peak resident set size, KiB.
    pub max_rss_kib: u64,
    /// Exit code (-1: killed by a signal).
    pub code: i32,
}

impl Usage {
    /// User plus system time.
    pub fn cpu(&self) -> Duration {
        self.user + self.sys
    }
}

/// `satmqtt-bench rusage <file> -- <program> <args...>`: see the module doc.
pub fn wrapper_main(out: &Path, program: &OsStr, args: &[OsString]) -> ExitCode {
    let mut child = match Command::new(program).args(args).spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("rusage: cannot run {}: {e}", program.to_string_lossy());
            return ExitCode::from(127);
        }
    };
    let mut file = match fs::File::create(out) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("rusage: cannot write {}: {e}", out.display());
            let _ = child.kill();
            let _ = child.wait();
            return ExitCode::from(2);
        }
    };
    let _ = writeln!(file, "pid {}", child.id());
    let _ = file.flush();
    let code = match child.wait() {
        Ok(status) => status.code().unwrap_or(-1),
        Err(_) => -1,
    };
    match getrusage(UsageWho::RUSAGE_CHILDREN) {
        Ok(u) => {
            let us = |t: nix::sys::time::TimeVal| t.tv_sec() * 1_000_000 + t.tv_usec();
            let _ = writeln!(
                file,
                "code {code}\nuser_us {}\nsys_us {}\nmaxrss_kib {}",
                us(u.user_time()),
                us(u.system_time()),
                u.max_rss()
            );
        }
        Err(e) => eprintln!("rusage: getrusage failed: {e}"),
    }
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// A client started under the wrapper.
pub struct Measured {
    /// The client's stdin when it was spawned with `Stdio::piped()`.
    pub stdin: Option<std::process::ChildStdin>,
    rx: mpsc::Receiver<Instant>,
    file: PathBuf,
    started: Instant,
    name: String,
}

fn spawn_raw(mut wrapped: Command, file: &Path, name: &str) -> io::Result<Measured> {
    let started = Instant::now();
    let mut child: Child = wrapped.spawn()?;
    let stdin = child.stdin.take();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = child.wait();
        let _ = tx.send(Instant::now());
    });
    Ok(Measured {
        stdin,
        rx,
        file: file.to_path_buf(),
        started,
        name: name.to_owned(),
    })
}

/// Starts `command` under the wrapper (`wrapper` is this executable) with the given stdio,
/// which the client inherits; the result file goes to `file`.
pub fn spawn(
    wrapper: &Path,
    file: &Path,
    command: &Command,
    stdio: [std::process::Stdio; 3],
    name: &str,
) -> io::Result<Measured> {
    let _ = fs::remove_file(file);
    let [stdin, stdout, stderr] = stdio;
    let mut wrapped = Command::new(wrapper);
    wrapped
        .arg("rusage")
        .arg(file)
        .arg("--")
        .arg(command.get_program())
        .args(command.get_args())
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    for (key, value) in command.get_envs() {
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    spawn_raw(wrapped, file, name)
}

impl Measured {
    /// When it was spawned.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The client's pid (not the wrapper's), once the wrapper has written it.
    pub fn pid(&self) -> Option<u32> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(pid) = read_kv(&self.file, "pid") {
                return u32::try_from(pid).ok();
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits at most `timeout` for the client to exit (SIGKILL after that); returns when it
    /// exited and what it used.
    pub fn wait(self, timeout: Duration) -> anyhow::Result<(Instant, Usage)> {
        let exited = match self.rx.recv_timeout(timeout) {
            Ok(at) => at,
            Err(_) => {
                if let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                let _ = self.rx.recv_timeout(Duration::from_secs(5));
                anyhow::bail!("{} did not finish within {timeout:?}", self.name);
            }
        };
        let get = |key| {
            read_kv(&self.file, key).ok_or_else(|| {
                anyhow::anyhow!("{}: no `{key}` in {}", self.name, self.file.display())
            })
        };
        let usage = Usage {
            user: Duration::from_micros(get("user_us")? as u64),
            sys: Duration::from_micros(get("sys_us")? as u64),
            max_rss_kib: get("maxrss_kib")? as u64,
            code: get("code")? as i32,
        };
        Ok((exited, usage))
    }
}

fn read_kv(file: &Path, key: &str) -> Option<i64> {
    let text = fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// CPU time (user + system, all threads) a running process has used so far, from the
/// scheduler's nanosecond accounting; None once it is gone.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        let stat = fs::read_to_string(task.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}
