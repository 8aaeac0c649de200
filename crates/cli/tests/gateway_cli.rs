//! `scalewise gateway` rejects bad flags and configs with clear messages and a non-zero exit.
use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scalewise"))
        .arg("gateway")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const ONE_LINE: [&str; 4] = ["--listen", "127.0.0.1:1", "--backend", "127.0.0.1:2"];

#[test]
fn bad_flags_are_clap_errors() {
    let (code, err) = run(&[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--listen") && err.contains("required"),
        "{err}"
    );

    let (code, err) = run(&[&ONE_LINE[..], &["--workers", "0"]].concat());
    assert_eq!(code, Some(2));
    assert!(err.contains("thread count from 1 to 1024"), "{err}");

    let (code, err) = run(&[&ONE_LINE[..], &["--algorithm", "fastest"]].concat());
    assert_eq!(code, Some(2));
    assert!(err.contains("fastest") && err.contains("maglev"), "{err}");

    let (code, err) = run(&[&ONE_LINE[..], &["--admin", "nowhere"]].concat());
    assert_eq!(code, Some(2));
    assert!(err.contains("`off`"), "{err}");

    let (code, err) = run(&[&ONE_LINE[..], &["--config", "gw.toml"]].concat());
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot be used with"), "{err}");

    let (code, err) = run(&[&ONE_LINE[..], &["--log-format", "xml"]].concat());
    assert_eq!(code, Some(2));
    assert!(err.contains("human or json"), "{err}");

    let (code, err) = run(&[&ONE_LINE[..], &["--backend", "::1:80"]].concat());
    assert_eq!(code, Some(2));
    assert!(err.contains("[ipv6]:port or host:port"), "{err}");

    let (code, err) = run(&[&ONE_LINE[..], &["--shutdown-timeout", "soon"]].concat());
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--shutdown-timeout") && err.contains("soon"),
        "{err}"
    );
}

#[test]
fn a_backend_name_that_does_not_resolve_is_a_start_error() {
    // `.invalid` never resolves (RFC 6761).
    let (code, err) = run(&["--listen", "127.0.0.1:0", "--backend", "nowhere.invalid:80"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(
            "key `upstreams.default.backends[0].addr`: \"nowhere.invalid:80\" does not resolve"
        ),
        "{err}"
    );
}

#[test]
fn https_backends_need_a_name_to_verify_and_one_scheme() {
    let (code, err) = run(&[
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "https://127.0.0.1:8443",
    ]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("key `upstreams.default.tls.server_name`: got (absent)"),
        "{err}"
    );

    let (code, err) = run(&[
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "https://127.0.0.1:8443",
        "--backend",
        "127.0.0.1:9001",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("every backend is https://"), "{err}");
}

#[test]
fn bad_config_files_name_file_line_and_key() {
    let dir = std::env::temp_dir().join(format!("scalewise-cli-{}-badcfg", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gw.toml");
    std::fs::write(
        &path,
        "[[listeners]]\naddr = \"127.0.0.1:1\"\nmax_conns = 5\n[[routes]]\nupstream = \"a\"\n",
    )
    .unwrap();
    let (code, err) = run(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("gw.toml:3:1: key `listeners[0].max_conns`"),
        "{err}"
    );

    let (code, err) = run(&["--config", dir.join("missing.toml").to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("missing.toml") && err.contains("cannot read"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn public_admin_without_token_is_refused() {
    let (code, err) = run(&[&ONE_LINE[..], &["--admin", "0.0.0.0:0"]].concat());
    assert_eq!(code, Some(2));
    assert!(err.contains("admin.token"), "{err}");
}

#[test]
fn env_overrides_apply_to_the_one_line_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_scalewise"))
        .arg("gateway")
        .args(ONE_LINE)
        .env("SCALEWISE_UPSTREAMS__DEFAULT__ALGORITHM", "fastest")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("environment variable SCALEWISE_UPSTREAMS__DEFAULT__ALGORITHM")
            && err.contains("fastest")
            && err.contains("round_robin"),
        "{err}"
    );
}
