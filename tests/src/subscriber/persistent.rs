//! A subscriber whose session outlives its connection (and, with a persistent broker, a broker
//! restart): fixed client id, `-c` (Clean Start 0) and an hour of session expiry (`-x 3600`).
//!
//! libmosquitto reconnects `mosquitto_sub` on its own when the connection drops (one attempt a
//! second), and the broker then delivers the QoS 1 messages it queued for the session meanwhile.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use super::{lock, Received, Subscriber};
use crate::tools::require_program;
use crate::{Broker, SUBSCRIBER_PASSWORD, SUBSCRIBER_USERNAME};

/// Session expiry the persistent subscriber asks for, in seconds.
const SESSION_EXPIRY_S: &str = "3600";

impl Subscriber {
    /// Like [`Subscriber::start`], with a persistent session under `client_id`.
    ///
    /// # Panics
    /// As [`Subscriber::start`].
    pub fn start_persistent(broker: &Broker, topic: &str, client_id: &str) -> Subscriber {
        let mosquitto_sub = require_program("mosquitto_sub");
        let mosquitto_pub = require_program("mosquitto_pub");
        let port = broker.port().to_string();
        let mut child = Command::new(&mosquitto_sub)
            .args(["-h", Broker::HOST, "-p", &port, "-V", "mqttv5"])
            .args(["-u", SUBSCRIBER_USERNAME, "-P", SUBSCRIBER_PASSWORD])
            .args(["-q", "1", "-t", topic, "-i", client_id])
            .args(["-c", "-x", SESSION_EXPIRY_S])
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
                            at: std::time::Instant::now(),
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

    /// Whether the `mosquitto_sub` process is still running (it should survive a broker restart).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}
