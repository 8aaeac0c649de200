//! Throughput of the Redis-global limiter: N concurrent checks over one multiplexed
//! connection.
//!
//! `cargo run --release -p scalewise --features redis --example redis_rate -- [URL] [SECONDS] [CONCURRENCY]`
//! (defaults `redis://127.0.0.1:6379/`, 3, 256).
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use scalewise::ratelimit::redis::{Mode, RedisAlgorithm, RedisLimiterConfig, RedisRateLimiter};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".to_string());
    let secs: u64 = args.next().map_or(Ok(3), |s| s.parse())?;
    let concurrency: usize = args.next().map_or(Ok(256), |s| s.parse())?;

    for algorithm in [
        RedisAlgorithm::Gcra,
        RedisAlgorithm::SlidingWindow,
        RedisAlgorithm::TokenBucket,
    ] {
        let mut config = RedisLimiterConfig::new(url.clone(), "1000/s".parse()?);
        config.algorithm = algorithm;
        config.prefix = format!("bench:{}:{algorithm:?}:", std::process::id());
        config.timeout = Some(Duration::from_secs(1));
        let limiter = RedisRateLimiter::connect(config).await?;

        let done = Arc::new(AtomicBool::new(false));
        let checks = Arc::new(AtomicU64::new(0));
        let allowed = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|t| {
                let (limiter, done, checks, allowed) = (
                    limiter.clone(),
                    done.clone(),
                    checks.clone(),
                    allowed.clone(),
                );
                tokio::spawn(async move {
                    let key = format!("client-{}", t % 1000);
                    while !done.load(Ordering::Relaxed) {
                        let d = limiter.check(&key).await;
                        checks.fetch_add(1, Ordering::Relaxed);
                        allowed.fetch_add(u64::from(d.allowed), Ordering::Relaxed);
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        done.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await?;
        }
        let elapsed = start.elapsed().as_secs_f64();
        let n = checks.load(Ordering::Relaxed);
        println!(
            "{algorithm:?}: {n} checks in {elapsed:.2} s = {:.0} checks/s ({} allowed, concurrency {concurrency}, mode {:?})",
            n as f64 / elapsed,
            allowed.load(Ordering::Relaxed),
            limiter.mode(),
        );
        if limiter.mode() != Mode::Redis {
            println!("warning: fell back during the run; figures are not Redis figures");
        }
    }
    Ok(())
}
