//! Every answer of issue 2 §8, produced by real failures on loopback.
mod common;

use common::*;
use http::Request;
use scalewise_gateway::config::{RouteConfig, UpstreamConfig};
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test]
async fn dead_backend_is_502() {
    let dead = dead_addr().await;
    let gw = gateway(config(&[dead])).await;
    let (status, _, text) = send(gw.addr, get("/")).await;
    assert_eq!(status, 502);
    assert_eq!(text, "502 Bad Gateway\n", "no internals in the body");
    let m = gw.shared.metrics.encode();
    assert!(
        m.contains("gateway_upstream_connect_errors_total{upstream=\"default\""),
        "{m}"
    );
}

#[tokio::test]
async fn idempotent_request_is_retried_on_another_backend() {
    let dead = dead_addr().await;
    let live = backend("live").await;
    let gw = gateway(config(&[dead, live.addr])).await;
    // Round robin alternates, so some of these go to the dead one first.
    for _ in 0..6 {
        let (status, headers, _) = send(gw.addr, get("/")).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-backend"], "live");
    }
    assert_eq!(live.hits.load(Ordering::SeqCst), 6);
    let m = gw.shared.metrics.encode();
    let retries: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("gateway_retries_total{upstream=\"default\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(retries >= 1, "{m}");
}

#[tokio::test]
async fn post_is_not_retried() {
    let dead = dead_addr().await;
    let live = backend("live").await;
    let gw = gateway(config(&[dead, live.addr])).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let req = Request::post("/sink")
            .header("host", "x")
            .body(body("payload"))
            .unwrap();
        statuses.push(send(gw.addr, req).await.0.as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 502, 502]);
    assert_eq!(live.hits.load(Ordering::SeqCst), 2);
}

/// HTTP/1 connections share one timer between their requests (moved lazily): each request
/// still gets its own deadline, whether the timer was last set for a later one, an earlier
/// one, or had already fired for the request before.
#[tokio::test]
async fn every_request_on_a_keep_alive_connection_gets_its_timeout() {
    let b = backend("slow").await;
    let mut cfg = config(&[b.addr]);
    cfg.routes[0].timeout = Some(Duration::from_millis(200));
    let gw = gateway(cfg).await;
    let mut tx = h1(gw.addr).await;
    for path in ["/", "/hang", "/", "/hang", "/hang", "/"] {
        let resp = tx.send_request(get(path)).await.unwrap();
        let (status, _, _) = read(resp).await;
        let want = if path == "/hang" { 504 } else { 200 };
        assert_eq!(status, want, "{path}");
    }
}

#[tokio::test]
async fn hanging_backend_is_504() {
    let b = backend("slow").await;
    let mut cfg = config(&[b.addr]);
    cfg.routes[0].timeout = Some(Duration::from_millis(200));
    let gw = gateway(cfg).await;
    let (status, _, text) = send(gw.addr, get("/hang")).await;
    assert_eq!(status, 504);
    assert_eq!(text, "504 Gateway Timeout\n");
}

#[tokio::test]
async fn no_healthy_backend_is_503_with_retry_after() {
    let b = backend("a").await;
    let gw = gateway(config(&[b.addr])).await;
    let state = gw.shared.load();
    for ep in state.upstream("default").unwrap().balancer.endpoints() {
        ep.set_draining(true);
    }
    let (status, headers, _) = send(gw.addr, get("/")).await;
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"));
    assert_eq!(b.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn full_backend_queue_is_503() {
    let b = backend("a").await;
    let mut cfg = config(&[b.addr]);
    let up: &mut UpstreamConfig = cfg.upstreams.get_mut("default").unwrap();
    up.max_connections_per_backend = Some(1);
    up.queue_size = 0;
    let gw = gateway(cfg).await;
    let addr = gw.addr;
    let first = tokio::spawn(async move { send(addr, get("/hang")).await });
    b.wait_entered().await;
    let (status, headers, _) = send(gw.addr, get("/")).await;
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"));
    b.release.notify_one();
    assert_eq!(first.await.unwrap().0, 200);
    // The slot is free again.
    assert_eq!(send(gw.addr, get("/")).await.0, 200);
}

#[tokio::test]
async fn queued_request_waits_for_a_slot() {
    let b = backend("a").await;
    let mut cfg = config(&[b.addr]);
    let up = cfg.upstreams.get_mut("default").unwrap();
    up.max_connections_per_backend = Some(1);
    up.queue_size = 1;
    up.queue_timeout = Duration::from_secs(30);
    let gw = gateway(cfg).await;
    let addr = gw.addr;
    let first = tokio::spawn(async move { send(addr, get("/hang")).await });
    b.wait_entered().await;
    // Two more: one takes the single queue place, the other finds the queue full at once.
    let mut second = tokio::spawn(async move { send(addr, get("/hang")).await });
    let mut third = tokio::spawn(async move { send(addr, get("/hang")).await });
    let (rejected, queued) = tokio::select! {
        r = &mut second => (r, third),
        r = &mut third => (r, second),
    };
    assert_eq!(rejected.unwrap().0, 503);
    b.release.notify_one();
    assert_eq!(first.await.unwrap().0, 200);
    b.wait_entered().await;
    b.release.notify_one();
    assert_eq!(queued.await.unwrap().0, 200);
}

#[tokio::test]
async fn no_route_is_404() {
    let b = backend("a").await;
    let mut cfg = config(&[b.addr]);
    cfg.routes = vec![RouteConfig {
        path_prefix: Some("/api".into()),
        host: Some("*.example.test".into()),
        methods: Some(vec!["GET".into()]),
        ..RouteConfig::to_upstream("default")
    }];
    let gw = gateway(cfg).await;
    let with_host = |path: &str, host: &str| {
        Request::get(path)
            .header("host", host)
            .body(body(""))
            .unwrap()
    };
    assert_eq!(
        send(gw.addr, with_host("/api/x", "a.example.test")).await.0,
        200
    );
    assert_eq!(
        send(gw.addr, with_host("/api", "A.EXAMPLE.TEST:80"))
            .await
            .0,
        200
    );
    assert_eq!(
        send(gw.addr, with_host("/apix", "a.example.test")).await.0,
        404
    );
    assert_eq!(
        send(gw.addr, with_host("/api/x", "example.test")).await.0,
        404
    );
    let post = Request::post("/api/x")
        .header("host", "a.example.test")
        .body(body(""))
        .unwrap();
    let (status, _, text) = send(gw.addr, post).await;
    assert_eq!(status, 404);
    assert_eq!(text, "404 Not Found\n");
}

#[tokio::test]
async fn malformed_requests_are_400() {
    let b = backend("a").await;
    let gw = gateway(config(&[b.addr])).await;
    assert_eq!(raw_status(gw.addr, b"GARBAGE\r\n\r\n").await, 400);
    assert_eq!(
        raw_status(gw.addr, b"GET / HTTP/1.1\r\n\r\n").await,
        400,
        "no Host"
    );
    assert_eq!(
        raw_status(
            gw.addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n"
        )
        .await,
        400
    );
    assert_eq!(b.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let b = backend("a").await;
    let mut cfg = config(&[b.addr]);
    cfg.listeners[0].max_header_bytes = 16 * 1024;
    let gw = gateway(cfg).await;
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 64 * 1024));
    req.extend(b"\r\n\r\n");
    assert_eq!(raw_status(gw.addr, &req).await, 431);
    assert_eq!(b.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let b = backend("a").await;
    let mut cfg = config(&[b.addr]);
    cfg.listeners[0].max_body_bytes = Some(1000);
    let gw = gateway(cfg).await;
    // Declared too large: refused before anything is forwarded.
    let req = Request::post("/sink")
        .header("host", "x")
        .body(body(vec![b'x'; 2000]))
        .unwrap();
    assert_eq!(send(gw.addr, req).await.0, 413);
    assert_eq!(b.hits.load(Ordering::SeqCst), 0);

    // Streamed without a length: cut off at the limit.
    let chunks = (0..4).map(|_| {
        Ok(hyper::body::Frame::data(bytes::Bytes::from(vec![
            b'y';
            400
        ])))
    });
    let stream = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
    let req = Request::post("/sink")
        .header("host", "x")
        .body(http_body_util::BodyExt::boxed(stream))
        .unwrap();
    assert_eq!(send(gw.addr, req).await.0, 413);

    // Within the limit: fine.
    let req = Request::post("/sink")
        .header("host", "x")
        .body(body(vec![b'x'; 1000]))
        .unwrap();
    let (status, _, text) = send(gw.addr, req).await;
    assert_eq!((status.as_u16(), text.as_str()), (200, "1000"));
}

#[tokio::test]
async fn backend_5xx_passes_through() {
    let b = backend("a").await;
    let gw = gateway(config(&[b.addr])).await;
    let (status, _, text) = send(gw.addr, get("/status/503")).await;
    assert_eq!(status, 503);
    assert_eq!(text, "status");
}
