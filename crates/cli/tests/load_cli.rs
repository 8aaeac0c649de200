//! `scalewise load` usage errors: arguments that used to be silently ignored or adjusted are
//! refused with exit code 2 and a message naming the flag, before any request is sent.
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;

/// A keep-alive HTTP/1.1 server on a thread per connection that answers every request with
/// `ok`: a run that is (wrongly) allowed to start succeeds against it, so only a usage error
/// makes the exit code 2.
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
    let url = format!("http://{}/", server());
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
    let addr = server();
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
