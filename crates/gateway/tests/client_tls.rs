//! Client certificate authentication on TLS listeners (`[listeners.tls.client_auth]`):
//! required and optional modes, revocation lists, `X-Forwarded-Client-Cert` to backends
//! (and a client's own one removed), the handshake-failure metric, reloads, and the errors
//! of bad files. Real sockets; certificates and CRLs made with rcgen.
mod common;

use common::pki::*;
use common::*;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, SanType};
use scalewise_gateway::config::{ClientAuthConfig, ClientAuthMode, Config, TlsConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The gateway's own certificate (for `localhost`, from `server_ca`) with `client_auth`.
fn listener_tls(dir: &Dir, server_ca: &Ca, client_auth: Option<ClientAuthConfig>) -> TlsConfig {
    let leaf = server_ca.leaf(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    TlsConfig {
        client_auth,
        ..TlsConfig::new(
            dir.write("gateway.pem", &leaf.cert),
            dir.write("gateway.key", &leaf.key),
        )
    }
}

/// A one-listener config in front of `backend` with listener TLS `tls`.
fn tls_gateway_config(backend: SocketAddr, tls: TlsConfig) -> Config {
    let mut cfg = config(&[backend]);
    cfg.listeners[0].tls = Some(tls);
    cfg
}

/// A client client trusting `server_ca`, presenting `identity` if given, offering `alpn`.
fn client(server_ca: &Ca, identity: Option<&Leaf>, alpn: &[&str]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server_ca.cert.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(leaf) => {
            let (chain, key) = leaf.identity();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

async fn connect(addr: SocketAddr, connector: &TlsConnector) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// Sends GET `path` (with `headers`) over HTTP/1.1 on a new TLS connection made with
/// `connector`: status and body.
async fn get_tls(
    addr: SocketAddr,
    connector: &TlsConnector,
    path: &str,
    headers: &[(&str, &str)],
) -> (http::StatusCode, String) {
    let tls = connect(addr, connector).await;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = get(path);
    for (k, v) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let (status, _, text) = read(tx.send_request(req).await.unwrap()).await;
    (status, text)
}

/// A TLS connection the gateway must refuse: its handshake fails, or (TLS 1.3, where the
/// client finishes before the server has checked its certificate) the first read gets the
/// gateway's alert instead of data. Returns the client's error once the gateway has closed
/// the connection, which it does after counting the failure.
async fn refused(addr: SocketAddr, connector: &TlsConnector) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (err, mut tcp) = match connector
        .connect("localhost".try_into().unwrap(), tcp)
        .into_fallible()
        .await
    {
        Err((e, tcp)) => (e.to_string(), tcp),
        Ok(mut tls) => {
            // Nothing is written: unread request bytes would make the gateway's close a
            // reset, which can overtake its alert.
            let mut buf = [0u8; 64];
            let err = match tls.read(&mut buf).await {
                Ok(0) => "closed without an alert".to_owned(),
                Ok(n) => panic!("the gateway sent data: {:?}", &buf[..n]),
                Err(e) => e.to_string(),
            };
            (err, tls.into_inner().0)
        }
    };
    // Until the gateway's close (EOF, or a reset).
    let mut buf = [0u8; 64];
    while let Ok(n) = tcp.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
    err
}

/// The value of metric line `series` (`name{labels}`), if present.
fn metric(gw: &Gateway, series: &str) -> Option<String> {
    let text = gw.shared.metrics.encode();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
}

fn client_cert_failures(gw: &Gateway) -> Option<String> {
    metric(
        gw,
        "gateway_client_tls_handshake_errors_total{listener=\"default\",reason=\"client_cert\"}",
    )
}

/// A client certificate with a subject and a SPIFFE URI.
fn client_leaf(ca: &Ca, cn: &str) -> Leaf {
    let mut params = CertificateParams::new(vec![format!("{cn}.clients.internal")]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Example");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names.push(SanType::URI(
        format!("spiffe://example.org/{cn}").try_into().unwrap(),
    ));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    ca.sign(params)
}

fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `xfcc=` line of the test backend's reflection.
fn xfcc_seen(text: &str) -> &str {
    text.lines()
        .find_map(|l| l.strip_prefix("xfcc="))
        .unwrap_or_else(|| panic!("no xfcc line in {text}"))
}

fn expected_xfcc(leaf: &Leaf, cn: &str) -> String {
    format!(
        "Hash={};Subject=\"CN={cn},O=Example\";DNS={cn}.clients.internal;URI=spiffe://example.org/{cn}",
        sha256_hex(&leaf.der)
    )
}

#[tokio::test]
async fn required_mode_refuses_clients_without_a_certificate_or_with_one_from_another_ca() {
    let dir = Dir::new("required-refuses");
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let other_ca = Ca::new("other ca");
    let b = backend("a").await;
    let auth = ClientAuthConfig::new(dir.write("clients.pem", &client_ca.cert.pem()));
    let gw = gateway(tls_gateway_config(
        b.addr,
        listener_tls(&dir, &server_ca, Some(auth)),
    ))
    .await;

    let err = refused(gw.addr, &client(&server_ca, None, &["http/1.1"])).await;
    assert!(err.contains("CertificateRequired"), "{err}");
    let stranger = client_leaf(&other_ca, "stranger");
    let err = refused(gw.addr, &client(&server_ca, Some(&stranger), &["http/1.1"])).await;
    assert!(err.contains("UnknownCA"), "{err}");

    assert_eq!(
        b.hits.load(Ordering::SeqCst),
        0,
        "nothing reached the backend"
    );
    assert_eq!(client_cert_failures(&gw).as_deref(), Some("2"));
}

#[tokio::test]
async fn required_mode_forwards_the_verified_certificate_and_drops_a_forged_one() {
    let dir = Dir::new("required-accepts");
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let b = backend("a").await;
    let auth = ClientAuthConfig::new(dir.write("clients.pem", &client_ca.cert.pem()));
    let gw = gateway(tls_gateway_config(
        b.addr,
        listener_tls(&dir, &server_ca, Some(auth)),
    ))
    .await;
    let leaf = client_leaf(&client_ca, "billing");
    let want = expected_xfcc(&leaf, "billing");

    // HTTP/1.1, with a forged header the gateway must replace.
    let c = client(&server_ca, Some(&leaf), &["http/1.1"]);
    let (status, text) = get_tls(
        gw.addr,
        &c,
        "/",
        &[(
            "x-forwarded-client-cert",
            "Hash=forged;Subject=\"CN=admin\"",
        )],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(xfcc_seen(&text), want, "{text}");
    assert!(text.contains("xfp=https\n"), "{text}");

    // HTTP/2 over the same kind of connection: the same value, the forged one gone too.
    let mut tx = h2_client(connect(gw.addr, &client(&server_ca, Some(&leaf), &["h2"])).await).await;
    let req = http::Request::get("https://localhost/h2")
        .header("x-forwarded-client-cert", "Hash=forged")
        .body(body(""))
        .unwrap();
    let (status, _, text) = read(tx.send_request(req).await.unwrap()).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("version=HTTP/1.1\n"), "{text}");
    assert_eq!(xfcc_seen(&text), want, "{text}");

    assert_eq!(client_cert_failures(&gw).as_deref(), Some("0"));
}

#[tokio::test]
async fn xfcc_reaches_an_http2_upstream_in_place_of_a_forged_one() {
    let dir = Dir::new("h2-upstream");
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let b = backend("a").await;
    let auth = ClientAuthConfig::new(dir.write("clients.pem", &client_ca.cert.pem()));
    let mut cfg = tls_gateway_config(b.addr, listener_tls(&dir, &server_ca, Some(auth)));
    cfg.upstreams.get_mut("default").unwrap().protocol =
        scalewise_gateway::config::UpstreamProtocol::Http2;
    let gw = gateway(cfg).await;
    let leaf = client_leaf(&client_ca, "batch");
    let c = client(&server_ca, Some(&leaf), &["http/1.1"]);
    let (status, text) = get_tls(
        gw.addr,
        &c,
        "/",
        &[("x-forwarded-client-cert", "Hash=forged")],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("version=HTTP/2.0\n"), "{text}");
    assert_eq!(xfcc_seen(&text), expected_xfcc(&leaf, "batch"), "{text}");
}

#[tokio::test]
async fn a_forged_xfcc_is_removed_on_a_listener_without_client_auth() {
    let b = backend("a").await;
    let gw = gateway(config(&[b.addr])).await;
    let mut req = get("/");
    req.headers_mut().insert(
        "x-forwarded-client-cert",
        http::HeaderValue::from_static("Hash=forged"),
    );
    let (status, _, text) = send(gw.addr, req).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(xfcc_seen(&text), "", "{text}");
}

#[tokio::test]
async fn optional_mode_serves_clients_with_and_without_a_certificate() {
    let dir = Dir::new("optional");
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let other_ca = Ca::new("other ca");
    let b = backend("a").await;
    let auth = ClientAuthConfig {
        mode: ClientAuthMode::Optional,
        ..ClientAuthConfig::new(dir.write("clients.pem", &client_ca.cert.pem()))
    };
    let gw = gateway(tls_gateway_config(
        b.addr,
        listener_tls(&dir, &server_ca, Some(auth)),
    ))
    .await;

    let anonymous = client(&server_ca, None, &["http/1.1"]);
    let (status, text) = get_tls(
        gw.addr,
        &anonymous,
        "/",
        &[("x-forwarded-client-cert", "Hash=forged")],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(xfcc_seen(&text), "", "no certificate, no header: {text}");

    let leaf = client_leaf(&client_ca, "reports");
    let (status, text) = get_tls(
        gw.addr,
        &client(&server_ca, Some(&leaf), &["http/1.1"]),
        "/",
        &[],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(xfcc_seen(&text), expected_xfcc(&leaf, "reports"), "{text}");

    // A certificate that is sent must still verify.
    let stranger = client_leaf(&other_ca, "stranger");
    let err = refused(gw.addr, &client(&server_ca, Some(&stranger), &["http/1.1"])).await;
    assert!(err.contains("UnknownCA"), "{err}");
    assert_eq!(client_cert_failures(&gw).as_deref(), Some("1"));
}

#[tokio::test]
async fn forward_client_cert_false_verifies_but_sends_no_header() {
    let dir = Dir::new("no-forward");
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let b = backend("a").await;
    let auth = ClientAuthConfig {
        forward_client_cert: false,
        ..ClientAuthConfig::new(dir.write("clients.pem", &client_ca.cert.pem()))
    };
    let gw = gateway(tls_gateway_config(
        b.addr,
        listener_tls(&dir, &server_ca, Some(auth)),
    ))
    .await;
    let leaf = client_leaf(&client_ca, "quiet");
    let c = client(&server_ca, Some(&leaf), &["http/1.1"]);
    let (status, text) = get_tls(
        gw.addr,
        &c,
        "/",
        &[("x-forwarded-client-cert", "Hash=forged")],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(xfcc_seen(&text), "", "{text}");
    refused(gw.addr, &client(&server_ca, None, &["http/1.1"])).await;
}

#[tokio::test]
async fn a_revoked_client_certificate_is_refused() {
    let dir = Dir::new("revoked");
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let b = backend("a").await;
    let good = client_leaf(&client_ca, "good");
    let revoked = client_leaf(&client_ca, "revoked");
    let auth = ClientAuthConfig {
        crl_files: vec![dir.write("clients.crl.pem", &client_ca.crl(&[revoked.serial]))],
        ..ClientAuthConfig::new(dir.write("clients.pem", &client_ca.cert.pem()))
    };
    let gw = gateway(tls_gateway_config(
        b.addr,
        listener_tls(&dir, &server_ca, Some(auth)),
    ))
    .await;

    let err = refused(gw.addr, &client(&server_ca, Some(&revoked), &["http/1.1"])).await;
    assert!(err.contains("CertificateRevoked"), "{err}");
    let (status, text) = get_tls(
        gw.addr,
        &client(&server_ca, Some(&good), &["http/1.1"]),
        "/",
        &[],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(client_cert_failures(&gw).as_deref(), Some("1"));
}

#[tokio::test]
async fn a_reload_changes_client_auth_and_a_bad_file_keeps_the_running_config() {
    let dir = Dir::new("reload");
    let server_ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let b = backend("a").await;
    let leaf = client_leaf(&client_ca, "ops");
    let ca_file = dir.write("clients.pem", &client_ca.cert.pem());
    let tls = listener_tls(&dir, &server_ca, None);
    let cfg = tls_gateway_config(b.addr, tls.clone());
    let gw = gateway(cfg.clone()).await;
    let anonymous = client(&server_ca, None, &["http/1.1"]);
    let with_cert = client(&server_ca, Some(&leaf), &["http/1.1"]);
    assert_eq!(get_tls(gw.addr, &anonymous, "/", &[]).await.0, 200);

    // Client certificates required from now on, for new connections.
    let mut required = cfg.clone();
    required.listeners[0].addr = gw.addr;
    required.listeners[0].tls = Some(TlsConfig {
        client_auth: Some(ClientAuthConfig::new(ca_file.clone())),
        ..tls.clone()
    });
    gw.shared.apply(required.clone()).unwrap();
    refused(gw.addr, &anonymous).await;
    assert_eq!(get_tls(gw.addr, &with_cert, "/", &[]).await.0, 200);

    // A CRL file holding a certificate instead: refused, naming key and file; the running
    // config goes on.
    let not_a_crl = dir.write("not-a-crl.pem", &client_ca.cert.pem());
    let mut broken = required.clone();
    broken.listeners[0].tls = Some(TlsConfig {
        client_auth: Some(ClientAuthConfig {
            crl_files: vec![not_a_crl.clone()],
            ..ClientAuthConfig::new(ca_file.clone())
        }),
        ..tls.clone()
    });
    let err = gw.shared.apply(broken).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "listener default: tls.client_auth.crl_files: {}: no certificate revocation list \
             (-----BEGIN X509 CRL-----) found in PEM file",
            not_a_crl.display()
        )
    );
    assert_eq!(get_tls(gw.addr, &with_cert, "/", &[]).await.0, 200);
    refused(gw.addr, &anonymous).await;

    // A CRL revoking the certificate: the reload reads it and new connections are refused.
    let crl = dir.write("clients.crl.pem", &client_ca.crl(&[leaf.serial]));
    let mut revoking = required;
    revoking.listeners[0].tls = Some(TlsConfig {
        client_auth: Some(ClientAuthConfig {
            crl_files: vec![crl],
            ..ClientAuthConfig::new(ca_file)
        }),
        ..tls
    });
    gw.shared.apply(revoking).unwrap();
    let err = refused(gw.addr, &with_cert).await;
    assert!(err.contains("CertificateRevoked"), "{err}");
}

/// The state-build error for a listener with `client_auth`.
fn build_error(dir: &Dir, client_auth: ClientAuthConfig) -> String {
    let server_ca = Ca::new("server ca");
    let cfg = tls_gateway_config(
        "127.0.0.1:9".parse().unwrap(),
        listener_tls(dir, &server_ca, Some(client_auth)),
    );
    scalewise_gateway::state::GatewayState::build(
        &cfg,
        None,
        &scalewise_gateway::metrics::GatewayMetrics::new(),
    )
    .unwrap_err()
    .to_string()
}

#[test]
fn bad_ca_and_crl_files_name_the_key_and_the_file() {
    let dir = Dir::new("bad-files");
    let ca = Ca::new("client ca");
    let ca_file = dir.write("clients.pem", &ca.cert.pem());

    let missing = dir.0.join("missing.pem");
    let err = build_error(&dir, ClientAuthConfig::new(missing.clone()));
    assert!(
        err.starts_with(&format!(
            "listener default: tls.client_auth.ca_file: cannot read {}: ",
            missing.display()
        )),
        "{err}"
    );

    // A key where the CA certificates should be.
    let key_only = dir.write("key-only.pem", &ca.key.serialize_pem());
    let err = build_error(&dir, ClientAuthConfig::new(key_only.clone()));
    assert_eq!(
        err,
        format!(
            "listener default: tls.client_auth.ca_file: {}: no certificate found in PEM file",
            key_only.display()
        )
    );

    // A CRL block whose contents are not a CRL.
    let garbage = dir.write(
        "garbage.crl.pem",
        "-----BEGIN X509 CRL-----\nMAMCAQE=\n-----END X509 CRL-----\n",
    );
    let good_crl = dir.write("good.crl.pem", &ca.crl(&[]));
    let err = build_error(
        &dir,
        ClientAuthConfig {
            crl_files: vec![good_crl, garbage.clone()],
            ..ClientAuthConfig::new(ca_file.clone())
        },
    );
    assert!(
        err.starts_with(&format!(
            "listener default: tls.client_auth.crl_files: {}: invalid certificate revocation list",
            garbage.display()
        )),
        "{err}"
    );

    // The gateway's own certificate is still reported as before, with its key.
    let server_ca = Ca::new("server ca");
    let mut cfg = tls_gateway_config(
        "127.0.0.1:9".parse().unwrap(),
        listener_tls(&dir, &server_ca, None),
    );
    let missing_cert: PathBuf = dir.0.join("nope.pem");
    cfg.listeners[0].tls.as_mut().unwrap().cert = missing_cert.clone();
    let err = scalewise_gateway::state::GatewayState::build(
        &cfg,
        None,
        &scalewise_gateway::metrics::GatewayMetrics::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(&format!(
            "listener default: tls.cert: cannot read {}",
            missing_cert.display()
        )),
        "{err}"
    );
}

#[test]
fn config_errors_name_the_line_and_key() {
    use scalewise_gateway::config_file::{parse_config, Format};
    let text = r#"
[[listeners]]
addr = "127.0.0.1:8443"
[listeners.tls]
cert = "gw.pem"
key = "gw.key"
[listeners.tls.client_auth]
ca_file = "clients.pem"
mode = "sometimes"
[[routes]]
upstream = "api"
[upstreams.api]
backends = [{ addr = "10.0.0.5:80" }]
"#;
    let err = parse_config(text, Format::Toml, "gw.toml", [])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "gw.toml:9:1: key `listeners[0].tls.client_auth.mode`: unknown variant `sometimes`"
        ),
        "{err}"
    );
    assert!(
        err.contains("required") && err.contains("optional"),
        "{err}"
    );

    let ok = parse_config(
        &text.replace(
            "mode = \"sometimes\"",
            "mode = \"optional\"\ncrl_files = [\"a.crl\"]",
        ),
        Format::Toml,
        "gw.toml",
        [],
    )
    .unwrap();
    let auth = ok.listeners[0]
        .tls
        .as_ref()
        .unwrap()
        .client_auth
        .as_ref()
        .unwrap();
    assert_eq!(auth.mode, ClientAuthMode::Optional);
    assert_eq!(auth.crl_files, [PathBuf::from("a.crl")]);

    let err = parse_config(
        &text.replace("mode = \"sometimes\"", "crl_files = [\"\"]"),
        Format::Toml,
        "gw.toml",
        [],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("key `listeners[0].tls.client_auth.crl_files[0]`: got \"\", expected a PEM certificate revocation list file path"),
        "{err}"
    );

    let err = parse_config(
        &text.replace(
            "ca_file = \"clients.pem\"\nmode = \"sometimes\"",
            "mode = \"required\"",
        ),
        Format::Toml,
        "gw.toml",
        [],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("missing field `ca_file`"), "{err}");
}
