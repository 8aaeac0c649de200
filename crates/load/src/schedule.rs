//! Load shapes and the open-model timetable.
//!
//! A [`Shape`] maps elapsed time to a target value: requests per second in the open model
//! (`--rate`), active virtual users in the closed model. The open model hands out *tickets*: the
//! n-th request is scheduled at the instant where the integral of the rate reaches n. A request's
//! latency is measured from that scheduled instant, so a stalled server cannot hide its stall by
//! slowing the generator down (coordinated omission, as described by Gil Tene and done by wrk2).

use std::sync::Mutex;
use std::time::Duration;

use crate::LoadError;

/// One stage of `--stages`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// How long the stage lasts.
    pub duration: Duration,
    /// Target value (rate or users) of the stage.
    pub target: f64,
    /// Ramp linearly from the previous stage's target (`~` prefix) instead of holding.
    pub ramp: bool,
}

/// How the target value evolves over the run.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// The target value throughout.
    Constant,
    /// Linear from `from` to the target over the run.
    Ramp {
        /// Starting value.
        from: f64,
    },
    /// `steps` equal steps up to the target.
    Step {
        /// Number of steps (≥ 1).
        steps: u32,
    },
    /// The target, multiplied by `factor` between 40 % and 60 % of the run.
    Spike {
        /// Multiplier during the spike.
        factor: f64,
    },
    /// Sine wave around the target with ±50 % amplitude.
    Wave {
        /// Period of the wave.
        period: Duration,
    },
    /// Arbitrary stages (`--stages "10s:100,30s:~500"`).
    Stages(Vec<Stage>),
}

impl Shape {
    /// Parses `--shape` (`constant`, `ramp[:FROM]`, `step[:N]`, `spike[:FACTOR]`,
    /// `wave[:PERIOD]`).
    ///
    /// # Errors
    /// [`LoadError::Config`] naming the bad part.
    pub fn parse(spec: &str) -> Result<Shape, LoadError> {
        let (name, arg) = match spec.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (spec.trim(), None),
        };
        let num = |a: &str| -> Result<f64, LoadError> {
            a.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| {
                    LoadError::Config(format!(
                        "--shape {spec}: `{a}` is not a non-negative number"
                    ))
                })
        };
        match (name, arg) {
            ("constant", None) => Ok(Shape::Constant),
            ("ramp", a) => Ok(Shape::Ramp { from: a.map(num).transpose()?.unwrap_or(0.0) }),
            ("step", a) => {
                let steps = a.map(num).transpose()?.unwrap_or(4.0);
                if steps < 1.0 || steps.fract() != 0.0 || steps > 10_000.0 {
                    return Err(LoadError::Config(format!("--shape {spec}: step count must be a whole number 1..=10000")));
                }
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(Shape::Step { steps: steps as u32 })
            }
            ("spike", a) => Ok(Shape::Spike { factor: a.map(num).transpose()?.unwrap_or(5.0) }),
            ("wave", a) => {
                let period = match a {
                    Some(p) => parse_duration(p).map_err(|e| LoadError::Config(format!("--shape {spec}: {e}")))?,
                    None => Duration::from_secs(10),
                };
                if period.is_zero() {
                    return Err(LoadError::Config(format!("--shape {spec}: period must be > 0")));
                }
                Ok(Shape::Wave { period })
            }
            _ => Err(LoadError::Config(format!(
                "--shape {spec}: expected constant, ramp[:FROM], step[:N], spike[:FACTOR] or wave[:PERIOD]"
            ))),
        }
    }

    /// Parses `--stages "DURATION:TARGET,..."`; a `~` before the target ramps to it.
    ///
    /// # Errors
    /// [`LoadError::Config`] naming the bad stage.
    pub fn parse_stages(spec: &str) -> Result<Shape, LoadError> {
        let mut stages = Vec::new();
        for (i, part) in spec
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            let bad =
                |why: &str| LoadError::Config(format!("--stages: stage {} `{part}`: {why}", i + 1));
            let (d, t) = part
                .split_once(':')
                .ok_or_else(|| bad("expected DURATION:TARGET, e.g. 10s:100"))?;
            let duration = parse_duration(d.trim()).map_err(|e| bad(&e))?;
            let t = t.trim();
            let (ramp, t) = match t.strip_prefix('~') {
                Some(rest) => (true, rest),
                None => (false, t),
            };
            let target = t
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| bad("target must be a non-negative number"))?;
            stages.push(Stage {
                duration,
                target,
                ramp,
            });
        }
        if stages.is_empty() {
            return Err(LoadError::Config("--stages: no stages given".into()));
        }
        Ok(Shape::Stages(stages))
    }

    /// Total duration implied by the shape (stages only).
    #[must_use]
    pub fn implied_duration(&self) -> Option<Duration> {
        match self {
            Shape::Stages(s) => Some(s.iter().map(|s| s.duration).sum()),
            _ => None,
        }
    }

    /// The target value at elapsed time `t` of a run lasting `total`, for base target `target`.
    #[must_use]
    pub fn value(&self, t: f64, total: f64, target: f64) -> f64 {
        let frac = if total > 0.0 {
            (t / total).clamp(0.0, 1.0)
        } else {
            1.0
        };
        match self {
            Shape::Constant => target,
            Shape::Ramp { from } => from + (target - from) * frac,
            Shape::Step { steps } => {
                let n = f64::from(*steps);
                target * ((frac * n).floor() + 1.0).min(n) / n
            }
            Shape::Spike { factor } => {
                if (0.4..0.6).contains(&frac) {
                    target * factor
                } else {
                    target
                }
            }
            Shape::Wave { period } => {
                target * (1.0 + 0.5 * (std::f64::consts::TAU * t / period.as_secs_f64()).sin())
            }
            Shape::Stages(stages) => {
                let mut start = 0.0;
                let mut prev = 0.0;
                for s in stages {
                    let d = s.duration.as_secs_f64();
                    if t < start + d {
                        return if s.ramp && d > 0.0 {
                            prev + (s.target - prev) * (t - start) / d
                        } else {
                            s.target
                        };
                    }
                    start += d;
                    prev = s.target;
                }
                prev
            }
        }
    }

    /// The largest value the shape reaches (sizes the pool of virtual users).
    #[must_use]
    pub fn max_value(&self, total: f64, target: f64) -> f64 {
        match self {
            Shape::Stages(s) => s.iter().map(|s| s.target).fold(0.0, f64::max),
            Shape::Spike { factor } => target * factor.max(1.0),
            Shape::Wave { .. } => target * 1.5,
            Shape::Ramp { from } => from.max(target),
            _ => (0..=1000)
                .map(|i| self.value(total * f64::from(i) / 1000.0, total, target))
                .fold(0.0, f64::max),
        }
    }

    /// A short human description.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Shape::Constant => "constant".into(),
            Shape::Ramp { from } => format!("ramp from {from}"),
            Shape::Step { steps } => format!("{steps} steps"),
            Shape::Spike { factor } => format!("spike ×{factor}"),
            Shape::Wave { period } => {
                format!("wave, period {}", humantime::format_duration(*period))
            }
            Shape::Stages(s) => format!("{} stages", s.len()),
        }
    }
}

/// Parses a duration such as `10s`, `250ms`, `1m30s`; a bare number means seconds.
///
/// # Errors
/// A message describing the expected format.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is too long"));
        }
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration (e.g. 10s, 250ms, 1m): {e}"))
}

/// Open-model timetable. Hands out scheduled offsets (seconds since start) in order.
///
/// ```
/// use std::time::Duration;
/// use scalewise_load::schedule::{Shape, Timetable};
/// // 100 req/s for 2 s: exactly 200 slots, 10 ms apart.
/// let tt = Timetable::new(Shape::Constant, 100.0, Duration::from_secs(2));
/// assert_eq!(tt.next(), Some(0.0));
/// assert_eq!(tt.next(), Some(0.01));
/// assert_eq!(std::iter::from_fn(|| tt.next()).count(), 198);
/// ```
#[derive(Debug)]
pub struct Timetable {
    shape: Shape,
    rate: f64,
    total: f64,
    state: Mutex<(u64, f64)>,
}

/// Integration step for non-constant shapes: fine enough that the rate curve is followed to
/// within a millisecond, coarse enough to be cheap.
const STEP: f64 = 0.001;

impl Timetable {
    /// A timetable for `rate` requests/s shaped by `shape` over `total`.
    #[must_use]
    pub fn new(shape: Shape, rate: f64, total: Duration) -> Self {
        Timetable {
            shape,
            rate,
            total: total.as_secs_f64(),
            state: Mutex::new((0, 0.0)),
        }
    }

    /// The next scheduled offset, or `None` once the timetable passes the end of the run.
    pub fn next(&self) -> Option<f64> {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (index, last) = *st;
        let t = if self.shape == Shape::Constant {
            // Index-based so rounding never accumulates: request i at exactly i / rate.
            #[allow(clippy::cast_precision_loss)]
            let t = index as f64 / self.rate;
            t
        } else if index == 0 {
            self.first()?
        } else {
            self.after(last)?
        };
        if t >= self.total {
            return None;
        }
        *st = (index + 1, t);
        Some(t)
    }

    /// How many tickets not handed out yet fall due at or before `due` (seconds since start):
    /// the requests the run missed when it ends at `due`. Computed, not counted ticket by
    /// ticket: at `--rate 1e12` that would be 10¹² calls of [`next`](Self::next) after the run.
    ///
    /// ```
    /// use std::time::Duration;
    /// use scalewise_load::schedule::{Shape, Timetable};
    /// let tt = Timetable::new(Shape::Constant, 1e12, Duration::from_secs(5));
    /// tt.next();
    /// assert_eq!(tt.remaining_until(1.0), 1_000_000_000_000);
    /// ```
    #[must_use]
    pub fn remaining_until(&self, due: f64) -> u64 {
        let (index, last) = *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // No ticket lies at or after the end of the run (see `next`).
        let end = due.min(self.total);
        if end < 0.0 {
            return 0;
        }
        if self.shape == Shape::Constant {
            // Tickets i with i / rate ≤ due and i / rate < total.
            let by_due = (due * self.rate).floor() + 1.0;
            let by_total = (self.total * self.rate).ceil();
            let n = by_due.min(by_total);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            return (n.max(0.0) as u64).saturating_sub(index);
        }
        // Shaped: one ticket per unit of the rate's integral after the last ticket handed out
        // (or after the first, which goes out as soon as the rate is positive), as `after`
        // integrates it; O(duration / STEP), not O(tickets).
        let (from, extra) = if index == 0 {
            match self.first() {
                Some(t) if t <= end => (t, 1.0),
                _ => return 0,
            }
        } else {
            (last, 0.0)
        };
        let mut credit = 0.0;
        let mut t = from;
        while t < end {
            let step = STEP.min(end - t);
            credit += self.shape.value(t, self.total, self.rate).max(0.0) * step;
            t += STEP;
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = (credit.floor() + extra) as u64;
        n
    }

    fn first(&self) -> Option<f64> {
        // The first request goes out as soon as the rate is positive.
        let mut t = 0.0;
        while t < self.total {
            if self.shape.value(t, self.total, self.rate) > 0.0 {
                return Some(t);
            }
            t += STEP;
        }
        None
    }

    /// The smallest t' > t where ∫ₜᵗ' rate = 1.
    fn after(&self, t: f64) -> Option<f64> {
        let mut t = t;
        let mut credit = 0.0;
        while t < self.total {
            let r = self.shape.value(t, self.total, self.rate).max(0.0);
            if r > 0.0 && credit + r * STEP >= 1.0 {
                return Some(t + (1.0 - credit) / r);
            }
            credit += r * STEP;
            t += STEP;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_timetable_has_rate_times_duration_tickets() {
        let tt = Timetable::new(Shape::Constant, 100.0, Duration::from_secs(2));
        let mut n = 0;
        while tt.next().is_some() {
            n += 1;
        }
        assert_eq!(n, 200);
    }

    #[test]
    fn remaining_tickets_are_computed_not_counted() {
        // Constant: the same count as handing the tickets out one by one.
        let tt = Timetable::new(Shape::Constant, 100.0, Duration::from_secs(2));
        for _ in 0..10 {
            tt.next();
        }
        assert_eq!(tt.remaining_until(1.0), 91); // tickets 10..=100 (t = 0.10 ..= 1.00)
        assert_eq!(tt.remaining_until(5.0), 190); // capped at the end of the run
                                                  // Shaped: within one ticket of counting them.
        let ramp = || Timetable::new(Shape::Ramp { from: 0.0 }, 200.0, Duration::from_secs(2));
        let (a, b) = (ramp(), ramp());
        let computed = a.remaining_until(1.5);
        let counted = std::iter::from_fn(|| b.next())
            .take_while(|t| *t <= 1.5)
            .count() as u64;
        assert!(computed.abs_diff(counted) <= 1, "{computed} vs {counted}");
        // A rate no run could keep up with still answers at once.
        let huge = Timetable::new(Shape::Ramp { from: 0.0 }, 1e12, Duration::from_secs(5));
        assert!(huge.remaining_until(5.0) > 2_000_000_000_000);
    }

    #[test]
    fn ramp_timetable_integrates_the_rate() {
        // Ramp 0 → 200 rps over 2 s: ∫ = 200 requests.
        let tt = Timetable::new(Shape::Ramp { from: 0.0 }, 200.0, Duration::from_secs(2));
        let mut n = 0;
        while tt.next().is_some() {
            n += 1;
        }
        assert!((195..=201).contains(&n), "{n}");
    }

    #[test]
    fn stages_parse_and_evaluate() {
        let s = Shape::parse_stages("1s:100, 1s:~300").unwrap();
        assert_eq!(s.implied_duration(), Some(Duration::from_secs(2)));
        assert!((s.value(0.5, 2.0, 0.0) - 100.0).abs() < 1e-9);
        assert!((s.value(1.5, 2.0, 0.0) - 200.0).abs() < 1e-9);
        assert!(Shape::parse_stages("10s").is_err());
        assert!(Shape::parse_stages("xs:10").is_err());
    }

    #[test]
    fn durations_parse_without_panicking() {
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("1e300").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn shapes_parse() {
        assert_eq!(Shape::parse("ramp:10").unwrap(), Shape::Ramp { from: 10.0 });
        assert_eq!(Shape::parse("step:3").unwrap(), Shape::Step { steps: 3 });
        assert!(Shape::parse("zigzag").is_err());
        let step = Shape::Step { steps: 4 };
        assert!((step.value(0.0, 4.0, 100.0) - 25.0).abs() < 1e-9);
        assert!((step.value(3.9, 4.0, 100.0) - 100.0).abs() < 1e-9);
        let spike = Shape::Spike { factor: 3.0 };
        assert!((spike.value(5.0, 10.0, 10.0) - 30.0).abs() < 1e-9);
    }
}
