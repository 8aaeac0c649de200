//! `scalewise bench` output switches: `--no-progress` keeps the report, `--quiet` prints nothing.
mod common;

use std::process::Command;

fn bench(addr: std::net::SocketAddr, flag: &str) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scalewise"))
        .args(["bench", &format!("http://{addr}/"), "--quick"])
        .args(["--max-connections", "8", flag])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn no_progress_keeps_the_report_and_quiet_prints_nothing() {
    let addr = common::ok_server();
    let (code, stdout, stderr) = bench(addr, "--no-progress");
    assert!(matches!(code, Some(0 | 1)), "{code:?} {stderr}");
    assert!(
        stdout.contains("Criteria") && stdout.contains("Result:"),
        "{stdout}"
    );
    assert!(
        !stderr.contains("bench: ") && !stdout.contains("bench: "),
        "{stderr}"
    );

    let (code, stdout, stderr) = bench(addr, "--quiet");
    assert!(matches!(code, Some(0 | 1)), "{code:?} {stderr}");
    assert_eq!(stdout, "");
    assert!(!stderr.contains("bench: "), "{stderr}");
}
