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
//! The core only learns an error's [`TcpErrorKind`]; the full text of the last failure is kept
//! in a [`LastError`] handle (see [`TlsStack::error_handle`]) for the program to log.
//!
//! Left out: certificate revocation (CRLs, OCSP), ALPN, and reloading the CA file while running
//! (it is read once by [`TlsStack::new`]). Reconnections resume the TLS session when the broker
//! offers tickets (rustls' in-memory cache, shared by the stack's sockets).

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use embedded_nal::{nb, TcpClientStack, TcpError, TcpErrorKind};
use rustls::client::WantsClientCert;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, ClientConfig, ClientConnection, RootCertStore};

use crate::net::{io_error_kind, Dial, Dialed, LastError, StdError, Waitable};

/// Most rounds of socket I/O in one call: past it the call returns `WouldBlock` and the
/// driver's `poll(2)` says when to go on, so no call can spin.
const MAX_ROUNDS: usize = 16;

/// Most plaintext buffered in rustls before `send` reports `WouldBlock` (rustls' default too);
/// far above any packet this publisher writes.
const SEND_BUFFER_LIMIT: usize = 64 * 1024;

/// Where the broker's certificate must chain to, and which client certificate to present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file with the trusted CA certificate(s); `None` = the system trust store.
    pub ca_file: Option<PathBuf>,
    /// Name checked against the broker's certificate and sent as SNI: a DNS name or an IP
    /// address (usually the broker's host name).
    pub server_name: String,
    /// PEM file with the client certificate (chain), for mutual TLS; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM file with the client certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub client_key: Option<PathBuf>,
}

impl TlsConfig {
    /// Server name `server_name`, system trust store, no client certificate.
    pub fn new(server_name: impl Into<String>) -> Self {
        TlsConfig {
            server_name: server_name.into(),
            ..TlsConfig::default()
        }
    }
}

/// A TLS problem: in the configuration (files, names), or with a connection.
///
/// Every message names the file, the peer or the check that failed, and never contains the
/// token (it travels inside the encrypted stream only).
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    Read {
        /// What the file is for: `"CA file"`, `"client certificate"` or `"client key"`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A PEM file is malformed.
    Pem {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM parser found.
        source: pem::Error,
    },
    /// A PEM file holds no `CERTIFICATE` section.
    NoCertificates {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The client key file holds no private key section.
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// A certificate in the CA file cannot be a trust anchor (bad DER, unsupported key...).
    BadCaCertificate {
        /// The CA file.
        path: PathBuf,
        /// Position of the certificate in the file, from 1.
        index: usize,
        /// Why it was refused.
        source: rustls::Error,
    },
    /// No CA file was given and the system trust store has no usable certificate.
    NoSystemRoots {
        /// What the loader reported.
        detail: String,
    },
    /// The server name is neither a DNS name nor an IP address.
    InvalidServerName {
        /// The name as given.
        name: String,
    },
    /// Only one of the client certificate and key was given.
    ClientCertIncomplete {
        /// The one that is missing: `"client key"` or `"client certificate"`.
        missing: &'static str,
    },
    /// rustls refused the client certificate and key (e.g. the key is not the certificate's).
    ClientCert {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// rustls refused the configuration or could not start a connection.
    Config(rustls::Error),
    /// The TCP connect or a socket read/write failed.
    Io(StdError),
    /// The TLS handshake failed, or the session broke after it (e.g. an alert from the broker).
    Tls(Box<TlsFailure>),
    /// The broker closed (or reset) the TCP connection before the handshake finished.
    ClosedDuringHandshake {
        /// The broker.
        peer: SocketAddr,
    },
    /// The handshake did not finish in time.
    HandshakeTimeout {
        /// The broker.
        peer: SocketAddr,
        /// How long it had been going on.
        after: Duration,
    },
    /// The socket is not connected: never was, was closed, or failed before.
    NotConnected {
        /// The operation attempted: `"connect"`, `"send"` or `"receive"`.
        op: &'static str,
    },
}

/// A failed TLS handshake or session: what rustls reported and the context to explain it.
#[derive(Debug)]
pub struct TlsFailure {
    /// The broker.
    pub peer: SocketAddr,
    /// The server name the certificate was checked against.
    pub server_name: String,
    /// Where the trusted CAs came from, e.g. `"/var/run/certs/ca.crt"`.
    pub trust: String,
    /// Whether a client certificate was configured.
    pub client_cert: bool,
    /// Whether the handshake was still in progress.
    pub handshake: bool,
    /// What rustls reported.
    pub source: rustls::Error,
}

/// The message every sign of a plaintext peer ends with.
const NOT_TLS: &str = "the broker did not answer with TLS (plain MQTT on a TLS port?)";

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { what, path, source } => {
                write!(f, "cannot read the {what} {}: {source}", path.display())
            }
            TlsError::Pem { what, path, source } => {
                write!(f, "the {what} {} is not valid PEM: {source}", path.display())
            }
            TlsError::NoCertificates { what, path } => write!(
                f,
                "no certificates found in {} (the {what} must hold PEM `BEGIN CERTIFICATE` sections)",
                path.display()
            ),
            TlsError::NoPrivateKey { path } => write!(
                f,
                "no private key found in {} (the client key must be a PEM `BEGIN PRIVATE KEY`, \
                 `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY` section)",
                path.display()
            ),
            TlsError::BadCaCertificate {
                path,
                index,
                source,
            } => write!(
                f,
                "certificate {index} in the CA file {} is not usable as a trust anchor: {source}",
                path.display()
            ),
            TlsError::NoSystemRoots { detail } => write!(
                f,
                "no CA file given and no usable certificate in the system trust store ({detail}); \
                 give the broker's CA bundle"
            ),
            TlsError::InvalidServerName { name } => write!(
                f,
                "invalid TLS server name {name:?}: it must be a DNS name or an IP address"
            ),
            TlsError::ClientCertIncomplete { missing } => write!(
                f,
                "mutual TLS needs both a client certificate and its key: the {missing} is missing"
            ),
            TlsError::ClientCert { cert, key, source } => write!(
                f,
                "the client certificate {} and key {} cannot be used together: {source}",
                cert.display(),
                key.display()
            ),
            TlsError::Config(e) => write!(f, "TLS configuration refused: {e}"),
            TlsError::Io(e) => e.fmt(f),
            TlsError::Tls(t) => {
                let phase = if t.handshake { "handshake" } else { "session" };
                write!(f, "TLS {phase} with {} failed: ", t.peer)?;
                describe(f, t)
            }
            TlsError::ClosedDuringHandshake { peer } => write!(
                f,
                "TLS handshake with {peer} failed: {NOT_TLS}: it closed the connection"
            ),
            TlsError::HandshakeTimeout { peer, after } => write!(
                f,
                "TLS handshake with {peer} failed: no answer within {} ms: {NOT_TLS}",
                after.as_millis()
            ),
            TlsError::NotConnected { op } => write!(f, "{op}: TLS socket is not connected"),
        }
    }
}

/// The explanation of a rustls error, in the words an operator searches for.
fn describe(f: &mut fmt::Formatter<'_>, t: &TlsFailure) -> fmt::Result {
    use rustls::Error as E;
    let (e, client_cert, handshake) = (&t.source, t.client_cert, t.handshake);
    match e {
        E::InvalidCertificate(c) => {
            f.write_str("certificate verify failed: ")?;
            describe_certificate(f, c, &t.server_name, &t.trust)
        }
        E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. }
        | E::PeerSentOversizedRecord
            if handshake =>
        {
            write!(f, "{NOT_TLS}: {e}")
        }
        E::AlertReceived(alert) => {
            write!(f, "the broker sent TLS alert {alert:?}")?;
            let hint = match alert {
                AlertDescription::CertificateRequired if client_cert => {
                    " (it requires a client certificate)"
                }
                AlertDescription::CertificateRequired => {
                    " (it requires a client certificate and none is configured)"
                }
                AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA
                | AlertDescription::AccessDenied
                    if client_cert =>
                {
                    " (it rejected the client certificate)"
                }
                AlertDescription::HandshakeFailure if !client_cert => {
                    " (no TLS version or cipher suite in common, or it requires a client \
                     certificate and none is configured)"
                }
                AlertDescription::HandshakeFailure => " (no TLS version or cipher suite in common)",
                AlertDescription::ProtocolVersion => {
                    " (no TLS version in common: this client speaks TLS 1.2 and 1.3)"
                }
                AlertDescription::UnrecognisedName => {
                    " (it does not serve the server name this client asked for)"
                }
                _ => "",
            };
            f.write_str(hint)
        }
        other => write!(f, "{other}"),
    }
}

fn describe_certificate(
    f: &mut fmt::Formatter<'_>,
    c: &CertificateError,
    server_name: &str,
    trust: &str,
) -> fmt::Result {
    use CertificateError as C;
    match c {
        C::UnknownIssuer => write!(
            f,
            "UnknownIssuer: the broker's certificate for server name {server_name:?} is not \
             signed by a CA in {trust}"
        ),
        C::NotValidForName => write!(
            f,
            "NotValidForName: the broker's certificate is not valid for server name \
             {server_name:?}"
        ),
        C::NotValidForNameContext { presented, .. } => write!(
            f,
            "NotValidForName: the broker's certificate is not valid for server name \
             {server_name:?} (it is for: {})",
            presented
                .iter()
                .map(|n| plain_name(n))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        C::Expired => f.write_str("Expired: the broker's certificate has expired"),
        C::ExpiredContext { time, not_after } => write!(
            f,
            "Expired: the broker's certificate expired at {} (now {})",
            utc(*not_after),
            utc(*time)
        ),
        C::NotValidYet => f.write_str("NotValidYet: the broker's certificate is not valid yet"),
        C::NotValidYetContext { time, not_before } => write!(
            f,
            "NotValidYet: the broker's certificate is valid from {} (now {}; check the clock)",
            utc(*not_before),
            utc(*time)
        ),
        C::BadSignature => f.write_str("BadSignature: the broker's certificate signature is bad"),
        other => write!(f, "{other:?}"),
    }
}

/// A certificate name as webpki reports it (`DnsName("a.example")`, `IpAddress(10.0.0.1)`)
/// without the wrapper.
fn plain_name(name: &str) -> &str {
    [("DnsName(\"", "\")"), ("IpAddress(", ")")]
        .iter()
        .find_map(|(open, close)| name.strip_prefix(open)?.strip_suffix(close))
        .unwrap_or(name)
}

/// `YYYY-MM-DD hh:mm:ss UTC` for a Unix time (proleptic Gregorian calendar).
fn utc(t: UnixTime) -> String {
    let secs = t.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, shifted so that eras start on 0000-03-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read { source, .. } => Some(source),
            TlsError::Pem { source, .. } => Some(source),
            TlsError::BadCaCertificate { source, .. } | TlsError::ClientCert { source, .. } => {
                Some(source)
            }
            TlsError::Tls(t) => Some(&t.source),
            TlsError::Config(e) => Some(e),
            TlsError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl TcpError for TlsError {
    fn kind(&self) -> TcpErrorKind {
        match self {
            TlsError::Io(e) => e.kind(),
            TlsError::ClosedDuringHandshake { .. } | TlsError::NotConnected { .. } => {
                TcpErrorKind::PipeClosed
            }
            _ => TcpErrorKind::Other,
        }
    }
}

/// A TCP client stack whose sockets speak TLS; see the [module documentation](self).
#[derive(Debug, Clone)]
pub struct TlsStack {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    connect_timeout: Duration,
    trust: String,
    client_cert: bool,
    last_error: LastError,
}

impl TlsStack {
    /// Reads the CA file (or the system trust store) and the client certificate and key, and
    /// checks the server name. `connect_timeout` bounds the TCP connect and the handshake
    /// together; it must not be zero.
    pub fn new(cfg: &TlsConfig, connect_timeout: Duration) -> Result<TlsStack, TlsError> {
        let server_name = ServerName::try_from(cfg.server_name.clone()).map_err(|_| {
            TlsError::InvalidServerName {
                name: cfg.server_name.clone(),
            }
        })?;
        let (roots, trust) = match &cfg.ca_file {
            Some(path) => (ca_file_roots(path)?, path.display().to_string()),
            None => (system_roots()?, "the system trust store".to_owned()),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder: rustls::ConfigBuilder<ClientConfig, WantsClientCert> =
            ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(TlsError::Config)?
                .with_root_certificates(roots);
        let config = match (&cfg.client_cert, &cfg.client_key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = read_certificates("client certificate", cert)?;
                let private_key = read_private_key(key)?;
                builder
                    .with_client_auth_cert(chain, private_key)
                    .map_err(|source| TlsError::ClientCert {
                        cert: cert.clone(),
                        key: key.clone(),
                        source,
                    })?
            }
            (Some(_), None) => {
                return Err(TlsError::ClientCertIncomplete {
                    missing: "client key",
                })
            }
            (None, Some(_)) => {
                return Err(TlsError::ClientCertIncomplete {
                    missing: "client certificate",
                })
            }
        };
        Ok(TlsStack {
            config: Arc::new(config),
            server_name,
            connect_timeout,
            trust,
            client_cert: cfg.client_cert.is_some(),
            last_error: LastError::default(),
        })
    }

    /// The text of the last connection failure, if any since the last take (see
    /// [`LastError`]).
    pub fn last_error(&self) -> Option<String> {
        self.last_error.get()
    }

    /// A handle on the last failure's text that stays valid after the stack is moved into the
    /// publisher.
    pub fn error_handle(&self) -> LastError {
        self.last_error.clone()
    }

    /// One line for a start-up log: server name, trust, client certificate.
    pub fn describe(&self) -> String {
        format!(
            "TLS 1.2/1.3, server name {:?}, trusting the CAs in {}, {}",
            self.server_name.to_str(),
            self.trust,
            if self.client_cert {
                "with a client certificate"
            } else {
                "no client certificate"
            }
        )
    }

    /// Records a connection failure in the shared slot and on the socket.
    fn fail<T>(&self, socket: &mut TlsSocket, e: TlsError) -> nb::Result<T, TlsError> {
        // Tell the broker why, when rustls queued an alert; best effort.
        if let (Some(conn), Some(stream)) = (socket.conn.as_mut(), socket.stream.as_mut()) {
            let _ = flush(conn, stream);
        }
        self.last_error.set(&e);
        socket.state = State::Failed;
        Err(nb::Error::Other(e))
    }

    fn tls_error(&self, peer: SocketAddr, handshake: bool, source: rustls::Error) -> TlsError {
        TlsError::Tls(Box::new(TlsFailure {
            peer,
            server_name: self.server_name.to_str().into_owned(),
            trust: self.trust.clone(),
            client_cert: self.client_cert,
            handshake,
            source,
        }))
    }

    /// Moves the handshake on until it completes, the socket would block, or it fails.
    fn handshake(&self, socket: &mut TlsSocket) -> nb::Result<(), TlsError> {
        let (State::Handshaking { started }, Some(peer)) = (socket.state, socket.peer) else {
            return Err(nb::Error::Other(TlsError::NotConnected { op: "connect" }));
        };
        for _ in 0..MAX_ROUNDS {
            let (Some(conn), Some(stream)) = (socket.conn.as_mut(), socket.stream.as_mut()) else {
                break;
            };
            if let Err(e) = flush(conn, stream) {
                return self.fail(socket, io_error("TLS handshake", peer, e));
            }
            if !conn.is_handshaking() {
                socket.state = State::Open;
                return Ok(());
            }
            match conn.read_tls(stream) {
                Ok(0) => return self.fail(socket, TlsError::ClosedDuringHandshake { peer }),
                Ok(_) => match conn.process_new_packets() {
                    Ok(io) => {
                        socket.plaintext = io.plaintext_bytes_to_read();
                        socket.peer_closed = io.peer_has_closed();
                    }
                    Err(e) => {
                        let e = self.tls_error(peer, true, e);
                        return self.fail(socket, e);
                    }
                },
                Err(e) if would_block(&e) => {
                    let after = started.elapsed();
                    if after >= self.connect_timeout {
                        return self.fail(socket, TlsError::HandshakeTimeout { peer, after });
                    }
                    return Err(nb::Error::WouldBlock);
                }
                // A peer that closes with our ClientHello unread sends a reset, not a FIN.
                Err(e) if io_error_kind(e.kind()) == TcpErrorKind::PipeClosed => {
                    return self.fail(socket, TlsError::ClosedDuringHandshake { peer })
                }
                Err(e) => return self.fail(socket, io_error("TLS handshake", peer, e)),
            }
        }
        Err(nb::Error::WouldBlock)
    }
}

/// Parses every `CERTIFICATE` section of a PEM file.
fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what,
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let what = "client key";
    let bytes = read_file(what, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_owned(),
        },
        source => TlsError::Pem {
            what,
            path: path.to_owned(),
            source,
        },
    })
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn ca_file_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in read_certificates("CA file", path)?.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|source| TlsError::BadCaCertificate {
                path: path.to_owned(),
                index: i + 1,
                source,
            })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let detail = if found.errors.is_empty() {
            "none found".to_owned()
        } else {
            found
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        return Err(TlsError::NoSystemRoots { detail });
    }
    Ok(roots)
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

fn io_error(op: &'static str, peer: SocketAddr, e: io::Error) -> TlsError {
    TlsError::Io(StdError::new(op, Some(peer), e))
}

/// Writes the records rustls has queued until it has none or the socket would block.
fn flush(conn: &mut ClientConnection, stream: &mut TcpStream) -> io::Result<()> {
    for _ in 0..MAX_ROUNDS {
        if !conn.wants_write() {
            break;
        }
        match conn.write_tls(stream) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if would_block(&e) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not connected yet.
    Idle,
    /// TCP is up, the handshake is in progress since `started` (the connect's start).
    Handshaking { started: Instant },
    /// The TCP connect is under way.
    Dialing { started: Instant },
    /// The handshake is done.
    Open,
    /// The connection failed; it is not retried on this socket.
    Failed,
}

/// A socket of [`TlsStack`]: TCP plus a rustls client connection.
pub struct TlsSocket {
    stream: Option<TcpStream>,
    dial: Option<Dial>,
    conn: Option<ClientConnection>,
    peer: Option<SocketAddr>,
    state: State,
    /// Decrypted bytes rustls holds that `receive` has not returned yet.
    plaintext: usize,
    /// The broker's close_notify has arrived and has not been reported as EOF yet.
    peer_closed: bool,
}

impl fmt::Debug for TlsSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSocket")
            .field("peer", &self.peer)
            .field("state", &self.state)
            .field("plaintext", &self.plaintext)
            .field("peer_closed", &self.peer_closed)
            .finish_non_exhaustive()
    }
}

impl TlsSocket {
    /// The TCP stream's file descriptor, for `poll(2)`; `None` before the TCP connect.
    pub fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        match (&self.stream, &self.dial) {
            (Some(stream), _) => Some(stream.as_fd()),
            (None, Some(dial)) => Some(dial.fd()),
            (None, None) => None,
        }
    }

    /// Whether the handshake is complete and the connection has not failed.
    pub fn is_connected(&self) -> bool {
        self.state == State::Open
    }

    /// The negotiated TLS version, once the handshake is done (e.g. `TLSv1_3`).
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.as_ref().and_then(|c| c.protocol_version())
    }

    /// The open connection's parts (disjoint from the counters), or why there is none.
    fn open<'a>(
        state: State,
        conn: &'a mut Option<ClientConnection>,
        stream: &'a mut Option<TcpStream>,
        peer: Option<SocketAddr>,
        op: &'static str,
    ) -> nb::Result<(&'a mut ClientConnection, &'a mut TcpStream, SocketAddr), TlsError> {
        match (state, conn.as_mut(), stream.as_mut(), peer) {
            (State::Open, Some(conn), Some(stream), Some(peer)) => Ok((conn, stream, peer)),
            _ => Err(nb::Error::Other(TlsError::NotConnected { op })),
        }
    }
}

impl Waitable for TlsSocket {
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.as_fd()
    }

    fn has_buffered_input(&self) -> bool {
        self.state == State::Open && (self.plaintext > 0 || self.peer_closed)
    }

    fn wants_write(&self) -> bool {
        self.dial.is_some()
            || matches!(self.state, State::Open | State::Handshaking { .. })
                && self.conn.as_ref().is_some_and(|c| c.wants_write())
    }
}

impl TcpClientStack for TlsStack {
    type TcpSocket = TlsSocket;
    type Error = TlsError;

    fn socket(&mut self) -> Result<TlsSocket, TlsError> {
        Ok(TlsSocket {
            stream: None,
            dial: None,
            conn: None,
            peer: None,
            state: State::Idle,
            plaintext: 0,
            peer_closed: false,
        })
    }

    fn connect(&mut self, socket: &mut TlsSocket, remote: SocketAddr) -> nb::Result<(), TlsError> {
        match socket.state {
            State::Open => return Ok(()),
            State::Handshaking { .. } => return self.handshake(socket),
            // The failure was recorded when it happened; a second attempt needs a new socket.
            State::Failed => {
                return Err(nb::Error::Other(TlsError::NotConnected { op: "connect" }))
            }
            State::Idle | State::Dialing { .. } => {}
        }
        let started = match socket.state {
            State::Dialing { started } => started,
            _ => {
                self.last_error.clear();
                Instant::now()
            }
        };
        socket.peer = Some(remote);
        let dialed = match socket.dial.take() {
            Some(dial) => match dial.poll() {
                Ok(()) => Ok(dial.into_stream()),
                Err(nb::Error::WouldBlock) => {
                    socket.dial = Some(dial);
                    socket.state = State::Dialing { started };
                    return Err(nb::Error::WouldBlock);
                }
                Err(nb::Error::Other(e)) => Err(e),
            },
            None => match Dial::start(remote) {
                Ok(Dialed::Done(stream)) => Ok(stream),
                Ok(Dialed::Pending(dial)) => {
                    socket.dial = Some(dial);
                    socket.state = State::Dialing { started };
                    return Err(nb::Error::WouldBlock);
                }
                Err(e) => Err(e),
            },
        };
        let stream = match dialed {
            Ok(stream) => stream,
            Err(e) => {
                let e = TlsError::Io(StdError::new("connect", Some(remote), e));
                return self.fail(socket, e);
            }
        };
        socket.stream = Some(stream);
        let mut conn = match ClientConnection::new(self.config.clone(), self.server_name.clone()) {
            Ok(conn) => conn,
            Err(e) => return self.fail(socket, TlsError::Config(e)),
        };
        conn.set_buffer_limit(Some(SEND_BUFFER_LIMIT));
        socket.conn = Some(conn);
        socket.state = State::Handshaking { started };
        self.handshake(socket)
    }

    fn send(&mut self, socket: &mut TlsSocket, buffer: &[u8]) -> nb::Result<usize, TlsError> {
        let (conn, stream, peer) = TlsSocket::open(
            socket.state,
            &mut socket.conn,
            &mut socket.stream,
            socket.peer,
            "send",
        )?;
        // Older records first, so the kernel sees them in order.
        if let Err(e) = flush(conn, stream) {
            return self.fail(socket, io_error("send", peer, e));
        }
        let taken = match conn.writer().write(buffer) {
            Ok(n) => n,
            Err(e) => return self.fail(socket, io_error("send", peer, e)),
        };
        if taken == 0 && !buffer.is_empty() {
            // rustls' buffer is full: the kernel is not taking our records.
            return Err(nb::Error::WouldBlock);
        }
        if let Err(e) = flush(conn, stream) {
            return self.fail(socket, io_error("send", peer, e));
        }
        Ok(taken)
    }

    fn receive(
        &mut self,
        socket: &mut TlsSocket,
        buffer: &mut [u8],
    ) -> nb::Result<usize, TlsError> {
        if buffer.is_empty() {
            return Ok(0);
        }
        for _ in 0..MAX_ROUNDS {
            let (conn, stream, peer) = TlsSocket::open(
                socket.state,
                &mut socket.conn,
                &mut socket.stream,
                socket.peer,
                "receive",
            )?;
            // Pending records (a partly sent packet, a key update reply) go out first.
            if let Err(e) = flush(conn, stream) {
                return self.fail(socket, io_error("send", peer, e));
            }
            match conn.reader().read(buffer) {
                // close_notify: the broker's orderly end.
                Ok(0) => {
                    socket.peer_closed = false;
                    return Ok(0);
                }
                Ok(n) => {
                    socket.plaintext = socket.plaintext.saturating_sub(n);
                    return Ok(n);
                }
                // TCP closed without close_notify: still the end of the stream for the core.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if would_block(&e) => {}
                Err(e) => return self.fail(socket, io_error("receive", peer, e)),
            }
            match conn.read_tls(stream) {
                // TCP EOF; rustls reports it through the reader on the next round.
                Ok(0) => {}
                Ok(_) => {}
                Err(e) if would_block(&e) => return Err(nb::Error::WouldBlock),
                Err(e) => return self.fail(socket, io_error("receive", peer, e)),
            }
            match conn.process_new_packets() {
                Ok(io) => {
                    socket.plaintext = io.plaintext_bytes_to_read();
                    socket.peer_closed = io.peer_has_closed();
                }
                Err(e) => {
                    let e = self.tls_error(peer, false, e);
                    return self.fail(socket, e);
                }
            }
        }
        // More records are waiting in the kernel; poll(2) sees them readable at once.
        Err(nb::Error::WouldBlock)
    }

    fn close(&mut self, socket: TlsSocket) -> Result<(), TlsError> {
        let TlsSocket {
            stream,
            conn,
            peer,
            state,
            ..
        } = socket;
        let Some(mut stream) = stream else {
            return Ok(());
        };
        match (state, conn, peer) {
            // Closed before the handshake finished (the core's connect timeout, or a stop):
            // say so, the handshake itself reported nothing.
            (State::Handshaking { started }, _, Some(peer)) => {
                self.last_error.set(&TlsError::HandshakeTimeout {
                    peer,
                    after: started.elapsed(),
                });
            }
            (State::Open, Some(mut conn), _) => {
                conn.send_close_notify();
                let _ = flush(&mut conn, &mut stream);
            }
            _ => {}
        }
        match stream.shutdown(Shutdown::Both) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => {
                Err(TlsError::Io(StdError::new("close", peer, e)))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};
    use std::sync::mpsc;
    use std::thread::{self, JoinHandle};

    use rcgen::{
        date_time_ymd, BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use rustls::server::WebPkiClientVerifier;
    use rustls::{ServerConfig, ServerConnection, StreamOwned, SupportedProtocolVersion};

    use crate::net::wait_socket;

    /// Upper bound for anything that should take milliseconds.
    const PATIENCE: Duration = Duration::from_secs(10);

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A test certificate authority.
    struct Ca {
        pem: String,
        der: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
    }

    /// A certificate signed by a [`Ca`], and its key.
    struct Leaf {
        cert: CertificateDer<'static>,
        cert_pem: String,
        key_pem: String,
    }

    impl Leaf {
        fn key(&self) -> PrivateKeyDer<'static> {
            PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("leaf key")
        }
    }

    impl Ca {
        fn new(name: &str) -> Ca {
            let mut params = CertificateParams::new(Vec::new()).expect("CA params");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().expect("CA key");
            let cert = params.self_signed(&key).expect("CA certificate");
            Ca {
                pem: cert.pem(),
                der: cert.der().clone(),
                issuer: Issuer::new(params, key),
            }
        }

        /// A server (or, with `client`, a client) certificate for `names`.
        fn leaf(&self, names: &[&str], client: bool, expired: bool) -> Leaf {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let mut params = CertificateParams::new(names).expect("leaf params");
            params.extended_key_usages = vec![if client {
                ExtendedKeyUsagePurpose::ClientAuth
            } else {
                ExtendedKeyUsagePurpose::ServerAuth
            }];
            if expired {
                params.not_before = date_time_ymd(2020, 1, 1);
                params.not_after = date_time_ymd(2021, 1, 1);
            }
            let key = KeyPair::generate().expect("leaf key");
            let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
            Leaf {
                cert: cert.der().clone(),
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            }
        }

        fn roots(&self) -> Arc<RootCertStore> {
            let mut roots = RootCertStore::empty();
            roots.add(self.der.clone()).expect("CA as root");
            Arc::new(roots)
        }
    }

    fn server_config(
        leaf: &Leaf,
        versions: &[&'static SupportedProtocolVersion],
        client_ca: Option<&Ca>,
    ) -> ServerConfig {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .expect("server versions");
        let builder = match client_ca {
            Some(ca) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(ca.roots(), provider())
                    .build()
                    .expect("client verifier"),
            ),
            None => builder.with_no_client_auth(),
        };
        builder
            .with_single_cert(vec![leaf.cert.clone()], leaf.key())
            .expect("server config")
    }

    type Server = StreamOwned<ServerConnection, TcpStream>;

    /// A one-connection TCP server on 127.0.0.1 running `script` on the accepted stream.
    fn serve_raw(script: impl FnOnce(TcpStream) + Send + 'static) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handle = thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
            script(stream);
        });
        (addr, handle)
    }

    /// A one-connection rustls server running `script` (the handshake happens on first I/O).
    fn serve(
        config: ServerConfig,
        script: impl FnOnce(&mut Server) + Send + 'static,
    ) -> (SocketAddr, JoinHandle<()>) {
        let config = Arc::new(config);
        serve_raw(move |tcp| {
            let conn = ServerConnection::new(config).expect("server connection");
            let mut stream = StreamOwned::new(conn, tcp);
            script(&mut stream);
        })
    }

    /// Files for a [`TlsConfig`], deleted with the guard.
    struct Files(tempfile::TempDir);

    impl Files {
        fn new() -> Files {
            Files(tempfile::tempdir().expect("temp dir"))
        }

        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.path().join(name);
            fs::write(&path, contents).expect("write test file");
            path
        }
    }

    /// A stack trusting `ca` (written to `files`) and checking `server_name`.
    fn stack(files: &Files, ca: &Ca, server_name: &str) -> TlsStack {
        let cfg = TlsConfig {
            ca_file: Some(files.write("ca.crt", &ca.pem)),
            ..TlsConfig::new(server_name)
        };
        TlsStack::new(&cfg, Duration::from_secs(5)).expect("TLS stack")
    }

    /// Drives `connect` to completion the way the driver does, sleeping in poll between calls.
    fn connect(stack: &mut TlsStack, addr: SocketAddr) -> (TlsSocket, Result<(), TlsError>) {
        let mut socket = stack.socket().expect("socket");
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            match stack.connect(&mut socket, addr) {
                Ok(()) => return (socket, Ok(())),
                Err(nb::Error::WouldBlock) => {
                    wait_socket(Some(&socket), Duration::from_millis(100), false, None)
                        .expect("poll");
                }
                Err(nb::Error::Other(e)) => return (socket, Err(e)),
            }
        }
        panic!("connect still in progress after {PATIENCE:?}");
    }

    fn connected(stack: &mut TlsStack, addr: SocketAddr) -> TlsSocket {
        let (socket, result) = connect(stack, addr);
        if let Err(e) = result {
            panic!("connect failed: {e}");
        }
        socket
    }

    fn send_all(stack: &mut TlsStack, socket: &mut TlsSocket, bytes: &[u8]) {
        let mut sent = 0;
        let deadline = Instant::now() + PATIENCE;
        while sent < bytes.len() {
            assert!(Instant::now() < deadline, "send stalled");
            match stack.send(socket, &bytes[sent..]) {
                Ok(n) => sent += n,
                Err(nb::Error::WouldBlock) => {
                    wait_socket(Some(&*socket), Duration::from_millis(100), true, None)
                        .expect("poll");
                }
                Err(nb::Error::Other(e)) => panic!("send: {e}"),
            }
        }
    }

    /// Receives into a `chunk`-byte buffer until `Ok(0)`, `want` bytes, or an error.
    fn receive(
        stack: &mut TlsStack,
        socket: &mut TlsSocket,
        want: usize,
        chunk: usize,
    ) -> Result<Vec<u8>, TlsError> {
        let mut got = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        while got.len() < want {
            assert!(Instant::now() < deadline, "receive stalled after {got:?}");
            let mut buf = vec![0; chunk];
            match stack.receive(socket, &mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(nb::Error::WouldBlock) => {
                    wait_socket(Some(&*socket), Duration::from_millis(100), false, None)
                        .expect("poll");
                }
                Err(nb::Error::Other(e)) => return Err(e),
            }
        }
        Ok(got)
    }

    fn failure(stack: &mut TlsStack, addr: SocketAddr) -> (TlsSocket, TlsError) {
        match connect(stack, addr) {
            (socket, Err(e)) => (socket, e),
            (_, Ok(())) => panic!("the handshake succeeded"),
        }
    }

    const CONNECT: [u8; 4] = [0x10, 0x02, 0x00, 0x00];
    const CONNACK: [u8; 5] = [0x20, 0x03, 0x00, 0x00, 0x00];

    /// Server script: reads CONNECT, answers CONNACK, then expects the client's close_notify.
    fn echo_then_expect_close_notify(server: &mut Server) {
        let mut connect = [0; 4];
        server.read_exact(&mut connect).expect("server read");
        assert_eq!(connect, CONNECT);
        server.write_all(&CONNACK).expect("server write");
        server.flush().expect("server flush");
        let mut rest = [0; 1];
        // Ok(0) only after a close_notify; a bare TCP close is UnexpectedEof.
        assert_eq!(server.read(&mut rest).expect("clean close"), 0);
    }

    #[test]
    fn tls13_carries_bytes_both_ways_and_close_sends_close_notify() {
        let ca = Ca::new("test CA");
        let leaf = ca.leaf(&["localhost"], false, false);
        let config = server_config(&leaf, &[&rustls::version::TLS13], None);
        let (addr, server) = serve(config, echo_then_expect_close_notify);
        let files = Files::new();
        let mut stack = stack(&files, &ca, "localhost");
        let mut socket = connected(&mut stack, addr);
        assert!(socket.is_connected());
        assert!(socket.fd().is_some());
        assert_eq!(
            socket.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        send_all(&mut stack, &mut socket, &CONNECT);
        assert_eq!(
            receive(&mut stack, &mut socket, 5, 64).expect("receive"),
            CONNACK
        );
        stack.close(socket).expect("close");
        server.join().expect("server");
        assert_eq!(stack.last_error(), None);
    }

    #[test]
    fn tls12_broker_is_accepted() {
        let ca = Ca::new("test CA");
        let leaf = ca.leaf(&["localhost"], false, false);
        let config = server_config(&leaf, &[&rustls::version::TLS12], None);
        let (addr, server) = serve(config, echo_then_expect_close_notify);
        let files = Files::new();
        let mut stack = stack(&files, &ca, "localhost");
        let mut socket = connected(&mut stack, addr);
        assert_eq!(
            socket.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        send_all(&mut stack, &mut socket, &CONNECT);
        assert_eq!(
            receive(&mut stack, &mut socket, 5, 64).expect("receive"),
            CONNACK
        );
        stack.close(socket).expect("close");
        server.join().expect("server");
    }

    #[test]
    fn ip_address_server_name_is_checked_against_ip_sans() {
        let ca = Ca::new("test CA");
        let leaf = ca.leaf(&["127.0.0.1"], false, false);
        let config = server_config(&leaf, &[&rustls::version::TLS13], None);
        let (addr, server) = serve(config, echo_then_expect_close_notify);
        let files = Files::new();
        let mut stack = stack(&files, &ca, "127.0.0.1");
        let mut socket = connected(&mut stack, addr);
        send_all(&mut stack, &mut socket, &CONNECT);
        assert_eq!(
            receive(&mut stack, &mut socket, 5, 64).expect("receive"),
            CONNACK
        );
        stack.close(socket).expect("close");
        server.join().expect("server");
    }

    /// Server script for a handshake the client aborts: the server sees an error, not data.
    fn expect_handshake_failure(server: &mut Server) {
        let mut buf = [0; 1];
        assert!(server.read(&mut buf).is_err(), "the handshake succeeded");
    }

    #[test]
    fn unknown_ca_is_reported_with_the_server_name_and_the_ca_file() {
        let broker_ca = Ca::new("broker CA");
        let other_ca = Ca::new("other CA");
        let leaf = broker_ca.leaf(&["localhost"], false, false);
        let config = server_config(&leaf, &[&rustls::version::TLS13], None);
        let (addr, server) = serve(config, expect_handshake_failure);
        let files = Files::new();
        let mut stack = stack(&files, &other_ca, "localhost");
        let handle = stack.error_handle();

        let (mut socket, e) = failure(&mut stack, addr);
        server.join().expect("server");
        let text = e.to_string();
        let ca_path = files.0.path().join("ca.crt").display().to_string();
        assert_eq!(
            text,
            format!(
                "TLS handshake with {addr} failed: certificate verify failed: UnknownIssuer: the \
                 broker's certificate for server name \"localhost\" is not signed by a CA in \
                 {ca_path}"
            )
        );
        assert_eq!(e.kind(), TcpErrorKind::Other);
        assert!(matches!(
            &e,
            TlsError::Tls(t) if t.source
                == rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        ));
        // The text waits in the shared handle until the program takes it.
        assert_eq!(stack.last_error().as_deref(), Some(text.as_str()));
        assert_eq!(handle.take().as_deref(), Some(text.as_str()));
        assert_eq!(handle.get(), None);
        // A failed socket is not connected again, and does not overwrite the report.
        assert!(matches!(
            stack.connect(&mut socket, addr),
            Err(nb::Error::Other(TlsError::NotConnected { op: "connect" }))
        ));
        assert!(!socket.is_connected());
        assert_eq!(handle.get(), None);
        stack.close(socket).expect("close");
    }

    #[test]
    fn name_mismatch_is_reported_with_both_names() {
        let ca = Ca::new("test CA");
        let leaf = ca.leaf(&["broker.example"], false, false);
        let config = server_config(&leaf, &[&rustls::version::TLS13], None);
        let (addr, server) = serve(config, expect_handshake_failure);
        let files = Files::new();
        let mut stack = stack(&files, &ca, "other.example");
        let (_, e) = failure(&mut stack, addr);
        server.join().expect("server");
        let text = e.to_string();
        assert!(
            text.contains(
                "certificate verify failed: NotValidForName: the broker's certificate is not \
                 valid for server name \"other.example\" (it is for: broker.example)"
            ),
            "{text}"
        );
    }

    #[test]
    fn expired_certificate_is_reported_with_its_date() {
        let ca = Ca::new("test CA");
        let leaf = ca.leaf(&["localhost"], false, true);
        let config = server_config(&leaf, &[&rustls::version::TLS13], None);
        let (addr, server) = serve(config, expect_handshake_failure);
        let files = Files::new();
        let mut stack = stack(&files, &ca, "localhost");
        let (_, e) = failure(&mut stack, addr);
        server.join().expect("server");
        let text = e.to_string();
        assert!(
            text.contains(
                "certificate verify failed: Expired: the broker's certificate expired at \
                 2021-01-01 00:00:00 UTC (now "
            ),
            "{text}"
        );
    }

    #[test]
    fn plaintext_answer_means_the_broker_does_not_speak_tls() {
        // A plain MQTT broker that answers anything with a CONNACK.
        let (addr, server) = serve_raw(|mut tcp| {
            let mut hello = [0; 64];
            let _ = tcp.read(&mut hello).expect("client hello");
            tcp.write_all(&CONNACK).expect("write");
            let _ = tcp.read(&mut hello);
        });
        let files = Files::new();
        let mut stack = stack(&files, &Ca::new("test CA"), "localhost");
        let (socket, e) = failure(&mut stack, addr);
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "TLS handshake with {addr} failed: the broker did not answer with TLS (plain \
                 MQTT on a TLS port?): "
            )),
            "{text}"
        );
        stack.close(socket).expect("close");
        server.join().expect("server");
    }

    #[test]
    fn peer_closing_during_the_handshake_is_reported_as_not_tls() {
        // mosquitto's plain listener drops a connection whose first bytes are not MQTT.
        let (addr, server) = serve_raw(|mut tcp| {
            let mut hello = [0; 64];
            let _ = tcp.read(&mut hello).expect("client hello");
        });
        let files = Files::new();
        let mut stack = stack(&files, &Ca::new("test CA"), "localhost");
        let (_, e) = failure(&mut stack, addr);
        server.join().expect("server");
        assert_eq!(
            e.to_string(),
            format!(
                "TLS handshake with {addr} failed: the broker did not answer with TLS (plain \
                 MQTT on a TLS port?): it closed the connection"
            )
        );
        assert_eq!(e.kind(), TcpErrorKind::PipeClosed);
    }

    #[test]
    fn silent_peer_fails_at_the_connect_timeout_without_hanging() {
        let (release, hold) = mpsc::channel::<()>();
        let (addr, server) = serve_raw(move |_tcp| {
            let _ = hold.recv_timeout(PATIENCE);
        });
        let files = Files::new();
        let cfg = TlsConfig {
            ca_file: Some(files.write("ca.crt", &Ca::new("test CA").pem)),
            ..TlsConfig::new("localhost")
        };
        let timeout = Duration::from_millis(300);
        let mut stack = TlsStack::new(&cfg, timeout).expect("stack");
        let start = Instant::now();
        let (_, e) = failure(&mut stack, addr);
        let took = start.elapsed();
        assert!(took >= timeout && took < PATIENCE, "took {took:?}");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "TLS handshake with {addr} failed: no answer within "
            )),
            "{text}"
        );
        assert!(text.ends_with("(plain MQTT on a TLS port?)"), "{text}");
        let _ = release.send(());
        server.join().expect("server");
    }

    #[test]
    fn closing_during_the_handshake_records_why() {
        let (release, hold) = mpsc::channel::<()>();
        let (addr, server) = serve_raw(move |_tcp| {
            let _ = hold.recv_timeout(PATIENCE);
        });
        let files = Files::new();
        let mut stack = stack(&files, &Ca::new("test CA"), "localhost");
        let mut socket = stack.socket().expect("socket");
        // The TCP connect completes, then the handshake waits for a server that never answers.
        for _ in 0..5 {
            assert!(matches!(
                stack.connect(&mut socket, addr),
                Err(nb::Error::WouldBlock)
            ));
            wait_socket(Some(&socket), Duration::from_millis(50), false, None).expect("poll");
        }
        assert_eq!(stack.last_error(), None);
        // The core gives up first (its own connect timeout) and closes the socket.
        stack.close(socket).expect("close");
        let text = stack.last_error().expect("recorded");
        assert!(
            text.starts_with(&format!(
                "TLS handshake with {addr} failed: no answer within "
            )),
            "{text}"
        );
        let _ = release.send(());
        server.join().expect("server");
    }

    #[test]
    fn client_certificate_is_presented_when_the_broker_requires_one() {
        let ca = Ca::new("test CA");
        let leaf = ca.leaf(&["localhost"], false, false);
        let client = ca.leaf(&["client"], true, false);
        let config = server_config(&leaf, &[&rustls::version::TLS13], Some(&ca));
        let (addr, server) = serve(config, |server| {
            echo_then_expect_close_notify(server);
            assert!(server
                .conn
                .peer_certificates()
                .is_some_and(|c| !c.is_empty()));
        });
        let files = Files::new();
        let cfg = TlsConfig {
            ca_file: Some(files.write("ca.crt", &ca.pem)),
            server_name: "localhost".into(),
            client_cert: Some(files.write("client.crt", &client.cert_pem)),
            client_key: Some(files.write("client.key", &client.key_pem)),
        };
        let mut stack = TlsStack::new(&cfg, Duration::from_secs(5)).expect("stack");
        assert!(stack.describe().contains("with a client certificate"));
        let mut socket = connected(&mut stack, addr);
        send_all(&mut stack, &mut socket, &CONNECT);
        assert_eq!(
            receive(&mut stack, &mut socket, 5, 64).expect("receive"),
            CONNACK
        );
        stack.close(socket).expect("close");
        server.join().expect("server");
    }

    #[test]
    fn missing_client_certificate_is_reported() {
        let ca = Ca::new("test CA");
        let leaf = ca.leaf(&["localhost"], false, false);
        let config = server_config(&leaf, &[&rustls::version::TLS13], Some(&ca));
        let (addr, server) = serve(config, expect_handshake_failure);
        let files = Files::new();
        let mut stack = stack(&files, &ca, "localhost");
        // In TLS 1.3 the client finishes its side of the handshake before the broker checks
        // the (absent) certificate, so the alert arrives on the first read.
        let (mut socket, result) = connect(&mut stack, addr);
        let e = match result {
            Err(e) => e,
            Ok(()) => {
                send_all(&mut stack, &mut socket, &CONNECT);
                receive(&mut stack, &mut socket, 5, 64).expect_err("the broker accepted")
            }
        };
        server.join().expect("server");
        let text = e.to_string();
        assert!(
            text.contains(
                "the broker sent TLS alert CertificateRequired (it requires a client \
                 certificate and none is configured)"
            ),
            "{text}"
        );
        assert_eq!(stack.last_error().as_deref(), Some(text.as_str()));
    }

    #[test]
    fn decrypted_bytes_not_yet_read_wake_the_driver() {
        let ca = Ca::new("test CA");
        let leaf = ca.leaf(&["localhost"], false, false);
        let config = server_config(&leaf, &[&rustls::version::TLS13], None);
        let (addr, server) = serve(config, |server| {
            let mut connect = [0; 4];
            server.read_exact(&mut connect).expect("server read");
            // One record: CONNACK and a PINGRESP.
            server
                .write_all(&[0x20, 0x03, 0x00, 0x00, 0x00, 0xd0, 0x00])
                .expect("server write");
            server.flush().expect("flush");
            let mut rest = [0; 1];
            let _ = server.read(&mut rest);
        });
        let files = Files::new();
        let mut stack = stack(&files, &ca, "localhost");
        let mut socket = connected(&mut stack, addr);
        send_all(&mut stack, &mut socket, &CONNECT);
        assert!(!socket.has_buffered_input());
        assert_eq!(
            receive(&mut stack, &mut socket, 5, 5).expect("receive"),
            CONNACK
        );
        // The PINGRESP is decrypted and waiting: the fd will not become readable for it.
        assert!(socket.has_buffered_input());
        let start = Instant::now();
        assert!(wait_socket(Some(&socket), PATIENCE, false, None).expect("poll"));
        assert!(start.elapsed() < Duration::from_secs(1));
        let mut buf = [0; 8];
        assert_eq!(stack.receive(&mut socket, &mut buf).expect("receive"), 2);
        assert_eq!(&buf[..2], [0xd0, 0x00]);
        assert!(!socket.has_buffered_input());
        stack.close(socket).expect("close");
        server.join().expect("server");
    }

    #[test]
    fn close_notify_from_the_broker_is_end_of_stream() {
        let ca = Ca::new("test CA");
        let leaf = ca.leaf(&["localhost"], false, false);
        let config = server_config(&leaf, &[&rustls::version::TLS13], None);
        let (release, hold) = mpsc::channel::<()>();
        let (addr, server) = serve(config, move |server| {
            let mut connect = [0; 4];
            server.read_exact(&mut connect).expect("server read");
            server.write_all(&CONNACK).expect("server write");
            server.conn.send_close_notify();
            server.flush().expect("flush");
            // TCP stays open: only the TLS layer says goodbye.
            let _ = hold.recv_timeout(PATIENCE);
        });
        let files = Files::new();
        let mut stack = stack(&files, &ca, "localhost");
        let mut socket = connected(&mut stack, addr);
        send_all(&mut stack, &mut socket, &CONNECT);
        // CONNACK, then Ok(0).
        assert_eq!(
            receive(&mut stack, &mut socket, 100, 64).expect("receive"),
            CONNACK
        );
        assert!(!socket.has_buffered_input());
        let _ = release.send(());
        stack.close(socket).expect("close");
        server.join().expect("server");
    }

    #[test]
    fn bare_tcp_close_after_the_handshake_is_end_of_stream() {
        let ca = Ca::new("test CA");
        let leaf = ca.leaf(&["localhost"], false, false);
        let config = server_config(&leaf, &[&rustls::version::TLS13], None);
        let (addr, server) = serve(config, |server| {
            let mut connect = [0; 4];
            server.read_exact(&mut connect).expect("server read");
            server.sock.shutdown(Shutdown::Both).expect("shutdown");
        });
        let files = Files::new();
        let mut stack = stack(&files, &ca, "localhost");
        let mut socket = connected(&mut stack, addr);
        send_all(&mut stack, &mut socket, &CONNECT);
        server.join().expect("server");
        assert!(receive(&mut stack, &mut socket, 1, 64)
            .expect("EOF")
            .is_empty());
    }

    #[test]
    fn send_reports_would_block_when_the_broker_stops_reading() {
        let ca = Ca::new("test CA");
        let leaf = ca.leaf(&["localhost"], false, false);
        let config = server_config(&leaf, &[&rustls::version::TLS13], None);
        let (release, hold) = mpsc::channel::<()>();
        let (addr, server) = serve(config, move |server| {
            let mut connect = [0; 4];
            server.read_exact(&mut connect).expect("server read");
            let _ = hold.recv_timeout(PATIENCE);
        });
        let files = Files::new();
        let mut stack = stack(&files, &ca, "localhost");
        let mut socket = connected(&mut stack, addr);
        send_all(&mut stack, &mut socket, &CONNECT);
        // Kernel buffers on loopback hold a few MiB at most; 64 MiB is a generous bound.
        let chunk = [0x30; 16 * 1024];
        let mut blocked = false;
        for _ in 0..4096 {
            match stack.send(&mut socket, &chunk) {
                Ok(n) => assert!(n > 0),
                Err(nb::Error::WouldBlock) => {
                    blocked = true;
                    break;
                }
                Err(nb::Error::Other(e)) => panic!("send: {e}"),
            }
        }
        assert!(blocked, "64 MiB were accepted by a peer that does not read");
        assert!(socket.wants_write());
        let _ = release.send(());
        server.join().expect("server");
        stack.close(socket).expect("close");
    }

    #[test]
    fn unconnected_socket_cannot_send_or_receive() {
        let files = Files::new();
        let mut stack = stack(&files, &Ca::new("test CA"), "localhost");
        let mut socket = stack.socket().expect("socket");
        assert!(socket.fd().is_none());
        assert!(!socket.has_buffered_input() && !socket.wants_write());
        let e = match stack.send(&mut socket, b"x") {
            Err(nb::Error::Other(e)) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(e.to_string(), "send: TLS socket is not connected");
        assert_eq!(e.kind(), TcpErrorKind::PipeClosed);
        assert!(matches!(
            stack.receive(&mut socket, &mut [0; 4]),
            Err(nb::Error::Other(TlsError::NotConnected { op: "receive" }))
        ));
        stack.close(socket).expect("close");
    }

    #[test]
    fn refused_tcp_connect_names_the_address() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let files = Files::new();
        let mut stack = stack(&files, &Ca::new("test CA"), "localhost");
        let (_, e) = failure(&mut stack, addr);
        assert!(
            e.to_string().starts_with(&format!("connect to {addr}: ")),
            "{e}"
        );
        assert_eq!(stack.last_error(), Some(e.to_string()));
    }

    fn config_error(cfg: &TlsConfig) -> String {
        match TlsStack::new(cfg, Duration::from_secs(1)) {
            Ok(_) => panic!("accepted {cfg:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn configuration_errors_name_the_file_and_the_problem() {
        let files = Files::new();
        let ca = Ca::new("test CA");
        let client = ca.leaf(&["client"], true, false);
        let other = ca.leaf(&["other"], true, false);
        let missing = files.0.path().join("missing.crt");
        let empty = files.write("empty.crt", "");
        let not_pem = files.write("not-pem.crt", "just some text\n");
        let truncated = files.write("truncated.crt", "-----BEGIN CERTIFICATE-----\nMIIB\n");
        let cert = files.write("client.crt", &client.cert_pem);
        let key = files.write("client.key", &client.key_pem);
        let other_key = files.write("other.key", &other.key_pem);
        let ca_file = |path: &Path| TlsConfig {
            ca_file: Some(path.to_owned()),
            ..TlsConfig::new("localhost")
        };

        let text = config_error(&ca_file(&missing));
        assert!(
            text.starts_with(&format!("cannot read the CA file {}: ", missing.display())),
            "{text}"
        );
        for path in [&empty, &not_pem, &key] {
            let text = config_error(&ca_file(path));
            assert!(
                text.starts_with(&format!("no certificates found in {}", path.display())),
                "{text}"
            );
        }
        let text = config_error(&ca_file(&truncated));
        assert!(
            text.starts_with(&format!(
                "the CA file {} is not valid PEM: ",
                truncated.display()
            )),
            "{text}"
        );

        let mtls = |cert: Option<&PathBuf>, key: Option<&PathBuf>| TlsConfig {
            ca_file: Some(files.write("ca.crt", &ca.pem)),
            server_name: "localhost".into(),
            client_cert: cert.cloned(),
            client_key: key.cloned(),
        };
        assert_eq!(
            config_error(&mtls(Some(&cert), None)),
            "mutual TLS needs both a client certificate and its key: the client key is missing"
        );
        assert_eq!(
            config_error(&mtls(None, Some(&key))),
            "mutual TLS needs both a client certificate and its key: the client certificate \
             is missing"
        );
        let text = config_error(&mtls(Some(&cert), Some(&cert)));
        assert!(
            text.starts_with(&format!("no private key found in {}", cert.display())),
            "{text}"
        );
        let text = config_error(&mtls(Some(&key), Some(&key)));
        assert!(
            text.starts_with(&format!("no certificates found in {}", key.display())),
            "{text}"
        );
        let text = config_error(&mtls(Some(&cert), Some(&other_key)));
        assert!(
            text.starts_with(&format!(
                "the client certificate {} and key {} cannot be used together: ",
                cert.display(),
                other_key.display()
            )),
            "{text}"
        );
        assert!(TlsStack::new(&mtls(Some(&cert), Some(&key)), Duration::from_secs(1)).is_ok());

        assert_eq!(
            config_error(&TlsConfig::new("not a name!")),
            "invalid TLS server name \"not a name!\": it must be a DNS name or an IP address"
        );
    }

    #[test]
    fn a_bundle_of_several_cas_is_trusted_whole() {
        let first = Ca::new("first CA");
        let second = Ca::new("second CA");
        let leaf = second.leaf(&["localhost"], false, false);
        let config = server_config(&leaf, &[&rustls::version::TLS13], None);
        let (addr, server) = serve(config, echo_then_expect_close_notify);
        let files = Files::new();
        let cfg = TlsConfig {
            ca_file: Some(files.write("bundle.crt", &format!("{}{}", first.pem, second.pem))),
            ..TlsConfig::new("localhost")
        };
        let mut stack = TlsStack::new(&cfg, Duration::from_secs(5)).expect("stack");
        let mut socket = connected(&mut stack, addr);
        send_all(&mut stack, &mut socket, &CONNECT);
        assert_eq!(
            receive(&mut stack, &mut socket, 5, 64).expect("receive"),
            CONNACK
        );
        stack.close(socket).expect("close");
        server.join().expect("server");
    }

    #[test]
    fn system_trust_store_is_the_default() {
        let stack = TlsStack::new(&TlsConfig::new("broker.example"), Duration::from_secs(1))
            .expect("system roots (is ca-certificates installed?)");
        assert_eq!(
            stack.describe(),
            "TLS 1.2/1.3, server name \"broker.example\", trusting the CAs in the system trust \
             store, no client certificate"
        );
    }

    #[test]
    fn certificate_names_lose_their_webpki_wrappers() {
        assert_eq!(plain_name("DnsName(\"a.example\")"), "a.example");
        assert_eq!(plain_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(plain_name("Other(x)"), "Other(x)");
    }

    #[test]
    fn utc_formats_unix_times() {
        let at = |s| utc(UnixTime::since_unix_epoch(Duration::from_secs(s)));
        assert_eq!(at(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(at(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(at(1_609_459_199), "2020-12-31 23:59:59 UTC");
        assert_eq!(at(4_107_542_400), "2100-03-01 00:00:00 UTC");
    }
}
