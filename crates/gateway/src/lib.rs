//! `scalewise gateway`: an L7 load-balancing reverse proxy for HTTP/1.1, HTTP/2 and
//! WebSocket, built on the [`scalewise`] library. (Being built: see issue 2.)
#![forbid(unsafe_code)]

pub mod config;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod route;
pub mod state;
pub mod tls;

/// Command-line arguments of `scalewise gateway`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to accept client connections on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// A backend address; repeat for several.
    #[arg(long = "backend")]
    pub backends: Vec<std::net::SocketAddr>,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
}

/// Runs the gateway until it is told to stop.
///
/// # Errors
/// Invalid configuration, or a listener that cannot bind.
pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::bail!("gateway not built yet ({args:?})")
}
