//! Routing: which upstream serves a request, by listener, host, path prefix and method.
//!
//! Routes are tried in configuration order and the first whose every present condition
//! matches wins, like firewall rules: predictable, and cheap for the handful of routes a
//! gateway has (a linear scan of a few entries beats a trie's pointer chasing).
use crate::config::RouteConfig;
use crate::metrics::RouteMetrics;
use crate::state::UpstreamRuntime;
use http::Method;
use std::sync::Arc;
use std::time::Duration;

/// One compiled routing rule.
#[derive(Debug)]
pub struct Route {
    /// Label used in metrics and logs: the route's `name`, or its index in the config.
    pub label: String,
    listener: Option<String>,
    host: Option<HostMatch>,
    path_prefix: Option<String>,
    methods: Option<Vec<Method>>,
    /// The upstream that serves matching requests.
    pub upstream: Arc<UpstreamRuntime>,
    /// Response-head timeout overriding the listener's.
    pub timeout: Option<Duration>,
    pub(crate) metrics: RouteMetrics,
    /// Rate limit, concurrency limit, shedding and retries of this route.
    pub policy: crate::policy::RoutePolicy,
}

#[derive(Debug)]
enum HostMatch {
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

impl Route {
    pub(crate) fn new(
        index: usize,
        cfg: &RouteConfig,
        upstream: Arc<UpstreamRuntime>,
        metrics: RouteMetrics,
        policy: crate::policy::RoutePolicy,
    ) -> Self {
        Self {
            label: cfg.name.clone().unwrap_or_else(|| index.to_string()),
            listener: cfg.listener.clone(),
            host: cfg.host.as_deref().map(|h| match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.to_ascii_lowercase()),
                None => HostMatch::Exact(h.to_ascii_lowercase()),
            }),
            path_prefix: cfg.path_prefix.clone(),
            methods: cfg.methods.as_ref().map(|ms| {
                ms.iter()
                    .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                    .collect()
            }),
            upstream,
            timeout: cfg.timeout,
            metrics,
            policy,
        }
    }

    /// Whether this route may serve requests arriving on `listener`.
    pub fn applies_to_listener(&self, listener: &str) -> bool {
        self.listener.as_deref().is_none_or(|l| l == listener)
    }

    /// Whether a request with this host (port already stripped), path and method matches.
    pub fn matches(&self, host: Option<&str>, path: &str, method: &Method) -> bool {
        if let Some(m) = &self.methods {
            if !m.contains(method) {
                return false;
            }
        }
        if let Some(prefix) = &self.path_prefix {
            if !path_has_prefix(path, prefix) {
                return false;
            }
        }
        match (&self.host, host) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(HostMatch::Exact(h)), Some(got)) => got.eq_ignore_ascii_case(h),
            (Some(HostMatch::Suffix(s)), Some(got)) => {
                got.len() > s.len()
                    && got.is_char_boundary(got.len() - s.len())
                    && got[got.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
}

/// Prefix match on segment boundaries: `/api` matches `/api` and `/api/x`, not `/apix`.
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    path.starts_with(prefix)
        && (path.len() == prefix.len()
            || prefix.ends_with('/')
            || path.as_bytes()[prefix.len()] == b'/')
}

/// The host a request is addressed to, without port: the URI authority (HTTP/2, absolute-form
/// HTTP/1) or the `Host` header.
pub fn request_host(req: &http::request::Parts) -> Option<&str> {
    if let Some(a) = req.uri.authority() {
        return Some(a.host());
    }
    let h = req.headers.get(http::header::HOST)?.to_str().ok()?;
    Some(strip_port(h))
}

/// A `Host` value without its port (and an IPv6 literal without its brackets).
pub(crate) fn strip_port(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[') {
        // IPv6 literal: keep the brackets off, the port after `]` too.
        return rest.split(']').next().unwrap_or(rest);
    }
    h.rsplit_once(':').map_or(h, |(host, _)| host)
}

/// Routes of one listener, in order.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Arc<Route>>,
}

impl Router {
    pub(crate) fn new(routes: Vec<Arc<Route>>) -> Self {
        Self { routes }
    }

    /// The first matching route.
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.matches(host, path, method))
    }

    /// All routes, in order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(path_has_prefix("/api", "/api"));
        assert!(path_has_prefix("/api/x", "/api"));
        assert!(!path_has_prefix("/apix", "/api"));
        assert!(path_has_prefix("/api/x", "/api/"));
        assert!(path_has_prefix("/anything", "/"));
        assert!(!path_has_prefix("/ap", "/api"));
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("[::1"), "::1");
    }
}
