//! WebSocket load against an in-process tokio-tungstenite server.

mod common;

use scalewise_load::{load, LoadArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_run_measures_round_trips() {
    let addr = common::ws_server().await;
    let mut a = LoadArgs::new(format!("ws://{addr}/"));
    a.connections = 20;
    a.requests = Some(400);
    a.ws_message = Some("hello".into());
    let r = load(&a).await.unwrap();
    assert_eq!(r.protocol, "websocket");
    assert_eq!(r.requests, 400);
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    let ws = r.websocket.unwrap();
    assert_eq!(
        (ws.mode.as_str(), ws.messages_sent, ws.messages_received),
        ("echo", 400, 400)
    );
    assert_eq!(r.bytes, 400 * 5);
    assert!(r.p50_ms > 0.0 && r.p99_ms >= r.p50_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_subscribe_counts_messages_and_timestamp_latency() {
    let addr = common::ws_server().await;
    let mut a = LoadArgs::new(format!("ws://{addr}/"));
    a.connections = 3;
    a.duration = Some("500ms".into());
    a.ws_mode = "subscribe".into();
    a.ws_message = Some("subscribe".into());
    let r = load(&a).await.unwrap();
    let ws = r.websocket.unwrap();
    assert_eq!(ws.mode, "subscribe");
    assert_eq!(ws.messages_sent, 3);
    // The server sends one message every 5 ms per connection: ~100 per connection in 0.5 s.
    assert!(ws.messages_received > 100, "{}", ws.messages_received);
    assert!(ws.messages_per_s > 0.0);
    // Latency comes from the `ts_us` field; on loopback it is small but recorded for every message.
    assert!(r.latency.max_ms < 1000.0, "{}", r.latency.max_ms);
    assert!(r.percentiles.len() > 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_websocket_echo_run() {
    let (addr, pem) = common::wss_server().await;
    let ca = common::temp_path("wss.pem");
    std::fs::write(&ca, pem).unwrap();
    let mut a = LoadArgs::new(format!("wss://{addr}/"));
    a.connections = 4;
    a.requests = Some(100);
    a.cacert = Some(ca.clone());
    let r = load(&a).await.unwrap();
    assert_eq!((r.requests, r.errors.total), (100, 0), "{:?}", r.errors);
    assert_eq!(r.websocket.unwrap().messages_received, 100);
    let _ = std::fs::remove_file(ca);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_bad_mode_is_a_config_error() {
    let addr = common::ws_server().await;
    let mut a = LoadArgs::new(format!("ws://{addr}/"));
    a.ws_mode = "shout".into();
    assert!(load(&a)
        .await
        .unwrap_err()
        .to_string()
        .contains("--ws-mode"));
}
