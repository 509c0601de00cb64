//! The job: what to publish, where, how often, and how to log in.
//!
//! [`Config::validate`] checks everything the broker would otherwise refuse later (MQTT v5 §1.5.4
//! strings, §4.7 topic names), so a bad setting is an error at start-up and never a retry loop.

use core::fmt;
use core::net::{Ipv4Addr, SocketAddr};

use crate::backoff::BackoffConfig;

/// Longest client id accepted (MQTT only guarantees 23; every broker we know takes 64).
pub const MAX_CLIENT_ID: usize = 64;

/// Longest token an MQTT password or Authentication Data can carry (a two-byte length).
pub const MAX_TOKEN_LEN: usize = 65_535;

/// Longest payload prefix; the counter's up to 20 digits follow it.
pub const MAX_PREFIX: usize = 60_000;

/// Longest interval between publishes (a day): beyond it a typo, not a plan.
pub const MAX_INTERVAL_MS: u64 = 86_400_000;

/// Default cap on QoS 1 messages in flight, whatever the broker's Receive Maximum.
pub const DEFAULT_WINDOW_CAP: u16 = 64;

/// The MQTT user name Azure IoT MQ's preview expects with a service-account token as password.
pub const SAT_USER: &str = "$sat";

/// The Authentication Method Azure IoT Operations uses for service-account tokens.
pub const K8S_SAT_METHOD: &str = "K8S-SAT";

/// QoS levels this publisher uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    /// At most once.
    AtMostOnce,
    /// At least once: every message is acknowledged, and resent after a reconnect until it is.
    AtLeastOnce,
}

impl TryFrom<u8> for Qos {
    type Error = ConfigError;

    fn try_from(qos: u8) -> Result<Self, ConfigError> {
        match qos {
            0 => Ok(Qos::AtMostOnce),
            1 => Ok(Qos::AtLeastOnce),
            q => Err(ConfigError::Qos(q)),
        }
    }
}

impl From<Qos> for u8 {
    fn from(qos: Qos) -> u8 {
        match qos {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
        }
    }
}

/// How the token is presented to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// User name `$sat`, the token as password (Azure IoT MQ preview). A new token needs a new
    /// connection.
    Sat,
    /// MQTT v5 enhanced authentication, method `K8S-SAT`, the token as Authentication Data (Azure
    /// IoT Operations). A new token is presented in-band with AUTH (re-authenticate).
    K8sSat,
}

impl fmt::Display for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Auth::Sat => "sat",
            Auth::K8sSat => "k8s-sat",
        })
    }
}

/// Everything the core needs to know about the job.
#[derive(Debug, Clone, Copy)]
pub struct Config<'a> {
    /// Broker address.
    pub broker: SocketAddr,
    /// MQTT client identifier; empty asks the broker to assign one.
    pub client_id: &'a str,
    /// Topic to publish to.
    pub topic: &'a str,
    /// Payload is this prefix followed by the counter in decimal.
    pub payload_prefix: &'a str,
    /// QoS of every publish.
    pub qos: Qos,
    /// Milliseconds between publishes; 0 publishes as fast as the connection allows.
    pub interval_ms: u64,
    /// First counter value.
    pub start: u64,
    /// Messages to publish, then finish; 0 is forever.
    pub count: u64,
    /// MQTT keepalive in seconds (the broker's Server Keep Alive wins).
    pub keepalive_s: u16,
    /// Longest wait for TCP (and TLS) plus CONNACK, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Longest wait for in-flight acknowledgements when stopping or rotating.
    pub drain_timeout_ms: u64,
    /// Reconnect pacing.
    pub backoff: BackoffConfig,
    /// How the token logs in.
    pub auth: Auth,
    /// Most QoS 1 messages in flight; the broker's Receive Maximum can only lower it.
    pub window_cap: u16,
    /// Session Expiry Interval asked for, in seconds; 0 (the default) leaves no session behind
    /// on the broker, and every connection starts clean.
    pub session_expiry_s: u32,
    /// Replace the token (re-authenticate, or reconnect with `$sat`) this long before its `exp`.
    pub expiry_margin_s: u64,
    /// Longest wait for the broker's answer to a re-authentication, in milliseconds.
    pub reauth_timeout_ms: u64,
}

impl<'a> Config<'a> {
    /// The Microsoft sample's job: `samplepayload<N>` to `sampletopic` as `sampleid`, QoS 1, 1/s.
    pub fn new(broker: SocketAddr) -> Self {
        Config {
            broker,
            client_id: "sampleid",
            topic: "sampletopic",
            payload_prefix: "samplepayload",
            qos: Qos::AtLeastOnce,
            interval_ms: 1_000,
            start: 0,
            count: 0,
            keepalive_s: 60,
            connect_timeout_ms: 5_000,
            drain_timeout_ms: 5_000,
            backoff: BackoffConfig::default(),
            auth: Auth::Sat,
            window_cap: DEFAULT_WINDOW_CAP,
            session_expiry_s: 0,
            expiry_margin_s: 60,
            reauth_timeout_ms: 10_000,
        }
    }

    /// Checks every setting a broker or the engine would refuse; see [`ConfigError`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_string(self.client_id, Field::ClientId)?;
        if self.client_id.len() > MAX_CLIENT_ID {
            return Err(ConfigError::ClientIdTooLong {
                len: self.client_id.len(),
            });
        }
        if self.topic.is_empty() || self.topic.len() > 65_535 {
            return Err(ConfigError::TopicLength {
                len: self.topic.len(),
            });
        }
        check_string(self.topic, Field::Topic)?;
        if let Some(at) = self.topic.find(['+', '#']) {
            return Err(ConfigError::TopicWildcard { at });
        }
        check_string(self.payload_prefix, Field::PayloadPrefix)?;
        if self.payload_prefix.len() > MAX_PREFIX {
            return Err(ConfigError::PrefixTooLong {
                len: self.payload_prefix.len(),
            });
        }
        if self.start.checked_add(self.count).is_none() {
            return Err(ConfigError::CounterOverflow {
                start: self.start,
                count: self.count,
            });
        }
        if self.interval_ms > MAX_INTERVAL_MS {
            return Err(ConfigError::IntervalTooLong {
                ms: self.interval_ms,
            });
        }
        if self.connect_timeout_ms == 0 {
            return Err(ConfigError::ZeroTimeout(Field::ConnectTimeout));
        }
        if self.reauth_timeout_ms == 0 {
            return Err(ConfigError::ZeroTimeout(Field::ReauthTimeout));
        }
        if self.window_cap == 0 {
            return Err(ConfigError::ZeroWindow);
        }
        if self.broker.port() == 0 {
            return Err(ConfigError::PortZero);
        }
        Ok(())
    }

    /// One past the last counter value to publish; a job "forever" ends at `u64::MAX`.
    pub(crate) fn end(&self) -> u64 {
        if self.count == 0 {
            u64::MAX
        } else {
            self.start.saturating_add(self.count)
        }
    }
}

impl Default for Config<'_> {
    /// [`Config::new`] with broker `127.0.0.1:1883`.
    fn default() -> Self {
        Config::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 1883)))
    }
}

/// Which setting a [`ConfigError`] is about (the [`Config`] field; a program maps it to its
/// flag name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// [`Config::client_id`].
    ClientId,
    /// [`Config::topic`].
    Topic,
    /// [`Config::payload_prefix`].
    PayloadPrefix,
    /// [`Config::qos`].
    Qos,
    /// [`Config::start`] and [`Config::count`].
    Count,
    /// [`Config::interval_ms`].
    Interval,
    /// [`Config::connect_timeout_ms`].
    ConnectTimeout,
    /// [`Config::reauth_timeout_ms`].
    ReauthTimeout,
    /// [`Config::window_cap`].
    WindowCap,
    /// The port of [`Config::broker`].
    Port,
}

impl Field {
    /// What [`ConfigError`]'s text calls the field (`client id`, `topic`, …).
    pub fn noun(self) -> &'static str {
        match self {
            Field::ClientId => "client id",
            Field::Topic => "topic",
            Field::PayloadPrefix => "payload prefix",
            Field::Qos => "QoS",
            Field::Count => "start",
            Field::Interval => "interval",
            Field::ConnectTimeout => "connect timeout",
            Field::ReauthTimeout => "re-authentication timeout",
            Field::WindowCap => "window cap",
            Field::Port => "port",
        }
    }

    /// The field's name as a flag would spell it (`client-id`, `topic`, …).
    pub fn name(self) -> &'static str {
        match self {
            Field::ClientId => "client-id",
            Field::Topic => "topic",
            Field::PayloadPrefix => "payload-prefix",
            Field::Qos => "qos",
            Field::Count => "count",
            Field::Interval => "interval-ms",
            Field::ConnectTimeout => "connect-timeout-ms",
            Field::ReauthTimeout => "reauth-timeout-ms",
            Field::WindowCap => "window-cap",
            Field::Port => "port",
        }
    }
}

/// A configuration the core cannot run; `Display` says what is wrong and the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// Client id longer than [`MAX_CLIENT_ID`].
    ClientIdTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Topic must be 1..=65 535 bytes.
    TopicLength {
        /// Its length in bytes.
        len: usize,
    },
    /// A topic name may not contain the wildcards `+` or `#` (MQTT v5 §4.7.1).
    TopicWildcard {
        /// Byte offset of the first wildcard.
        at: usize,
    },
    /// U+0000 or another control character in a string (MQTT v5 §1.5.4).
    ControlCharacter {
        /// The field.
        field: Field,
        /// Byte offset.
        at: usize,
    },
    /// Payload prefix longer than [`MAX_PREFIX`].
    PrefixTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// QoS other than 0 or 1.
    Qos(u8),
    /// `start + count` does not fit a `u64`.
    CounterOverflow {
        /// First counter value.
        start: u64,
        /// Messages asked for.
        count: u64,
    },
    /// Interval longer than [`MAX_INTERVAL_MS`].
    IntervalTooLong {
        /// The interval asked for.
        ms: u64,
    },
    /// A timeout of zero would fail every attempt.
    ZeroTimeout(Field),
    /// A window cap of zero could never publish at QoS 1.
    ZeroWindow,
    /// Port 0 cannot be connected to.
    PortZero,
}

impl ConfigError {
    /// The setting this error is about.
    pub fn field(&self) -> Field {
        match self {
            ConfigError::ClientIdTooLong { .. } => Field::ClientId,
            ConfigError::TopicLength { .. } | ConfigError::TopicWildcard { .. } => Field::Topic,
            ConfigError::ControlCharacter { field, .. } | ConfigError::ZeroTimeout(field) => *field,
            ConfigError::PrefixTooLong { .. } => Field::PayloadPrefix,
            ConfigError::Qos(_) => Field::Qos,
            ConfigError::CounterOverflow { .. } => Field::Count,
            ConfigError::IntervalTooLong { .. } => Field::Interval,
            ConfigError::ZeroWindow => Field::WindowCap,
            ConfigError::PortZero => Field::Port,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConfigError::ClientIdTooLong { len } => {
                write!(f, "client id is {len} bytes; at most {MAX_CLIENT_ID}")
            }
            ConfigError::TopicLength { len: 0 } => {
                f.write_str("topic is empty; it must be 1 to 65535 bytes")
            }
            ConfigError::TopicLength { len } => {
                write!(f, "topic is {len} bytes; it must be 1 to 65535")
            }
            ConfigError::TopicWildcard { at } => write!(
                f,
                "topic has a wildcard (+ or #) at byte {at}; a topic name to publish to may not"
            ),
            ConfigError::ControlCharacter { field, at } => write!(
                f,
                "{} has a control character (or U+0000) at byte {at}",
                field.noun()
            ),
            ConfigError::PrefixTooLong { len } => {
                write!(f, "payload prefix is {len} bytes; at most {MAX_PREFIX}")
            }
            ConfigError::Qos(q) => write!(f, "QoS {q} is not supported; use 0 or 1"),
            ConfigError::CounterOverflow { start, count } => write!(
                f,
                "start {start} plus count {count} passes the largest counter {}",
                u64::MAX
            ),
            ConfigError::IntervalTooLong { ms } => {
                write!(f, "interval is {ms} ms; at most {MAX_INTERVAL_MS} (a day)")
            }
            ConfigError::ZeroTimeout(field) => write!(f, "{} must be above 0", field.noun()),
            ConfigError::ZeroWindow => f.write_str("window cap must be at least 1"),
            ConfigError::PortZero => f.write_str("port 0 cannot be connected to"),
        }
    }
}

/// MQTT v5 §1.5.4: no U+0000; control characters are allowed by the spec but refused by
/// brokers (and invisible in logs), so none are accepted.
fn check_string(s: &str, field: Field) -> Result<(), ConfigError> {
    match s.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, _)) => Err(ConfigError::ControlCharacter { field, at }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_job_is_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn each_invalid_setting_names_its_field_and_limit() {
        let long = "x".repeat(200);
        type Case = (fn(&mut Config<'static>), Field, &'static str);
        let cases: [Case; 8] = [
            (|c| c.client_id = "a\u{1}b", Field::ClientId, "byte 1"),
            (|c| c.topic = "a/#", Field::Topic, "byte 2"),
            (|c| c.topic = "", Field::Topic, "1 to 65535"),
            (|c| c.topic = "a\0", Field::Topic, "control character"),
            (
                |c| {
                    c.start = u64::MAX - 1;
                    c.count = 3;
                },
                Field::Count,
                "passes the largest counter",
            ),
            (|c| c.interval_ms = u64::MAX, Field::Interval, "a day"),
            (
                |c| c.connect_timeout_ms = 0,
                Field::ConnectTimeout,
                "above 0",
            ),
            (|c| c.broker.set_port(0), Field::Port, "port 0"),
        ];
        for (change, field, words) in cases {
            let mut c = Config::default();
            change(&mut c);
            let e = c.validate().expect_err("invalid");
            assert_eq!(e.field(), field, "{e}");
            assert!(std::format!("{e}").contains(words), "{e}");
        }
        let mut c = Config::default();
        let long: &'static str = std::boxed::Box::leak(long.into_boxed_str());
        c.client_id = long;
        assert_eq!(
            std::format!("{}", c.validate().expect_err("too long")),
            "client id is 200 bytes; at most 64"
        );
    }

    #[test]
    fn a_job_may_end_at_the_largest_counter() {
        let c = Config {
            start: u64::MAX - 3,
            count: 3,
            ..Config::default()
        };
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn qos_converts_from_u8() {
        assert_eq!(Qos::try_from(1), Ok(Qos::AtLeastOnce));
        assert_eq!(Qos::try_from(2), Err(ConfigError::Qos(2)));
    }
}
