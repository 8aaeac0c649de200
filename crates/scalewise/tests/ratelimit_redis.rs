//! The Redis store against a real `redis-server` started here on a free port: a shared
//! global limit, fallback when the server dies, and recovery when it comes back.
//!
//! Without `redis-server` on the PATH the test prints SKIP and passes, unless
//! `SCALEWISE_REQUIRE_SERVICES=1`, when it fails.
#![cfg(feature = "redis")]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use scalewise::breaker::{BreakerConfig, WindowConfig};
use scalewise::ratelimit::redis::{
    Fallback, Mode, RedisAlgorithm, RedisLimiterConfig, RedisRateLimiter,
};

/// Generous limit on any single check: a hang fails the test instead of blocking it.
const CHECK_LIMIT: Duration = Duration::from_secs(2);

struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start(port: u16) -> std::io::Result<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let server = Self { child, port };
        // Wait (bounded) until it accepts connections.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

fn start_or_skip() -> Option<RedisServer> {
    match RedisServer::start(free_port()) {
        Ok(s) => Some(s),
        Err(e) => {
            if std::env::var("SCALEWISE_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!(
                    "redis-server is required (SCALEWISE_REQUIRE_SERVICES=1) but cannot start: {e}"
                );
            }
            eprintln!("\n*** SKIP ratelimit_redis: cannot start redis-server ({e}) ***\n");
            None
        }
    }
}

fn config(
    url: &str,
    prefix: &str,
    algorithm: RedisAlgorithm,
    fallback: Fallback,
) -> RedisLimiterConfig {
    let mut c = RedisLimiterConfig::new(url, "10/min".parse().unwrap());
    c.prefix = prefix.to_string();
    c.algorithm = algorithm;
    c.fallback = fallback;
    c.timeout = Some(Duration::from_millis(250));
    c.breaker = BreakerConfig {
        window: WindowConfig::Count { size: 1 },
        minimum_calls: 1,
        open_duration: Duration::from_millis(100),
        max_open_duration: Duration::from_millis(400),
        half_open_permitted_calls: 1,
        ..BreakerConfig::default()
    };
    c
}

async fn check(l: &RedisRateLimiter, key: &str) -> scalewise::ratelimit::Decision {
    tokio::time::timeout(CHECK_LIMIT, l.check(key))
        .await
        .expect("a check must return within its timeout, whatever Redis does")
}

fn unique_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test:{name}:{}:{nanos}:", std::process::id())
}

/// Alternates checks between two instances; returns how many each admitted.
async fn admitted_by_pair(
    a: &RedisRateLimiter,
    b: &RedisRateLimiter,
    key: &str,
    tries: usize,
) -> (usize, usize) {
    let (mut na, mut nb) = (0, 0);
    for i in 0..tries {
        if i % 2 == 0 {
            na += usize::from(check(a, key).await.allowed);
        } else {
            nb += usize::from(check(b, key).await.allowed);
        }
    }
    (na, nb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_limit_fallback_and_recovery() {
    let Some(mut server) = start_or_skip() else {
        return;
    };
    let url = server.url();
    let port = server.port;

    // Two instances (two "gateways") share one limit of 10 per minute, for every script.
    for algorithm in [
        RedisAlgorithm::Gcra,
        RedisAlgorithm::SlidingWindow,
        RedisAlgorithm::TokenBucket,
    ] {
        let prefix = unique_prefix(&format!("{algorithm:?}"));
        let fallback = Fallback::Local { share: 0.5 };
        let a = RedisRateLimiter::connect(config(&url, &prefix, algorithm, fallback))
            .await
            .unwrap();
        let b = RedisRateLimiter::connect(config(&url, &prefix, algorithm, fallback))
            .await
            .unwrap();
        let (na, nb) = admitted_by_pair(&a, &b, "client", 30).await;
        assert_eq!(na + nb, 10, "{algorithm:?}: the pair admitted {na} + {nb}");
        assert!(na > 0 && nb > 0, "both instances draw from the same limit");
        let d = check(&a, "client").await;
        assert!(!d.allowed);
        assert_eq!((d.limit, d.remaining), (10, 0));
        // GCRA: one emission interval (6 s); sliding window: up to the rest of this window
        // plus the decay of the previous one.
        assert!(d.retry_after > Duration::ZERO && d.retry_after <= Duration::from_secs(120));
        // Other keys are independent.
        assert!(check(&b, "other").await.allowed);
        assert_eq!(a.mode(), Mode::Redis);
    }

    // A slow Redis (every client paused for 1.5 s): checks time out into the fallback
    // instead of waiting, and Redis takes over again once it answers.
    {
        let prefix = unique_prefix("slow");
        let slow = RedisRateLimiter::connect(config(
            &url,
            &prefix,
            RedisAlgorithm::Gcra,
            Fallback::FailClosed,
        ))
        .await
        .unwrap();
        assert!(check(&slow, "k").await.allowed);
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut admin = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(1500)
            .arg("ALL")
            .query_async(&mut admin)
            .await
            .unwrap();
        let d = check(&slow, "k").await;
        assert!(!d.allowed, "timed out into fail-closed");
        assert_eq!(slow.mode(), Mode::Fallback);
        let stats = slow.stats();
        assert_eq!((stats.redis, stats.timeouts, stats.fallback), (1, 1, 1));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            check(&slow, "k").await;
            if slow.mode() == Mode::Redis {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "did not return to Redis after the pause"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    let prefix = unique_prefix("failover");
    let a = RedisRateLimiter::connect(config(
        &url,
        &prefix,
        RedisAlgorithm::Gcra,
        Fallback::Local { share: 0.5 },
    ))
    .await
    .unwrap();
    let b = RedisRateLimiter::connect(config(
        &url,
        &prefix,
        RedisAlgorithm::Gcra,
        Fallback::Local { share: 0.5 },
    ))
    .await
    .unwrap();
    let closed = RedisRateLimiter::connect(config(
        &url,
        &prefix,
        RedisAlgorithm::Gcra,
        Fallback::FailClosed,
    ))
    .await
    .unwrap();
    let open = RedisRateLimiter::connect(config(
        &url,
        &prefix,
        RedisAlgorithm::Gcra,
        Fallback::FailOpen,
    ))
    .await
    .unwrap();
    assert!(check(&a, "warm").await.allowed);

    // Kill the server mid-test.
    server.kill();
    let mut admitted = 0;
    for _ in 0..20 {
        admitted += usize::from(check(&a, "during-outage").await.allowed);
    }
    assert_eq!(a.mode(), Mode::Fallback);
    // Local fallback at half of 10: exactly 5, however often the breaker probed meanwhile.
    assert_eq!(admitted, 5, "local fallback admitted {admitted}");
    let d = check(&closed, "x").await;
    assert!(!d.allowed, "fail-closed denies while Redis is down");
    assert!(d.retry_after > Duration::ZERO);
    assert!(
        check(&open, "x").await.allowed,
        "fail-open admits while Redis is down"
    );
    assert_eq!(closed.mode(), Mode::Fallback);
    let stats = a.stats();
    assert!(
        stats.fallback >= 20 && stats.errors + stats.timeouts >= 1,
        "{stats:?}"
    );

    // Restart on the same port: the limiters find their way back without help.
    let _server = RedisServer::start(port).expect("restart redis-server");
    for l in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(15);
        // `b` has not noticed the outage yet: its first check fails over, later ones probe.
        loop {
            check(l, "probe").await;
            if l.mode() == Mode::Redis {
                break;
            }
            assert!(Instant::now() < deadline, "did not return to Redis");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    // Redis decides again: the pair shares one fresh global limit.
    let (na, nb) = admitted_by_pair(&a, &b, "after-restart", 30).await;
    assert_eq!(na + nb, 10, "after restart the pair admitted {na} + {nb}");
    assert_eq!(a.mode(), Mode::Redis);
}

#[tokio::test]
async fn connect_to_nothing_fails_fast_with_a_clear_error() {
    let port = free_port();
    let mut c =
        RedisLimiterConfig::new(format!("redis://127.0.0.1:{port}/"), "1/s".parse().unwrap());
    c.timeout = Some(Duration::from_millis(200));
    let err = tokio::time::timeout(CHECK_LIMIT * 2, RedisRateLimiter::connect(c))
        .await
        .expect("bounded")
        .unwrap_err();
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    let mut c = RedisLimiterConfig::new("redis://127.0.0.1:1/", "1/s".parse().unwrap());
    c.fallback = Fallback::Local { share: 1.5 };
    let err = RedisRateLimiter::connect(c).await.unwrap_err();
    assert!(err.to_string().contains("share"), "{err}");
}
