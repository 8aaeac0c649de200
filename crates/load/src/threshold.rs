//! Pass/fail thresholds: `p99<200ms`, `error_rate<1%`, `rps>1000`.
//!
//! Grammar: `METRIC OP VALUE`, where METRIC is one of `p50 p90 p99 p999 max mean` (latency; VALUE
//! takes `us`, `ms` or `s`, default ms), `error_rate` (VALUE in `%` or as a fraction), `rps`,
//! `requests`, `errors`, `checks` (the pass rate of scenario checks, in `%` or as a fraction);
//! OP is `<`, `<=`, `>`, `>=`.

use crate::report::Report;
use crate::LoadError;

/// Comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A parsed threshold.
///
/// ```
/// use scalewise_load::Threshold;
/// let t = Threshold::parse("p99 < 200ms").unwrap();
/// assert_eq!((t.metric.as_str(), t.value), ("p99", 200.0));
/// assert!(Threshold::parse("error_rate<1%").unwrap().value < 0.011);
/// assert!(Threshold::parse("p99 about 3").is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The expression as written.
    pub expr: String,
    /// Metric key.
    pub metric: String,
    /// Operator.
    pub op: Op,
    /// Limit in the metric's report unit (ms for latency, fraction for error_rate and checks).
    pub value: f64,
}

/// Outcome of one threshold.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Outcome {
    /// The expression.
    pub expr: String,
    /// The measured value.
    pub actual: f64,
    /// Whether it held.
    pub pass: bool,
}

const LATENCY: [&str; 6] = ["p50", "p90", "p99", "p999", "max", "mean"];

impl Threshold {
    /// Parses one expression.
    ///
    /// # Errors
    /// [`LoadError::Threshold`] explaining the expected form.
    pub fn parse(expr: &str) -> Result<Threshold, LoadError> {
        let bad = |why: &str| {
            LoadError::Threshold(format!(
                "`{expr}`: {why} (examples: p99<200ms, error_rate<1%, rps>1000, checks>99%)"
            ))
        };
        let compact: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
        let pos = compact
            .find(['<', '>'])
            .ok_or_else(|| bad("missing operator < <= > >="))?;
        let metric = compact[..pos].to_ascii_lowercase();
        let rest = &compact[pos..];
        let (op, value) = if let Some(v) = rest.strip_prefix("<=") {
            (Op::Le, v)
        } else if let Some(v) = rest.strip_prefix(">=") {
            (Op::Ge, v)
        } else if let Some(v) = rest.strip_prefix('<') {
            (Op::Lt, v)
        } else if let Some(v) = rest.strip_prefix('>') {
            (Op::Gt, v)
        } else {
            return Err(bad("missing operator"));
        };
        let metric = match metric.as_str() {
            "p99.9" => "p999".to_string(),
            m => m.to_string(),
        };
        let number = |s: &str| {
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad("value is not a number"))
        };
        let value = if LATENCY.contains(&metric.as_str()) {
            if let Some(v) = value.strip_suffix("ms") {
                number(v)?
            } else if let Some(v) = value
                .strip_suffix("us")
                .or_else(|| value.strip_suffix("µs"))
            {
                number(v)? / 1000.0
            } else if let Some(v) = value.strip_suffix('s') {
                number(v)? * 1000.0
            } else {
                number(value)?
            }
        } else if metric == "error_rate" || metric == "checks" {
            match value.strip_suffix('%') {
                Some(v) => number(v)? / 100.0,
                None => number(value)?,
            }
        } else if ["rps", "requests", "errors"].contains(&metric.as_str()) {
            number(value)?
        } else {
            return Err(bad(&format!(
                "unknown metric `{metric}` (expected p50, p90, p99, p999, max, mean, error_rate, rps, requests, errors, checks)"
            )));
        };
        // Every metric is ≥ 0: `p99<-5ms` or `error_rate<-1%` could never pass.
        if value < 0.0 {
            return Err(bad("the value must not be negative"));
        }
        Ok(Threshold {
            expr: expr.to_string(),
            metric,
            op,
            value,
        })
    }

    /// The value of this threshold's metric in `report`.
    #[must_use]
    pub fn actual(&self, r: &Report) -> f64 {
        // Failed attempts (connect, timeout, reset, TLS, protocol) carry no latency sample; a
        // run where nothing got a response has latency 0, which would pass `p99<200ms`.
        // NaN fails every comparison instead.
        let e = &r.errors;
        let samples = r
            .requests
            .saturating_sub(e.connect + e.timeout + e.reset + e.tls + e.protocol);
        if samples == 0 && LATENCY.contains(&self.metric.as_str()) {
            return f64::NAN;
        }
        match self.metric.as_str() {
            "p50" => r.p50_ms,
            "p90" => r.p90_ms,
            "p99" => r.p99_ms,
            "p999" => r.p999_ms,
            "max" => r.max_ms,
            "mean" => r.latency.mean_ms,
            "error_rate" => r.error_rate,
            "rps" => r.rps,
            "requests" => r.requests as f64,
            // A run without checks has no pass rate: NaN fails every comparison. `load`
            // rejects such a threshold before the run; this covers reports built elsewhere.
            "checks" => r.checks.as_ref().map_or(f64::NAN, |c| c.rate),
            _ => r.errors.total as f64,
        }
    }

    /// Checks the threshold against `report`.
    #[must_use]
    pub fn check(&self, report: &Report) -> Outcome {
        let actual = self.actual(report);
        let pass = match self.op {
            Op::Lt => actual < self.value,
            Op::Le => actual <= self.value,
            Op::Gt => actual > self.value,
            Op::Ge => actual >= self.value,
        };
        Outcome {
            expr: self.expr.clone(),
            actual,
            pass,
        }
    }
}

/// Parses a percentage like `10%` or a fraction like `0.1`.
///
/// # Errors
/// [`LoadError::Config`] naming the flag.
pub fn parse_fraction(flag: &str, s: &str) -> Result<f64, LoadError> {
    let s = s.trim();
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => s.parse::<f64>(),
    };
    v.ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| {
            LoadError::Config(format!(
                "{flag} `{s}`: expected a percentage such as 10% or a fraction such as 0.1"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_examples() {
        let t = Threshold::parse("p99<200ms").unwrap();
        assert_eq!((t.metric.as_str(), t.op, t.value), ("p99", Op::Lt, 200.0));
        let t = Threshold::parse("error_rate < 1%").unwrap();
        assert!((t.value - 0.01).abs() < 1e-12);
        let t = Threshold::parse("rps>=1000").unwrap();
        assert_eq!(t.op, Op::Ge);
        assert!((Threshold::parse("p99.9<1s").unwrap().value - 1000.0).abs() < 1e-9);
        assert!(Threshold::parse("p99=3").is_err());
        assert!(Threshold::parse("latency<3").is_err());
        assert!(Threshold::parse("p99<abc").is_err());
        assert!(Threshold::parse("p99<-5ms").is_err());
        assert!(Threshold::parse("error_rate<-1%").is_err());
        let t = Threshold::parse("checks > 99%").unwrap();
        assert_eq!((t.metric.as_str(), t.op), ("checks", Op::Gt));
        assert!((t.value - 0.99).abs() < 1e-12);
        assert!((Threshold::parse("checks>=0.5").unwrap().value - 0.5).abs() < 1e-12);
    }
}
