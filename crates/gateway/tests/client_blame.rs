//! Failures caused by the client are never held against a backend: a request body that is
//! too large (413), that the client abandons (HTTP/1 half-close or close, HTTP/2
//! `RST_STREAM` or connection drop) or that the client is too slow to send (408) must not
//! trip the backend's circuit breaker or outlier detection, nor be retried.
//!
//! Every test runs one backend behind a breaker that opens on one failure (count window of
//! 2, `minimum_calls` 1, threshold 0.5) and outlier detection that ejects on one failure,
//! with retries allowed for every method. After three client failures the backend must
//! still be in rotation: closed breaker, not ejected, no consecutive errors, no retries,
//! and a normal request answered 200.
//!
//! Synchronisation: the backend reports when a request reached it; the gateway's side is
//! over when the endpoint's in-flight count is back to 0 (the selection is dropped or
//! finished exactly where the pipeline decides whom to blame).
mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use scalewise::breaker::{BreakerConfig, WindowConfig};
use scalewise::health::OutlierConfig;
use scalewise_gateway::config::Config;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Client failures per test: more than the one failure that trips breaker and outlier.
const N: usize = 3;
/// The listener's `max_body_bytes`.
const MAX_BODY: u64 = 1024;

/// A backend that reports each request's arrival, reads its whole body and answers 200 with
/// the body's length (or 500 if the body broke off, which the gateway must never get to
/// count: its request is gone by then).
struct Sink {
    addr: SocketAddr,
    entered: mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn sink() -> Sink {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, entered) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let _ = tx.send(());
                    async move {
                        let resp = match req.into_body().collect().await {
                            Ok(b) => http::Response::new(Full::new(Bytes::from(
                                b.to_bytes().len().to_string(),
                            ))),
                            Err(_) => {
                                let mut r = http::Response::new(Full::new(Bytes::new()));
                                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                                r
                            }
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Sink {
        addr,
        entered,
        task,
    }
}

/// A gateway in front of `backend` whose breaker and outlier detection trip on one failure.
fn guarded(backend: SocketAddr, timeout: Option<Duration>) -> Config {
    let mut cfg = config(&[backend]);
    let up = cfg.upstreams.get_mut("default").unwrap();
    up.health.outlier = Some(OutlierConfig {
        consecutive_5xx: 1,
        consecutive_connect_failures: 1,
        max_ejection_percent: 100,
        base_ejection_time: Duration::from_secs(3600),
        max_ejection_time: Duration::from_secs(7200),
    });
    up.circuit_breaker = Some(BreakerConfig {
        window: WindowConfig::Count { size: 2 },
        minimum_calls: 1,
        failure_rate_threshold: 0.5,
        open_duration: Duration::from_secs(3600),
        max_open_duration: Duration::from_secs(7200),
        open_jitter: 0.0,
        ..Default::default()
    });
    cfg.listeners[0].max_body_bytes = Some(MAX_BODY);
    // A failure blamed on the backend would be retried: PUT is idempotent, and any method
    // may be retried here.
    cfg.routes[0].retry_non_idempotent = true;
    cfg.routes[0].timeout = timeout;
    cfg
}

/// Waits until no request is in flight to the backend: the gateway has judged (or not) the
/// last attempt.
async fn settled(gw: &Gateway) {
    for _ in 0..100_000 {
        let state = gw.shared.load();
        let up = state.upstream("default").unwrap();
        if up.balancer.endpoints()[0].snapshot().in_flight == 0 {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the request to the backend never ended");
}

/// Once the requests have ended: the backend is not ejected, has no error streak and its
/// breaker is closed.
async fn not_blamed(gw: &Gateway) {
    settled(gw).await;
    let state = gw.shared.load();
    let up = state.upstream("default").unwrap();
    let e = &up.balancer.endpoints()[0];
    let snap = e.snapshot();
    assert!(!snap.ejected, "ejected by outlier detection: {snap:?}");
    assert_eq!(snap.consecutive_errors, 0, "{snap:?}");
    let breaker = up.policy.breaker_json(e);
    assert_eq!(breaker["state"], "closed", "{breaker}");
}

/// The backend is still in rotation and answers; nothing was retried.
async fn still_in_rotation(gw: &Gateway, local_kind: &str) {
    not_blamed(gw).await;
    let m = gw.shared.metrics.encode();
    let retries = m
        .lines()
        .find_map(|l| l.strip_prefix("gateway_retries_total{upstream=\"default\"} "))
        .unwrap_or("0");
    assert_eq!(retries, "0", "client failures are not retried: {m}");
    let kind = format!("kind=\"{local_kind}\"");
    let counted = m
        .lines()
        .find(|l| l.starts_with("gateway_local_replies_total") && l.contains(&kind))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("0");
    assert_eq!(counted, N.to_string(), "{m}");
    let req = Request::put("/sink")
        .header("host", "example.test")
        .body(body("hello"))
        .unwrap();
    let (status, _, text) = send(gw.addr, req).await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "5"));
}

/// Reads what the gateway sends until it closes; the status of the first response line.
async fn status_then_eof(s: &mut TcpStream) -> u16 {
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got).await;
    let text = String::from_utf8_lossy(&got);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// An HTTP/1.1 upload of 100 declared bytes of which 10 are sent, once the backend has it.
async fn h1_partial_upload(gw: &Gateway, backend: &mut Sink) -> TcpStream {
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"PUT /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    backend.entered.recv().await.unwrap();
    s
}

#[tokio::test]
async fn h1_client_that_stops_mid_upload_is_not_the_backends_fault() {
    let mut b = sink().await;
    let gw = gateway(guarded(b.addr, None)).await;
    for i in 0..N {
        let mut s = h1_partial_upload(&gw, &mut b).await;
        // Half-close: the client sends no more, but could still read an answer.
        s.shutdown().await.unwrap();
        assert_eq!(status_then_eof(&mut s).await, 400, "upload {i}");
    }
    still_in_rotation(&gw, "client_closed").await;
}

#[tokio::test]
async fn h1_client_that_vanishes_mid_upload_is_not_the_backends_fault() {
    let mut b = sink().await;
    let gw = gateway(guarded(b.addr, None)).await;
    for _ in 0..N {
        let s = h1_partial_upload(&gw, &mut b).await;
        drop(s);
        settled(&gw).await;
    }
    still_in_rotation(&gw, "client_closed").await;
}

#[tokio::test]
async fn h1_malformed_chunked_body_is_400_and_not_the_backends_fault() {
    let mut b = sink().await;
    let gw = gateway(guarded(b.addr, None)).await;
    for i in 0..N {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(
            b"PUT /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .await
        .unwrap();
        b.entered.recv().await.unwrap();
        s.write_all(b"zz\r\n").await.unwrap();
        assert_eq!(status_then_eof(&mut s).await, 400, "upload {i}");
    }
    still_in_rotation(&gw, "bad_request").await;
}

#[tokio::test]
async fn h1_streamed_body_over_the_limit_is_413_and_not_the_backends_fault() {
    let mut b = sink().await;
    let gw = gateway(guarded(b.addr, None)).await;
    let big = vec![b'x'; MAX_BODY as usize + 1];
    for i in 0..N {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(
            b"PUT /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n",
        )
        .await
        .unwrap();
        b.entered.recv().await.unwrap();
        let mut chunk = format!("{:x}\r\n", big.len()).into_bytes();
        chunk.extend_from_slice(&big);
        chunk.extend_from_slice(b"\r\n0\r\n\r\n");
        // The gateway may answer and close before reading it all.
        let _ = s.write_all(&chunk).await;
        assert_eq!(status_then_eof(&mut s).await, 413, "upload {i}");
    }
    still_in_rotation(&gw, "body_too_large").await;
}

#[tokio::test]
async fn h1_client_too_slow_with_its_body_is_408_not_504() {
    let mut b = sink().await;
    // The route's timeout runs out while the gateway waits for the rest of the body.
    let gw = gateway(guarded(b.addr, Some(Duration::from_millis(200)))).await;
    for i in 0..N {
        let mut s = h1_partial_upload(&gw, &mut b).await;
        assert_eq!(status_then_eof(&mut s).await, 408, "upload {i}");
    }
    still_in_rotation(&gw, "client_timeout").await;
}

/// An HTTP/2 connection to the gateway whose task can be aborted (the connection drops).
async fn h2_conn(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Body>,
    tokio::task::JoinHandle<()>,
) {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (tx, task)
}

type Frames = mpsc::UnboundedSender<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>;

/// An HTTP/2 upload whose body is fed through the returned sender; the first 10 bytes are
/// sent, and the backend has the request when this returns.
async fn h2_partial_upload(
    tx: &mut hyper::client::conn::http2::SendRequest<Body>,
    backend: &mut Sink,
) -> (
    Frames,
    tokio::task::JoinHandle<Result<http::Response<Incoming>, hyper::Error>>,
) {
    let (frames, rx) = mpsc::unbounded_channel();
    frames
        .send(Ok(Frame::data(Bytes::from_static(b"0123456789"))))
        .unwrap();
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let req = Request::put("http://h2.example.test/sink")
        .body(StreamBody::new(stream).boxed())
        .unwrap();
    tx.ready().await.unwrap();
    let resp = tokio::spawn(tx.send_request(req));
    backend.entered.recv().await.unwrap();
    (frames, resp)
}

#[tokio::test]
async fn h2_client_that_resets_its_stream_mid_upload_is_not_the_backends_fault() {
    let mut b = sink().await;
    let gw = gateway(guarded(b.addr, None)).await;
    let (mut tx, _conn) = h2_conn(gw.addr).await;
    for i in 0..N {
        let (frames, resp) = h2_partial_upload(&mut tx, &mut b).await;
        // A body error makes hyper's client reset the stream (RST_STREAM).
        frames.send(Err("client gives up".into())).unwrap();
        // The gateway's side is over once the backend's request is (in flight: 0).
        drop(resp);
        settled(&gw).await;
        assert_eq!(
            gw.shared
                .load()
                .upstream("default")
                .unwrap()
                .balancer
                .endpoints()[0]
                .snapshot()
                .in_flight,
            0,
            "upload {i}"
        );
    }
    // Nobody is left to answer; whether the gateway saw the reset as a body error or had
    // the request dropped by hyper, nothing was blamed. Only the count of 499s differs.
    not_blamed(&gw).await;
    let (status, _, text) = read(
        tx.send_request(
            Request::put("http://h2.example.test/sink")
                .body(body("hello"))
                .unwrap(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "5"));
}

/// The backend's `gateway_backend_in_flight` gauge, as the metrics endpoint shows it.
fn in_flight_gauge(gw: &Gateway) -> Option<String> {
    gw.shared
        .metrics
        .encode()
        .lines()
        .find_map(|l| {
            l.strip_prefix("gateway_backend_in_flight{")?
                .split_once("} ")
        })
        .map(|(_, v)| v.to_owned())
}

#[tokio::test]
async fn h2_client_that_cancels_while_the_backend_answers_leaves_nothing_in_flight() {
    // A backend that reads each request and never answers it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let _backend = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = seen_tx.send(());
            held.push(s);
        }
    });
    let gw = gateway(guarded(addr, None)).await;
    let (mut tx, _conn) = h2_conn(gw.addr).await;
    for i in 0..N {
        tx.ready().await.unwrap();
        let req = Request::get("http://h2.example.test/")
            .body(body(""))
            .unwrap();
        let resp = tokio::spawn(tx.send_request(req));
        seen.recv().await.unwrap();
        assert_eq!(in_flight_gauge(&gw).as_deref(), Some("1"), "request {i}");
        // Dropping the response future resets the stream (RST_STREAM CANCEL) while the
        // gateway waits for the backend's answer: hyper drops the gateway's request future.
        resp.abort();
        settled(&gw).await;
        assert_eq!(in_flight_gauge(&gw).as_deref(), Some("0"), "request {i}");
    }
}

/// A TCP relay to `to` for one connection; aborting its task closes both sides at once (the
/// client's connection to the gateway drops, whatever the client library would do).
async fn relay(to: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut a, _) = listener.accept().await.unwrap();
        let mut b = TcpStream::connect(to).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
    });
    (addr, task)
}

#[tokio::test]
async fn h2_client_whose_connection_drops_mid_upload_is_not_the_backends_fault() {
    let mut b = sink().await;
    let gw = gateway(guarded(b.addr, None)).await;
    for _ in 0..N {
        let (via, link) = relay(gw.addr).await;
        let (mut tx, _conn) = h2_conn(via).await;
        let (_frames, resp) = h2_partial_upload(&mut tx, &mut b).await;
        // The connection between client and gateway is cut.
        link.abort();
        let _ = resp.await;
        settled(&gw).await;
    }
    let state = gw.shared.load();
    let up = state.upstream("default").unwrap();
    let e = &up.balancer.endpoints()[0];
    let snap = e.snapshot();
    assert!(!snap.ejected, "{snap:?}");
    assert_eq!(snap.consecutive_errors, 0, "{snap:?}");
    assert_eq!(up.policy.breaker_json(e)["state"], "closed");
    drop(state);
    let req = Request::put("/sink")
        .header("host", "example.test")
        .body(body("hello"))
        .unwrap();
    assert_eq!(send(gw.addr, req).await.0, StatusCode::OK);
}

#[tokio::test]
async fn h2_streamed_body_over_the_limit_is_413_and_not_the_backends_fault() {
    let mut b = sink().await;
    let gw = gateway(guarded(b.addr, None)).await;
    let (mut tx, _conn) = h2_conn(gw.addr).await;
    for i in 0..N {
        let (frames, resp) = h2_partial_upload(&mut tx, &mut b).await;
        frames
            .send(Ok(Frame::data(Bytes::from(vec![b'x'; MAX_BODY as usize]))))
            .unwrap();
        let (status, _, _) = read(resp.await.unwrap().unwrap()).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "upload {i}");
    }
    still_in_rotation(&gw, "body_too_large").await;
}

#[tokio::test]
async fn h2_client_too_slow_with_its_body_is_408_not_504() {
    let mut b = sink().await;
    let gw = gateway(guarded(b.addr, Some(Duration::from_millis(200)))).await;
    let (mut tx, _conn) = h2_conn(gw.addr).await;
    for i in 0..N {
        // The sender stays open: the body never ends.
        let (_frames, resp) = h2_partial_upload(&mut tx, &mut b).await;
        let (status, _, _) = read(resp.await.unwrap().unwrap()).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "upload {i}");
    }
    still_in_rotation(&gw, "client_timeout").await;
}
