//! The target: URL validation, one-time DNS resolution, TLS configuration and connecting.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::recorder::ErrorKind;
use crate::LoadError;

/// Which wire protocol the target URL asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `http://`
    Http,
    /// `https://`
    Https,
    /// `ws://`
    Ws,
    /// `wss://`
    Wss,
}

impl Scheme {
    /// Whether the scheme uses TLS.
    #[must_use]
    pub fn tls(self) -> bool {
        matches!(self, Scheme::Https | Scheme::Wss)
    }
}

/// A validated, resolved target.
#[derive(Clone)]
pub struct Target {
    /// The URL as given.
    pub url: url::Url,
    /// Scheme.
    pub scheme: Scheme,
    /// Host name (for `Host`, SNI).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Resolved address (resolved once: a load test should measure the server, not DNS).
    pub addr: SocketAddr,
    /// `Host` header value (`host` or `host:port` for non-default ports).
    pub authority: String,
    /// Path and query.
    pub path_and_query: String,
    /// TLS client configuration, for TLS schemes.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url.as_str())
            .field("addr", &self.addr)
            .finish()
    }
}

/// TLS options.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Accept any server certificate.
    pub insecure: bool,
    /// Extra PEM CA file.
    pub cacert: Option<std::path::PathBuf>,
    /// ALPN protocols to offer.
    pub alpn: Vec<Vec<u8>>,
}

impl Target {
    /// Parses and resolves `url`.
    ///
    /// # Errors
    /// [`LoadError::BadUrl`] for malformed URLs or unsupported schemes, [`LoadError::Resolve`] when
    /// the host has no address.
    pub async fn parse(url: &str, tls: &TlsOptions) -> Result<Target, LoadError> {
        if !url.contains("://") {
            // `127.0.0.1:8080/` fails to parse and `localhost:8080` parses with the scheme
            // `localhost`: neither error says what is wrong.
            return Err(LoadError::BadUrl(format!(
                "{url}: missing scheme (expected http://, https://, ws:// or wss://, e.g. http://{url})"
            )));
        }
        let parsed = url::Url::parse(url).map_err(|e| LoadError::BadUrl(format!("{url}: {e}")))?;
        let scheme = match parsed.scheme() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            other => {
                return Err(LoadError::BadUrl(format!(
                    "{url}: unsupported scheme `{other}` (expected http, https, ws or wss)"
                )))
            }
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| LoadError::BadUrl(format!("{url}: missing host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| LoadError::BadUrl(format!("{url}: missing port")))?;
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| LoadError::Resolve(format!("{host}: {e}")))?
            .next()
            .ok_or_else(|| LoadError::Resolve(format!("{host}: no addresses")))?;
        let authority = match parsed.port() {
            Some(p) => match parsed.host() {
                Some(url::Host::Ipv6(_)) => format!("[{host}]:{p}"),
                _ => format!("{host}:{p}"),
            },
            None => parsed.host_str().unwrap_or(&host).to_string(),
        };
        let mut path_and_query = parsed.path().to_string();
        if path_and_query.is_empty() {
            path_and_query.push('/');
        }
        if let Some(q) = parsed.query() {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        let tls = if scheme.tls() {
            Some(Arc::new(client_config(tls)?))
        } else {
            None
        };
        Ok(Target {
            url: parsed,
            scheme,
            host,
            port,
            addr,
            authority,
            path_and_query,
            tls,
        })
    }

    /// Opens a TCP connection (with `TCP_NODELAY`: requests are small and latency matters).
    ///
    /// # Errors
    /// The connect error, classified as [`ErrorKind::Connect`] or [`ErrorKind::Timeout`].
    pub async fn connect_tcp(
        &self,
        timeout: Duration,
    ) -> Result<TcpStream, (ErrorKind, std::io::Error)> {
        match tokio::time::timeout(timeout, TcpStream::connect(self.addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Ok(Err(e)) => Err((ErrorKind::Connect, e)),
            Err(_) => Err((
                ErrorKind::Connect,
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
            )),
        }
    }

    /// Opens a TLS connection over TCP.
    ///
    /// # Errors
    /// Connect or TLS handshake failure.
    pub async fn connect_tls(
        &self,
        timeout: Duration,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, (ErrorKind, std::io::Error)> {
        let tcp = self.connect_tcp(timeout).await?;
        let config = self.tls.clone().ok_or_else(|| {
            (
                ErrorKind::Tls,
                std::io::Error::other("no TLS configuration"),
            )
        })?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| {
            (
                ErrorKind::Tls,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            )
        })?;
        let connector = tokio_rustls::TlsConnector::from(config);
        match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err((ErrorKind::Tls, e)),
            Err(_) => Err((
                ErrorKind::Tls,
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"),
            )),
        }
    }
}

fn client_config(opts: &TlsOptions) -> Result<rustls::ClientConfig, LoadError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError::Tls(e.to_string()))?;
    let mut config = if opts.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(scalewise::tls::accept_any_cert(provider))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let mut files: Vec<std::path::PathBuf> = Vec::new();
        if let Some(ca) = &opts.cacert {
            files.push(ca.clone());
        }
        for sys in [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
            "/etc/ssl/cert.pem",
        ] {
            if std::path::Path::new(sys).exists() {
                files.push(sys.into());
                break;
            }
        }
        for file in files {
            let data = std::fs::read(&file)
                .map_err(|e| LoadError::Tls(format!("reading CA file {}: {e}", file.display())))?;
            let mut found = 0usize;
            for cert in rustls_pemfile::certs(&mut data.as_slice()) {
                let cert =
                    cert.map_err(|e| LoadError::Tls(format!("parsing {}: {e}", file.display())))?;
                found += 1;
                // System bundles can contain certificates rustls rejects; skip those rather than
                // refuse to run.
                let _ = roots.add(cert);
            }
            // A --cacert that holds no certificate (a key, a DER file, the wrong path's
            // contents) would otherwise surface only as "unknown issuer" at the handshake.
            if found == 0 && opts.cacert.as_ref() == Some(&file) {
                return Err(LoadError::Tls(format!(
                    "--cacert {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file",
                    file.display()
                )));
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols.clone_from(&opts.alpn);
    Ok(config)
}
