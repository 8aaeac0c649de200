//! Prometheus metrics of the data path.
//!
//! Families live in a [`prometheus_client`] registry that the admin API encodes. The hot path
//! never looks a label set up: routes and backends resolve their counters once when a
//! [`GatewayState`](crate::state::GatewayState) is built and keep the handles (each an `Arc`
//! inside), so a request only touches atomics.
//!
//! ```
//! use scalewise_gateway::metrics::GatewayMetrics;
//!
//! let metrics = GatewayMetrics::new();
//! metrics.client_connections("public").inc();
//! assert!(metrics.encode().contains("gateway_client_connections{listener=\"public\"} 1"));
//! ```
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    upstream: String,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    upstream: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    upstream: String,
    backend: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    listener: String,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    listener: String,
    reason: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Status classes used as the `status` label.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The gateway's metric families and the registry they are registered in.
#[derive(Debug)]
pub struct GatewayMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<RouteLabels>,
    connect_errors: Family<BackendLabels, Counter>,
    tls_handshake_errors: Family<BackendLabels, Counter>,
    client_tls_handshake_errors: Family<HandshakeLabels, Counter>,
    retries: Family<UpstreamLabels, Counter>,
    client_connections: Family<ListenerLabels, Gauge>,
    client_buffers: Family<ListenerLabels, Gauge>,
    backend_in_flight: Family<BackendLabels, Gauge>,
    local_replies: Family<ErrorLabels, Counter>,
    dns_failures: Family<UpstreamLabels, Counter>,
    pub(crate) policy: crate::policy::PolicyMetrics,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayMetrics {
    /// Metrics in a fresh registry.
    pub fn new() -> Self {
        Self::with_registry(Registry::default())
    }

    /// Registers the gateway's families (prefixed `gateway_`) in `registry`, which may already
    /// hold other metrics (library health, ejections) so one scrape returns everything.
    pub fn with_registry(mut registry: Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(scalewise::metrics::latency_histogram),
            connect_errors: Family::default(),
            tls_handshake_errors: Family::default(),
            client_tls_handshake_errors: Family::default(),
            retries: Family::default(),
            client_connections: Family::default(),
            client_buffers: Family::default(),
            backend_in_flight: Family::default(),
            local_replies: Family::default(),
            dns_failures: Family::default(),
            policy: crate::policy::PolicyMetrics::default(),
            registry: Registry::default(),
        };
        let r = registry.sub_registry_with_prefix("gateway");
        r.register(
            "requests",
            "Proxied requests by route, upstream and status class",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from request head to upstream response head",
            m.latency.clone(),
        );
        r.register(
            "upstream_connect_errors",
            "Failed connection attempts to backends",
            m.connect_errors.clone(),
        );
        r.register(
            "upstream_tls_handshake_errors",
            "Failed TLS handshakes with backends (also counted in upstream_connect_errors)",
            m.tls_handshake_errors.clone(),
        );
        r.register(
            "client_tls_handshake_errors",
            "Failed TLS handshakes with clients by reason: client_cert (no certificate where one \
             is required, or one that did not verify), timeout, other",
            m.client_tls_handshake_errors.clone(),
        );
        r.register(
            "retries",
            "Requests retried on another backend",
            m.retries.clone(),
        );
        r.register(
            "client_connections",
            "Open client connections",
            m.client_connections.clone(),
        );
        r.register(
            "client_buffers",
            "HTTP/1 client connections holding read/write buffers (busy ones; idle keep-alive connections hold none)",
            m.client_buffers.clone(),
        );
        r.register(
            "backend_in_flight",
            "Requests in flight per backend",
            m.backend_in_flight.clone(),
        );
        r.register(
            "local_replies",
            "Answers the gateway produced itself, by kind (no_route, bad_gateway, ...)",
            m.local_replies.clone(),
        );
        r.register(
            "dns_resolve_failures",
            "Failed or empty DNS lookups of backend names (the last good addresses stay)",
            m.dns_failures.clone(),
        );
        m.policy.register(r);
        Self { registry, ..m }
    }

    /// The registry to encode for `GET /metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The open-connections gauge of a listener.
    pub fn client_connections(&self, listener: &str) -> Gauge {
        self.client_connections
            .get_or_create(&ListenerLabels {
                listener: listener.to_owned(),
            })
            .clone()
    }

    /// HTTP/1 client connections of `listener` holding buffers.
    pub fn client_buffers(&self, listener: &str) -> Gauge {
        self.client_buffers
            .get_or_create(&ListenerLabels {
                listener: listener.to_owned(),
            })
            .clone()
    }

    /// The failed-handshake counters of TLS listener `listener`, resolved once per
    /// listener.
    pub(crate) fn client_tls_errors(&self, listener: &str) -> ClientTlsErrors {
        let get = |reason| {
            self.client_tls_handshake_errors
                .get_or_create(&HandshakeLabels {
                    listener: listener.to_owned(),
                    reason,
                })
                .clone()
        };
        ClientTlsErrors {
            client_cert: get("client_cert"),
            timeout: get("timeout"),
            other: get("other"),
        }
    }

    pub(crate) fn route(&self, route: &str, upstream: &str) -> RouteMetrics {
        let status = STATUS_CLASSES.map(|status| {
            self.requests
                .get_or_create(&RequestLabels {
                    route: route.to_owned(),
                    upstream: upstream.to_owned(),
                    status,
                })
                .clone()
        });
        let latency = self
            .latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
                upstream: upstream.to_owned(),
            })
            .clone();
        RouteMetrics { status, latency }
    }

    /// A backend's handles. Every family here is also in [`Self::forget_backend`].
    pub(crate) fn backend(&self, upstream: &str, backend: &str) -> BackendMetrics {
        let labels = BackendLabels {
            upstream: upstream.to_owned(),
            backend: backend.to_owned(),
        };
        BackendMetrics {
            connect_errors: self.connect_errors.get_or_create(&labels).clone(),
            tls_handshake_errors: self.tls_handshake_errors.get_or_create(&labels).clone(),
            in_flight: self.backend_in_flight.get_or_create(&labels).clone(),
        }
    }

    /// Deletes the label sets of a backend that left its upstream.
    pub(crate) fn forget_backend(&self, upstream: &str, backend: &str) {
        let labels = BackendLabels {
            upstream: upstream.to_owned(),
            backend: backend.to_owned(),
        };
        self.connect_errors.remove(&labels);
        self.tls_handshake_errors.remove(&labels);
        self.backend_in_flight.remove(&labels);
    }

    pub(crate) fn retries(&self, upstream: &str) -> Counter {
        self.retries
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_owned(),
            })
            .clone()
    }

    pub(crate) fn dns_failure(&self, upstream: &str) {
        self.dns_failures
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_owned(),
            })
            .inc();
    }

    pub(crate) fn local_reply(&self, listener: &str, kind: &'static str) {
        self.local_replies
            .get_or_create(&ErrorLabels {
                listener: listener.to_owned(),
                kind,
            })
            .inc();
    }
}

/// Counters of one route, resolved once per state build.
#[derive(Debug, Clone)]
pub(crate) struct RouteMetrics {
    status: [Counter; 5],
    pub(crate) latency: Histogram,
}

impl RouteMetrics {
    pub(crate) fn count(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.status[class].inc();
    }
}

/// Counters of one backend.
#[derive(Debug, Clone)]
pub(crate) struct BackendMetrics {
    pub(crate) connect_errors: Counter,
    pub(crate) tls_handshake_errors: Counter,
    pub(crate) in_flight: Gauge,
}

/// Failed TLS handshakes with the clients of one listener, by reason.
#[derive(Debug, Clone)]
pub(crate) struct ClientTlsErrors {
    /// No certificate where one is required, or one that did not verify.
    pub(crate) client_cert: Counter,
    /// Not done within the listener's `header_read_timeout`.
    pub(crate) timeout: Counter,
    /// Anything else (no common protocol version or cipher, the client hung up...).
    pub(crate) other: Counter,
}
