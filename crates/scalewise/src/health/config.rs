//! Health settings, deserialisable so a gateway config can embed them.
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// All health settings of one upstream.
///
/// ```
/// # use scalewise::health::HealthConfig;
/// let cfg: HealthConfig = serde_json::from_str(r#"{
///     "active": { "kind": "http", "path": "/healthz", "interval": "2s", "rise": 2, "fall": 3 },
///     "outlier": { "consecutive_5xx": 5, "base_ejection_time": "30s" },
///     "slow_start": { "window": "30s" },
///     "panic_threshold": 50
/// }"#).unwrap();
/// assert_eq!(cfg.active.unwrap().interval.as_secs(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Active checks; `None` disables them (endpoints are then healthy from the start).
    pub active: Option<ActiveCheckConfig>,
    /// Passive outlier detection; `None` disables it.
    pub outlier: Option<OutlierConfig>,
    /// Slow start; `None` sends a recovered backend its full share at once.
    pub slow_start: Option<SlowStartConfig>,
    /// Percentage (0–100) of available hosts below which the upstream enters panic mode and
    /// sends traffic to every non-drained host that has been checked at least once.
    /// 0 (the default) disables panic mode.
    pub panic_threshold: u8,
    /// With active checks: whether a new backend takes traffic before its first check
    /// passes. Default `false`.
    pub healthy_on_start: bool,
}

/// What an active check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// Connect over TCP; success = connected within the timeout.
    Tcp,
    /// `GET path` over HTTP/1.1; success = status in `expected_status` within the timeout.
    #[default]
    Http,
}

/// Active health checks.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActiveCheckConfig {
    /// `http` (default) or `tcp`.
    pub kind: CheckKind,
    /// Path requested by HTTP checks (default `/health`).
    pub path: String,
    /// `Host` header of HTTP checks (default: the name a TLS transport verifies, else the
    /// backend address).
    pub host: Option<String>,
    /// Status codes that count as healthy (default `200-399`).
    pub expected_status: StatusRange,
    /// Time between checks of one backend (default 5s).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Time a check may take (default 2s).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Passes in a row that make an unhealthy backend healthy (default 2).
    pub rise: u32,
    /// Failures in a row that make a healthy backend unhealthy (default 3).
    pub fall: u32,
}

impl Default for ActiveCheckConfig {
    fn default() -> Self {
        Self {
            kind: CheckKind::Http,
            path: "/health".into(),
            host: None,
            expected_status: StatusRange::default(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 3,
        }
    }
}

impl ActiveCheckConfig {
    /// A TCP-connect check with default timings.
    pub fn tcp() -> Self {
        Self {
            kind: CheckKind::Tcp,
            ..Self::default()
        }
    }

    /// An HTTP check of `path` with default timings.
    pub fn http(path: impl Into<String>) -> Self {
        Self {
            kind: CheckKind::Http,
            path: path.into(),
            ..Self::default()
        }
    }
}

/// An inclusive range of HTTP status codes: `"200"`, `"200-299"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    /// Lowest accepted status.
    pub min: u16,
    /// Highest accepted status.
    pub max: u16,
}

impl Default for StatusRange {
    fn default() -> Self {
        Self { min: 200, max: 399 }
    }
}

impl StatusRange {
    /// Whether `status` is in the range.
    pub fn contains(&self, status: u16) -> bool {
        (self.min..=self.max).contains(&status)
    }
}

/// A status range that is not `NNN` or `NNN-NNN` with 100 ≤ min ≤ max ≤ 599.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid status range {0:?}: expected a status like 200 or a range like 200-299")]
pub struct ParseStatusRangeError(String);

impl FromStr for StatusRange {
    type Err = ParseStatusRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseStatusRangeError(s.to_string());
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let min: u16 = a.trim().parse().map_err(|_| err())?;
        let max: u16 = b.trim().parse().map_err(|_| err())?;
        if !(100..=599).contains(&min) || !(min..=599).contains(&max) {
            return Err(err());
        }
        Ok(Self { min, max })
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u16),
            Str(String),
        }
        let s = match Raw::deserialize(d)? {
            Raw::Num(n) => n.to_string(),
            Raw::Str(s) => s,
        };
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for StatusRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Passive outlier detection (Envoy-style), fed by [`Selection::finish`](crate::balance::Selection::finish).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierConfig {
    /// Failures in a row (5xx, resets, timeouts, connect failures) that eject a host
    /// (default 5; 0 disables this trigger).
    pub consecutive_5xx: u32,
    /// Connect failures in a row that eject a host (default 3; 0 disables this trigger).
    pub consecutive_connect_failures: u32,
    /// Ejection time for a first ejection; the nth lasts `n × base` (default 30s).
    #[serde(with = "humantime_serde")]
    pub base_ejection_time: Duration,
    /// Cap on one ejection's length (default 300s).
    #[serde(with = "humantime_serde")]
    pub max_ejection_time: Duration,
    /// Most hosts (percent of the upstream) ejected at once (default 50). At least one host
    /// may always be ejected unless this is 0.
    pub max_ejection_percent: u8,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            consecutive_connect_failures: 3,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// Slow start: a backend's weight ramps linearly from `min_weight_percent` to 100% over
/// `window` after it becomes healthy (first passing check, recovery, or end of ejection).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlowStartConfig {
    /// Ramp duration (default 30s).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Starting share of the full weight in percent (default 10).
    pub min_weight_percent: u8,
}

impl Default for SlowStartConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(30),
            min_weight_percent: 10,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges() {
        assert_eq!(
            "200".parse::<StatusRange>().unwrap(),
            StatusRange { min: 200, max: 200 }
        );
        assert_eq!(
            "200-299".parse::<StatusRange>().unwrap().to_string(),
            "200-299"
        );
        for bad in ["", "99", "300-200", "200-700", "x"] {
            assert!(bad.parse::<StatusRange>().is_err(), "{bad}");
        }
    }
}
