//! `scalewise bench --quick` against an in-process server.

mod common;

use scalewise_load::{bench, run_bench, BenchArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_bench_produces_a_report_with_criteria() {
    let (addr, _) = common::server().await;
    let mut a = BenchArgs::new(format!("http://{addr}/"));
    a.quick = true;
    a.max_connections = Some(16);
    a.pid = Some(std::process::id());
    let r = bench::suite(&a).await.unwrap();
    assert_eq!(r.schema, "scalewise-bench/1");
    assert!(r.rps > 0.0);
    assert_eq!(
        r.latency_vs_users
            .iter()
            .map(|l| l.users)
            .collect::<Vec<_>>(),
        [1, 10]
    );
    assert_eq!(r.connection_capacity.max_held, 16);
    assert!(!r.scalability.levels.is_empty());
    assert_eq!(
        r.scalability.limit_users,
        Some(16),
        "{}",
        r.scalability.stopped_because
    );
    assert!(r.sustained.achieved_rps > 0.0);
    let names: Vec<&str> = r.criteria.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["success_rate", "latency_degradation_10x"]);
    assert!(r.criteria[0].pass, "success rate {}", r.criteria[0].actual);
    let res = r.resources.as_ref().unwrap();
    assert!(res.rss_peak_kib > 0);
    let text = bench::text(&r);
    assert!(text.contains("Criteria") && text.contains("Result:"));
    let html = bench::html(&r);
    assert!(html.contains("<svg") && !html.contains("<script"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_unreachable_target_is_an_error() {
    let mut a = BenchArgs::new(format!("http://127.0.0.1:{}/", common::dead_port()));
    a.quick = true;
    let err = run_bench(a).await.unwrap_err().to_string();
    assert!(err.contains("unreachable"), "{err}");
}
