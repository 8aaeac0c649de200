//! Gaps found by the acceptance audit of issue 4, each against a real loopback socket: header
//! injection from scenario data, static scenario mistakes, a huge `--rate`, a baseline checked
//! before the run, latency thresholds without samples, URLs without a scheme, bench options.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use scalewise_load::{load, run_bench, run_load, BenchArgs, LoadArgs, Scenario, ScenarioFormat};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw HTTP/1.1 server: records every request head it receives and answers each with
/// `response` (keep-alive). Raw, so that what the generator put on the wire is seen as sent.
async fn raw_server(response: &'static [u8]) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buf.drain(..end + 4).collect();
                        seen.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&head).into_owned());
                        if s.write_all(response).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, heads)
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_header_values_with_crlf_fail_the_step_instead_of_injecting_headers() {
    let (addr, heads) = raw_server(OK).await;
    // A CSV field may hold a line break (quoted); rendered into a header it would add one.
    let csv = common::temp_path("inject.csv");
    std::fs::write(&csv, "user\n\"alice\r\nX-Injected: 1\"\n").unwrap();
    let file = common::temp_path("inject.toml");
    std::fs::write(
        &file,
        format!(
            "[data]\ncsv = \"{}\"\n[[steps]]\nname = \"a\"\nurl = \"http://{addr}/\"\nheaders = {{ X-User = \"{{{{user}}}}\" }}\n",
            csv.display()
        ),
    )
    .unwrap();
    let mut a = LoadArgs::new("unused");
    a.url = None;
    a.scenario = Some(file);
    a.connections = 1;
    a.requests = Some(3);
    let r = load(&a).await.unwrap();
    assert_eq!((r.requests, r.errors.protocol), (3, 3), "{:?}", r.errors);
    let heads = heads.lock().unwrap();
    assert!(
        heads.iter().all(|h| !h.contains("X-Injected")),
        "a header was injected: {heads:?}"
    );
}

#[test]
fn static_scenario_header_and_url_mistakes_are_load_time_errors_with_line_and_field() {
    let parse = |t: &str| {
        Scenario::parse(t, ScenarioFormat::Toml, None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let e = parse("[[steps]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\nheaders = { \"Bad Header\" = \"x\" }\n");
    assert!(
        e.contains("line 4")
            && e.contains("`headers`")
            && e.contains("`Bad Header` is not a valid header name"),
        "{e}"
    );
    let e = parse(
        "[[steps]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\nheaders = { X = \"a\\nb\" }\n",
    );
    assert!(
        e.contains("line 4") && e.contains("control characters"),
        "{e}"
    );
    let e = parse("[[steps]]\nname = \"a\"\nurl = \"127.0.0.1:8080/x\"\n");
    assert!(
        e.contains("line 3") && e.contains("`url`") && e.contains("http://127.0.0.1:8080/x"),
        "{e}"
    );
    let e = parse("[[steps]]\nname = \"a\"\nurl = \"ftp://host/\"\n");
    assert!(e.contains("unsupported scheme `ftp`"), "{e}");
    // Templated URLs and header values are checked per request instead.
    assert!(parse("[vars]\nb = \"http://h\"\n[[steps]]\nname = \"a\"\nurl = \"{{b}}/\"\nheaders = { X = \"{{b}}\" }\n").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_far_beyond_the_pool_ends_with_the_run_and_counts_what_it_missed() {
    let (addr, _) = raw_server(OK).await;
    let mut a = LoadArgs::new(format!("http://{addr}/"));
    a.rate = Some(1e12);
    a.duration = Some("200ms".into());
    a.connections = 1;
    // Counting the 10¹¹ missed tickets one by one took hours after the run had ended.
    let r = load(&a).await.unwrap();
    assert!(r.requests > 0);
    assert!(r.missed > 100_000_000_000, "missed {}", r.missed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_baseline_without_the_compared_fields_is_refused_before_any_request() {
    let (addr, heads) = raw_server(OK).await;
    let base = common::temp_path("base.json");
    std::fs::write(&base, r#"{"schema":"something-else"}"#).unwrap();
    let mut a = LoadArgs::new(format!("http://{addr}/"));
    a.requests = Some(5);
    a.baseline = Some(base);
    let err = run_load(a).await.unwrap_err().to_string();
    assert!(err.contains("--baseline") && err.contains("rps"), "{err}");
    assert!(heads.lock().unwrap().is_empty(), "the run started anyway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_thresholds_fail_when_no_request_got_a_response() {
    // Every response is malformed: all requests are protocol errors without a latency.
    let (addr, _) = raw_server(b"NOT HTTP\r\n\r\n").await;
    let mut a = LoadArgs::new(format!("http://{addr}/"));
    a.requests = Some(5);
    a.connections = 1;
    let r = load(&a).await.unwrap();
    assert_eq!(r.errors.protocol, 5);
    a.thresholds = vec!["p99<200ms".into()];
    assert_eq!(
        run_load(a.clone()).await.unwrap(),
        1,
        "p99<200ms passed on no samples"
    );
    // Error thresholds still read the run as it was.
    a.thresholds = vec!["errors>=5".into()];
    assert_eq!(run_load(a).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_without_a_scheme_say_so() {
    for url in ["127.0.0.1:8080/", "localhost:8080"] {
        let err = load(&LoadArgs::new(url)).await.unwrap_err().to_string();
        assert!(
            err.contains("missing scheme") && err.contains(&format!("http://{url}")),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_refuses_options_that_cannot_give_a_meaningful_report() {
    let (addr, heads) = raw_server(OK).await;
    let url = format!("http://{addr}/");
    let err = |a: BenchArgs| async move { run_bench(a).await.unwrap_err().to_string() };
    let mut a = BenchArgs::new(url.clone());
    a.min_success_rate = "150%".into();
    assert!(err(a).await.contains("at most 100%"));
    let mut a = BenchArgs::new(url.clone());
    a.base_concurrency = 0;
    assert!(err(a).await.contains("--base-concurrency"));
    let mut a = BenchArgs::new(url.clone());
    a.pid = Some(u32::MAX);
    assert!(err(a).await.contains("no such process"));
    let e = err(BenchArgs::new(format!("ws://{addr}/"))).await;
    assert!(e.contains("scalewise load"), "{e}");
    let base = common::temp_path("bench-base.json");
    std::fs::write(&base, "{}").unwrap();
    let mut a = BenchArgs::new(url);
    a.baseline = Some(base);
    assert!(err(a).await.contains("--baseline"));
    assert!(heads.lock().unwrap().is_empty(), "a phase ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_with_a_repeated_column_and_a_scenario_of_zero_weights_are_refused() {
    let (addr, heads) = raw_server(OK).await;
    let csv = common::temp_path("dup.csv");
    std::fs::write(&csv, "user,user\nx,y\n").unwrap();
    let file = common::temp_path("dup.toml");
    std::fs::write(
        &file,
        format!(
            "[data]\ncsv = \"{}\"\n[[steps]]\nname = \"a\"\nurl = \"http://{addr}/{{{{user}}}}\"\n",
            csv.display()
        ),
    )
    .unwrap();
    let mut a = LoadArgs::new("unused");
    a.url = None;
    a.scenario = Some(file.clone());
    a.requests = Some(2);
    let e = load(&a).await.unwrap_err().to_string();
    assert!(e.contains("column `user` appears twice"), "{e}");
    std::fs::write(
        &file,
        format!("[[steps]]\nname = \"a\"\nurl = \"http://{addr}/\"\nweight = 0\n"),
    )
    .unwrap();
    let e = load(&a).await.unwrap_err().to_string();
    assert!(e.contains("line 4") && e.contains("weight 0"), "{e}");
    assert!(heads.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cacert_without_certificates_is_an_error_not_an_unknown_issuer() {
    let (addr, _pem) = common::tls_server().await;
    let ca = common::temp_path("not-a-cert.pem");
    std::fs::write(&ca, "just text\n").unwrap();
    let mut a = LoadArgs::new(format!("https://{addr}/"));
    a.cacert = Some(ca);
    a.requests = Some(1);
    let e = load(&a).await.unwrap_err().to_string();
    assert!(
        e.contains("--cacert") && e.contains("no PEM certificate"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_says_why_requests_failed() {
    let (addr, _) = raw_server(b"HTTP/1.1 600 Nope\r\nContent-Length: 0\r\n\r\n").await;
    let mut a = LoadArgs::new(format!("http://{addr}/"));
    a.requests = Some(20);
    a.connections = 2;
    let r = load(&a).await.unwrap();
    // A status outside 100-599 is no success, and the reason is in the report.
    assert_eq!((r.ok, r.errors.protocol), (0, 20), "{:?}", r.statuses);
    assert_eq!(
        r.error_messages.get("protocol").map(String::as_str),
        Some("invalid status code 600 (expected 100-599)"),
        "{:?}",
        r.error_messages
    );
    assert_eq!(r.error_messages.len(), 1);
    assert!(
        r.text().contains("first protocol  invalid status code 600"),
        "{}",
        r.text()
    );
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["error_messages"]["protocol"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shaped_rate_is_shown_against_what_was_scheduled_not_only_its_peak() {
    let (addr, _) = raw_server(OK).await;
    let mut a = LoadArgs::new(format!("http://{addr}/"));
    a.rate = Some(200.0);
    a.shape = "ramp".into();
    a.duration = Some("1s".into());
    a.connections = 4;
    let r = load(&a).await.unwrap();
    // Ramp 0 → 200 req/s over 1 s: ∫ = 100 requests, half the peak on average.
    let due = r.requests + r.interrupted_requests + r.missed;
    assert!((95..=101).contains(&due), "{due} due");
    let text = r.text();
    let rate = text.lines().find(|l| l.starts_with("Rate")).unwrap();
    assert!(
        rate.contains("200.0 req/s at the peak (ramp from 0)")
            && rate.contains(&format!(
                "{:.1} req/s scheduled on average",
                due as f64 / r.duration_s
            )),
        "{rate}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_trusts_a_private_ca_with_cacert() {
    let (addr, pem) = common::tls_server().await;
    let ca = common::temp_path("bench-ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let mut a = BenchArgs::new(format!("https://{addr}/"));
    a.quick = true;
    a.max_connections = Some(4);
    a.cacert = Some(ca);
    let r = scalewise_load::bench::suite(&a).await.unwrap();
    // Without the CA every request would fail the handshake (the target is unreachable).
    assert_eq!(r.error_rate, 0.0);
    assert!(r.rps > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_against_an_http1_only_server_says_why_it_fails() {
    // Answers the h2 preface with an HTTP/1.1 response, as an HTTP/1.1-only server does.
    let (addr, _) = raw_server(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n").await;
    let mut a = LoadArgs::new(format!("http://{addr}/"));
    a.http2 = true;
    a.connections = 1;
    a.requests = Some(3);
    let r = load(&a).await.unwrap();
    assert_eq!(r.errors.total, 3, "{:?}", r.errors);
    assert_eq!(r.error_messages.len(), 1, "{:?}", r.error_messages);
    let m = r.error_messages.values().next().unwrap();
    assert!(
        !m.is_empty() && !m.contains("HTTP/2 exchange failed"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_users_back_off_from_a_dead_origin_instead_of_hammering_it() {
    let (addr, heads) = raw_server(OK).await;
    let dead = common::dead_port();
    let file = common::temp_path("dead.toml");
    std::fs::write(
        &file,
        format!(
            "[[steps]]\nname = \"ok\"\nurl = \"http://{addr}/\"\n[[steps]]\nname = \"dead\"\nurl = \"http://127.0.0.1:{dead}/\"\n"
        ),
    )
    .unwrap();
    let mut a = LoadArgs::new("unused");
    a.url = None;
    a.scenario = Some(file);
    a.connections = 2;
    a.duration = Some("500ms".into());
    let r = load(&a).await.unwrap();
    // Backing off 10, 20, 40, 80, then 100 ms, a user tries a dead origin at most ~8 times in
    // 500 ms (fewer on a slow machine); without backoff it was thousands of connects a second.
    let dead_step = &r.steps[1];
    assert!(
        (1..=2 * 12).contains(&dead_step.requests),
        "{} attempts on the dead origin",
        dead_step.requests
    );
    assert_eq!(dead_step.errors, dead_step.requests);
    assert!(!heads.lock().unwrap().is_empty(), "the live step still ran");
    let why = r.error_messages.get("connect").cloned().unwrap_or_default();
    assert!(why.to_lowercase().contains("refused"), "{why:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_report_paths_are_refused_before_the_run() {
    let (addr, heads) = raw_server(OK).await;
    let missing_dir = common::temp_path("no-such-dir").join("r.json");
    let mut a = LoadArgs::new(format!("http://{addr}/"));
    a.requests = Some(5);
    a.json = Some(missing_dir);
    let e = run_load(a.clone()).await.unwrap_err().to_string();
    assert!(e.contains("--json") && e.contains("no-such-dir"), "{e}");
    a.json = None;
    a.html = Some(std::env::temp_dir());
    let e = run_load(a).await.unwrap_err().to_string();
    assert!(e.contains("--html") && e.contains("is a directory"), "{e}");
    let mut b = BenchArgs::new(format!("http://{addr}/"));
    b.json = Some(common::temp_path("no-such-dir-2").join("b.json"));
    let e = run_bench(b).await.unwrap_err().to_string();
    assert!(e.contains("--json"), "{e}");
    assert!(heads.lock().unwrap().is_empty(), "a run started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn think_time_is_refused_in_the_open_model() {
    let (addr, heads) = raw_server(OK).await;
    let mut a = LoadArgs::new(format!("http://{addr}/"));
    a.rate = Some(100.0);
    a.duration = Some("1s".into());
    a.think_time = Some("50ms".into());
    // It used to run at a fraction of the rate, counting the rest as missed.
    let e = load(&a).await.unwrap_err().to_string();
    assert!(e.contains("--think-time") && e.contains("--rate"), "{e}");
    assert!(heads.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_url_on_a_server_that_does_not_upgrade_says_so() {
    let (addr, _) = raw_server(OK).await;
    let mut a = LoadArgs::new(format!("ws://{addr}/"));
    a.connections = 1;
    a.requests = Some(2);
    let r = load(&a).await.unwrap();
    assert_eq!(r.errors.total, 2, "{:?}", r.errors);
    let why: Vec<&String> = r.error_messages.values().collect();
    assert!(
        why.len() == 1 && why[0].starts_with("WebSocket handshake: ") && why[0].contains("200"),
        "{why:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_extraction_names_the_variable_and_the_path() {
    let (addr, _) = raw_server(OK).await;
    let file = common::temp_path("extract.toml");
    std::fs::write(
        &file,
        format!("[[steps]]\nname = \"a\"\nurl = \"http://{addr}/\"\nextract = {{ token = \"$.token\" }}\n"),
    )
    .unwrap();
    let mut a = LoadArgs::new("unused");
    a.url = None;
    a.scenario = Some(file);
    a.requests = Some(2);
    a.connections = 1;
    let r = load(&a).await.unwrap();
    assert_eq!(r.errors.protocol, 2);
    assert_eq!(
        r.error_messages.get("protocol").map(String::as_str),
        Some("extract `token`: `$.token` not found in the response (the body is not JSON)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_shows_error_messages_escaped_and_thresholds_without_samples() {
    let (addr, _) = raw_server(b"<script>alert(1)</script>\r\n\r\n").await;
    let html = common::temp_path("errors.html");
    let mut a = LoadArgs::new(format!("http://{addr}/"));
    a.requests = Some(2);
    a.connections = 1;
    a.html = Some(html.clone());
    a.thresholds = vec!["p99<1s".into()];
    assert_eq!(run_load(a).await.unwrap(), 1);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("First error by category") && page.contains("bad response head"));
    assert!(page.contains("no latency samples") && !page.contains("NaN"));
    assert!(!page.contains("<script>"));
}
