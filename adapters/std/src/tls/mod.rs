//! TLS: an [`embedded_nal::TcpClientStack`] over rustls (TLS 1.2 and 1.3, `ring` provider) on a
//! non-blocking std [`TcpStream`], so the unchanged core runs over an encrypted link.
//!
//! - Trust: the CA certificates of a PEM file (a bundle of one or more, e.g. a Kubernetes
//!   ConfigMap), or without one the system trust store (`rustls-native-certs`, which honours
//!   `SSL_CERT_FILE`/`SSL_CERT_DIR`; on Debian `/etc/ssl/certs`). A bundle replaces the system
//!   roots, it does not add to them.
//! - The server name (SNI and certificate check) is a DNS name or an IP address.
//! - Optional client certificate and key (mutual TLS).
//!
//! `connect` makes the TCP connection with the same bounded connect as [`crate::StdStack`], then
//! drives the handshake without blocking: it returns `WouldBlock` until the handshake is done,
//! and fails once `connect_timeout` has passed since the connect began. The socket implements
//! [`Waitable`], so the driver sleeps in `poll(2)` until the broker answers; it also reports
//! decrypted input waiting in rustls ([`Waitable::has_buffered_input`]) and encrypted output the
//! kernel did not take yet ([`Waitable::wants_write`]).
//!
//! The core acts on an error's [`TcpErrorKind`]; the driver keeps the whole [`TlsError`] for
//! the program to log (`Driver::take_stack_error`).
//!
//! Left out: certificate revocation (CRLs, OCSP), ALPN, and reloading the CA file while running
//! (it is read once by [`TlsStack::new`]). Reconnections resume the TLS session when the broker
//! offers tickets (rustls' in-memory cache, shared by the stack's sockets).

mod config;
mod error;
mod socket;
#[cfg(test)]
mod testing;

pub use config::TlsConfig;
pub use error::{TlsError, TlsFailure};
pub use socket::{TlsSocket, TlsStack};
