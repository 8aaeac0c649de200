//! Certificates for the TLS tests, made with rcgen: a CA that issues leaves (with serial
//! numbers a revocation list can name) and signs CRLs, a scratch directory for the PEM files,
//! and rustls helpers.
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A certificate authority that issues leaf certificates and revocation lists.
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
    next_serial: AtomicU64,
}

/// An issued certificate.
pub struct Leaf {
    pub cert: String,
    pub key: String,
    pub der: CertificateDer<'static>,
    pub serial: u64,
}

impl Leaf {
    /// The chain and key as rustls takes them.
    pub fn identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (certs(&self.cert), private_key(&self.key))
    }
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert,
            key,
            next_serial: AtomicU64::new(1000),
        }
    }

    /// A leaf for `names` (DNS names or IP addresses) with `usage`: (cert PEM, key PEM).
    pub fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let leaf = self.leaf(names, usage);
        (leaf.cert, leaf.key)
    }

    /// A leaf for `names` (DNS names or IP addresses) with `usage`.
    pub fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![usage];
        self.sign(params)
    }

    /// Signs `params` with a fresh key and the next serial number.
    pub fn sign(&self, mut params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().clone(),
            serial,
        }
    }

    /// An intermediate CA signed by this one; the leaves it issues carry it in their chain
    /// (`Leaf::cert` holds the leaf, then the intermediate).
    pub fn intermediate(&self, name: &str) -> Intermediate {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Intermediate {
            ca: Self {
                cert,
                key,
                next_serial: AtomicU64::new(5000),
            },
            serial,
        }
    }

    /// A CRL (PEM) of this CA listing `revoked` serial numbers.
    pub fn crl(&self, revoked: &[u64]) -> String {
        self.crl_until(revoked, (2099, 1, 1))
    }

    /// A CRL (PEM) of this CA listing `revoked`, whose `nextUpdate` is `next_update` (year,
    /// month, day; a past date makes an expired list).
    pub fn crl_until(&self, revoked: &[u64], next_update: (i32, u8, u8)) -> String {
        let (y, m, d) = next_update;
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(y, m, d),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|&s| RevokedCertParams {
                    serial_number: SerialNumber::from(s),
                    revocation_time: rcgen::date_time_ymd(2024, 1, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.cert, &self.key)
            .unwrap()
            .pem()
            .unwrap()
    }
}

/// An intermediate CA: a [`Ca`] whose leaves chain through it to its issuer.
pub struct Intermediate {
    pub ca: Ca,
    /// Its serial number at its issuer (for the issuer's CRLs).
    pub serial: u64,
}

impl Intermediate {
    /// Signs `params`; the leaf's `cert` PEM is followed by this intermediate's, so a
    /// client presenting it sends the whole chain.
    pub fn sign(&self, params: CertificateParams) -> Leaf {
        let mut leaf = self.ca.sign(params);
        leaf.cert.push_str(&self.ca.cert.pem());
        leaf
    }
}

/// A scratch directory for PEM files, removed at the end.
pub struct Dir(pub PathBuf);

impl Dir {
    /// A fresh directory; `tag` must be unique among the tests of one test binary.
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("scalewise-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

pub fn private_key(pem: &str) -> PrivateKeyDer<'static> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .unwrap()
        .unwrap()
}
