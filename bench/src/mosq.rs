//! A mosquitto the bench controls more closely than the tests' [`satmqtt_tests::Broker`]:
//! anonymous access (any password for `$sat`), a fixed port it can be restarted on, and extra
//! configuration lines.
//!
//! The main measurements use the tests' `Broker` (password file, `$sat` + token, exactly what
//! the integration tests run). Two cannot: token rotation needs a broker that accepts the old
//! and the new token at once (mosquitto keeps one password per user; the rotation measurement
//! adds an auth plugin through `extra`, see `measure::rotation`), and the restart measurement
//! needs to stop a broker and start another on the same port.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use satmqtt_tests::tools::{is_root, require_program, signal_child, terminate};
use tempfile::TempDir;

/// How long mosquitto may take to open its listener.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// A mosquitto on `127.0.0.1:<port>` with `allow_anonymous true`; stopped on drop.
pub struct Mosquitto {
    child: Option<Child>,
    dir: TempDir,
    port: u16,
    extra: String,
}

impl Mosquitto {
    /// Starts one on a free port with `extra` configuration lines.
    pub fn start(extra: &str) -> anyhow::Result<Mosquitto> {
        let dir = tempfile::Builder::new()
            .prefix("satmqtt-bench-broker-")
            .tempdir()
            .context("temp dir")?;
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .context("finding a free port")?
            .port();
        let mut broker = Mosquitto {
            child: None,
            dir,
            port,
            extra: extra.to_owned(),
        };
        broker.launch()?;
        Ok(broker)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    /// The broker's log so far (connections, refusals; never a password).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let mosquitto = require_program("mosquitto");
        let dir = self.dir.path();
        // Global options (`per_listener_settings`) must come before the listener.
        let (global, extra): (Vec<&str>, Vec<&str>) = self
            .extra
            .lines()
            .partition(|l| l.starts_with("per_listener_settings"));
        let mut config = format!(
            "{global}listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             log_dest file {log}\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n{extra}\n",
            global = global.iter().map(|l| format!("{l}\n")).collect::<String>(),
            port = self.port,
            log = self.log_path().display(),
            extra = extra.join("\n"),
        );
        if is_root() {
            config.push_str("user root\n");
        }
        let conf = dir.join("mosquitto.conf");
        fs::write(&conf, config).with_context(|| format!("writing {}", conf.display()))?;
        let _ = fs::remove_file(self.log_path());
        let child = Command::new(mosquitto)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning mosquitto")?;
        self.child = Some(child);
        wait_running(&self.log_path(), self.child.as_mut())
    }

    /// SIGTERM, then waits for the process to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_child(&child, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }

    /// Starts mosquitto again on the same port; returns once the listener is open.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.launch()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(2));
        }
    }
}

/// Polls the log every millisecond for mosquitto's `running` line.
fn wait_running(log: &Path, child: Option<&mut Child>) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut child = child;
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(|l| l.ends_with(" running")) {
            return Ok(());
        }
        if let Some(c) = child.as_deref_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                bail!("mosquitto exited with {status}:\n{text}");
            }
        }
        if Instant::now() >= deadline {
            bail!("mosquitto did not start within {START_TIMEOUT:?}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
