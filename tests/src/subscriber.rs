//! An independent subscriber: `mosquitto_sub`, not our code, tells what the broker delivered.
//!
//! How it is made reliable:
//! - `mosquitto_sub` runs without `-d`. With `-d` its debug lines share stdout with the payloads and
//!   are block-buffered when stdout is a pipe (measured: the SUBACK line only shows up once the
//!   first message flushes the buffer), so they cannot tell when the subscription is active. Without
//!   `-d`, stdout carries exactly one payload per line, flushed after every message.
//! - The subscription is known to be active when the broker logs `Sending SUBACK to <id>`; the
//!   subscriber has a unique client id (`-i`) so that line is unambiguous.
//! - "Everything has arrived" is decided with a sync marker, see [`Subscriber::sync`].

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::tools::{random_hex, require_program, run_bounded, terminate};
use crate::wait::wait_until;
use crate::{Broker, SUBSCRIBER_PASSWORD, SUBSCRIBER_USERNAME};

// A subscriber with a persistent session: `Subscriber::start_persistent`.
mod persistent;

/// How long the subscription may take to be acknowledged.
const SUBACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Payloads starting with this are sync markers, never reported as received.
const SYNC_PREFIX: &str = "satmqtt-tests-sync-";

/// One payload and when the subscriber printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// When the line was read from `mosquitto_sub`'s stdout.
    pub at: Instant,
    /// The payload (one line; payloads must not contain newlines).
    pub payload: String,
}

/// `mosquitto_sub -V mqttv5 -q 1` on one topic, as user [`SUBSCRIBER_USERNAME`], collecting payloads
/// in a background thread. Stopped on drop.
pub struct Subscriber {
    child: Child,
    client_id: String,
    topic: String,
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    reader: Option<JoinHandle<()>>,
    mosquitto_pub: PathBuf,
}

impl Subscriber {
    /// Subscribes to `topic` (QoS 1, MQTT v5) and returns once the broker has sent the SUBACK.
    ///
    /// # Panics
    /// If `mosquitto_sub` is missing, exits, or is not subscribed within 5 s.
    pub fn start(broker: &Broker, topic: &str) -> Subscriber {
        let client_id = format!("satmqtt-sub-{}", random_hex(8));
        Self::spawn(broker, topic, &client_id, &[])
    }

    /// Starts `mosquitto_sub` as `client_id` with `extra` arguments, collects its lines, and
    /// waits for its SUBACK.
    fn spawn(broker: &Broker, topic: &str, client_id: &str, extra: &[&str]) -> Subscriber {
        let mosquitto_sub = require_program("mosquitto_sub");
        let mosquitto_pub = require_program("mosquitto_pub");
        let port = broker.port().to_string();
        let mut child = Command::new(&mosquitto_sub)
            .args(["-h", Broker::HOST, "-p", &port, "-V", "mqttv5"])
            .args(["-u", SUBSCRIBER_USERNAME, "-P", SUBSCRIBER_PASSWORD])
            .args(["-q", "1", "-t", topic, "-i", client_id])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", mosquitto_sub.display()));

        let received = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let sink = Arc::clone(&received);
        let reader = std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match stdout.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if line.ends_with(b"\n") {
                            line.pop();
                        }
                        let payload = String::from_utf8_lossy(&line).into_owned();
                        lock(&sink).push(Received {
                            at: Instant::now(),
                            payload,
                        });
                    }
                }
            }
        });

        let mut subscriber = Subscriber {
            child,
            client_id: client_id.to_string(),
            topic: topic.to_string(),
            port: broker.port(),
            received,
            reader: Some(reader),
            mosquitto_pub,
        };
        subscriber.wait_for_suback(broker);
        subscriber
    }

    fn wait_for_suback(&mut self, broker: &Broker) {
        let suback = format!("Sending SUBACK to {}", self.client_id);
        let subscribed = wait_until(SUBACK_TIMEOUT, || {
            if broker.events().messages().any(|m| m == suback) {
                return Some(Ok(()));
            }
            match self.child.try_wait() {
                Ok(None) => None,
                Ok(Some(status)) => Some(Err(format!("mosquitto_sub exited with {status}"))),
                Err(e) => Some(Err(e.to_string())),
            }
        });
        let problem = match subscribed {
            Some(Ok(())) => return,
            Some(Err(problem)) => problem,
            None => format!("no `{suback}` in the broker log within {SUBACK_TIMEOUT:?}"),
        };
        terminate(&mut self.child, Duration::from_secs(1));
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        panic!(
            "subscriber on `{}` did not come up: {problem}\n--- mosquitto_sub stderr ---\n{stderr}\n\
             --- broker log ---\n{}",
            self.topic,
            broker.log()
        );
    }

    /// The subscriber's MQTT client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Everything received so far, in arrival order (sync markers excluded).
    pub fn received(&self) -> Vec<Received> {
        lock(&self.received)
            .iter()
            .filter(|r| !r.payload.starts_with(SYNC_PREFIX))
            .cloned()
            .collect()
    }

    /// The payloads received so far, in arrival order (sync markers excluded).
    pub fn payloads(&self) -> Vec<String> {
        self.received().into_iter().map(|r| r.payload).collect()
    }

    /// Waits until at least `n` payloads have arrived, for at most `timeout`, and returns all
    /// payloads received by then (possibly fewer than `n`: the caller asserts).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let _ = wait_until(timeout, || (self.payloads().len() >= n).then_some(()));
        self.payloads()
    }

    /// Returns every payload the broker routed to this subscriber before this call.
    ///
    /// Publishes a unique marker to the topic (QoS 1, as the subscriber user) and waits for it. The
    /// broker queues messages to a subscriber in the order it processed them, so once the marker is
    /// here, everything a publisher got acknowledged (or that the broker logged as received) before
    /// the call has arrived too, and any duplicate the broker would deliver is in the result.
    ///
    /// # Panics
    /// If the marker does not arrive within `timeout`.
    pub fn sync(&self, timeout: Duration) -> Vec<String> {
        let marker = format!("{SYNC_PREFIX}{}", random_hex(16));
        let port = self.port.to_string();
        let sync_id = format!("{}-sync", self.client_id);
        let mut publish = Command::new(&self.mosquitto_pub);
        publish
            .args(["-h", Broker::HOST, "-p", &port, "-V", "mqttv5"])
            .args(["-u", SUBSCRIBER_USERNAME, "-P", SUBSCRIBER_PASSWORD])
            .args(["-q", "1", "-t", &self.topic, "-m", &marker, "-i", &sync_id]);
        let output = run_bounded(&mut publish, timeout);
        assert!(
            output.status.success(),
            "mosquitto_pub of the sync marker failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let arrived = wait_until(timeout, || {
            lock(&self.received)
                .iter()
                .any(|r| r.payload == marker)
                .then_some(())
        });
        assert!(
            arrived.is_some(),
            "the sync marker did not reach the subscriber within {timeout:?}; received so far: {} payloads",
            self.payloads().len()
        );
        self.payloads()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(2));
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn lock(received: &Mutex<Vec<Received>>) -> MutexGuard<'_, Vec<Received>> {
    // A panic in the reader thread cannot leave the Vec half-updated: keep using it.
    received
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
