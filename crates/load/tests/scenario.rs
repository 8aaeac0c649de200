//! Scenario files: extraction, templating, CSV rows, weights and line-numbered errors.

mod common;

use scalewise_load::{load, LoadArgs, Scenario, ScenarioFormat};
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
