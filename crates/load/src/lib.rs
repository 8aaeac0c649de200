//! `scalewise load` and `scalewise bench`: the load generator and benchmark suite.
//! (Being built: see issue 4.)
#![forbid(unsafe_code)]

/// Command-line arguments of `scalewise load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Target URL.
    pub url: String,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Command-line arguments of `scalewise bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Target URL.
    pub url: String,
}

/// Runs `scalewise load`; returns the process exit code.
///
/// # Errors
/// Bad arguments or an unreachable target.
pub async fn run_load(args: LoadArgs) -> anyhow::Result<i32> {
    anyhow::bail!("load not built yet ({args:?})")
}

/// Runs `scalewise bench`; returns the process exit code.
///
/// # Errors
/// Bad arguments or an unreachable target.
pub async fn run_bench(args: BenchArgs) -> anyhow::Result<i32> {
    anyhow::bail!("bench not built yet ({args:?})")
}
