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

/// How [`failing_ws_server`] breaks a session after a successful handshake, on the first
/// message it receives (or at once, for a subscriber that sent nothing).
#[derive(Clone, Copy, Debug)]
enum Failure {
    /// A close frame with code 1011 and a reason.
    Close,
    /// A frame with a reserved bit set: a protocol error on the client's side.
    BadFrame,
    /// The TCP connection reset (zero linger, then dropped).
    Reset,
    /// Reads and never answers: the client's wait for a reply times out.
    Silence,
}

async fn failing_ws_server(failure: Failure) -> std::net::SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::Message;
    common::ws_server_with(move |mut ws| async move {
        // The client's first message (echo and subscribe both send one).
        let Some(Ok(_)) = ws.next().await else { return };
        match failure {
            Failure::Close => {
                let frame = CloseFrame {
                    code: CloseCode::Error,
                    reason: "overloaded".into(),
                };
                let _ = ws.send(Message::Close(Some(frame))).await;
                while let Some(Ok(_)) = ws.next().await {}
            }
            Failure::BadFrame => {
                // FIN + RSV1 + text opcode, empty payload: RSV1 without a negotiated
                // extension is a protocol violation.
                let _ = ws.get_mut().write_all(&[0xC1, 0x00]).await;
                while let Some(Ok(_)) = ws.next().await {}
            }
            Failure::Reset => {
                let _ = ws.get_ref().set_zero_linger();
                drop(ws);
            }
            Failure::Silence => while let Some(Ok(_)) = ws.next().await {},
        }
    })
    .await
}

/// A run against a server that fails every session with `failure`: (the error category's
/// count, its first message).
async fn failing_run(failure: Failure, mode: &str) -> (scalewise_load::Report, String, String) {
    let addr = failing_ws_server(failure).await;
    let mut a = LoadArgs::new(format!("ws://{addr}/"));
    a.connections = 1;
    a.requests = Some(3);
    a.ws_mode = mode.into();
    a.ws_message = Some("hello".into());
    a.timeout = "300ms".into();
    let r = load(&a).await.unwrap();
    assert!(r.errors.total > 0, "{failure:?}: {:?}", r.errors);
    assert_eq!(r.error_messages.len(), 1, "{:?}", r.error_messages);
    let (kind, m) = r.error_messages.iter().next().unwrap();
    let (kind, m) = (kind.clone(), m.clone());
    (r, kind, m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_failures_after_the_handshake_say_why_in_both_modes() {
    for mode in ["echo", "subscribe"] {
        let (r, kind, m) = failing_run(Failure::Close, mode).await;
        assert_eq!(
            (kind.as_str(), m.as_str()),
            (
                "reset",
                "WebSocket closed by the server: code 1011, reason \"overloaded\""
            ),
            "{mode}"
        );
        assert!(
            r.text()
                .contains("first reset     WebSocket closed by the server: code 1011"),
            "{}",
            r.text()
        );
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["error_messages"]["reset"].is_string());

        let (_, kind, m) = failing_run(Failure::BadFrame, mode).await;
        assert_eq!(kind, "protocol", "{mode}: {m}");
        assert!(
            m.starts_with("WebSocket recv: ") && m.contains("eserved"),
            "{mode}: {m}"
        );

        let (_, kind, m) = failing_run(Failure::Reset, mode).await;
        assert_eq!(kind, "reset", "{mode}: {m}");
        assert!(m.starts_with("WebSocket recv: "), "{mode}: {m}");
    }
    // Echo waits for each reply within --timeout.
    let (_, kind, m) = failing_run(Failure::Silence, "echo").await;
    assert_eq!(kind, "timeout");
    assert_eq!(
        m,
        "WebSocket echo (send, then await the reply): nothing within 300ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_websocket_steps_say_why_they_failed() {
    for (failure, kind, why) in [
        (
            Failure::Close,
            "reset",
            "WebSocket closed by the server: code 1011, reason \"overloaded\"",
        ),
        (
            Failure::Silence,
            "timeout",
            "WebSocket recv: nothing within 200ms",
        ),
    ] {
        let addr = failing_ws_server(failure).await;
        let file = common::temp_path("ws-failing.toml");
        std::fs::write(
            &file,
            format!(
                "[[steps]]\nname = \"chat\"\nws = \"ws://{addr}/\"\n\
                 [[steps.actions]]\nsend = \"hi\"\n\
                 [[steps.actions]]\nrecv = \"reply\"\ntimeout = \"200ms\"\n"
            ),
        )
        .unwrap();
        let mut a = LoadArgs::new("unused");
        a.url = None;
        a.scenario = Some(file.clone());
        a.connections = 1;
        a.requests = Some(2);
        let r = load(&a).await.unwrap();
        let _ = std::fs::remove_file(file);
        assert!(r.errors.total > 0, "{failure:?}: {:?}", r.errors);
        assert_eq!(
            r.error_messages.get(kind).map(String::as_str),
            Some(why),
            "{failure:?}: {:?}",
            r.error_messages
        );
    }
}

/// A subscription server whose one message is stamped 90 s in the past (a backlog being
/// replayed, say) and which then closes the session: a latency beyond 60 s without waiting
/// for one.
async fn stale_message_server() -> std::net::SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    common::ws_server_with(move |mut ws| async move {
        let Some(Ok(_)) = ws.next().await else { return };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let ts = (now - std::time::Duration::from_secs(90)).as_micros();
        let _ = ws.send(Message::Text(format!("{{\"ts_us\":{ts}}}"))).await;
        let _ = ws.close(None).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latencies_beyond_60_s_are_kept_when_the_timeout_is_longer() {
    let addr = stale_message_server().await;
    let mut a = LoadArgs::new(format!("ws://{addr}/"));
    a.connections = 1;
    a.requests = Some(1);
    a.ws_mode = "subscribe".into();
    a.ws_message = Some("subscribe".into());
    a.timeout = "2m".into();
    let r = load(&a).await.unwrap();
    assert_eq!(r.websocket.unwrap().messages_received, 1);
    // 90 s and however long it took to arrive; the default range would report 60 s.
    assert!(
        (89_000.0..120_000.0).contains(&r.latency.max_ms),
        "{}",
        r.latency.max_ms
    );
}
