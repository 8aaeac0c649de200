//! Rates and quotas, and their string forms (`"100/s"`, `"6000/min"`, `"10/100ms burst 20"`).
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// A rate or duration string that could not be parsed, or a rate of zero.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// The string is not `COUNT/PERIOD`.
    #[error(
        "invalid rate {0:?}: expected COUNT/PERIOD such as \"100/s\", \"6000/min\" or \"10/100ms\""
    )]
    Syntax(String),
    /// The count or the period is zero.
    #[error("invalid rate {0:?}: count and period must be greater than zero")]
    Zero(String),
    /// The duration string is not `NUMBER UNIT`.
    #[error("invalid duration {0:?}: expected a number and a unit (ns, us, ms, s, min, h, d), such as \"250ms\"")]
    Duration(String),
    /// The burst is zero or not a number.
    #[error("invalid burst {0:?}: expected a whole number greater than zero")]
    Burst(String),
}

/// `count` units per `period`.
///
/// ```
/// use scalewise::ratelimit::Rate;
/// use std::time::Duration;
///
/// let r: Rate = "10/100ms".parse().unwrap();
/// assert_eq!(r.count(), 10);
/// assert_eq!(r.period(), Duration::from_millis(100));
/// assert_eq!(r.interval_nanos(), 10_000_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    count: u64,
    period_nanos: u64,
}

impl Rate {
    /// `count` per `period`.
    ///
    /// # Errors
    /// [`RateError::Zero`] if either is zero (or the period rounds to zero nanoseconds).
    pub fn new(count: u64, period: Duration) -> Result<Self, RateError> {
        let period_nanos = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
        if count == 0 || period_nanos == 0 {
            return Err(RateError::Zero(format!("{count}/{period:?}")));
        }
        Ok(Self {
            count,
            period_nanos,
        })
    }

    /// `count` per second.
    ///
    /// # Panics
    /// If `count` is zero.
    pub fn per_second(count: u64) -> Self {
        assert!(count > 0, "a rate needs a count greater than zero");
        Self {
            count,
            period_nanos: 1_000_000_000,
        }
    }

    /// `count` per minute.
    ///
    /// # Panics
    /// If `count` is zero.
    pub fn per_minute(count: u64) -> Self {
        assert!(count > 0, "a rate needs a count greater than zero");
        Self {
            count,
            period_nanos: 60_000_000_000,
        }
    }

    /// Units per period.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The period.
    pub fn period(&self) -> Duration {
        Duration::from_nanos(self.period_nanos)
    }

    /// The period in nanoseconds.
    pub fn period_nanos(&self) -> u64 {
        self.period_nanos
    }

    /// Nanoseconds between two units at this rate, rounded *up*: rounding down would let the
    /// limiter admit slightly more than the configured rate.
    pub fn interval_nanos(&self) -> u64 {
        self.period_nanos.div_ceil(self.count).max(1)
    }

    /// This rate multiplied by `share` (for example 0.5 for half), at least 1 unit per period.
    pub fn scaled(&self, share: f64) -> Self {
        let share = if share.is_finite() {
            share.max(0.0)
        } else {
            1.0
        };
        let count = ((self.count as f64) * share).floor().max(1.0) as u64;
        Self {
            count,
            period_nanos: self.period_nanos,
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, format_duration(self.period()))
    }
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (count, period) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| RateError::Syntax(s.to_string()))?;
        let count: u64 = count
            .trim()
            .parse()
            .map_err(|_| RateError::Syntax(s.to_string()))?;
        let period = period.trim();
        // "100/s" has no number before the unit; "10/100ms" has one.
        let period = if period.starts_with(|c: char| c.is_ascii_digit()) {
            parse_duration(period).map_err(|_| RateError::Syntax(s.to_string()))?
        } else {
            unit_nanos(period)
                .map(Duration::from_nanos)
                .ok_or_else(|| RateError::Syntax(s.to_string()))?
        };
        Rate::new(count, period).map_err(|_| RateError::Zero(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A [`Rate`] plus a burst: how many units may be admitted at once after a quiet period.
///
/// The string form is the rate, optionally followed by `burst N`; without it the burst equals
/// the rate's count (a full period's worth).
///
/// ```
/// use scalewise::ratelimit::Quota;
///
/// let q: Quota = "100/s burst 20".parse().unwrap();
/// assert_eq!(q.rate.count(), 100);
/// assert_eq!(q.burst, 20);
/// assert_eq!("6000/min".parse::<Quota>().unwrap().burst, 6000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// The sustained rate.
    pub rate: Rate,
    /// Units admitted at once after a quiet period; at least 1.
    pub burst: u64,
}

impl Quota {
    /// `rate` with a burst of one period's worth.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            burst: rate.count,
        }
    }

    /// Replaces the burst (values below 1 become 1).
    pub fn with_burst(mut self, burst: u64) -> Self {
        self.burst = burst.max(1);
        self
    }

    /// `count` per second with a burst of `count`.
    ///
    /// # Panics
    /// If `count` is zero.
    pub fn per_second(count: u64) -> Self {
        Self::new(Rate::per_second(count))
    }
}

impl From<Rate> for Quota {
    fn from(rate: Rate) -> Self {
        Self::new(rate)
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} burst {}", self.rate, self.burst)
    }
}

impl FromStr for Quota {
    type Err = RateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once("burst") {
            None => Ok(Quota::new(s.parse()?)),
            Some((rate, burst)) => {
                let rate: Rate = rate.trim().trim_end_matches(',').parse()?;
                let burst = burst.trim().trim_start_matches(['=', ':']).trim();
                match burst.parse::<u64>() {
                    Ok(b) if b > 0 => Ok(Quota::new(rate).with_burst(b)),
                    _ => Err(RateError::Burst(burst.to_string())),
                }
            }
        }
    }
}

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" | "nanos" => 1,
        "us" | "µs" | "micros" => 1_000,
        "ms" | "millis" => 1_000_000,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000_000_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000_000_000,
        "h" | "hr" | "hour" | "hours" => 3_600_000_000_000,
        "d" | "day" | "days" => 86_400_000_000_000,
        _ => return None,
    })
}

/// Parses `"250ms"`, `"2s"`, `"1min"`, `"1.5s"` (a number followed by a unit).
///
/// # Errors
/// [`RateError::Duration`] if the string is not a non-negative number with a known unit.
pub fn parse_duration(s: &str) -> Result<Duration, RateError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| RateError::Duration(s.to_string()))?;
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| RateError::Duration(s.to_string()))?;
    let unit = unit_nanos(unit.trim()).ok_or_else(|| RateError::Duration(s.to_string()))?;
    let nanos = num * unit as f64;
    if !nanos.is_finite() || nanos < 0.0 || nanos > u64::MAX as f64 {
        return Err(RateError::Duration(s.to_string()));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

fn format_duration(d: Duration) -> String {
    let n = d.as_nanos();
    for (unit, size) in [
        ("d", 86_400_000_000_000u128),
        ("h", 3_600_000_000_000),
        ("min", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if n % size == 0 {
            return if n == size {
                unit.to_string()
            } else {
                format!("{}{unit}", n / size)
            };
        }
    }
    format!("{n}ns")
}

/// Serde helper for optional durations written as `"250ms"` (or a number of milliseconds).
pub(crate) mod serde_duration {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Millis(u64),
    }

    pub fn deserialize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<Repr>::deserialize(d)? {
            None => Ok(None),
            Some(Repr::Millis(ms)) => Ok(Some(Duration::from_millis(ms))),
            Some(Repr::Text(s)) => parse_duration(&s).map(Some).map_err(de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        let r: Rate = "100/s".parse().unwrap();
        assert_eq!((r.count(), r.period()), (100, Duration::from_secs(1)));
        let r: Rate = "6000/min".parse().unwrap();
        assert_eq!(r.period(), Duration::from_secs(60));
        let r: Rate = " 10 / 100ms ".parse().unwrap();
        assert_eq!(r.period(), Duration::from_millis(100));
        assert_eq!(r.to_string(), "10/100ms");
        assert_eq!("5/2h".parse::<Rate>().unwrap().to_string(), "5/2h");
        for bad in [
            "",
            "100",
            "x/s",
            "100/parsec",
            "0/s",
            "10/0ms",
            "-1/s",
            "1/",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn parses_quotas_and_durations() {
        let q: Quota = "100/s burst=5".parse().unwrap();
        assert_eq!(q.burst, 5);
        assert!("100/s burst 0".parse::<Quota>().is_err());
        assert!("100/s burst lots".parse::<Quota>().is_err());
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("1e400s").is_err());
    }

    #[test]
    fn interval_rounds_up() {
        let r = Rate::new(3, Duration::from_nanos(10)).unwrap();
        assert_eq!(r.interval_nanos(), 4);
        assert_eq!(Rate::per_second(10).scaled(0.5).count(), 5);
        assert_eq!(Rate::per_second(1).scaled(0.1).count(), 1);
    }
}
