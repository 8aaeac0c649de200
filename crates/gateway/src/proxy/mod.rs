//! The request path: route, pick a backend, forward with rewritten headers, stream the
//! answer back, and turn every failure into the status a client can act on.
//!
//! | what happened | answer |
//! |---|---|
//! | no route matches | 404 |
//! | HTTP/1.1 request without `Host`, malformed, or with ambiguous framing | 400 |
//! | HTTP/1.1 request with a transfer coding other than `chunked` (`gzip, chunked`) | 501 |
//! | request head larger than `max_header_bytes` | 431 |
//! | `Content-Length` or streamed body above `max_body_bytes` | 413 |
//! | no backend may take traffic | 503 + `Retry-After` |
//! | backend queue full or queue wait timed out | 503 + `Retry-After` |
//! | route rate limit exceeded | 429 + `Retry-After` + `RateLimit-*` |
//! | route concurrency limit full / load shed | 503 + `Retry-After` |
//! | every backend's circuit breaker open | 503 + `Retry-After` |
//! | connect refused / reset before a response | retry (route `retries`, default 1; under the upstream's retry budget) on another backend if the request is idempotent (or the route has `retry_non_idempotent`) and its body, if any, was kept (`retry_buffer_bytes`) or not read yet, else 502 |
//! | no response head within the route's timeout | 504 |
//! | the route's timeout ran out while waiting for the client's request body | 408 |
//! | the client closed, reset (HTTP/2) or dropped its connection mid-upload | 400 (nobody reads it); 499 in metrics and the access log |
//!
//! Failures of the client's making (413, 400 for a bad body, 408, 499) never reach the
//! backend's breaker, outlier detection or the retries.
//!
//! Error bodies are the status text and nothing else.
//!
//! [`forward`] is the one request pipeline (routing, admission, balancer pick, breaker,
//! retries, metrics). Both client-side engines call it: the native HTTP/1 connection loop
//! ([`h1::server`]) and hyper's HTTP/2 server ([`handle`]). It answers with a
//! `Response<ResponseBody>` that each engine writes out its own way.
pub mod body;
pub mod connect;
pub(crate) mod h1;
pub(crate) mod headers;
pub mod pool;
pub(crate) mod websocket;

use crate::route::strip_port;
use crate::state::Shared;
use body::{
    in_chain, ActiveGuard, Activity, BadRequestBody, BodyTooLarge, ClientBodyWatch, ClientFault,
    ForwardBody, HyperBody, Limited, Replay, ResponseBody, Upstreamed,
};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use pool::{QueueError, SendError};
use scalewise::balance::{Outcome, PickContext};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// What a request handler knows about its client connection.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    pub(crate) shared: Arc<Shared>,
    pub(crate) listener: Arc<str>,
    pub(crate) peer: SocketAddr,
    pub(crate) activity: Arc<Activity>,
    /// Forwarding header values for this client, formatted once per connection.
    pub(crate) forwarding: headers::Forwarding,
    /// The client certificate the TLS handshake verified, if any (for the access log).
    pub(crate) client_cert: Option<Arc<crate::client_cert::ClientCert>>,
}

fn local(status: StatusCode, active: Option<ActiveGuard>) -> Response<ResponseBody> {
    let text = status.canonical_reason().unwrap_or("Error");
    let body = Bytes::from(format!("{} {text}\n", status.as_u16()));
    let mut r = Response::new(ResponseBody::full(body, active));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn hash_key<'a>(key: &crate::config::HashKey, req: &'a http::request::Parts) -> Option<&'a [u8]> {
    use crate::config::HashKey;
    match key {
        HashKey::ClientIp => None,
        HashKey::Path => Some(req.uri.path().as_bytes()),
        HashKey::Header(name) => req.headers.get(name.as_str()).map(HeaderValue::as_bytes),
        HashKey::Cookie(name) => cookie(&req.headers, name),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(h: &'a http::HeaderMap, name: &str) -> Option<&'a [u8]> {
    for v in h.get_all(header::COOKIE) {
        for pair in v.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            if let Some(rest) = pair.strip_prefix(name.as_bytes()) {
                if let Some(value) = rest.strip_prefix(b"=") {
                    return Some(value);
                }
            }
        }
    }
    None
}

/// Handles one request from hyper's server (HTTP/2 clients). Never fails: every error
/// becomes a response. Extended CONNECTs for WebSocket (RFC 8441) go to [`websocket`].
///
/// The future is boxed because hyper reserves room for the service future in every
/// stream; boxed, it holds a pointer instead of the full request state machine.
pub(crate) fn handle(
    req: Request<Incoming>,
    ci: &ConnInfo,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<ResponseBody>> + Send + '_>> {
    if websocket::is_extended_connect(&req) {
        return Box::pin(websocket::forward(req, ci));
    }
    let (parts, incoming) = req.into_parts();
    let has_body = !incoming.is_end_stream();
    Box::pin(forward(
        parts,
        HyperBody(Some(incoming)),
        has_body,
        ci,
        None,
    ))
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// [`pool::BackendClient::acquire`] boxed (a backend at its connection limit: rare), built
/// outside the async fn for the reason [`boxed_admit`] gives.
fn boxed_acquire(
    backend: &pool::BackendClient,
) -> BoxFuture<'_, Result<Option<tokio::sync::OwnedSemaphorePermit>, QueueError>> {
    Box::pin(backend.acquire())
}

/// `policy.admit(..)` in a box of its own, built outside the async fn (see `listener.rs`):
/// its future has room for a Redis round trip and a queue wait (1.2 KiB), which would
/// otherwise take room in every request's future, to be moved with it. Routes without
/// policies never build it.
fn boxed_admit<'a>(
    policy: &'a crate::policy::RoutePolicy,
    parts: &'a http::request::Parts,
    client: std::net::IpAddr,
) -> BoxFuture<'a, Result<crate::policy::Admitted, crate::policy::Refused>> {
    Box::pin(policy.admit(parts, client))
}

/// The request pipeline: answers one request, from a local reply or a backend. `has_body`
/// says whether `body` may yield data (a body is kept for retries only then). `timer`: the
/// connection's timer for the response deadline (see [`scalewise::timeout::timeout_on`]);
/// `None` for one of the request's own (HTTP/2, where requests on a connection run
/// concurrently).
pub(crate) async fn forward<B: ForwardBody>(
    parts: http::request::Parts,
    body: B,
    has_body: bool,
    ci: &ConnInfo,
    mut timer: Option<std::pin::Pin<&mut tokio::time::Sleep>>,
) -> Response<ResponseBody> {
    let active = ActiveGuard::new(&ci.activity);
    let shared = &ci.shared;
    let state = shared.state.load_full();
    let Some(listener) = state.listener(&ci.listener) else {
        // The listener was removed by a reload while this connection stayed open.
        shared.metrics.local_reply(&ci.listener, "no_route");
        return local(StatusCode::NOT_FOUND, Some(active));
    };

    // `request_host`, with the `Host` lookup shared with the check that an HTTP/1.1
    // request has one.
    let host = match parts.uri.authority() {
        Some(a) => Some(a.host()),
        None => match parts.headers.get(header::HOST) {
            Some(h) => h.to_str().ok().map(strip_port),
            None if parts.version == Version::HTTP_11 => {
                shared.metrics.local_reply(&ci.listener, "bad_request");
                return local(StatusCode::BAD_REQUEST, Some(active));
            }
            None => None,
        },
    };

    let Some(route) = listener
        .router
        .find(host, parts.uri.path(), &parts.method)
        .cloned()
    else {
        shared.metrics.local_reply(&ci.listener, "no_route");
        return local(StatusCode::NOT_FOUND, Some(active));
    };

    // Looked up once: the backend client frames the request by it too (`Outgoing`).
    let content_length = parts.headers.get(header::CONTENT_LENGTH);
    let declared = if has_body || listener.max_body_bytes.is_some() {
        content_length
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    } else {
        None
    };
    if let Some(max) = listener.max_body_bytes {
        if declared.is_some_and(|n| n > max) {
            shared.metrics.local_reply(&ci.listener, "body_too_large");
            route.metrics.count(413);
            return local(StatusCode::PAYLOAD_TOO_LARGE, Some(active));
        }
    }

    let upgrade = parts.version == Version::HTTP_11 && headers::wants_upgrade(&parts.headers);
    let request_id = headers::request_id(&parts.headers);
    // Whether the method allows a retry; the body decides too (`Replay::rewind`).
    let may_retry = !upgrade && (route.policy.retry_non_idempotent || is_idempotent(&parts.method));

    // The client behind trusted proxies (`listeners[].trusted_proxies`), else the peer: the
    // key for rate limits and `client_ip` hashing.
    let client =
        crate::client_ip::client_ip(ci.peer.ip(), &parts.headers, &listener.trusted_proxies);
    let arrived = Instant::now();
    let admitted = if route.policy.admits_all() {
        Ok(crate::policy::Admitted::unconditional())
    } else {
        boxed_admit(&route.policy, &parts, client).await
    };
    let admitted = match admitted {
        Ok(a) => a,
        Err(refused) => {
            shared.metrics.local_reply(&ci.listener, refused.kind);
            route.metrics.count(refused.status.as_u16());
            let mut r = local(refused.status, Some(active));
            if let Some(d) = refused.decision {
                d.write_headers(r.headers_mut());
            }
            return r;
        }
    };
    let mut route_guard = Some(admitted.guard);
    // A bodiless request keeps nothing (limit 0): no allocation on that path.
    let keep = if has_body {
        route.policy.retry_buffer_bytes
    } else {
        0
    };
    // Only a request with a body can fail on the client's side while it is forwarded.
    let watch = has_body.then(|| Arc::new(ClientBodyWatch::default()));
    let mut body = Replay::new(
        Limited::new(body, listener.max_body_bytes, watch.clone()),
        keep,
        declared,
        Some((
            &shared.retry_buffered,
            state.config().server.retry_buffer_total_bytes,
        )),
    );

    let upstream = &route.upstream;
    let timeout = route.timeout.unwrap_or(listener.request_timeout);
    // From the clock read above: one read fewer per request.
    let deadline = tokio::time::Instant::from_std(arrived) + timeout;
    upstream.policy.budget().deposit();
    // Backends a failed attempt went to, and backends whose breaker refused a call.
    let mut tried: Vec<usize> = Vec::new();
    let mut broken: Vec<usize> = Vec::new();
    let mut exclude: Vec<usize> = Vec::new();
    let mut attempts: u32 = 1;

    loop {
        exclude.clear();
        exclude.extend_from_slice(&tried);
        exclude.extend_from_slice(&broken);
        let ctx = PickContext {
            client_ip: Some(client),
            hash_key: hash_key(&upstream.config.hash_key, &parts),
            exclude: &exclude,
        };
        let picked = match &upstream.config.sticky_cookie {
            Some(name) => {
                let pin = cookie(&parts.headers, name).and_then(|v| std::str::from_utf8(v).ok());
                upstream
                    .balancer
                    .select_pinned(pin, &ctx)
                    .map(|p| (p.selection, p.set_cookie))
            }
            None => upstream.balancer.select(&ctx).map(|s| (s, None)),
        };
        let picked = match picked {
            // Every backend was tried: a retry may go to one of them again.
            Err(_) if !tried.is_empty() => {
                tried.clear();
                continue;
            }
            other => other,
        };
        let (selection, set_cookie) = match picked {
            Ok(s) => s,
            Err(_) if attempts > 1 => {
                shared.metrics.local_reply(&ci.listener, "bad_gateway");
                route.metrics.count(502);
                return local(StatusCode::BAD_GATEWAY, Some(active));
            }
            Err(_) => {
                shared
                    .metrics
                    .local_reply(&ci.listener, "no_healthy_backend");
                route.metrics.count(503);
                return local(StatusCode::SERVICE_UNAVAILABLE, Some(active));
            }
        };
        let endpoint_id = selection.endpoint().id();
        // An open breaker takes its backend out of selection, as an ejection does.
        let Ok(breaker) = upstream.policy.permit(selection.endpoint()) else {
            drop(selection);
            broken.push(endpoint_id);
            continue;
        };
        let backend = match upstream.backend(endpoint_id) {
            Some(b) => b.clone(),
            // The balancer is shared with newer states (Upstream::update on reload), so a
            // request that started on an older state can be handed an endpoint added since.
            // Use the newest state's client; before that state is swapped in, a fresh one.
            None => shared
                .state
                .load()
                .upstream(&upstream.name)
                .and_then(|u| u.backend(endpoint_id).cloned())
                .unwrap_or_else(|| {
                    let addr = selection.endpoint().addr();
                    Arc::new(pool::BackendClient::new(
                        pool::BackendSettings::new(
                            addr,
                            &upstream.config,
                            upstream.backend_tls(addr),
                        ),
                        shared.metrics.backend(&upstream.name, &addr.to_string()),
                    ))
                }),
        };

        let acquired = match backend.acquire_now() {
            Some(r) => r,
            None => boxed_acquire(&backend).await,
        };
        let permit = match acquired {
            Ok(p) => p,
            Err(e) => {
                drop(selection);
                let kind = match e {
                    QueueError::Full => "queue_full",
                    QueueError::Timeout => "queue_timeout",
                };
                shared.metrics.local_reply(&ci.listener, kind);
                route.metrics.count(503);
                return local(StatusCode::SERVICE_UNAVAILABLE, Some(active));
            }
        };
        let in_flight = InFlight::new(&backend.metrics.in_flight);
        // One clock read serves both the queue delay and the upstream latency (clock reads
        // are not free on every VM).
        let started = Instant::now();
        if attempts == 1 {
            // Time spent in the route's and the backend's queues: what load shedding by
            // queueing delay watches.
            route
                .policy
                .observe_queue_delay(started.saturating_duration_since(arrived));
        }

        let outgoing = pool::Outgoing {
            parts: &parts,
            content_length,
            request_id: &request_id,
            forwarding: &ci.forwarding,
            upgrade,
        };
        // Pinned here and lent to the timeout: `timeout_on` is an async fn, and one that
        // took the future by value would hold it twice (its argument and its pinned copy).
        let result = {
            let sending = std::pin::pin!(backend.send(&outgoing, &mut body, has_body, started));
            match timer.as_mut() {
                Some(t) => scalewise::timeout::timeout_on(t.as_mut(), deadline, sending).await,
                None => tokio::time::timeout_at(deadline, sending).await.ok(),
            }
        };
        let latency = started.elapsed();

        let mut resp = match result {
            Some(Ok(r)) => r,
            None if watch.as_ref().is_some_and(|w| w.waiting_for_client()) => {
                // The backend was waiting for the rest of the body as much as we were: a
                // slow client (nginx's `client_body_timeout`), answered 408 and not held
                // against the backend (breaker permit and selection dropped unjudged).
                drop(breaker);
                drop(selection);
                if let Some(g) = route_guard.as_mut() {
                    g.outcome(None);
                }
                drop(in_flight);
                shared.metrics.local_reply(&ci.listener, "client_timeout");
                route.metrics.count(408);
                return local(StatusCode::REQUEST_TIMEOUT, Some(active));
            }
            None => {
                if let Some(g) = route_guard.as_mut() {
                    g.outcome(Some(false));
                }
                if let Some(b) = breaker {
                    b.record(scalewise::breaker::Outcome::failure().with_duration(latency));
                }
                selection.finish(Outcome::failure(latency));
                drop(in_flight);
                shared.metrics.local_reply(&ci.listener, "upstream_timeout");
                route.metrics.count(504);
                return local(StatusCode::GATEWAY_TIMEOUT, Some(active));
            }
            Some(Err(e)) => {
                // The client's failures (its body too large, undecodable, or abandoned) are
                // told apart by what its body saw, whatever error the backend client made
                // of them (the backend may see a reset stream or a cut-off request): they
                // never reach the backend's breaker, outlier detection or the retries.
                let fault = watch.as_ref().and_then(|w| w.fault()).or(match &e {
                    SendError::Request(inner) if in_chain::<BodyTooLarge>(inner.as_ref()) => {
                        Some(ClientFault::TooLarge)
                    }
                    SendError::Request(inner) if in_chain::<BadRequestBody>(inner.as_ref()) => {
                        Some(ClientFault::Malformed)
                    }
                    _ => None,
                });
                if let Some(fault) = fault {
                    drop(breaker);
                    drop(selection);
                    if let Some(g) = route_guard.as_mut() {
                        g.outcome(None);
                    }
                    drop(in_flight);
                    tracing::debug!(error = %e, ?fault, "request body failed on the client's side");
                    return client_fault(fault, ci, &route, active);
                }
                if let Some(b) = breaker {
                    b.record(scalewise::breaker::Outcome::failure().with_duration(latency));
                }
                selection.finish(match e {
                    SendError::Connect(_) => Outcome::connect_failure(latency),
                    SendError::Request(_) => Outcome::failure(latency),
                });
                drop(in_flight);
                tracing::debug!(upstream = %upstream.name, backend = %backend.addr(), error = %e, "upstream request failed");
                if may_retry
                    && attempts <= route.policy.retries
                    && body.rewind()
                    && upstream.policy.budget().withdraw()
                {
                    attempts += 1;
                    tried.push(endpoint_id);
                    upstream.retries.inc();
                    continue;
                }
                shared.metrics.local_reply(&ci.listener, "bad_gateway");
                route.metrics.count(502);
                return local(StatusCode::BAD_GATEWAY, Some(active));
            }
        };

        let status = resp.status();
        if let Some(b) = breaker {
            let outcome = if status.is_server_error() {
                scalewise::breaker::Outcome::failure()
            } else {
                scalewise::breaker::Outcome::success()
            };
            b.record(outcome.with_duration(latency));
        }
        if let Some(g) = route_guard.as_mut() {
            // Overload answers teach the adaptive limit to back off; other answers,
            // errors included, show the backend keeping up.
            let overloaded = matches!(
                status,
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
            );
            g.outcome(Some(!overloaded));
        }
        if let Some(d) = &admitted.decision {
            d.write_headers(resp.headers_mut());
        }
        route.metrics.count(status.as_u16());
        route.metrics.latency.observe(latency.as_secs_f64());
        let outcome = Outcome::from_status(status.as_u16(), latency);

        let switching = status == StatusCode::SWITCHING_PROTOCOLS;
        headers::strip_hop_by_hop(resp.headers_mut(), switching && upgrade);
        // One lookup: kept if the backend set one.
        resp.headers_mut()
            .entry(&headers::X_REQUEST_ID)
            .or_insert(request_id);
        if state.config().log.access_log {
            resp.extensions_mut()
                .insert(crate::logging::AnsweredBy(format!(
                    "{}/{}",
                    upstream.name,
                    backend.addr()
                )));
        }
        if let (Some(pin), Some(name)) = (set_cookie, &upstream.config.sticky_cookie) {
            if let Ok(v) = HeaderValue::from_str(&format!("{name}={pin}; Path=/; HttpOnly")) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }

        if switching && !upgrade {
            // A 101 nobody asked for: the backend is broken.
            selection.finish(Outcome::failure(latency));
            drop(in_flight);
            return local(StatusCode::BAD_GATEWAY, Some(active));
        }

        // A 101's body holds the backend connection for the engine to splice to the client;
        // the guard then lives as long as the tunnel (the connection stays busy meanwhile).
        let (parts, upstream_body) = resp.into_parts();
        let guard = Box::new(Upstreamed {
            selection: Some((selection, outcome)),
            permit,
            in_flight: in_flight.hand_over(),
            policy: route_guard.take(),
        });
        return Response::from_parts(
            parts,
            ResponseBody::upstream(upstream_body, guard, Some(active)),
        );
    }
}

/// A backend's in-flight gauge raised for one attempt, lowered when this is dropped — also
/// when hyper drops the whole request future mid-attempt (an HTTP/2 client reset its stream
/// while the backend was still answering), which no explicit decrement would see.
struct InFlight(Option<prometheus_client::metrics::gauge::Gauge>);

impl InFlight {
    fn new(gauge: &prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(Some(gauge.clone()))
    }

    /// The raised gauge, for the response body's guard to lower when the exchange ends.
    fn hand_over(mut self) -> prometheus_client::metrics::gauge::Gauge {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(g) = self.0.take() {
            g.dec();
        }
    }
}

/// The answer to a request whose body failed on the client's side.
fn client_fault(
    fault: ClientFault,
    ci: &ConnInfo,
    route: &crate::route::Route,
    active: ActiveGuard,
) -> Response<ResponseBody> {
    let (kind, status) = match fault {
        ClientFault::TooLarge => ("body_too_large", StatusCode::PAYLOAD_TOO_LARGE),
        // RFC 9112 §7.1: a chunked body that cannot be decoded is the request's error. The
        // connection closes (the body did not end where the framing said).
        ClientFault::Malformed => ("bad_request", StatusCode::BAD_REQUEST),
        // Nobody is left to read an answer; 499 (nginx's "client closed request") is what
        // the metrics and the access log say.
        ClientFault::Gone => ("client_closed", StatusCode::BAD_REQUEST),
    };
    ci.shared.metrics.local_reply(&ci.listener, kind);
    let mut r = local(status, Some(active));
    if fault == ClientFault::Gone {
        route.metrics.count(499);
        r.extensions_mut().insert(crate::logging::ClientClosed);
    } else {
        route.metrics.count(status.as_u16());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = http::HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; session=xyz"));
        h.append(header::COOKIE, HeaderValue::from_static("sessionx=2"));
        assert_eq!(cookie(&h, "session"), Some(&b"xyz"[..]));
        assert_eq!(cookie(&h, "sessionx"), Some(&b"2"[..]));
        assert_eq!(cookie(&h, "b"), None);
    }
}
