//! Connections to backends: TCP, then a TLS handshake for TLS upstreams, within one
//! `connect_timeout`. Both HTTP/1 and HTTP/2 clients and the active health checks connect
//! through [`connect`], so a check sees a backend the way requests do.
//!
//! [`BackendStream`] is an enum rather than a boxed trait object or a type parameter of the
//! pool: a plain connection costs one branch per read or write, no allocation and no dynamic
//! dispatch, and one pool type holds either kind. The TLS variant is boxed because a rustls
//! connection is large and would otherwise make every plain `Conn` as big.
use crate::tls::BackendTls;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connected backend stream: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum BackendStream {
    /// Clear text.
    Plain(TcpStream),
    /// TLS (handshake done).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl BackendStream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether the backend has closed (or written to) this idle connection: one `recv`
    /// that would block. Peeks rather than reads so that TLS records stay in the socket.
    pub(crate) fn looks_closed(&self) -> bool {
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        // Pending means nothing to read: the connection is idle and open.
        !self.tcp().poll_peek(&mut cx, &mut buf).is_pending()
    }
}

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
    pub async fn connect(&self) -> io::Result<BackendStream> {
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
) -> io::Result<BackendStream> {
    let connecting = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        match tls {
            None => Ok(BackendStream::Plain(tcp)),
            Some(t) => Ok(BackendStream::Tls(Box::new(t.handshake(tcp, addr).await?))),
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
    type Stream = BackendStream;

    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<BackendStream>> + Send {
        let tls = self.0.load().get(&addr).cloned();
        // The check's own timeout bounds the whole probe, handshake included.
        async move { connect(addr, crate::config::MAX_DURATION, tls.as_ref()).await }
    }
}

impl AsyncRead for BackendStream {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl hyper_util::client::legacy::connect::Connection for BackendStream {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}
