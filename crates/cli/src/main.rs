//! The `scalewise` command. Thin on purpose: parse arguments, build a runtime, hand over to
//! the product crates.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "scalewise",
    version,
    about = "A toolkit that makes services scale"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the L7 load-balancing reverse proxy.
    Gateway(scalewise_gateway::Args),
    /// Generate load against a URL and report latency and throughput.
    Load(Box<scalewise_load::LoadArgs>),
    /// Run the benchmark suite (capacity, throughput, latency, scalability) against a URL.
    Bench(Box<scalewise_load::BenchArgs>),
}

// jemalloc instead of glibc malloc: the gateway allocates and frees a few blocks per request
// (the boxed pipeline future is larger than glibc's per-thread cache takes, so it went through
// the arena and its consolidation every time). Profiled under bench/proxy.sh, allocator time
// fell from ~2.7% to ~1.2% of the gateway's CPU; idle memory for 10k keep-alive connections
// stays ~40 MiB.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gateway(args) => {
            let workers = args.workers;
            runtime(workers).and_then(|rt| rt.block_on(scalewise_gateway::run(args)).map(|()| 0))
        }
        Command::Load(args) => {
            let threads = args.threads;
            runtime(threads).and_then(|rt| rt.block_on(scalewise_load::run_load(*args)))
        }
        Command::Bench(args) => {
            runtime(None).and_then(|rt| rt.block_on(scalewise_load::run_bench(*args)))
        }
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(err) => {
            eprintln!("scalewise: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// A runtime with `workers` threads (default: one per core). One worker gets the
/// current-thread scheduler: no work stealing and no cross-thread wake-ups, which is faster
/// when there is only one thread to run on anyway.
fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    Ok(builder.enable_all().build()?)
}
