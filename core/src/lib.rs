//! # satmqtt — a no_std MQTT v5 publisher engine
//!
//! Publishes `<prefix><N>` with a counter `N`, logging in with a Kubernetes service-account
//! token either as `$sat` with the token as password (Azure IoT MQ preview) or with MQTT v5
//! enhanced authentication `K8S-SAT` and in-band re-authentication (Azure IoT Operations). QoS 1
//! messages are never lost or reordered across reconnects and token rotations.
//!
//! The engine is sans-IO, in the manner of quinn-proto and rustls: [`Connection`] takes bytes
//! and time in, hands bytes, deadlines and [`Event`]s out. [`Driver`] is the one loop every
//! adapter shares: it runs connections over an [`embedded_nal::TcpClientStack`], an
//! [`embedded_time::Clock`] and a [`TokenSource`], and answers "wait until T, or until the socket
//! is readable or writable". Logging, sleeping, reading files and deciding to exit belong to the
//! adapter and the program.
//!
//! `#![no_std]`, no `alloc`, no `unsafe`: every buffer is the caller's ([`Buffers`], sized with
//! [`tx_len`]); QoS 1 state is two counters whatever the window.
//!
//! Left out on purpose: subscriptions, QoS 2, retained messages, wills, and authentication
//! methods other than `K8S-SAT`.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backoff;
mod clock;
mod config;
mod driver;
mod event;
mod token;

/// Engine internals, public for fuzzing and for firmware that writes its own driver: one
/// connection as a sans-IO state machine. Programs use [`Driver`].
pub mod connection;
/// Engine internals, public for tests and fuzzing: MQTT v5 packets, checked parse and exact emit.
pub mod wire;

#[cfg(test)]
mod tests;

pub use backoff::BackoffConfig;
pub use config::{
    Auth, Config, ConfigError, Field, Qos, DEFAULT_WINDOW_CAP, K8S_SAT_METHOD, MAX_CLIENT_ID,
    MAX_INTERVAL_MS, MAX_PREFIX, MAX_TOKEN_LEN, SAT_USER,
};
pub use connection::Connection;
pub use driver::{
    tx_len, Buffers, Driver, DriverError, Ready, Status, Token, TokenSource, EXPIRY_GUARD_S, RX_MIN,
};
pub use embedded_nal;
pub use embedded_time;
pub use event::{kind_name, End, Event, Progress, ProtocolError, Text, TEXT_MAX};
pub use token::{freshness, Freshness, TokenTimes};
