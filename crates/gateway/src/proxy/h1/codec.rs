//! HTTP/1.1 message framing shared by the client-side connection loop ([`super::server`])
//! and the backend client ([`super::client`]): head parsing with `httparse`, the framing
//! rules of RFC 9112 §6 (with the request-smuggling checks a proxy needs), a chunked
//! decoder that works on whatever part of the stream has arrived, and the writers.
//!
//! Bodies are decoded into `Bytes` frames split off the connection's read buffer, never
//! collected: memory per message is bounded by the read buffer, not by the body size.
use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};
use http_body::Frame;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::AsyncRead;

/// Headers per message; more is answered like an oversized head (431).
pub(crate) const MAX_HEADERS: usize = 128;
/// Longest chunk-size line (size plus extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer block accepted.
const MAX_TRAILERS: usize = 16 * 1024;
/// Read buffer size: one read takes a typical head plus a small body.
pub(crate) const READ_CHUNK: usize = 8 * 1024;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (or `Content-Length: 0`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the peer closes (responses only).
    Close,
}

/// Why a message head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeadError {
    /// Not HTTP, or framing that could be read two ways (smuggling): 400.
    #[error("malformed message head")]
    Malformed,
    /// Head larger than allowed, or too many headers: 431.
    #[error("message head too large")]
    TooLarge,
    /// A well-formed request with a transfer coding the gateway does not implement (any but
    /// a single, final `chunked`): 501 (RFC 9112 §6.1).
    #[error("unsupported transfer coding")]
    UnsupportedCoding,
}

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub(crate) parts: http::request::Parts,
    pub(crate) framing: Framing,
    /// Whether the client wants the connection kept after this exchange.
    pub(crate) keep_alive: bool,
    /// `Expect: 100-continue` with a body to come.
    pub(crate) expect_continue: bool,
    /// Bytes of the head, to be consumed from the buffer.
    pub(crate) len: usize,
}

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub(crate) parts: http::response::Parts,
    pub(crate) framing: Framing,
    /// Whether the backend keeps the connection after this response.
    pub(crate) keep_alive: bool,
}

/// What the `Connection`, `Content-Length`, `Transfer-Encoding` and `Expect` headers say.
#[derive(Default)]
struct Framers {
    close: bool,
    keep_alive: bool,
    length: Option<u64>,
    /// `Content-Length` given as a list or more than once (each the same length): passed
    /// on as one plain value, so no later hop reads `5, 5` its own way.
    length_repeated: bool,
    te: bool,
    te_chunked_last: bool,
    /// `chunked` listed more than once, or before another coding.
    te_chunked_misplaced: bool,
    /// A coding other than `chunked` (well-formed, but not implemented).
    te_other: bool,
    /// A list element that is not a coding token (with optional parameters).
    te_malformed: bool,
    /// Codings listed.
    te_codings: u32,
    expect_continue: bool,
    hosts: u32,
    /// A `Host` that is not `host[:port]`.
    bad_host: bool,
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

/// A `tchar` of RFC 9110 §5.6.2 (the characters of a token).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether a `Host` value can be `uri-host [":" port]` (RFC 9110 §7.2): the characters of
/// a reg-name, an IP literal and a port, and no `..`. What is refused — `@` (userinfo),
/// `/`, `\`, `?`, `#`, whitespace, controls — is what lets the gateway route on one host
/// while a backend or cache behind it reads another (nginx refuses `/`, `\` and `..` too).
fn valid_host(v: &[u8]) -> bool {
    v.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%:[]".contains(&b))
        && !v.windows(2).any(|w| w == b"..")
}

fn parse_length(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

impl Framers {
    /// Records one header. Errors on framing that a proxy must not guess at.
    fn see(&mut self, name: &str, value: &[u8]) -> Result<(), HeadError> {
        if name.eq_ignore_ascii_case("content-length") {
            // `Content-Length: 5, 5` and repeated identical headers are one length
            // (RFC 9112 §6.3); anything else differing is a smuggling attempt.
            self.length_repeated |= self.length.is_some() || value.contains(&b',');
            for part in value.split(|&b| b == b',') {
                let n = parse_length(part).ok_or(HeadError::Malformed)?;
                match self.length {
                    Some(prev) if prev != n => return Err(HeadError::Malformed),
                    _ => self.length = Some(n),
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            self.te = true;
            // `transfer-coding = token *( OWS ";" OWS transfer-parameter )`; empty list
            // elements are allowed (RFC 9110 §5.6.1).
            for element in value.split(|&b| b == b',') {
                let element = trim(element);
                if element.is_empty() {
                    continue;
                }
                let (coding, params) = match element.iter().position(|&b| b == b';') {
                    Some(i) => (trim(&element[..i]), Some(&element[i + 1..])),
                    None => (element, None),
                };
                if coding.is_empty() || !coding.iter().all(|&b| is_tchar(b)) {
                    self.te_malformed = true;
                }
                let chunked = coding.eq_ignore_ascii_case(b"chunked");
                // `chunked` has no parameters; one with them is not the chunked we know.
                if chunked && params.is_some() {
                    self.te_malformed = true;
                }
                // A coding after `chunked` makes `chunked` not the last one.
                if self.te_chunked_last {
                    self.te_chunked_misplaced = true;
                }
                if !chunked {
                    self.te_other = true;
                }
                self.te_chunked_last = chunked;
                self.te_codings += 1;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for t in value.split(|&b| b == b',') {
                let t = trim(t);
                if t.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            self.expect_continue = trim(value).eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("host") {
            self.hosts += 1;
            self.bad_host |= !valid_host(value);
        }
        Ok(())
    }

    fn keep_alive(&self, version: Version) -> bool {
        if self.close {
            return false;
        }
        version == Version::HTTP_11 || self.keep_alive
    }
}

fn version(v: Option<u8>) -> Version {
    match v {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    }
}

fn header_map(
    headers: &[httparse::Header<'_>],
    framers: &mut Framers,
) -> Result<HeaderMap, HeadError> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for h in headers {
        framers.see(h.name, h.value)?;
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| HeadError::Malformed)?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| HeadError::Malformed)?;
        map.append(name, value);
    }
    Ok(map)
}

fn map_parse_error(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooLarge,
        _ => HeadError::Malformed,
    }
}

/// Parses a request head from the start of `buf`. `Ok(None)`: incomplete, read more.
///
/// Refused (400): unparsable heads, `Content-Length` together with `Transfer-Encoding`,
/// invalid or differing lengths, a `Transfer-Encoding` that is empty, not a list of coding
/// tokens, or lists `chunked` twice or before another coding (the shapes request smuggling
/// uses), codings on an HTTP/1.0 request, more than one `Host`. Refused (501): a
/// well-formed `Transfer-Encoding` with a coding other than `chunked` (`gzip, chunked`,
/// `compress`), which the gateway does not implement. Refused (431): a head over `max`
/// bytes.
pub(crate) fn parse_request(buf: &[u8], max: usize) -> Result<Option<RequestHead>, HeadError> {
    // Uninitialised: zeroing 128 headers (4 KiB) per parse costs more than parsing a
    // typical head.
    let mut headers = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req
        .parse_with_uninit_headers(buf, &mut headers)
        .map_err(map_parse_error)?
    {
        httparse::Status::Complete(n) if n > max => return Err(HeadError::TooLarge),
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial if buf.len() > max => return Err(HeadError::TooLarge),
        httparse::Status::Partial => return Ok(None),
    };
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Err(HeadError::Malformed);
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| HeadError::Malformed)?;
    let uri = Uri::try_from(path).map_err(|_| HeadError::Malformed)?;
    // Userinfo in an absolute-form target is an error (RFC 9110 §4.2.4); its authority
    // becomes the backend's `Host`, which must not carry it.
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(HeadError::Malformed);
    }
    let version = version(req.version);
    let mut f = Framers::default();
    let mut headers = header_map(req.headers, &mut f)?;
    if f.hosts > 1 || f.bad_host {
        return Err(HeadError::Malformed);
    }
    let framing = match (f.te, f.length) {
        (true, Some(_)) => return Err(HeadError::Malformed),
        (true, None)
            if version == Version::HTTP_10
                || f.te_malformed
                || f.te_codings == 0
                || f.te_chunked_misplaced =>
        {
            return Err(HeadError::Malformed)
        }
        // Only after every malformed shape was refused: a 501 closes the connection too,
        // but the status tells the client the message was understood and not supported.
        (true, None) if f.te_other => return Err(HeadError::UnsupportedCoding),
        (true, None) => Framing::Chunked,
        (false, Some(0)) | (false, None) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
    };
    if let (true, Some(n)) = (f.length_repeated, f.length) {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(RequestHead {
        keep_alive: f.keep_alive(version),
        expect_continue: f.expect_continue && framing != Framing::Empty,
        framing,
        parts,
        len,
    }))
}

/// Parses a response head from the start of `buf` and, when complete, takes it out of the
/// buffer. `head` says whether it answers a HEAD request (no body whatever the headers
/// say).
///
/// Header values are slices of the head (no copy, no allocation per value): a response
/// head is parsed once per proxied request and its values are only passed on.
pub(crate) fn parse_response(
    buf: &mut BytesMut,
    max: usize,
    head: bool,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut headers = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut headers)
        .map_err(map_parse_error)?
    {
        httparse::Status::Complete(n) if n > max => return Err(HeadError::TooLarge),
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial if buf.len() > max => return Err(HeadError::TooLarge),
        httparse::Status::Partial => return Ok(None),
    };
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(HeadError::Malformed)?;
    let version = version(resp.version);
    let mut f = Framers::default();
    // Where each name and value sits in the head, to slice them out after the split: on
    // the stack for the usual few headers.
    let base = buf.as_ptr() as usize;
    let count = resp.headers.len();
    let mut few = [(0u32, 0u32, 0u32, 0u32); 24];
    let mut many = Vec::new();
    if count > few.len() {
        many.resize(count, (0, 0, 0, 0));
    }
    let spans = if count > few.len() {
        &mut many[..]
    } else {
        &mut few[..count]
    };
    for (h, span) in resp.headers.iter().zip(spans.iter_mut()) {
        f.see(h.name, h.value)?;
        let at = |p: *const u8| (p as usize - base) as u32;
        *span = (
            at(h.name.as_ptr()),
            h.name.len() as u32,
            at(h.value.as_ptr()),
            h.value.len() as u32,
        );
    }
    let bytes = buf.split_to(len).freeze();
    let mut map = HeaderMap::with_capacity(count);
    for &(n, nl, v, vl) in spans.iter() {
        let (n, v) = (n as usize, v as usize);
        let name =
            HeaderName::from_bytes(&bytes[n..n + nl as usize]).map_err(|_| HeadError::Malformed)?;
        let value = HeaderValue::from_maybe_shared(bytes.slice(v..v + vl as usize))
            .map_err(|_| HeadError::Malformed)?;
        map.append(name, value);
    }
    let bodiless = head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut keep_alive = f.keep_alive(version);
    let framing = if bodiless {
        Framing::Empty
    } else if f.te {
        if f.te_chunked_last {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else {
        match f.length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    // Framing the backend may have meant another way (RFC 9112 §6.1, §6.3): both
    // Transfer-Encoding and Content-Length, or Transfer-Encoding in an HTTP/1.0 message.
    // The response is read by Transfer-Encoding, but the connection is not reused: if the
    // backend meant the other framing, what is left on it is not the next response.
    let doubtful = f.te && (f.length.is_some() || version == Version::HTTP_10);
    if framing == Framing::Close || doubtful {
        keep_alive = false;
    }
    if f.te {
        // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3): a length passed on
        // next to a de-chunked body would frame it wrongly for the client.
        map.remove(http::header::CONTENT_LENGTH);
    } else if let (true, Some(n)) = (f.length_repeated, f.length) {
        map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    parts.headers = map;
    Ok(Some(ResponseHead {
        parts,
        framing,
        keep_alive,
    }))
}

/// Malformed chunked framing.
#[derive(Debug, thiserror::Error)]
#[error("invalid chunked encoding")]
pub(crate) struct ChunkError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this much left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailers, then the final CRLF.
    Trailers,
    Done,
}

/// What the chunked decoder produced from the buffered bytes.
#[derive(Debug)]
pub(crate) enum Chunk {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
}

/// Incremental `Transfer-Encoding: chunked` decoder (RFC 9112 §7.1). Chunk extensions are
/// ignored; trailers are returned as a header map.
#[derive(Debug, Clone)]
pub(crate) struct ChunkedDecoder {
    state: ChunkState,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self {
            state: ChunkState::Size,
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

impl ChunkedDecoder {
    /// Whether the terminating chunk and trailers have been consumed.
    #[cfg(test)]
    pub(crate) fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes what `buf` holds. `Ok(None)`: more input needed.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, ChunkError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(end) = find_crlf(buf) else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(ChunkError);
                        }
                        return Ok(None);
                    };
                    if end > MAX_CHUNK_LINE {
                        return Err(ChunkError);
                    }
                    let line = &buf[..end];
                    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                    if digits == 0 || digits > 15 {
                        return Err(ChunkError);
                    }
                    // After the size: optional whitespace, then nothing or `;extensions`
                    // (RFC 9112 §7.1.1). Extensions are dropped, but must not hold a CR, LF
                    // or other control character: a hop that ends the line at a lone LF
                    // would read the chunk data from a different byte (chunk-extension
                    // smuggling), so the line must mean the same to every reader.
                    let rest = &line[digits..];
                    let ws = rest
                        .iter()
                        .take_while(|&&b| b == b' ' || b == b'\t')
                        .count();
                    let ctl = |b: &u8| (*b < 0x20 && *b != b'\t') || *b == 0x7f;
                    match rest.get(ws) {
                        None => {}
                        Some(b';') if !rest[ws..].iter().any(ctl) => {}
                        Some(_) => return Err(ChunkError),
                    }
                    let mut size = 0u64;
                    for &d in &line[..digits] {
                        let v = (d as char).to_digit(16).ok_or(ChunkError)?;
                        size = (size << 4) | u64::from(v);
                    }
                    buf.advance(end + 2);
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Some(Chunk::Data(data)));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkError);
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        self.state = ChunkState::Done;
                        return Ok(Some(Chunk::End));
                    }
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        if buf.len() > MAX_TRAILERS {
                            return Err(ChunkError);
                        }
                        return Ok(None);
                    };
                    if end > MAX_TRAILERS {
                        return Err(ChunkError);
                    }
                    // CRLF line ends only: `httparse` would also end a line (and the whole
                    // trailer section, at `\n\n`) at a lone LF, and then the bytes up to the
                    // CRLF CRLF found above — possibly a whole pipelined request — would be
                    // swallowed here while another hop reads them as the next request.
                    let section = &buf[..end + 4];
                    if section
                        .iter()
                        .enumerate()
                        .any(|(i, &b)| b == b'\n' && (i == 0 || section[i - 1] != b'\r'))
                    {
                        return Err(ChunkError);
                    }
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let parsed =
                        httparse::parse_headers(section, &mut headers).map_err(|_| ChunkError)?;
                    let httparse::Status::Complete((used, hs)) = parsed else {
                        return Err(ChunkError);
                    };
                    // The section must end where the CRLF CRLF is, not before it.
                    if used != section.len() {
                        return Err(ChunkError);
                    }
                    let mut map = HeaderMap::with_capacity(hs.len());
                    for h in hs {
                        let name =
                            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| ChunkError)?;
                        let value = HeaderValue::from_bytes(h.value).map_err(|_| ChunkError)?;
                        map.append(name, value);
                    }
                    buf.advance(end + 4);
                    self.state = ChunkState::Done;
                    return Ok(Some(Chunk::Trailers(map)));
                }
                ChunkState::Done => return Ok(Some(Chunk::End)),
            }
        }
    }
}

/// Reads one body off a connection, in frames split from its read buffer.
#[derive(Debug, Clone)]
pub(crate) enum BodyDecoder {
    Length(u64),
    Chunked(ChunkedDecoder),
    Close,
    Done,
    /// The body ended in an error (bad chunked framing, a close or a read error midway).
    /// Not [`Done`](Self::Done): where this body ended on the wire is unknown, so the
    /// connection must not carry another message — what follows the bad bytes would be
    /// taken for the next request (request smuggling).
    Failed,
}

impl BodyDecoder {
    pub(crate) fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty | Framing::Length(0) => Self::Done,
            Framing::Length(n) => Self::Length(n),
            Framing::Chunked => Self::Chunked(ChunkedDecoder::default()),
            Framing::Close => Self::Close,
        }
    }

    /// Whether the whole body has been read.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Self::Done)
    }

    /// Bytes still expected, when the framing says.
    pub(crate) fn exact_remaining(&self) -> Option<u64> {
        match self {
            Self::Length(n) => Some(*n),
            Self::Done => Some(0),
            Self::Chunked(_) | Self::Close | Self::Failed => None,
        }
    }

    /// The next frame from `buf`, reading from `io` when the buffer runs dry. `None` at the
    /// end of the body; a close before the framing says the body ended is an error.
    pub(crate) fn poll_frame<S: AsyncRead + Unpin + ?Sized>(
        &mut self,
        io: &mut S,
        buf: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        loop {
            match self {
                // After an error: the consumer has had it, and stops.
                Self::Done | Self::Failed => return Poll::Ready(None),
                Self::Length(left) => {
                    if !buf.is_empty() {
                        let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                        let data = buf.split_to(n).freeze();
                        *left -= n as u64;
                        if *left == 0 {
                            *self = Self::Done;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Self::Close => {
                    if !buf.is_empty() {
                        let data = buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Self::Chunked(dec) => match dec.decode(buf) {
                    Err(e) => {
                        *self = Self::Failed;
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            e,
                        ))));
                    }
                    Ok(Some(Chunk::Data(d))) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                    Ok(Some(Chunk::Trailers(t))) => {
                        return Poll::Ready(Some(Ok(Frame::trailers(t))))
                    }
                    Ok(Some(Chunk::End)) => {
                        *self = Self::Done;
                        return Poll::Ready(None);
                    }
                    Ok(None) => {}
                },
            }
            // The buffer is empty (or holds a partial chunk line): read more.
            let want = match self {
                Self::Length(left) => usize::try_from(*left).unwrap_or(usize::MAX).min(64 * 1024),
                _ => 16 * 1024,
            };
            if buf.capacity() - buf.len() < want.min(READ_CHUNK) {
                buf.reserve(want.max(READ_CHUNK));
            }
            let n = match ready!(tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf)) {
                Ok(n) => n,
                Err(e) => {
                    *self = Self::Failed;
                    return Poll::Ready(Some(Err(e)));
                }
            };
            if n == 0 {
                if matches!(self, Self::Close) {
                    *self = Self::Done;
                    return Poll::Ready(None);
                }
                *self = Self::Failed;
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the middle of a body",
                ))));
            }
        }
    }
}

/// Appends `name: value\r\n`.
pub(crate) fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends every header of `h`.
pub(crate) fn put_headers(out: &mut Vec<u8>, h: &HeaderMap) {
    for (name, value) in h {
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

/// Appends a decimal number.
pub(crate) fn put_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends a chunk-size line for `len` bytes of data.
pub(crate) fn put_chunk_size(out: &mut Vec<u8>, len: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// Appends the last chunk, the trailers if any, and the final CRLF.
pub(crate) fn put_chunked_end(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    if let Some(t) = trailers {
        put_headers(out, t);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_request(s.as_bytes(), 8192)
    }

    fn decode_all(
        dec: &mut ChunkedDecoder,
        input: &[u8],
    ) -> Result<(Vec<u8>, Option<HeaderMap>, bool), ChunkError> {
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut trailers = None;
        // Feed one byte at a time: every state must cope with partial input.
        for &b in input {
            buf.extend_from_slice(&[b]);
            while let Some(c) = dec.decode(&mut buf)? {
                match c {
                    Chunk::Data(d) => data.extend_from_slice(&d),
                    Chunk::Trailers(t) => trailers = Some(t),
                    Chunk::End => return Ok((data, trailers, true)),
                }
            }
        }
        Ok((data, trailers, false))
    }

    #[test]
    fn simple_get_keeps_alive_on_11_only() {
        let h = req("GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.parts.method, Method::GET);
        assert_eq!(h.parts.uri.path_and_query().unwrap().as_str(), "/a?b=1");
        assert_eq!(h.framing, Framing::Empty);
        assert!(h.keep_alive);
        let h = req("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let h = req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        let h = req("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
    }

    #[test]
    fn partial_heads_ask_for_more_until_complete() {
        let full = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
        for cut in 0..full.len() - 3 {
            assert!(
                parse_request(&full[..cut], 8192).unwrap().is_none(),
                "cut {cut}"
            );
        }
        let h = parse_request(full, 8192).unwrap().unwrap();
        assert_eq!(h.len, full.len() - 3);
        assert_eq!(h.framing, Framing::Length(3));
    }

    #[test]
    fn pipelined_requests_parse_one_after_another() {
        let two = b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n";
        let first = parse_request(two, 8192).unwrap().unwrap();
        assert_eq!(first.parts.uri.path(), "/1");
        let second = parse_request(&two[first.len..], 8192).unwrap().unwrap();
        assert_eq!(second.parts.uri.path(), "/2");
        assert_eq!(first.len + second.len, two.len());
    }

    #[test]
    fn oversize_heads_are_too_large() {
        let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 10_000));
        // Incomplete but already over the limit: no need to wait for the rest.
        assert_eq!(parse_request(&big, 8192).unwrap_err(), HeadError::TooLarge);
        big.extend(b"\r\n\r\n");
        assert_eq!(parse_request(&big, 8192).unwrap_err(), HeadError::TooLarge);
        let mut many = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..200 {
            many.extend(format!("X-{i}: v\r\n").bytes());
        }
        many.extend(b"\r\n");
        assert_eq!(
            parse_request(&many, 1 << 20).unwrap_err(),
            HeadError::TooLarge
        );
    }

    #[test]
    fn smuggling_shapes_are_malformed() {
        for bad in [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked;x=1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \"chunked\"\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chu nked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: u@x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x/y\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x..y\r\n\r\n",
            "GET http://u@x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "GARBAGE\r\n\r\n",
        ] {
            assert_eq!(req(bad).unwrap_err(), HeadError::Malformed, "{bad:?}");
        }
        // Repeated identical lengths are one length, passed on as one plain value.
        for same in [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n",
        ] {
            let h = req(same).unwrap().unwrap();
            assert_eq!(h.framing, Framing::Length(3));
            let all: Vec<_> = h.parts.headers.get_all("content-length").iter().collect();
            assert_eq!(all, ["3"], "{same:?}");
        }
        let h = req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(h.unwrap().unwrap().framing, Framing::Chunked);
        // Hosts that are host[:port], IP literals included.
        for host in [
            "x",
            "a.example:8080",
            "[::1]:80",
            "10.0.0.1",
            "xn--bcher-kva.example.",
        ] {
            let h = req(&format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"));
            assert!(h.unwrap().is_some(), "{host}");
        }
        // Empty list elements are allowed.
        let h = req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: , chunked,\r\n\r\n");
        assert_eq!(h.unwrap().unwrap().framing, Framing::Chunked);
    }

    #[test]
    fn well_formed_codings_other_than_chunked_are_not_implemented() {
        for unsupported in [
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: compress\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip;level=9, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
        ] {
            assert_eq!(
                req(unsupported).unwrap_err(),
                HeadError::UnsupportedCoding,
                "{unsupported:?}"
            );
        }
    }

    #[test]
    fn expect_continue_only_with_a_body() {
        let h =
            req("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(h.unwrap().unwrap().expect_continue);
        let h = req("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n");
        assert!(!h.unwrap().unwrap().expect_continue);
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let mut dec = ChunkedDecoder::default();
        let input =
            b"5;name=value\r\nhello\r\n6 ; x\r\n world\r\n0\r\nX-Sum: 42\r\nX-Other: y\r\n\r\n";
        let (data, trailers, done) = decode_all(&mut dec, input).unwrap();
        assert!(done && dec.is_done());
        assert_eq!(data, b"hello world");
        let t = trailers.unwrap();
        assert_eq!(t["x-sum"], "42");
        assert_eq!(t["x-other"], "y");

        // Whitespace between size and extension or line end.
        let mut dec = ChunkedDecoder::default();
        let (data, _, done) = decode_all(&mut dec, b"2 \r\nab\r\n1\t;x\r\nc\r\n0\r\n\r\n").unwrap();
        assert!(done);
        assert_eq!(data, b"abc");

        let mut dec = ChunkedDecoder::default();
        let (data, trailers, done) = decode_all(&mut dec, b"A\r\n0123456789\r\n0\r\n\r\n").unwrap();
        assert!(done);
        assert_eq!(data, b"0123456789");
        assert!(trailers.is_none());
    }

    #[test]
    fn bad_chunks_are_errors() {
        for bad in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"5x\r\nhello\r\n",
            b"ffffffffffffffffff\r\n",
            b"\r\n",
            // Control characters in an extension, text after the size that is not one.
            b"5;a\nb\r\nhello\r\n",
            b"5;a\rb\r\nhello\r\n",
            b"5;a\0b\r\nhello\r\n",
            b"5 x\r\nhello\r\n",
            // A lone LF ending the trailers: what follows up to the next CRLF CRLF (here a
            // pipelined request) must not be swallowed as trailers.
            b"0\r\nX-T: 1\n\nGET /next HTTP/1.1\r\n\r\n",
            b"0\r\nX-T: 1\nX-U: 2\r\n\r\n",
        ] {
            let mut dec = ChunkedDecoder::default();
            assert!(decode_all(&mut dec, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn response_framing() {
        let r = |s: &str, head| {
            let mut buf = BytesMut::from(s);
            let h = parse_response(&mut buf, 8192, head).unwrap().unwrap();
            assert!(buf.is_empty(), "the head is taken out of the buffer");
            h
        };
        assert_eq!(
            r("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false).framing,
            Framing::Length(5)
        );
        assert_eq!(
            r("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).framing,
            Framing::Empty
        );
        assert_eq!(
            r("HTTP/1.1 204 No Content\r\n\r\n", false).framing,
            Framing::Empty
        );
        assert_eq!(
            r(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false
            )
            .framing,
            Framing::Empty
        );
        let c = r(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!(c.framing, Framing::Chunked);
        assert!(c.keep_alive);
        // Both framings, or chunked in HTTP/1.0: read as chunked, the connection not kept.
        for doubtful in [
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let d = r(doubtful, false);
            assert_eq!(d.framing, Framing::Chunked, "{doubtful:?}");
            assert!(!d.keep_alive, "{doubtful:?}");
            assert!(!d.parts.headers.contains_key("content-length"));
        }
        let close = r("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(close.framing, Framing::Close);
        assert!(!close.keep_alive);
        assert!(!r("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false).keep_alive);
        // One length given twice goes to the client as one plain value.
        let twice = r(
            "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\n",
            false,
        );
        assert_eq!(twice.framing, Framing::Length(2));
        let all: Vec<_> = twice
            .parts
            .headers
            .get_all("content-length")
            .iter()
            .collect();
        assert_eq!(all, ["2"]);
        assert!(
            !r(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                false
            )
            .keep_alive
        );
    }

    #[test]
    fn writers() {
        let mut out = Vec::new();
        put_u64(&mut out, 0);
        out.push(b' ');
        put_u64(&mut out, 1234567);
        out.push(b' ');
        put_chunk_size(&mut out, 255);
        put_chunked_end(&mut out, None);
        assert_eq!(out, b"0 1234567 ff\r\n0\r\n\r\n");
    }

    /// Arbitrary bytes never panic the parsers or the chunked decoder.
    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(0x5ca1e);
        let alphabet = b"GET POST HTTP/1.1\r\n:;, 0123456789abcdefABCDEF chunked Content-Length Transfer-Encoding Host\t\x00\xff";
        for _ in 0..20_000 {
            let len = rng.gen_range(0..300);
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.gen_bool(0.8) {
                        alphabet[rng.gen_range(0..alphabet.len())]
                    } else {
                        rng.gen()
                    }
                })
                .collect();
            let _ = parse_request(&bytes, 256);
            let _ = parse_response(&mut BytesMut::from(&bytes[..]), 256, rng.gen());
            let mut dec = ChunkedDecoder::default();
            let mut buf = BytesMut::from(&bytes[..]);
            for _ in 0..64 {
                match dec.decode(&mut buf) {
                    Ok(Some(Chunk::End)) | Ok(None) | Err(_) => break,
                    Ok(Some(_)) => {}
                }
            }
        }
    }
}
