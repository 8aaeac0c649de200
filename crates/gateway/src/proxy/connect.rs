//! Connections to backends: TCP, then a TLS handshake for TLS upstreams, within one
//! `connect_timeout`. Both HTTP/1 and HTTP/2 clients and the active health checks connect
//! through [`connect`], so a check sees a backend the way requests do.
//! The stream is the library's [`ClientStream`] (plain TCP or TLS), shared with the load
//! generator.
use crate::tls::BackendTls;
use arc_swap::ArcSwap;
pub use scalewise::tls::ClientStream;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Where and how to connect to one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The backend's address.
    pub addr: SocketAddr,
    /// Time for TCP connect and TLS handshake together.
    pub timeout: Duration,
    /// TLS to the backend, if its upstream has it.
    pub tls: Option<BackendTls>,
}

impl Target {
    /// [`connect`]s to this backend.
    ///
    /// # Errors
    /// As [`connect`].
    pub async fn connect(&self) -> io::Result<ClientStream> {
        connect(self.addr, self.timeout, self.tls.as_ref()).await
    }
}

/// Connects to `addr` and, with `tls`, runs the handshake; all within `timeout`.
///
/// # Errors
/// The TCP connect failed, the handshake failed (an `io::Error` wrapping a
/// [`crate::tls::HandshakeError`]), or the whole took longer than `timeout`.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&BackendTls>,
) -> io::Result<ClientStream> {
    let connecting = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        match tls {
            None => Ok(ClientStream::Plain(tcp)),
            Some(t) => Ok(ClientStream::Tls(Box::new(t.handshake(tcp, addr).await?))),
        }
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
}

/// How an upstream's active health checks reach its backends: with the TLS of each backend
/// of a TLS upstream, plain TCP otherwise. Shared with the checks task and refreshed by every
/// state build, so checks that keep running across a reload follow new TLS settings and
/// new (DNS) backends.
#[derive(Debug, Clone, Default)]
pub struct CheckTargets(Arc<ArcSwap<HashMap<SocketAddr, BackendTls>>>);

impl CheckTargets {
    /// Replaces the TLS settings by backend address (empty for a plain upstream).
    pub fn set(&self, tls: HashMap<SocketAddr, BackendTls>) {
        self.0.store(Arc::new(tls));
    }

    /// The TLS of backend `addr`, as of the newest state build.
    pub fn get(&self, addr: SocketAddr) -> Option<BackendTls> {
        self.0.load().get(&addr).cloned()
    }
}

impl scalewise::health::CheckTransport for CheckTargets {
    type Stream = ClientStream;

    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<ClientStream>> + Send {
        let tls = self.0.load().get(&addr).cloned();
        // The check's own timeout bounds the whole probe, handshake included.
        async move { connect(addr, crate::config::MAX_DURATION, tls.as_ref()).await }
    }

    fn host(&self, addr: SocketAddr) -> Option<String> {
        self.get(addr).map(|t| t.server_name())
    }
}
