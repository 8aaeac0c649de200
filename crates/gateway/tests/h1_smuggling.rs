//! Request smuggling and response splitting over real sockets: each case sends raw bytes to a
//! gateway in front of a backend that records exactly what it receives, then checks the
//! status the client got, whether the gateway closed the connection, and that the backend
//! saw nothing or exactly the one request the client meant — never a second, smuggled one.
//!
//! The client half-closes after sending, and reads to the end: the gateway handles one
//! connection's requests one after the other, so when the client sees the end every request
//! the gateway forwarded has been answered, and the backend has recorded it (it records
//! before it answers). No sleeps are needed to know the backend is done.
mod common;

use common::{config, gateway};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a recording backend saw: the bytes of each connection, and the requests it could
/// parse from them (method, target, headers, body).
#[derive(Default)]
struct Seen {
    bytes: Vec<Vec<u8>>,
    requests: Vec<Req>,
}

#[derive(Debug, Clone)]
struct Req {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }
}

/// Parses one complete request from the front of `buf` (strictly: CRLF only, and the framing
/// the gateway is supposed to send). `Ok(None)`: incomplete.
fn backend_parse(buf: &[u8]) -> Result<Option<(Req, usize)>, String> {
    let mut hs = [httparse::EMPTY_HEADER; 128];
    let mut r = httparse::Request::new(&mut hs);
    let n = match r.parse(buf).map_err(|e| e.to_string())? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    // The gateway must only ever write CRLF line endings.
    let head = &buf[..n];
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' && (i == 0 || head[i - 1] != b'\r') {
            return Err("bare LF in a forwarded head".into());
        }
        if b == b'\r' && head.get(i + 1) != Some(&b'\n') {
            return Err("bare CR in a forwarded head".into());
        }
    }
    let headers: Vec<(String, Vec<u8>)> = r
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    let cl = get("content-length");
    let te = get("transfer-encoding");
    if cl.len() > 1 || (!cl.is_empty() && !te.is_empty()) || te.len() > 1 {
        return Err(format!("ambiguous framing forwarded: {cl:?} {te:?}"));
    }
    let mut at = n;
    let mut body = Vec::new();
    if let Some(te) = te.first() {
        if te.as_slice() != b"chunked" {
            return Err(format!("forwarded transfer-encoding {te:?}"));
        }
        loop {
            let Some(e) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
                return Ok(None);
            };
            let line = std::str::from_utf8(&buf[at..at + e]).map_err(|e| e.to_string())?;
            let size = usize::from_str_radix(line, 16).map_err(|e| format!("{line:?}: {e}"))?;
            at += e + 2;
            if size == 0 {
                // Trailers (CRLF lines), then the empty line.
                let mut ths = [httparse::EMPTY_HEADER; 16];
                match httparse::parse_headers(&buf[at..], &mut ths).map_err(|e| e.to_string())? {
                    httparse::Status::Complete((used, _)) => {
                        if buf[at..at + used]
                            .windows(2)
                            .filter(|w| w == b"\r\n")
                            .count()
                            != buf[at..at + used].iter().filter(|&&b| b == b'\n').count()
                        {
                            return Err("bare LF in forwarded trailers".into());
                        }
                        at += used;
                    }
                    httparse::Status::Partial => return Ok(None),
                }
                break;
            }
            if buf.len() < at + size + 2 {
                return Ok(None);
            }
            body.extend_from_slice(&buf[at..at + size]);
            if &buf[at + size..at + size + 2] != b"\r\n" {
                return Err("chunk without CRLF".into());
            }
            at += size + 2;
        }
    } else if let Some(cl) = cl.first() {
        let len: usize = std::str::from_utf8(cl)
            .map_err(|e| e.to_string())?
            .parse()
            .map_err(|e| format!("{e}"))?;
        if buf.len() < at + len {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + len]);
        at += len;
    }
    let req = Req {
        method: r.method.unwrap_or_default().to_owned(),
        target: r.path.unwrap_or_default().to_owned(),
        headers,
        body,
    };
    Ok(Some((req, at)))
}

/// A backend that records every byte and answers each request it can parse with `200 ok`;
/// anything it cannot parse ends the connection (and the test then sees no request).
async fn recording_backend() -> (SocketAddr, Arc<Mutex<Seen>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let seen = seen2.clone();
            tokio::spawn(async move {
                let idx = {
                    let mut g = seen.lock().unwrap();
                    g.bytes.push(Vec::new());
                    g.bytes.len() - 1
                };
                let mut buf = Vec::new();
                let mut tmp = vec![0u8; 16 * 1024];
                loop {
                    let n = match s.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&tmp[..n]);
                    seen.lock().unwrap().bytes[idx].extend_from_slice(&tmp[..n]);
                    loop {
                        match backend_parse(&buf) {
                            Ok(Some((req, used))) => {
                                buf.drain(..used);
                                seen.lock().unwrap().requests.push(req);
                                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                                if s.write_all(answer).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                eprintln!("recording backend: {e}");
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// One response as the client read it.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// Splits what a client received into responses (to non-HEAD requests). What does not
/// parse as a complete response is returned as the rest.
fn client_parse(mut buf: &[u8]) -> (Vec<Resp>, Vec<u8>) {
    let mut out = Vec::new();
    loop {
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hs);
        let Ok(httparse::Status::Complete(n)) = r.parse(buf) else {
            return (out, buf.to_vec());
        };
        let headers: Vec<(String, Vec<u8>)> = r
            .headers
            .iter()
            .map(|h| (h.name.to_owned(), h.value.to_vec()))
            .collect();
        let code = r.code.unwrap_or(0);
        let mut resp = Resp {
            status: code,
            headers,
            body: Vec::new(),
        };
        let mut at = n;
        if code >= 200 && code != 204 && code != 304 {
            if let Some(cl) = resp.header("content-length") {
                let len: usize = std::str::from_utf8(cl).unwrap().parse().unwrap();
                if buf.len() < at + len {
                    return (out, buf.to_vec());
                }
                resp.body = buf[at..at + len].to_vec();
                at += len;
            } else if resp.header("transfer-encoding") == Some(b"chunked") {
                loop {
                    let Some(e) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
                        return (out, buf.to_vec());
                    };
                    let line = std::str::from_utf8(&buf[at..at + e]).unwrap();
                    let size = usize::from_str_radix(line, 16).unwrap();
                    at += e + 2;
                    if size == 0 {
                        let Some(e) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
                            return (out, buf.to_vec());
                        };
                        assert_eq!(e, 0, "no trailers expected");
                        at += 2;
                        break;
                    }
                    if buf.len() < at + size + 2 {
                        return (out, buf.to_vec());
                    }
                    resp.body.extend_from_slice(&buf[at..at + size]);
                    at += size + 2;
                }
            } else {
                resp.body = buf[at..].to_vec();
                at = buf.len();
            }
        }
        out.push(resp);
        buf = &buf[at..];
    }
}

/// Sends `bytes` on a fresh connection, half-closes, and reads until the gateway closes.
async fn exchange(gw: SocketAddr, bytes: &[u8]) -> (Vec<Resp>, Vec<u8>) {
    let mut s = TcpStream::connect(gw).await.unwrap();
    // The gateway may answer and close before it has read everything.
    let _ = s.write_all(bytes).await;
    let _ = s.shutdown().await;
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got).await;
    client_parse(&got)
}

/// Sends `bytes` without half-closing and reads one response; then reports whether the
/// gateway closed the connection on its own (it must, when framing cannot be trusted).
async fn one_then_closed(gw: SocketAddr, bytes: &[u8]) -> (Resp, bool) {
    let mut s = TcpStream::connect(gw).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut got = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let (resps, _) = client_parse(&got);
        if let Some(r) = resps.into_iter().next() {
            if r.header("content-length").is_some() || r.header("transfer-encoding").is_some() {
                // Whatever follows must be the end of the connection.
                let n = s.read(&mut tmp).await.unwrap_or(0);
                let (all, rest) = client_parse(&got);
                let extra = all.len() > 1 || !rest.is_empty();
                return (r, n == 0 && !extra);
            }
        }
        match s.read(&mut tmp).await {
            Ok(0) | Err(_) => {
                let (resps, _) = client_parse(&got);
                let r = resps
                    .into_iter()
                    .next()
                    .expect("a response before the close");
                return (r, true);
            }
            Ok(n) => got.extend_from_slice(&tmp[..n]),
        }
    }
}

struct Setup {
    gw: common::Gateway,
    seen: Arc<Mutex<Seen>>,
}

impl Setup {
    async fn new() -> Self {
        let (addr, seen) = recording_backend().await;
        Self {
            gw: gateway(config(&[addr])).await,
            seen,
        }
    }

    fn requests(&self) -> Vec<Req> {
        self.seen.lock().unwrap().requests.clone()
    }

    fn all_bytes(&self) -> Vec<u8> {
        self.seen.lock().unwrap().bytes.concat()
    }

    /// Asserts the case was refused with `status` before anything reached the backend, and
    /// the connection closed.
    async fn refused(&self, case: &str, bytes: &[u8], status: u16) {
        let before = self.all_bytes().len();
        let (resps, rest) = exchange(self.gw.addr, bytes).await;
        assert_eq!(
            resps.len(),
            1,
            "{case}: one answer, got {resps:?} + {rest:?}"
        );
        assert!(
            rest.is_empty(),
            "{case}: nothing after the answer: {rest:?}"
        );
        assert_eq!(resps[0].status, status, "{case}");
        assert_eq!(
            resps[0].header("connection"),
            Some(&b"close"[..]),
            "{case}: the answer says the connection closes"
        );
        assert_eq!(
            self.all_bytes().len(),
            before,
            "{case}: nothing reaches the backend"
        );
        // Without the half-close the gateway still closes by itself.
        let (r, closed) = one_then_closed(self.gw.addr, bytes).await;
        assert_eq!(r.status, status, "{case}");
        assert!(closed, "{case}: the gateway closes the connection");
        assert_eq!(self.all_bytes().len(), before, "{case}");
    }

    /// Asserts the case was forwarded as exactly one request (returned) and answered 200.
    async fn forwarded_once(&self, case: &str, bytes: &[u8]) -> Req {
        let before = self.requests().len();
        let (resps, rest) = exchange(self.gw.addr, bytes).await;
        assert_eq!(resps.len(), 1, "{case}: {resps:?} + {rest:?}");
        assert!(rest.is_empty(), "{case}: {rest:?}");
        assert_eq!(resps[0].status, 200, "{case}");
        let reqs = self.requests();
        assert_eq!(reqs.len(), before + 1, "{case}: {:?}", &reqs[before..]);
        reqs[before].clone()
    }

    /// No request with `/smuggled` in it ever reached the backend.
    fn nothing_smuggled(&self) {
        let bytes = self.all_bytes();
        assert!(
            !bytes.windows(9).any(|w| w == b"/smuggled"),
            "a smuggled request reached the backend: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test]
async fn conflicting_lengths_and_codings_are_400_and_close() {
    let s = Setup::new().await;
    for (case, head) in [
        (
            "CL+TE",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        (
            "TE+CL",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
        ),
        (
            "two different CL",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\n",
        ),
        (
            "CL list with different values",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 40\r\n\r\n",
        ),
        (
            "CL with sign",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\n",
        ),
        (
            "CL hex",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x4\r\n\r\n",
        ),
        (
            "chunked not last",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        ),
        (
            "chunked twice",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        (
            "TE obs-fold",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
        ),
        (
            "obs-fold in another header",
            "POST / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\nContent-Length: 4\r\n\r\n",
        ),
        (
            "space before colon",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
        ),
        (
            "tab before colon",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length\t: 4\r\n\r\n",
        ),
        (
            "TE with a vertical tab",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \x0bchunked\r\n\r\n",
        ),
        (
            "HTTP/1.0 with chunked",
            "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        ("two Hosts", "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"),
        (
            "NUL in a value",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n",
        ),
        (
            "bare CR in a value",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rContent-Length: 4\r\n\r\n",
        ),
        ("bare CR line end", "GET / HTTP/1.1\rHost: x\r\r"),
        ("invalid method token", "G@T / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("method with NUL", "GE\0T / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("unknown version", "GET / HTTP/1.2\r\nHost: x\r\n\r\n"),
        ("HTTP/2 preface-like", "GET / HTTP/2.0\r\nHost: x\r\n\r\n"),
        ("space in target", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"),
        // RFC 9110 §4.2.4: userinfo in an http(s) target is an error; and a Host that is
        // not a host[:port] could route one way here and another way behind.
        (
            "userinfo in absolute-form",
            "GET http://evil@x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        ("userinfo in Host", "GET / HTTP/1.1\r\nHost: evil@x\r\n\r\n"),
        ("slash in Host", "GET / HTTP/1.1\r\nHost: x/../evil\r\n\r\n"),
        ("space in Host", "GET / HTTP/1.1\r\nHost: x y\r\n\r\n"),
        ("backslash in Host", "GET / HTTP/1.1\r\nHost: x\\y\r\n\r\n"),
    ] {
        // The body that would be a second request under the other reading.
        let bytes = format!("{head}4\r\nabcd\r\n0\r\n\r\n{SMUGGLED}");
        s.refused(case, bytes.as_bytes(), 400).await;
    }
    s.nothing_smuggled();
}

#[tokio::test]
async fn codings_other_than_chunked_are_501_and_close() {
    let s = Setup::new().await;
    for (case, te) in [
        ("xchunked", "xchunked"),
        ("identity", "identity"),
        ("gzip, chunked", "gzip, chunked"),
    ] {
        let bytes = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n4\r\nabcd\r\n0\r\n\r\n{SMUGGLED}"
        );
        s.refused(case, bytes.as_bytes(), 501).await;
    }
    s.nothing_smuggled();
}

#[tokio::test]
async fn repeated_identical_lengths_are_one_length() {
    // RFC 9112 §6.3 allows a recipient to take `Content-Length: 4, 4` (or the field twice
    // with the same value) as one length; the gateway does, and forwards one header.
    let s = Setup::new().await;
    for head in [
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\n",
    ] {
        let req = s
            .forwarded_once(head, format!("{head}abcd").as_bytes())
            .await;
        assert_eq!(req.header("content-length"), [b"4"], "{req:?}");
        assert_eq!(req.body, b"abcd");
    }
}

#[tokio::test]
async fn bare_lf_heads_are_forwarded_with_crlf() {
    // RFC 9112 §2.2 lets a recipient take a lone LF as a line end (nginx and HAProxy do);
    // the gateway does too, and writes the request on with CRLF, so no later hop has to
    // choose. (The backend parser here fails on any bare LF in the head.)
    let s = Setup::new().await;
    let req = s
        .forwarded_once(
            "bare LF",
            b"POST /lf HTTP/1.1\nHost: x\nContent-Length: 4\n\nabcd",
        )
        .await;
    assert_eq!(req.target, "/lf");
    assert_eq!(req.body, b"abcd");
    let req = s
        .forwarded_once(
            "mixed",
            b"POST /mixed HTTP/1.1\r\nHost: x\nContent-Length: 4\r\n\r\nabcd",
        )
        .await;
    assert_eq!(req.body, b"abcd");
}

#[tokio::test]
async fn chunk_extensions_are_dropped_and_the_body_reframed() {
    let s = Setup::new().await;
    let req = s
        .forwarded_once(
            "extensions",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
              4;a=b;c=\"d;e\"\r\nabcd\r\n2 ; x\r\nef\r\n0\r\n\r\n",
        )
        .await;
    assert_eq!(req.body, b"abcdef");
    assert!(!String::from_utf8_lossy(&s.all_bytes()).contains("a=b"));
}

/// A chunked body the gateway cannot decode: the client gets a 400 and the connection
/// closes, and whatever follows the bad chunk is never taken for a request. The backend may
/// have seen the head and the chunks before the bad one (the body streams), but never a
/// complete request and never the bytes after.
#[tokio::test]
async fn bad_chunked_bodies_close_the_connection() {
    let s = Setup::new().await;
    let head = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (case, body) in [
        ("size overflow", "ffffffffffffffffff\r\nabcd\r\n0\r\n\r\n"),
        ("size not hex", "4x\r\nabcd\r\n0\r\n\r\n"),
        ("negative size", "-4\r\nabcd\r\n0\r\n\r\n"),
        ("size with 0x", "0x4\r\nabcd\r\n0\r\n\r\n"),
        ("no CRLF after data", "4\r\nabcdXX0\r\n\r\n"),
        ("data longer than size", "3\r\nabcd\r\n0\r\n\r\n"),
        ("LF only after data", "4\r\nabcd\n0\r\n\r\n"),
        ("bare LF size line", "4\nabcd\r\n0\r\n\r\n"),
        ("missing last chunk CRLF, then a request", "0\r\n"),
        (
            "trailer that is a request line",
            "0\r\nGET /x HTTP/1.1\r\n\r\n",
        ),
        ("bare LF in extension", "4;a\nb\r\nabcd\r\n0\r\n\r\n"),
        ("bare CR in extension", "4;a\rb\r\nabcd\r\n0\r\n\r\n"),
        ("bare LF ends the trailers", "0\r\nX-T: 1\n\n"),
    ] {
        let bytes = format!("{head}{body}{SMUGGLED}");
        let before = s.requests().len();
        let (resps, rest) = exchange(s.gw.addr, bytes.as_bytes()).await;
        assert_eq!(
            resps.len(),
            1,
            "{case}: exactly one answer, got {resps:?} + {:?}",
            String::from_utf8_lossy(&rest)
        );
        assert_eq!(resps[0].status, 400, "{case}");
        assert_eq!(resps[0].header("connection"), Some(&b"close"[..]), "{case}");
        assert_eq!(
            s.requests().len(),
            before,
            "{case}: the backend never sees a complete request"
        );
        let (r, closed) = one_then_closed(s.gw.addr, bytes.as_bytes()).await;
        assert_eq!(r.status, 400, "{case}");
        assert!(closed, "{case}: the gateway closes the connection");
    }
    s.nothing_smuggled();
}

#[tokio::test]
async fn a_valid_chunked_request_then_a_pipelined_one_are_two_requests() {
    // The baseline for the cases above: what follows a correctly ended body is the next
    // request, on purpose.
    let s = Setup::new().await;
    let (resps, rest) = exchange(
        s.gw.addr,
        b"POST /one HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          4\r\nabcd\r\n0\r\nX-T: 1\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(rest.is_empty());
    assert_eq!(
        resps.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 200]
    );
    let reqs = s.requests();
    assert_eq!(
        reqs.iter().map(|r| r.target.as_str()).collect::<Vec<_>>(),
        ["/one", "/two"]
    );
    assert_eq!(reqs[0].body, b"abcd");
}

#[tokio::test]
async fn absolute_form_wins_over_a_conflicting_host() {
    // RFC 9112 §3.2.2: with an absolute-form target the Host field is ignored and replaced
    // by the target's authority — for routing and for what the backend gets.
    let s = Setup::new().await;
    let req = s
        .forwarded_once(
            "absolute-form",
            b"GET http://a.example/abs HTTP/1.1\r\nHost: b.example\r\n\r\n",
        )
        .await;
    assert_eq!((req.method.as_str(), req.target.as_str()), ("GET", "/abs"));
    assert_eq!(req.header("host"), [b"a.example"]);
}

#[tokio::test]
async fn http10_without_te_is_forwarded_as_one_request() {
    let s = Setup::new().await;
    let req = s
        .forwarded_once(
            "HTTP/1.0",
            b"POST /ten HTTP/1.0\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd",
        )
        .await;
    assert_eq!(req.body, b"abcd");
}

/// A backend that answers every request with `response`, then closes.
async fn answering(response: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let _ = s.write_all(response).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Sends a GET through a gateway in front of a backend answering `response`; returns the
/// client's raw bytes.
async fn through(response: &'static [u8]) -> Vec<u8> {
    let gw = gateway(config(&[answering(response).await])).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got).await;
    got
}

fn head_of(raw: &[u8]) -> &[u8] {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    &raw[..end + 4]
}

/// No line of `head` ends with anything but CRLF.
fn crlf_only(head: &[u8]) -> bool {
    head.iter().enumerate().all(|(i, &b)| match b {
        b'\n' => i > 0 && head[i - 1] == b'\r',
        b'\r' => head.get(i + 1) == Some(&b'\n'),
        _ => true,
    })
}

#[tokio::test]
async fn backend_responses_with_bad_heads_are_502() {
    for (case, response) in [
        (
            "two different CL",
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"[..],
        ),
        (
            "bare CR in a value",
            b"HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok",
        ),
        (
            "NUL in a value",
            b"HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 2\r\n\r\nok",
        ),
        (
            "obs-fold",
            b"HTTP/1.1 200 OK\r\nX-A: a\r\n Set-Cookie: evil=1\r\nContent-Length: 2\r\n\r\nok",
        ),
        (
            "space before colon",
            b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
        ),
        ("not HTTP", b"SSH-2.0-OpenSSH\r\n\r\n"),
        (
            "status below 100",
            b"HTTP/1.1 099 X\r\nContent-Length: 2\r\n\r\nok",
        ),
    ] {
        let raw = through(response).await;
        let (resps, rest) = client_parse(&raw);
        assert_eq!(resps.len(), 1, "{case}: {resps:?} {rest:?}");
        assert_eq!(resps[0].status, 502, "{case}");
        assert!(
            !raw.windows(4).any(|w| w == b"evil"),
            "{case}: nothing of the bad head reaches the client"
        );
    }
}

#[tokio::test]
async fn backend_response_with_cl_and_te_is_dechunked_without_the_length() {
    // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and an intermediary that
    // forwards such a message must drop the Content-Length.
    let raw = through(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
          2\r\nok\r\n0\r\n\r\n",
    )
    .await;
    let (resps, rest) = client_parse(&raw);
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(resps.len(), 1);
    assert_eq!(resps[0].status, 200);
    assert_eq!(resps[0].body, b"ok");
    let lengths = resps[0]
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .count();
    let codings = resps[0]
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .count();
    assert!(lengths + codings <= 1, "{:?}", resps[0].headers);
}

#[tokio::test]
async fn backend_header_lines_split_by_bare_lf_reach_the_client_as_crlf_lines() {
    // A backend's lone LF is a line end (as for nginx): the client gets two well-formed
    // header lines, never a bare LF or CR it could read differently.
    let raw = through(b"HTTP/1.1 200 OK\r\nX-A: a\nX-B: b\r\nContent-Length: 2\r\n\r\nok").await;
    let head = head_of(&raw);
    assert!(crlf_only(head), "{}", String::from_utf8_lossy(head));
    let (resps, _) = client_parse(&raw);
    assert_eq!(resps[0].status, 200);
    assert_eq!(resps[0].header("x-a"), Some(&b"a"[..]));
    assert_eq!(resps[0].header("x-b"), Some(&b"b"[..]));
}

#[tokio::test]
async fn backend_chunk_errors_cut_the_response_and_close() {
    // The head is already on its way to the client when the body turns out bad: the client
    // sees a cut-off body and a close, never bytes of the backend's taken for a response.
    for response in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nok\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
    ] {
        let raw = through(response).await;
        assert!(!raw.windows(4).any(|w| w == b"evil"));
        let (resps, rest) = client_parse(&raw);
        // Either a 502 (nothing sent yet) or an incomplete chunked response.
        match resps.as_slice() {
            [r] => assert_eq!(r.status, 502),
            [] => assert!(rest.starts_with(b"HTTP/1.1 200"), "{rest:?}"),
            more => panic!("{more:?}"),
        }
    }
}

#[tokio::test]
async fn a_backend_connection_with_doubtful_framing_is_not_reused() {
    // Each backend connection answers requests for as long as it is used, always with
    // both framings; the gateway must open a new one for the second request.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\
                            Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
            });
        }
    });
    let gw = gateway(config(&[addr])).await;
    let (resps, rest) = exchange(
        gw.addr,
        b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(resps.len(), 2);
    for r in &resps {
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    }
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 2);
}
