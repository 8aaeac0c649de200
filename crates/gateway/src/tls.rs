//! TLS on both sides: listeners (a rustls acceptor that offers `h2` and `http/1.1` through
//! ALPN, optionally verifying client certificates against a CA file and CRLs) and backends
//! ([`UpstreamTls`]: a rustls client config per upstream, verified against a CA file or the
//! system's roots and optionally CRLs, optionally with a client certificate), and the PEM
//! loading they share.
use crate::config::{
    ClientAuthConfig, ClientAuthMode, CrlPolicy, CrlScope, TlsConfig, UnknownRevocationStatus,
    UpstreamProtocol, UpstreamTlsConfig,
};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use rustls::server::{danger::ClientCertVerifier, WebPkiClientVerifier};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Why TLS settings (a listener's or an upstream's) could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file held no usable certificate or key.
    #[error("{path}: no {what} found in PEM file")]
    Missing {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
    },
    /// rustls rejected a certificate or key from this file.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// The CA certificates or CRLs of this file cannot make a verifier.
    #[error("{path}: {source}")]
    Verifier {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::server::VerifierBuilderError,
    },
    /// No `ca_file` and the system has no usable trusted roots.
    #[error("no ca_file and no system root certificates could be loaded ({0})")]
    NoSystemRoots(String),
    /// rustls rejected the certificate/key pair.
    #[error("invalid certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The certificates of a PEM file (at least one), and the file's bytes.
fn load_certs(path: &Path) -> Result<(Vec<CertificateDer<'static>>, Vec<u8>), TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok((certs, pem))
}

/// The first private key of a PEM file, and the file's bytes.
fn load_key(path: &Path) -> Result<(PrivateKeyDer<'static>, Vec<u8>), TlsError> {
    let pem = read(path)?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| TlsError::Missing {
            path: path.to_owned(),
            what: "private key",
        })?;
    Ok((key, pem))
}

/// The CA certificates of a PEM file as trust anchors, and the file's bytes.
fn load_roots(path: &Path) -> Result<(rustls::RootCertStore, Vec<u8>), TlsError> {
    let (certs, pem) = load_certs(path)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|source| TlsError::Invalid {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok((roots, pem))
}

/// The certificate revocation lists of PEM files (each must hold at least one), checked
/// one file at a time so an unparsable list is reported with its file, and the files'
/// bytes.
fn load_crls(
    paths: &[PathBuf],
    roots: &Arc<rustls::RootCertStore>,
) -> Result<(Vec<CertificateRevocationListDer<'static>>, Vec<u8>), TlsError> {
    let mut all = Vec::new();
    let mut material = Vec::new();
    for path in paths {
        let pem = read(path)?;
        let crls: Vec<_> = rustls_pemfile::crls(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|source| TlsError::Read {
                path: path.clone(),
                source,
            })?;
        if crls.is_empty() {
            return Err(TlsError::Missing {
                path: path.clone(),
                what: "certificate revocation list (-----BEGIN X509 CRL-----)",
            });
        }
        // rustls parses CRLs only when a verifier is built, and then does not say which one
        // failed: build a throwaway verifier with this file's lists alone.
        WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
            .with_crls(crls.iter().cloned())
            .build()
            .map_err(|source| match source {
                rustls::server::VerifierBuilderError::InvalidCrl(e) => TlsError::Invalid {
                    path: path.clone(),
                    source: rustls::Error::InvalidCertRevocationList(e),
                },
                source => TlsError::Verifier {
                    path: path.clone(),
                    source,
                },
            })?;
        all.extend(crls);
        material.extend_from_slice(&pem);
    }
    Ok((all, material))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Applies `policy` to a rustls verifier builder (client and server verifier builders have
/// the same methods but no common trait).
macro_rules! with_crl_policy {
    ($builder:expr, $policy:expr) => {{
        let policy: CrlPolicy = $policy;
        let mut b = $builder;
        if policy.scope == CrlScope::Leaf {
            b = b.only_check_end_entity_revocation();
        }
        if policy.unknown_status == UnknownRevocationStatus::Allow {
            b = b.allow_unknown_revocation_status();
        }
        if policy.enforce_next_update {
            b = b.enforce_revocation_expiration();
        }
        b
    }};
}

/// A TLS listener's acceptor and what the XFCC element needs of its certificate.
#[derive(Clone)]
pub struct ListenerTls {
    /// The acceptor.
    pub acceptor: TlsAcceptor,
    /// The URI subject alternative names of the listener's certificate (`By=`).
    pub uri_sans: Vec<String>,
}

/// Builds an acceptor from PEM files. With `http2`, ALPN prefers `h2`. With
/// `client_auth`, clients are asked for a certificate, verified against its CA file and
/// CRLs.
///
/// # Errors
/// Unreadable files, files without a certificate, key or CRL, a pair rustls refuses, or
/// CA certificates or CRLs it cannot parse; the error names the key and the file.
pub fn acceptor(cfg: &TlsConfig, http2: bool) -> Result<ListenerTls, ListenerTlsError> {
    let at = |key: &'static str| move |source: TlsError| ListenerTlsError { key, source };
    let (certs, _) = load_certs(&cfg.cert).map_err(at("cert"))?;
    let uri_sans = certs
        .first()
        .map(|c| crate::client_cert::uri_sans(c))
        .unwrap_or_default();
    let (key, _) = load_key(&cfg.key).map_err(at("key"))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| at("cert")(e.into()))?;
    let builder = match &cfg.client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => builder.with_client_cert_verifier(client_verifier(auth)?),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| at("key")(e.into()))?;
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(ListenerTls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        uri_sans,
    })
}

/// The verifier of client certificates for `[listeners.tls.client_auth]`.
fn client_verifier(
    auth: &ClientAuthConfig,
) -> Result<Arc<dyn ClientCertVerifier>, ListenerTlsError> {
    let at = |key: &'static str| move |source: TlsError| ListenerTlsError { key, source };
    let (roots, _) = load_roots(&auth.ca_file).map_err(at("client_auth.ca_file"))?;
    let roots = Arc::new(roots);
    let (crls, _) = load_crls(&auth.crl_files, &roots).map_err(at("client_auth.crl_files"))?;
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(roots, provider()).with_crls(crls);
    if !auth.crl_files.is_empty() {
        builder = with_crl_policy!(builder, auth.crl_policy());
    }
    if auth.mode == ClientAuthMode::Optional {
        builder = builder.allow_unauthenticated();
    }
    builder.build().map_err(|source| {
        at("client_auth.ca_file")(TlsError::Verifier {
            path: auth.ca_file.clone(),
            source,
        })
    })
}

/// Why a listener's TLS settings could not be used: the key under `tls` and what went wrong
/// (naming the file).
#[derive(Debug, thiserror::Error)]
#[error("tls.{key}: {source}")]
pub struct ListenerTlsError {
    /// `cert`, `key`, `client_auth.ca_file` or `client_auth.crl_files`.
    pub key: &'static str,
    /// What went wrong.
    pub source: TlsError,
}

/// Whether a failed TLS handshake with a client was about its certificate: it sent none
/// where one is required, or one that did not verify (unknown issuer, revoked, expired,
/// not for client authentication...).
pub fn is_client_cert_error(err: &io::Error) -> bool {
    matches!(
        err.get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_))
    )
}

/// The TLS client side of one upstream, built from its `[upstreams.NAME.tls]` and the files
/// it names; [`UpstreamTls::for_backend`] adds the name one backend is verified against.
///
/// Two are equal when built from the same settings and the same file contents, so a reload
/// keeps a backend's pooled connections unless something about its TLS changed.
///
/// ```no_run
/// use scalewise_gateway::config::{UpstreamProtocol, UpstreamTlsConfig};
/// use scalewise_gateway::tls::UpstreamTls;
///
/// let cfg = UpstreamTlsConfig {
///     ca_file: Some("ca.pem".into()),
///     server_name: Some("api.internal".into()),
///     ..UpstreamTlsConfig::new()
/// };
/// let tls = UpstreamTls::load(&cfg, UpstreamProtocol::Http1).unwrap();
/// let backend = tls.for_backend(None, "10.0.0.5:443".parse().unwrap());
/// assert_eq!(backend.server_name(), "api.internal");
/// ```
#[derive(Clone)]
pub struct UpstreamTls {
    connector: TlsConnector,
    /// The protocol the upstream speaks; a backend that picks another through ALPN fails
    /// the handshake.
    alpn: &'static str,
    /// What the config was built from: settings and the bytes of every file read.
    source: Arc<(UpstreamTlsConfig, Vec<u8>)>,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.alpn == other.alpn && self.source == other.source
    }
}

impl Eq for UpstreamTls {}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("config", &self.source.0)
            .field("alpn", &self.alpn)
            .finish()
    }
}

impl UpstreamTls {
    /// Reads the files of `cfg` and builds the client config for an upstream speaking
    /// `protocol`.
    ///
    /// # Errors
    /// An unreadable file (with its path), a file without certificates, key or CRL, a
    /// certificate or CRL rustls refuses, or no trusted roots at all.
    pub fn load(
        cfg: &UpstreamTlsConfig,
        protocol: UpstreamProtocol,
    ) -> Result<Self, UpstreamTlsError> {
        // Which key of `[upstreams.NAME.tls]` a failure is about.
        let at = |key: &'static str| move |source: TlsError| UpstreamTlsError { key, source };
        let provider = provider();
        let mut material = Vec::new();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| at("enabled")(e.into()))?;
        let builder = if cfg.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(scalewise::tls::accept_any_cert(provider))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            match &cfg.ca_file {
                Some(path) => {
                    let (certs, pem) = load_roots(path).map_err(at("ca_file"))?;
                    material.extend_from_slice(&pem);
                    roots = certs;
                }
                None => {
                    let found = rustls_native_certs::load_native_certs();
                    roots.add_parsable_certificates(found.certs);
                    if roots.is_empty() {
                        let why: Vec<_> = found.errors.iter().map(ToString::to_string).collect();
                        return Err(at("ca_file")(TlsError::NoSystemRoots(if why.is_empty() {
                            "none found".to_owned()
                        } else {
                            why.join("; ")
                        })));
                    }
                }
            }
            if cfg.crl_files.is_empty() {
                builder.with_root_certificates(roots)
            } else {
                let roots = Arc::new(roots);
                let (crls, pem) = load_crls(&cfg.crl_files, &roots).map_err(at("crl_files"))?;
                material.extend_from_slice(&pem);
                let verifier_builder =
                    WebPkiServerVerifier::builder_with_provider(roots, provider).with_crls(crls);
                let verifier = with_crl_policy!(verifier_builder, cfg.crl_policy())
                    .build()
                    .map_err(|source| {
                        at("crl_files")(TlsError::Verifier {
                            path: cfg.crl_files.first().cloned().unwrap_or_default(),
                            source,
                        })
                    })?;
                builder.with_webpki_verifier(verifier)
            }
        };
        let mut config = match (&cfg.cert_file, &cfg.key_file) {
            (Some(cert), Some(key)) => {
                let (certs, pem) = load_certs(cert).map_err(at("cert_file"))?;
                material.extend_from_slice(&pem);
                let (key, pem) = load_key(key).map_err(at("key_file"))?;
                material.extend_from_slice(&pem);
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|source| {
                        at("cert_file")(TlsError::Invalid {
                            path: cert.clone(),
                            source,
                        })
                    })?
            }
            // validate() requires both or neither.
            _ => builder.with_no_client_auth(),
        };
        let alpn = protocol.alpn();
        config.alpn_protocols = match &cfg.alpn {
            Some(list) => list.iter().map(|p| p.as_bytes().to_vec()).collect(),
            None => vec![alpn.as_bytes().to_vec()],
        };
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            alpn,
            source: Arc::new((cfg.clone(), material)),
        })
    }

    /// The TLS of backend `addr`, resolved from the DNS name `host` if it has one: SNI and
    /// verification use `server_name` if configured, else `host`, else the IP address
    /// (which `validate()` allows only with `insecure_skip_verify`).
    pub fn for_backend(&self, host: Option<&str>, addr: SocketAddr) -> BackendTls {
        let name = self
            .source
            .0
            .server_name
            .as_deref()
            .or(host)
            .and_then(|n| ServerName::try_from(n.to_owned()).ok())
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        BackendTls {
            upstream: self.clone(),
            server_name: name,
        }
    }
}

/// Why an upstream's TLS settings could not be used: the key of `[upstreams.NAME.tls]` and
/// what went wrong (naming the file).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {source}")]
pub struct UpstreamTlsError {
    /// `ca_file`, `crl_files`, `cert_file` or `key_file`.
    pub key: &'static str,
    /// What went wrong.
    pub source: TlsError,
}

/// TLS to one backend: its upstream's client config and the name it is verified against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendTls {
    upstream: UpstreamTls,
    server_name: ServerName<'static>,
}

impl BackendTls {
    /// The name sent as SNI and verified (an IP address when the backend has no name).
    pub fn server_name(&self) -> String {
        self.server_name.to_str().into_owned()
    }

    /// Runs the handshake on `tcp`, connected to `addr`.
    ///
    /// # Errors
    /// The handshake failed (certificate not trusted or not valid for the name, the backend
    /// refused our certificate or ALPN, the connection closed): an `io::Error` wrapping a
    /// [`HandshakeError`] that says which backend and why.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let fail = |kind: io::ErrorKind, reason: String| {
            io::Error::new(
                kind,
                HandshakeError {
                    backend: addr,
                    server_name: self.server_name(),
                    reason,
                },
            )
        };
        let stream = self
            .upstream
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| fail(e.kind(), e.to_string()))?;
        match stream.get_ref().1.alpn_protocol() {
            Some(p) if p != self.upstream.alpn.as_bytes() => Err(fail(
                io::ErrorKind::InvalidData,
                format!(
                    "the backend chose ALPN protocol \"{}\", the upstream speaks \"{}\"",
                    String::from_utf8_lossy(p),
                    self.upstream.alpn
                ),
            )),
            _ => Ok(stream),
        }
    }
}

/// A failed TLS handshake with a backend; found inside a connect error's `io::Error`.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with {backend} (server name {server_name}) failed: {reason}")]
pub struct HandshakeError {
    /// The backend.
    pub backend: SocketAddr,
    /// The name it was verified against.
    pub server_name: String,
    /// Why, as rustls put it.
    pub reason: String,
}

impl HandshakeError {
    /// The handshake error somewhere in `err`'s chain of sources, if any.
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Self> {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some(h) = e.downcast_ref::<Self>() {
                return Some(h);
            }
            if let Some(h) = e
                .downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<Self>())
            {
                return Some(h);
            }
            cur = e.source();
        }
        None
    }
}
