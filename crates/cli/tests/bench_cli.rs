//! `scalewise bench` output switches: `--no-progress` keeps the report, `--quiet` prints nothing.
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;

/// A keep-alive HTTP/1.1 server on a thread per connection that answers every GET with `ok`.
fn server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve(conn));
        }
    });
    addr
}

fn serve(conn: TcpStream) {
    let mut out = conn.try_clone().unwrap();
    let mut lines = BufReader::new(conn);
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => {
                if out
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .is_err()
                {
                    return;
                }
            }
            Ok(_) => {}
        }
    }
}

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
    let addr = server();
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
