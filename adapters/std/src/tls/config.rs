//! Building the rustls client configuration from files: the CA bundle (or the system trust
//! store), the server name and the optional client certificate and key.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WantsClientCert;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use super::TlsError;

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

/// What [`client`] builds from a [`TlsConfig`].
pub(super) struct Client {
    /// The rustls configuration shared by every connection.
    pub config: Arc<ClientConfig>,
    /// The checked server name.
    pub server_name: ServerName<'static>,
    /// Where the trusted CAs came from, for messages.
    pub trust: String,
}

/// Reads the CA file (or the system trust store) and the client certificate and key, and
/// checks the server name.
pub(super) fn client(cfg: &TlsConfig) -> Result<Client, TlsError> {
    let server_name =
        ServerName::try_from(cfg.server_name.clone()).map_err(|_| TlsError::InvalidServerName {
            name: cfg.server_name.clone(),
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
    Ok(Client {
        config: Arc::new(config),
        server_name,
        trust,
    })
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::tls::testing::*;
    use crate::tls::TlsStack;

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
        let client = ca.leaf(&["client"], Purpose::Client, Validity::Current);
        let other = ca.leaf(&["other"], Purpose::Client, Validity::Current);
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
        let (addr, server) = serve_echo(&second, &["localhost"], &rustls::version::TLS13);
        let files = Files::new();
        let cfg = TlsConfig {
            ca_file: Some(files.write("bundle.crt", &format!("{}{}", first.pem, second.pem))),
            ..TlsConfig::new("localhost")
        };
        let mut stack = TlsStack::new(&cfg, Duration::from_secs(5)).expect("stack");
        let socket = connected(&mut stack, addr);
        exchange_and_close(&mut stack, socket, server);
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
}
