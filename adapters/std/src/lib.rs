//! The std side of satmqtt: what a Linux pod needs to drive the no_std core.
//!
//! - [`net`]: an [`embedded_nal::TcpClientStack`] over `std::net` whose `connect` is bounded by a
//!   timeout and sets `TCP_NODELAY`, plus [`wait_readable`] so the caller can sleep in `poll(2)`
//!   until the broker speaks or the next deadline, instead of spinning.
//! - [`tls`]: the same over rustls (TLS 1.2/1.3): a CA bundle or the system roots, the server
//!   name, an optional client certificate, and errors that name the file or the failed check.
//! - [`clock`]: a monotonic microsecond [`embedded_time::Clock`].
//! - [`token`]: the projected service-account token file (kubelet symlink layout, size and UTF-8
//!   checks, zeroized buffers) and the JWT `exp`/`iat` reader used to rotate before expiry.
//!
//! Deliberately left out: watching the token directory for changes, DNS resolution (the
//! stack takes a resolved [`std::net::SocketAddr`]), logging, and anything that is not Unix
//! (`poll(2)` and file descriptors). This crate does not know about MQTT: the protocol lives in
//! the core.

pub mod clock;
pub mod net;
pub mod run;
pub mod tls;
pub mod token;
pub mod watch;

pub use clock::StdClock;
pub use net::{wait_readable, wait_socket, StdError, StdSocket, StdStack, Waitable};
pub use run::{run, Note, Outcome, RunError, RunOptions};
pub use run::{FileTokens, Unavailable, RX_LEN};
pub use tls::{TlsConfig, TlsError, TlsFailure, TlsSocket, TlsStack};
pub use token::{Token, TokenError, TokenFile};
pub use watch::{TokenWatcher, Watch};
