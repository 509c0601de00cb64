//! Stopping and starting a broker again on the same port, with persistence.
//!
//! mosquitto 2.0.11 writes its in-memory database (retained messages, persistent sessions and
//! their queued QoS 1 messages) to `persistence_location/persistence_file` when it exits on
//! SIGTERM, and reads it back when it starts. It sets `SO_REUSEADDR` on its listener, so the
//! same port can be bound again at once.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{Broker, START_TIMEOUT};
use crate::tools::{require_program, signal_child};
use crate::wait::wait_until;

/// File name of the persistence database, in the broker's temp dir.
const PERSISTENCE_FILE: &str = "mosquitto.db";
/// How long mosquitto gets to save its database and exit after SIGTERM.
const SAVE_GRACE: Duration = Duration::from_secs(10);

impl Broker {
    /// Like [`Broker::start`], with `persistence true` and the database in the broker's temp dir
    /// ([`Broker::persistence_path`]), so [`Broker::restart`] keeps persistent sessions.
    ///
    /// # Panics
    /// As [`Broker::start`].
    pub fn start_persistent(sat_token: &str) -> Broker {
        let mut broker = Broker::start(sat_token);
        broker.stop();
        let config = broker.dir.path().join("mosquitto.conf");
        let text = fs::read_to_string(&config).expect("reading mosquitto.conf");
        assert!(
            text.contains("persistence false\n"),
            "unexpected mosquitto.conf:\n{text}"
        );
        let text = text.replace(
            "persistence false\n",
            &format!(
                "persistence true\npersistence_location {}/\npersistence_file {PERSISTENCE_FILE}\n",
                broker.dir.path().display()
            ),
        );
        fs::write(&config, text).expect("writing mosquitto.conf");
        broker.resume();
        broker
    }

    /// Where a broker made by [`Broker::start_persistent`] keeps its database.
    pub fn persistence_path(&self) -> PathBuf {
        self.dir.path().join(PERSISTENCE_FILE)
    }

    /// Whether the broker process is running (false after [`Broker::stop`]).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the broker with SIGTERM (mosquitto saves its database, if persistent) and reaps it.
    /// Its port stays reserved for [`Broker::resume`] only by convention: nothing else in the tests
    /// binds a port it did not get from the kernel.
    ///
    /// # Panics
    /// If it does not exit within 10 s (it is killed first), or exits unsuccessfully.
    pub fn stop(&mut self) {
        if !self.is_running() {
            return;
        }
        signal_child(&self.child, Signal::SIGTERM);
        let child = &mut self.child;
        let status = wait_until(SAVE_GRACE, || child.try_wait().ok().flatten());
        let Some(status) = status else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "mosquitto did not exit within {SAVE_GRACE:?} of SIGTERM (killed).\n--- log ---\n{}",
                self.log()
            );
        };
        assert!(
            status.success(),
            "mosquitto exited with {status} on SIGTERM.\n--- log ---\n{}",
            self.log()
        );
    }

    /// Starts the stopped broker again: same configuration, password file, port and log file
    /// (appended to). Returns once the new process logs that it is running.
    ///
    /// # Panics
    /// If it is still running, or the new process does not come up within 5 s (for example
    /// because another process took the port meanwhile).
    pub fn resume(&mut self) {
        assert!(!self.is_running(), "resume() of a running broker");
        let running_lines = |log: &str| {
            log.lines()
                .filter(|l| l.contains("mosquitto version") && l.ends_with(" running"))
                .count()
        };
        let before = running_lines(&self.log());
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.stderr"))
            .expect("opening mosquitto.stderr");
        let mosquitto = require_program("mosquitto");
        self.child = Command::new(&mosquitto)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", mosquitto.display()));
        let up = wait_until(START_TIMEOUT, || {
            if running_lines(&self.log()) > before {
                return Some(Ok(()));
            }
            match self.child.try_wait() {
                Ok(None) => None,
                Ok(Some(status)) => Some(Err(format!("mosquitto exited with {status}"))),
                Err(e) => Some(Err(e.to_string())),
            }
        });
        let problem = match up {
            Some(Ok(())) => return,
            Some(Err(problem)) => problem,
            None => format!("not running within {START_TIMEOUT:?}"),
        };
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "restarting mosquitto on port {} failed: {problem}\n--- log ---\n{}\n--- stderr ---\n{}",
            self.port,
            self.log(),
            fs::read_to_string(self.dir.path().join("mosquitto.stderr")).unwrap_or_default()
        );
    }

    /// [`Broker::stop`] then [`Broker::resume`].
    pub fn restart(&mut self) {
        self.stop();
        self.resume();
    }
}
