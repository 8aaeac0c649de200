//! Active health checks against real loopback TCP and HTTP servers.
//!
//! Rounds are driven with `check_round` so state transitions are exact; one test runs the
//! spawned task on a short interval and waits for state changes on its round counter.
mod common;

use common::status_server;
use scalewise::balance::{EndpointConfig, HealthStatus, PickContext, Upstream};
use scalewise::health::{
    check_round, probe, ActiveCheckConfig, ActiveHealthChecks, CheckError, HealthConfig,
    StatusRange,
};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;

fn http_cfg() -> ActiveCheckConfig {
    ActiveCheckConfig {
        path: "/healthz".into(),
        timeout: Duration::from_millis(500),
        interval: Duration::from_millis(10),
        rise: 2,
        fall: 2,
        ..ActiveCheckConfig::default()
    }
}

fn upstream(addrs: &[SocketAddr], cfg: &ActiveCheckConfig) -> Upstream {
    Upstream::builder("t")
        .health(HealthConfig {
            active: Some(cfg.clone()),
            ..Default::default()
        })
        .endpoints(addrs.iter().map(|&a| EndpointConfig::new(a)))
        .build()
}

fn selectable(up: &Upstream) -> bool {
    match up.select(&PickContext::default()) {
        Ok(s) => {
            drop(s);
            true
        }
        Err(_) => false,
    }
}

#[tokio::test]
async fn tcp_check_follows_listener_going_away_and_back() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = ActiveCheckConfig {
        timeout: Duration::from_secs(2),
        rise: 2,
        fall: 2,
        ..ActiveCheckConfig::tcp()
    };
    let up = upstream(&[addr], &cfg);
    let e = up.endpoints()[0].clone();

    // No traffic before the first check passes.
    assert_eq!(e.health(), HealthStatus::Unknown);
    assert!(!selectable(&up));
    check_round(&up, &cfg).await;
    assert_eq!(e.health(), HealthStatus::Healthy);
    assert!(selectable(&up));

    drop(listener);
    check_round(&up, &cfg).await;
    assert_eq!(
        e.health(),
        HealthStatus::Healthy,
        "one failure is below fall=2"
    );
    check_round(&up, &cfg).await;
    assert_eq!(e.health(), HealthStatus::Unhealthy);
    assert!(!selectable(&up));
    let err = e.snapshot().last_check_error.unwrap();
    assert!(err.contains("connect failed"), "{err}");

    let _listener = TcpListener::bind(addr).await.unwrap();
    check_round(&up, &cfg).await;
    assert_eq!(
        e.health(),
        HealthStatus::Unhealthy,
        "one pass is below rise=2"
    );
    check_round(&up, &cfg).await;
    assert_eq!(e.health(), HealthStatus::Healthy);
    assert!(selectable(&up));
    assert_eq!(e.snapshot().last_check_error, None);
}

#[tokio::test]
async fn http_check_expected_status_fall_and_rise() {
    let server = status_server(200, Some("/healthz")).await;
    let cfg = http_cfg();
    let up = upstream(&[server.addr], &cfg);
    let e = up.endpoints()[0].clone();
    check_round(&up, &cfg).await;
    assert_eq!(e.health(), HealthStatus::Healthy);

    server.status.store(503, Ordering::SeqCst);
    check_round(&up, &cfg).await;
    assert_eq!(e.health(), HealthStatus::Healthy);
    check_round(&up, &cfg).await;
    assert_eq!(e.health(), HealthStatus::Unhealthy);
    assert_eq!(
        e.snapshot().last_check_error.as_deref(),
        Some("unexpected status 503")
    );

    server.status.store(204, Ordering::SeqCst);
    check_round(&up, &cfg).await;
    assert_eq!(e.health(), HealthStatus::Unhealthy);
    check_round(&up, &cfg).await;
    assert_eq!(e.health(), HealthStatus::Healthy);

    // A redirect is fine by default but not for a 2xx-only range.
    server.status.store(302, Ordering::SeqCst);
    assert!(probe(server.addr, &cfg).await.is_ok());
    let strict = ActiveCheckConfig {
        expected_status: "200-299".parse::<StatusRange>().unwrap(),
        ..cfg.clone()
    };
    assert!(matches!(
        probe(server.addr, &strict).await,
        Err(CheckError::Status(302))
    ));
}

#[tokio::test]
async fn http_check_times_out_on_hanging_backend_and_rejects_garbage() {
    let server = status_server(0, Some("/healthz")).await;
    let cfg = ActiveCheckConfig {
        timeout: Duration::from_millis(100),
        ..http_cfg()
    };
    assert!(matches!(
        probe(server.addr, &cfg).await,
        Err(CheckError::Timeout)
    ));
    let up = upstream(&[server.addr], &cfg);
    check_round(&up, &cfg).await;
    assert_eq!(up.endpoints()[0].health(), HealthStatus::Unhealthy);

    server.status.store(1, Ordering::SeqCst);
    assert!(matches!(
        probe(server.addr, &cfg).await,
        Err(CheckError::BadResponse)
    ));
}

#[tokio::test]
async fn healthy_on_start_and_reloaded_backends() {
    let a = status_server(200, Some("/healthz")).await;
    let b = status_server(200, Some("/healthz")).await;
    let cfg = http_cfg();
    let up = Upstream::builder("t")
        .health(HealthConfig {
            active: Some(cfg.clone()),
            healthy_on_start: true,
            ..Default::default()
        })
        .endpoint(EndpointConfig::new(a.addr))
        .build();
    assert!(selectable(&up));

    // Switch the setting off: a backend added by reload now waits for its first check.
    up.set_health_config(HealthConfig {
        active: Some(cfg.clone()),
        ..Default::default()
    });
    up.update(vec![
        EndpointConfig::new(a.addr),
        EndpointConfig::new(b.addr),
    ]);
    let added = up.endpoints()[1].clone();
    assert_eq!(added.health(), HealthStatus::Unknown);
    for _ in 0..10 {
        let s = up.select(&PickContext::default()).unwrap();
        assert_eq!(s.endpoint().addr(), a.addr);
    }
    check_round(&up, &cfg).await;
    assert_eq!(added.health(), HealthStatus::Healthy);
}

/// Waits (bounded) until `cond` holds after some check round.
async fn wait_for(checks: &ActiveHealthChecks, cond: impl Fn() -> bool) {
    let mut rounds = checks.rounds();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !cond() {
            rounds.changed().await.expect("checker stopped");
        }
    })
    .await
    .expect("state change within 10s");
}

#[tokio::test]
async fn spawned_checks_mark_down_and_up() {
    let server = status_server(200, Some("/healthz")).await;
    let cfg = http_cfg();
    let up = upstream(&[server.addr], &cfg);
    let e = up.endpoints()[0].clone();
    let checks = ActiveHealthChecks::spawn(up.clone(), cfg);
    wait_for(&checks, || e.health() == HealthStatus::Healthy).await;
    server.status.store(500, Ordering::SeqCst);
    wait_for(&checks, || e.health() == HealthStatus::Unhealthy).await;
    assert!(!selectable(&up));
    server.status.store(200, Ordering::SeqCst);
    wait_for(&checks, || e.health() == HealthStatus::Healthy).await;
    assert!(selectable(&up));

    let mut rounds = checks.rounds();
    checks.stop();
    // The task is gone: the round counter's sender is dropped.
    tokio::time::timeout(Duration::from_secs(10), async {
        while rounds.changed().await.is_ok() {}
    })
    .await
    .expect("checker stopped");
}

/// Answers 200 to requests whose `Host` is `api.internal` and 421 (misdirected) to others,
/// like a name-based virtual host behind TLS.
async fn virtual_host() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut chunk = [0u8; 512];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&chunk[..n]),
                }
            }
            let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let status = if text.contains("\r\nhost: api.internal\r\n") {
                200
            } else {
                421
            };
            let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            let _ = sock.write_all(resp.as_bytes()).await;
        }
    });
    addr
}

/// Plain TCP that names the backend the way a TLS transport names the server it verifies.
struct Named;

impl scalewise::health::CheckTransport for Named {
    type Stream = tokio::net::TcpStream;

    fn connect(
        &self,
        addr: SocketAddr,
    ) -> impl std::future::Future<Output = std::io::Result<Self::Stream>> + Send {
        tokio::net::TcpStream::connect(addr)
    }

    fn host(&self, _: SocketAddr) -> Option<String> {
        Some("api.internal".into())
    }
}

#[tokio::test]
async fn http_check_host_comes_from_the_config_then_the_transport_then_the_address() {
    use scalewise::health::probe_with;
    let addr = virtual_host().await;
    let cfg = http_cfg();
    probe_with(&Named, addr, &cfg).await.unwrap();
    assert!(matches!(
        probe(addr, &cfg).await,
        Err(CheckError::Status(421))
    ));
    let overridden = ActiveCheckConfig {
        host: Some("www.example".into()),
        ..http_cfg()
    };
    assert!(matches!(
        probe_with(&Named, addr, &overridden).await,
        Err(CheckError::Status(421))
    ));
}
