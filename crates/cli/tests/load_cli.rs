//! `scalewise load` usage errors: arguments that used to be silently ignored or adjusted are
//! refused with exit code 2 and a message naming the flag, before any request is sent.
mod common;

use std::process::Command;

/// Runs `scalewise load ARGS` (2 requests). A run that is (wrongly) allowed to start succeeds
/// against `common::ok_server`, so only a usage error makes the exit code 2.
fn load(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scalewise"))
        .arg("load")
        .args(args)
        .args(["-n", "2", "-c", "1", "--no-progress"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn zero_threads_is_a_usage_error() {
    let url = format!("http://{}/", common::ok_server());
    let (code, stdout, stderr) = load(&["--threads", "0", &url]);
    assert_eq!(code, Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("--threads") && stderr.contains("at least 1"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
    // One thread is fine.
    let (code, _, stderr) = load(&["--threads", "1", &url]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_url_next_to_a_scenario_is_a_usage_error() {
    let addr = common::ok_server();
    let file = std::env::temp_dir().join(format!("scalewise-cli-{}-both.toml", std::process::id()));
    std::fs::write(
        &file,
        format!("[[steps]]\nname = \"a\"\nurl = \"http://{addr}/\"\n"),
    )
    .unwrap();
    let scenario = file.to_str().unwrap();
    let (code, stdout, stderr) = load(&["--scenario", scenario, &format!("http://{addr}/x")]);
    assert_eq!(code, Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("--scenario replaces the URL argument; remove one"),
        "{stderr}"
    );
    // The scenario alone runs.
    let (code, _, stderr) = load(&["--scenario", scenario]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(code, Some(0), "{stderr}");
}
