//! A WebSocket echo server for benchmarks (`bench/ws.sh`): every text or binary message
//! is sent straight back. Runs on one current-thread runtime so the backend costs the same
//! in every side-by-side run.
//!
//! ```sh
//! cargo run --release -p scalewise-gateway --example ws_echo -- 127.0.0.1:9011
//! ```
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9011".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("ws_echo listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            let (mut tx, mut rx) = ws.split();
            while let Some(Ok(msg)) = rx.next().await {
                if (msg.is_text() || msg.is_binary()) && tx.send(msg).await.is_err() {
                    break;
                }
            }
        });
    }
}
