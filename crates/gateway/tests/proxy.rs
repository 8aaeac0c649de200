//! Data-path integration tests: real sockets on loopback, real backends.
mod common;

use common::*;
use http::{Request, Version};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::sync::atomic::Ordering;
use tokio::net::TcpStream;

#[tokio::test]
async fn round_trip_rewrites_headers() {
    let b = backend("a").await;
    let gw = gateway(config(&[b.addr])).await;
    let req = Request::get("/hello?x=1")
        .header("host", "example.test:8080")
        .header("x-forwarded-for", "10.1.2.3")
        .header("x-request-id", "req-42")
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "hop")
        .header("x-custom", "kept")
        .body(body(""))
        .unwrap();
    let (status, headers, text) = send(gw.addr, req).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("path=/hello?x=1\n"), "{text}");
    assert!(text.contains("host=example.test:8080\n"), "{text}");
    assert!(text.contains("xff=10.1.2.3, 127.0.0.1\n"), "{text}");
    assert!(text.contains("xfp=http\n"), "{text}");
    assert!(
        text.contains("forwarded=for=127.0.0.1;proto=http\n"),
        "{text}"
    );
    assert!(text.contains("request-id=req-42\n"), "{text}");
    assert!(text.contains("x-secret=-\n"), "{text}");
    assert!(text.contains("x-custom=kept\n"), "{text}");
    assert!(text.contains("version=HTTP/1.1\n"), "{text}");
    assert_eq!(headers["x-backend"], "a");
    assert_eq!(headers["x-request-id"], "req-42");
    assert!(!headers.contains_key("keep-alive"));

    // Without a client id the gateway makes one and tells both sides.
    let (_, headers, text) = send(gw.addr, get("/")).await;
    let id = headers["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 32);
    assert!(text.contains(&format!("request-id={id}\n")));
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let b = backend("a").await;
    let gw = gateway(config(&[b.addr])).await;
    // 8 MiB down, generated on the fly by the backend.
    let n = 8 * 1024 * 1024;
    let (status, _, text) = send(gw.addr, get(&format!("/big/{n}"))).await;
    assert_eq!(status, 200);
    assert_eq!(text.len(), n);

    // 4 MiB up and echoed back as a stream of chunks.
    let chunks = (0..64).map(|i| {
        Ok(hyper::body::Frame::data(bytes::Bytes::from(vec![
            i as u8;
            65536
        ])))
    });
    let up = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
    let req = Request::post("/echo")
        .header("host", "x")
        .body(BodyExt::boxed(up))
        .unwrap();
    let mut tx = h1(gw.addr).await;
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.len(), 64 * 65536);
    assert!(got
        .chunks(65536)
        .enumerate()
        .all(|(i, c)| c.iter().all(|&x| x == i as u8)));
}

#[tokio::test]
async fn keep_alive_reuses_client_and_backend_connections() {
    let b = backend("a").await;
    let gw = gateway(config(&[b.addr])).await;
    let mut tx = h1(gw.addr).await;
    for _ in 0..20 {
        let resp = tx.send_request(get("/")).await.unwrap();
        let (status, _, _) = read(resp).await;
        assert_eq!(status, 200);
    }
    assert_eq!(b.hits.load(Ordering::SeqCst), 20);
    assert_eq!(
        b.conns.load(Ordering::SeqCst),
        1,
        "upstream connection pooled"
    );
    let metrics = gw.shared.metrics.encode();
    assert!(
        metrics.contains("gateway_client_connections{listener=\"default\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("gateway_requests_total{route=\"0\",upstream=\"default\",status=\"2xx\"} 20"),
        "{metrics}"
    );
}

#[tokio::test]
async fn h2c_prior_knowledge_client() {
    let b = backend("a").await;
    let gw = gateway(config(&[b.addr])).await;
    let mut tx = h2_client(TcpStream::connect(gw.addr).await.unwrap()).await;
    for _ in 0..3 {
        let req = Request::get("http://h2.example.test/x")
            .body(body(""))
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.version(), Version::HTTP_2);
        let (status, _, text) = read(resp).await;
        assert_eq!(status, 200);
        // The backend gets HTTP/1.1 with the authority as Host.
        assert!(text.contains("host=h2.example.test\n"), "{text}");
        assert!(text.contains("version=HTTP/1.1\n"), "{text}");
    }
}

#[tokio::test]
async fn h2_upstream() {
    let b = backend("a").await;
    let mut cfg = config(&[b.addr]);
    cfg.upstreams.get_mut("default").unwrap().protocol =
        scalewise_gateway::config::UpstreamProtocol::Http2;
    let gw = gateway(cfg).await;
    let (status, _, text) = send(gw.addr, get("/via-h2")).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("version=HTTP/2.0\n"), "{text}");
    assert!(text.contains("path=/via-h2\n"), "{text}");
    let (status, _, _) = send(gw.addr, get("/again")).await;
    assert_eq!(status, 200);
    assert_eq!(
        b.conns.load(Ordering::SeqCst),
        1,
        "one multiplexed connection"
    );
}

/// A certificate for `localhost` written to a fresh directory: (cert path, key path, dir, DER).
struct TestCert {
    dir: std::path::PathBuf,
    config: scalewise_gateway::config::TlsConfig,
    der: rustls::pki_types::CertificateDer<'static>,
}

impl TestCert {
    fn new(tag: &str) -> Self {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = std::env::temp_dir().join(format!("scalewise-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
        Self {
            dir,
            config: scalewise_gateway::config::TlsConfig::new(cert, key),
            der: ck.cert.der().clone(),
        }
    }

    /// A TLS connection to `addr` offering h2 and http/1.1; asserts h2 was chosen.
    async fn connect_h2(
        &self,
        addr: std::net::SocketAddr,
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = connector
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        tls
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn tls_with_alpn_h2() {
    let b = backend("a").await;
    let cert = TestCert::new("alpn");
    let mut cfg = config(&[b.addr]);
    cfg.listeners[0].tls = Some(cert.config.clone());
    let gw = gateway(cfg).await;

    let mut tx = h2_client(cert.connect_h2(gw.addr).await).await;
    let resp = tx
        .send_request(
            Request::get("https://localhost/secure")
                .body(body(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    let (status, _, text) = read(resp).await;
    assert_eq!(status, 200);
    assert!(text.contains("xfp=https\n"), "{text}");
}

#[tokio::test]
async fn websocket_echo_through_gateway() {
    let (ws_addr, _task) = ws_backend().await;
    let gw = gateway(config(&[ws_addr])).await;
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async("ws://localhost/ws", tcp)
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    assert_echoes(ws).await;
}

/// An RFC 8441 extended CONNECT for a WebSocket at `uri`.
fn websocket_connect(uri: &str) -> Request<Body> {
    let mut req = Request::connect(uri)
        .header("sec-websocket-version", "13")
        .body(body(""))
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    req
}

/// Sends text messages and a large binary one over `ws` and checks each comes back, then closes.
async fn assert_echoes<S>(mut ws: tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    for i in 0..10 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let got = ws.next().await.unwrap().unwrap();
        assert_eq!(got.into_text().unwrap().as_str(), format!("hello {i}"));
    }
    let big = vec![7u8; 256 * 1024];
    ws.send(Message::binary(big.clone())).await.unwrap();
    let echoed: Vec<u8> = ws.next().await.unwrap().unwrap().into_data().to_vec();
    assert_eq!(echoed, big);
    ws.close(None).await.unwrap();
}

/// Opens a WebSocket over HTTP/2 at `uri` and checks that text and a large binary message
/// come back from the echo backend.
async fn h2_websocket_echo(tx: &mut hyper::client::conn::http2::SendRequest<Body>, uri: &str) {
    use tokio_tungstenite::tungstenite::protocol::Role;
    let resp = tx.send_request(websocket_connect(uri)).await.unwrap();
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert!(resp.headers().get("sec-websocket-accept").is_none());
    let stream = hyper::upgrade::on(resp).await.unwrap();
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(stream),
        Role::Client,
        None,
    )
    .await;
    assert_echoes(ws).await;
}

#[tokio::test]
async fn websocket_over_h2c_extended_connect() {
    let (ws_addr, _task) = ws_backend().await;
    let gw = gateway(config(&[ws_addr])).await;
    let mut tx = h2_client(TcpStream::connect(gw.addr).await.unwrap()).await;
    // Two WebSockets at once on one connection, each on its own stream.
    let mut tx2 = tx.clone();
    tokio::join!(
        h2_websocket_echo(&mut tx, "http://ws.example.test/ws"),
        h2_websocket_echo(&mut tx2, "http://ws.example.test/other"),
    );
}

#[tokio::test]
async fn websocket_over_h2_with_tls_alpn() {
    let (ws_addr, _task) = ws_backend().await;
    let cert = TestCert::new("ws");
    let mut cfg = config(&[ws_addr]);
    cfg.listeners[0].tls = Some(cert.config.clone());
    let gw = gateway(cfg).await;
    let mut tx = h2_client(cert.connect_h2(gw.addr).await).await;
    h2_websocket_echo(&mut tx, "https://localhost/ws").await;
}

#[tokio::test]
async fn websocket_over_h2_follows_routes_and_refuses_a_backend_that_does_not_switch() {
    // `/ws` goes to the echo backend, `/plain` to one that answers 200 without switching,
    // anything else has no route.
    let (ws_addr, _task) = ws_backend().await;
    let plain = backend("plain").await;
    let text = format!(
        "[[listeners]]\naddr = \"127.0.0.1:0\"\n\
         [[routes]]\npath_prefix = \"/ws\"\nupstream = \"ws\"\n\
         [[routes]]\npath_prefix = \"/plain\"\nupstream = \"plain\"\n\
         [upstreams.ws]\nbackends = [{{ addr = \"{ws_addr}\" }}]\n\
         [upstreams.plain]\nbackends = [{{ addr = \"{}\" }}]\n",
        plain.addr
    );
    let cfg = scalewise_gateway::config_file::parse_config(
        &text,
        scalewise_gateway::config_file::Format::Toml,
        "test.toml",
        [],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let gw = gateway(cfg).await;
    let mut tx = h2_client(TcpStream::connect(gw.addr).await.unwrap()).await;
    h2_websocket_echo(&mut tx, "http://ws.example.test/ws").await;

    let resp = tx
        .send_request(websocket_connect("http://ws.example.test/plain"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    // The backend saw the HTTP/1.1 opening handshake.
    assert_eq!(plain.hits.load(Ordering::SeqCst), 1);

    let resp = tx
        .send_request(websocket_connect("http://ws.example.test/nowhere"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let metrics = gw.shared.metrics.encode();
    assert!(
        metrics.contains("gateway_local_replies_total{listener=\"default\",kind=\"no_route\"} 1"),
        "{metrics}"
    );
}

/// A WebSocket tunnel over HTTP/2 ends with its client connection: when the listener
/// closes its connections (a drain deadline), the backend connection of the tunnel closes
/// too, instead of being held by a relay nobody can reach.
#[tokio::test]
async fn websocket_over_h2_tunnels_close_with_their_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A backend that switches without checking the handshake (the client here sends raw
    // bytes, not WebSocket frames), reports what it reads and when its connection closes.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            head.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        assert!(head.starts_with("get /ws http/1.1\r\n"), "{head}");
        assert!(head.contains("upgrade: websocket\r\n"), "{head}");
        assert!(head.contains("sec-websocket-key: "), "{head}");
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            .await
            .unwrap();
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = tx.send(Vec::new());
                    return;
                }
                Ok(n) => {
                    let _ = tx.send(buf[..n].to_vec());
                }
            }
        }
    });
    let mut gw = gateway(config(&[addr])).await;
    let mut tx = h2_client(TcpStream::connect(gw.addr).await.unwrap()).await;
    let resp = tx
        .send_request(websocket_connect("http://ws.example.test/ws"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    stream.write_all(b"hello").await.unwrap();
    assert_eq!(events.recv().await.unwrap(), b"hello");

    // Stop accepting (HTTP/2 sends GOAWAY; the open tunnel goes on), then close what is left.
    gw.cancel.cancel();
    let listening = gw.listening.take().unwrap();
    listening.close_connections();
    listening.join.await.unwrap();
    // A safety net: a relay that outlived its connection would hang the test otherwise.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(20), events.recv())
        .await
        .expect("the backend connection must close");
    assert_eq!(closed.unwrap(), b"");
}

#[tokio::test]
async fn requests_spread_over_backends() {
    let a = backend("a").await;
    let b = backend("b").await;
    let c = backend("c").await;
    let gw = gateway(config(&[a.addr, b.addr, c.addr])).await;
    let mut tx = h1(gw.addr).await;
    for _ in 0..30 {
        let (status, _, _) = read(tx.send_request(get("/")).await.unwrap()).await;
        assert_eq!(status, 200);
    }
    for be in [&a, &b, &c] {
        assert_eq!(
            be.hits.load(Ordering::SeqCst),
            10,
            "round robin: {}",
            be.name
        );
    }
}

#[tokio::test]
async fn weighted_and_sticky_upstreams() {
    use scalewise_gateway::config::{AlgorithmName, BackendConfig};
    let a = backend("a").await;
    let b = backend("b").await;
    let mut cfg = config(&[]);
    let up = cfg.upstreams.get_mut("default").unwrap();
    up.algorithm = AlgorithmName::WeightedRoundRobin;
    up.backends = vec![
        BackendConfig {
            addr: a.addr.into(),
            weight: 3,
        },
        BackendConfig {
            addr: b.addr.into(),
            weight: 1,
        },
    ];
    up.sticky_cookie = Some("sw".into());
    let gw = gateway(cfg).await;

    // First request: no cookie, the gateway pins the client.
    let (status, headers, _) = send(gw.addr, get("/")).await;
    assert_eq!(status, 200);
    let set = headers["set-cookie"].to_str().unwrap().to_owned();
    let pin = set.split(';').next().unwrap().to_owned();
    let pinned_to = headers["x-backend"].clone();
    for _ in 0..10 {
        let req = Request::get("/")
            .header("host", "x")
            .header("cookie", pin.clone())
            .body(body(""))
            .unwrap();
        let (status, headers, _) = send(gw.addr, req).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-backend"], pinned_to);
        assert!(!headers.contains_key("set-cookie"));
    }

    // Without cookies, 3:1.
    let (a0, b0) = (a.hits.load(Ordering::SeqCst), b.hits.load(Ordering::SeqCst));
    let mut tx = h1(gw.addr).await;
    for _ in 0..40 {
        let (status, _, _) = read(tx.send_request(get("/")).await.unwrap()).await;
        assert_eq!(status, 200);
    }
    assert_eq!(a.hits.load(Ordering::SeqCst) - a0, 30);
    assert_eq!(b.hits.load(Ordering::SeqCst) - b0, 10);
}
