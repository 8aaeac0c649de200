//! `scalewise bench`: the benchmark suite.

use crate::{BenchArgs, LoadError};

/// Runs the suite; returns the exit code.
///
/// # Errors
/// Bad arguments or an unreachable target.
pub async fn run(args: BenchArgs) -> Result<i32, LoadError> {
    Err(LoadError::Config(format!(
        "bench not built yet ({})",
        args.url
    )))
}
