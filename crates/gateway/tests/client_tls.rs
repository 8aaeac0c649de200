//! Client certificate authentication on TLS listeners (`[listeners.tls.client_auth]`):
//! required and optional modes, revocation lists, `X-Forwarded-Client-Cert` to backends
//! (and a client's own one removed, or a trusted proxy's kept), its optional parts, the
//! revocation-list options, the access log, the handshake-failure metric, reloads, and the
//! errors of bad files and settings. Real sockets; certificates and CRLs made with rcgen.
mod common;

use common::pki::*;
use common::*;
use hyper::client::conn::http2::SendRequest;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, SanType};
use scalewise_gateway::config::{
    ClientAuthConfig, ClientAuthMode, Config, CrlScope, TlsConfig, TrustedXfcc,
    UnknownRevocationStatus, XfccDetail,
};
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

/// A client trusting `server_ca`, presenting `identity` if given, offering `alpn`.
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
    ca.sign(client_params(cn))
}

/// The parameters of [`client_leaf`].
fn client_params(cn: &str) -> CertificateParams {
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
    params
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

/// An `X-Forwarded-Client-Cert` request header for [`get_tls`].
fn xfcc(value: &str) -> [(&str, &str); 1] {
    [("x-forwarded-client-cert", value)]
}

/// What most tests here start from: a scratch directory, the CA of the gateway's certificate,
/// a CA of client certificates, the listener's TLS and a backend.
struct Setup {
    dir: Dir,
    server_ca: Ca,
    client_ca: Ca,
    /// `clients.pem`: the client CA's certificate.
    ca_file: PathBuf,
    /// A certificate of `server_ca` for `localhost`; no client auth.
    tls: TlsConfig,
    b: Backend,
}

impl Setup {
    async fn new(tag: &str) -> Self {
        let dir = Dir::new(tag);
        let server_ca = Ca::new("server ca");
        let client_ca = Ca::new("client ca");
        Self {
            ca_file: dir.write("clients.pem", &client_ca.cert.pem()),
            tls: listener_tls(&dir, &server_ca, None),
            b: backend("a").await,
            dir,
            server_ca,
            client_ca,
        }
    }

    /// Required certificates of `client_ca`, every other setting at its default.
    fn auth(&self) -> ClientAuthConfig {
        ClientAuthConfig::new(self.ca_file.clone())
    }

    /// A config: the listener with `tls` and `client_auth`, in front of the backend.
    fn config(&self, client_auth: ClientAuthConfig) -> Config {
        let tls = TlsConfig {
            client_auth: Some(client_auth),
            ..self.tls.clone()
        };
        tls_gateway_config(self.b.addr, tls)
    }

    async fn gateway(&self, client_auth: ClientAuthConfig) -> Gateway {
        gateway(self.config(client_auth)).await
    }

    /// A gateway requiring certificates of `client_ca` checked against `crl` (PEM), and its
    /// config (with the bound address, ready for reloads).
    async fn crl_gateway(&self, crl: &str) -> (Gateway, Config) {
        let mut cfg = self.config(ClientAuthConfig {
            crl_files: vec![self.dir.write("clients.crl.pem", crl)],
            ..self.auth()
        });
        let gw = gateway(cfg.clone()).await;
        cfg.listeners[0].addr = gw.addr;
        (gw, cfg)
    }

    /// An HTTP/1.1 client of the gateway, presenting `identity` if given.
    fn client(&self, identity: Option<&Leaf>) -> TlsConnector {
        client(&self.server_ca, identity, &["http/1.1"])
    }

    /// An HTTP/2 connection to the gateway at `addr`, presenting `leaf`.
    async fn h2(&self, addr: SocketAddr, leaf: &Leaf) -> SendRequest<Body> {
        h2_client(connect(addr, &client(&self.server_ca, Some(leaf), &["h2"])).await).await
    }
}

#[tokio::test]
async fn required_mode_refuses_clients_without_a_certificate_or_with_one_from_another_ca() {
    let s = Setup::new("required-refuses").await;
    let gw = s.gateway(s.auth()).await;

    let err = refused(gw.addr, &s.client(None)).await;
    assert!(err.contains("CertificateRequired"), "{err}");
    let stranger = client_leaf(&Ca::new("other ca"), "stranger");
    let err = refused(gw.addr, &s.client(Some(&stranger))).await;
    assert!(err.contains("UnknownCA"), "{err}");

    assert_eq!(
        s.b.hits.load(Ordering::SeqCst),
        0,
        "nothing reached the backend"
    );
    assert_eq!(client_cert_failures(&gw).as_deref(), Some("2"));
}

#[tokio::test]
async fn required_mode_forwards_the_verified_certificate_and_drops_a_forged_one() {
    let s = Setup::new("required-accepts").await;
    let gw = s.gateway(s.auth()).await;
    let leaf = client_leaf(&s.client_ca, "billing");
    let want = expected_xfcc(&leaf, "billing");

    // HTTP/1.1, with a forged header the gateway must replace.
    let forged = xfcc("Hash=forged;Subject=\"CN=admin\"");
    let (status, text) = get_tls(gw.addr, &s.client(Some(&leaf)), "/", &forged).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(xfcc_seen(&text), want, "{text}");
    assert!(text.contains("xfp=https\n"), "{text}");

    // HTTP/2 over the same kind of connection: the same value, the forged one gone too.
    let mut tx = s.h2(gw.addr, &leaf).await;
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
    let s = Setup::new("h2-upstream").await;
    let mut cfg = s.config(s.auth());
    cfg.upstreams.get_mut("default").unwrap().protocol =
        scalewise_gateway::config::UpstreamProtocol::Http2;
    let gw = gateway(cfg).await;
    let leaf = client_leaf(&s.client_ca, "batch");
    let c = s.client(Some(&leaf));
    let (status, text) = get_tls(gw.addr, &c, "/", &xfcc("Hash=forged")).await;
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
    let s = Setup::new("optional").await;
    let gw = s
        .gateway(ClientAuthConfig {
            mode: ClientAuthMode::Optional,
            ..s.auth()
        })
        .await;

    let anonymous = s.client(None);
    let (status, text) = get_tls(gw.addr, &anonymous, "/", &xfcc("Hash=forged")).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(xfcc_seen(&text), "", "no certificate, no header: {text}");

    let leaf = client_leaf(&s.client_ca, "reports");
    let (status, text) = get_tls(gw.addr, &s.client(Some(&leaf)), "/", &[]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(xfcc_seen(&text), expected_xfcc(&leaf, "reports"), "{text}");

    // A certificate that is sent must still verify.
    let stranger = client_leaf(&Ca::new("other ca"), "stranger");
    let err = refused(gw.addr, &s.client(Some(&stranger))).await;
    assert!(err.contains("UnknownCA"), "{err}");
    assert_eq!(client_cert_failures(&gw).as_deref(), Some("1"));
}

#[tokio::test]
async fn forward_client_cert_false_verifies_but_sends_no_header() {
    let s = Setup::new("no-forward").await;
    let gw = s
        .gateway(ClientAuthConfig {
            forward_client_cert: false,
            ..s.auth()
        })
        .await;
    let leaf = client_leaf(&s.client_ca, "quiet");
    let c = s.client(Some(&leaf));
    let (status, text) = get_tls(gw.addr, &c, "/", &xfcc("Hash=forged")).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(xfcc_seen(&text), "", "{text}");
    refused(gw.addr, &s.client(None)).await;
}

#[tokio::test]
async fn a_revoked_client_certificate_is_refused() {
    let s = Setup::new("revoked").await;
    let good = client_leaf(&s.client_ca, "good");
    let revoked = client_leaf(&s.client_ca, "revoked");
    let (gw, _) = s.crl_gateway(&s.client_ca.crl(&[revoked.serial])).await;

    let err = refused(gw.addr, &s.client(Some(&revoked))).await;
    assert!(err.contains("CertificateRevoked"), "{err}");
    let (status, text) = get_tls(gw.addr, &s.client(Some(&good)), "/", &[]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(client_cert_failures(&gw).as_deref(), Some("1"));
}

#[tokio::test]
async fn a_reload_changes_client_auth_and_a_bad_file_keeps_the_running_config() {
    let s = Setup::new("reload").await;
    let leaf = client_leaf(&s.client_ca, "ops");
    let gw = gateway(tls_gateway_config(s.b.addr, s.tls.clone())).await;
    let anonymous = s.client(None);
    let with_cert = s.client(Some(&leaf));
    assert_eq!(get_tls(gw.addr, &anonymous, "/", &[]).await.0, 200);

    // Client certificates required from now on, for new connections.
    let mut required = s.config(s.auth());
    required.listeners[0].addr = gw.addr;
    gw.shared.apply(required.clone()).unwrap();
    refused(gw.addr, &anonymous).await;
    assert_eq!(get_tls(gw.addr, &with_cert, "/", &[]).await.0, 200);

    // A CRL file holding a certificate instead: refused, naming key and file; the running
    // config goes on.
    let not_a_crl = s.dir.write("not-a-crl.pem", &s.client_ca.cert.pem());
    let mut broken = required.clone();
    client_auth_of(&mut broken).crl_files = vec![not_a_crl.clone()];
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
    let mut revoking = required;
    client_auth_of(&mut revoking).crl_files = vec![s
        .dir
        .write("clients.crl.pem", &s.client_ca.crl(&[leaf.serial]))];
    gw.shared.apply(revoking).unwrap();
    let err = refused(gw.addr, &with_cert).await;
    assert!(err.contains("CertificateRevoked"), "{err}");
}

/// The state-build error for a listener with `client_auth`.
fn client_auth_error(dir: &Dir, client_auth: ClientAuthConfig) -> String {
    let server_ca = Ca::new("server ca");
    build_error(&tls_gateway_config(
        "127.0.0.1:9".parse().unwrap(),
        listener_tls(dir, &server_ca, Some(client_auth)),
    ))
}

#[test]
fn bad_ca_and_crl_files_name_the_key_and_the_file() {
    let dir = Dir::new("bad-files");
    let ca = Ca::new("client ca");
    let ca_file = dir.write("clients.pem", &ca.cert.pem());

    let missing = dir.0.join("missing.pem");
    let err = client_auth_error(&dir, ClientAuthConfig::new(missing.clone()));
    assert!(
        err.starts_with(&format!(
            "listener default: tls.client_auth.ca_file: cannot read {}: ",
            missing.display()
        )),
        "{err}"
    );

    // A key where the CA certificates should be.
    let key_only = dir.write("key-only.pem", &ca.key.serialize_pem());
    let err = client_auth_error(&dir, ClientAuthConfig::new(key_only.clone()));
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
    let err = client_auth_error(
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
    let err = build_error(&cfg);
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

/// The test clients connect from 127.0.0.1: a trusted proxy when `trusted_proxies` says so.
#[tokio::test]
async fn a_trusted_proxys_xfcc_is_appended_to_or_forwarded_and_anyone_elses_replaced() {
    let s = Setup::new("trusted-xfcc").await;
    let mut cfg = s.config(ClientAuthConfig {
        mode: ClientAuthMode::Optional,
        ..s.auth()
    });
    cfg.listeners[0].trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    cfg.listeners[0].xfcc_from_trusted_proxies = TrustedXfcc::Append;
    let gw = gateway(cfg.clone()).await;
    cfg.listeners[0].addr = gw.addr;
    let leaf = client_leaf(&s.client_ca, "edge");
    let ours = expected_xfcc(&leaf, "edge");
    let theirs = "By=spiffe://example.org/edge;Hash=abc;URI=spiffe://example.org/user";
    let with_cert = s.client(Some(&leaf));
    let anonymous = s.client(None);

    // `append`: the proxy's elements, then ours.
    let (status, text) = get_tls(gw.addr, &with_cert, "/", &xfcc(theirs)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(xfcc_seen(&text), format!("{theirs},{ours}"), "{text}");
    // Over HTTP/2, with the proxy's header in two lines: one value, in order.
    let mut tx = s.h2(gw.addr, &leaf).await;
    let req = http::Request::get("https://localhost/h2")
        .header("x-forwarded-client-cert", "Hash=first")
        .header("x-forwarded-client-cert", "Hash=second")
        .body(body(""))
        .unwrap();
    let (status, _, text) = read(tx.send_request(req).await.unwrap()).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        xfcc_seen(&text),
        format!("Hash=first,Hash=second,{ours}"),
        "{text}"
    );
    // No certificate of ours to add: the proxy's header as it is; none at all: ours alone.
    let (_, text) = get_tls(gw.addr, &anonymous, "/", &xfcc(theirs)).await;
    assert_eq!(xfcc_seen(&text), theirs, "{text}");
    let (_, text) = get_tls(gw.addr, &with_cert, "/", &[]).await;
    assert_eq!(xfcc_seen(&text), ours, "{text}");

    // `forward`: the proxy's header only, even though the gateway verified a certificate.
    let mut forward = cfg.clone();
    forward.listeners[0].xfcc_from_trusted_proxies = TrustedXfcc::Forward;
    gw.shared.apply(forward.clone()).unwrap();
    let (_, text) = get_tls(gw.addr, &with_cert, "/", &xfcc(theirs)).await;
    assert_eq!(xfcc_seen(&text), theirs, "{text}");
    let (_, text) = get_tls(gw.addr, &anonymous, "/", &[]).await;
    assert_eq!(xfcc_seen(&text), "", "{text}");

    // The same requests from a peer that is not a trusted proxy: the header is replaced.
    let mut untrusted = forward;
    untrusted.listeners[0].trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    gw.shared.apply(untrusted).unwrap();
    let (_, text) = get_tls(gw.addr, &with_cert, "/", &xfcc(theirs)).await;
    assert_eq!(xfcc_seen(&text), ours, "{text}");
    let (_, text) = get_tls(gw.addr, &anonymous, "/", &xfcc(theirs)).await;
    assert_eq!(xfcc_seen(&text), "", "{text}");
}

#[tokio::test]
async fn a_plain_listener_keeps_the_xfcc_of_a_trusted_proxy_only() {
    let b = backend("a").await;
    let mut cfg = config(&[b.addr]);
    cfg.listeners[0].trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    cfg.listeners[0].xfcc_from_trusted_proxies = TrustedXfcc::Forward;
    let gw = gateway(cfg.clone()).await;
    let forged = || {
        let mut req = get("/");
        req.headers_mut().insert(
            "x-forwarded-client-cert",
            http::HeaderValue::from_static("Hash=aa;Subject=\"CN=edge-client\""),
        );
        req
    };
    let (status, _, text) = send(gw.addr, forged()).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        xfcc_seen(&text),
        "Hash=aa;Subject=\"CN=edge-client\"",
        "{text}"
    );

    // The default, `replace`, with the same trusted proxy: removed (no certificate here).
    cfg.listeners[0].addr = gw.addr;
    cfg.listeners[0].xfcc_from_trusted_proxies = TrustedXfcc::Replace;
    gw.shared.apply(cfg).unwrap();
    let (_, _, text) = send(gw.addr, forged()).await;
    assert_eq!(xfcc_seen(&text), "", "{text}");
}

/// `%XX` escapes decoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn by_and_cert_details_name_the_gateway_and_carry_the_client_certificate() {
    let s = Setup::new("xfcc-details").await;
    // The gateway's own certificate, with a URI SAN for `By`.
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.subject_alt_names.push(SanType::URI(
        "spiffe://example.org/gateway".try_into().unwrap(),
    ));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let own = s.server_ca.sign(params);
    let mut cfg = s.config(ClientAuthConfig {
        // Any order in the config; Envoy's order in the header.
        forward_client_cert_details: vec![XfccDetail::Cert, XfccDetail::Subject, XfccDetail::By],
        ..s.auth()
    });
    let tls = cfg.listeners[0].tls.as_mut().unwrap();
    tls.cert = s.dir.write("own.pem", &own.cert);
    tls.key = s.dir.write("own.key", &own.key);
    let gw = gateway(cfg).await;
    let leaf = client_leaf(&s.client_ca, "billing");
    let (status, text) = get_tls(gw.addr, &s.client(Some(&leaf)), "/", &[]).await;
    assert_eq!(status, 200, "{text}");
    let seen = xfcc_seen(&text);
    let prefix = format!(
        "By=spiffe://example.org/gateway;Hash={};Cert=\"",
        sha256_hex(&leaf.der)
    );
    let rest = seen
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{seen}"));
    let (cert, rest) = rest.split_once('"').unwrap();
    // No URI or DNS: they were not asked for.
    assert_eq!(rest, ";Subject=\"CN=billing,O=Example\"", "{seen}");
    assert!(
        cert.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-._~%".contains(&c)),
        "only unreserved characters and escapes: {cert}"
    );
    let pem = percent_decode(cert);
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");
    assert_eq!(certs(&pem), std::slice::from_ref(&leaf.der));
}

fn client_auth_of(cfg: &mut Config) -> &mut ClientAuthConfig {
    cfg.listeners[0]
        .tls
        .as_mut()
        .unwrap()
        .client_auth
        .as_mut()
        .unwrap()
}

#[tokio::test]
async fn an_expired_client_crl_still_applies_unless_next_update_is_enforced() {
    let s = Setup::new("expired-crl").await;
    let good = client_leaf(&s.client_ca, "good");
    let revoked = client_leaf(&s.client_ca, "revoked");
    // nextUpdate long past.
    let crl = s.client_ca.crl_until(&[revoked.serial], (2024, 1, 2));
    let (gw, mut cfg) = s.crl_gateway(&crl).await;
    let good_client = s.client(Some(&good));

    // The default: the old list still revokes what it lists, and nothing else.
    assert_eq!(get_tls(gw.addr, &good_client, "/", &[]).await.0, 200);
    let err = refused(gw.addr, &s.client(Some(&revoked))).await;
    assert!(err.contains("CertificateRevoked"), "{err}");

    // Enforced: every certificate checked against the expired list is refused.
    client_auth_of(&mut cfg).crl_enforce_next_update = true;
    gw.shared.apply(cfg).unwrap();
    let err = refused(gw.addr, &good_client).await;
    assert!(err.contains("UnknownCA"), "{err}");
    assert_eq!(client_cert_failures(&gw).as_deref(), Some("2"));
}

#[tokio::test]
async fn crl_unknown_status_allow_accepts_a_certificate_no_list_covers() {
    let s = Setup::new("unknown-status").await;
    let leaf = client_leaf(&s.client_ca, "uncovered");
    // A list, but from another CA: nothing says whether `leaf` is revoked.
    let crl = Ca::new("other ca").crl(&[leaf.serial]);
    let (gw, mut cfg) = s.crl_gateway(&crl).await;
    let c = s.client(Some(&leaf));

    let err = refused(gw.addr, &c).await;
    assert!(err.contains("UnknownCA"), "refused by default: {err}");

    client_auth_of(&mut cfg).crl_unknown_status = UnknownRevocationStatus::Allow;
    gw.shared.apply(cfg).unwrap();
    let (status, text) = get_tls(gw.addr, &c, "/", &[]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(client_cert_failures(&gw).as_deref(), Some("1"));
}

#[tokio::test]
async fn crl_scope_leaf_checks_the_client_certificate_but_not_its_intermediate() {
    let s = Setup::new("leaf-scope").await;
    let intermediate = s.client_ca.intermediate("client intermediate");
    let good = intermediate.sign(client_params("good"));
    let revoked = intermediate.sign(client_params("revoked"));
    // The intermediate's list only; no list from the client CA (the root) says whether the
    // intermediate is revoked.
    let crl = intermediate.ca.crl(&[revoked.serial]);
    let (gw, mut cfg) = s.crl_gateway(&crl).await;
    let good_client = s.client(Some(&good));

    // `chain`: the intermediate's status is unknown.
    let err = refused(gw.addr, &good_client).await;
    assert!(err.contains("UnknownCA"), "{err}");

    // `leaf`: only the client's certificate is looked up.
    client_auth_of(&mut cfg).crl_scope = CrlScope::Leaf;
    gw.shared.apply(cfg).unwrap();
    let (status, text) = get_tls(gw.addr, &good_client, "/", &[]).await;
    assert_eq!(status, 200, "{text}");
    let err = refused(gw.addr, &s.client(Some(&revoked))).await;
    assert!(err.contains("CertificateRevoked"), "{err}");
}

/// `client_cert_subject` and `client_cert_hash` of one access-log event.
type CertFields = (Option<String>, Option<String>);

/// Captures the client certificate fields of access-log events.
#[derive(Clone, Default)]
struct AccessCapture(Arc<std::sync::Mutex<Vec<CertFields>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AccessCapture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != scalewise_gateway::logging::ACCESS_TARGET {
            return;
        }
        #[derive(Default)]
        struct V(Option<String>, Option<String>);
        impl tracing::field::Visit for V {
            fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
                match f.name() {
                    "client_cert_subject" => self.0 = Some(v.to_owned()),
                    "client_cert_hash" => self.1 = Some(v.to_owned()),
                    _ => {}
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut v = V::default();
        event.record(&mut v);
        self.0.lock().unwrap().push((v.0, v.1));
    }
}

#[tokio::test]
async fn the_access_log_names_the_verified_client_certificate() {
    use tracing_subscriber::layer::SubscriberExt;
    let capture = AccessCapture::default();
    // The test runtime is single-threaded: the gateway's tasks run on this thread and see
    // this subscriber.
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let s = Setup::new("access-log").await;
    let mut cfg = s.config(ClientAuthConfig {
        mode: ClientAuthMode::Optional,
        // Logged whether or not it is forwarded.
        forward_client_cert: false,
        ..s.auth()
    });
    cfg.log.access_log = true;
    let gw = gateway(cfg).await;
    let leaf = client_leaf(&s.client_ca, "auditor");

    let c = s.client(Some(&leaf));
    assert_eq!(get_tls(gw.addr, &c, "/", &[]).await.0, 200);
    let mut tx = s.h2(gw.addr, &leaf).await;
    let req = http::Request::get("https://localhost/h2")
        .body(body(""))
        .unwrap();
    assert_eq!(read(tx.send_request(req).await.unwrap()).await.0, 200);
    let anonymous = s.client(None);
    assert_eq!(get_tls(gw.addr, &anonymous, "/", &[]).await.0, 200);
    // HTTP/1 lines are written after the body: poll with yields, not a fixed sleep.
    for _ in 0..1000 {
        if capture.0.lock().unwrap().len() >= 3 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let mut seen = capture.0.lock().unwrap().clone();
    seen.sort();
    let with = (
        Some("CN=auditor,O=Example".to_owned()),
        Some(sha256_hex(&leaf.der)),
    );
    assert_eq!(seen, [(None, None), with.clone(), with]);
}

#[test]
fn xfcc_and_crl_settings_have_precise_errors() {
    use scalewise_gateway::config_file::{parse_config, Format};
    let text = r#"
[[listeners]]
addr = "127.0.0.1:8443"
xfcc_from_trusted_proxies = "append"
[listeners.tls]
cert = "gw.pem"
key = "gw.key"
[listeners.tls.client_auth]
ca_file = "clients.pem"
crl_scope = "leaf"
forward_client_cert_details = ["subject", "cert", "subject"]
[[routes]]
upstream = "api"
[upstreams.api]
backends = [{ addr = "10.0.0.5:80" }]
"#;
    let err = parse_config(text, Format::Toml, "gw.toml", [])
        .unwrap_err()
        .to_string();
    let lines: Vec<_> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "gw.toml:10:1: key `listeners[0].tls.client_auth.crl_scope`: got \"leaf\", expected \
             to be left out: it applies to crl_files, and there are none",
            "gw.toml:11:51: key `listeners[0].tls.client_auth.forward_client_cert_details[2]`: \
             got \"subject\", expected each of by, cert, chain, subject, uri, dns at most once",
            "gw.toml:4:1: key `listeners[0].xfcc_from_trusted_proxies`: got \"append\", expected \
             \"replace\" (the default), or trusted_proxies listing the proxies whose \
             X-Forwarded-Client-Cert is kept",
        ],
        "{err}"
    );

    // Values that are not one of the names.
    for (from, to, want) in [
        (
            "xfcc_from_trusted_proxies = \"append\"",
            "xfcc_from_trusted_proxies = \"keep\"",
            "gw.toml:4:1: key `listeners[0].xfcc_from_trusted_proxies`: unknown variant `keep`, \
             expected one of `replace`, `forward`, `append`",
        ),
        (
            "[\"subject\", \"cert\", \"subject\"]",
            "[\"subject\", \"certificate\"]",
            "gw.toml:11:43: key `listeners[0].tls.client_auth.forward_client_cert_details[1]`: \
             unknown variant `certificate`, expected one of `by`, `cert`, `chain`, `subject`, \
             `uri`, `dns`",
        ),
        (
            "crl_scope = \"leaf\"",
            "crl_scope = \"intermediate\"",
            "gw.toml:10:1: key `listeners[0].tls.client_auth.crl_scope`: unknown variant \
             `intermediate`, expected `chain` or `leaf`",
        ),
        (
            "crl_scope = \"leaf\"",
            "crl_unknown_status = \"ignore\"",
            "gw.toml:10:1: key `listeners[0].tls.client_auth.crl_unknown_status`: unknown \
             variant `ignore`, expected `refuse` or `allow`",
        ),
        (
            "crl_scope = \"leaf\"",
            "crl_enforce_next_update = \"yes\"",
            "gw.toml:10:1: key `listeners[0].tls.client_auth.crl_enforce_next_update`: invalid \
             type: string \"yes\", expected a boolean",
        ),
    ] {
        let err = parse_config(&text.replace(from, to), Format::Toml, "gw.toml", [])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(want), "{err}\nwant: {want}");
    }

    // Details with forward_client_cert = false: nothing would be sent.
    let err = parse_config(
        &text
            .replace("xfcc_from_trusted_proxies = \"append\"\n", "")
            .replace("crl_scope = \"leaf\"", "forward_client_cert = false")
            .replace("\"cert\", \"subject\"", "\"by\""),
        Format::Toml,
        "gw.toml",
        [],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(
            "gw.toml:10:1: key `listeners[0].tls.client_auth.forward_client_cert_details`: got \
             [\"subject\", \"by\"], expected to be left out with forward_client_cert = false"
        ),
        "{err}"
    );

    // A valid document with all of them.
    let ok = parse_config(
        &text
            .replace(
                "xfcc_from_trusted_proxies = \"append\"",
                "trusted_proxies = [\"10.0.0.0/8\"]\nxfcc_from_trusted_proxies = \"append\"",
            )
            .replace(
                "crl_scope = \"leaf\"",
                "crl_files = [\"c.crl\"]\ncrl_scope = \"leaf\"\ncrl_unknown_status = \"allow\"\n\
                 crl_enforce_next_update = true",
            )
            .replace("\"cert\", \"subject\"", "\"cert\", \"by\""),
        Format::Toml,
        "gw.toml",
        [],
    )
    .unwrap();
    assert_eq!(
        ok.listeners[0].xfcc_from_trusted_proxies,
        TrustedXfcc::Append
    );
    let auth = ok.listeners[0]
        .tls
        .as_ref()
        .unwrap()
        .client_auth
        .as_ref()
        .unwrap();
    assert_eq!(
        auth.forward_client_cert_details,
        [XfccDetail::Subject, XfccDetail::Cert, XfccDetail::By]
    );
    assert_eq!(
        (
            auth.crl_scope,
            auth.crl_unknown_status,
            auth.crl_enforce_next_update
        ),
        (CrlScope::Leaf, UnknownRevocationStatus::Allow, true)
    );
}
