//! TLS to backends (`[upstreams.NAME.tls]`): verification against a CA file and a server
//! name, insecure mode, client certificates, HTTP/1.1 and HTTP/2 over TLS, WebSocket
//! upgrades, active checks over TLS, reloads, and the errors of bad settings. Real sockets;
//! certificates made with rcgen.
mod common;

use common::pki::*;
use common::*;
use rcgen::ExtendedKeyUsagePurpose;
use scalewise::balance::HealthStatus;
use scalewise_gateway::config::{Config, UpstreamProtocol, UpstreamTlsConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A backend-side acceptor serving `leaf`, offering `alpn`, requiring a client certificate
/// issued by `client_ca` if given.
fn acceptor(leaf: &Leaf, alpn: &[&str], client_ca: Option<&Ca>) -> tokio_rustls::TlsAcceptor {
    let (chain, key) = leaf.identity();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.cert.der().clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn server_leaf(ca: &Ca) -> Leaf {
    ca.leaf(
        &["api.internal", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    )
}

/// An HTTP/1.1 backend `name` serving TLS with a certificate from `ca`.
async fn tls_backend(name: &'static str, ca: &Ca) -> Backend {
    serving(name, &server_leaf(ca)).await
}

/// An HTTP/1.1 backend `name` serving TLS with `leaf`.
async fn serving(name: &'static str, leaf: &Leaf) -> Backend {
    backend_with(name, Some(acceptor(leaf, &["http/1.1"], None))).await
}

/// A gateway config with TLS `tls` to `backends`.
fn tls_config(backends: &[SocketAddr], tls: UpstreamTlsConfig) -> Config {
    let mut cfg = config(backends);
    cfg.upstreams.get_mut("default").unwrap().tls = Some(tls);
    cfg
}

fn verified(ca_file: PathBuf) -> UpstreamTlsConfig {
    UpstreamTlsConfig {
        ca_file: Some(ca_file),
        server_name: Some("api.internal".into()),
        ..UpstreamTlsConfig::new()
    }
}

#[tokio::test]
async fn http1_backend_over_tls_verified_with_a_ca_file_and_pooled() {
    let dir = Dir::new("h1");
    let ca = Ca::new("test ca");
    let ca_file = dir.write("ca.pem", &ca.cert.pem());
    let b = tls_backend("tls", &ca).await;
    let gw = gateway(tls_config(&[b.addr], verified(ca_file))).await;

    let mut tx = h1(gw.addr).await;
    for path in ["/one", "/two"] {
        let (status, _, text) = read(tx.send_request(get(path)).await.unwrap()).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("backend=tls\n"), "{text}");
        assert!(text.contains("version=HTTP/1.1\n"), "{text}");
        assert!(text.contains(&format!("path={path}\n")), "{text}");
    }
    assert_eq!(
        b.conns.load(Ordering::SeqCst),
        1,
        "the TLS connection went back to the pool and was reused"
    );
}

#[tokio::test]
async fn a_failed_verification_is_a_502_and_no_request_reaches_the_backend() {
    let dir = Dir::new("verify");
    let ca = Ca::new("the backend's ca");
    let other = Ca::new("some other ca");
    let b = tls_backend("tls", &ca).await;

    // Wrong CA.
    let wrong_ca = dir.write("other.pem", &other.cert.pem());
    let gw = gateway(tls_config(&[b.addr], verified(wrong_ca))).await;
    let (status, _, _) = send(gw.addr, get("/")).await;
    assert_eq!(status, 502);
    let metrics = gw.shared.metrics.encode();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("gateway_upstream_tls_handshake_errors_total{") && !l.ends_with(" 0")
        ),
        "{metrics}"
    );

    // Right CA, wrong name.
    let ca_file = dir.write("ca.pem", &ca.cert.pem());
    let gw = gateway(tls_config(
        &[b.addr],
        UpstreamTlsConfig {
            server_name: Some("db.internal".into()),
            ..verified(ca_file)
        },
    ))
    .await;
    let (status, _, _) = send(gw.addr, get("/")).await;
    assert_eq!(status, 502);

    assert!(
        b.conns.load(Ordering::SeqCst) >= 2,
        "the handshakes were tried"
    );
    assert_eq!(b.hits.load(Ordering::SeqCst), 0, "no request got through");
}

#[tokio::test]
async fn insecure_skip_verify_accepts_an_unknown_certificate_on_an_ip_backend() {
    let ca = Ca::new("nobody trusts this");
    let b = tls_backend("tls", &ca).await;
    let gw = gateway(tls_config(
        &[b.addr],
        UpstreamTlsConfig {
            insecure_skip_verify: true,
            ..UpstreamTlsConfig::new()
        },
    ))
    .await;
    let (status, _, text) = send(gw.addr, get("/")).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("backend=tls\n"), "{text}");
}

#[tokio::test]
async fn client_certificate_is_presented_to_a_backend_that_requires_one() {
    let dir = Dir::new("mtls");
    let ca = Ca::new("test ca");
    let ca_file = dir.write("ca.pem", &ca.cert.pem());
    let (cert, key) = ca.issue(&["gateway"], ExtendedKeyUsagePurpose::ClientAuth);
    let cert_file = dir.write("client.pem", &cert);
    let key_file = dir.write("client.key", &key);
    let b = backend_with(
        "mtls",
        Some(acceptor(&server_leaf(&ca), &["http/1.1"], Some(&ca))),
    )
    .await;

    // Without a client certificate the backend refuses the handshake.
    let gw = gateway(tls_config(&[b.addr], verified(ca_file.clone()))).await;
    let (status, _, _) = send(gw.addr, get("/")).await;
    assert_eq!(status, 502);
    assert_eq!(b.hits.load(Ordering::SeqCst), 0);

    let gw = gateway(tls_config(
        &[b.addr],
        UpstreamTlsConfig {
            cert_file: Some(cert_file),
            key_file: Some(key_file),
            ..verified(ca_file)
        },
    ))
    .await;
    let (status, _, text) = send(gw.addr, get("/")).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("backend=mtls\n"), "{text}");
}

#[tokio::test]
async fn a_backend_whose_certificate_is_in_a_crl_is_refused() {
    let dir = Dir::new("crl");
    let ca = Ca::new("test ca");
    let ca_file = dir.write("ca.pem", &ca.cert.pem());
    let good = ca.leaf(&["api.internal"], ExtendedKeyUsagePurpose::ServerAuth);
    let revoked = ca.leaf(&["api.internal"], ExtendedKeyUsagePurpose::ServerAuth);
    let crl_file = dir.write("ca.crl.pem", &ca.crl(&[revoked.serial]));
    let bad = serving("revoked", &revoked).await;
    let ok = serving("good", &good).await;
    let with_crl = |addr| {
        tls_config(
            &[addr],
            UpstreamTlsConfig {
                crl_files: vec![crl_file.clone()],
                ..verified(ca_file.clone())
            },
        )
    };

    let gw = gateway(with_crl(bad.addr)).await;
    let (status, _, text) = send(gw.addr, get("/")).await;
    assert_eq!(status, 502, "{text}");
    assert_eq!(bad.hits.load(Ordering::SeqCst), 0, "no request got through");
    let metrics = gw.shared.metrics.encode();
    let series = format!(
        "gateway_upstream_tls_handshake_errors_total{{upstream=\"default\",backend=\"{}\"}} ",
        bad.addr
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with(&series) && !l.ends_with(" 0")),
        "{metrics}"
    );

    // The list is what refuses it: without it the same backend answers...
    let gw = gateway(tls_config(&[bad.addr], verified(ca_file.clone()))).await;
    assert_eq!(send(gw.addr, get("/")).await.0, 200);
    // ...and a backend the list does not name answers with it.
    let gw = gateway(with_crl(ok.addr)).await;
    let (status, _, text) = send(gw.addr, get("/")).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("backend=good\n"), "{text}");
}

#[tokio::test]
async fn backend_crl_options_expiry_unknown_status_and_leaf_scope() {
    let dir = Dir::new("crl-options");
    let ca = Ca::new("test ca");
    let ca_file = dir.write("ca.pem", &ca.cert.pem());
    let leaf = ca.leaf(&["api.internal"], ExtendedKeyUsagePurpose::ServerAuth);
    let b = serving("a", &leaf).await;
    let status = |tls: UpstreamTlsConfig| {
        let cfg = tls_config(&[b.addr], tls);
        async move {
            let gw = gateway(cfg).await;
            send(gw.addr, get("/")).await.0
        }
    };
    let with = |crl: &str, tweak: fn(&mut UpstreamTlsConfig)| {
        let mut tls = UpstreamTlsConfig {
            crl_files: vec![dir.write("list.crl.pem", crl)],
            ..verified(ca_file.clone())
        };
        tweak(&mut tls);
        tls
    };

    // A list past its nextUpdate: still used by default, refused when enforced.
    let expired = ca.crl_until(&[], (2024, 1, 2));
    assert_eq!(status(with(&expired, |_| {})).await, 200);
    let enforce: fn(&mut UpstreamTlsConfig) = |t| t.crl_enforce_next_update = true;
    assert_eq!(status(with(&expired, enforce)).await, 502);
    assert_eq!(status(with(&ca.crl(&[]), enforce)).await, 200);

    // A list from another CA covers nothing: refused unless unknown status is allowed.
    let other = Ca::new("other ca").crl(&[leaf.serial]);
    assert_eq!(status(with(&other, |_| {})).await, 502);
    let allow: fn(&mut UpstreamTlsConfig) =
        |t| t.crl_unknown_status = scalewise_gateway::config::UnknownRevocationStatus::Allow;
    assert_eq!(status(with(&other, allow)).await, 200);

    // An intermediate whose own status no list gives: refused unless only leaves are checked.
    let intermediate = ca.intermediate("intermediate");
    let mut params = rcgen::CertificateParams::new(vec!["api.internal".to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let chained = intermediate.sign(params);
    let b2 = serving("chained", &chained).await;
    let list = intermediate.ca.crl(&[]);
    let chained_status = |tweak: fn(&mut UpstreamTlsConfig)| {
        let cfg = tls_config(&[b2.addr], with(&list, tweak));
        async move {
            let gw = gateway(cfg).await;
            send(gw.addr, get("/")).await
        }
    };
    assert_eq!(chained_status(|_| {}).await.0, 502);
    let (code, _, text) =
        chained_status(|t| t.crl_scope = scalewise_gateway::config::CrlScope::Leaf).await;
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("backend=chained\n"), "{text}");
}

#[test]
fn bad_crl_files_fail_the_load_naming_crl_files_and_the_file() {
    let dir = Dir::new("badcrl");
    let ca = Ca::new("test ca");
    let ca_file = dir.write("ca.pem", &ca.cert.pem());
    let build = |crl: PathBuf| {
        build_error(&tls_config(
            &["127.0.0.1:9".parse().unwrap()],
            UpstreamTlsConfig {
                crl_files: vec![crl],
                ..verified(ca_file.clone())
            },
        ))
    };
    // A certificate where the CRL should be.
    let cert = dir.write("cert.pem", &ca.cert.pem());
    assert_eq!(
        build(cert.clone()),
        format!(
            "upstreams.default.tls.crl_files: {}: no certificate revocation list \
             (-----BEGIN X509 CRL-----) found in PEM file",
            cert.display()
        )
    );
    let missing = dir.0.join("missing.crl");
    let err = build(missing.clone());
    assert!(
        err.starts_with(&format!(
            "upstreams.default.tls.crl_files: cannot read {}:",
            missing.display()
        )),
        "{err}"
    );
    let garbage = dir.write(
        "garbage.crl",
        "-----BEGIN X509 CRL-----\nMAMCAQE=\n-----END X509 CRL-----\n",
    );
    let err = build(garbage.clone());
    assert!(
        err.starts_with(&format!(
            "upstreams.default.tls.crl_files: {}: invalid certificate revocation list",
            garbage.display()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn http2_backend_over_tls_with_alpn_h2() {
    let dir = Dir::new("h2");
    let ca = Ca::new("test ca");
    let ca_file = dir.write("ca.pem", &ca.cert.pem());
    let b = backend_with("h2tls", Some(acceptor(&server_leaf(&ca), &["h2"], None))).await;
    let mut cfg = tls_config(&[b.addr], verified(ca_file));
    cfg.upstreams.get_mut("default").unwrap().protocol = UpstreamProtocol::Http2;
    let gw = gateway(cfg).await;

    for path in ["/a", "/b"] {
        let (status, _, text) = send(gw.addr, get(path)).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("version=HTTP/2.0\n"), "{text}");
    }
    assert_eq!(
        b.conns.load(Ordering::SeqCst),
        1,
        "one multiplexed connection"
    );
}

#[tokio::test]
async fn an_http2_upstream_refuses_a_backend_that_only_speaks_http1() {
    let dir = Dir::new("alpn");
    let ca = Ca::new("test ca");
    let ca_file = dir.write("ca.pem", &ca.cert.pem());
    // The backend offers only http/1.1; rustls fails the handshake on no common protocol.
    let b = tls_backend("h1only", &ca).await;
    let mut cfg = tls_config(&[b.addr], verified(ca_file));
    cfg.upstreams.get_mut("default").unwrap().protocol = UpstreamProtocol::Http2;
    let gw = gateway(cfg).await;
    let (status, _, _) = send(gw.addr, get("/")).await;
    assert_eq!(status, 502);
    assert_eq!(b.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn websocket_upgrade_to_a_tls_backend() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let dir = Dir::new("ws");
    let ca = Ca::new("test ca");
    let ca_file = dir.write("ca.pem", &ca.cert.pem());
    let tls = acceptor(&server_leaf(&ca), &["http/1.1"], None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let stream = tls.accept(tcp).await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let gw = gateway(tls_config(&[addr], verified(ca_file))).await;

    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://localhost/ws", tcp)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("over tls")).await.unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap(), "over tls");
    ws.close(None).await.unwrap();
    drop(ws);
    server.await.unwrap();
}

#[tokio::test]
async fn active_http_checks_go_over_tls() {
    let dir = Dir::new("checks");
    let ca = Ca::new("test ca");
    let other = Ca::new("other ca");
    let b = tls_backend("tls", &ca).await;
    let health: scalewise_gateway::config::HealthConfig =
        toml::from_str("[active]\npath = \"/status/200\"\ninterval = \"1h\"\nrise = 1\nfall = 1\n")
            .unwrap();

    for (ca_pem, want) in [
        (ca.cert.pem(), HealthStatus::Healthy),
        (other.cert.pem(), HealthStatus::Unhealthy),
    ] {
        let ca_file = dir.write("ca.pem", &ca_pem);
        let mut cfg = tls_config(&[b.addr], verified(ca_file));
        cfg.upstreams.get_mut("default").unwrap().health = health.clone();
        let gw = gateway(cfg).await;
        let state = gw.shared.load();
        let up = state.upstream("default").unwrap();
        let mut rounds = up.check_rounds().unwrap();
        rounds.wait_for(|n| *n >= 1).await.unwrap();
        let ep = &up.balancer.endpoints()[0];
        assert_eq!(ep.health(), want, "{:?}", ep.snapshot());
        if want == HealthStatus::Unhealthy {
            let err = ep.snapshot().last_check_error.unwrap_or_default();
            assert!(err.contains("TLS handshake"), "{err}");
        }
    }
    // The passing check was a real HTTP request over TLS.
    assert_eq!(b.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_reload_applies_new_tls_settings() {
    let dir = Dir::new("reload");
    let ca = Ca::new("test ca");
    let other = Ca::new("other ca");
    let b = tls_backend("tls", &ca).await;
    let wrong = dir.write("other.pem", &other.cert.pem());
    let right = dir.write("ca.pem", &ca.cert.pem());
    let cfg = tls_config(&[b.addr], verified(wrong));
    let gw = gateway(cfg.clone()).await;
    assert_eq!(send(gw.addr, get("/")).await.0, 502);

    let mut fixed = cfg.clone();
    fixed.upstreams.get_mut("default").unwrap().tls = Some(verified(right.clone()));
    fixed.listeners[0].addr = gw.addr;
    gw.shared.apply(fixed.clone()).unwrap();
    assert_eq!(send(gw.addr, get("/")).await.0, 200);

    // The same settings and files again: the backend keeps its pooled TLS connection.
    let conns = b.conns.load(Ordering::SeqCst);
    gw.shared.apply(fixed.clone()).unwrap();
    assert_eq!(send(gw.addr, get("/")).await.0, 200);
    assert_eq!(b.conns.load(Ordering::SeqCst), conns, "no new connection");

    // A reload whose CA file is missing fails naming the file, and keeps the working state.
    let mut broken = fixed.clone();
    let missing = dir.0.join("missing.pem");
    broken.upstreams.get_mut("default").unwrap().tls = Some(verified(missing.clone()));
    let err = gw.shared.apply(broken).unwrap_err().to_string();
    assert!(
        err.contains("upstreams.default.tls.ca_file: cannot read"),
        "{err}"
    );
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert_eq!(send(gw.addr, get("/")).await.0, 200);

    // Same config, new file contents (a CA rotated on disk): the reload reads them.
    std::fs::write(&right, other.cert.pem()).unwrap();
    gw.shared.apply(fixed.clone()).unwrap();
    assert_eq!(send(gw.addr, get("/")).await.0, 502);
    std::fs::write(&right, ca.cert.pem()).unwrap();
    gw.shared.apply(fixed.clone()).unwrap();
    assert_eq!(send(gw.addr, get("/")).await.0, 200);

    // Turning TLS off speaks plain HTTP to the TLS port: the backend cannot answer it.
    let mut plain = fixed;
    plain.upstreams.get_mut("default").unwrap().tls = None;
    gw.shared.apply(plain).unwrap();
    assert_eq!(send(gw.addr, get("/")).await.0, 502);
}

#[test]
fn an_unreadable_ca_file_fails_the_load_with_its_path() {
    let cfg = tls_config(
        &["127.0.0.1:9".parse().unwrap()],
        verified("/nonexistent/ca.pem".into()),
    );
    let err = build_error(&cfg);
    assert!(
        err.starts_with("upstreams.default.tls.ca_file: cannot read /nonexistent/ca.pem:"),
        "{err}"
    );
}

#[test]
fn a_client_key_file_without_a_key_fails_the_load_naming_key_file() {
    let dir = Dir::new("badkey");
    let ca = Ca::new("test ca");
    let (cert, _) = ca.issue(&["gateway"], ExtendedKeyUsagePurpose::ClientAuth);
    let cert_file = dir.write("client.pem", &cert);
    // A certificate where the key should be.
    let key_file = dir.write("client.key", &cert);
    let cfg = tls_config(
        &["127.0.0.1:9".parse().unwrap()],
        UpstreamTlsConfig {
            cert_file: Some(cert_file),
            key_file: Some(key_file.clone()),
            ..verified(dir.write("ca.pem", &ca.cert.pem()))
        },
    );
    let err = build_error(&cfg);
    assert_eq!(
        err,
        format!(
            "upstreams.default.tls.key_file: {}: no private key found in PEM file",
            key_file.display()
        )
    );
}

#[test]
fn config_errors_name_the_file_line_key_and_expectation() {
    use scalewise_gateway::config_file::{parse_config, Format};
    let text = r#"
[[listeners]]
addr = "127.0.0.1:8080"
[[routes]]
upstream = "api"
[upstreams.api]
backends = [{ addr = "10.0.0.5:443" }]
[upstreams.api.tls]
ca_file = "ca.pem"
"#;
    let err = parse_config(text, Format::Toml, "gw.toml", [])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("gw.toml:8:16: key `upstreams.api.tls.server_name`: got (absent), expected the name backend 10.0.0.5:443 presents a certificate for"),
        "{err}"
    );
    // A DNS backend needs no server_name; insecure mode needs none either.
    parse_config(
        &text.replace("10.0.0.5:443", "api.internal:443"),
        Format::Toml,
        "gw.toml",
        [],
    )
    .unwrap();
    parse_config(
        &text.replace("ca_file = \"ca.pem\"", "insecure_skip_verify = true"),
        Format::Toml,
        "gw.toml",
        [],
    )
    .unwrap();

    for (extra, key, expected) in [
        (
            "server_name = \"bad name\"",
            "upstreams.api.tls.server_name",
            "a DNS name",
        ),
        (
            "server_name = \"x\"\ncert_file = \"c.pem\"",
            "upstreams.api.tls.key_file",
            "both or neither",
        ),
        (
            "server_name = \"x\"\nalpn = [\"h2\"]",
            "upstreams.api.tls.alpn",
            "includes \"http/1.1\"",
        ),
        (
            "insecure_skip_verify = true\ncrl_files = [\"a.crl\"]",
            "upstreams.api.tls.crl_files",
            "no crl_files with insecure_skip_verify",
        ),
        (
            "server_name = \"x\"\ncrl_enforce_next_update = true",
            "upstreams.api.tls.crl_enforce_next_update",
            "got true, expected to be left out: it applies to crl_files, and there are none",
        ),
        (
            "server_name = \"x\"\ncrl_files = [\"a.crl\"]\ncrl_scope = \"all\"",
            "upstreams.api.tls.crl_scope",
            "unknown variant `all`, expected `chain` or `leaf`",
        ),
        (
            "server_name = \"x\"\nverify = false",
            "upstreams.api.tls.verify",
            "unknown field",
        ),
    ] {
        let err = parse_config(&format!("{text}{extra}\n"), Format::Toml, "gw.toml", [])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("key `{key}`")), "{extra}: {err}");
        assert!(err.contains(expected), "{extra}: {err}");
    }
}

#[tokio::test]
async fn a_failed_handshake_is_a_connect_error_retried_on_another_backend() {
    let dir = Dir::new("retry");
    let ca = Ca::new("test ca");
    let ca_file = dir.write("ca.pem", &ca.cert.pem());
    // One backend's certificate is for another name: every handshake with it fails.
    let bad_leaf = ca.leaf(&["elsewhere.internal"], ExtendedKeyUsagePurpose::ServerAuth);
    let bad = serving("bad", &bad_leaf).await;
    let good = tls_backend("good", &ca).await;
    let gw = gateway(tls_config(&[bad.addr, good.addr], verified(ca_file))).await;
    for _ in 0..4 {
        let (status, _, text) = send(gw.addr, get("/")).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("backend=good\n"), "{text}");
    }
    assert_eq!(bad.hits.load(Ordering::SeqCst), 0);
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: scalewise_gateway::Args,
}

#[test]
fn https_backends_on_the_command_line_turn_on_tls() {
    use clap::Parser;
    let parse = |backends: &[&str]| {
        let mut argv = vec!["gateway", "--listen", "127.0.0.1:0"];
        for b in backends {
            argv.extend(["--backend", b]);
        }
        Cli::try_parse_from(argv).map(|c| c.args.command_line_config())
    };
    let config = parse(&["https://api.internal:8443", "https://api2.internal:8443"])
        .unwrap()
        .unwrap();
    let u = &config.upstreams["default"];
    assert_eq!(u.tls, Some(UpstreamTlsConfig::new()));
    assert_eq!(u.backends[0].addr.to_string(), "api.internal:8443");
    config.validate().unwrap();

    let plain = parse(&["127.0.0.1:9001"]).unwrap().unwrap();
    assert_eq!(plain.upstreams["default"].tls, None);

    let mixed = parse(&["https://api.internal:8443", "127.0.0.1:9001"])
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(mixed.contains("every backend is https://"), "{mixed}");
    assert!(parse(&["ftp://x:1"]).is_err());

    // An IP backend has no name to verify: the error says which key to set.
    let ip = parse(&["https://127.0.0.1:8443"]).unwrap().unwrap();
    let errs = ip.validate().unwrap_err();
    assert_eq!(errs[0].key_path, "upstreams.default.tls.server_name");
}
