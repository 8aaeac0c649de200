//! Client-side TLS pieces shared by everything in scalewise that dials out over TCP or TLS:
//! the gateway's backend connections and health checks, and the load generator's connections
//! to its target. Enabled by the `tls` feature.
//!
//! [`ClientStream`] is an enum rather than a boxed trait object or a type parameter: a plain
//! connection costs one branch per read or write, no allocation and no dynamic dispatch, and
//! one pool type holds either kind. The TLS variant is boxed because a rustls connection is
//! large and would otherwise make every plain connection as big.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use scalewise::tls::ClientStream;
//! use tokio::io::AsyncWriteExt;
//!
//! let tcp = tokio::net::TcpStream::connect("127.0.0.1:8080").await?;
//! let mut conn = ClientStream::Plain(tcp);
//! conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
//! # Ok(())
//! # }
//! ```

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connected client stream: plain TCP or TLS over TCP (handshake done).
#[derive(Debug)]
pub enum ClientStream {
    /// Clear text.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl ClientStream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether the peer has closed (or written to) this idle connection, so that it should not
    /// be reused for a request that cannot be sent twice. One non-blocking `recv` with
    /// `MSG_PEEK`: peeking rather than reading keeps TLS records in the socket.
    pub fn looks_closed(&self) -> bool {
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        // Pending means nothing to read: the connection is idle and open.
        !self.tcp().poll_peek(&mut cx, &mut buf).is_pending()
    }
}

impl AsyncRead for ClientStream {
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

impl AsyncWrite for ClientStream {
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

impl hyper_util::client::legacy::connect::Connection for ClientStream {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

/// A verifier that accepts any server certificate (the gateway's `insecure_skip_verify`, the
/// load generator's `--insecure`) but still checks the handshake signatures, so the session is
/// bound to the key the server presented and the TLS work done is the real one.
pub fn accept_any_cert(provider: Arc<CryptoProvider>) -> Arc<dyn ServerCertVerifier> {
    Arc::new(AcceptAnyCert(provider))
}

#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::ClientStream;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn looks_closed_sees_a_peer_close_but_not_an_idle_peer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = ClientStream::Plain(tokio::net::TcpStream::connect(addr).await.unwrap());
        let (mut server, _) = listener.accept().await.unwrap();
        assert!(!client.looks_closed(), "an idle open connection");
        server.shutdown().await.unwrap();
        drop(server);
        // The FIN arrives asynchronously: wait until the socket is readable, then probe.
        client.tcp().readable().await.unwrap();
        assert!(client.looks_closed(), "the peer closed");
    }
}
