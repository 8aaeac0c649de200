//! DNS backends (`host:port`): resolution at start, on reload and every `resolve_interval`;
//! a changed answer updates the endpoints in place; failed lookups keep the last good set;
//! health checks and outlier detection apply to the resolved addresses.
//!
//! The resolver is injected (answers under the test's control) except in the `localhost`
//! test; refreshes are triggered with `Controller::refresh_dns`, or driven by Tokio's paused
//! clock in the schedule test.
mod ops_support;

use ops_support::*;
use scalewise_gateway::dns::Resolve;
use scalewise_gateway::server::{Gateway, ReloadError, StartOptions};
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

type Answers = HashMap<String, Result<Vec<SocketAddr>, String>>;

/// A resolver whose answers the test sets, reporting every lookup (host, Tokio time).
#[derive(Clone)]
struct FakeDns {
    answers: Arc<Mutex<Answers>>,
    lookups: mpsc::UnboundedSender<(String, tokio::time::Instant)>,
}

impl FakeDns {
    fn new() -> (
        Self,
        mpsc::UnboundedReceiver<(String, tokio::time::Instant)>,
    ) {
        let (lookups, rx) = mpsc::unbounded_channel();
        let dns = Self {
            answers: Arc::default(),
            lookups,
        };
        (dns, rx)
    }

    fn set(&self, host: &str, answer: Result<Vec<SocketAddr>, &str>) {
        self.answers
            .lock()
            .unwrap()
            .insert(host.to_owned(), answer.map_err(str::to_owned));
    }

    fn resolver(&self) -> Arc<dyn Resolve> {
        let me = self.clone();
        Arc::new(
            move |host: &str, _port: u16| -> io::Result<Vec<SocketAddr>> {
                let _ = me
                    .lookups
                    .send((host.to_owned(), tokio::time::Instant::now()));
                me.answers
                    .lock()
                    .unwrap()
                    .get(host)
                    .cloned()
                    .unwrap_or_else(|| Err("no such host".into()))
                    .map_err(io::Error::other)
            },
        )
    }

    fn options(&self) -> StartOptions {
        StartOptions {
            resolver: Some(self.resolver()),
            ..Default::default()
        }
    }
}

/// A config with upstream `app` of `backends` (TOML inline tables) and `extra` appended.
fn config(backends: &str, extra: &str) -> String {
    format!(
        "[[listeners]]\naddr = \"127.0.0.1:0\"\n\n[[routes]]\nupstream = \"app\"\n\n\
         [upstreams.app]\nbackends = [{backends}]\n{extra}\n\n[admin]\naddr = \"127.0.0.1:0\"\n"
    )
}

fn loopback(last: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), port)
}

/// `(addr, hostname)` of every backend of `app` in `/api/backends`.
async fn listed(admin: SocketAddr) -> Vec<(SocketAddr, Option<String>, serde_json::Value)> {
    let v = get_json(admin, "/api/backends").await;
    v["upstreams"]["app"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["addr"].as_str().unwrap().parse().unwrap(),
                b["hostname"].as_str().map(str::to_owned),
                b.clone(),
            )
        })
        .collect()
}

async fn addr_set(admin: SocketAddr) -> BTreeSet<SocketAddr> {
    listed(admin).await.into_iter().map(|(a, _, _)| a).collect()
}

#[tokio::test]
async fn localhost_resolves_through_the_system_resolver() {
    // Whatever `localhost` is on this machine (127.0.0.1, ::1 or both): a backend on each.
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host(("localhost", 0))
        .await
        .unwrap()
        .collect();
    let first = backend_at("local", resolved[0]).await;
    let port = first.addr.port();
    let mut others = Vec::new();
    for a in &resolved[1..] {
        others.push(backend_at("local", SocketAddr::new(a.ip(), port)).await);
    }
    let expected: BTreeSet<SocketAddr> = resolved
        .iter()
        .map(|a| SocketAddr::new(a.ip(), port))
        .collect();

    let text = config(&format!("{{ addr = \"localhost:{port}\" }}"), "");
    let (gw, listen, admin) = start(parse(&text), StartOptions::default()).await;
    let list = listed(admin).await;
    assert_eq!(
        list.iter().map(|(a, _, _)| *a).collect::<BTreeSet<_>>(),
        expected
    );
    assert!(
        list.iter()
            .all(|(_, h, _)| h.as_deref() == Some("localhost")),
        "{list:?}"
    );
    assert!(names(listen, 3).await.iter().all(|n| n == "local"));
    // The running config keeps the name, not the addresses.
    assert_eq!(
        gw.controller().config().upstreams["app"].backends[0]
            .addr
            .to_string(),
        format!("localhost:{port}")
    );
}

#[tokio::test]
async fn a_changed_answer_updates_the_endpoints_in_place() {
    let a = backend_at("a", loopback(1, 0)).await;
    let port = a.addr.port();
    let b = backend_at("b", loopback(2, port)).await;
    let c = backend_at("c", loopback(3, port)).await;
    let (dns, _lookups) = FakeDns::new();
    dns.set("svc.test", Ok(vec![b.addr, a.addr]));
    let text = config(&format!("{{ addr = \"svc.test:{port}\", weight = 2 }}"), "");
    let (gw, listen, admin) = start(parse(&text), dns.options()).await;
    let ctl = gw.controller().clone();

    // Every address is an endpoint with the backend's weight, listed with the host name.
    let list = listed(admin).await;
    assert_eq!(list.len(), 2);
    for (addr, host, json) in &list {
        assert!([a.addr, b.addr].contains(addr), "{addr}");
        assert_eq!(host.as_deref(), Some("svc.test"));
        assert_eq!(json["weight"], 2);
    }
    let seen = names(listen, 4).await;
    assert!(
        seen.contains(&"a".into()) && seen.contains(&"b".into()),
        "{seen:?}"
    );

    // State that must survive the update: b's drain mark, id, counters and pooled client.
    let (status, body) = request(
        admin,
        "POST",
        &format!("/api/backends/app/{}/drain", b.addr),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let before = ctl.shared().load();
    let up = before.upstream("app").unwrap();
    let ep_b = up
        .balancer
        .endpoints()
        .into_iter()
        .find(|e| e.addr() == b.addr)
        .unwrap();
    let client_b = up.backend(ep_b.id()).unwrap().clone();
    let requests_b = ep_b.snapshot().requests;
    assert!(requests_b > 0);

    // The name now points at b and c (in another order): a leaves, c arrives, b stays.
    dns.set("svc.test", Ok(vec![c.addr, b.addr]));
    let r = ctl.refresh_dns(None).await;
    assert!(r.changed && r.failed == 0 && r.looked_up == 1, "{r:?}");
    assert_eq!(addr_set(admin).await, BTreeSet::from([b.addr, c.addr]));
    let after = ctl.shared().load();
    let up = after.upstream("app").unwrap();
    let kept = up
        .balancer
        .endpoints()
        .into_iter()
        .find(|e| e.addr() == b.addr)
        .unwrap();
    assert_eq!(kept.id(), ep_b.id());
    assert!(kept.snapshot().draining);
    assert_eq!(kept.snapshot().requests, requests_b);
    assert!(Arc::ptr_eq(up.backend(kept.id()).unwrap(), &client_b));
    // b is drained and a is gone: everything goes to c.
    assert!(names(listen, 4).await.iter().all(|n| n == "c"));

    // The same set in another order is no change.
    dns.set("svc.test", Ok(vec![b.addr, c.addr]));
    let r = ctl.refresh_dns(None).await;
    assert!(!r.changed, "{r:?}");

    // A failed and an empty lookup keep the last good set and are counted.
    dns.set("svc.test", Err("SERVFAIL"));
    let r = ctl.refresh_dns(None).await;
    assert!(!r.changed && r.failed == 1, "{r:?}");
    dns.set("svc.test", Ok(vec![]));
    let r = ctl.refresh_dns(None).await;
    assert!(!r.changed && r.failed == 1, "{r:?}");
    assert_eq!(addr_set(admin).await, BTreeSet::from([b.addr, c.addr]));
    assert!(names(listen, 2).await.iter().all(|n| n == "c"));
    let (_, metrics) = get(admin, "/metrics").await;
    assert!(
        metrics.contains("gateway_dns_resolve_failures_total{upstream=\"app\"} 2"),
        "{metrics}"
    );
    assert_eq!(get_json(admin, "/api/status").await["dns_updates"], 1);
}

#[tokio::test]
async fn unresolvable_names_fail_start_and_reload_naming_key_and_value() {
    let a = backend("a").await;
    let (dns, _lookups) = FakeDns::new();
    let text = config(
        &format!(
            "{{ addr = \"{}\" }}, {{ addr = \"nowhere.test:81\" }}",
            a.addr
        ),
        "",
    );
    let err = Gateway::start(parse(&text), dns.options())
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "config: key `upstreams.app.backends[1].addr`: \"nowhere.test:81\" does not resolve: \
         no such host"
    );

    // A reload that brings a new name that does not resolve is refused; traffic goes on.
    let ok = config(&format!("{{ addr = \"{}\" }}", a.addr), "");
    let (gw, listen, _admin) = start(parse(&ok), dns.options()).await;
    let err = gw.controller().apply(parse(&text)).await.unwrap_err();
    assert!(matches!(err, ReloadError::Invalid(_)), "{err}");
    assert!(
        err.to_string()
            .contains("key `upstreams.app.backends[1].addr`: \"nowhere.test:81\" does not resolve"),
        "{err}"
    );
    assert_eq!(gw.controller().config().upstreams["app"].backends.len(), 1);
    assert!(names(listen, 2).await.iter().all(|n| n == "a"));

    // Once it resolves, the same reload works and its addresses take traffic.
    let b = backend("b").await;
    dns.set("nowhere.test", Ok(vec![b.addr]));
    gw.controller().apply(parse(&text)).await.unwrap();
    assert!(names(listen, 4).await.contains(&"b".into()));
}

#[tokio::test]
async fn health_checks_and_outlier_detection_apply_to_resolved_addresses() {
    let a = backend_at("a", loopback(1, 0)).await;
    let port = a.addr.port();
    let c = backend_at("c", loopback(3, port)).await;
    // Nothing listens here: connections are refused.
    let dead = loopback(4, port);
    let (dns, _lookups) = FakeDns::new();
    dns.set("svc.test", Ok(vec![a.addr, dead]));
    let text = config(
        &format!("{{ addr = \"svc.test:{port}\" }}"),
        "[upstreams.app.health.outlier]\nconsecutive_connect_failures = 1\n",
    );
    let (gw, listen, admin) = start(parse(&text), dns.options()).await;
    let ctl = gw.controller().clone();

    // The dead address fails a connect (the request is retried on `a`) and is ejected.
    assert!(names(listen, 4).await.iter().all(|n| n == "a"));
    let ejected = |list: &[(SocketAddr, Option<String>, serde_json::Value)], addr| {
        list.iter()
            .find(|(x, _, _)| *x == addr)
            .map(|(_, _, j)| j["ejected"] == true)
    };
    let list = listed(admin).await;
    assert_eq!(ejected(&list, dead), Some(true), "{list:?}");

    // A new answer keeps the ejection of the address that stays.
    dns.set("svc.test", Ok(vec![dead, c.addr, a.addr]));
    assert!(ctl.refresh_dns(None).await.changed);
    let list = listed(admin).await;
    assert_eq!(list.len(), 3);
    assert_eq!(ejected(&list, dead), Some(true), "{list:?}");
    let seen = names(listen, 4).await;
    assert!(
        seen.contains(&"c".into()) && seen.contains(&"a".into()),
        "{seen:?}"
    );

    // Active checks probe the resolved addresses, including ones a refresh adds.
    let active =
        "[upstreams.app.health.active]\nkind = \"tcp\"\ninterval = \"1h\"\nrise = 1\nfall = 1\n";
    let text = config(&format!("{{ addr = \"svc.test:{port}\" }}"), active);
    dns.set("svc.test", Ok(vec![a.addr, dead]));
    ctl.apply(parse(&text)).await.unwrap();
    let state = ctl.shared().load();
    let up = state.upstream("app").unwrap();
    let check = up.config.health.active.clone().unwrap();
    // The name was known: the reload kept its answer (a, c, dead) until the next refresh.
    assert_eq!(up.balancer.endpoints().len(), 3);
    let health = refresh_and_check(&ctl, admin, &check).await;
    assert_eq!(health.len(), 2, "{health:?}");
    assert_eq!(health[&a.addr], "healthy");
    assert_eq!(health[&dead], "unhealthy");

    dns.set("svc.test", Ok(vec![a.addr, dead, c.addr]));
    let health = refresh_and_check(&ctl, admin, &check).await;
    assert_eq!(health[&c.addr], "healthy", "{health:?}");
    assert_eq!(health[&dead], "unhealthy", "{health:?}");
}

/// The refresh schedule on Tokio's paused clock: each upstream is looked up again
/// `resolve_interval` after its previous lookup, and a reload that adds a name is followed.
#[tokio::test(start_paused = true)]
async fn names_are_resolved_again_every_resolve_interval() {
    let (dns, mut lookups) = FakeDns::new();
    dns.set("app.test", Ok(vec![loopback(1, 9)]));
    dns.set("fast.test", Ok(vec![loopback(2, 9)]));
    dns.set("late.test", Ok(vec![loopback(3, 9)]));
    let text = format!(
        "{}\n[upstreams.fast]\nresolve_interval = \"10s\"\nbackends = [{{ addr = \"fast.test:9\" }}]\n",
        config("{ addr = \"app.test:9\" }", "resolve_interval = \"30s\"")
    );
    let mut config = parse(&text);
    config.admin.enabled = false;
    let t0 = tokio::time::Instant::now();
    let gw = Gateway::start(config, dns.options()).await.unwrap();

    let mut next = async || {
        let (host, at) = lookups.recv().await.unwrap();
        (host, (at - t0).as_secs())
    };
    // At start, both names; then fast.test every 10s and app.test every 30s.
    assert_eq!(next().await, ("app.test".into(), 0));
    assert_eq!(next().await, ("fast.test".into(), 0));
    assert_eq!(next().await, ("fast.test".into(), 10));
    assert_eq!(next().await, ("fast.test".into(), 20));
    let mut at_30 = vec![next().await, next().await];
    at_30.sort();
    assert_eq!(at_30, [("app.test".into(), 30), ("fast.test".into(), 30)]);

    // A reload adds a name with its own interval: looked up at once, then every 5s.
    let added = text.replace(
        "[upstreams.fast]",
        "[upstreams.late]\nresolve_interval = \"5s\"\nbackends = [{ addr = \"late.test:9\" }]\n\n[upstreams.fast]",
    );
    let mut added = parse(&added);
    added.admin.enabled = false;
    gw.controller().apply(added).await.unwrap();
    assert_eq!(next().await, ("late.test".into(), 30));
    assert_eq!(next().await, ("late.test".into(), 35));
    assert_eq!(next().await, ("fast.test".into(), 40));
    assert_eq!(next().await, ("late.test".into(), 40));
}

/// A resolver that answers every lookup with 127.0.0.1, except that lookups of `slow.test`
/// after its first hang (until [`scalewise_gateway::dns::LOOKUP_TIMEOUT`]); every lookup is
/// reported with its Tokio time.
struct HangsAfterFirst {
    lookups: mpsc::UnboundedSender<(String, tokio::time::Instant)>,
    slow_seen: std::sync::atomic::AtomicBool,
}

impl Resolve for HangsAfterFirst {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> futures_util::future::BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        let _ = self
            .lookups
            .send((host.to_owned(), tokio::time::Instant::now()));
        let hang = host == "slow.test"
            && self
                .slow_seen
                .swap(true, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Ok(vec![loopback(1, port)])
        })
    }
}

/// A lookup that hangs for one upstream holds up neither the other upstream's schedule nor
/// its own next round beyond the lookup timeout.
#[tokio::test(start_paused = true)]
async fn a_slow_lookup_delays_only_its_own_upstream() {
    let (tx, mut lookups) = mpsc::unbounded_channel();
    let resolver = Arc::new(HangsAfterFirst {
        lookups: tx,
        slow_seen: Default::default(),
    });
    let text = format!(
        "{}\n[upstreams.fast]\nresolve_interval = \"3s\"\nbackends = [{{ addr = \"fast.test:9\" }}]\n",
        config("{ addr = \"slow.test:9\" }", "resolve_interval = \"1s\"")
    );
    let mut config = parse(&text);
    config.admin.enabled = false;
    let t0 = tokio::time::Instant::now();
    let options = StartOptions {
        resolver: Some(resolver),
        ..Default::default()
    };
    let _gw = Gateway::start(config, options).await.unwrap();
    let mut next = async || {
        let (host, at) = lookups.recv().await.unwrap();
        (host, (at - t0).as_secs())
    };
    assert_eq!(next().await, ("fast.test".into(), 0));
    assert_eq!(next().await, ("slow.test".into(), 0));
    // slow.test's second lookup hangs from 1s until it times out at 11s...
    assert_eq!(next().await, ("slow.test".into(), 1));
    // ...while fast.test keeps its 3s schedule.
    assert_eq!(next().await, ("fast.test".into(), 3));
    assert_eq!(next().await, ("fast.test".into(), 6));
    assert_eq!(next().await, ("fast.test".into(), 9));
    // The timed-out round is followed by the next one an interval later.
    let mut at_12 = vec![next().await, next().await];
    at_12.sort();
    assert_eq!(at_12, [("fast.test".into(), 12), ("slow.test".into(), 12)]);
}

/// The per-backend label sets of an address that left a DNS answer are deleted; those of
/// the addresses that stay are kept.
#[tokio::test]
async fn addresses_gone_from_an_answer_leave_the_metrics() {
    let a = backend_at("a", loopback(1, 0)).await;
    let port = a.addr.port();
    let b = backend_at("b", loopback(2, port)).await;
    let (dns, _lookups) = FakeDns::new();
    dns.set("svc.test", Ok(vec![a.addr, b.addr]));
    let text = config(&format!("{{ addr = \"svc.test:{port}\" }}"), "");
    let (gw, listen, admin) = start(parse(&text), dns.options()).await;
    names(listen, 4).await;
    let series = |metrics: &str, addr: SocketAddr| -> Vec<String> {
        let label = format!("backend=\"{addr}\"");
        metrics
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(&label))
            .map(|l| l.split('{').next().unwrap_or_default().to_owned())
            .collect()
    };
    let (_, metrics) = get(admin, "/metrics").await;
    for addr in [a.addr, b.addr] {
        let s = series(&metrics, addr);
        assert!(
            s.contains(&"gateway_backend_in_flight".into())
                && s.contains(&"gateway_upstream_connect_errors_total".into()),
            "{addr}: {s:?}"
        );
    }

    dns.set("svc.test", Ok(vec![a.addr]));
    assert!(gw.controller().refresh_dns(None).await.changed);
    let (_, metrics) = get(admin, "/metrics").await;
    assert_eq!(series(&metrics, b.addr), Vec::<String>::new(), "{metrics}");
    assert!(
        series(&metrics, a.addr).contains(&"gateway_backend_in_flight".into()),
        "{metrics}"
    );
    assert!(names(listen, 2).await.iter().all(|n| n == "a"));
}

#[tokio::test]
async fn an_address_listed_twice_is_one_backend_as_first_listed() {
    let a = backend_at("a", loopback(1, 0)).await;
    let port = a.addr.port();
    let b = backend_at("b", loopback(2, port)).await;
    let (dns, _lookups) = FakeDns::new();
    dns.set("svc.test", Ok(vec![b.addr, a.addr]));
    let text = config(
        &format!(
            "{{ addr = \"{}\" }}, {{ addr = \"svc.test:{port}\", weight = 3 }}",
            a.addr
        ),
        "",
    );
    let (_gw, _listen, admin) = start(parse(&text), dns.options()).await;
    let list = listed(admin).await;
    assert_eq!(list.len(), 2, "{list:?}");
    let by_addr: HashMap<_, _> = list.into_iter().map(|(a, h, j)| (a, (h, j))).collect();
    assert_eq!(by_addr[&a.addr].0, None);
    assert_eq!(by_addr[&a.addr].1["weight"], 1);
    assert_eq!(by_addr[&b.addr].0.as_deref(), Some("svc.test"));
    assert_eq!(by_addr[&b.addr].1["weight"], 3);
}

/// Re-resolves now (the answer must have changed), runs one active check round on the new
/// endpoint set and returns each listed backend's health.
async fn refresh_and_check(
    ctl: &scalewise_gateway::server::Controller,
    admin: SocketAddr,
    check: &scalewise::health::ActiveCheckConfig,
) -> HashMap<SocketAddr, String> {
    assert!(ctl.refresh_dns(None).await.changed);
    let state = ctl.shared().load();
    let up = state.upstream("app").unwrap();
    scalewise::health::check_round(&up.balancer, check).await;
    listed(admin)
        .await
        .into_iter()
        .map(|(a, _, j)| (a, j["health"].as_str().unwrap().to_owned()))
        .collect()
}
