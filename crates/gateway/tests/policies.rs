//! Gateway policies end to end on loopback: rate limits (429 + headers), circuit breakers per
//! backend, retries under a retry budget, route concurrency limits and load shedding, and
//! their metrics and admin views.
//!
//! Determinism: limits are tiny rates per hour (nothing refills during a test), breakers
//! open on a count window, budgets earn retries by request count over an hour-long window.
//! The one time-based step (a breaker's open duration) runs on a `ManualClock` handed to
//! the gateway, advanced to just before and then to the deadline the breaker reports.
mod ops_support;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ops_support::{get_json, parse, start, toml_config};
use scalewise::clock::ManualClock;
use scalewise_gateway::server::{Overrides, StartOptions};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

/// A backend that answers 500 while `failing`, else 200; `/hang` waits for `release`.
struct Flaky {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    failing: Arc<AtomicBool>,
    entered: tokio::sync::Mutex<mpsc::UnboundedReceiver<()>>,
    release: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Flaky {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn flaky(failing: bool) -> Flaky {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let failing = Arc::new(AtomicBool::new(failing));
    let release = Arc::new(Notify::new());
    let (tx, rx) = mpsc::unbounded_channel();
    let (h, f, r) = (hits.clone(), failing.clone(), release.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (h, f, r, tx) = (h.clone(), f.clone(), r.clone(), tx.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let (f, r, tx) = (f.clone(), r.clone(), tx.clone());
                    async move {
                        if req.uri().path().ends_with("/hang") {
                            let _ = tx.send(());
                            r.notified().await;
                        }
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                        if f.load(Ordering::SeqCst) {
                            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Flaky {
        addr,
        hits,
        failing,
        entered: tokio::sync::Mutex::new(rx),
        release,
        task,
    }
}

/// A backend that accepts connections and closes them at once (a reset before any
/// response); counts the connections.
async fn slammer() -> (SocketAddr, Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicU64::new(0));
    let a = accepts.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (addr, accepts, task)
}

/// One request on a fresh connection: status, headers, body.
async fn call(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::get(path).header("host", "policy.test");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        send.send_request(req.body(Full::new(Bytes::new())).unwrap()),
    )
    .await
    .expect("gateway answers")
    .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn header<'a>(h: &'a http::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("-")
}

async fn metrics(admin: SocketAddr) -> String {
    ops_support::get(admin, "/metrics").await.1
}

#[tokio::test]
async fn rate_limit_per_ip_answers_429_with_headers() {
    let b = flaky(false).await;
    let cfg = parse(
        &(toml_config(&[b.addr], "").replace(
            "upstream = \"app\"\n",
            "upstream = \"app\"\nname = \"api\"\nrate_limit = \"per_ip\"\n",
        ) + "\n[rate_limits.per_ip]\nrate = \"2/h\"\n"),
    );
    let (_gw, listen, admin) = start(cfg, StartOptions::default()).await;

    let (s, h, _) = call(listen, "/", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(header(&h, "ratelimit-limit"), "2");
    assert_eq!(header(&h, "ratelimit-remaining"), "1");
    assert!(h.get("retry-after").is_none());
    let (s, h, _) = call(listen, "/", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(header(&h, "ratelimit-remaining"), "0");

    let (s, h, _) = call(listen, "/", &[]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&h, "ratelimit-limit"), "2");
    assert_eq!(header(&h, "ratelimit-remaining"), "0");
    // GCRA at 2/h frees one request every 30 minutes.
    let retry: u64 = header(&h, "retry-after").parse().unwrap();
    assert!((1..=1800).contains(&retry), "{retry}");
    let reset: u64 = header(&h, "ratelimit-reset").parse().unwrap();
    assert!(reset >= retry, "{reset} < {retry}");
    assert_eq!(
        b.hits.load(Ordering::SeqCst),
        2,
        "the denied request never reached the backend"
    );

    let text = metrics(admin).await;
    assert!(
        text.contains(
            r#"gateway_ratelimit_decisions_total{route="api",limit="per_ip",decision="denied"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"gateway_ratelimit_decisions_total{route="api",limit="per_ip",decision="allowed"} 2"#
    ));
    let p = get_json(admin, "/api/policies").await;
    assert_eq!(p["rate_limits"]["per_ip"]["mode"], "local");
    assert_eq!(p["routes"]["api"]["rate_limit_denied"], 1);
}

#[tokio::test]
async fn rate_limit_by_header_keys_each_api_key_separately() {
    let b = flaky(false).await;
    let cfg = parse(&(toml_config(&[b.addr], "").replace(
        "upstream = \"app\"\n",
        "upstream = \"app\"\nrate_limit = \"keys\"\n",
    ) + "\n[rate_limits.keys]\nrate = \"1/h\"\nkey = \"header:X-Api-Key\"\nalgorithm = \"sliding_window_counter\"\n"));
    let (_gw, listen, _admin) = start(cfg, StartOptions::default()).await;

    let a = [("x-api-key", "alpha")];
    let z = [("x-api-key", "zulu")];
    assert_eq!(call(listen, "/", &a).await.0, StatusCode::OK);
    assert_eq!(call(listen, "/", &a).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        call(listen, "/", &z).await.0,
        StatusCode::OK,
        "another key has its own budget"
    );
    assert_eq!(call(listen, "/", &z).await.0, StatusCode::TOO_MANY_REQUESTS);
    // Leaving the header out is no way around the limit: keyless requests share one key.
    assert_eq!(call(listen, "/", &[]).await.0, StatusCode::OK);
    assert_eq!(
        call(listen, "/", &[]).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// A per-IP limit of 1/h: behind a trusted proxy each `X-Forwarded-For` client has its own
/// budget; from an untrusted peer the header is ignored and the peer is the key.
#[tokio::test]
async fn rate_limit_keys_the_client_behind_trusted_proxies() {
    let b = flaky(false).await;
    let limited = |trusted: &str| {
        parse(
            &(toml_config(&[b.addr], "")
                .replace(
                    "addr = \"127.0.0.1:0\"\n\n[[routes]]",
                    &format!("addr = \"127.0.0.1:0\"\ntrusted_proxies = [{trusted}]\n\n[[routes]]"),
                )
                .replace(
                    "upstream = \"app\"\n",
                    "upstream = \"app\"\nrate_limit = \"per_ip\"\n",
                )
                + "\n[rate_limits.per_ip]\nrate = \"1/h\"\n"),
        )
    };
    let (_gw, listen, _admin) = start(limited("\"127.0.0.0/8\""), StartOptions::default()).await;
    let one = [("x-forwarded-for", "203.0.113.7")];
    // The client put a fake entry first; the proxy (trusted) appended the real one.
    let two = [("x-forwarded-for", "203.0.113.7, 198.51.100.2")];
    assert_eq!(call(listen, "/", &one).await.0, StatusCode::OK);
    assert_eq!(
        call(listen, "/", &one).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        call(listen, "/", &two).await.0,
        StatusCode::OK,
        "198.51.100.2 is another client"
    );
    assert_eq!(
        call(listen, "/", &two).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );

    let (_gw, listen, _admin) = start(limited("\"10.0.0.0/8\""), StartOptions::default()).await;
    assert_eq!(call(listen, "/", &one).await.0, StatusCode::OK);
    assert_eq!(
        call(listen, "/", &two).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "an untrusted peer's header is ignored: both requests are 127.0.0.1's"
    );
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: scalewise_gateway::Args,
}

#[tokio::test]
async fn rate_limit_flag_limits_every_route_per_client_ip() {
    let b = flaky(false).await;
    let cli = Cli::try_parse_from([
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        &b.addr.to_string(),
        "--admin",
        "127.0.0.1:0",
        "--rate-limit",
        "2/h",
    ])
    .unwrap();
    let rate = cli.args.rate_limit.expect("--rate-limit parsed");
    assert_eq!(rate.count(), 2);
    assert!(Cli::try_parse_from([
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "127.0.0.1:1",
        "--rate-limit",
        "lots"
    ])
    .is_err());

    // What `scalewise gateway` builds from those flags.
    let config = cli.args.command_line_config().unwrap();
    let overrides = Overrides::from_args(&cli.args);
    let mut applied = config.clone();
    overrides.apply(&mut applied);
    assert_eq!(applied.routes[0].rate_limit.as_deref(), Some("cli"));
    assert_eq!(applied.admin.addr.port(), 0);
    let options = StartOptions {
        overrides,
        ..StartOptions::default()
    };
    let (gw, listen, _admin) = start(config.clone(), options).await;
    let running = gw.controller().config();
    assert_eq!(running.routes[0].rate_limit.as_deref(), Some("cli"));
    assert_eq!(running.rate_limits["cli"].rate.count(), 2);

    assert_eq!(call(listen, "/", &[]).await.0, StatusCode::OK);
    assert_eq!(call(listen, "/", &[]).await.0, StatusCode::OK);
    let (s, h, _) = call(listen, "/", &[]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(h.contains_key("retry-after"));

    // The flag survives a reload (it is re-applied like every command-line override), and
    // routes with their own limit keep it.
    let mut next = config;
    next.routes[0].rate_limit = Some("own".into());
    next.rate_limits.insert(
        "own".into(),
        scalewise_gateway::policy::RateLimitSpec::per_client_ip("5/h".parse().unwrap()),
    );
    gw.controller().apply(next).await.unwrap();
    let running = gw.controller().config();
    assert_eq!(running.routes[0].rate_limit.as_deref(), Some("own"));
    assert!(running.rate_limits.contains_key("cli"));
}

fn breaker_extra(open: &str) -> String {
    format!(
        r#"
[upstreams.app.circuit_breaker]
window = {{ kind = "count", size = 2 }}
minimum_calls = 2
failure_rate_threshold = 0.5
open_duration = "{open}"
max_open_duration = "2h"
open_jitter = 0.0
half_open_permitted_calls = 1
"#
    )
}

#[tokio::test]
async fn breaker_opens_on_failing_backend_and_traffic_moves_to_the_healthy_one() {
    let bad = flaky(true).await;
    let good = flaky(false).await;
    let cfg = parse(&toml_config(&[bad.addr, good.addr], &breaker_extra("1h")));
    let (gw, listen, admin) = start(cfg, StartOptions::default()).await;

    // Round robin: bad, good, bad — two failures in bad's window open its breaker.
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(call(listen, "/", &[]).await.0.as_u16());
        }
        v
    };
    assert_eq!(statuses, [500, 200, 500]);
    for _ in 0..6 {
        assert_eq!(call(listen, "/", &[]).await.0, StatusCode::OK);
    }
    assert_eq!(
        bad.hits.load(Ordering::SeqCst),
        2,
        "no traffic to an open breaker"
    );
    assert_eq!(good.hits.load(Ordering::SeqCst), 7);

    let backends = get_json(admin, "/api/backends").await;
    let list = backends["upstreams"]["app"].as_array().unwrap();
    assert_eq!(list[0]["breaker"]["state"], "open", "{backends}");
    assert_eq!(list[1]["breaker"]["state"], "closed");
    let text = metrics(admin).await;
    let open = format!(
        r#"gateway_breaker_state{{upstream="app",backend="{}",state="open"}} 1"#,
        bad.addr
    );
    assert!(text.contains(&open), "{text}");
    assert!(text.contains(&format!(
        r#"gateway_breaker_state{{upstream="app",backend="{}",state="closed"}} 1"#,
        good.addr
    )));

    // Operators can force a breaker open and reset it.
    let (s, body) = ops_support::request(
        admin,
        "POST",
        &format!("/api/backends/app/{}/breaker/open", good.addr),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        call(listen, "/", &[]).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (s, _) = ops_support::request(admin, "POST", "/api/backends/app/1/breaker/reset", &[], "")
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(call(listen, "/", &[]).await.0, StatusCode::OK);
    let (s, _) = ops_support::request(admin, "POST", "/api/backends/app/1/breaker/bogus", &[], "")
        .await
        .unwrap();
    assert_eq!(s, StatusCode::NOT_FOUND);

    // A reload that keeps the backend and the breaker settings keeps the breaker's state.
    let mut next = (*gw.controller().config()).clone();
    next.upstreams
        .get_mut("app")
        .unwrap()
        .retry_budget
        .retry_ratio = 0.3;
    gw.controller().apply(next).await.unwrap();
    let backends = get_json(admin, "/api/backends").await;
    assert_eq!(backends["upstreams"]["app"][0]["breaker"]["state"], "open");
}

#[tokio::test]
async fn breaker_answers_503_when_every_backend_is_open_and_closes_after_recovery() {
    let b = flaky(true).await;
    let cfg = parse(&toml_config(&[b.addr], &breaker_extra("100ms")));
    let clock = ManualClock::new();
    let options = StartOptions {
        clock: Some(Arc::new(clock.clone())),
        ..StartOptions::default()
    };
    let (_gw, listen, admin) = start(cfg, options).await;

    assert_eq!(
        call(listen, "/", &[]).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        call(listen, "/", &[]).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let (s, h, _) = call(listen, "/", &[]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.contains_key("retry-after"));
    assert_eq!(b.hits.load(Ordering::SeqCst), 2);

    b.failing.store(false, Ordering::SeqCst);
    let p = get_json(admin, "/api/policies").await;
    let breaker = &p["upstreams"]["app"]["breakers"][b.addr.to_string()];
    assert_eq!(breaker["state"], "open", "{p}");
    // The clock stands still, so the breaker reports exactly its open duration.
    let wait = breaker["retry_after_ms"].as_u64().unwrap();
    assert_eq!(wait, 100, "{p}");

    // One millisecond short of the deadline the breaker is still open.
    clock.advance(Duration::from_millis(wait - 1));
    assert_eq!(
        call(listen, "/", &[]).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(b.hits.load(Ordering::SeqCst), 2);

    // At the deadline one trial call goes through and closes it.
    clock.advance(Duration::from_millis(1));
    assert_eq!(call(listen, "/", &[]).await.0, StatusCode::OK);
    let backends = get_json(admin, "/api/backends").await;
    assert_eq!(
        backends["upstreams"]["app"][0]["breaker"]["state"],
        "closed"
    );
    assert_eq!(call(listen, "/", &[]).await.0, StatusCode::OK);
    assert_eq!(b.hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn retries_stop_when_the_budget_is_spent() {
    let (addr, accepts, _task) = slammer().await;
    let cfg = parse(
        &toml_config(
            &[addr],
            r#"
[upstreams.app.retry_budget]
retry_ratio = 0.5
min_retries_per_second = 0
window = "1h"
"#,
        )
        .replace("upstream = \"app\"\n", "upstream = \"app\"\nretries = 2\n"),
    );
    let (_gw, listen, admin) = start(cfg, StartOptions::default()).await;

    // Each request deposits half a retry. Request 1: 0.5 in the budget, no retry. Request 2:
    // 1.0, one retry, then none left. Requests 3 and 4 repeat that.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let before = accepts.load(Ordering::SeqCst);
        assert_eq!(call(listen, "/", &[]).await.0, StatusCode::BAD_GATEWAY);
        seen.push(accepts.load(Ordering::SeqCst) - before);
    }
    assert_eq!(seen, [1, 2, 1, 2], "backend attempts per request");

    let p = get_json(admin, "/api/policies").await;
    let budget = &p["upstreams"]["app"]["retry_budget"];
    assert_eq!(budget["retries_spent"], 2, "{p}");
    assert_eq!(budget["retries_denied"], 4);
    assert_eq!(budget["deposits"], 4);
    let text = metrics(admin).await;
    assert!(
        text.contains(r#"gateway_retry_budget_spent_total{upstream="app"} 2"#),
        "{text}"
    );
    assert!(text.contains(r#"gateway_retry_budget_denied_total{upstream="app"} 4"#));
    assert!(text.contains(r#"gateway_retry_budget_available{upstream="app"} 0"#));
    assert!(text.contains(r#"gateway_retries_total{upstream="app"} 2"#));
}

#[tokio::test]
async fn route_concurrency_limit_and_shedding_answer_503() {
    let b = Arc::new(flaky(false).await);
    let text = toml_config(&[b.addr], "").replace(
        "[[routes]]\nupstream = \"app\"\n",
        r#"[[routes]]
name = "bulkhead"
path_prefix = "/hang"
upstream = "app"
concurrency = { max_concurrent = 1, max_waiting = 0, max_wait = "1s" }

[[routes]]
name = "adaptive"
path_prefix = "/a"
upstream = "app"
adaptive_concurrency = { algorithm = "aimd", initial = 1, min = 1, max = 1 }

[[routes]]
name = "shed"
upstream = "app"
shed = { max_in_flight = 1 }
"#,
    );
    let (_gw, listen, admin) = start(parse(&text), StartOptions::default()).await;

    // One request holds the bulkhead's only slot.
    let first = tokio::spawn(async move { call(listen, "/hang", &[]).await.0 });
    b.entered.lock().await.recv().await;
    let (s, h, _) = call(listen, "/hang", &[]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.contains_key("retry-after"));
    b.release.notify_one();
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    // The slot is back once the first response is complete.
    let second = tokio::spawn(async move { call(listen, "/hang", &[]).await.0 });
    b.entered.lock().await.recv().await;
    b.release.notify_one();
    assert_eq!(second.await.unwrap(), StatusCode::OK);

    // The adaptive limit (pinned to 1 here): one in flight, the next refused.
    let held = tokio::spawn(async move { call(listen, "/a/hang", &[]).await.0 });
    b.entered.lock().await.recv().await;
    assert_eq!(
        call(listen, "/a/x", &[]).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    b.release.notify_one();
    assert_eq!(held.await.unwrap(), StatusCode::OK);
    assert_eq!(call(listen, "/a/x", &[]).await.0, StatusCode::OK);

    // The shedding route: one request in flight, the next is shed at once.
    let held = tokio::spawn(async move { call(listen, "/s/hang", &[]).await.0 });
    b.entered.lock().await.recv().await;
    assert_eq!(
        call(listen, "/s", &[]).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    b.release.notify_one();
    assert_eq!(held.await.unwrap(), StatusCode::OK);
    assert_eq!(call(listen, "/s", &[]).await.0, StatusCode::OK);

    let p = get_json(admin, "/api/policies").await;
    assert_eq!(
        p["routes"]["bulkhead"]["rejected_concurrency_full"], 1,
        "{p}"
    );
    assert_eq!(
        p["routes"]["bulkhead"]["concurrency"]["stats"]["in_flight"],
        0
    );
    let text = metrics(admin).await;
    assert!(
        text.contains(
            r#"gateway_policy_rejections_total{route="bulkhead",reason="concurrency_full"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"gateway_policy_rejections_total{route="shed",reason="shed"} 1"#));
    assert_eq!(p["routes"]["shed"]["shed_count"], 1);
    assert_eq!(p["routes"]["adaptive"]["rejected_adaptive_limit"], 1);
    assert_eq!(
        p["routes"]["adaptive"]["adaptive_concurrency"]["stats"]["in_flight"],
        0
    );
    assert!(text.contains(
        r#"gateway_policy_rejections_total{route="adaptive",reason="adaptive_limit"} 1"#
    ));
}

/// Two gateways share one Redis-global limit. Needs Redis on 127.0.0.1:6379: skipped
/// (loudly) without it unless `SCALEWISE_REQUIRE_SERVICES=1`.
#[tokio::test]
async fn redis_global_limit_is_shared_by_two_gateways() {
    if TcpStream::connect("127.0.0.1:6379").await.is_err() {
        assert!(
            std::env::var("SCALEWISE_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "Redis on 127.0.0.1:6379 is required (SCALEWISE_REQUIRE_SERVICES=1)"
        );
        eprintln!("SKIP redis_global_limit_is_shared_by_two_gateways: no Redis on 127.0.0.1:6379");
        return;
    }
    let b = flaky(false).await;
    let prefix = format!(
        "scalewise-test:gw:{}:{}:",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let text = toml_config(&[b.addr], "").replace(
        "upstream = \"app\"\n",
        "upstream = \"app\"\nrate_limit = \"global\"\n",
    ) + &format!(
        "\n[rate_limits.global]\nrate = \"3/h\"\nredis = {{ url = \"redis://127.0.0.1:6379\", prefix = \"{prefix}\", timeout = \"2s\", fallback = \"fail_closed\" }}\n"
    );
    let (gw1, l1, admin) = start(parse(&text), StartOptions::default()).await;
    let (gw2, l2, _) = start(parse(&text), StartOptions::default()).await;
    for gw in [&gw1, &gw2] {
        let state = gw.controller().shared().load();
        let limiter = scalewise_gateway::policy::limiter(&state, "global").unwrap();
        tokio::time::timeout(Duration::from_secs(10), limiter.connected())
            .await
            .expect("connects to Redis");
    }

    assert_eq!(call(l1, "/", &[]).await.0, StatusCode::OK);
    assert_eq!(call(l2, "/", &[]).await.0, StatusCode::OK);
    let (s, h, _) = call(l1, "/", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(header(&h, "ratelimit-remaining"), "0");
    let (s, h, _) = call(l2, "/", &[]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "the budget is global");
    assert!(h.contains_key("retry-after"));
    let p = get_json(admin, "/api/policies").await;
    assert_eq!(p["rate_limits"]["global"]["mode"], "redis");
}

#[tokio::test]
async fn reload_keeps_unchanged_limits_and_rebuilds_changed_ones() {
    let b = flaky(false).await;
    let text = toml_config(&[b.addr], "").replace(
        "upstream = \"app\"\n",
        "upstream = \"app\"\nrate_limit = \"rl\"\n",
    ) + "\n[rate_limits.rl]\nrate = \"1/h\"\n";
    let cfg = parse(&text);
    let (gw, listen, admin) = start(cfg.clone(), StartOptions::default()).await;
    assert_eq!(call(listen, "/", &[]).await.0, StatusCode::OK);
    assert_eq!(
        call(listen, "/", &[]).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );

    // Unchanged limit: a reload is no way to a fresh budget.
    let mut next = cfg.clone();
    next.routes[0].name = Some("renamed".into());
    gw.controller().apply(next.clone()).await.unwrap();
    assert_eq!(
        call(listen, "/", &[]).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );

    // A changed limit starts afresh.
    next.rate_limits.get_mut("rl").unwrap().rate = "2/h".parse().unwrap();
    gw.controller().apply(next).await.unwrap();
    let (s, h, _) = call(listen, "/", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(header(&h, "ratelimit-limit"), "2");
    let p = get_json(admin, "/api/policies").await;
    assert_eq!(p["routes"]["renamed"]["rate_limit"], "rl", "{p}");
}

#[tokio::test]
async fn unreachable_redis_falls_back_as_configured() {
    let b = flaky(false).await;
    // Nothing listens there: the limiter never connects and its fallback answers.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let text = toml_config(&[b.addr], "").replace(
        "[[routes]]\nupstream = \"app\"\n",
        r#"[[routes]]
name = "closed"
path_prefix = "/closed"
upstream = "app"
rate_limit = "closed"

[[routes]]
name = "local"
path_prefix = "/local"
upstream = "app"
rate_limit = "local"

[[routes]]
name = "open"
upstream = "app"
rate_limit = "open"
"#,
    ) + &format!(
        r#"
[rate_limits.closed]
rate = "100/h"
redis = {{ url = "redis://{dead}", fallback = "fail_closed" }}

[rate_limits.local]
rate = "100/h"
burst = 4
redis = {{ url = "redis://{dead}", fallback = "local", local_share = 0.5 }}

[rate_limits.open]
rate = "1/h"
redis = {{ url = "redis://{dead}" }}
"#
    );
    let (_gw, listen, admin) = start(parse(&text), StartOptions::default()).await;

    let (s, h, _) = call(listen, "/closed", &[]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(h.contains_key("retry-after"));
    // Local fallback at half the burst: 2 of 4.
    assert_eq!(call(listen, "/local", &[]).await.0, StatusCode::OK);
    assert_eq!(call(listen, "/local", &[]).await.0, StatusCode::OK);
    assert_eq!(
        call(listen, "/local", &[]).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Fail-open admits beyond the (global) limit while Redis is away.
    for _ in 0..3 {
        assert_eq!(call(listen, "/", &[]).await.0, StatusCode::OK);
    }
    let p = get_json(admin, "/api/policies").await;
    assert_eq!(p["rate_limits"]["open"]["mode"], "connecting", "{p}");
}
