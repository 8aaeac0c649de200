//! Reloads: from the file (what SIGHUP does), refused reloads keep the running config, and
//! reloads under load lose no request.
mod ops_support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use ops_support::*;
use scalewise_gateway::config_file::Format;
use scalewise_gateway::server::{ReloadError, StartOptions};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn sighup_reload_rereads_the_file_and_keeps_the_old_config_on_error() {
    let (a, b) = (backend("a").await, backend("b").await);
    let dir = scratch_dir("sighup");
    let path = dir.join("gw.toml");
    let text = toml_config(&[a.addr], "");
    std::fs::write(&path, &text).unwrap();
    let options = StartOptions {
        config_path: Some(path.clone()),
        ..Default::default()
    };
    let cfg = scalewise_gateway::config_file::load_config(&path).unwrap();
    let (gw, listen, _admin) = start(cfg, options).await;
    let ctl = gw.controller().clone();
    assert!(names(listen, 3).await.iter().all(|n| n == "a"));

    // A new backend is picked up.
    std::fs::write(&path, toml_config(&[a.addr, b.addr], "")).unwrap();
    ctl.reload_from_file().await.unwrap();
    let seen = names(listen, 6).await;
    assert!(
        seen.contains(&"b".into()) && seen.contains(&"a".into()),
        "{seen:?}"
    );

    // A broken file: refused with file, line and key; traffic continues on the old config.
    let broken =
        toml_config(&[b.addr], "").replace("[upstreams.app]", "[upstreams.app]\nweight = 3");
    std::fs::write(&path, broken).unwrap();
    let err = ctl.reload_from_file().await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ReloadError::Invalid(_)), "{msg}");
    assert!(
        msg.contains("gw.toml:9:1: key `upstreams.app.weight`"),
        "{msg}"
    );
    let seen = names(listen, 6).await;
    assert!(seen.contains(&"a".into()), "{seen:?}");

    // A fixed key (listener address) changed: refused, old config kept.
    let moved = toml_config(&[b.addr], "")
        .replace("127.0.0.1:0\"\n\n[[routes]]", "127.0.0.1:1\"\n\n[[routes]]");
    std::fs::write(&path, moved).unwrap();
    let err = ctl.reload_from_file().await.unwrap_err();
    assert!(matches!(err, ReloadError::Fixed(_)), "{err}");
    assert!(err.to_string().contains("restart"), "{err}");
    assert!(names(listen, 6).await.contains(&"a".into()));
    assert_eq!(ctl.config().upstreams["app"].backends.len(), 2);

    // Per-request listener settings may change.
    let text = toml_config(&[a.addr, b.addr], "").replace(
        "name = \"main\"",
        "name = \"main\"\nrequest_timeout = \"7s\"",
    );
    std::fs::write(&path, text).unwrap();
    ctl.reload_from_file().await.unwrap();
    assert_eq!(
        ctl.config().listeners[0].request_timeout,
        Duration::from_secs(7)
    );
    drop(gw);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn reload_without_a_file_is_refused() {
    let a = backend("a").await;
    let (gw, _listen, _admin) =
        start(parse(&toml_config(&[a.addr], "")), StartOptions::default()).await;
    let err = gw.controller().reload_from_file().await.unwrap_err();
    assert!(matches!(err, ReloadError::NoFile), "{err}");
}

/// Clients on keep-alive connections send requests without pause while the config is
/// replaced 20 times (backends added and removed, through the API and the admin endpoint);
/// every request must succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_request() {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let sets = [
        vec![a.addr, b.addr],
        vec![b.addr, c.addr],
        vec![a.addr, b.addr, c.addr],
        vec![c.addr],
    ];
    let (gw, listen, admin) =
        start(parse(&toml_config(&sets[0], "")), StartOptions::default()).await;
    let ctl = gw.controller().clone();

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(listen).await.unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                let req = hyper::Request::get("/")
                    .header("host", "gw")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let result = async {
                    send.ready().await?;
                    let resp = send.send_request(req).await?;
                    let status = resp.status();
                    resp.into_body().collect().await?;
                    Ok::<_, hyper::Error>(status)
                }
                .await;
                match result {
                    Ok(StatusCode::OK) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        eprintln!("failed request: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    for i in 0..20 {
        // Let traffic flow between reloads (progress, not time, is the condition).
        let target = ok.load(Ordering::Relaxed) + 20;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while ok.load(Ordering::Relaxed) < target {
            assert!(tokio::time::Instant::now() < deadline, "no progress");
            tokio::task::yield_now().await;
        }
        let text = toml_config(&sets[(i + 1) % sets.len()], "");
        if i % 2 == 0 {
            ctl.reload_from_text(&text, Format::Toml).await.unwrap();
        } else {
            let (status, body) = request(admin, "PUT", "/api/config", &[], &text)
                .await
                .unwrap();
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        tokio::time::timeout(Duration::from_secs(10), c)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(ok.load(Ordering::Relaxed) >= 400);
    let status = get_json(admin, "/api/status").await;
    assert_eq!(status["reloads"], 20);
}
