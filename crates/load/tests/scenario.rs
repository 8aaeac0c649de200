//! Scenario files: HTTP and WebSocket steps, extraction, templating, CSV rows, weights, checks and line-numbered errors.

mod common;

use scalewise_load::{load, load_until, run_load, LoadArgs, Scenario, ScenarioFormat, Stop};
use std::sync::atomic::Ordering;

fn scenario_args(path: std::path::PathBuf) -> LoadArgs {
    let mut a = LoadArgs::new("unused");
    a.url = None;
    a.scenario = Some(path);
    a
}

/// A shop scenario against `addr`: `me` only succeeds with the token extracted from `login`,
/// `item` only with the extracted id 7.
fn shop_scenario(
    addr: std::net::SocketAddr,
    tag: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let csv = common::temp_path(&format!("users-{tag}.csv"));
    std::fs::write(&csv, "user,item\nalice,7\nbob,7\n").unwrap();
    let file = common::temp_path(&format!("s-{tag}.toml"));
    std::fs::write(
        &file,
        format!(
            r#"
name = "shop"
[vars]
base = "http://{addr}"
[data]
csv = "{csv}"

[[steps]]
name = "login"
method = "POST"
url = "{{{{base}}}}/login"
headers = {{ Content-Type = "application/json" }}
body = '{{"user":"{{{{user}}}}"}}'
on_start = true
extract = {{ token = "$.token", first = "$.items[0].id", req = "header:X-Request" }}

[[steps]]
name = "me"
url = "{{{{base}}}}/me"
headers = {{ Authorization = "Bearer {{{{token}}}}" }}

[[steps]]
name = "item"
url = "{{{{base}}}}/item/{{{{first}}}}"
weight = 2
"#,
            csv = csv.display()
        ),
    )
    .unwrap();
    (file, csv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toml_scenario_extracts_and_templates() {
    let (addr, state) = common::server().await;
    let (file, csv) = shop_scenario(addr, "h1");
    let mut a = scenario_args(file.clone());
    a.connections = 2;
    a.duration = Some("300ms".into());
    let r = load(&a).await.unwrap();
    assert_eq!(r.protocol, "scenario");
    assert!(r.requests > 10, "{}", r.requests);
    assert_eq!(
        state.h2.load(Ordering::SeqCst),
        0,
        "HTTP/1.1 unless --http2"
    );
    // `me` only succeeds with the extracted token, `item` only with the extracted id 7.
    assert_eq!(r.errors.total, 0, "{:?} {:?}", r.errors, r.statuses);
    let names: Vec<&str> = r.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["login", "me", "item"]);
    assert_eq!(r.steps[0].requests, 2, "login runs once per user");
    // Sequence mode with weight 2: `item` runs twice per iteration.
    let (me, item) = (r.steps[1].requests, r.steps[2].requests);
    // Each of the 2 users may be cut off by the deadline after `me` and before its two `item`s.
    assert!(item + 4 >= 2 * me && item <= 2 * me, "me {me} item {item}");
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(csv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_over_http2_extracts_from_h2_responses() {
    let (addr, state) = common::server().await;
    let (file, csv) = shop_scenario(addr, "h2");
    let mut a = scenario_args(file.clone());
    a.http2 = true;
    a.connections = 2;
    a.requests = Some(20);
    let r = load(&a).await.unwrap();
    assert_eq!(r.errors.total, 0, "{:?} {:?}", r.errors, r.statuses);
    assert_eq!(r.requests, 20);
    // Every request the server saw came over HTTP/2, each user on its own connection (plus
    // the reachability probe's connection, which sends nothing).
    assert_eq!(state.h2.load(Ordering::SeqCst), 20);
    assert_eq!(state.count.load(Ordering::SeqCst), 20);
    assert_eq!(state.conns.load(Ordering::SeqCst), 3);
    assert_eq!(r.steps[0].requests, 2, "login runs once per user");

    a.h2_connections = Some(1);
    let e = load(&a).await.unwrap_err().to_string();
    assert!(
        e.contains("--h2-connections does not apply to scenarios"),
        "{e}"
    );
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(csv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_weighted_scenario_runs() {
    let (addr, _) = common::server().await;
    let file = common::temp_path("s.yaml");
    std::fs::write(
        &file,
        format!(
            "pick: weighted\nvars:\n  base: http://{addr}\nsteps:\n  - name: ok\n    url: \"{{{{base}}}}/\"\n    weight: 3\n  - name: missing\n    url: \"{{{{base}}}}/item/9\"\n    weight: 1\n"
        ),
    )
    .unwrap();
    let mut a = scenario_args(file.clone());
    a.connections = 2;
    a.requests = Some(200);
    let r = load(&a).await.unwrap();
    assert_eq!(r.requests, 200);
    let (ok, missing) = (r.steps[0].requests, r.steps[1].requests);
    assert_eq!(ok + missing, 200);
    assert_eq!(r.errors.http_4xx, missing);
    // 3:1 weights; 200 draws keep the share within a wide band.
    assert!((100..=185).contains(&ok), "ok {ok} missing {missing}");
    let _ = std::fs::remove_file(file);
}

fn err_of(text: &str, format: ScenarioFormat) -> String {
    Scenario::parse(text, format, None).unwrap_err().to_string()
}

#[test]
fn bad_scenario_files_name_line_and_field() {
    let e = err_of(
        "[[steps]]\nname = \"a\"\nurl = \"http://x/\"\nmethod = 12\n",
        ScenarioFormat::Toml,
    );
    assert!(e.contains("line 4") && e.contains("string"), "{e}");
    let e = err_of(
        "[[steps]]\nname = \"a\"\nurl = \"http://x/{{oops\"\n",
        ScenarioFormat::Toml,
    );
    assert!(e.contains("line 3") && e.contains("unclosed"), "{e}");
    let e = err_of(
        "[[steps]]\nname = \"a\"\nurl = \"http://x/\"\nextract = { t = \"token\" }\n",
        ScenarioFormat::Toml,
    );
    assert!(e.contains("line 4") && e.contains("JSON path"), "{e}");
    let e = err_of(
        "[[steps]]\nname = \"a\"\nurl = \"http://x/\"\ncolour = \"red\"\n",
        ScenarioFormat::Toml,
    );
    assert!(e.contains("line 4") && e.contains("colour"), "{e}");
    let e = err_of(
        "[[steps]]\nname = \"a\"\n\nurl = \"http://x/{{nope}}\"\n",
        ScenarioFormat::Toml,
    );
    assert!(
        e.contains("line 4") && e.contains("unknown variable `nope`") && e.contains("`url`"),
        "{e}"
    );
    let e = err_of(
        "steps:\n  - name: a\n    url: http://x/\n    think_time: soon\n",
        ScenarioFormat::Yaml,
    );
    assert!(e.contains("line 4") && e.contains("think_time"), "{e}");
    let e = err_of("steps:\n  - name: a\n    method: 5\n", ScenarioFormat::Yaml);
    assert!(e.contains("line 3"), "{e}");
    let e = err_of("steps: []\n", ScenarioFormat::Yaml);
    assert!(e.contains("at least one step"), "{e}");
    let e = err_of(
        "[data]\ncsv = \"/nonexistent/rows.csv\"\n[[steps]]\nname = \"a\"\nurl = \"http://x/\"\n",
        ScenarioFormat::Toml,
    );
    assert!(e.contains("line 2") && e.contains("data.csv"), "{e}");
}

/// A chat scenario: log in over HTTP (token `tok-<vu>`), open the chat WebSocket with the token
/// in the URL, send a templated message, wait for the reply that quotes the token, extract its
/// `id` and fetch `/item/{id}` (which only exists for the id the reply carries).
fn chat_scenario(
    http: std::net::SocketAddr,
    ws_url: &str,
    say: &str,
    recv_timeout: &str,
) -> String {
    format!(
        r#"
name = "chat"
[vars]
base = "http://{http}"

[[steps]]
name = "login"
method = "POST"
url = "{{{{base}}}}/login"
body = '{{"user":"{{{{vu}}}}"}}'
on_start = true
extract = {{ token = "$.token" }}

[[steps]]
name = "chat"
ws = "{ws_url}"

[[steps.actions]]
send = '{{"say":"{say}"}}'

[[steps.actions]]
recv = "reply"
match = {{ "$.type" = "said", "$.from" = "{{{{token}}}}" }}
contains = "{say}"
timeout = "{recv_timeout}"
extract = {{ item = "$.id" }}

[[steps]]
name = "item"
url = "{{{{base}}}}/item/{{{{item}}}}"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_step_uses_the_http_token_and_feeds_a_later_http_step() {
    let (http, _) = common::server().await;
    let chat = common::chat_server().await;
    let file = common::temp_path("chat.toml");
    std::fs::write(
        &file,
        chat_scenario(
            http,
            &format!("ws://{chat}/chat?token={{{{token}}}}"),
            "hello from user {{vu}}",
            "5s",
        ),
    )
    .unwrap();
    let mut a = scenario_args(file.clone());
    a.connections = 2;
    a.requests = Some(22);
    let r = load(&a).await.unwrap();
    // The upgrade succeeds only with the token from `login`; the reply only matches when it
    // quotes that token; `item` only succeeds with the id extracted from the reply.
    assert_eq!(r.errors.total, 0, "{:?} {:?}", r.errors, r.statuses);
    let names: Vec<&str> = r.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["login", "chat", "chat.reply", "item"]);
    let (chat, reply, item) = (
        r.steps[1].requests,
        r.steps[2].requests,
        r.steps[3].requests,
    );
    // 22 turns: one login per user, then chat and item alternate per user.
    assert_eq!(r.steps[0].requests + chat + item, 22);
    assert_eq!(reply, chat, "every session got its reply");
    assert!(item <= chat && chat <= item + 2, "chat {chat} item {item}");
    assert!(
        r.steps[2].latency.max_ms > 0.0,
        "send → reply latency recorded"
    );
    assert_eq!(r.statuses.get("101").copied(), Some(chat));
    let ws = r.websocket.expect("message counts for WebSocket steps");
    assert_eq!(ws.mode, "scenario");
    assert_eq!(ws.messages_sent, chat);
    // The greeting is received (and skipped: it does not match) before each reply.
    assert_eq!(ws.messages_received, 2 * chat);

    // Without the token the server refuses the upgrade: a 4xx on the step's own entry, no
    // reply, and `item` renders without an id (404).
    std::fs::write(
        &file,
        chat_scenario(http, &format!("ws://{chat}/chat"), "hi", "5s"),
    )
    .unwrap();
    a.connections = 1;
    a.requests = Some(5);
    let r = load(&a).await.unwrap();
    let (chat, reply, item) = (&r.steps[1], &r.steps[2], &r.steps[3]);
    assert_eq!((chat.requests, chat.errors), (2, 2));
    assert_eq!(reply.requests, 0);
    assert_eq!((item.requests, item.errors), (2, 2));
    assert_eq!(r.errors.http_4xx, 4, "{:?}", r.errors);
    let _ = std::fs::remove_file(file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_reply_that_never_comes_is_a_timeout() {
    let (http, _) = common::server().await;
    let chat = common::chat_server().await;
    let file = common::temp_path("silence.toml");
    // The server never answers `silence`; each `recv` gives up after its own 50 ms timeout
    // (the run's --timeout stays at 30 s).
    std::fs::write(
        &file,
        chat_scenario(
            http,
            &format!("ws://{chat}/chat?token={{{{token}}}}"),
            "silence",
            "50ms",
        ),
    )
    .unwrap();
    let mut a = scenario_args(file.clone());
    a.connections = 1;
    a.requests = Some(5);
    let r = load(&a).await.unwrap();
    let (chat, reply) = (&r.steps[1], &r.steps[2]);
    assert_eq!(
        (chat.requests, chat.errors),
        (2, 0),
        "the handshakes succeed"
    );
    assert_eq!((reply.requests, reply.errors), (2, 2));
    assert_eq!(r.errors.timeout, 2, "{:?}", r.errors);
    let _ = std::fs::remove_file(file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_websocket_step_offers_http1_even_with_http2() {
    let (addr, pem) = common::wss_server().await;
    let ca = common::temp_path("wss-step.pem");
    std::fs::write(&ca, pem).unwrap();
    let file = common::temp_path("wss.yaml");
    std::fs::write(
        &file,
        format!(
            "steps:\n  - name: echo\n    ws: wss://{addr}/\n    actions:\n      - send: ping {{{{vu}}}}\n      - recv: pong\n        contains: ping\n"
        ),
    )
    .unwrap();
    let mut a = scenario_args(file.clone());
    // `--http2` makes HTTP steps offer ALPN h2; this server only speaks http/1.1, so the
    // handshake succeeds only if WebSocket steps still offer http/1.1.
    a.http2 = true;
    a.cacert = Some(ca.clone());
    a.connections = 2;
    a.requests = Some(10);
    let r = load(&a).await.unwrap();
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    assert_eq!((r.steps[0].requests, r.steps[1].requests), (10, 10));
    assert_eq!(r.websocket.unwrap().messages_received, 10);
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(ca);
}

#[test]
fn bad_websocket_steps_name_line_and_field() {
    let ws = "[[steps]]\nname = \"chat\"\nws = \"ws://x/\"\n";
    let cases: [(String, ScenarioFormat, &[&str]); 19] = [
        (
            format!("{ws}method = \"POST\"\n"),
            ScenarioFormat::Toml,
            &["line 4", "step `chat` field `method`", "WebSocket"],
        ),
        (
            format!("{ws}[[steps.actions]]\nrecv = \"reply\"\ntimeout = \"soon\"\n"),
            ScenarioFormat::Toml,
            &["line 6", "field `timeout`"],
        ),
        (
            format!("{ws}[[steps.actions]]\nsend = \"hi\"\ntimeout = \"1s\"\n"),
            ScenarioFormat::Toml,
            &["line 4", "`timeout` applies to `recv`"],
        ),
        (
            format!("{ws}actions = [{{ recv = \"r\", extract = {{ t = \"header:X\" }} }}]\n"),
            ScenarioFormat::Toml,
            &["line 4", "`header:x`", "JSON path"],
        ),
        (
            format!("{ws}actions = [{{ sned = \"hi\" }}]\n"),
            ScenarioFormat::Toml,
            &["line 4", "sned"],
        ),
        (
            format!("{ws}actions = [{{ send = \"{{{{nope}}}}\" }}]\n"),
            ScenarioFormat::Toml,
            &["line 4", "field `send`", "unknown variable `nope`"],
        ),
        (
            "[[steps]]\nname = \"chat\"\nurl = \"ws://x/\"\n".into(),
            ScenarioFormat::Toml,
            &["line 3", "field `url`", "`ws = "],
        ),
        (
            "steps:\n  - name: chat\n    ws: ws://x/\n    actions:\n      - send: hi\n      - recv: reply\n        contians: hi\n".into(),
            ScenarioFormat::Yaml,
            &["line 7", "contians"],
        ),
        (
            "steps:\n  - name: chat\n    ws: ws://x/\n    actions:\n      - send: hi\n        recv: reply\n".into(),
            ScenarioFormat::Yaml,
            &["line 6", "either `send` or `recv`"],
        ),
        // Binary frames: bad encodings name the line and field of the value.
        (
            format!("{ws}[[steps.actions]]\nsend_hex = \"0g\"\n"),
            ScenarioFormat::Toml,
            &["line 5", "field `send_hex`", "`0g` is not hex", "`g`", "pairs of hex digits"],
        ),
        (
            format!("{ws}[[steps.actions]]\nsend_hex = \"abc\"\n"),
            ScenarioFormat::Toml,
            &["line 5", "field `send_hex`", "odd number"],
        ),
        (
            format!("{ws}[[steps.actions]]\nrecv = \"r\"\nbinary = true\nequals_base64 = \"3q2*\"\n"),
            ScenarioFormat::Toml,
            &["line 7", "field `equals_base64`", "`3q2*` is not base64", "`*`"],
        ),
        (
            format!("{ws}[[steps.actions]]\nsend_base64 = \"3q2+7\"\n"),
            ScenarioFormat::Toml,
            &["line 5", "field `send_base64`", "is not base64"],
        ),
        (
            format!("{ws}actions = [{{ send_hex = \"zz{{{{vu}}}}\" }}]\n"),
            ScenarioFormat::Toml,
            &["line 4", "`z` cannot appear in hex (outside `{{...}}`)"],
        ),
        (
            "steps:\n  - name: chat\n    ws: ws://x/\n    actions:\n      - recv: r\n        binary: true\n        contains_hex: \"ff 0\"\n".into(),
            ScenarioFormat::Yaml,
            &["line 7", "field `contains_hex`", "odd number"],
        ),
        (
            format!("{ws}[[steps.actions]]\nrecv = \"r\"\ncontains_hex = \"ff\"\n"),
            ScenarioFormat::Toml,
            &["line 4", "`contains_hex` matches binary frames: add `binary = true`"],
        ),
        (
            format!("{ws}[[steps.actions]]\nrecv = \"r\"\nbinary = true\nequals = \"x\"\n"),
            ScenarioFormat::Toml,
            &["line 4", "`equals` matches text messages", "`equals_hex`"],
        ),
        (
            format!("{ws}[[steps.actions]]\nsend_hex = \"ff\"\nbinary = true\n"),
            ScenarioFormat::Toml,
            &["line 4", "`binary` applies to `recv` actions, not `send_hex`"],
        ),
        (
            format!("{ws}[[steps.actions]]\nsend = \"a\"\nsend_base64 = \"AA==\"\n"),
            ScenarioFormat::Toml,
            &["line 4", "`send` or `send_base64`, not both"],
        ),
    ];
    for (text, format, want) in cases {
        let e = err_of(&text, format);
        for w in want {
            assert!(e.contains(w), "{text}\n→ {e}\n(missing {w})");
        }
    }
}

/// Three checked steps: `flaky` gets `{"ok":false}` on every 5th request (its status and
/// header checks still pass), `gone` is a 404 its check accepts, `down` never answers.
fn checks_scenario(addr: std::net::SocketAddr, dead: u16) -> String {
    format!(
        r#"
[vars]
base = "http://{addr}"
want = "7"

[[steps]]
name = "flaky"
url = "{{{{base}}}}/every/5"
check = {{ status = 200, contains = '"ok":true', match = {{ "$.ok" = "true", "$.items[0].id" = "{{{{want}}}}", "header:Content-Type" = "application/json" }} }}

[[steps]]
name = "gone"
url = "{{{{base}}}}/item/9"

[steps.check]
status = [200, 404]

[[steps]]
name = "down"
url = "http://127.0.0.1:{dead}/"
check = {{ status = 200 }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_are_counted_exactly_and_feed_thresholds() {
    let (addr, _) = common::server().await;
    let file = common::temp_path("checks.toml");
    std::fs::write(&file, checks_scenario(addr, common::dead_port())).unwrap();
    let json = common::temp_path("checks.json");
    let html = common::temp_path("checks.html");
    let mut a = scenario_args(file.clone());
    a.connections = 1;
    // 30 turns in sequence: each step runs 10 times; `flaky` fails its body checks on its
    // 5th and 10th request.
    a.requests = Some(30);
    let r = load(&a).await.unwrap();
    let c = r.checks.as_ref().expect("the scenario has checks");
    let counts: Vec<(&str, &str, u64, u64)> = c
        .list
        .iter()
        .map(|c| (c.name.as_str(), c.step.as_str(), c.passes, c.fails))
        .collect();
    assert_eq!(
        counts,
        [
            ("flaky.status", "flaky", 10, 0),
            ("flaky.contains", "flaky", 8, 2),
            ("flaky.$.items[0].id", "flaky", 8, 2),
            ("flaky.$.ok", "flaky", 8, 2),
            ("flaky.header:content-type", "flaky", 10, 0),
            ("gone.status", "gone", 10, 0),
            // No response is a failed check, as in k6.
            ("down.status", "down", 0, 10),
        ]
    );
    assert_eq!((c.passes, c.fails), (54, 16));
    assert!((c.rate - 54.0 / 70.0).abs() < 1e-12, "{}", c.rate);
    // Checks do not change error accounting: the accepted 404 is still an `http_4xx`, the
    // failed body checks are not errors.
    assert_eq!(
        (r.errors.total, r.errors.http_4xx, r.errors.connect),
        (20, 10, 10),
        "{:?}",
        r.errors
    );
    assert!(r
        .text()
        .contains("Checks     77.14% passed  (54 passed, 16 failed)"));

    // The same over HTTP/2, whose headers and body come from hyper rather than the raw parser.
    a.http2 = true;
    let h2 = load(&a).await.unwrap();
    assert_eq!(h2.checks.as_ref(), Some(c));
    a.http2 = false;

    a.thresholds = vec!["checks>99%".into()];
    a.json = Some(json.clone());
    a.html = Some(html.clone());
    assert_eq!(
        run_load(a.clone()).await.unwrap(),
        1,
        "77% of checks passed"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["checks"]["passes"], 54);
    assert_eq!(doc["checks"]["fails"], 16);
    assert!(doc["checks"]["rate"].as_f64().unwrap() < 0.78);
    assert_eq!(
        doc["checks"]["list"][1],
        serde_json::json!({"name": "flaky.contains", "step": "flaky", "passes": 8, "fails": 2})
    );
    assert_eq!(doc["thresholds"][0]["pass"], false);
    // Existing fields are unchanged.
    assert_eq!(doc["steps"][0]["name"], "flaky");
    assert_eq!(doc["errors"]["http_4xx"], 10);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<h2>Checks</h2>") && page.contains("flaky.$.ok"),
        "HTML has the checks table"
    );

    a.thresholds = vec!["checks>10%".into()];
    assert_eq!(run_load(a.clone()).await.unwrap(), 0);

    // A baseline whose checks all passed makes this run a regression. (Its throughput and
    // latencies are set so that they cannot regress, whatever this machine's speed.)
    let mut better = doc.clone();
    better["checks"]["rate"] = serde_json::json!(1.0);
    better["rps"] = serde_json::json!(0.0);
    for p in ["p50_ms", "p90_ms", "p99_ms", "p999_ms"] {
        better[p] = serde_json::json!(1e9);
    }
    let base = common::temp_path("checks-base.json");
    std::fs::write(&base, better.to_string()).unwrap();
    a.thresholds.clear();
    a.baseline = Some(base.clone());
    assert_eq!(run_load(a.clone()).await.unwrap(), 1, "checks 100% → 77%");
    better["checks"]["rate"] = serde_json::json!(54.0 / 70.0);
    std::fs::write(&base, better.to_string()).unwrap();
    assert_eq!(run_load(a).await.unwrap(), 0, "the same pass rate");
    for f in [file, json, html, base] {
        let _ = std::fs::remove_file(f);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_threshold_without_checks_is_rejected_before_the_run() {
    let (addr, state) = common::server().await;
    let file = common::temp_path("nochecks.yaml");
    std::fs::write(
        &file,
        format!("steps:\n  - name: a\n    url: http://{addr}/\n"),
    )
    .unwrap();
    let mut a = scenario_args(file.clone());
    a.requests = Some(5);
    a.thresholds = vec!["checks>99%".into()];
    let e = run_load(a).await.unwrap_err().to_string();
    assert!(
        e.contains("checks>99%") && e.contains("no step of this scenario has a `check` table"),
        "{e}"
    );
    assert_eq!(state.count.load(Ordering::SeqCst), 0, "nothing was sent");
    let _ = std::fs::remove_file(file);
}

#[test]
fn bad_checks_name_line_and_field() {
    let step = "[[steps]]\nname = \"a\"\nurl = \"http://x/\"\n";
    let cases: [(String, ScenarioFormat, &[&str]); 8] = [
        (
            format!("{step}check = {{ status = \"ok\" }}\n"),
            ScenarioFormat::Toml,
            &["line 4", "field `check`", "`status` as an HTTP status code"],
        ),
        (
            format!("{step}\n[steps.check]\nstatus = [200, 99]\n"),
            ScenarioFormat::Toml,
            &["line 6", "field `status`", "`99` is not an HTTP status code"],
        ),
        (
            format!("{step}check = {{ bdy = \"x\" }}\n"),
            ScenarioFormat::Toml,
            &["line 4", "unknown field `bdy`", "`contains`"],
        ),
        (
            format!("{step}check = {{ match = {{ \"ok\" = \"true\" }} }}\n"),
            ScenarioFormat::Toml,
            &["line 4", "field `check`", "not a JSON path"],
        ),
        (
            format!("{step}\ncheck = {{ contains = \"{{{{nope}}}}\" }}\n"),
            ScenarioFormat::Toml,
            &["line 5", "field `check.contains`", "unknown variable `nope`"],
        ),
        (
            format!("{step}check = {{}}\n"),
            ScenarioFormat::Toml,
            &["line 4", "field `check`", "checks nothing"],
        ),
        (
            "[[steps]]\nname = \"chat\"\nws = \"ws://x/\"\ncheck = { status = 101 }\n".into(),
            ScenarioFormat::Toml,
            &["line 4", "field `check`", "WebSocket"],
        ),
        (
            "steps:\n  - name: a\n    url: http://x/\n    check:\n      match: { $.id: \"{{id}}\" }\n      status: 700\n".into(),
            ScenarioFormat::Yaml,
            &["line 6", "field `status`", "`700` is not an HTTP status code"],
        ),
    ];
    for (text, format, want) in cases {
        let e = err_of(&text, format);
        for w in want {
            assert!(e.contains(w), "{text}\n→ {e}\n(missing {w})");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_status_is_not_an_error() {
    let (addr, _) = common::server().await;
    let file = common::temp_path("expected.toml");
    let scenario = |expected: &str| {
        format!(
            "[[steps]]\nname = \"gone\"\nurl = \"http://{addr}/item/9\"\n{expected}\n\n[[steps]]\nname = \"other\"\nurl = \"http://{addr}/item/8\"\n"
        )
    };
    let mut a = scenario_args(file.clone());
    a.connections = 1;
    a.requests = Some(20);
    // Both steps answer 404: an error by default...
    std::fs::write(&file, scenario("")).unwrap();
    let r = load(&a).await.unwrap();
    assert_eq!(
        (r.errors.total, r.errors.http_4xx),
        (20, 20),
        "{:?}",
        r.errors
    );
    // ...but not for the step that expects it; the other step's 404s still are.
    std::fs::write(&file, scenario("expected_status = [200, 404]")).unwrap();
    let r = load(&a).await.unwrap();
    assert_eq!(
        (r.errors.total, r.errors.http_4xx),
        (10, 10),
        "{:?}",
        r.errors
    );
    assert_eq!(r.statuses.get("404"), Some(&20), "{:?}", r.statuses);

    let ws = "[[steps]]\nname = \"w\"\nws = \"ws://x/\"\nexpected_status = 404\n[[steps.actions]]\nsend = \"hi\"\n";
    let err = Scenario::parse(ws, ScenarioFormat::Toml, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("field `expected_status`") && err.contains("does not apply to WebSocket"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_websocket_step_keeps_one_session_per_user() {
    let (addr, chat) = common::chat_server_counting().await;
    let opened = &chat.opened;
    let file = common::temp_path("persistent.toml");
    let scenario = |persistent: bool| {
        format!(
            "[[steps]]\nname = \"chat\"\nws = \"ws://{addr}/chat?token=tok-1\"\npersistent = {persistent}\n\n[[steps.actions]]\nsend = '{{\"say\":\"hi {{{{iteration}}}}\"}}'\n\n[[steps.actions]]\nrecv = \"reply\"\nmatch = {{ \"$.type\" = \"said\" }}\n"
        )
    };
    let mut a = scenario_args(file.clone());
    // One user, so which user gets which of the 10 runs cannot change the count.
    a.connections = 1;
    a.requests = Some(10);
    for (persistent, sessions) in [(true, 1), (false, 10)] {
        opened.store(0, Ordering::SeqCst);
        std::fs::write(&file, scenario(persistent)).unwrap();
        let r = load(&a).await.unwrap();
        assert_eq!(r.errors.total, 0, "{:?}", r.errors);
        let reply = r.steps.iter().find(|s| s.name == "chat.reply").unwrap();
        assert_eq!(reply.requests, 10, "persistent = {persistent}");
        // One handshake for the user's whole run, or one per run of the step.
        assert_eq!(
            opened.load(Ordering::SeqCst),
            sessions,
            "persistent = {persistent}"
        );
        assert_eq!(r.statuses.get("101"), Some(&(sessions as u64)));
    }

    let http = "[[steps]]\nname = \"h\"\nurl = \"http://x/\"\npersistent = true\n";
    let err = Scenario::parse(http, ScenarioFormat::Toml, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("field `persistent`"), "{err}");
}

/// Binary frames against the echo server (it echoes text as text and binary as binary, in
/// order): each `recv` skips the message of the other kind echoed just before its match, and
/// a binary `recv` skips a binary frame that does not match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_binary_frames_are_sent_matched_and_skipped() {
    let addr = common::ws_server().await;
    let file = common::temp_path("binary.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[vars]
blob = "3q2+7w=="

[[steps]]
name = "bin"
ws = "ws://{addr}/"

[[steps.actions]]
send = "text {{{{vu}}}}"

[[steps.actions]]
send_hex = "00 01 02 ff"

[[steps.actions]]
recv = "raw"
binary = true
equals_hex = "000102FF"

[[steps.actions]]
send_base64 = "{{{{blob}}}}"

[[steps.actions]]
send = "after {{{{vu}}}}"

[[steps.actions]]
recv = "text"
equals = "after {{{{vu}}}}"

[[steps.actions]]
send_hex = "aa"

[[steps.actions]]
send_base64 = "AbsC"

[[steps.actions]]
recv = "part"
binary = true
contains_hex = "bb"
"#
        ),
    )
    .unwrap();
    let mut a = scenario_args(file.clone());
    a.connections = 2;
    a.requests = Some(10);
    let r = load(&a).await.unwrap();
    assert_eq!(r.errors.total, 0, "{:?}", r.errors);
    let counts: Vec<(&str, u64, u64)> = r
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.requests, s.errors))
        .collect();
    assert_eq!(
        counts,
        [
            ("bin", 10, 0),
            ("bin.raw", 10, 0),
            ("bin.text", 10, 0),
            ("bin.part", 10, 0)
        ]
    );
    let ws = r.websocket.unwrap();
    // Per run 6 messages out and 6 echoed back: 3 matched, 3 skipped (the text before `raw`,
    // the binary frame before `text`, the `aa` frame before `part`).
    assert_eq!((ws.messages_sent, ws.messages_received), (60, 60));

    // A text `recv` never takes a binary frame: it times out (its own 50 ms) although a
    // message arrived. Templated bytes that do not decode fail the send (`protocol`).
    std::fs::write(
        &file,
        format!(
            "[vars]\nodd = \"abc\"\n\n[[steps]]\nname = \"wait\"\nws = \"ws://{addr}/\"\n\n[[steps.actions]]\nsend_hex = \"01\"\n\n[[steps.actions]]\nrecv = \"text\"\ntimeout = \"50ms\"\n\n[[steps]]\nname = \"undecodable\"\nws = \"ws://{addr}/\"\n\n[[steps.actions]]\nsend_hex = \"{{{{odd}}}}\"\n"
        ),
    )
    .unwrap();
    a.connections = 1;
    a.requests = Some(4);
    let r = load(&a).await.unwrap();
    let counts: Vec<(&str, u64, u64)> = r
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.requests, s.errors))
        .collect();
    // Two runs of each step; `undecodable`'s entry has its two handshakes and two failed sends.
    assert_eq!(
        counts,
        [("wait", 2, 0), ("wait.text", 2, 2), ("undecodable", 4, 2)]
    );
    assert_eq!(
        (r.errors.timeout, r.errors.protocol, r.errors.total),
        (2, 2, 4),
        "{:?}",
        r.errors
    );
    assert_eq!(r.websocket.unwrap().messages_sent, 2);
    let _ = std::fs::remove_file(file);
}

/// Two users each wait in a `recv` for a reply the server never sends (60 s timeout) when the
/// run is stopped: the default graceful stop (500 ms) runs out, and each waiting `recv` counts
/// as one interrupted request, while the handshakes before it were recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_recv_still_waiting_at_the_end_is_interrupted() {
    let (addr, chat) = common::chat_server_counting().await;
    let file = common::temp_path("waiting.toml");
    std::fs::write(
        &file,
        format!(
            "[[steps]]\nname = \"chat\"\nws = \"ws://{addr}/chat?token=tok-1\"\n\n[[steps.actions]]\nsend = '{{\"say\":\"silence\"}}'\n\n[[steps.actions]]\nrecv = \"reply\"\nmatch = {{ \"$.type\" = \"said\" }}\ntimeout = \"60s\"\n"
        ),
    )
    .unwrap();
    let mut a = scenario_args(file.clone());
    a.connections = 2;
    a.duration = Some("10m".into());
    let stop = Stop::new();
    let run = tokio::spawn({
        let stop = stop.clone();
        async move { load_until(&a, &stop).await }
    });
    tokio::time::timeout(std::time::Duration::from_secs(30), chat.silences(2))
        .await
        .expect("both users sent their message");
    stop.stop();
    let r = run.await.unwrap().unwrap();
    let counts: Vec<(&str, u64, u64)> = r
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.requests, s.errors))
        .collect();
    assert_eq!(counts, [("chat", 2, 0), ("chat.reply", 0, 0)]);
    assert_eq!(r.interrupted_requests, 2);
    assert_eq!(r.graceful_stop_s, 0.5);
    let _ = std::fs::remove_file(file);
}
