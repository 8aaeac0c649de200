//! The real `scalewise gateway` binary with real loopback backends: one-line start, SIGHUP
//! reload, SIGTERM drain. Synchronisation is by polling the admin API and ports with bounded
//! deadlines, never by sleeping a fixed time.
#![cfg(unix)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Mutex};

const DEADLINE: Duration = Duration::from_secs(20);

/// A backend answering its name; `/slow` reports arrival on `arrived` and answers only once
/// `release` yields.
async fn backend(
    name: &'static str,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<()>,
    mpsc::UnboundedSender<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrived_tx, arrived_rx) = mpsc::unbounded_channel();
    let (release_tx, release_rx) = mpsc::unbounded_channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (arrived_tx, release_rx) = (arrived_tx.clone(), release_rx.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (arrived_tx, release_rx) = (arrived_tx.clone(), release_rx.clone());
                    async move {
                        if req.uri().path() == "/slow" {
                            let _ = arrived_tx.send(());
                            release_rx.lock().await.recv().await;
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(name))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, arrived_rx, release_tx)
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn get(addr: SocketAddr, path: &str) -> Result<(StatusCode, String), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    ))
}

/// The gateway process; killed if a test fails half-way.
struct Gateway {
    child: Child,
    log: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn spawn(args: &[&str], dir: &std::path::Path) -> Self {
        let log = dir.join("gateway.log");
        let child = Command::new(env!("CARGO_BIN_EXE_scalewise"))
            .arg("gateway")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls until `check` returns Some, or fails with the gateway's log.
    async fn until<T, F, Fut>(&mut self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "gateway exited ({status}) waiting for {what}:\n{}",
                    self.logs()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn exit_code(&mut self) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gateway did not exit:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn backend_count(admin: SocketAddr) -> Option<usize> {
    let (status, body) = get(admin, "/api/backends").await.ok()?;
    if status != StatusCode::OK {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["upstreams"]["app"].as_array().map(Vec::len)
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("scalewise-cli-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(listen: SocketAddr, admin: SocketAddr, backends: &[SocketAddr]) -> String {
    let list: Vec<_> = backends
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    format!(
        "[[listeners]]\naddr = \"{listen}\"\n\n[[routes]]\nupstream = \"app\"\n\n\
         [upstreams.app]\nbackends = [{}]\n\n[admin]\naddr = \"{admin}\"\n",
        list.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_in_flight_request_then_exits_zero() {
    let (slow, mut arrived, release) = backend("slow").await;
    let dir = scratch("sigterm");
    let (listen, admin) = (free_port(), free_port());
    let path = dir.join("gw.toml");
    std::fs::write(&path, config(listen, admin, &[slow])).unwrap();
    let mut gw = Gateway::spawn(
        &["--config", path.to_str().unwrap(), "--workers", "2"],
        &dir,
    );
    gw.until("admin API", || async { backend_count(admin).await })
        .await;

    let in_flight = tokio::spawn(async move { get(listen, "/slow").await });
    tokio::time::timeout(DEADLINE, arrived.recv())
        .await
        .unwrap()
        .unwrap();

    gw.signal("TERM");
    // Stops accepting: new connections are refused while the slow request is still open.
    gw.until("listener to close", || async {
        TcpStream::connect(listen).await.is_err().then_some(())
    })
    .await;
    assert!(!in_flight.is_finished());

    release.send(()).unwrap();
    let (status, body) = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "slow"));
    assert_eq!(gw.exit_code().await, Some(0), "{}", gw.logs());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_picks_up_a_new_backend() {
    let (a, _, _ra) = backend("a").await;
    let (b, _, _rb) = backend("b").await;
    let dir = scratch("sighup");
    let (listen, admin) = (free_port(), free_port());
    let path = dir.join("gw.toml");
    std::fs::write(&path, config(listen, admin, &[a])).unwrap();
    let mut gw = Gateway::spawn(
        &["--config", path.to_str().unwrap(), "--workers", "1"],
        &dir,
    );
    assert_eq!(
        gw.until("admin API", || async { backend_count(admin).await })
            .await,
        1
    );
    assert_eq!(get(listen, "/").await.unwrap().1, "a");

    std::fs::write(&path, config(listen, admin, &[a, b])).unwrap();
    gw.signal("HUP");
    gw.until("reload", || async {
        (backend_count(admin).await == Some(2)).then_some(())
    })
    .await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(get(listen, "/").await.unwrap().1);
    }
    assert!(seen.contains(&"b".to_string()), "{seen:?}");

    // A broken file on SIGHUP is logged and the gateway keeps serving the old config.
    std::fs::write(&path, "[[listeners]\n").unwrap();
    gw.signal("HUP");
    gw.until("reload failure logged", || async {
        gw_log_contains(&dir, "reload refused").then_some(())
    })
    .await;
    assert_eq!(get(listen, "/").await.unwrap().0, StatusCode::OK);

    gw.signal("INT");
    assert_eq!(gw.exit_code().await, Some(0), "{}", gw.logs());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn gw_log_contains(dir: &std::path::Path, needle: &str) -> bool {
    std::fs::read_to_string(dir.join("gateway.log")).is_ok_and(|l| l.contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_line_start_balances_over_the_backends() {
    let (a, _, _ra) = backend("a").await;
    let (b, _, _rb) = backend("b").await;
    let dir = scratch("oneline");
    let (listen, admin) = (free_port(), free_port());
    let args = [
        "--listen".to_string(),
        listen.to_string(),
        "--backend".into(),
        a.to_string(),
        "--backend".into(),
        b.to_string(),
        "--algorithm".into(),
        "least_conn".into(),
        "--workers".into(),
        "1".into(),
        "--admin".into(),
        admin.to_string(),
        "--log-format".into(),
        "json".into(),
        "--access-log".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut gw = Gateway::spawn(&args, &dir);
    assert_eq!(
        gw.until("admin API", || async { backend_count_default(admin).await })
            .await,
        2
    );
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(get(listen, "/").await.unwrap().1);
    }
    assert!(
        seen.contains(&"a".into()) && seen.contains(&"b".into()),
        "{seen:?}"
    );
    gw.signal("TERM");
    assert_eq!(gw.exit_code().await, Some(0));
    // JSON log lines.
    let logs = gw.logs();
    assert!(
        logs.lines()
            .any(|l| l.starts_with('{') && l.contains("admin API listening")),
        "{logs}"
    );
    // Access log lines: one per request, with method, status, client and request id.
    let access: Vec<_> = logs
        .lines()
        .filter(|l| l.contains("\"target\":\"access\""))
        .collect();
    assert_eq!(access.len(), 4, "{logs}");
    assert!(access[0].contains("\"status\":200"), "{logs}");
    assert!(access[0].contains("\"method\":\"GET\""), "{logs}");
    assert!(access[0].contains("\"request_id\":\""), "{logs}");
    assert!(access[0].contains("\"client\":\"127.0.0.1:"), "{logs}");
    assert!(
        access[0].contains("\"backend\":\"default/127.0.0.1:"),
        "{logs}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn backend_count_default(admin: SocketAddr) -> Option<usize> {
    let (_, body) = get(admin, "/api/backends").await.ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["upstreams"]["default"].as_array().map(Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deadline_bounds_the_drain() {
    let (slow, mut arrived, _never_released) = backend("slow").await;
    let dir = scratch("deadline");
    let (listen, admin) = (free_port(), free_port());
    let path = dir.join("gw.toml");
    // The flag wins over the file's deadline (with the file's the test would time out).
    let text = format!(
        "{}\n[server]\nshutdown_timeout = \"1h\"\n",
        config(listen, admin, &[slow])
    );
    std::fs::write(&path, text).unwrap();
    let args = [
        "--config",
        path.to_str().unwrap(),
        "--shutdown-timeout",
        "200ms",
    ];
    let mut gw = Gateway::spawn(&args, &dir);
    gw.until("admin API", || async { backend_count(admin).await })
        .await;
    sigterm_cuts_the_hanging_request(&mut gw, listen, &mut arrived).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `[server] shutdown_timeout` from the file bounds the drain: the process exits 0 at the
/// deadline and the hanging request's connection is closed. The same file turns the admin API
/// off (a public address without a token would otherwise be refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_sets_the_shutdown_deadline_and_turns_admin_off() {
    let (slow, mut arrived, _never_released) = backend("slow").await;
    let dir = scratch("deadline-file");
    let (listen, admin) = (free_port(), free_port());
    let path = dir.join("gw.toml");
    let text = config(listen, admin, &[slow]).replace(
        &format!("[admin]\naddr = \"{admin}\"\n"),
        &format!(
            "[admin]\naddr = \"0.0.0.0:{}\"\nenabled = false\n\n[server]\nshutdown_timeout = \"200ms\"\n",
            admin.port()
        ),
    );
    assert!(text.contains("enabled = false"), "{text}");
    std::fs::write(&path, text).unwrap();
    let mut gw = Gateway::spawn(&["--config", path.to_str().unwrap()], &dir);
    gw.until("listener", || async {
        get(listen, "/")
            .await
            .ok()
            .filter(|(s, _)| *s == StatusCode::OK)
    })
    .await;
    assert!(
        TcpStream::connect(admin).await.is_err(),
        "admin API must be off"
    );
    sigterm_cuts_the_hanging_request(&mut gw, listen, &mut arrived).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--backend localhost:PORT`: the name is resolved at start and listed with its addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_line_start_with_a_dns_backend() {
    let (a, _, _ra) = backend("a").await;
    let dir = scratch("dns");
    let (listen, admin) = (free_port(), free_port());
    let backend_arg = format!("localhost:{}", a.port());
    let args = [
        "--listen".to_string(),
        listen.to_string(),
        "--backend".into(),
        backend_arg,
        "--admin".into(),
        admin.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut gw = Gateway::spawn(&args, &dir);
    gw.until("admin API", || async { backend_count_default(admin).await })
        .await;
    let (_, body) = get(admin, "/api/backends").await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let list = v["upstreams"]["default"].as_array().unwrap();
    assert!(list.iter().all(|b| b["hostname"] == "localhost"), "{body}");
    assert!(list.iter().any(|b| b["addr"] == a.to_string()), "{body}");
    assert_eq!(get(listen, "/").await.unwrap().1, "a");
    gw.signal("TERM");
    assert_eq!(gw.exit_code().await, Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Sends a request the slow backend never answers, then SIGTERM: the gateway gives up at the
/// shutdown deadline, still exits 0, and the client's request fails.
async fn sigterm_cuts_the_hanging_request(
    gw: &mut Gateway,
    listen: SocketAddr,
    arrived: &mut mpsc::UnboundedReceiver<()>,
) {
    let in_flight = tokio::spawn(async move { get(listen, "/slow").await });
    tokio::time::timeout(DEADLINE, arrived.recv())
        .await
        .unwrap()
        .unwrap();
    gw.signal("TERM");
    assert_eq!(gw.exit_code().await, Some(0), "{}", gw.logs());
    assert!(
        gw.logs().contains("shutdown deadline passed"),
        "{}",
        gw.logs()
    );
    let result = tokio::time::timeout(DEADLINE, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_err(), "{result:?}");
}
