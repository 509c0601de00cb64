//! The `pod-publisher` binary, built once per test process and run as a subprocess.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::tools::signal_child;
use crate::wait::wait_until;
use crate::Broker;

/// Package and binary name.
const PACKAGE: &str = "pod-publisher";
/// Upper bound for building it (a cold build of the workspace included).
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
/// Environment variables removed from the publisher's environment so the test controls its
/// configuration completely (`SATMQTT_*` and `AIO_*` are removed by prefix).
const SCRUBBED_ENV: &[&str] = &["POD_NAME", "HOSTNAME", "RUST_LOG"];

static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// A running `pod-publisher`, its stdout and stderr captured to files. Killed and reaped on drop.
pub struct Publisher {
    child: Child,
    output_dir: TempDir,
    started: Instant,
    status: Option<ExitStatus>,
}

/// Arguments and environment for a [`Publisher`]; see [`Publisher::builder`].
#[derive(Debug, Default, Clone)]
pub struct PublisherBuilder {
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
}

impl Publisher {
    /// Path of the `pod-publisher` binary, built on first use in this process.
    ///
    /// Runs `$CARGO build -q -p pod-publisher` on the workspace (`CARGO`, else `cargo` on `PATH`)
    /// and takes the executable's path from cargo's JSON artifact messages, so `CARGO_TARGET_DIR`,
    /// `build.target-dir` and friends are all honoured. Cargo's build lock serialises concurrent
    /// test processes; after the first build each call is a no-op check.
    ///
    /// # Panics
    /// If the build fails (cargo's diagnostics are in the message).
    pub fn binary() -> &'static Path {
        match BINARY.get_or_init(build_binary) {
            Ok(path) => path,
            Err(message) => panic!("{message}"),
        }
    }

    /// Starts describing a publisher run.
    pub fn builder() -> PublisherBuilder {
        PublisherBuilder::default()
    }

    /// Waits for the process to exit, for at most `timeout`. `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            let child = &mut self.child;
            self.status = wait_until(timeout, || child.try_wait().ok().flatten());
        }
        self.status
    }

    /// Waits (bounded) for the process to exit with status 0 and returns how long it ran.
    ///
    /// # Panics
    /// If it is still running after `timeout` (it is killed) or exits unsuccessfully; the message
    /// contains its output.
    #[track_caller]
    pub fn wait_for_success(&mut self, timeout: Duration) -> Duration {
        match self.wait_timeout(timeout) {
            Some(status) if status.success() => self.started.elapsed(),
            Some(status) => panic!("pod-publisher exited with {status}\n{}", self.describe()),
            None => {
                self.kill();
                panic!(
                    "pod-publisher did not exit within {timeout:?} (killed)\n{}",
                    self.describe()
                )
            }
        }
    }

    /// Sends `signal` (e.g. SIGTERM for a graceful shutdown) without waiting.
    pub fn signal(&self, signal: Signal) {
        if self.status.is_none() {
            signal_child(&self.child, signal);
        }
    }

    /// SIGKILLs the process (if it still runs) and reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("reaping pod-publisher");
        self.status = Some(status);
        status
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// When the process was spawned.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.output_dir.path().join("stdout"))
    }

    /// Everything written to stderr so far (the log).
    pub fn stderr(&self) -> String {
        read_lossy(&self.output_dir.path().join("stderr"))
    }

    /// stdout followed by stderr.
    pub fn output_text(&self) -> String {
        self.stdout() + &self.stderr()
    }

    /// The last non-empty line of stderr.
    pub fn last_log_line(&self) -> Option<String> {
        self.stderr()
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(str::to_string)
    }

    /// stdout and stderr, labelled, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "--- pod-publisher stdout ---\n{}\n--- pod-publisher stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.kill();
    }
}

impl PublisherBuilder {
    /// `--host 127.0.0.1 --port <broker port>`.
    pub fn broker(self, broker: &Broker) -> Self {
        self.arg("--host")
            .arg(Broker::HOST)
            .arg("--port")
            .arg(broker.port().to_string())
    }

    /// `--token-file <path>`.
    pub fn token_file(self, path: impl AsRef<Path>) -> Self {
        self.arg("--token-file").arg(path.as_ref())
    }

    /// `--client-id <id>`.
    pub fn client_id(self, id: &str) -> Self {
        self.arg("--client-id").arg(id)
    }

    /// One more argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// More arguments.
    pub fn args<I, S>(self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        args.into_iter().fold(self, |builder, arg| builder.arg(arg))
    }

    /// An environment variable. The publisher otherwise gets the test's environment minus
    /// `SATMQTT_*`, `AIO_*`, `POD_NAME`, `HOSTNAME` and `RUST_LOG`.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Spawns the publisher (building it first if needed).
    pub fn spawn(self) -> Publisher {
        let binary = Publisher::binary();
        let output_dir = tempfile::Builder::new()
            .prefix("satmqtt-publisher-")
            .tempdir()
            .expect("creating the publisher's output dir");
        let create = |name: &str| {
            fs::File::create(output_dir.path().join(name))
                .unwrap_or_else(|e| panic!("creating {name} capture file: {e}"))
        };
        let mut command = Command::new(binary);
        for (key, _) in std::env::vars_os() {
            let scrub = key.to_str().is_some_and(|k| {
                k.starts_with("SATMQTT_") || k.starts_with("AIO_") || SCRUBBED_ENV.contains(&k)
            });
            if scrub {
                command.env_remove(&key);
            }
        }
        let child = command
            .envs(self.envs)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(create("stdout"))
            .stderr(create("stderr"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", binary.display()));
        Publisher {
            child,
            output_dir,
            started: Instant::now(),
            status: None,
        }
    }
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

fn build_binary() -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let tests_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = tests_dir.parent().unwrap_or(tests_dir).join("Cargo.toml");
    let logs = tempfile::tempdir().map_err(|e| format!("creating a temp dir: {e}"))?;
    let file = |name: &str| {
        fs::File::create(logs.path().join(name)).map_err(|e| format!("creating {name}: {e}"))
    };
    let mut command = Command::new(&cargo);
    // Cargo gives this test process the variables of the tests crate (CARGO_PKG_NAME,
    // CARGO_MANIFEST_DIR, OUT_DIR, ...). Build scripts that watch them (ring's does) would see
    // them change between this build and the shell's, and each would rebuild what the other
    // built: tens of seconds on every run.
    for (key, _) in std::env::vars_os() {
        let per_crate = key.to_str().is_some_and(|k| {
            k == "OUT_DIR" || k.starts_with("CARGO_PKG_") || k.starts_with("CARGO_MANIFEST_")
        });
        if per_crate {
            command.env_remove(&key);
        }
    }
    let mut child = command
        .args(["build", "-q", "-p", PACKAGE, "--bin", PACKAGE])
        .arg("--message-format=json-render-diagnostics")
        .arg("--manifest-path")
        .arg(&manifest)
        .stdin(Stdio::null())
        .stdout(file("stdout")?)
        .stderr(file("stderr")?)
        .spawn()
        .map_err(|e| format!("running {}: {e}", cargo.to_string_lossy()))?;
    let Some(status) = wait_until(BUILD_TIMEOUT, || child.try_wait().ok().flatten()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "`cargo build -p {PACKAGE}` took longer than {BUILD_TIMEOUT:?}"
        ));
    };
    let stderr = read_lossy(&logs.path().join("stderr"));
    if !status.success() {
        return Err(format!(
            "`cargo build -p {PACKAGE}` failed ({status}); the integration tests run that binary.\n{stderr}"
        ));
    }
    read_lossy(&logs.path().join("stdout"))
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == PACKAGE)
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| format!("`cargo build -p {PACKAGE}` reported no executable.\n{stderr}"))
}
