//! HTTPS (HTTP/1.1 and HTTP/2 by ALPN) against an in-process rustls server.

mod common;

use scalewise_load::{load, LoadArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_cacert_and_insecure_over_h1_and_h2() {
    let (addr, pem) = common::tls_server().await;
    let ca = common::temp_path("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let url = format!("https://{addr}/delay/1");

    let mut a = LoadArgs::new(url.clone());
    a.connections = 2;
    a.requests = Some(30);
    a.cacert = Some(ca.clone());
    let r = load(&a).await.unwrap();
    assert_eq!(
        (r.protocol.as_str(), r.requests, r.errors.total),
        ("http/1.1", 30, 0),
        "{:?}",
        r.errors
    );

    let mut a = LoadArgs::new(url.clone());
    a.connections = 2;
    a.requests = Some(30);
    a.insecure = true;
    a.http2 = true;
    let r = load(&a).await.unwrap();
    assert_eq!(
        (r.protocol.as_str(), r.requests, r.errors.total),
        ("h2", 30, 0),
        "{:?}",
        r.errors
    );
    let _ = std::fs::remove_file(ca);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificate_is_a_clear_tls_error() {
    let (addr, _) = common::tls_server().await;
    let err = load(&LoadArgs::new(format!("https://{addr}/")))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("TLS handshake") && err.contains(&addr.to_string()),
        "{err}"
    );
}
