//! Results of a run: the JSON document (schema `scalewise-load/1`), the text summary and
//! baseline comparison.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::recorder::{ErrorKind, Totals};

/// JSON schema identifier of [`Report`].
pub const SCHEMA: &str = "scalewise-load/1";

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Minimum.
    pub min_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Standard deviation.
    pub stdev_ms: f64,
}

impl Latency {
    /// Summarises a histogram of microseconds.
    #[must_use]
    pub fn from_hist(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            min_ms: ms(h.min()),
            mean_ms: h.mean() / 1000.0,
            stdev_ms: h.stdev() / 1000.0,
        }
    }
}

/// One point of the percentile curve.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PercentilePoint {
    /// Percentile (0–100).
    pub percentile: f64,
    /// Latency at that percentile, ms.
    pub ms: f64,
}

/// One second of the timeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Second {
    /// Seconds since the start (end of the interval).
    pub t: f64,
    /// Finished requests in the interval.
    pub requests: u64,
    /// Failed requests in the interval.
    pub errors: u64,
    /// Bytes received in the interval.
    pub bytes: u64,
    /// Requests per second in the interval.
    pub rps: f64,
    /// Median latency in the interval.
    pub p50_ms: f64,
    /// 99th percentile latency in the interval.
    pub p99_ms: f64,
    /// Maximum latency in the interval.
    pub max_ms: f64,
}

/// Per scenario step results.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepReport {
    /// Step name.
    pub name: String,
    /// Finished requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Latency.
    #[serde(flatten)]
    pub latency: Latency,
}

/// Pass/fail counts of one scenario check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckReport {
    /// `step.status`, `step.contains`, `step.$.path` or `step.header:name`.
    pub name: String,
    /// The step the check belongs to.
    pub step: String,
    /// Responses that passed.
    pub passes: u64,
    /// Responses that failed it, and runs of the step that got no response.
    pub fails: u64,
}

/// Scenario checks: overall pass rate and per-check counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Checks {
    /// passes / (passes + fails), 0–1; 0 when no check was evaluated.
    pub rate: f64,
    /// Passed check evaluations, all checks together.
    pub passes: u64,
    /// Failed check evaluations, all checks together.
    pub fails: u64,
    /// Per check, in file order.
    pub list: Vec<CheckReport>,
}

/// Errors by category.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Errors {
    /// All categories together.
    pub total: u64,
    /// Connect failures.
    pub connect: u64,
    /// Timeouts.
    pub timeout: u64,
    /// Connection resets / unexpected closes.
    pub reset: u64,
    /// TLS failures.
    pub tls: u64,
    /// Malformed responses.
    pub protocol: u64,
    /// 4xx responses.
    pub http_4xx: u64,
    /// 5xx responses.
    pub http_5xx: u64,
}

/// WebSocket counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WsReport {
    /// Mode (`echo` or `subscribe`).
    pub mode: String,
    /// Messages sent.
    pub messages_sent: u64,
    /// Messages received.
    pub messages_received: u64,
    /// Messages received per second.
    pub messages_per_s: f64,
}

/// Resource use of the generator itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Generator {
    /// Peak resident set size of this process (VmHWM), KiB; 0 when unavailable.
    pub peak_rss_kib: u64,
    /// Peak RSS divided by the number of connections, KiB.
    pub rss_per_connection_kib: f64,
}

/// Results of one `scalewise load` run. Serialized as JSON with `"schema": "scalewise-load/1"`;
/// fields are only ever added within a schema version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Target URL (or scenario file).
    pub target: String,
    /// `http/1.1`, `h2`, `websocket` or `scenario`.
    pub protocol: String,
    /// `closed` or `open`.
    pub model: String,
    /// Load shape description.
    pub shape: String,
    /// Connections / virtual users (maximum).
    pub connections: usize,
    /// Wall time of the run, seconds.
    pub duration_s: f64,
    /// The run was stopped by Ctrl-C.
    pub interrupted: bool,
    /// Requests still in flight at the end that were abandoned, after the graceful stop (at
    /// once on Ctrl-C); not counted in `requests` (k6's interrupted iterations).
    #[serde(default)]
    pub interrupted_requests: u64,
    /// `--graceful-stop`: how long in-flight requests got to finish after the end, seconds.
    #[serde(default)]
    pub graceful_stop_s: f64,
    /// Finished requests (responses of any status and failed attempts).
    pub requests: u64,
    /// Requests that got a non-error response (1xx–3xx).
    pub ok: u64,
    /// Requests per second (requests / duration).
    pub rps: f64,
    /// Open model: target rate; null in the closed model.
    pub target_rps: Option<f64>,
    /// Open model: requests that started later than scheduled.
    pub late: u64,
    /// Open model: scheduled requests never sent because the run ended first.
    pub missed: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Bytes received per second.
    pub bytes_per_s: f64,
    /// Median latency (open model: from the scheduled send time).
    pub p50_ms: f64,
    /// 90th percentile latency.
    pub p90_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// 99.9th percentile latency.
    pub p999_ms: f64,
    /// Maximum latency.
    pub max_ms: f64,
    /// Full corrected latency summary.
    pub latency: Latency,
    /// Latency from the actual send time (differs from `latency` in the open model only).
    pub uncorrected: Latency,
    /// Percentile curve of `latency`.
    pub percentiles: Vec<PercentilePoint>,
    /// Errors by category.
    pub errors: Errors,
    /// errors.total / requests (0–1).
    pub error_rate: f64,
    /// Category key (as in `errors`) → the first error message of that category, e.g.
    /// `"connect": "Connection refused (os error 111)"`: one example each, at most 200
    /// characters. Absent in reports written before it was added.
    #[serde(default)]
    pub error_messages: BTreeMap<String, String>,
    /// Status code (as a string) → count.
    pub statuses: BTreeMap<String, u64>,
    /// Per-second timeline.
    pub timeline: Vec<Second>,
    /// Per scenario step.
    pub steps: Vec<StepReport>,
    /// WebSocket counters, for ws:// and wss:// runs.
    pub websocket: Option<WsReport>,
    /// Scenario checks; null when the run has none.
    pub checks: Option<Checks>,
    /// The generator's own resource use.
    pub generator: Generator,
}

/// Inputs to [`Report::build`] that are not in [`Totals`].
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub target: String,
    pub protocol: String,
    pub model: String,
    pub shape: String,
    pub connections: usize,
    pub duration_s: f64,
    pub interrupted: bool,
    pub graceful_stop_s: f64,
    pub target_rps: Option<f64>,
    pub missed: u64,
    pub step_names: Vec<String>,
    /// (step, check name) per check counter.
    pub check_names: Vec<(String, String)>,
    pub ws_mode: Option<String>,
}

impl Report {
    pub(crate) fn build(totals: &Totals, meta: Meta, timeline: Vec<Second>) -> Report {
        let c = &totals.counts;
        let latency = Latency::from_hist(&totals.corrected);
        let uncorrected = Latency::from_hist(&totals.uncorrected);
        let dur = meta.duration_s.max(1e-9);
        let errors = Errors {
            total: c.error_total(),
            connect: c.error(ErrorKind::Connect),
            timeout: c.error(ErrorKind::Timeout),
            reset: c.error(ErrorKind::Reset),
            tls: c.error(ErrorKind::Tls),
            protocol: c.error(ErrorKind::Protocol),
            http_4xx: c.error(ErrorKind::Http4xx),
            http_5xx: c.error(ErrorKind::Http5xx),
        };
        let percentiles = if totals.corrected.is_empty() {
            Vec::new()
        } else {
            [
                0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999,
                100.0,
            ]
            .iter()
            .map(|p| PercentilePoint {
                percentile: *p,
                ms: totals.corrected.value_at_quantile(p / 100.0) as f64 / 1000.0,
            })
            .collect()
        };
        let steps = meta
            .step_names
            .iter()
            .enumerate()
            .map(|(i, name)| match totals.steps.get(i) {
                Some(s) => StepReport {
                    name: name.clone(),
                    requests: s.requests,
                    errors: s.errors,
                    latency: Latency::from_hist(&s.hist),
                },
                None => StepReport {
                    name: name.clone(),
                    requests: 0,
                    errors: 0,
                    latency: Latency::default(),
                },
            })
            .collect();
        let websocket = meta.ws_mode.map(|mode| WsReport {
            mode,
            messages_sent: c.ws_sent,
            messages_received: c.ws_received,
            messages_per_s: c.ws_received as f64 / dur,
        });
        let checks = (!meta.check_names.is_empty()).then(|| {
            let list: Vec<CheckReport> = meta
                .check_names
                .iter()
                .enumerate()
                .map(|(i, (step, name))| {
                    let (passes, fails) = totals.checks.get(i).copied().unwrap_or_default();
                    CheckReport {
                        name: name.clone(),
                        step: step.clone(),
                        passes,
                        fails,
                    }
                })
                .collect();
            let passes = list.iter().map(|c| c.passes).sum();
            let fails = list.iter().map(|c| c.fails).sum();
            Checks {
                rate: pass_rate(passes, fails),
                passes,
                fails,
                list,
            }
        });
        let peak = peak_rss_kib();
        Report {
            schema: SCHEMA.into(),
            target: meta.target,
            protocol: meta.protocol,
            model: meta.model,
            shape: meta.shape,
            connections: meta.connections,
            duration_s: meta.duration_s,
            interrupted: meta.interrupted,
            interrupted_requests: c.interrupted,
            graceful_stop_s: meta.graceful_stop_s,
            requests: c.requests,
            ok: c.requests.saturating_sub(errors.total),
            rps: c.requests as f64 / dur,
            target_rps: meta.target_rps,
            late: c.late,
            missed: meta.missed,
            bytes: c.bytes,
            bytes_per_s: c.bytes as f64 / dur,
            p50_ms: latency.p50_ms,
            p90_ms: latency.p90_ms,
            p99_ms: latency.p99_ms,
            p999_ms: latency.p999_ms,
            max_ms: latency.max_ms,
            latency,
            uncorrected,
            percentiles,
            error_rate: if c.requests == 0 {
                0.0
            } else {
                errors.total as f64 / c.requests as f64
            },
            errors,
            error_messages: ErrorKind::ALL
                .iter()
                .zip(&totals.first_errors)
                .filter_map(|(k, m)| Some((k.key().to_string(), m.clone()?)))
                .collect(),
            statuses: totals
                .statuses
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            timeline,
            steps,
            websocket,
            checks,
            generator: Generator {
                peak_rss_kib: peak,
                rss_per_connection_kib: if meta.connections == 0 {
                    0.0
                } else {
                    peak as f64 / meta.connections as f64
                },
            },
        }
    }

    /// The text summary printed at the end of a run.
    #[must_use]
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Target     {} ({}, {} model, {}, {} connections)",
            self.target, self.protocol, self.model, self.shape, self.connections
        );
        let _ = writeln!(
            s,
            "Duration   {:.2}s{}",
            self.duration_s,
            if self.interrupted {
                "  (interrupted: partial results)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "Requests   {}  ({} ok)  {:.1} req/s",
            self.requests, self.ok, self.rps
        );
        if self.interrupted_requests > 0 {
            let when = if self.interrupted {
                "at Ctrl-C".to_string()
            } else {
                let grace = std::time::Duration::try_from_secs_f64(self.graceful_stop_s)
                    .unwrap_or_default();
                format!(
                    "after the graceful stop ({})",
                    humantime::format_duration(grace)
                )
            };
            let _ = writeln!(
                s,
                "Interrupted {} requests in flight at the end, abandoned {when} and not recorded",
                self.interrupted_requests
            );
        }
        if let Some(t) = self.target_rps {
            // A shaped rate (ramp, stages …) only reaches `--rate` at its peak: next to the
            // achieved average, the comparable figure is what the timetable scheduled on
            // average (every due request was sent, abandoned at the end, or missed).
            let target = if self.shape == "constant" {
                format!("{t:.1} req/s")
            } else {
                let due = self.requests + self.interrupted_requests + self.missed;
                format!(
                    "{t:.1} req/s at the peak ({}), {:.1} req/s scheduled on average",
                    self.shape,
                    due as f64 / self.duration_s.max(1e-9)
                )
            };
            let _ = writeln!(
                s,
                "Rate       target {target}, achieved {:.1} req/s, late starts {}, missed {}",
                self.rps, self.late, self.missed
            );
        }
        let _ = writeln!(
            s,
            "Transfer   {}  ({}/s)",
            human_bytes(self.bytes as f64),
            human_bytes(self.bytes_per_s)
        );
        let l = &self.latency;
        let label = if self.model == "open" {
            "Latency (corrected, from scheduled send)"
        } else {
            "Latency"
        };
        let _ = writeln!(s, "{label}");
        let _ = writeln!(
            s,
            "  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}  stdev {}",
            ms(l.p50_ms),
            ms(l.p90_ms),
            ms(l.p99_ms),
            ms(l.p999_ms),
            ms(l.max_ms),
            ms(l.mean_ms),
            ms(l.stdev_ms)
        );
        if self.model == "open" {
            let u = &self.uncorrected;
            let _ = writeln!(s, "Latency (uncorrected, from actual send)");
            let _ = writeln!(
                s,
                "  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                ms(u.p50_ms),
                ms(u.p90_ms),
                ms(u.p99_ms),
                ms(u.p999_ms),
                ms(u.max_ms)
            );
        }
        if let Some(ws) = &self.websocket {
            let _ = writeln!(
                s,
                "WebSocket  {}: sent {}, received {} ({:.1} msg/s)",
                ws.mode, ws.messages_sent, ws.messages_received, ws.messages_per_s
            );
        }
        let e = &self.errors;
        let _ = writeln!(
            s,
            "Errors     {} ({:.2}%)  connect {}  timeout {}  reset {}  tls {}  protocol {}  4xx {}  5xx {}",
            e.total,
            self.error_rate * 100.0,
            e.connect,
            e.timeout,
            e.reset,
            e.tls,
            e.protocol,
            e.http_4xx,
            e.http_5xx
        );
        for (kind, m) in &self.error_messages {
            let _ = writeln!(s, "  first {kind:<9} {m}");
        }
        if !self.statuses.is_empty() {
            let list: Vec<String> = self
                .statuses
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(s, "Statuses   {}", list.join("  "));
        }
        for st in &self.steps {
            let _ = writeln!(
                s,
                "Step {:<16} {} requests, {} errors, p50 {}  p99 {}",
                st.name,
                st.requests,
                st.errors,
                ms(st.latency.p50_ms),
                ms(st.latency.p99_ms)
            );
        }
        if let Some(c) = &self.checks {
            let _ = writeln!(
                s,
                "Checks     {:.2}% passed  ({} passed, {} failed)",
                c.rate * 100.0,
                c.passes,
                c.fails
            );
            for ch in &c.list {
                let _ = writeln!(
                    s,
                    "  {} {:<28} {} passed, {} failed",
                    if ch.fails == 0 { "ok  " } else { "FAIL" },
                    ch.name,
                    ch.passes,
                    ch.fails
                );
            }
        }
        s
    }
}

/// passes / (passes + fails); 0 when nothing was evaluated, so a `checks>…` threshold on a
/// run whose checked steps never ran fails instead of passing vacuously.
fn pass_rate(passes: u64, fails: u64) -> f64 {
    match passes + fails {
        0 => 0.0,
        total => passes as f64 / total as f64,
    }
}

/// Formats milliseconds with a readable unit.
#[must_use]
pub fn ms(v: f64) -> String {
    if v < 1.0 {
        format!("{:.0}µs", v * 1000.0)
    } else if v < 1000.0 {
        format!("{v:.2}ms")
    } else {
        format!("{:.2}s", v / 1000.0)
    }
}

fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

/// Peak RSS of this process from /proc/self/status (Linux); 0 elsewhere.
#[must_use]
pub fn peak_rss_kib() -> u64 {
    proc_status_kib("self", "VmHWM:")
}

/// Reads a `kB` field of /proc/PID/status.
pub(crate) fn proc_status_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// One line of a baseline comparison.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Delta {
    /// Metric name.
    pub metric: String,
    /// Baseline value.
    pub baseline: f64,
    /// Current value.
    pub current: f64,
    /// Relative change (current / baseline − 1).
    pub change: f64,
    /// Whether the change is a regression beyond the limit.
    pub regression: bool,
}

/// Compares `current` with a baseline JSON document (a `scalewise-load/1` report).
/// Latency metrics regress when they grow by more than `limit` (fraction), throughput when it
/// drops by more than `limit`, the error rate when it grows by more than `limit` relatively and
/// by at least 0.1 percentage point. When both reports have scenario checks, their pass rate
/// (`checks`) regresses like the error rate does, read as a failure rate: when `1 − rate` grows
/// by more than `limit` relatively and by at least 0.1 percentage point.
///
/// # Errors
/// A message when the baseline lacks the expected fields.
pub fn compare(
    current: &serde_json::Value,
    baseline: &serde_json::Value,
    limit: f64,
) -> Result<Vec<Delta>, String> {
    let metrics: [(&str, bool); 6] = [
        ("rps", false),
        ("p50_ms", true),
        ("p90_ms", true),
        ("p99_ms", true),
        ("p999_ms", true),
        ("error_rate", true),
    ];
    let mut out = Vec::new();
    for (name, higher_is_worse) in metrics {
        let (Some(b), Some(c)) = (
            baseline.get(name).and_then(serde_json::Value::as_f64),
            current.get(name).and_then(serde_json::Value::as_f64),
        ) else {
            if baseline.get(name).is_none() && name != "error_rate" {
                return Err(format!(
                    "baseline has no numeric `{name}` field (is it a scalewise JSON report?)"
                ));
            }
            continue;
        };
        let change = if b == 0.0 {
            if c == 0.0 {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            c / b - 1.0
        };
        let regression = if name == "error_rate" {
            // Relative growth alone would flag 0.00% → 0.01%; also require 0.1 percentage point.
            change > limit && c - b > 0.001
        } else if higher_is_worse {
            change > limit
        } else {
            -change > limit
        };
        out.push(Delta {
            metric: name.into(),
            baseline: b,
            current: c,
            change,
            regression,
        });
    }
    let rate = |v: &serde_json::Value| {
        v.pointer("/checks/rate")
            .and_then(serde_json::Value::as_f64)
    };
    if let (Some(b), Some(c)) = (rate(baseline), rate(current)) {
        let (fb, fc) = (1.0 - b, 1.0 - c);
        let fail_growth = if fb == 0.0 {
            if fc == 0.0 {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            fc / fb - 1.0
        };
        out.push(Delta {
            metric: "checks".into(),
            baseline: b,
            current: c,
            change: if b == 0.0 { 0.0 } else { c / b - 1.0 },
            regression: fail_growth > limit && fc - fb > 0.001,
        });
    }
    Ok(out)
}

/// Renders baseline deltas as text.
#[must_use]
pub fn deltas_text(deltas: &[Delta]) -> String {
    let mut s = String::from("Baseline comparison\n");
    for d in deltas {
        let _ = writeln!(
            s,
            "  {:<11} {:>12.3} → {:>12.3}  {:+7.1}%{}",
            d.metric,
            d.baseline,
            d.current,
            d.change * 100.0,
            if d.regression { "  REGRESSION" } else { "" }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_flags_regressions_in_the_right_direction() {
        let base = serde_json::json!({"rps": 1000.0, "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 10.0, "p999_ms": 20.0, "error_rate": 0.0});
        let same = compare(&base, &base, 0.1).unwrap();
        assert_eq!(same.len(), 6);
        assert!(same.iter().all(|d| !d.regression));
        let worse = serde_json::json!({"rps": 850.0, "p50_ms": 1.05, "p90_ms": 2.0, "p99_ms": 12.0, "p999_ms": 20.0, "error_rate": 0.0005});
        let d = compare(&worse, &base, 0.1).unwrap();
        let flagged: Vec<&str> = d
            .iter()
            .filter(|d| d.regression)
            .map(|d| d.metric.as_str())
            .collect();
        // rps −15 % and p99 +20 % regress; p50 +5 % is within the limit; a 0.05-point error-rate
        // rise from zero is below the 0.1-point floor.
        assert_eq!(flagged, ["rps", "p99_ms"]);
        let better = serde_json::json!({"rps": 2000.0, "p50_ms": 0.5, "p90_ms": 1.0, "p99_ms": 5.0, "p999_ms": 10.0, "error_rate": 0.0});
        assert!(compare(&better, &base, 0.1)
            .unwrap()
            .iter()
            .all(|d| !d.regression));
        assert!(compare(&base, &serde_json::json!({"x": 1}), 0.1).is_err());

        // Check pass rates compare only when both reports have them; 99.95 % → 99.9 % stays
        // under the 0.1-point floor, 99.9 % → 98 % regresses.
        let with = |rate: f64| {
            let mut v = base.clone();
            v["checks"] = serde_json::json!({"rate": rate});
            v
        };
        assert_eq!(compare(&with(0.5), &base, 0.1).unwrap().len(), 6);
        let checks = |cur: f64, old: f64| {
            compare(&with(cur), &with(old), 0.1)
                .unwrap()
                .into_iter()
                .find(|d| d.metric == "checks")
                .unwrap()
                .regression
        };
        assert!(!checks(0.9990, 0.9995));
        assert!(checks(0.98, 0.999));
        assert!(!checks(1.0, 0.98), "an improvement");
    }
}
