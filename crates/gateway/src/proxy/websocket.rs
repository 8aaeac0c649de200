//! WebSocket over HTTP/2 (RFC 8441): an HTTP/2 client opens a WebSocket with an extended
//! CONNECT (`:method CONNECT`, `:protocol websocket`) on one stream; the backend gets the
//! HTTP/1.1 opening handshake of RFC 6455 (`GET` with `Upgrade: websocket`), and once it
//! answers `101` the stream and the backend connection are relayed both ways.
//!
//! The translated request goes through the same pipeline as every other request
//! ([`super::forward`]): routes, admission (rate limits, concurrency limits), the balancer,
//! the breaker, the access log. As for an HTTP/1.1 upgrade, the route's concurrency slot, the
//! balancer's in-flight count and the client connection's activity are held until the
//! tunnel closes.
//!
//! The answers to the client follow RFC 8441 §5: `200` once the backend switched protocols;
//! a backend that answers the handshake with another 2xx did not switch, which the client
//! would take for success, so that becomes `502`; every other answer (no route, 429, the
//! backend's 403, ...) is passed on as it is.
use super::body::{ResponseBody, Upgraded};
use super::{local, ConnInfo};
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt as _;

/// Whether `req` is an RFC 8441 extended CONNECT for the WebSocket protocol.
pub(crate) fn is_extended_connect(req: &Request<Incoming>) -> bool {
    req.method() == Method::CONNECT
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64 (RFC 6455 §4.1). The HTTP/2
/// client sends none (RFC 8441 §5), but an HTTP/1.1 server requires one.
fn websocket_key() -> HeaderValue {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    // Base64 is always a valid header value.
    HeaderValue::from_str(&key).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Answers an extended CONNECT from an HTTP/2 client: forwards it as an HTTP/1.1 WebSocket
/// handshake and, on `101`, relays the stream to the backend connection on a task of its
/// own (hyper hands the stream over only after the `200` has been sent).
pub(crate) async fn forward(mut req: Request<Incoming>, ci: &ConnInfo) -> Response<ResponseBody> {
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, _empty) = req.into_parts();
    // From here on it is the HTTP/1.1 request the backend gets (RFC 8441 §5: `:method
    // CONNECT` + `:protocol` stand for `GET` + `Upgrade`; the key is this hop's).
    parts.method = Method::GET;
    parts.version = Version::HTTP_11;
    parts.extensions.remove::<hyper::ext::Protocol>();
    let h = &mut parts.headers;
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::SEC_WEBSOCKET_KEY, websocket_key());
    if !h.contains_key(header::SEC_WEBSOCKET_VERSION) {
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
    let resp = super::forward(parts, super::body::HyperBody(None), false, ci, None).await;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        if resp.status().is_success() {
            tracing::debug!(status = %resp.status(), "backend did not switch to WebSocket");
            ci.shared.metrics.local_reply(&ci.listener, "bad_gateway");
            return local(StatusCode::BAD_GATEWAY, None);
        }
        return resp;
    }
    let (mut head, mut body) = resp.into_parts();
    let Some(up) = body.take_upgraded() else {
        return local(StatusCode::BAD_GATEWAY, None);
    };
    head.status = StatusCode::OK;
    head.version = Version::HTTP_2;
    // HTTP/2 has no connection-level headers, and the accept value answers a key the client
    // never sent.
    for name in [
        header::CONNECTION,
        header::UPGRADE,
        header::SEC_WEBSOCKET_ACCEPT,
        header::CONTENT_LENGTH,
    ] {
        head.headers.remove(name);
    }
    tokio::spawn(relay(on_upgrade, up));
    Response::from_parts(head, ResponseBody::full(bytes::Bytes::new(), None))
}

/// Relays the client's stream and the backend connection until either side closes; the
/// backend's bytes that arrived with its `101` go to the client first.
async fn relay(on_upgrade: hyper::upgrade::OnUpgrade, up: Upgraded) {
    let Ok(client) = on_upgrade.await else {
        return;
    };
    let mut client = TokioIo::new(client);
    let Upgraded {
        io: mut backend,
        leftover,
        guard,
        active,
    } = up;
    if !leftover.is_empty() && client.write_all(&leftover).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
    drop(guard);
    drop(active);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_24_characters_of_base64() {
        let k = websocket_key();
        let k = k.to_str().unwrap();
        assert_eq!(k.len(), 24, "{k}");
        assert!(k.ends_with("=="), "{k}");
        assert!(k[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'));
        assert_ne!(websocket_key(), websocket_key());
    }
}
