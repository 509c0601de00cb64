//! # satmqtt — the no_std core
//!
//! An MQTT v5 publisher that logs in as `$sat` with a Kubernetes service-account token and
//! publishes `<prefix><N>` with a counter, built on minimq 0.10 and embedded-nal 0.9 without
//! `std` or `alloc`. It is a state machine: give it a `TcpClientStack`, an
//! `embedded_time::Clock` and a token; it writes bytes and hands out [`Event`]s. Logging,
//! sleeping, reading files and deciding to exit belong to the adapter.
//!
//! Between minimq and the stack sits the [`guard`], which keeps minimq 0.10's known failure
//! modes (wedging after a refused CONNACK, missing EOF, reconnect storms, panics on an
//! unexpected PUBACK, leaked sockets) from ever reaching a user.
//!
//! Left out on purpose: subscriptions, QoS 2, MQTT enhanced authentication (minimq 0.10 cannot
//! send AUTH packets, so a token change means a new connection), and more than 10 QoS 1
//! messages in flight (minimq's limit).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backoff;
pub mod clock;
pub mod frame;
pub mod guard;
pub mod publisher;
pub mod token;
pub mod wire;

#[cfg(test)]
mod mock;
#[cfg(test)]
mod tests;

pub use backoff::BackoffConfig;
pub use embedded_nal;
pub use embedded_time;
pub use guard::{LinkEnd, Violation};
pub use publisher::{
    Config, ConfigError, End, Event, Progress, Publisher, Qos, Session, SessionError, Status,
    MAX_TOKEN_LEN, SAT_USER,
};
pub use token::{freshness, Freshness, TokenTimes};
