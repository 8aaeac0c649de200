//! TLS for listeners: PEM loading and a rustls acceptor that offers `h2` and `http/1.1`
//! through ALPN.
use crate::config::TlsConfig;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// Why a listener's TLS settings could not be used.
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

/// Builds an acceptor from PEM files. With `http2`, ALPN prefers `h2`.
///
/// # Errors
/// Unreadable files, files without a certificate or key, or a pair rustls refuses.
pub fn acceptor(cfg: &TlsConfig, http2: bool) -> Result<TlsAcceptor, TlsError> {
    let cert_pem = read(&cfg.cert)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            path: cfg.cert.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            path: cfg.cert.clone(),
            what: "certificate",
        });
    }
    let key_pem = read(&cfg.key)?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| TlsError::Read {
            path: cfg.key.clone(),
            source,
        })?
        .ok_or_else(|| TlsError::Missing {
            path: cfg.key.clone(),
            what: "private key",
        })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(TlsAcceptor::from(Arc::new(config)))
}
