//! Header rewriting between client and backend: hop-by-hop removal (RFC 9110 §7.6.1,
//! including every header the `Connection` header names), `X-Forwarded-*`, `Forwarded`
//! (RFC 7239), `X-Forwarded-Client-Cert` and request ids.
use crate::client_cert::X_FORWARDED_CLIENT_CERT;
use crate::config::TrustedXfcc;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::fmt::Write as _;
use std::net::IpAddr;

/// The request id header, kept when the client sent a sane one, generated otherwise.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that belong to one connection and must not be forwarded.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
}

/// Copies `src` into a new map without hop-by-hop headers. With `keep_upgrade`
/// (a WebSocket handshake), `Connection: upgrade` and `Upgrade` pass through.
pub(crate) fn copy_end_to_end(src: &HeaderMap, keep_upgrade: bool) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(src.len() + 4);
    let listed = connection_listed(src);
    for (name, value) in src {
        if is_hop_by_hop(name) || listed.iter().any(|l| l == name.as_str()) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if keep_upgrade {
        if let Some(up) = src.get(header::UPGRADE) {
            out.insert(header::UPGRADE, up.clone());
            out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
    }
    out
}

/// Removes hop-by-hop headers in place (responses).
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // The names removed, in this order (`Proxy-Authorization` is a request header).
    let hop = [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHENTICATE,
    ];
    const CONNECTION_BIT: u8 = 1;
    const UPGRADE_BIT: u8 = 1 << 6;
    // Most responses carry none but `Connection`/`Keep-Alive`: one pass over the names
    // notes which are there, and only those are removed (each removal is a hash lookup;
    // removing an absent name changes nothing).
    let mut present = 0u8;
    for n in h.keys() {
        for (i, hn) in hop.iter().enumerate() {
            if n == *hn {
                present |= 1 << i;
            }
        }
    }
    if present == 0 {
        return;
    }
    let listed = if present & CONNECTION_BIT != 0 {
        connection_listed(h)
    } else {
        Vec::new()
    };
    let upgrade = (keep_upgrade && present & UPGRADE_BIT != 0)
        .then(|| h.get(header::UPGRADE).cloned())
        .flatten();
    for l in &listed {
        h.remove(l.as_str());
    }
    for (i, n) in hop.iter().enumerate() {
        if present & (1 << i) != 0 {
            h.remove(*n);
        }
    }
    if let Some(up) = upgrade {
        h.insert(header::UPGRADE, up);
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Lower-cased names listed in `Connection` (besides the hop-by-hop ones everybody knows).
pub(crate) fn connection_listed(h: &HeaderMap) -> Vec<String> {
    let mut out = Vec::new();
    for v in h.get_all(header::CONNECTION) {
        let Ok(v) = v.to_str() else { continue };
        for t in v.split(',') {
            let t = t.trim();
            if !t.is_empty()
                && !t.eq_ignore_ascii_case("close")
                && !t.eq_ignore_ascii_case("keep-alive")
                && !t.eq_ignore_ascii_case("upgrade")
            {
                out.push(t.to_ascii_lowercase());
            }
        }
    }
    out
}

/// The headers [`Forwarding`] rewrites. A client's own `X-Forwarded-Client-Cert` is among
/// them on every listener: only the gateway may tell a backend who the client is.
pub(crate) fn is_forwarding(name: &HeaderName) -> bool {
    name == X_FORWARDED_FOR
        || name == X_FORWARDED_PROTO
        || name == header::FORWARDED
        || name == X_FORWARDED_CLIENT_CERT
}

/// Whether the request asks for a protocol upgrade (WebSocket over HTTP/1.1).
pub(crate) fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Appends the client to `X-Forwarded-For` and `Forwarded`, sets `X-Forwarded-Proto`.
#[cfg(test)]
pub(crate) fn add_forwarded(h: &mut HeaderMap, client: IpAddr, https: bool) {
    add_forwarded_with(h, &Forwarding::new(client, https));
}

/// The `X-Forwarded-For` and `Forwarded` values naming only this connection's client,
/// built once per client connection: most requests carry neither header, and then these
/// are inserted as they are instead of being formatted again for every request.
#[derive(Debug, Clone)]
pub(crate) struct Forwarding {
    client: IpAddr,
    https: bool,
    xff: Option<HeaderValue>,
    forwarded: Option<HeaderValue>,
    /// What becomes of `X-Forwarded-Client-Cert` on this connection.
    client_cert: ClientCertRule,
}

/// What becomes of `X-Forwarded-Client-Cert` on one connection: decided once, from the
/// listener's settings, whether the peer is a trusted proxy, and the client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ClientCertRule {
    /// The request's header is removed; this value (the gateway's element) is set, if any.
    Replace(Option<HeaderValue>),
    /// The request's header passes unchanged (a trusted proxy's, `forward`).
    Forward,
    /// The request's header passes with this element appended (a trusted proxy's, `append`).
    Append(HeaderValue),
}

impl Forwarding {
    pub(crate) fn new(client: IpAddr, https: bool) -> Self {
        let mut f = Self {
            client,
            https,
            xff: None,
            forwarded: None,
            client_cert: ClientCertRule::Replace(None),
        };
        f.xff = HeaderValue::from_str(&f.xff_value(String::new())).ok();
        f.forwarded = HeaderValue::from_str(&f.forwarded_value(String::new())).ok();
        f
    }

    /// Sets the gateway's `X-Forwarded-Client-Cert` element (see
    /// [`crate::client_cert::XfccFormat`]), if it has one, and what happens to the header a
    /// request brings: `trusted` is the listener's `xfcc_from_trusted_proxies` when the peer
    /// is one of its trusted proxies, `None` for any other peer (whose header is replaced).
    pub(crate) fn with_client_cert(
        mut self,
        xfcc: Option<HeaderValue>,
        trusted: Option<TrustedXfcc>,
    ) -> Self {
        self.client_cert = match (trusted, xfcc) {
            (None | Some(TrustedXfcc::Replace), ours) => ClientCertRule::Replace(ours),
            (Some(TrustedXfcc::Forward), _) | (Some(TrustedXfcc::Append), None) => {
                ClientCertRule::Forward
            }
            (Some(TrustedXfcc::Append), Some(ours)) => ClientCertRule::Append(ours),
        };
        self
    }

    /// The `X-Forwarded-Client-Cert` value to send for a request with headers `h`, if any:
    /// the gateway's element, the request's own header lines (joined by commas, empty ones
    /// left out), or both, as [`Forwarding::with_client_cert`] decided.
    pub(crate) fn client_cert(&self, h: &HeaderMap) -> Option<HeaderValue> {
        let ours = match &self.client_cert {
            ClientCertRule::Replace(v) => return v.clone(),
            ClientCertRule::Forward => None,
            ClientCertRule::Append(v) => Some(v),
        };
        let mut lines = h
            .get_all(&X_FORWARDED_CLIENT_CERT)
            .iter()
            .filter(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace));
        let first = lines.next();
        match (first, lines.next(), ours) {
            (None, _, ours) => ours.cloned(),
            (Some(v), None, None) => Some(v.clone()),
            (Some(first), second, ours) => {
                let mut joined = first.as_bytes().to_vec();
                for v in second.into_iter().chain(lines).chain(ours) {
                    joined.push(b',');
                    joined.extend_from_slice(v.as_bytes());
                }
                // Header values joined by a comma are a header value.
                HeaderValue::from_bytes(&joined).ok()
            }
        }
    }

    fn proto(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    fn xff_value(&self, mut prior: String) -> String {
        if !prior.is_empty() {
            prior.push_str(", ");
        }
        let _ = write!(prior, "{}", self.client);
        prior
    }

    fn forwarded_value(&self, mut prior: String) -> String {
        let proto = self.proto();
        let _ = match self.client {
            IpAddr::V4(ip) => write!(prior, "for={ip};proto={proto}"),
            IpAddr::V6(ip) => write!(prior, "for=\"[{ip}]\";proto={proto}"),
        };
        prior
    }
}

impl Forwarding {
    /// The `X-Forwarded-For`, `X-Forwarded-Proto` and `Forwarded` values for a request
    /// with headers `h`: the client appended to what earlier proxies said.
    pub(crate) fn values(&self, h: &HeaderMap) -> (HeaderValue, &'static str, HeaderValue) {
        // One lookup per header: `get_all` tells whether it is there, too.
        let prior = h.get_all(&X_FORWARDED_FOR);
        let xff = if prior.iter().next().is_some() {
            let mut xff = String::with_capacity(48);
            for v in prior {
                if let Ok(v) = v.to_str() {
                    if !xff.is_empty() {
                        xff.push_str(", ");
                    }
                    xff.push_str(v);
                }
            }
            HeaderValue::from_str(&self.xff_value(xff)).ok()
        } else {
            self.xff.clone()
        };
        let prior = h.get_all(header::FORWARDED);
        let fwd = if prior.iter().next().is_some() {
            let mut fwd = String::with_capacity(48);
            for v in prior {
                if let Ok(v) = v.to_str() {
                    fwd.push_str(v);
                    fwd.push_str(", ");
                }
            }
            HeaderValue::from_str(&self.forwarded_value(fwd)).ok()
        } else {
            self.forwarded.clone()
        };
        let empty = || HeaderValue::from_static("");
        (
            xff.unwrap_or_else(empty),
            self.proto(),
            fwd.unwrap_or_else(empty),
        )
    }
}

/// [`add_forwarded`] with the per-connection values prepared in `f`, and
/// `X-Forwarded-Client-Cert` as [`Forwarding::client_cert`] says.
pub(crate) fn add_forwarded_with(h: &mut HeaderMap, f: &Forwarding) {
    let (xff, proto, fwd) = f.values(h);
    h.insert(&X_FORWARDED_FOR, xff);
    h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    h.insert(header::FORWARDED, fwd);
    match f.client_cert(h) {
        Some(v) => {
            h.insert(&X_FORWARDED_CLIENT_CERT, v);
        }
        None => {
            h.remove(&X_FORWARDED_CLIENT_CERT);
        }
    }
}

/// The client's request id if it is short and printable, else a fresh random one.
pub(crate) fn request_id(h: &HeaderMap) -> HeaderValue {
    if let Some(v) = h.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    // Hex digits straight into a stack buffer: no `format!` string per request.
    let id: u128 = rand::random();
    let mut hex = [0u8; 32];
    for (i, d) in hex.iter_mut().enumerate() {
        *d = b"0123456789abcdef"[((id >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&hex).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_dropped() {
        let src = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("x-kept", "yes"),
            ("host", "example.com"),
        ]);
        let out = copy_end_to_end(&src, false);
        let names: Vec<_> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept", "host"]);
        let mut resp = src.clone();
        strip_hop_by_hop(&mut resp, false);
        assert_eq!(resp.len(), 2);
    }

    #[test]
    fn upgrade_survives_only_when_asked() {
        let src = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(wants_upgrade(&src));
        let out = copy_end_to_end(&src, true);
        assert_eq!(out["upgrade"], "websocket");
        assert_eq!(out["connection"], "upgrade");
        assert!(copy_end_to_end(&src, false).is_empty());
    }

    #[test]
    fn responses_lose_exactly_the_hop_by_hop_headers_present() {
        let mut resp = map(&[
            ("content-type", "text/plain"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("proxy-authenticate", "Basic"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        let mut tunnel = resp.clone();
        strip_hop_by_hop(&mut resp, false);
        let names: Vec<_> = resp.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type", "x-kept"]);
        // A 101 to an upgrade request keeps the upgrade, with `Connection: upgrade`.
        strip_hop_by_hop(&mut tunnel, true);
        assert_eq!(tunnel["upgrade"], "websocket");
        assert_eq!(tunnel["connection"], "upgrade");
        assert!(!tunnel.contains_key("x-secret") && !tunnel.contains_key("proxy-authenticate"));
        // Nothing hop-by-hop (`Proxy-Authorization` is a request header): untouched.
        let mut plain = map(&[("x-a", "1"), ("proxy-authorization", "x"), ("x-b", "2")]);
        let before = plain.clone();
        strip_hop_by_hop(&mut plain, false);
        assert_eq!(plain, before);
    }

    #[test]
    fn forwarded_headers_append() {
        let src = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("forwarded", "for=10.0.0.1"),
        ]);
        let mut out = copy_end_to_end(&src, false);
        add_forwarded(&mut out, "::1".parse().unwrap(), true);
        assert_eq!(out["x-forwarded-for"], "10.0.0.1, ::1");
        assert_eq!(out["x-forwarded-proto"], "https");
        assert_eq!(out["forwarded"], "for=10.0.0.1, for=\"[::1]\";proto=https");
    }

    #[test]
    fn forwarded_headers_without_prior_ones_use_the_connection_values() {
        let f = Forwarding::new("10.1.2.3".parse().unwrap(), false);
        // Twice through the same per-connection values: nothing accumulates between requests.
        for _ in 0..2 {
            let mut out = copy_end_to_end(&map(&[("host", "a")]), false);
            add_forwarded_with(&mut out, &f);
            assert_eq!(out["x-forwarded-for"], "10.1.2.3");
            assert_eq!(out["x-forwarded-proto"], "http");
            assert_eq!(out["forwarded"], "for=10.1.2.3;proto=http");
        }
        let mut out = copy_end_to_end(&map(&[("x-forwarded-for", "1.1.1.1")]), false);
        add_forwarded_with(&mut out, &f);
        assert_eq!(out["x-forwarded-for"], "1.1.1.1, 10.1.2.3");
        assert_eq!(out["forwarded"], "for=10.1.2.3;proto=http");
    }

    #[test]
    fn a_client_xfcc_is_replaced_or_removed() {
        let src = map(&[("x-forwarded-client-cert", "Hash=forged"), ("host", "a")]);
        let plain = Forwarding::new("10.1.2.3".parse().unwrap(), true);
        let mut out = copy_end_to_end(&src, false);
        add_forwarded_with(&mut out, &plain);
        assert!(!out.contains_key("x-forwarded-client-cert"));
        let verified = plain.with_client_cert(Some(HeaderValue::from_static("Hash=ab")), None);
        let mut out = copy_end_to_end(&src, false);
        add_forwarded_with(&mut out, &verified);
        assert_eq!(
            out.get_all("x-forwarded-client-cert")
                .iter()
                .collect::<Vec<_>>(),
            ["Hash=ab"]
        );
    }

    #[test]
    fn a_trusted_proxy_xfcc_is_forwarded_or_appended_to() {
        let ours = || Some(HeaderValue::from_static("Hash=ours"));
        let f = |trusted| {
            Forwarding::new("10.0.0.1".parse().unwrap(), true).with_client_cert(ours(), trusted)
        };
        let two_lines = map(&[
            ("x-forwarded-client-cert", "Hash=a"),
            ("x-forwarded-client-cert", " "),
            ("x-forwarded-client-cert", "Hash=b;URI=x"),
        ]);
        let one = map(&[("x-forwarded-client-cert", "Hash=a")]);
        let none = HeaderMap::new();
        // Not trusted, or trusted with `replace`: ours only.
        for rule in [None, Some(TrustedXfcc::Replace)] {
            assert_eq!(f(rule).client_cert(&two_lines).unwrap(), "Hash=ours");
        }
        // `forward`: theirs, lines joined, blank ones dropped; nothing when they sent none.
        let fwd = f(Some(TrustedXfcc::Forward));
        assert_eq!(fwd.client_cert(&two_lines).unwrap(), "Hash=a,Hash=b;URI=x");
        assert_eq!(fwd.client_cert(&one).unwrap(), "Hash=a");
        assert_eq!(fwd.client_cert(&none), None);
        // `append`: theirs then ours; ours alone when they sent none.
        let app = f(Some(TrustedXfcc::Append));
        assert_eq!(
            app.client_cert(&two_lines).unwrap(),
            "Hash=a,Hash=b;URI=x,Hash=ours"
        );
        assert_eq!(app.client_cert(&one).unwrap(), "Hash=a,Hash=ours");
        assert_eq!(app.client_cert(&none).unwrap(), "Hash=ours");
        // `append` without a certificate of our own: theirs as they are.
        let bare = Forwarding::new("10.0.0.1".parse().unwrap(), false)
            .with_client_cert(None, Some(TrustedXfcc::Append));
        assert_eq!(bare.client_cert(&one).unwrap(), "Hash=a");
        // The HTTP/2 path writes the one joined value.
        let mut out = copy_end_to_end(&two_lines, false);
        add_forwarded_with(&mut out, &app);
        assert_eq!(
            out.get_all("x-forwarded-client-cert")
                .iter()
                .collect::<Vec<_>>(),
            ["Hash=a,Hash=b;URI=x,Hash=ours"]
        );
    }

    #[test]
    fn request_ids_are_kept_or_made() {
        let h = map(&[("x-request-id", "abc-1")]);
        assert_eq!(request_id(&h), "abc-1");
        let fresh = request_id(&HeaderMap::new());
        assert_eq!(fresh.len(), 32);
        assert!(fresh.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(fresh, request_id(&HeaderMap::new()));
        let bad = map(&[("x-request-id", "has space")]);
        assert_ne!(request_id(&bad), "has space");
    }
}
