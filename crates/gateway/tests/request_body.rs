//! Request bodies on the way upstream, on loopback: bodies kept for retries
//! (`routes[].retry_buffer_bytes`, `retry_non_idempotent`) and early answers from a backend
//! that does not read the upload.
//!
//! The failing backend here is a raw socket that reads the whole request (so the gateway
//! has streamed the body) and then resets the connection before answering.
mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream};

/// A backend that reads each request whole and resets the connection instead of answering.
struct Resetter {
    addr: SocketAddr,
    /// The body of each request it got.
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Resetter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Resetter {
    fn bodies(&self) -> Vec<Vec<u8>> {
        self.bodies.lock().unwrap().clone()
    }
}

async fn resetter() -> Resetter {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let b = bodies.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let body = read_request(&mut s).await;
            b.lock().unwrap().push(body);
            // SO_LINGER 0: the close sends a reset.
            let _ = s.set_zero_linger();
            drop(s);
        }
    });
    Resetter { addr, bodies, task }
}

/// Reads one request from `s` and returns its body (decoded if chunked).
async fn read_request(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let complete = |got: &[u8]| match length {
        Some(n) => got.len() >= head_end + n,
        None => got.ends_with(b"0\r\n\r\n"),
    };
    while !complete(&got) {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let raw = &got[head_end..];
    if length.is_some() {
        return raw.to_vec();
    }
    // Chunked: size line, data, CRLF, until the zero chunk.
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
        rest = &rest[eol + 2 + size + 2..];
    }
    out
}

/// `n` letters that differ from position to position, so a reordered or cut body shows
/// (ASCII: the helpers read answers as text).
fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i * 7 % 26) as u8).collect()
}

fn post(path: &str, data: &[u8]) -> Request<Body> {
    Request::post(path)
        .header("host", "example.test")
        .body(body(data.to_vec()))
        .unwrap()
}

/// The same body without a length: two frames, sent chunked.
fn post_chunked(path: &str, data: &[u8]) -> Request<Body> {
    let (a, b) = data.split_at(data.len() / 2);
    let frames = vec![
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::copy_from_slice(a))),
        Ok(Frame::data(Bytes::copy_from_slice(b))),
    ];
    Request::post(path)
        .header("host", "example.test")
        .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        .unwrap()
}

fn retries(gw: &Gateway) -> u64 {
    gw.shared
        .metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix("gateway_retries_total{upstream=\"default\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn post_body_is_replayed_to_the_next_backend_after_a_reset() {
    let bad = resetter().await;
    let good = backend("good").await;
    let mut cfg = config(&[bad.addr, good.addr]);
    cfg.routes[0].retry_non_idempotent = true;
    let gw = gateway(cfg).await;
    let data = payload(10 * 1024);
    // Round robin: some of these go to the resetting backend first.
    for i in 0..4 {
        let req = if i % 2 == 0 {
            post("/echo", &data)
        } else {
            post_chunked("/echo", &data)
        };
        let (status, _, text) = send(gw.addr, req).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
        assert!(
            text.as_bytes() == data,
            "request {i}: the echoed body differs"
        );
    }
    let first = bad.bodies();
    assert!(!first.is_empty(), "the resetting backend got requests");
    for b in &first {
        assert!(*b == data, "the first attempt carried the whole body");
    }
    assert_eq!(retries(&gw), first.len() as u64);
}

#[tokio::test]
async fn h2_client_body_is_replayed_too() {
    let bad = resetter().await;
    let good = backend("good").await;
    let mut cfg = config(&[bad.addr, good.addr]);
    cfg.routes[0].retry_non_idempotent = true;
    let gw = gateway(cfg).await;
    let mut tx = h2_client(TcpStream::connect(gw.addr).await.unwrap()).await;
    let data = payload(10 * 1024);
    for i in 0..2 {
        let req = Request::post("http://h2.example.test/echo")
            .body(body(data.clone()))
            .unwrap();
        let (status, _, text) = read(tx.send_request(req).await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
        assert!(
            text.as_bytes() == data,
            "request {i}: the echoed body differs"
        );
    }
    let first = bad.bodies();
    assert!(!first.is_empty(), "the resetting backend got requests");
    assert!(first.iter().all(|b| *b == data));
    assert_eq!(retries(&gw), first.len() as u64);
}

#[tokio::test]
async fn body_over_the_retry_buffer_is_not_retried() {
    let bad = resetter().await;
    let mut cfg = config(&[bad.addr]);
    cfg.routes[0].retry_non_idempotent = true;
    cfg.routes[0].retry_buffer_bytes = Some(4096);
    let gw = gateway(cfg).await;
    let data = payload(10 * 1024);
    // Declared too large, and chunked past the limit: both stream unkept.
    for req in [post("/sink", &data), post_chunked("/sink", &data)] {
        let (status, _, _) = send(gw.addr, req).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
    }
    let got = bad.bodies();
    assert_eq!(got.len(), 2, "one attempt per request");
    assert!(got.iter().all(|b| *b == data), "each attempt got the body");
    assert_eq!(retries(&gw), 0);
    // Nothing stays charged to the process-wide cap.
    assert_eq!(gw.shared.retry_buffered_bytes(), 0);
}

#[tokio::test]
async fn non_idempotent_requests_are_retried_only_when_configured() {
    let bad = resetter().await;
    let data = payload(1024);

    // POST: not retried by default.
    let gw = gateway(config(&[bad.addr])).await;
    assert_eq!(
        send(gw.addr, post("/sink", &data)).await.0,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(bad.bodies().len(), 1);
    // PUT is idempotent: retried with its body (the one backend gets it again).
    let put = Request::put("/sink")
        .header("host", "example.test")
        .body(body(data.clone()))
        .unwrap();
    assert_eq!(send(gw.addr, put).await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(bad.bodies().len(), 3);
    drop(gw);

    // POST on a route with `retry_non_idempotent`: retried.
    let mut cfg = config(&[bad.addr]);
    cfg.routes[0].retry_non_idempotent = true;
    let gw = gateway(cfg).await;
    assert_eq!(
        send(gw.addr, post("/sink", &data)).await.0,
        StatusCode::BAD_GATEWAY
    );
    let got = bad.bodies();
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|b| *b == data));
}

/// A backend that answers `POST /upload` with 413 as soon as it has the head, without
/// reading the body, and then leaves that connection alone (open, unread). Other requests
/// get 200 with the number of the connection they came on.
async fn early_answerer() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut n = 0;
        let mut parked = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            n += 1;
            let mut got = Vec::new();
            let mut buf = vec![0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => got.extend_from_slice(&buf[..k]),
                }
            }
            use tokio::io::AsyncWriteExt as _;
            if got.starts_with(b"POST /upload ") {
                let _ = s
                    .write_all(
                        b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\n\r\ntoo large",
                    )
                    .await;
                // Kept open and unread: a gateway that reused it would wait forever.
                parked.push(s);
            } else {
                let text = format!("conn={n}");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
                    text.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                parked.push(s);
            }
        }
    });
    (addr, task)
}

/// A backend's early answer reaches the client while the client is still uploading.
///
/// Ordering, not time, shows it: the client declares 8 MiB but sends only 4 MiB (64 KiB at a
/// time) and then waits for the answer without ever finishing. A gateway that sent the body
/// whole before reading the response could only answer 504 when the route timeout ran out.
#[tokio::test]
async fn early_answer_reaches_the_client_before_the_upload_ends() {
    use tokio::io::AsyncWriteExt as _;
    let (addr, _task) = early_answerer().await;
    let mut cfg = config(&[addr]);
    cfg.routes[0].timeout = Some(Duration::from_secs(30));
    let gw = gateway(cfg).await;

    let s = TcpStream::connect(gw.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let declared = 8 * 1024 * 1024;
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: example.test\r\ncontent-length: {declared}\r\n\r\n"
    );
    let (answered_tx, answered_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b'u'; 64 * 1024];
        for _ in 0..(declared / 2) / chunk.len() {
            // The gateway may stop reading once it has the answer: a blocked or failed
            // write ends the upload.
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
        // Never the rest: hold the connection until the answer is in.
        let _ = answered_rx.await;
    });

    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = rd.read(&mut buf).await.unwrap();
        assert!(n > 0, "the gateway closed without an answer");
        got.extend_from_slice(&buf[..n]);
    }
    let _ = answered_tx.send(());
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 413 "), "{head}");
    // The unread rest of the upload is still on the client connection: it closes.
    assert!(head.contains("connection: close\r\n"), "{head}");
    writer.await.unwrap();

    // The backend connection that answered early is not reused: the next request goes on
    // a new one (the old one is never read again, so reusing it would end in 504).
    let (status, _, text) = send(gw.addr, get("/after")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text, "conn=2");
}

#[tokio::test]
async fn a_client_that_sends_its_whole_body_before_reading_still_gets_the_early_answer() {
    use tokio::io::AsyncWriteExt as _;
    let (addr, _task) = early_answerer().await;
    let mut cfg = config(&[addr]);
    cfg.routes[0].timeout = Some(Duration::from_secs(30));
    let gw = gateway(cfg).await;

    // A naive client: writes the whole upload, and only then reads. More than the socket
    // buffers hold arrives after the gateway has answered; closing at once would reset the
    // connection and lose the answer (lingering close keeps reading until the client is done).
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let declared = 16 * 1024 * 1024;
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: example.test\r\ncontent-length: {declared}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'u'; 64 * 1024];
    for _ in 0..declared / chunk.len() {
        s.write_all(&chunk)
            .await
            .expect("the gateway keeps reading until the upload ends");
    }
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .await
        .expect("the answer is read, not reset");
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 413 "), "{text}");
}
