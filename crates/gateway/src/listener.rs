//! TEMPORARY stand-in for the data path's listener (owned by the `gateway` branch).
use crate::config::ListenerConfig;
use crate::state::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Stand-in.
#[derive(Debug)]
pub struct Listening {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Listening {
    /// Stand-in.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    /// Stand-in.
    pub async fn drained(self) {
        let _ = self.task.await;
    }
}

/// Stand-in.
///
/// # Errors
/// Bind failure.
pub async fn serve(
    cfg: ListenerConfig,
    _shared: Arc<Shared>,
    token: CancellationToken,
) -> std::io::Result<Listening> {
    let l = tokio::net::TcpListener::bind(cfg.addr).await?;
    let addr = l.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                r = l.accept() => { drop(r); }
            }
        }
    });
    Ok(Listening { addr, task })
}
