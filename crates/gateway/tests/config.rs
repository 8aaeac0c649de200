//! Loading the gateway config: every error names where and what.
use scalewise_gateway::config::AlgorithmName;
use scalewise_gateway::config_file::{load_config, parse_config, Format, LoadErrors};

const BASE: &str = r#"[[listeners]]
addr = "127.0.0.1:8080"

[[routes]]
upstream = "app"

[upstreams.app]
algorithm = "least_conn"
backends = [{ addr = "127.0.0.1:9001" }, { addr = "127.0.0.1:9002" }]

[admin]
addr = "127.0.0.1:9090"
"#;

fn parse(
    text: &str,
    env: &[(&str, &str)],
) -> Result<scalewise_gateway::config::Config, LoadErrors> {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    parse_config(text, Format::Toml, "gw.toml", env)
}

fn one_error(text: &str, env: &[(&str, &str)]) -> String {
    let errs = parse(text, env).unwrap_err();
    assert_eq!(errs.0.len(), 1, "{errs}");
    errs.to_string()
}

#[test]
fn base_config_loads() {
    let cfg = parse(BASE, &[]).unwrap();
    assert_eq!(cfg.upstreams["app"].algorithm, AlgorithmName::LeastConn);
}

#[test]
fn unknown_key_names_file_line_and_key_path() {
    let text = BASE.replace("algorithm = ", "max_conns = 5\nalgorithm = ");
    let msg = one_error(&text, &[]);
    assert!(
        msg.starts_with("gw.toml:8:1: key `upstreams.app.max_conns`"),
        "{msg}"
    );
    assert!(msg.contains("unknown field `max_conns`"), "{msg}");
    // serde lists what would have been accepted.
    assert!(msg.contains("backends"), "{msg}");
}

#[test]
fn bad_duration_names_key_and_value() {
    let text = BASE.replace(
        "addr = \"127.0.0.1:8080\"",
        "addr = \"127.0.0.1:8080\"\nidle_timeout = \"5 parsecs\"",
    );
    let msg = one_error(&text, &[]);
    assert!(
        msg.starts_with("gw.toml:3:1: key `listeners[0].idle_timeout`"),
        "{msg}"
    );
    assert!(msg.contains("parsecs") || msg.contains("unit"), "{msg}");
}

#[test]
fn bad_algorithm_lists_the_valid_names() {
    let msg = one_error(&BASE.replace("least_conn", "fastest"), &[]);
    assert!(
        msg.starts_with("gw.toml:8:1: key `upstreams.app.algorithm`"),
        "{msg}"
    );
    for name in ["fastest", "round_robin", "peak_ewma", "maglev"] {
        assert!(msg.contains(name), "{name} missing: {msg}");
    }
}

#[test]
fn validation_errors_are_located_too() {
    let text = BASE.replace("upstream = \"app\"", "upstream = \"ghost\"");
    let msg = one_error(&text, &[]);
    assert!(
        msg.starts_with("gw.toml:5:1: key `routes[0].upstream`"),
        "{msg}"
    );
    assert!(msg.contains("\"ghost\"") && msg.contains("app"), "{msg}");
}

#[test]
fn env_overrides_apply_and_errors_name_the_variable() {
    let cfg = parse(
        BASE,
        &[
            ("SCALEWISE_ADMIN__ADDR", "127.0.0.1:9191"),
            ("SCALEWISE_UPSTREAMS__APP__ALGORITHM", "maglev"),
            ("SCALEWISE_LISTENERS__0__IDLE_TIMEOUT", "3s"),
            ("SCALEWISE_REQUIRE_SERVICES", "1"),
        ],
    )
    .unwrap();
    assert_eq!(cfg.admin.addr.port(), 9191);
    assert_eq!(cfg.upstreams["app"].algorithm, AlgorithmName::Maglev);
    assert_eq!(cfg.listeners[0].idle_timeout.as_secs(), 3);

    let msg = one_error(BASE, &[("SCALEWISE_UPSTREAMS__APP__ALGORITHM", "fastest")]);
    assert!(
        msg.starts_with("environment variable SCALEWISE_UPSTREAMS__APP__ALGORITHM: key `upstreams.app.algorithm`"),
        "{msg}"
    );
    let msg = one_error(BASE, &[("SCALEWISE_ADMIN__ADDR", "nowhere")]);
    assert!(
        msg.contains("SCALEWISE_ADMIN__ADDR") && msg.contains("nowhere"),
        "{msg}"
    );
    let msg = one_error(BASE, &[("SCALEWISE_ADMIN__BOGUS", "1")]);
    assert!(
        msg.contains("SCALEWISE_ADMIN__BOGUS") && msg.contains("bogus"),
        "{msg}"
    );
    let msg = one_error(
        BASE,
        &[("SCALEWISE_UPSTREAMS__APP__BACKENDS__0__WEIGHT", "0")],
    );
    assert!(
        msg.contains("SCALEWISE_UPSTREAMS__APP__BACKENDS__0__WEIGHT"),
        "{msg}"
    );
}

#[test]
fn json_files_are_accepted() {
    let dir = std::env::temp_dir().join(format!("scalewise-ops-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = parse(BASE, &[]).unwrap();
    let path = dir.join("gw.json");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    assert_eq!(load_config(&path).unwrap(), cfg);

    std::fs::write(&path, "{\n  \"listeners\": [],\n  \"bogus\": true\n}").unwrap();
    let msg = load_config(&path).unwrap_err().to_string();
    assert!(
        msg.contains("gw.json:3:") && msg.contains("key `bogus`"),
        "{msg}"
    );

    let msg = load_config(&dir.join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("missing.toml") && msg.contains("cannot read"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn syntax_errors_have_a_line() {
    let msg = one_error(&BASE.replace("[admin]", "[admin"), &[]);
    assert!(msg.starts_with("gw.toml:11:"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn bad_backend_addresses_name_file_line_and_key() {
    let text = BASE.replace("127.0.0.1:9002", "::1:9002");
    let msg = one_error(&text, &[]);
    assert!(
        msg.starts_with("gw.toml:9:44: key `upstreams.app.backends[1].addr`"),
        "{msg}"
    );
    assert!(
        msg.contains("`::1:9002` is not ip:port, [ipv6]:port or host:port"),
        "{msg}"
    );

    let text = BASE.replace("127.0.0.1:9002", "backend.internal:9002");
    let cfg = parse(&text, &[]).unwrap();
    assert_eq!(
        cfg.upstreams["app"].backends[1].addr.host(),
        Some("backend.internal")
    );
}

#[test]
fn ops_keys_from_the_environment() {
    let cfg = parse(
        BASE,
        &[
            ("SCALEWISE_SERVER__SHUTDOWN_TIMEOUT", "7s"),
            ("SCALEWISE_ADMIN__ENABLED", "false"),
            ("SCALEWISE_UPSTREAMS__APP__RESOLVE_INTERVAL", "1m"),
            (
                "SCALEWISE_LISTENERS__0__TRUSTED_PROXIES",
                "[\"10.0.0.0/8\"]",
            ),
        ],
    )
    .unwrap();
    assert_eq!(cfg.server.shutdown_timeout.as_secs(), 7);
    assert!(!cfg.admin.enabled);
    assert_eq!(cfg.upstreams["app"].resolve_interval.as_secs(), 60);
    assert_eq!(cfg.listeners[0].trusted_proxies.len(), 1);

    let msg = one_error(BASE, &[("SCALEWISE_SERVER__SHUTDOWN_TIMEOUT", "soon")]);
    assert!(
        msg.starts_with("environment variable SCALEWISE_SERVER__SHUTDOWN_TIMEOUT"),
        "{msg}"
    );
    let msg = one_error(
        BASE,
        &[("SCALEWISE_UPSTREAMS__APP__RESOLVE_INTERVAL", "10ms")],
    );
    assert!(
        msg.contains("upstreams.app.resolve_interval") && msg.contains("at least 1s"),
        "{msg}"
    );
}
