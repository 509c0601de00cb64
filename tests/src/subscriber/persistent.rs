//! A subscriber whose session outlives its connection (and, with a persistent broker, a broker
//! restart): fixed client id, `-c` (Clean Start 0) and an hour of session expiry (`-x 3600`).
//!
//! libmosquitto reconnects `mosquitto_sub` on its own when the connection drops (one attempt a
//! second), and the broker then delivers the QoS 1 messages it queued for the session meanwhile.

use super::Subscriber;
use crate::Broker;

/// Session expiry the persistent subscriber asks for, in seconds.
const SESSION_EXPIRY_S: &str = "3600";

impl Subscriber {
    /// Like [`Subscriber::start`], with a persistent session under `client_id`.
    ///
    /// # Panics
    /// As [`Subscriber::start`].
    pub fn start_persistent(broker: &Broker, topic: &str, client_id: &str) -> Subscriber {
        Self::spawn(broker, topic, client_id, &["-c", "-x", SESSION_EXPIRY_S])
    }

    /// Whether the `mosquitto_sub` process is still running (it should survive a broker restart).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}
