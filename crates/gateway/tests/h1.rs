//! The native HTTP/1 engine over real sockets: framing cases a reverse proxy must get
//! right, streaming in both directions, and what an idle keep-alive connection holds.
mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A parsed response as a client saw it.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A raw HTTP/1 connection with its unread bytes.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Self {
        Self {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    /// Reads more; false at EOF.
    async fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 4096];
        match self.s.read(&mut tmp).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
        }
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return line;
            }
            assert!(self.fill().await, "EOF in a line");
        }
    }

    async fn exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "EOF in a body");
        }
        self.buf.drain(..n).collect()
    }

    async fn head(&mut self) -> (u16, Vec<(String, String)>) {
        let status_line = self.line().await;
        let status = status_line[9..12].parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let l = self.line().await;
            if l.is_empty() {
                return (status, headers);
            }
            let (n, v) = l.split_once(':').unwrap();
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }

    /// Reads one response to a request that was not HEAD.
    async fn response(&mut self) -> Resp {
        self.response_to(false).await
    }

    async fn response_to(&mut self, head: bool) -> Resp {
        let (status, headers) = self.head().await;
        let mut r = Resp {
            status,
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
        };
        if head || status == 204 || status == 304 || status < 200 {
            return r;
        }
        if let Some(n) = r.header("content-length") {
            let n: usize = n.parse().unwrap();
            r.body = self.exact(n).await;
        } else if r.header("transfer-encoding") == Some("chunked") {
            loop {
                let size = usize::from_str_radix(self.line().await.split(';').next().unwrap(), 16)
                    .unwrap();
                if size == 0 {
                    break;
                }
                let data = self.exact(size).await;
                r.body.extend_from_slice(&data);
                assert!(self.line().await.is_empty());
            }
            loop {
                let l = self.line().await;
                if l.is_empty() {
                    break;
                }
                let (n, v) = l.split_once(':').unwrap();
                r.trailers.push((n.trim().to_owned(), v.trim().to_owned()));
            }
        } else {
            while self.fill().await {}
            r.body = std::mem::take(&mut self.buf);
        }
        r
    }

    /// Whether the peer closed the connection (all unread bytes consumed).
    async fn closed(&mut self) -> bool {
        !self.fill().await && self.buf.is_empty()
    }
}

/// A backend running `script` on each accepted connection (with its index).
async fn scripted<F, Fut>(script: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(usize, Raw) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let script = Arc::new(script);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let i = count.fetch_add(1, Ordering::SeqCst);
            let script = script.clone();
            tokio::spawn(async move { script(i, Raw { s, buf: Vec::new() }).await });
        }
    });
    (addr, accepted)
}

/// Reads one request head on a scripted backend; returns its lines.
async fn request_head(r: &mut Raw) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let l = r.line().await;
        if l.is_empty() {
            return lines;
        }
        lines.push(l);
    }
}

#[tokio::test]
async fn chunked_request_streams_to_the_backend_with_trailers() {
    // The backend reports every chunk it gets, so the test can prove the first one
    // arrived before the client sent the rest (streamed, not buffered whole).
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let (addr, _) = scripted(move |_, mut r| {
        let tx = tx.clone();
        async move {
            let head = request_head(&mut r).await;
            assert!(head
                .iter()
                .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked")));
            loop {
                let size =
                    usize::from_str_radix(r.line().await.split(';').next().unwrap(), 16).unwrap();
                if size == 0 {
                    break;
                }
                let data = r.exact(size).await;
                assert!(r.line().await.is_empty());
                let _ = tx.send(String::from_utf8(data).unwrap());
            }
            let trailer = r.line().await;
            let _ = tx.send(trailer);
            assert!(r.line().await.is_empty());
            r.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
        }
    })
    .await;
    let gw = gateway(config(&[addr])).await;
    let mut c = Raw::connect(gw.addr).await;
    c.send(
        b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n",
    )
    .await;
    assert_eq!(rx.recv().await.unwrap(), "hello");
    c.send(b"6\r\n world\r\n0\r\nX-Check: 7\r\n\r\n").await;
    assert_eq!(rx.recv().await.unwrap(), " world");
    assert_eq!(rx.recv().await.unwrap().to_ascii_lowercase(), "x-check: 7");
    let r = c.response().await;
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
}

#[tokio::test]
async fn chunked_response_streams_to_the_client_with_trailers() {
    let (go_tx, go_rx) = mpsc::unbounded_channel::<()>();
    let go_rx = Arc::new(tokio::sync::Mutex::new(go_rx));
    let (addr, _) = scripted(move |_, mut r| {
        let go_rx = go_rx.clone();
        async move {
            request_head(&mut r).await;
            r.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5\r\nfirst\r\n")
                .await;
            // The rest only after the client has seen the first chunk.
            go_rx.lock().await.recv().await;
            r.send(b"7\r\n second\r\n0\r\nX-Sum: 11\r\n\r\n").await;
        }
    })
    .await;
    let gw = gateway(config(&[addr])).await;
    let mut c = Raw::connect(gw.addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (status, headers) = c.head().await;
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v == "chunked"));
    assert!(
        !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("trailer")),
        "hop-by-hop"
    );
    assert_eq!(c.line().await, "5");
    assert_eq!(c.exact(7).await, b"first\r\n");
    go_tx.send(()).unwrap();
    assert_eq!(c.line().await, "7");
    assert_eq!(c.exact(9).await, b" second\r\n");
    assert_eq!(c.line().await, "0");
    assert_eq!(c.line().await.to_ascii_lowercase(), "x-sum: 11");
    assert_eq!(c.line().await, "");
}

#[tokio::test]
async fn head_204_and_304_have_no_body_and_keep_the_connection() {
    let (addr, accepted) = scripted(|_, mut r| async move {
        loop {
            if r.buf.is_empty() && !r.fill().await {
                return;
            }
            let head = request_head(&mut r).await;
            let answer: &[u8] = if head[0].starts_with("HEAD") {
                b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n"
            } else if head[0].contains("/204") {
                b"HTTP/1.1 204 No Content\r\n\r\n"
            } else {
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\nETag: \"a\"\r\n\r\n"
            };
            r.send(answer).await;
        }
    })
    .await;
    let gw = gateway(config(&[addr])).await;
    let mut c = Raw::connect(gw.addr).await;
    c.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = c.response_to(true).await;
    assert_eq!((r.status, r.header("content-length")), (200, Some("12")));
    c.send(b"GET /204 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!(r.status, 204);
    assert!(r.header("transfer-encoding").is_none() && r.header("content-length").is_none());
    c.send(b"GET /304 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.response().await.status, 304);
    // Then an ordinary request on the same connection: no body bytes were left behind.
    c.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.response_to(true).await.status, 200);
    assert!(c.buf.is_empty());
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the backend connection was reused"
    );
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body() {
    let b = backend("a").await;
    let gw = gateway(config(&[b.addr])).await;
    let mut c = Raw::connect(gw.addr).await;
    c.send(b"POST /sink HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .await;
    assert_eq!(c.line().await, "HTTP/1.1 100 Continue");
    assert_eq!(c.line().await, "");
    c.send(b"hello").await;
    let r = c.response().await;
    assert_eq!((r.status, &r.body[..]), (200, &b"5"[..]));
}

#[tokio::test]
async fn interim_responses_reach_http11_clients_before_the_final_one() {
    // The backend sends 100 (answers an `Expect` the gateway handles itself: dropped), 103
    // and 102, then waits until the test says the client has the 103 before it answers.
    let (go_tx, go_rx) = mpsc::unbounded_channel::<()>();
    let go_rx = Arc::new(tokio::sync::Mutex::new(go_rx));
    let (addr, _) = scripted(move |_, mut r| {
        let go = go_rx.clone();
        async move {
            loop {
                request_head(&mut r).await;
                r.send(
                    b"HTTP/1.1 100 Continue\r\n\r\n\
                      HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\n\
                      HTTP/1.1 102 Processing\r\n\r\n",
                )
                .await;
                if go.lock().await.recv().await.is_none() {
                    return;
                }
                r.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
            }
        }
    })
    .await;
    let gw = gateway(config(&[addr])).await;

    let mut c = Raw::connect(gw.addr).await;
    for _ in 0..2 {
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let (status, headers) = c.head().await;
        assert_eq!(status, 103, "{headers:?}");
        assert_eq!(
            headers,
            [("link".to_owned(), "</style.css>; rel=preload".to_owned())]
        );
        // The final response has not been sent yet: the 103 came ahead of it.
        go_tx.send(()).unwrap();
        assert_eq!(c.head().await.0, 102);
        let r = c.response().await;
        assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
    }

    // HTTP/1.0 clients never get a 1xx.
    let mut c = Raw::connect(gw.addr).await;
    c.send(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").await;
    go_tx.send(()).unwrap();
    let r = c.response().await;
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
}

#[tokio::test]
async fn http10_clients_get_close_or_asked_for_keep_alive() {
    let b = backend("a").await;
    let gw = gateway(config(&[b.addr])).await;
    // Plain 1.0: closed after the response.
    let mut c = Raw::connect(gw.addr).await;
    c.send(b"GET / HTTP/1.0\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!(r.status, 200);
    assert!(c.closed().await);
    // 1.0 with keep-alive: kept, and said so.
    let mut c = Raw::connect(gw.addr).await;
    for _ in 0..2 {
        c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await;
        let r = c.response().await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
    // A body of unknown length (the backend streams it) is delimited by the close.
    let mut c = Raw::connect(gw.addr).await;
    c.send(b"GET /big/100000 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let r = c.response().await;
    assert_eq!(r.status, 200);
    assert!(r.header("transfer-encoding").is_none());
    assert_eq!(r.body.len(), 100_000);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let b = backend("a").await;
    let gw = gateway(config(&[b.addr])).await;
    let mut c = Raw::connect(gw.addr).await;
    c.send(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nPOST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /three HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let one = String::from_utf8(c.response().await.body).unwrap();
    assert!(one.contains("path=/one"), "{one}");
    assert_eq!(c.response().await.body, b"3");
    let three = String::from_utf8(c.response().await.body).unwrap();
    assert!(three.contains("path=/three"), "{three}");
}

#[tokio::test]
async fn ambiguous_framing_is_refused_before_the_backend() {
    let b = backend("a").await;
    let gw = gateway(config(&[b.addr])).await;
    for req in [
        &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \"chunked\"\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: gzip\r\n\r\n",
    ] {
        let mut c = Raw::connect(gw.addr).await;
        c.send(req).await;
        let r = c.response().await;
        assert_eq!(r.status, 400);
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.closed().await);
    }
    assert_eq!(b.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unsupported_transfer_codings_get_501() {
    let b = backend("a").await;
    let gw = gateway(config(&[b.addr])).await;
    for req in [
        &b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: compress\r\n\r\n",
    ] {
        let mut c = Raw::connect(gw.addr).await;
        c.send(req).await;
        let r = c.response().await;
        assert_eq!(r.status, 501);
        assert_eq!(r.header("connection"), Some("close"));
        assert_eq!(r.body, b"501 Not Implemented\n");
        // The body was not read, so the connection cannot carry another request.
        assert!(c.closed().await);
    }
    assert_eq!(b.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn pooled_connection_closed_by_the_backend_is_retried_on_a_fresh_one() {
    // One response per connection, then a close the gateway only notices on reuse.
    let (addr, accepted) = scripted(|_, mut r| async move {
        request_head(&mut r).await;
        r.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await;
    })
    .await;
    let gw = gateway(config(&[addr])).await;
    let mut c = Raw::connect(gw.addr).await;
    for _ in 0..3 {
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let r = c.response().await;
        assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

fn buffers_held(gw: &Gateway) -> u64 {
    let text = gw.shared.metrics.encode();
    text.lines()
        .find(|l| l.starts_with("gateway_client_buffers{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn idle_keep_alive_connections_hold_no_buffers() {
    let b = backend("a").await;
    let gw = gateway(config(&[b.addr])).await;
    // A connection in the middle of a request holds its buffers...
    let mut busy = Raw::connect(gw.addr).await;
    busy.send(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n").await;
    b.wait_entered().await;
    assert_eq!(buffers_held(&gw), 1);
    // ...idle keep-alive connections do not: after their response each gives them back
    // before waiting for the next request.
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut c = Raw::connect(gw.addr).await;
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(c.response().await.status, 200);
        idle.push(c);
    }
    // The 20th response was written before its connection released the buffers: one more
    // request on the busy connection's backend shows the count settled.
    b.release.notify_one();
    assert_eq!(busy.response().await.status, 200);
    let mut last = Raw::connect(gw.addr).await;
    last.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(last.response().await.status, 200);
    assert!(last.closed().await);
    // Release happens right after a response is written; the client may see the bytes
    // first. Poll the gauge with yields rather than sleeping a fixed time.
    for _ in 0..1000 {
        if buffers_held(&gw) == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(buffers_held(&gw), 0, "{}", gw.shared.metrics.encode());
    assert_eq!(idle.len(), 20);
}

/// Captures the `bytes` and `status` fields of access-log events.
#[derive(Clone, Default)]
struct AccessCapture(Arc<std::sync::Mutex<Vec<(u64, u64)>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AccessCapture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != scalewise_gateway::logging::ACCESS_TARGET {
            return;
        }
        #[derive(Default)]
        struct V {
            bytes: u64,
            status: u64,
        }
        impl tracing::field::Visit for V {
            fn record_u64(&mut self, f: &tracing::field::Field, v: u64) {
                match f.name() {
                    "bytes" => self.bytes = v,
                    "status" => self.status = v,
                    _ => {}
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut v = V::default();
        event.record(&mut v);
        self.0.lock().unwrap().push((v.status, v.bytes));
    }
}

#[tokio::test]
async fn access_log_counts_the_body_bytes_written() {
    use tracing_subscriber::layer::SubscriberExt;
    let capture = AccessCapture::default();
    // The test runtime is single-threaded: the gateway's tasks run on this thread and see
    // this subscriber.
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let b = backend("a").await;
    let mut cfg = config(&[b.addr]);
    cfg.log.access_log = true;
    let gw = gateway(cfg).await;
    let mut c = Raw::connect(gw.addr).await;
    // Streamed by the backend without a Content-Length: only counting tells the size.
    c.send(b"GET /big/100000 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!((r.status, r.body.len()), (200, 100_000));
    assert!(r.header("content-length").is_none());
    c.send(b"HEAD /big/100000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(c.response_to(true).await.status, 200);
    assert!(c.closed().await);
    // The line is written after the body: poll with yields, not a fixed sleep.
    for _ in 0..1000 {
        if capture.0.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(*capture.0.lock().unwrap(), [(200, 100_000), (200, 0)]);
}
