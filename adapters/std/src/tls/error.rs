//! [`TlsError`]: what went wrong, in the words an operator searches for, with the file, the
//! peer or the check that failed. rustls' errors are matched on their types.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use embedded_nal::{TcpError, TcpErrorKind};
use rustls::pki_types::{pem, UnixTime};
use rustls::{AlertDescription, CertificateError};

use crate::net::StdError;

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
///
/// rustls' typed error carries the certificate's names only as these strings (webpki formats
/// each `GeneralName` with `Debug`); the certificate itself is gone by then, so there is no typed
/// value to match. A name in any other form is shown as it came.
fn plain_name(name: &str) -> &str {
    [("DnsName(\"", "\")"), ("IpAddress(", ")")]
        .iter()
        .find_map(|(open, close)| name.strip_prefix(open)?.strip_suffix(close))
        .unwrap_or(name)
}

/// A certificate time as RFC 3339 UTC, e.g. `2021-01-01T00:00:00Z`.
fn utc(t: UnixTime) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(t.as_secs()))
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use embedded_nal::{nb, TcpClientStack};

    use super::*;
    use crate::tls::testing::*;

    #[test]
    fn unknown_ca_is_reported_with_the_server_name_and_the_ca_file() {
        let broker_ca = Ca::new("broker CA");
        let other_ca = Ca::new("other CA");
        let leaf = broker_ca.leaf(&["localhost"], Purpose::Server, Validity::Current);
        let config = server_config(&leaf, &[&rustls::version::TLS13], None);
        let (addr, server) = serve(config, expect_handshake_failure);
        let files = Files::new();
        let mut stack = stack(&files, &other_ca, "localhost");

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
        // A failed socket is not connected again.
        assert!(matches!(
            stack.connect(&mut socket, addr),
            Err(nb::Error::Other(TlsError::NotConnected { op: "connect" }))
        ));
        assert!(!socket.is_connected());
        stack.close(socket).expect("close");
    }

    #[test]
    fn name_mismatch_is_reported_with_both_names() {
        let ca = Ca::new("test CA");
        let leaf = ca.leaf(&["broker.example"], Purpose::Server, Validity::Current);
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
        let leaf = ca.leaf(&["localhost"], Purpose::Server, Validity::Expired);
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
                 2021-01-01T00:00:00Z (now "
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
    fn missing_client_certificate_is_reported() {
        let ca = Ca::new("test CA");
        let leaf = ca.leaf(&["localhost"], Purpose::Server, Validity::Current);
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
        assert!(matches!(e, TlsError::Tls(_)), "{e:?}");
    }

    #[test]
    fn certificate_names_lose_their_webpki_wrappers() {
        assert_eq!(plain_name("DnsName(\"a.example\")"), "a.example");
        assert_eq!(plain_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(plain_name("Other(x)"), "Other(x)");
    }

    #[test]
    fn certificate_times_are_rfc3339_utc() {
        let at = |s| utc(UnixTime::since_unix_epoch(Duration::from_secs(s))).to_string();
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
    }
}
