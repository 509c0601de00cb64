//! Certificates made at test time (rcgen) for TLS brokers and clients, written as PEM files.
//!
//! One [`TestPki`] holds a broker CA, a server certificate for `localhost` and `127.0.0.1` signed
//! by it, a client certificate for mutual TLS signed by the same CA, and an unrelated CA that
//! trusts nothing the broker presents. [`TestPki::listener`] describes a mosquitto TLS listener
//! using them, for [`crate::Broker::start_tls`].

use std::fs;
use std::path::{Path, PathBuf};

use satmqtt_test_pki::{Ca, Purpose, Validity};
use tempfile::TempDir;

/// The names in the server certificate.
pub const SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1"];

/// A TLS listener for [`crate::Broker::start_tls`]: mosquitto's `cafile`, `certfile`, `keyfile`
/// and `require_certificate`.
#[derive(Debug, Clone)]
pub struct TlsListener {
    /// CA bundle mosquitto checks client certificates against.
    pub ca_file: PathBuf,
    /// The broker's certificate.
    pub cert_file: PathBuf,
    /// The broker's private key.
    pub key_file: PathBuf,
    /// Whether a client without a certificate signed by `ca_file` is refused (mutual TLS).
    pub require_certificate: bool,
}

impl TlsListener {
    /// The listener's lines of `mosquitto.conf`, after its `listener` line.
    pub fn config_lines(&self) -> String {
        format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
            self.ca_file.display(),
            self.cert_file.display(),
            self.key_file.display(),
            self.require_certificate
        )
    }
}

/// Freshly generated certificates and keys as PEM files in a temp dir (removed on drop).
pub struct TestPki {
    dir: TempDir,
}

impl TestPki {
    /// Generates everything (ECDSA P-256 keys, valid from now for a day).
    ///
    /// # Panics
    /// If generating or writing fails.
    pub fn new() -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("satmqtt-pki-")
            .tempdir()
            .expect("creating the PKI temp dir");
        let write = |name: &str, pem: &str| {
            fs::write(dir.path().join(name), pem).unwrap_or_else(|e| panic!("writing {name}: {e}"))
        };

        let ca = Ca::new("satmqtt test CA");
        write("ca.crt", &ca.pem);
        write("other-ca.crt", &Ca::new("unrelated test CA").pem);

        let server = ca.leaf(SERVER_NAMES, Purpose::Server, Validity::Current);
        write("server.crt", &server.cert_pem);
        write("server.key", &server.key_pem);
        let client = ca.leaf(&["satmqtt-client"], Purpose::Client, Validity::Current);
        write("client.crt", &client.cert_pem);
        write("client.key", &client.key_pem);
        TestPki { dir }
    }

    /// The temp dir holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The broker CA's certificate: what a client must trust.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A CA that signed nothing here: trusting only it must fail.
    pub fn other_ca_file(&self) -> PathBuf {
        self.dir.path().join("other-ca.crt")
    }

    /// The client certificate (signed by the broker CA).
    pub fn client_cert(&self) -> PathBuf {
        self.dir.path().join("client.crt")
    }

    /// The client certificate's private key (PKCS#8 PEM).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }

    /// A listener with the server certificate, checking client certificates against the CA.
    pub fn listener(&self, require_certificate: bool) -> TlsListener {
        TlsListener {
            ca_file: self.ca_file(),
            cert_file: self.dir.path().join("server.crt"),
            key_file: self.dir.path().join("server.key"),
            require_certificate,
        }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_pem_files_and_a_listener_using_them() {
        let pki = TestPki::new();
        for path in [pki.ca_file(), pki.other_ca_file(), pki.client_cert()] {
            let pem = fs::read_to_string(&path).unwrap();
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{path:?}");
        }
        let key = fs::read_to_string(pki.client_key()).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(
            fs::read(pki.ca_file()).unwrap(),
            fs::read(pki.other_ca_file()).unwrap()
        );
        let lines = pki.listener(true).config_lines();
        assert!(lines.contains("require_certificate true\n"), "{lines}");
        assert!(lines.contains(&format!("certfile {}/server.crt\n", pki.dir().display())));
    }
}
