//! The one test PKI of satmqtt's tests: certificate authorities and the certificates they sign,
//! made at test time with rcgen (ECDSA P-256 keys).
//!
//! Used by the std adapter's unit tests (an in-process rustls server) and by the integration
//! tests' `TestPki` (PEM files for mosquitto).

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;

/// What a leaf certificate is for (its extended key usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A broker's certificate (TLS server authentication).
    Server,
    /// A client's certificate for mutual TLS (TLS client authentication).
    Client,
}

/// When a leaf certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From now on (rcgen's default window).
    Current,
    /// 2020-01-01 to 2021-01-01 00:00:00 UTC: expired.
    Expired,
}

/// A test certificate authority: its certificate, and the key that signs leaves.
pub struct Ca {
    /// The CA certificate as PEM: what a client or broker is told to trust.
    pub pem: String,
    /// The CA certificate as DER.
    pub der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate signed by a [`Ca`], and its private key.
pub struct Leaf {
    /// The certificate as DER.
    pub der: CertificateDer<'static>,
    /// The certificate as PEM.
    pub cert_pem: String,
    /// The private key as PKCS#8 PEM.
    pub key_pem: String,
}

impl Ca {
    /// A new self-signed CA with common name `name`.
    ///
    /// # Panics
    /// If rcgen fails to make the key or certificate.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).expect("CA parameters");
        params.distinguished_name.push(DnType::CommonName, name);
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

    /// A certificate for `names` (DNS names or IP addresses; the first is also the common
    /// name), signed by this CA.
    ///
    /// # Panics
    /// If `names` is empty or rcgen fails.
    pub fn leaf(&self, names: &[&str], purpose: Purpose, validity: Validity) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("certificate parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match purpose {
            Purpose::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Purpose::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        // OpenSSL (mosquitto) looks the issuer up by key identifier.
        params.use_authority_key_identifier_extension = true;
        if validity == Validity::Expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Leaf {
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_are_pem_and_distinct_cas_differ() {
        let ca = Ca::new("one");
        assert!(ca.pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_ne!(ca.der, Ca::new("two").der);
        let leaf = ca.leaf(&["localhost"], Purpose::Server, Validity::Expired);
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(leaf.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_ne!(leaf.der, ca.der);
    }
}
