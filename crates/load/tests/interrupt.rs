//! Ctrl-C stops the run, and the partial results are still reported and saved.
//! (Own test binary: the signal reaches every listener in the process.)

mod common;

use std::sync::atomic::Ordering;

use scalewise_load::{run_load, LoadArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_saves_partial_results() {
    // Registering a listener first replaces SIGINT's default action, so the signal below cannot
    // kill the test process even if it beats the run's own registration.
    let mut guard =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).unwrap();
    let (addr, st) = common::server().await;
    st.notify_at.store(20, Ordering::SeqCst);
    let json = common::temp_path("interrupted.json");
    let mut a = LoadArgs::new(format!("http://{addr}/delay/1"));
    a.connections = 2;
    a.duration = Some("60s".into());
    a.json = Some(json.clone());
    let run = tokio::spawn(run_load(a));
    // Wait (bounded) until the run is under way, then interrupt it.
    tokio::time::timeout(std::time::Duration::from_secs(10), st.reached.notified())
        .await
        .expect("run did not start");
    let pid = std::process::id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let code = run.await.unwrap().unwrap();
    assert_eq!(code, 130);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["interrupted"], true);
    // Requests in flight at the interrupt are abandoned at once (no graceful stop), so a few
    // of the 20 may be missing; each is counted as interrupted, at most one per user.
    assert!(v["requests"].as_u64().unwrap() >= 10, "{}", v["requests"]);
    assert!(
        v["interrupted_requests"].as_u64().unwrap() <= 2,
        "{}",
        v["interrupted_requests"]
    );
    assert!(v["duration_s"].as_f64().unwrap() < 60.0);
    let _ = guard.recv().await;
    let _ = std::fs::remove_file(json);
}
