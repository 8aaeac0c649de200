//! A tiny HTTP/1.1 server for the health tests: it answers every request with the status
//! currently stored in `status`, so a test flips a backend between healthy and failing.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Status the server answers with; 0 = accept and never answer; 1 = answer garbage.
pub struct StatusServer {
    pub addr: SocketAddr,
    pub status: Arc<AtomicU16>,
    task: JoinHandle<()>,
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a server on an ephemeral loopback port. With `expect_path`, a request for any other
/// path fails an assertion (the connection then gets no answer).
pub async fn status_server(status: u16, expect_path: Option<&'static str>) -> StatusServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let status = Arc::new(AtomicU16::new(status));
    let st = status.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let st = st.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 512];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                if let Some(path) = expect_path {
                    let line = format!("GET {path} HTTP/1.1\r\n");
                    assert!(buf.starts_with(line.as_bytes()));
                }
                match st.load(Ordering::SeqCst) {
                    0 => std::future::pending::<()>().await,
                    1 => {
                        let _ = sock.write_all(b"garbage\r\n\r\n").await;
                    }
                    s => {
                        let resp = format!(
                            "HTTP/1.1 {s} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                        let _ = sock.write_all(resp.as_bytes()).await;
                    }
                }
            });
        }
    });
    StatusServer { addr, status, task }
}
