//! The admin API against a running gateway with real loopback backends.
mod ops_support;

use hyper::StatusCode;
use ops_support::*;
use scalewise_gateway::server::StartOptions;

#[tokio::test]
async fn status_and_backends_report_the_running_gateway() {
    let (a, b) = (backend("a").await, backend("b").await);
    let cfg = parse(&toml_config(&[a.addr, b.addr], ""));
    let (_gw, listen, admin) = start(cfg, StartOptions::default()).await;

    let status = get_json(admin, "/api/status").await;
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["listeners"][0]["name"], "main");
    assert_eq!(status["listeners"][0]["addr"], listen.to_string());
    assert_eq!(status["upstreams"][0]["name"], "app");
    assert_eq!(status["upstreams"][0]["backends"], 2);
    assert!(status["uptime_seconds"].as_f64().unwrap() >= 0.0);

    names(listen, 4).await;
    let backends = get_json(admin, "/api/backends").await;
    let list = backends["upstreams"]["app"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], "app/0");
    assert_eq!(list[1]["addr"], b.addr.to_string());
    for field in [
        "health",
        "ejections",
        "in_flight",
        "ewma_ms",
        "effective_weight",
        "draining",
    ] {
        assert!(list[0].get(field).is_some(), "missing {field}: {}", list[0]);
    }
    let requests: u64 = list.iter().map(|b| b["requests"].as_u64().unwrap()).sum();
    assert_eq!(requests, 4);
}

#[tokio::test]
async fn drain_stops_traffic_to_a_backend_and_enable_restores_it() {
    let (a, b) = (backend("a").await, backend("b").await);
    let cfg = parse(&toml_config(&[a.addr, b.addr], ""));
    let (_gw, listen, admin) = start(cfg, StartOptions::default()).await;
    assert!(names(listen, 6).await.contains(&"a".to_string()));

    let (status, body) = request(admin, "POST", "/api/backends/app/0/drain", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("\"draining\": true"), "{body}");
    let before = a.hits.load(std::sync::atomic::Ordering::Relaxed);
    assert!(names(listen, 10).await.iter().all(|n| n == "b"));
    assert_eq!(a.hits.load(std::sync::atomic::Ordering::Relaxed), before);

    // By address as well as by index; `:` may come percent-encoded.
    let path = format!("/api/backends/app/{}/enable", a.addr).replace(':', "%3A");
    let (status, body) = request(admin, "POST", &path, &[], "").await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(names(listen, 6).await.contains(&"a".to_string()));

    let (status, _) = request(admin, "POST", "/api/backends/app/7/drain", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = request(admin, "POST", "/api/backends/nope/0/drain", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(admin, "/api/backends/app/0/drain").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn token_is_required_and_redacted() {
    let a = backend("a").await;
    let cfg = parse(&toml_config(&[a.addr], "token = \"s3cret-token\"\n"));
    let (_gw, _listen, admin) = start(cfg, StartOptions::default()).await;

    let (status, _) = get(admin, "/api/status").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let wrong = [("authorization", "Bearer s3cret-tokex")];
    let (status, _) = request(admin, "GET", "/metrics", &wrong, "").await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let auth = [("authorization", "Bearer s3cret-token")];
    let (status, body) = request(admin, "GET", "/api/config", &auth, "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(!body.contains("s3cret"), "{body}");
    let cfg: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(cfg["admin"]["token"], "<redacted>");
    assert_eq!(
        cfg["upstreams"]["app"]["backends"][0]["addr"],
        a.addr.to_string()
    );
}

#[tokio::test]
async fn put_config_validates_and_reloads() {
    let (a, b) = (backend("a").await, backend("b").await);
    let base = toml_config(&[a.addr], "");
    let cfg = parse(&base);
    let (_gw, listen, admin) = start(cfg, StartOptions::default()).await;
    assert!(names(listen, 3).await.iter().all(|n| n == "a"));

    // A bad algorithm: 400 naming the key, the value and the valid names; nothing changes.
    let bad = base.replace(
        "[upstreams.app]",
        "[upstreams.app]\nalgorithm = \"fastest\"",
    );
    let (status, body) = request(admin, "PUT", "/api/config", &[], &bad)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("upstreams.app.algorithm"), "{body}");
    assert!(
        body.contains("fastest") && body.contains("least_conn"),
        "{body}"
    );
    assert!(body.contains("<request body>:9:"), "{body}");

    // A semantic error found by validate().
    let bad = base.replace("upstream = \"app\"", "upstream = \"ghost\"");
    let (status, body) = request(admin, "PUT", "/api/config", &[], &bad)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.contains("routes[0].upstream") && body.contains("ghost"),
        "{body}"
    );

    // Listener addresses are fixed at start.
    let moved = base.replace("127.0.0.1:0\"\n\n[[routes]]", "127.0.0.1:1\"\n\n[[routes]]");
    let (status, body) = request(admin, "PUT", "/api/config", &[], &moved)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("listeners[0].addr"), "{body}");
    assert!(names(listen, 3).await.iter().all(|n| n == "a"));

    // A valid JSON config with a second backend applies at once.
    let mut json: serde_json::Value = get_json(admin, "/api/config").await;
    json["upstreams"]["app"]["backends"] = serde_json::json!([
        { "addr": a.addr.to_string() },
        { "addr": b.addr.to_string() }
    ]);
    let ct = [("content-type", "application/json")];
    let (status, body) = request(admin, "PUT", "/api/config", &ct, &json.to_string())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = names(listen, 6).await;
    assert!(
        seen.contains(&"a".into()) && seen.contains(&"b".into()),
        "{seen:?}"
    );
    let status = get_json(admin, "/api/status").await;
    assert_eq!(status["reloads"], 1);
    assert_eq!(status["failed_reloads"], 3);
}

#[tokio::test]
async fn metrics_and_unknown_paths() {
    let a = backend("a").await;
    let cfg = parse(&toml_config(&[a.addr], ""));
    let (_gw, listen, admin) = start(cfg, StartOptions::default()).await;
    names(listen, 2).await;
    let (status, text) = get(admin, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("gateway_requests"), "{text}");
    let backend_label = format!("backend=\"{}\"", a.addr);
    let healthy = text
        .lines()
        .find(|l| l.starts_with("scalewise_backend_healthy{") && l.contains(&backend_label))
        .unwrap_or_else(|| panic!("{text}"));
    let value: f64 = healthy.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(value, 1.0, "{healthy}");
    assert!(text.contains("scalewise_backend_ejections_total"), "{text}");
    assert!(text.contains("scalewise_backend_in_flight"), "{text}");

    assert_eq!(get(admin, "/nope").await.0, StatusCode::NOT_FOUND);
    let (status, _) = request(admin, "DELETE", "/api/status", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}
