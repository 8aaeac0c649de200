//! Prometheus metrics shared by every primitive: a registry that can be written to from many
//! places and scraped from one, the standard latency buckets, and a [`SnapshotCollector`] for
//! values that already live elsewhere (endpoint health, ejections, in-flight counts) and are
//! read at scrape time instead of being mirrored into gauges on every change.
//!
//! ```
//! use scalewise::metrics::{MetricsRegistry, SnapshotCollector, latency_histogram};
//! use prometheus_client::metrics::counter::Counter;
//!
//! let registry = MetricsRegistry::with_prefix("demo");
//! let requests: Counter = Counter::default();
//! registry.register("requests", "Requests served", requests.clone());
//! let latency = latency_histogram();
//! registry.register("request_duration_seconds", "Request latency", latency.clone());
//! registry.register_collector(SnapshotCollector::new(|out| {
//!     out.gauge("backend_up", "1 if the backend is healthy", &[("backend", "a")], 1.0);
//! }));
//!
//! requests.inc();
//! latency.observe(0.003);
//! let text = registry.encode();
//! assert!(text.contains("demo_requests_total 1"));
//! assert!(text.contains("demo_backend_up{backend=\"a\"} 1"));
//! ```
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The `Content-Type` of [`MetricsRegistry::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the latency histogram buckets every scalewise component uses, so
/// dashboards can aggregate across them: 0.5 ms to 10 s, roughly ×2.5 apart.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram with [`LATENCY_BUCKETS`], for durations observed in seconds.
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

/// A [`prometheus_client::registry::Registry`] behind a lock, cheap to clone and share.
///
/// Registration happens at start-up and on reload; encoding on each scrape. Neither holds the
/// lock across an `.await`, and metric updates themselves never touch it (metrics are atomics).
#[derive(Debug, Clone, Default)]
pub struct MetricsRegistry {
    inner: Arc<Mutex<Registry>>,
}

impl MetricsRegistry {
    /// An empty registry without a name prefix.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry whose metric names all start with `prefix_`.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Registry::with_prefix(prefix))),
        }
    }

    /// Registers a metric. Counters get `_total` appended when encoded.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.lock().register(name, help, metric);
    }

    /// Registers a collector consulted on every scrape.
    pub fn register_collector(&self, collector: impl Collector) {
        self.lock().register_collector(Box::new(collector));
    }

    /// Runs `f` with the underlying registry (for sub-registries, units, custom label sets).
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.lock())
    }

    /// Encodes every metric in the OpenMetrics text format (served as [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; an Err here could only come from a broken
        // user-supplied Collector, in which case the partial output is still the best answer.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.lock());
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while registering leaves the registry usable; don't cascade it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Label pairs of one sample.
pub type Labels = Vec<(String, String)>;

#[derive(Debug)]
enum Kind {
    Gauge,
    Counter,
}

#[derive(Debug)]
struct SampleFamily {
    help: String,
    kind: Kind,
    samples: Vec<(Labels, f64)>,
}

/// Where a [`SnapshotCollector`]'s closure writes the samples of one scrape.
#[derive(Debug, Default)]
pub struct Samples {
    families: BTreeMap<String, SampleFamily>,
}

impl Samples {
    /// Adds one gauge sample. Samples with the same `name` form one family; the first `help`
    /// wins.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.push(name, help, Kind::Gauge, labels, value);
    }

    /// Adds one counter sample (a monotonic total kept elsewhere). Encoded with `_total`.
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.push(name, help, Kind::Counter, labels, value);
    }

    fn push(&mut self, name: &str, help: &str, kind: Kind, labels: &[(&str, &str)], value: f64) {
        let family = self
            .families
            .entry(name.to_owned())
            .or_insert_with(|| SampleFamily {
                help: help.to_owned(),
                kind,
                samples: Vec::new(),
            });
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        family.samples.push((labels, value));
    }
}

/// A [`Collector`] that calls a closure on every scrape and encodes what it wrote to
/// [`Samples`]. Use it to expose state owned by something else (a snapshot of an upstream)
/// without keeping gauges in sync by hand.
pub struct SnapshotCollector {
    #[allow(clippy::type_complexity)]
    collect: Box<dyn Fn(&mut Samples) + Send + Sync>,
}

impl std::fmt::Debug for SnapshotCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCollector").finish_non_exhaustive()
    }
}

impl SnapshotCollector {
    /// A collector calling `collect` on each scrape.
    pub fn new(collect: impl Fn(&mut Samples) + Send + Sync + 'static) -> Self {
        Self {
            collect: Box::new(collect),
        }
    }
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut samples = Samples::default();
        (self.collect)(&mut samples);
        for (name, family) in &samples.families {
            let metric_type = match family.kind {
                Kind::Gauge => MetricType::Gauge,
                Kind::Counter => MetricType::Counter,
            };
            let mut metric = encoder.encode_descriptor(name, &family.help, None, metric_type)?;
            for (labels, value) in &family.samples {
                let sample = metric.encode_family(labels)?;
                match family.kind {
                    Kind::Gauge => ConstGauge::new(*value).encode(sample)?,
                    Kind::Counter => ConstCounter::new(*value).encode(sample)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::gauge::Gauge;

    #[test]
    fn collector_groups_samples_into_families() {
        let registry = MetricsRegistry::new();
        registry.register_collector(SnapshotCollector::new(|out| {
            out.gauge("up", "health", &[("backend", "a")], 1.0);
            out.counter("ejections", "ejections", &[("backend", "a")], 3.0);
            out.gauge("up", "health", &[("backend", "b")], 0.0);
        }));
        let text = registry.encode();
        assert_eq!(text.matches("# TYPE up gauge").count(), 1, "{text}");
        assert!(text.contains("up{backend=\"a\"} 1"), "{text}");
        assert!(text.contains("up{backend=\"b\"} 0"), "{text}");
        assert!(text.contains("ejections_total{backend=\"a\"} 3"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn histogram_uses_standard_buckets() {
        let registry = MetricsRegistry::with_prefix("x");
        let h = latency_histogram();
        registry.register("lat_seconds", "latency", h.clone());
        h.observe(0.002);
        let text = registry.encode();
        assert!(
            text.contains("x_lat_seconds_bucket{le=\"0.0025\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("x_lat_seconds_bucket{le=\"0.001\"} 0"),
            "{text}"
        );
        let g: Gauge = Gauge::default();
        registry.register("g", "g", g.clone());
        g.set(7);
        assert!(registry.encode().contains("x_g 7"));
    }
}
