//! Operations settings from the config file: `[server] shutdown_timeout` bounds the drain,
//! `[admin] enabled = false` turns the admin API off (and `--admin ADDR` back on).
mod ops_support;

use ops_support::*;
use scalewise_gateway::server::{Gateway, Overrides, ReloadError, StartOptions};
use scalewise_gateway::AdminAddr;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// Longest the test waits for something that must happen much sooner; a safety net so a
/// broken drain fails the test instead of hanging it.
const GUARD: Duration = Duration::from_secs(20);

/// A backend that reads one request per connection, reports it and then answers only when
/// `release` fires (never, if it is dropped).
async fn held_backend() -> (SocketAddr, mpsc::UnboundedReceiver<()>, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrived_tx, arrived) = mpsc::unbounded_channel();
    let (release, release_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let _ = arrived_tx.send(());
        if release_rx.await.is_ok() {
            use tokio::io::AsyncWriteExt;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndone")
                .await;
        } else {
            // Never answer: hold the connection open until the test ends.
            std::future::pending::<()>().await;
        }
    });
    (addr, arrived, release)
}

async fn start_held(
    server: &str,
) -> (
    Gateway,
    tokio::task::JoinHandle<Result<(hyper::StatusCode, String), String>>,
    oneshot::Sender<()>,
) {
    let (backend, mut arrived, release) = held_backend().await;
    let text = toml_config(&[backend], &format!("\n[server]\n{server}\n"));
    let (gw, listen, _admin) = start(parse(&text), StartOptions::default()).await;
    let in_flight = tokio::spawn(async move { request(listen, "GET", "/", &[], "").await });
    tokio::time::timeout(GUARD, arrived.recv())
        .await
        .unwrap()
        .unwrap();
    (gw, in_flight, release)
}

#[tokio::test]
async fn shutdown_timeout_from_the_config_bounds_the_drain() {
    let (gw, in_flight, _never) = start_held("shutdown_timeout = \"300ms\"").await;
    let deadline = gw.shutdown_timeout();
    assert_eq!(deadline, Duration::from_millis(300));
    // The backend never answers: the drain gives up at the deadline and shutdown returns.
    let drained = tokio::time::timeout(GUARD, gw.shutdown(deadline))
        .await
        .expect("shutdown must complete at its deadline");
    assert!(!drained);
    // The connection still open at the deadline was closed: the client's request fails
    // (it would say "timed out" only after 10s).
    let r = tokio::time::timeout(GUARD, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(&r, Err(e) if e != "timed out"), "{r:?}");
}

/// A backend that accepts any number of connections, reports each request head and never
/// answers.
async fn hanging_backend() -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrived_tx, arrived) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let arrived = arrived_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = arrived.send(());
                // Hold the connection without answering until the gateway drops it.
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, arrived)
}

#[tokio::test]
async fn connections_still_open_at_the_shutdown_deadline_are_closed() {
    use tokio::io::AsyncWriteExt;
    let (backend, mut arrived) = hanging_backend().await;
    let text = toml_config(&[backend], "\n[server]\nshutdown_timeout = \"200ms\"\n");
    let (gw, listen, _admin) = start(parse(&text), StartOptions::default()).await;

    // An HTTP/1.1 client and an HTTP/2 client, each waiting for a response.
    let mut h1 = tokio::net::TcpStream::connect(listen).await.unwrap();
    h1.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(GUARD, arrived.recv()).await.unwrap();
    let h2 = tokio::net::TcpStream::connect(listen).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(h2),
    )
    .await
    .unwrap();
    let h2_conn = tokio::spawn(conn);
    let h2_req = tokio::spawn(async move {
        let req = hyper::Request::get("http://x/two")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        tx.send_request(req).await.map(|r| r.status())
    });
    tokio::time::timeout(GUARD, arrived.recv()).await.unwrap();

    let deadline = gw.shutdown_timeout();
    let drained = tokio::time::timeout(GUARD, gw.shutdown(deadline))
        .await
        .expect("shutdown must complete at its deadline");
    assert!(!drained);

    // Both connections were closed at the deadline, without a response.
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(GUARD, h1.read(&mut buf))
        .await
        .expect("the HTTP/1 connection must be closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let r = tokio::time::timeout(GUARD, h2_req).await.unwrap().unwrap();
    assert!(r.is_err(), "{r:?}");
    tokio::time::timeout(GUARD, h2_conn)
        .await
        .expect("the HTTP/2 connection must end")
        .unwrap()
        .ok();
}

#[tokio::test]
async fn shutdown_waits_for_a_request_that_finishes_within_the_deadline() {
    let (gw, in_flight, release) = start_held("shutdown_timeout = \"1h\"").await;
    let deadline = gw.shutdown_timeout();
    assert_eq!(deadline, Duration::from_secs(3600));
    let shutdown = tokio::spawn(gw.shutdown(deadline));
    release.send(()).unwrap();
    let (status, body) = tokio::time::timeout(GUARD, in_flight)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "done"));
    assert!(tokio::time::timeout(GUARD, shutdown)
        .await
        .unwrap()
        .unwrap());
}

#[tokio::test]
async fn the_shutdown_timeout_flag_wins_over_the_file() {
    let (backend, _arrived, _release) = held_backend().await;
    let mut config = parse(&toml_config(
        &[backend],
        "\n[server]\nshutdown_timeout = \"1h\"\n",
    ));
    let overrides = Overrides {
        shutdown_timeout: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    overrides.apply(&mut config);
    assert_eq!(config.server.shutdown_timeout, Duration::from_secs(2));
    let options = StartOptions {
        overrides,
        ..Default::default()
    };
    let (gw, _listen, _admin) = start(config.clone(), options).await;
    // And keeps winning over reloads, which can change the file's value.
    let mut reloaded = config;
    reloaded.server.shutdown_timeout = Duration::from_secs(7);
    gw.controller().apply(reloaded).await.unwrap();
    assert_eq!(gw.shutdown_timeout(), Duration::from_secs(2));
}

#[tokio::test]
async fn shutdown_timeout_can_change_on_reload() {
    let (backend, _arrived, _release) = held_backend().await;
    let text = toml_config(&[backend], "");
    let (gw, _listen, _admin) = start(parse(&text), StartOptions::default()).await;
    assert_eq!(gw.shutdown_timeout(), Duration::from_secs(30));
    let changed = parse(&format!("{text}\n[server]\nshutdown_timeout = \"5s\"\n"));
    gw.controller().apply(changed).await.unwrap();
    assert_eq!(gw.shutdown_timeout(), Duration::from_secs(5));
}

#[tokio::test]
async fn admin_can_be_turned_off_in_the_config() {
    let a = backend("a").await;
    // Off: even a public address without a token is fine, nothing is bound.
    let text = toml_config(&[a.addr], "enabled = false\n").replace(
        "addr = \"127.0.0.1:0\"\nenabled",
        "addr = \"0.0.0.0:0\"\nenabled",
    );
    let config = parse(&text);
    assert!(!config.admin.enabled);
    let gw = Gateway::start(config.clone(), StartOptions::default())
        .await
        .unwrap();
    assert_eq!(gw.admin_addr(), None);
    assert!(gw.controller().status()["admin"].is_null());
    let listen = gw.listener_addrs()[0].1;
    assert_eq!(names(listen, 1).await, ["a"]);

    // Turning it on is a restart, not a reload.
    let mut on = config.clone();
    on.admin.enabled = true;
    let err = gw.controller().apply(on).await.unwrap_err();
    assert!(matches!(err, ReloadError::Fixed(_)), "{err}");
    drop(gw);

    // `--admin ADDR` turns it on over the file; `--admin off` turns it off.
    let options = StartOptions {
        overrides: Overrides {
            admin: Some(AdminAddr::At("127.0.0.1:0".parse().unwrap())),
            ..Default::default()
        },
        ..Default::default()
    };
    let gw = Gateway::start(config, options).await.unwrap();
    let admin = gw.admin_addr().expect("--admin ADDR enables the admin API");
    assert_eq!(
        get_json(admin, "/api/status").await["admin"],
        admin.to_string()
    );

    let mut enabled = parse(&toml_config(&[a.addr], ""));
    Overrides {
        admin: Some(AdminAddr::Off),
        ..Default::default()
    }
    .apply(&mut enabled);
    assert!(!enabled.admin.enabled);
}

#[tokio::test]
async fn trusted_proxies_reach_the_listener_runtime_and_can_change_on_reload() {
    let a = backend("a").await;
    let text = toml_config(&[a.addr], "");
    let (gw, _listen, _admin) = start(parse(&text), StartOptions::default()).await;
    let proxy: std::net::IpAddr = "10.1.2.3".parse().unwrap();
    let state = gw.controller().shared().load();
    assert!(!state
        .listener("main")
        .unwrap()
        .trusted_proxies
        .contains(proxy));
    let changed = text.replace(
        "name = \"main\"",
        "name = \"main\"\ntrusted_proxies = [\"10.0.0.0/8\"]",
    );
    gw.controller().apply(parse(&changed)).await.unwrap();
    let state = gw.controller().shared().load();
    assert!(state
        .listener("main")
        .unwrap()
        .trusted_proxies
        .contains(proxy));
}
