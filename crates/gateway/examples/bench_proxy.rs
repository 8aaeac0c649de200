//! A bare gateway for quick throughput checks of the data path, without the CLI around it.
//!
//! ```text
//! cargo build --release -p scalewise-gateway --example bench_proxy
//! # WORKERS=1 target/release/examples/bench_proxy LISTEN BACKEND [BACKEND...]
//! bash ../shared/bench/proxy_anchor.sh 10 \
//!   "WORKERS=1 target/release/examples/bench_proxy 127.0.0.1:9082 127.0.0.1:9001 127.0.0.1:9002"
//! ```
//! `WORKERS` sets the runtime's worker threads (default 1, like `--workers 1`; one worker
//! runs a current-thread runtime unless `RUNTIME=multi`), `ALGORITHM` the balancing algorithm
//! (default `round_robin`), `HTTP2=0` turns off HTTP/2 detection.
use scalewise_gateway::config::{AlgorithmName, Config};
use scalewise_gateway::listener;
use scalewise_gateway::metrics::GatewayMetrics;
use scalewise_gateway::state::Shared;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .ok_or("usage: bench_proxy LISTEN BACKEND...")?
        .parse()?;
    let backends: Vec<SocketAddr> = args.map(|a| a.parse()).collect::<Result<_, _>>()?;
    let workers: usize = std::env::var("WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1);
    let algorithm: AlgorithmName = std::env::var("ALGORITHM")
        .unwrap_or_else(|_| "round_robin".into())
        .parse()?;
    let mut config = Config::from_backends(listen, backends, algorithm);
    config.listeners[0].backlog = 4096;
    config.listeners[0].http2 = std::env::var("HTTP2").map_or(true, |v| v != "0");
    // One worker: a current-thread runtime has no work-stealing bookkeeping at all.
    let rt = if workers == 1 && std::env::var("RUNTIME").map_or(true, |v| v != "multi") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        let shared = Shared::new(config.clone(), GatewayMetrics::new())?;
        let stop = CancellationToken::new();
        let l = listener::serve(&config.listeners[0], shared, stop.clone())?;
        eprintln!("bench_proxy listening on {}", l.local_addr);
        tokio::signal::ctrl_c().await?;
        stop.cancel();
        l.join.await?;
        Ok(())
    })
}
