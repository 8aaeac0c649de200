//! The raw HTTP/1.1 engine: pre-serialized request bytes written straight to the socket and
//! responses parsed in place with `httparse`.
//!
//! This is what makes the generator as fast as wrk: no per-request allocation, no header map, no
//! body stream; a response is read into one reusable buffer and the body is skipped by length
//! (Content-Length or chunk sizes) while its bytes are counted.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::recorder::ErrorKind;

/// Initial read buffer per connection; grows only for unusually large response heads.
const INITIAL_BUF: usize = 4096;
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body kept when a scenario needs it for extraction.
pub(crate) const MAX_CAPTURE: usize = 1024 * 1024;
/// Header slots tried first; a response with more headers is parsed again with room for as
/// many as fit in [`MAX_HEAD`] (each takes at least 4 bytes: `a:\r\n`).
const MAX_HEADERS: usize = 64;
const MAX_HEADERS_LARGE: usize = MAX_HEAD / 4;

/// A TCP or TLS stream (the library's, shared with the gateway).
pub use scalewise::tls::ClientStream as Stream;

/// A request ready for the wire.
#[derive(Debug, Clone)]
pub struct Wire {
    /// Serialized request line, headers and body.
    pub bytes: bytes::Bytes,
    /// HEAD requests get no body in the response.
    pub head: bool,
}

/// Serializes a request. `Host` is added unless given; `Content-Length` whenever a body is set
/// or the method normally carries one.
#[must_use]
pub fn serialize(
    method: &str,
    path: &str,
    authority: &str,
    headers: &[(String, String)],
    body: &[u8],
    keepalive: bool,
) -> Wire {
    let mut out = Vec::with_capacity(64 + path.len() + body.len() + headers.len() * 32);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    if !has("host") {
        out.extend_from_slice(b"Host: ");
        out.extend_from_slice(authority.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (k, v) in headers {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let wants_len = !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH");
    if wants_len && !has("content-length") && !has("transfer-encoding") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    if !keepalive && !has("connection") {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Wire {
        bytes: out.into(),
        head: method.eq_ignore_ascii_case("HEAD"),
    }
}

/// A parsed response.
#[derive(Debug, Default)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Bytes read from the socket for this response.
    pub bytes: u64,
    /// Whether the connection must be closed afterwards.
    pub close: bool,
    /// Headers (only when captured).
    pub headers: Vec<(String, String)>,
    /// Body (only when captured, up to 1 MiB).
    pub body: Vec<u8>,
}

/// One HTTP/1.1 connection with its reusable read buffer.
#[derive(Debug)]
pub struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    served: u64,
    stale: bool,
}

enum BodyLen {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

fn err(kind: ErrorKind, msg: &str) -> (ErrorKind, io::Error) {
    (kind, io::Error::other(msg.to_string()))
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Wraps a connected stream.
    pub fn new(stream: S) -> Self {
        Conn {
            stream,
            buf: vec![0; INITIAL_BUF],
            start: 0,
            end: 0,
            served: 0,
            stale: false,
        }
    }

    /// Sends one request and reads its complete response.
    ///
    /// # Errors
    /// The failure and its category; the connection must not be reused after an error.
    pub async fn request(
        &mut self,
        wire: &Wire,
        capture: bool,
    ) -> Result<Response, (ErrorKind, io::Error)> {
        self.stale = false;
        if let Err(e) = self.stream.write_all(&wire.bytes).await {
            self.stale = true;
            return Err((ErrorKind::from_io(&e), e));
        }
        let mut resp = Response::default();
        loop {
            let (status, close, body) = self.read_head(&mut resp, capture, wire.head).await?;
            if (100..200).contains(&status) && status != 101 {
                // Interim response (100 Continue, 103 Early Hints): the real one follows.
                resp.headers.clear();
                continue;
            }
            resp.status = status;
            resp.close = close;
            self.served += 1;
            match body {
                BodyLen::None => {}
                BodyLen::Length(n) => self.skip_exact(n, &mut resp, capture).await?,
                BodyLen::Chunked => self.skip_chunked(&mut resp, capture).await?,
                BodyLen::UntilClose => {
                    self.skip_to_eof(&mut resp, capture).await?;
                    resp.close = true;
                }
            }
            return Ok(resp);
        }
    }

    /// Whether the last request failed on a connection that had served earlier responses, before
    /// a single byte of the response arrived: the server closed an idle keep-alive connection
    /// (a race every HTTP client meets), so the request may be resent on a new connection.
    #[must_use]
    pub fn stale(&self) -> bool {
        self.served > 0 && self.stale
    }

    /// Reads more bytes into the buffer; `Ok(false)` on EOF.
    async fn fill(&mut self, resp: &mut Response) -> Result<bool, (ErrorKind, io::Error)> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < MAX_HEAD {
                self.buf.resize(self.buf.len() * 2, 0);
            } else {
                return Err(err(ErrorKind::Protocol, "response head larger than 64 KiB"));
            }
        }
        let n = self
            .stream
            .read(&mut self.buf[self.end..])
            .await
            .map_err(|e| (ErrorKind::from_io(&e), e))?;
        self.end += n;
        resp.bytes += n as u64;
        Ok(n > 0)
    }

    async fn read_head(
        &mut self,
        resp: &mut Response,
        capture: bool,
        head_request: bool,
    ) -> Result<(u16, bool, BodyLen), (ErrorKind, io::Error)> {
        loop {
            if self.end > self.start {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                // Only for responses with more than MAX_HEADERS headers (some CDNs and
                // frameworks send dozens of Set-Cookie / security headers): a heap slice then.
                let mut many: Vec<httparse::Header<'_>> = Vec::new();
                let head = &self.buf[self.start..self.end];
                let mut parsed = httparse::Response::new(&mut headers);
                let mut outcome = parsed.parse(head);
                if matches!(outcome, Err(httparse::Error::TooManyHeaders)) {
                    many.resize(MAX_HEADERS_LARGE, httparse::EMPTY_HEADER);
                    parsed = httparse::Response::new(&mut many);
                    outcome = parsed.parse(head);
                }
                match outcome {
                    Ok(httparse::Status::Complete(len)) => {
                        let status = parsed.code.unwrap_or(0);
                        // RFC 9110 §15: a status code is 100–599; anything else is not HTTP,
                        // and counting it as a success would hide a broken server.
                        if !(100..=599).contains(&status) {
                            return Err(err(
                                ErrorKind::Protocol,
                                &format!("invalid status code {status} (expected 100-599)"),
                            ));
                        }
                        let http10 = parsed.version == Some(0);
                        let mut close = http10;
                        let mut length = None;
                        let mut chunked = false;
                        for h in parsed.headers.iter() {
                            if h.name.eq_ignore_ascii_case("content-length") {
                                let v = std::str::from_utf8(h.value)
                                    .ok()
                                    .and_then(|v| v.trim().parse::<u64>().ok());
                                match v {
                                    // RFC 9112 §6.3: differing lengths make the message
                                    // framing unknowable; guessing one would misread the
                                    // body (or wait for bytes that never come).
                                    Some(v) if length.is_some_and(|l| l != v) => {
                                        return Err(err(
                                            ErrorKind::Protocol,
                                            "conflicting Content-Length headers",
                                        ))
                                    }
                                    Some(v) => length = Some(v),
                                    None => {
                                        return Err(err(
                                            ErrorKind::Protocol,
                                            "invalid Content-Length",
                                        ))
                                    }
                                }
                            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                                chunked = h
                                    .value
                                    .windows(7)
                                    .any(|w| w.eq_ignore_ascii_case(b"chunked"));
                            } else if h.name.eq_ignore_ascii_case("connection") {
                                if h.value.windows(5).any(|w| w.eq_ignore_ascii_case(b"close")) {
                                    close = true;
                                } else if h
                                    .value
                                    .windows(10)
                                    .any(|w| w.eq_ignore_ascii_case(b"keep-alive"))
                                {
                                    close = false;
                                }
                            }
                            if capture {
                                resp.headers.push((
                                    h.name.to_ascii_lowercase(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                ));
                            }
                        }
                        self.start += len;
                        let body = if head_request
                            || status == 204
                            || status == 304
                            || (100..200).contains(&status)
                        {
                            BodyLen::None
                        } else if chunked {
                            BodyLen::Chunked
                        } else if let Some(n) = length {
                            BodyLen::Length(n)
                        } else {
                            BodyLen::UntilClose
                        };
                        return Ok((status, close, body));
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => {
                        return Err(err(ErrorKind::Protocol, &format!("bad response head: {e}")))
                    }
                }
            }
            let filled = self.fill(resp).await;
            if resp.bytes == 0 && self.start == self.end && !matches!(filled, Ok(true)) {
                self.stale = true;
            }
            if !filled? {
                return Err(if resp.bytes == 0 && self.start == self.end {
                    err(ErrorKind::Reset, "connection closed before the response")
                } else {
                    err(ErrorKind::Reset, "connection closed mid response head")
                });
            }
        }
    }

    fn take(&mut self, n: u64, resp: &mut Response, capture: bool) -> u64 {
        let avail = (self.end - self.start) as u64;
        let k = avail.min(n);
        #[allow(clippy::cast_possible_truncation)]
        let k_usize = k as usize;
        if capture && resp.body.len() < MAX_CAPTURE {
            let room = MAX_CAPTURE - resp.body.len();
            let slice = &self.buf[self.start..self.start + k_usize.min(room)];
            resp.body.extend_from_slice(slice);
        }
        self.start += k_usize;
        k
    }

    async fn skip_exact(
        &mut self,
        mut n: u64,
        resp: &mut Response,
        capture: bool,
    ) -> Result<(), (ErrorKind, io::Error)> {
        loop {
            n -= self.take(n, resp, capture);
            if n == 0 {
                return Ok(());
            }
            if !self.fill(resp).await? {
                return Err(err(ErrorKind::Reset, "connection closed mid body"));
            }
        }
    }

    async fn skip_to_eof(
        &mut self,
        resp: &mut Response,
        capture: bool,
    ) -> Result<(), (ErrorKind, io::Error)> {
        loop {
            self.take(u64::MAX, resp, capture);
            if !self.fill(resp).await? {
                return Ok(());
            }
        }
    }

    /// Reads one CRLF-terminated line into the buffer and returns its length (without CRLF).
    async fn line(&mut self, resp: &mut Response) -> Result<usize, (ErrorKind, io::Error)> {
        loop {
            if let Some(pos) = self.buf[self.start..self.end]
                .windows(2)
                .position(|w| w == b"\r\n")
            {
                return Ok(pos);
            }
            if self.end - self.start > 4096 {
                return Err(err(ErrorKind::Protocol, "chunk line too long"));
            }
            if !self.fill(resp).await? {
                return Err(err(ErrorKind::Reset, "connection closed mid chunked body"));
            }
        }
    }

    async fn skip_chunked(
        &mut self,
        resp: &mut Response,
        capture: bool,
    ) -> Result<(), (ErrorKind, io::Error)> {
        loop {
            let len = self.line(resp).await?;
            let size = match httparse::parse_chunk_size(&self.buf[self.start..self.start + len + 2])
            {
                Ok(httparse::Status::Complete((_, size))) => size,
                _ => return Err(err(ErrorKind::Protocol, "bad chunk size")),
            };
            self.start += len + 2;
            if size == 0 {
                // Trailers: header lines until an empty line.
                loop {
                    let len = self.line(resp).await?;
                    self.start += len + 2;
                    if len == 0 {
                        return Ok(());
                    }
                }
            }
            self.skip_exact(size, resp, capture).await?;
            let len = self.line(resp).await?;
            if len != 0 {
                return Err(err(ErrorKind::Protocol, "missing CRLF after chunk"));
            }
            self.start += 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn roundtrip(
        response: &'static [u8],
        capture: bool,
    ) -> Result<Response, (ErrorKind, io::Error)> {
        let (client, mut server) = tokio::io::duplex(64);
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = server.read(&mut buf).await;
            // Dribble the response in small pieces to exercise partial parsing.
            for chunk in response.chunks(7) {
                let _ = server.write_all(chunk).await;
            }
        });
        let mut conn = Conn::new(client);
        let wire = serialize("GET", "/", "x", &[], b"", true);
        conn.request(&wire, capture).await
    }

    #[tokio::test]
    async fn content_length_body() {
        let r = roundtrip(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", true)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"hello");
        assert!(!r.close);
    }

    #[tokio::test]
    async fn chunked_body_with_trailer() {
        let r = roundtrip(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n",
            true,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.body, b"abcde");
    }

    #[tokio::test]
    async fn responses_with_hundreds_of_headers_are_read() {
        let mut resp = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..300 {
            resp.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        resp.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
        let r = roundtrip(Box::leak(resp.into_boxed_slice()), true)
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.headers.len(), &r.body[..]),
            (200, 301, &b"ok"[..])
        );
    }

    #[tokio::test]
    async fn status_codes_outside_100_to_599_are_protocol_errors() {
        for resp in [
            &b"HTTP/1.1 600 X\r\nContent-Length: 0\r\n\r\n"[..],
            b"HTTP/1.1 999 X\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 099 X\r\nContent-Length: 0\r\n\r\n",
        ] {
            let (kind, e) = roundtrip(resp, false).await.unwrap_err();
            assert_eq!(kind, ErrorKind::Protocol);
            assert!(e.to_string().contains("invalid status code"), "{e}");
        }
        assert_eq!(
            roundtrip(b"HTTP/1.1 599 X\r\nContent-Length: 0\r\n\r\n", false)
                .await
                .unwrap()
                .status,
            599
        );
    }

    #[tokio::test]
    async fn conflicting_content_lengths_are_a_protocol_error_not_a_wait() {
        // Without the check the last length (5) wins and the read waits for 3 bytes forever.
        let (kind, e) = roundtrip(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\nok",
            false,
        )
        .await
        .unwrap_err();
        assert_eq!(kind, ErrorKind::Protocol);
        assert!(e.to_string().contains("conflicting Content-Length"), "{e}");
        // Repeating the same length is allowed (RFC 9112 §6.3 lets a recipient accept it).
        let r = roundtrip(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
            true,
        )
        .await
        .unwrap();
        assert_eq!(r.body, b"ok");
    }

    #[tokio::test]
    async fn until_close_and_interim() {
        let r = roundtrip(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\nbody",
            true,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"body");
        assert!(r.close);
    }

    #[tokio::test]
    async fn garbage_is_protocol_error() {
        let e = roundtrip(b"NOT HTTP AT ALL\r\n\r\n", false)
            .await
            .unwrap_err();
        assert_eq!(e.0, ErrorKind::Protocol);
    }

    #[tokio::test]
    async fn idle_close_after_a_response_is_stale() {
        let (client, mut server) = tokio::io::duplex(256);
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = server.read(&mut buf).await;
            let _ = server
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await;
            // Then close, as a server does when its keep-alive timeout expires.
        });
        let mut conn = Conn::new(client);
        let wire = serialize("GET", "/", "x", &[], b"", true);
        assert_eq!(conn.request(&wire, false).await.unwrap().status, 200);
        assert!(!conn.stale());
        let e = conn.request(&wire, false).await.unwrap_err();
        assert_eq!(e.0, ErrorKind::Reset);
        assert!(conn.stale());
    }

    #[test]
    fn serialize_adds_host_and_length() {
        let w = serialize(
            "POST",
            "/a?b=1",
            "h:1",
            &[("X-A".into(), "1".into())],
            b"xy",
            false,
        );
        let s = std::str::from_utf8(&w.bytes).unwrap();
        assert_eq!(s, "POST /a?b=1 HTTP/1.1\r\nHost: h:1\r\nX-A: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nxy");
    }

    fn run_bytes(response: Vec<u8>) -> Result<Response, (ErrorKind, io::Error)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (client, mut server) = tokio::io::duplex(1 << 16);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = server.read(&mut buf).await;
                for chunk in response.chunks(13) {
                    if server.write_all(chunk).await.is_err() {
                        return;
                    }
                }
            });
            let mut conn = Conn::new(client);
            let wire = serialize("GET", "/", "x", &[], b"", true);
            conn.request(&wire, true).await
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever a peer sends, the engine answers with a response or an error, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = run_bytes(bytes);
        }

        /// Any body, chunked any way, parses back to itself.
        #[test]
        fn chunked_roundtrip(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048), cut in 1usize..300) {
            let mut resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for piece in body.chunks(cut) {
                resp.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                resp.extend_from_slice(piece);
                resp.extend_from_slice(b"\r\n");
            }
            resp.extend_from_slice(b"0\r\n\r\n");
            let r = run_bytes(resp).unwrap();
            proptest::prop_assert_eq!(r.status, 200);
            proptest::prop_assert_eq!(r.body, body);
        }
    }
}
