//! HTTP load runs against an in-process hyper server.

mod common;

use std::sync::atomic::Ordering;

use scalewise_load::{load, load_until, run_load, LoadArgs, Stop};

fn args(url: String) -> LoadArgs {
    LoadArgs::new(url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percentiles_match_injected_latency() {
    let (addr, _) = common::server().await;
    let mut a = args(format!("http://{addr}/delay/20"));
    a.connections = 4;
    a.duration = Some("1s".into());
    let r = load(&a).await.unwrap();
    assert!(r.requests >= 40, "only {} requests", r.requests);
    assert_eq!(r.errors.total, 0);
    // Injected 20 ms; the server adds a little, timers round up by ≤ 1–2 ms.
    assert!(r.p50_ms >= 20.0 && r.p50_ms < 35.0, "p50 {}", r.p50_ms);
    assert!(r.latency.min_ms >= 20.0, "min {}", r.latency.min_ms);
    assert!(r.p99_ms >= r.p50_ms);
    assert_eq!(r.statuses.get("200"), Some(&r.requests));
    assert_eq!(r.model, "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_sends_rate_times_duration() {
    let (addr, st) = common::server().await;
    let mut a = args(format!("http://{addr}/"));
    a.connections = 8;
    a.rate = Some(200.0);
    a.duration = Some("1s".into());
    let r = load(&a).await.unwrap();
    // The timetable has exactly 200 slots in 1 s. Each is sent, or reported as missed (not
    // started by the end) or interrupted (still in flight after the graceful stop) — exactly.
    // How many get sent depends on how busy the machine is (CI runs tests in parallel on 2
    // cores), so only a loose floor is asserted for that.
    assert_eq!(
        r.requests + r.missed + r.interrupted_requests,
        200,
        "{} sent, {} missed, {} interrupted",
        r.requests,
        r.missed,
        r.interrupted_requests
    );
    assert!(r.requests >= 150, "{} requests", r.requests);
    assert_eq!(
        st.count.load(std::sync::atomic::Ordering::SeqCst),
        r.requests
    );
    assert_eq!(r.target_rps, Some(200.0));
    assert_eq!(r.model, "open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_corrects_for_a_server_stall() {
    let (addr, st) = common::server().await;
    // One connection, 200 req/s (one every 5 ms) for 1.5 s = 300 requests; request 100 stalls
    // 500 ms. The ~100 requests scheduled during the stall queue behind it; measured from their
    // scheduled time their latencies fall linearly from 500 ms to ~0, so the top 10 % (30
    // requests) of the corrected distribution lie above 500 ms − 30 × 5 ms = 350 ms. Measured
    // from the actual send, only the stalled request is slow.
    st.stall_at.store(100, std::sync::atomic::Ordering::SeqCst);
    st.stall_ms.store(500, std::sync::atomic::Ordering::SeqCst);
    let mut a = args(format!("http://{addr}/"));
    a.connections = 1;
    a.rate = Some(200.0);
    a.duration = Some("1.5s".into());
    let r = load(&a).await.unwrap();
    eprintln!("{}", r.text());
    assert_eq!(r.requests + r.missed + r.interrupted_requests, 300);
    assert!(r.requests >= 250, "{} requests", r.requests);
    // Draining the backlog takes time too (more under CPU contention), which only pushes the
    // corrected figures up; so the arithmetic gives a lower bound.
    let expected_p90 = 500.0 - 0.1 * r.requests as f64 * 5.0;
    assert!(
        r.p90_ms > expected_p90 - 50.0 && r.p90_ms <= r.max_ms,
        "corrected p90 {} vs expected ≥ {expected_p90}",
        r.p90_ms
    );
    assert!(
        r.uncorrected.p90_ms < 50.0,
        "uncorrected p90 {}",
        r.uncorrected.p90_ms
    );
    assert!(
        r.max_ms >= 480.0 && r.uncorrected.max_ms >= 480.0,
        "max {} / {}",
        r.max_ms,
        r.uncorrected.max_ms
    );
    assert!(r.p90_ms > 5.0 * r.uncorrected.p90_ms);
    assert!(r.late >= 80, "late {}", r.late);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_set_the_exit_code() {
    let (addr, _) = common::server().await;
    let mut a = args(format!("http://{addr}/delay/5"));
    a.connections = 2;
    a.requests = Some(20);
    a.thresholds = vec!["p99<1ms".into()];
    assert_eq!(run_load(a.clone()).await.unwrap(), 1);
    a.thresholds = vec!["p99<5s".into(), "error_rate<1%".into(), "rps>1".into()];
    assert_eq!(run_load(a.clone()).await.unwrap(), 0);
    a.thresholds = vec!["p99 ~ 5".into()];
    let err = run_load(a).await.unwrap_err().to_string();
    assert!(
        err.contains("threshold") && err.contains("p99 ~ 5"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_categorised_and_counted() {
    let (addr, _) = common::server().await;
    let mut a = args(format!("http://{addr}/status/503"));
    a.connections = 2;
    a.requests = Some(30);
    a.thresholds = vec!["error_rate<50%".into()];
    let r = load(&a).await.unwrap();
    assert_eq!(r.requests, 30);
    assert_eq!(r.errors.http_5xx, 30);
    assert_eq!(r.errors.total, 30);
    assert!((r.error_rate - 1.0).abs() < 1e-9);
    assert_eq!(r.statuses.get("503"), Some(&30));
    assert_eq!(run_load(a).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_keys_are_stable_and_html_is_offline() {
    let (addr, _) = common::server().await;
    let json = common::temp_path("r.json");
    let html = common::temp_path("r.html");
    let mut a = args(format!("http://{addr}/"));
    a.connections = 2;
    a.requests = Some(50);
    a.json = Some(json.clone());
    a.html = Some(html.clone());
    assert_eq!(run_load(a).await.unwrap(), 0);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "baseline",
            "bytes",
            "bytes_per_s",
            "checks",
            "connections",
            "duration_s",
            "error_messages",
            "error_rate",
            "errors",
            "generator",
            "graceful_stop_s",
            "interrupted",
            "interrupted_requests",
            "late",
            "latency",
            "max_ms",
            "missed",
            "model",
            "ok",
            "p50_ms",
            "p90_ms",
            "p999_ms",
            "p99_ms",
            "percentiles",
            "protocol",
            "requests",
            "rps",
            "schema",
            "shape",
            "statuses",
            "steps",
            "target",
            "target_rps",
            "thresholds",
            "timeline",
            "uncorrected",
            "websocket"
        ]
    );
    assert_eq!(v["schema"], "scalewise-load/1");
    assert!(
        v["checks"].is_null(),
        "only scenarios with checks have them"
    );
    assert_eq!(v["requests"], 50);
    assert_eq!(v["interrupted_requests"], 0);
    assert_eq!(v["graceful_stop_s"], 0.5, "the default --graceful-stop");
    let mut err_keys: Vec<&str> = v["errors"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    err_keys.sort_unstable();
    assert_eq!(
        err_keys,
        ["connect", "http_4xx", "http_5xx", "protocol", "reset", "timeout", "tls", "total"]
    );
    let sec = &v["timeline"][0];
    for k in [
        "t", "requests", "errors", "bytes", "rps", "p50_ms", "p99_ms", "max_ms",
    ] {
        assert!(sec.get(k).is_some(), "timeline entry lacks {k}");
    }
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<svg") && page.contains("Latency over time") && page.contains("Throughput")
    );
    assert!(
        !page.contains("http://") || !page.contains("<script"),
        "report must not load anything"
    );
    assert!(!page.contains("<script src"));

    // Baseline: against a much slower baseline the run passes; against a much faster one it
    // fails (both far beyond run-to-run noise).
    let mut b = args(format!("http://{addr}/"));
    b.connections = 2;
    b.requests = Some(50);
    b.baseline = Some(json.clone());
    let mut slow = v.clone();
    slow["rps"] = serde_json::json!(0.001);
    for k in ["p50_ms", "p90_ms", "p99_ms", "p999_ms"] {
        slow[k] = serde_json::json!(1e9);
    }
    std::fs::write(&json, slow.to_string()).unwrap();
    assert_eq!(run_load(b.clone()).await.unwrap(), 0);
    let mut fast = v.clone();
    fast["rps"] = serde_json::json!(1e12);
    std::fs::write(&json, fast.to_string()).unwrap();
    assert_eq!(run_load(b).await.unwrap(), 1);
    let _ = std::fs::remove_file(json);
    let _ = std::fs::remove_file(html);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_target_and_bad_url_fail_fast_with_one_error() {
    let port = common::dead_port();
    let err = load(&args(format!("http://127.0.0.1:{port}/")))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unreachable") && err.contains(&port.to_string()),
        "{err}"
    );
    let err = load(&args("ftp://example/".into()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unsupported scheme"), "{err}");
    let err = load(&args("not a url".into()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad URL"), "{err}");
    let mut a = args("http://127.0.0.1:1/".into());
    a.headers = vec!["NoColon".into()];
    assert!(load(&a).await.unwrap_err().to_string().contains("-H"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_count_method_body_and_no_keepalive() {
    let (addr, st) = common::server().await;
    let mut a = args(format!("http://{addr}/login"));
    a.connections = 3;
    a.requests = Some(25);
    a.method = "POST".into();
    a.body = Some("{\"user\":\"x\"}".into());
    a.no_keepalive = true;
    a.headers = vec!["Content-Type: application/json".into()];
    let r = load(&a).await.unwrap();
    assert_eq!(r.requests, 25);
    assert_eq!(st.count.load(std::sync::atomic::Ordering::SeqCst), 25);
    assert_eq!(r.errors.total, 0);
    assert!(r.bytes > 25 * 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_run() {
    let (addr, _) = common::server().await;
    let mut a = args(format!("http://{addr}/delay/2"));
    a.http2 = true;
    a.connections = 2;
    a.requests = Some(40);
    let r = load(&a).await.unwrap();
    assert_eq!(r.protocol, "h2");
    assert_eq!(r.requests, 40);
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    assert!(r.p50_ms >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_users_share_connections() {
    let (addr, st) = common::server().await;
    let mut a = args(format!("http://{addr}/delay/5"));
    a.http2 = true;
    a.connections = 8;
    a.h2_connections = Some(2);
    a.requests = Some(80);
    let r = load(&a).await.unwrap();
    assert_eq!((r.requests, r.errors.total), (80, 0), "{:?}", r.errors);
    // Two shared connections plus the fail-fast probe.
    assert_eq!(st.conns.load(std::sync::atomic::Ordering::SeqCst), 3);
    a.http2 = false;
    assert!(load(&a)
        .await
        .unwrap_err()
        .to_string()
        .contains("--h2-connections needs --http2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shaped_open_model_follows_stages() {
    let (addr, _) = common::server().await;
    let mut a = args(format!("http://{addr}/"));
    a.connections = 4;
    a.rate = Some(1.0); // stages override the base rate
    a.stages = Some("0.5s:100,0.5s:~300".into());
    let r = load(&a).await.unwrap();
    // ∫ rate = 0.5 × 100 + 0.5 × (100 + 300) / 2 = 150 requests.
    assert!((140..=151).contains(&r.requests), "{}", r.requests);
}

/// Three users each have one `/hold` request in flight (the server holds them until the test
/// releases them) when the run is stopped. Whether they are recorded or counted as interrupted
/// depends only on `--graceful-stop` and on whether they are released after the stop, not on
/// how fast this machine is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_records_requests_that_finish_and_counts_the_rest_as_interrupted() {
    for (grace, grace_s, release_after_stop) in [
        ("0s", 0.0, false),
        ("50ms", 0.05, false),
        ("60s", 60.0, true),
    ] {
        let (addr, st) = common::server().await;
        let mut a = args(format!("http://{addr}/hold"));
        a.connections = 3;
        // Ended by `stop`, long before this.
        a.duration = Some("10m".into());
        a.graceful_stop = grace.into();
        let stop = Stop::new();
        let run = tokio::spawn({
            let stop = stop.clone();
            async move { load_until(&a, &stop).await }
        });
        tokio::time::timeout(std::time::Duration::from_secs(30), st.held(3))
            .await
            .expect("the three users' requests reach the server");
        // The users see the stop before their next request (the flag is set when `stop`
        // returns), so releasing the held requests now lets them finish, but lets no user
        // send another.
        stop.stop();
        if release_after_stop {
            st.release();
        }
        let r = run.await.unwrap().unwrap();
        assert!(!r.interrupted, "not a Ctrl-C");
        assert_eq!(r.graceful_stop_s, grace_s);
        if release_after_stop {
            assert_eq!(r.interrupted_requests, 0, "{grace}");
            assert_eq!(r.requests, 3, "{grace}");
            assert_eq!(r.statuses.get("202"), Some(&3), "{:?}", r.statuses);
            assert!(r.latency.min_ms > 0.0, "their latencies are recorded");
            assert!(!r.text().contains("Interrupted"));
        } else {
            assert_eq!(r.interrupted_requests, 3, "{grace}");
            assert_eq!(
                r.requests, 0,
                "{grace}: abandoned requests are not recorded"
            );
            assert!(
                r.text().contains(&format!(
                    "Interrupted 3 requests in flight at the end, abandoned after the graceful stop ({grace})"
                )),
                "{}",
                r.text()
            );
            st.release();
        }
        assert_eq!(
            st.count.load(Ordering::SeqCst),
            3,
            "{grace}: no user sent a second request"
        );
        assert_eq!(st.held.load(Ordering::SeqCst), 3);
    }

    let mut a = args("http://127.0.0.1:1/".into());
    a.graceful_stop = "soon".into();
    let e = load(&a).await.unwrap_err().to_string();
    assert!(e.contains("--graceful-stop") && e.contains("`soon`"), "{e}");
}
