//! State swaps under load, graceful drain, connection limits and client timeouts.
mod common;

use common::*;
use scalewise_gateway::config::AlgorithmName;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_fails_no_request() {
    let a = backend("a").await;
    let b = backend("b").await;
    let c = backend("c").await;
    let gw = gateway(config(&[a.addr, b.addr])).await;
    let done = Arc::new(AtomicBool::new(false));

    let mut clients = Vec::new();
    for _ in 0..4 {
        let addr = gw.addr;
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut tx = h1(addr).await;
            for i in 0..150 {
                // Mix keep-alive requests and fresh connections.
                if i % 25 == 0 {
                    tx = h1(addr).await;
                }
                match tx.send_request(get("/")).await {
                    Ok(resp) if resp.status() == 200 => {
                        let _ = read(resp).await;
                    }
                    Ok(resp) => failures.push(format!("status {}", resp.status())),
                    Err(e) => {
                        failures.push(format!("error {e}"));
                        tx = h1(addr).await;
                    }
                }
            }
            failures
        }));
    }

    let shared = gw.shared.clone();
    let stop = done.clone();
    let (a_addr, b_addr, c_addr) = (a.addr, b.addr, c.addr);
    let swapper = tokio::spawn(async move {
        let mut swaps = 0u32;
        while !stop.load(Ordering::SeqCst) {
            let (backends, algorithm) = match swaps % 3 {
                0 => (vec![a_addr, b_addr, c_addr], AlgorithmName::LeastConn),
                1 => (vec![b_addr, c_addr], AlgorithmName::PeakEwma),
                _ => (vec![a_addr, b_addr], AlgorithmName::RoundRobin),
            };
            let mut cfg = config(&backends);
            cfg.upstreams.get_mut("default").unwrap().algorithm = algorithm;
            shared.apply(cfg).unwrap();
            swaps += 1;
            tokio::task::yield_now().await;
        }
        swaps
    });

    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    let swaps = swapper.await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(swaps > 1, "swaps happened during the load: {swaps}");
    let total: usize = [&a, &b, &c]
        .iter()
        .map(|x| x.hits.load(Ordering::SeqCst))
        .sum();
    assert_eq!(total, 600);
}

#[tokio::test]
async fn reload_keeps_balancer_state_of_unchanged_backends() {
    let a = backend("a").await;
    let b = backend("b").await;
    let gw = gateway(config(&[a.addr, b.addr])).await;
    for _ in 0..4 {
        assert_eq!(send(gw.addr, get("/")).await.0, 200);
    }
    let before = gw.shared.load();
    let ep_a = before.upstream("default").unwrap().balancer.endpoints()[0].clone();
    ep_a.set_draining(true);
    let c = backend("c").await;
    gw.shared.apply(config(&[a.addr, b.addr, c.addr])).unwrap();
    let after = gw.shared.load();
    let eps = after.upstream("default").unwrap().balancer.endpoints();
    assert_eq!(eps.len(), 3);
    assert!(Arc::ptr_eq(&eps[0], &ep_a), "same endpoint object");
    assert!(eps[0].is_draining(), "operator drain survives the reload");
    assert_eq!(eps[0].snapshot().requests, 2);
    for _ in 0..6 {
        assert_eq!(send(gw.addr, get("/")).await.0, 200);
    }
    assert_eq!(
        a.hits.load(Ordering::SeqCst),
        2,
        "drained backend gets nothing new"
    );
}

#[tokio::test]
async fn graceful_drain_completes_in_flight_requests() {
    let b = backend("a").await;
    let mut gw = gateway(config(&[b.addr])).await;
    let addr = gw.addr;
    let in_flight = tokio::spawn(async move { send(addr, get("/hang")).await });
    b.wait_entered().await;
    gw.cancel.cancel();
    let listening = gw.listening.take().unwrap();
    tokio::task::yield_now().await;
    assert!(!listening.join.is_finished(), "waits for the open request");
    b.release.notify_one();
    let (status, _, text) = in_flight.await.unwrap();
    assert_eq!((status.as_u16(), text.as_str()), (200, "released"));
    listening.join.await.unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn connection_limit_pauses_accepting() {
    let b = backend("a").await;
    let mut cfg = config(&[b.addr]);
    cfg.listeners[0].max_connections = 1;
    let gw = gateway(cfg).await;
    let mut first = h1(gw.addr).await;
    assert_eq!(
        read(first.send_request(get("/")).await.unwrap()).await.0,
        200
    );
    // The second connection waits in the backlog while the first is open.
    let addr = gw.addr;
    let second = tokio::spawn(async move { send(addr, get("/")).await });
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert!(!second.is_finished());
    let m = gw.shared.metrics.encode();
    assert!(
        m.contains("gateway_client_connections{listener=\"default\"} 1"),
        "{m}"
    );
    drop(first);
    assert_eq!(second.await.unwrap().0, 200);
}

async fn read_until_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let b = backend("a").await;
    let mut cfg = config(&[b.addr]);
    cfg.listeners[0].idle_timeout = Duration::from_millis(100);
    let gw = gateway(cfg).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The response arrives, then the connection is closed once idle.
    let got = read_until_eof(&mut s).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(b.hits.load(Ordering::SeqCst), 1);
}

/// HTTP/2 (h2c prior knowledge, whose preface the listener reads while telling protocols
/// apart): after its request the connection is idle and closed at the idle timeout. The
/// header-read timeout is long, so only the idle clock can close it within the guard.
#[tokio::test]
async fn idle_h2_connections_are_closed() {
    let b = backend("a").await;
    let mut cfg = config(&[b.addr]);
    cfg.listeners[0].idle_timeout = Duration::from_millis(100);
    cfg.listeners[0].header_read_timeout = Duration::from_secs(60);
    let gw = gateway(cfg).await;
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get("http://h2.test/")
        .body(body(""))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    // The server ends the connection; the guard only keeps a broken build from hanging.
    let closed = tokio::time::timeout(Duration::from_secs(20), conn).await;
    assert!(closed.is_ok(), "the idle HTTP/2 connection stayed open");
    assert_eq!(b.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn slow_request_heads_are_cut_off() {
    let b = backend("a").await;
    let mut cfg = config(&[b.addr]);
    cfg.listeners[0].header_read_timeout = Duration::from_millis(100);
    let gw = gateway(cfg).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let got = read_until_eof(&mut s).await;
    assert!(!got.starts_with(b"HTTP/1.1 200"));
    assert_eq!(b.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn outlier_detection_ejects_failing_backend() {
    let good = backend("good").await;
    let bad = dead_addr().await;
    let mut cfg = config(&[good.addr, bad]);
    cfg.upstreams.get_mut("default").unwrap().health.outlier =
        Some(scalewise::health::OutlierConfig {
            consecutive_connect_failures: 1,
            max_ejection_percent: 50,
            ..Default::default()
        });
    let gw = gateway(cfg).await;
    for _ in 0..10 {
        assert_eq!(send(gw.addr, get("/")).await.0, 200);
    }
    let state = gw.shared.load();
    let eps = state.upstream("default").unwrap().balancer.endpoints();
    assert!(eps.iter().any(|e| e.addr() == bad && e.is_ejected()));
    let m = gw.shared.metrics.encode();
    let retries: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("gateway_retries_total{upstream=\"default\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert_eq!(retries, 1, "after one failure the dead backend is out: {m}");
}

#[tokio::test]
async fn sticky_client_moves_when_its_backend_goes() {
    let a = backend("a").await;
    let b = backend("b").await;
    let mut cfg = config(&[a.addr, b.addr]);
    cfg.upstreams.get_mut("default").unwrap().sticky_cookie = Some("sw".into());
    let gw = gateway(cfg).await;
    let (_, headers, _) = send(gw.addr, get("/")).await;
    let cookie = headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let first = headers["x-backend"].to_str().unwrap().to_owned();
    let state = gw.shared.load();
    for ep in state.upstream("default").unwrap().balancer.endpoints() {
        let name = if ep.addr() == a.addr { "a" } else { "b" };
        if name == first {
            ep.set_draining(true);
        }
    }
    let req = http::Request::get("/")
        .header("host", "x")
        .header("cookie", &cookie)
        .body(body(""))
        .unwrap();
    let (status, headers, _) = send(gw.addr, req).await;
    assert_eq!(status, 200);
    assert_ne!(headers["x-backend"].to_str().unwrap(), first);
    let new_cookie = headers["set-cookie"].to_str().unwrap();
    assert!(new_cookie.starts_with("sw=") && !new_cookie.starts_with(&cookie));
}
