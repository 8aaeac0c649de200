//! `scalewise bench`: a suite of load phases run against one target, with pass/fail criteria.
//!
//! Phases: response time at the baseline concurrency, latency vs concurrent users (1, 10, 100,
//! …), throughput (best level), connection capacity (connections opened and held, ramped until
//! failures), connection stability over time, burst (a 10× spike), sustained open-model load at
//! 70 % of the measured throughput, the scalability limit (concurrency doubled until the error
//! rate or the p99 objective breaks; the knee is where throughput stops growing), and — given
//! `--pid` — the target's memory and CPU read from /proc.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::html::{bar_chart, esc, line_chart, STYLE};
use crate::report::{compare, deltas_text, ms, Delta, Report};
use crate::schedule::parse_duration;
use crate::threshold::parse_fraction;
use crate::{BenchArgs, LoadArgs, LoadError};

/// JSON schema identifier of [`BenchReport`].
pub const SCHEMA: &str = "scalewise-bench/1";

/// Summary of one load run inside the suite.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Level {
    /// Concurrent connections / users.
    pub users: usize,
    /// Finished requests.
    pub requests: u64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Error rate (0–1).
    pub error_rate: f64,
}

impl Level {
    fn from(users: usize, r: &Report) -> Self {
        Level {
            users,
            requests: r.requests,
            rps: r.rps,
            p50_ms: r.p50_ms,
            p99_ms: r.p99_ms,
            error_rate: r.error_rate,
        }
    }
}

/// The knee of a concurrency ramp: the fewest users that already get ≥ 90 % of the best
/// throughput seen, provided more users were tried after it (otherwise throughput was still
/// growing when the ramp stopped and there is no knee yet). Comparing with the peak rather than
/// with the next level keeps one noisy dip early in the ramp from being reported as the knee.
fn knee(levels: &[Level]) -> Option<usize> {
    let peak = levels.iter().map(|l| l.rps).fold(0.0, f64::max);
    let i = levels.iter().position(|l| l.rps >= 0.9 * peak)?;
    (i + 1 < levels.len()).then(|| levels[i].users)
}

/// Connection capacity phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Capacity {
    /// Largest number of connections opened, served and held at once without failures.
    pub max_held: usize,
    /// Levels tried: (connections attempted, connections that got a response).
    pub levels: Vec<(usize, u64)>,
    /// Target RSS growth per held connection, KiB (with `--pid`).
    pub target_kib_per_connection: Option<f64>,
}

/// Connection stability phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stability {
    /// The run.
    pub level: Level,
    /// Coefficient of variation of the per-second throughput (stdev / mean); null when the phase
    /// was shorter than two whole seconds (`--quick`).
    pub rps_cv: Option<f64>,
    /// Seconds with at least one error.
    pub seconds_with_errors: usize,
}

/// Sustained open-model phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sustained {
    /// Target rate.
    pub target_rps: f64,
    /// Achieved rate.
    pub achieved_rps: f64,
    /// Corrected p99.
    pub p99_ms: f64,
    /// Uncorrected p99.
    pub uncorrected_p99_ms: f64,
    /// Late starts.
    pub late: u64,
    /// Error rate.
    pub error_rate: f64,
}

/// Scalability phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Scalability {
    /// Levels tried in order.
    pub levels: Vec<Level>,
    /// Highest concurrency that met the objectives (None if even the first failed).
    pub limit_users: Option<usize>,
    /// Why the ramp stopped.
    pub stopped_because: String,
    /// The knee: the fewest users that already got ≥ 90 % of the best throughput of the ramp
    /// (`None` while throughput still grew at the last level).
    pub knee_users: Option<usize>,
}

/// Target process resources (`--pid`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Resources {
    /// PID.
    pub pid: u32,
    /// VmRSS before the suite, KiB.
    pub rss_before_kib: u64,
    /// Highest VmRSS sampled between phases, KiB.
    pub rss_peak_kib: u64,
    /// VmHWM at the end, KiB.
    pub rss_hwm_kib: u64,
    /// CPU seconds (user + system) used during the latency/throughput phase.
    pub cpu_s: f64,
    /// CPU milliseconds per 1,000 requests during that phase.
    pub cpu_ms_per_1k_requests: f64,
}

/// A success criterion and its outcome.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Criterion {
    /// Name.
    pub name: String,
    /// The requirement, human readable.
    pub expected: String,
    /// The measured value.
    pub actual: f64,
    /// Whether it held.
    pub pass: bool,
}

/// Results of `scalewise bench` (JSON schema `scalewise-bench/1`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BenchReport {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Target URL.
    pub target: String,
    /// Short phases were used.
    pub quick: bool,
    /// Best throughput (req/s) over the latency-vs-users levels (top level for baselines).
    pub rps: f64,
    /// Response time at the baseline concurrency: median.
    pub p50_ms: f64,
    /// … 90th percentile.
    pub p90_ms: f64,
    /// … 99th percentile.
    pub p99_ms: f64,
    /// … 99.9th percentile.
    pub p999_ms: f64,
    /// Error rate over all phases except capacity.
    pub error_rate: f64,
    /// Response time phase.
    pub response_time: Level,
    /// Latency vs concurrent users.
    pub latency_vs_users: Vec<Level>,
    /// Throughput: the best level.
    pub throughput: Level,
    /// Connection capacity.
    pub connection_capacity: Capacity,
    /// Stability over time.
    pub stability: Stability,
    /// Burst (spike to 10×).
    pub burst: Level,
    /// Sustained open-model load.
    pub sustained: Sustained,
    /// Scalability limit.
    pub scalability: Scalability,
    /// Target resources (with `--pid`).
    pub resources: Option<Resources>,
    /// Success criteria.
    pub criteria: Vec<Criterion>,
    /// All criteria passed (and no baseline regression).
    pub pass: bool,
    /// Baseline comparison.
    pub baseline: Vec<Delta>,
}

struct Ctx {
    url: String,
    timeout: String,
    insecure: bool,
    cacert: Option<std::path::PathBuf>,
    quiet: bool,
    pid: Option<u32>,
    rss_peak: u64,
}

impl Ctx {
    fn args(&self, users: usize, dur: Duration) -> LoadArgs {
        let mut a = LoadArgs::new(self.url.clone());
        a.connections = users.max(1);
        a.duration = Some(format!("{}ms", dur.as_millis().max(1)));
        a.timeout.clone_from(&self.timeout);
        a.insecure = self.insecure;
        a.cacert.clone_from(&self.cacert);
        a
    }

    fn say(&self, msg: &str) {
        if !self.quiet {
            eprintln!("bench: {msg}");
        }
    }

    fn sample_rss(&mut self) {
        if let Some(pid) = self.pid {
            self.rss_peak = self.rss_peak.max(family_kib(pid, "VmRSS:"));
        }
    }

    async fn run(&mut self, a: &LoadArgs) -> Result<Report, LoadError> {
        let r = crate::load(a).await?;
        self.sample_rss();
        if r.interrupted {
            return Err(LoadError::Interrupted);
        }
        Ok(r)
    }
}

/// `pid` and its descendants (a pre-forking server such as nginx does its work in children),
/// from /proc/PID/task/*/children; bounded to 1024 processes.
fn family(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() && out.len() < 1024 {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let children =
                    std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                out.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    out.truncate(1024);
    out
}

/// Sum of a /proc/PID/status `kB` field over `pid` and its descendants.
fn family_kib(pid: u32, field: &str) -> u64 {
    family(pid)
        .iter()
        .map(|p| crate::report::proc_status_kib(&p.to_string(), field))
        .sum()
}

/// CPU seconds (utime + stime) of one process from /proc/PID/stat, assuming the usual 100 Hz
/// clock tick.
fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields after the closing parenthesis are fixed.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// CPU seconds of `pid` and its descendants.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let own = process_cpu_seconds(pid)?;
    Some(
        own + family(pid)
            .iter()
            .skip(1)
            .filter_map(|p| process_cpu_seconds(*p))
            .sum::<f64>(),
    )
}

/// Runs the suite; returns the exit code (0 pass, 1 fail, 2 never: errors are `Err`).
///
/// # Errors
/// Bad arguments or an unreachable target.
pub async fn run(args: BenchArgs) -> Result<i32, LoadError> {
    crate::check_output(args.json.as_deref(), "--json")?;
    crate::check_output(args.html.as_deref(), "--html")?;
    let report = suite(&args).await?;
    if !args.quiet {
        print!("{}", text(&report));
    }
    if let Some(p) = &args.json {
        let s = serde_json::to_string_pretty(&report).map_err(|e| LoadError::Io(e.to_string()))?;
        std::fs::write(p, s)
            .map_err(|e| LoadError::Io(format!("writing --json {}: {e}", p.display())))?;
    }
    if let Some(p) = &args.html {
        std::fs::write(p, html(&report))
            .map_err(|e| LoadError::Io(format!("writing --html {}: {e}", p.display())))?;
    }
    Ok(i32::from(!report.pass))
}

/// Runs every phase and evaluates the criteria.
///
/// # Errors
/// Bad arguments or an unreachable target.
pub async fn suite(args: &BenchArgs) -> Result<BenchReport, LoadError> {
    let min_success = parse_fraction("--min-success-rate", &args.min_success_rate)?;
    let max_degradation = parse_fraction("--max-degradation", &args.max_degradation)?;
    let max_regression = parse_fraction("--max-regression", &args.max_regression)?;
    let objective_ms = parse_duration(&args.latency_objective)
        .map_err(|e| LoadError::Config(format!("--latency-objective: {e}")))?
        .as_secs_f64()
        * 1000.0;
    let baseline = match &args.baseline {
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .map_err(|e| LoadError::Io(format!("--baseline {}: {e}", p.display())))?;
            let v = serde_json::from_str::<serde_json::Value>(&t)
                .map_err(|e| LoadError::Io(format!("--baseline {}: {e}", p.display())))?;
            // Before the suite, not after its minutes of load.
            compare(&v, &v, max_regression)
                .map_err(|e| LoadError::Config(format!("--baseline {}: {e}", p.display())))?;
            Some(v)
        }
        None => None,
    };
    // Options that can only produce a meaningless report are refused up front.
    if min_success > 1.0 {
        return Err(LoadError::Config(format!(
            "--min-success-rate `{}`: at most 100%",
            args.min_success_rate
        )));
    }
    if args.base_concurrency == 0 {
        return Err(LoadError::Config(
            "--base-concurrency must be at least 1".into(),
        ));
    }
    if objective_ms <= 0.0 {
        return Err(LoadError::Config("--latency-objective must be > 0".into()));
    }
    if args.max_connections == Some(0) {
        return Err(LoadError::Config(
            "--max-connections must be at least 1".into(),
        ));
    }
    match url::Url::parse(&args.url).map(|u| u.scheme().to_string()) {
        Ok(s) if s == "ws" || s == "wss" => {
            return Err(LoadError::BadUrl(format!(
                "{}: bench measures HTTP(S) targets; use `scalewise load {}` for WebSocket load",
                args.url, args.url
            )))
        }
        _ => {}
    }
    if let Some(pid) = args.pid {
        if !std::path::Path::new(&format!("/proc/{pid}/stat")).exists() {
            return Err(LoadError::Config(format!(
                "--pid {pid}: no such process (its memory and CPU are read from /proc/{pid})"
            )));
        }
    }
    let base = args.base_concurrency.max(1);
    let q = args.quick;
    let secs = |quick_ms: u64, full_s: u64| {
        if q {
            Duration::from_millis(quick_ms)
        } else {
            Duration::from_secs(full_s)
        }
    };
    let max_conn = args.max_connections.unwrap_or(if q { 200 } else { 10_000 });
    let mut ctx = Ctx {
        url: args.url.clone(),
        timeout: args.timeout.clone(),
        insecure: args.insecure,
        cacert: args.cacert.clone(),
        quiet: args.quiet || args.no_progress,
        pid: args.pid,
        rss_peak: 0,
    };
    let rss_before = args.pid.map(|p| family_kib(p, "VmRSS:"));
    ctx.sample_rss();
    let mut all_requests = 0u64;
    let mut all_errors = 0u64;
    let mut tally = |r: &Report| {
        all_requests += r.requests;
        all_errors += r.errors.total;
    };

    ctx.say(&format!("response time at {base} user(s)"));
    let rt = ctx.run(&ctx.args(base, secs(200, 5))).await?;
    tally(&rt);
    let rt10 = ctx.run(&ctx.args(base * 10, secs(200, 5))).await?;
    tally(&rt10);

    ctx.say("latency vs concurrent users");
    let cpu0 = args.pid.and_then(cpu_seconds);
    let user_levels: Vec<usize> = if q {
        vec![1, 10, 50]
    } else {
        vec![1, 10, 100, 1000]
    };
    let mut lvu = Vec::new();
    let mut lvu_requests = 0;
    for u in user_levels.into_iter().filter(|u| *u <= max_conn.max(1)) {
        let r = ctx.run(&ctx.args(u, secs(200, 5))).await?;
        tally(&r);
        lvu_requests += r.requests;
        lvu.push(Level::from(u, &r));
    }
    let cpu1 = args.pid.and_then(cpu_seconds);
    let throughput = lvu
        .iter()
        .max_by(|a, b| a.rps.total_cmp(&b.rps))
        .cloned()
        .unwrap_or_else(|| Level::from(base, &rt));

    ctx.say("connection capacity");
    let mut cap_levels = Vec::new();
    let mut max_held = 0usize;
    let mut target_kib_per_connection = None;
    let mut c = (if q { 50 } else { 100 }).min(max_conn);
    while c <= max_conn {
        let mut a = ctx.args(c, secs(300, 3));
        a.timeout = "5s".into();
        let mut plan = crate::plan(&a).await?;
        plan.hold = true;
        plan.probe = false;
        let rss0 = args.pid.map(|p| family_kib(p, "VmRSS:"));
        let r = crate::runner::execute(plan, &crate::Stop::new()).await?;
        ctx.sample_rss();
        if r.interrupted {
            return Err(LoadError::Interrupted);
        }
        let held = r.requests - r.errors.total;
        cap_levels.push((c, held));
        if held as usize >= c {
            max_held = c;
            if let (Some(p), Some(r0)) = (args.pid, rss0) {
                // Sampled right after the hold ended; connections may already be closing, so
                // this is a lower bound.
                let r1 = ctx.rss_peak.max(family_kib(p, "VmRSS:"));
                if r1 > r0 {
                    target_kib_per_connection = Some((r1 - r0) as f64 / c as f64);
                }
            }
        } else {
            break;
        }
        if c == max_conn {
            break;
        }
        c = (c * if q { 4 } else { 2 }).min(max_conn);
    }

    ctx.say("stability over time");
    let st = ctx.run(&ctx.args(10.min(max_conn), secs(500, 30))).await?;
    tally(&st);
    // Whole seconds only: the last timeline entry is the partial remainder of the run.
    let full: Vec<f64> = st.timeline[..st.timeline.len().saturating_sub(1)]
        .iter()
        .map(|s| s.rps)
        .collect();
    let mean = full.iter().sum::<f64>() / full.len().max(1) as f64;
    let var = full.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / full.len().max(1) as f64;
    let stability = Stability {
        level: Level::from(10.min(max_conn), &st),
        rps_cv: (full.len() >= 2 && mean > 0.0).then(|| var.sqrt() / mean),
        seconds_with_errors: st.timeline.iter().filter(|s| s.errors > 0).count(),
    };

    ctx.say("burst");
    let mut ba = ctx.args(base * 10, secs(500, 10));
    ba.shape = "spike:10".into();
    let burst_r = ctx.run(&ba).await?;
    tally(&burst_r);
    let burst = Level::from(base * 100, &burst_r);

    ctx.say("sustained load");
    let target_rps = (throughput.rps * 0.7).max(1.0);
    let mut sa = ctx.args(throughput.users.max(4), secs(500, 30));
    sa.rate = Some(target_rps);
    let su = ctx.run(&sa).await?;
    tally(&su);
    let sustained = Sustained {
        target_rps,
        achieved_rps: su.rps,
        p99_ms: su.p99_ms,
        uncorrected_p99_ms: su.uncorrected.p99_ms,
        late: su.late,
        error_rate: su.error_rate,
    };

    ctx.say("scalability limit");
    let max_err = 1.0 - min_success;
    let mut levels = Vec::new();
    let mut limit_users = None;
    let mut stopped_because = format!("reached --max-connections {max_conn}");
    let mut u = base;
    let top = if q {
        64.min(max_conn)
    } else {
        max_conn.min(4096)
    };
    while u <= top {
        let r = ctx.run(&ctx.args(u, secs(200, 3))).await?;
        tally(&r);
        let l = Level::from(u, &r);
        let bad = if l.error_rate > max_err {
            Some(format!(
                "error rate {:.1}% at {u} users",
                l.error_rate * 100.0
            ))
        } else if l.p99_ms > objective_ms {
            Some(format!(
                "p99 {} > {} at {u} users",
                ms(l.p99_ms),
                ms(objective_ms)
            ))
        } else {
            None
        };
        levels.push(l);
        if let Some(why) = bad {
            stopped_because = why;
            break;
        }
        limit_users = Some(u);
        u *= 2;
    }
    let knee_users = knee(&levels);
    let scalability = Scalability {
        levels,
        limit_users,
        stopped_because,
        knee_users,
    };

    let resources = args.pid.map(|pid| {
        let cpu_s = match (cpu0, cpu1) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        };
        Resources {
            pid,
            rss_before_kib: rss_before.unwrap_or(0),
            rss_peak_kib: ctx.rss_peak,
            rss_hwm_kib: family_kib(pid, "VmHWM:"),
            cpu_s,
            cpu_ms_per_1k_requests: if lvu_requests > 0 {
                cpu_s * 1000.0 / (lvu_requests as f64 / 1000.0)
            } else {
                0.0
            },
        }
    });

    let success = if all_requests == 0 {
        0.0
    } else {
        1.0 - all_errors as f64 / all_requests as f64
    };
    let degradation = if rt.p50_ms > 0.0 {
        rt10.p50_ms / rt.p50_ms - 1.0
    } else {
        0.0
    };
    let mut criteria = vec![
        Criterion {
            name: "success_rate".into(),
            expected: format!("> {:.1}%", min_success * 100.0),
            actual: success,
            pass: success > min_success,
        },
        Criterion {
            name: "latency_degradation_10x".into(),
            expected: format!(
                "p50 at {} users < {:.0}% above p50 at {base}",
                base * 10,
                max_degradation * 100.0
            ),
            actual: degradation,
            pass: degradation < max_degradation,
        },
    ];
    let mut report = BenchReport {
        schema: SCHEMA.into(),
        target: args.url.clone(),
        quick: q,
        rps: throughput.rps,
        p50_ms: rt.p50_ms,
        p90_ms: rt.p90_ms,
        p99_ms: rt.p99_ms,
        p999_ms: rt.p999_ms,
        error_rate: 1.0 - success,
        response_time: Level::from(base, &rt),
        latency_vs_users: lvu,
        throughput,
        connection_capacity: Capacity {
            max_held,
            levels: cap_levels,
            target_kib_per_connection,
        },
        stability,
        burst,
        sustained,
        scalability,
        resources,
        criteria: Vec::new(),
        pass: false,
        baseline: Vec::new(),
    };
    if let Some(b) = &baseline {
        let cur = serde_json::to_value(&report).map_err(|e| LoadError::Io(e.to_string()))?;
        report.baseline = compare(&cur, b, max_regression)
            .map_err(|e| LoadError::Config(format!("--baseline: {e}")))?;
        criteria.push(Criterion {
            name: "baseline".into(),
            expected: format!("no regression beyond {:.0}%", max_regression * 100.0),
            actual: report.baseline.iter().filter(|d| d.regression).count() as f64,
            pass: report.baseline.iter().all(|d| !d.regression),
        });
    }
    report.pass = criteria.iter().all(|c| c.pass);
    report.criteria = criteria;
    Ok(report)
}

fn level_row(s: &mut String, name: &str, l: &Level) {
    let _ = writeln!(
        s,
        "  {name:<22} users {:>5}  {:>10.1} req/s  p50 {:>9}  p99 {:>9}  errors {:.2}%",
        l.users,
        l.rps,
        ms(l.p50_ms),
        ms(l.p99_ms),
        l.error_rate * 100.0
    );
}

/// Text rendering of a bench report.
#[must_use]
pub fn text(r: &BenchReport) -> String {
    let mut s = format!(
        "scalewise bench {}{}\n",
        r.target,
        if r.quick { " (quick)" } else { "" }
    );
    level_row(&mut s, "response time", &r.response_time);
    for l in &r.latency_vs_users {
        level_row(&mut s, "latency vs users", l);
    }
    level_row(&mut s, "throughput (best)", &r.throughput);
    let _ = writeln!(
        s,
        "  connection capacity    held {} connections (tried → answered: {}){}",
        r.connection_capacity.max_held,
        r.connection_capacity
            .levels
            .iter()
            .map(|(tried, ok)| format!("{tried} → {ok}"))
            .collect::<Vec<_>>()
            .join(", "),
        r.connection_capacity
            .target_kib_per_connection
            .map(|k| format!(", target {k:.1} KiB/connection"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "  stability              {:.1} req/s, throughput CV {}, {} second(s) with errors",
        r.stability.level.rps,
        r.stability
            .rps_cv
            .map_or("n/a (run < 2 s)".to_string(), |cv| format!("{cv:.3}")),
        r.stability.seconds_with_errors
    );
    level_row(&mut s, "burst (spike ×10)", &r.burst);
    let _ = writeln!(
        s,
        "  sustained              target {:.1} req/s, achieved {:.1}, p99 {} (uncorrected {}), late {}, errors {:.2}%",
        r.sustained.target_rps,
        r.sustained.achieved_rps,
        ms(r.sustained.p99_ms),
        ms(r.sustained.uncorrected_p99_ms),
        r.sustained.late,
        r.sustained.error_rate * 100.0
    );
    for l in &r.scalability.levels {
        level_row(&mut s, "scalability", l);
    }
    let _ = writeln!(
        s,
        "  scalability limit      {} users ({}); knee {}",
        r.scalability
            .limit_users
            .map_or("none".into(), |u| u.to_string()),
        r.scalability.stopped_because,
        r.scalability
            .knee_users
            .map_or("not reached".into(), |u| format!("at {u} users"))
    );
    if let Some(res) = &r.resources {
        let _ = writeln!(
            s,
            "  target resources       pid {}: RSS {} → peak {} KiB (HWM {}), CPU {:.2}s, {:.1} ms CPU / 1k requests",
            res.pid, res.rss_before_kib, res.rss_peak_kib, res.rss_hwm_kib, res.cpu_s, res.cpu_ms_per_1k_requests
        );
    }
    if !r.baseline.is_empty() {
        s.push_str(&deltas_text(&r.baseline));
    }
    s.push_str("Criteria\n");
    for c in &r.criteria {
        let _ = writeln!(
            s,
            "  {} {:<26} {} (actual {:.4})",
            if c.pass { "PASS" } else { "FAIL" },
            c.name,
            c.expected,
            c.actual
        );
    }
    let _ = writeln!(s, "Result: {}", if r.pass { "PASS" } else { "FAIL" });
    s
}

/// Offline HTML rendering of a bench report.
#[must_use]
pub fn html(r: &BenchReport) -> String {
    let mut s = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>scalewise bench: {t}</title><style>{STYLE}</style></head><body>\
         <h1>scalewise bench</h1><p>{t}{q} — <span class=\"{c}\">{c}</span></p>",
        t = esc(&r.target),
        q = if r.quick { " (quick)" } else { "" },
        c = if r.pass { "pass" } else { "fail" }
    );
    s.push_str("<h2>Criteria</h2><table><tr><th>Criterion</th><th>Expected</th><th>Actual</th><th>Result</th></tr>");
    for c in &r.criteria {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{:.4}</td><td class=\"{k}\">{k}</td></tr>",
            esc(&c.name),
            esc(&c.expected),
            c.actual,
            k = if c.pass { "pass" } else { "fail" }
        );
    }
    s.push_str("</table><h2>Phases</h2><table><tr><th>Phase</th><th>Users</th><th>req/s</th><th>p50</th><th>p99</th><th>Errors</th></tr>");
    let mut row = |name: &str, l: &Level| {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{:.2}%</td></tr>",
            esc(name),
            l.users,
            l.rps,
            ms(l.p50_ms),
            ms(l.p99_ms),
            l.error_rate * 100.0
        );
    };
    row("response time", &r.response_time);
    for l in &r.latency_vs_users {
        row("latency vs users", l);
    }
    row("throughput", &r.throughput);
    row("stability", &r.stability.level);
    row("burst", &r.burst);
    for l in &r.scalability.levels {
        row("scalability", l);
    }
    s.push_str("</table>");
    let _ = write!(
        s,
        "<p>Connection capacity: {} held. Sustained: target {:.1} req/s, achieved {:.1}, p99 {} (uncorrected {}). Scalability limit: {} ({}); knee: {}.</p>",
        r.connection_capacity.max_held,
        r.sustained.target_rps,
        r.sustained.achieved_rps,
        ms(r.sustained.p99_ms),
        ms(r.sustained.uncorrected_p99_ms),
        r.scalability.limit_users.map_or("none".into(), |u| format!("{u} users")),
        esc(&r.scalability.stopped_because),
        r.scalability.knee_users.map_or("not reached".into(), |u| format!("{u} users"))
    );
    let labels: Vec<String> = r
        .latency_vs_users
        .iter()
        .map(|l| l.users.to_string())
        .collect();
    s.push_str(&line_chart(
        "Latency vs concurrent users",
        "ms",
        &[
            (
                "p50",
                "#1f77b4",
                r.latency_vs_users
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (i as f64, l.p50_ms))
                    .collect(),
            ),
            (
                "p99",
                "#d62728",
                r.latency_vs_users
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (i as f64, l.p99_ms))
                    .collect(),
            ),
        ],
        Some(&labels),
    ));
    let labels: Vec<String> = r
        .scalability
        .levels
        .iter()
        .map(|l| l.users.to_string())
        .collect();
    s.push_str(&line_chart(
        "Scalability: throughput by users",
        "/s",
        &[(
            "req/s",
            "#2ca02c",
            r.scalability
                .levels
                .iter()
                .enumerate()
                .map(|(i, l)| (i as f64, l.rps))
                .collect(),
        )],
        Some(&labels),
    ));
    let cap: Vec<(String, f64)> = r
        .connection_capacity
        .levels
        .iter()
        .map(|(c, h)| (format!("{c} tried"), *h as f64))
        .collect();
    s.push_str(&bar_chart("Connections held", &cap, "#1f77b4"));
    if let Some(res) = &r.resources {
        let _ = write!(
            s,
            "<p>Target pid {}: RSS {} KiB before, {} KiB peak, CPU {:.2}s ({:.1} ms per 1k requests).</p>",
            res.pid, res.rss_before_kib, res.rss_peak_kib, res.cpu_s, res.cpu_ms_per_1k_requests
        );
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_of_self_is_readable() {
        assert!(super::cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn family_includes_child_processes() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fam = super::family(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(fam[0], std::process::id());
        assert!(fam.contains(&child.id()), "{fam:?}");
        assert!(super::family_kib(std::process::id(), "VmRSS:") > 0);
    }

    fn ramp(rps: &[f64]) -> Vec<super::Level> {
        rps.iter()
            .enumerate()
            .map(|(i, &rps)| super::Level {
                users: 1 << i,
                requests: 0,
                rps,
                p50_ms: 0.0,
                p99_ms: 0.0,
                error_rate: 0.0,
            })
            .collect()
    }

    #[test]
    fn knee_is_where_throughput_nears_its_peak() {
        // A dip at 2 users (noise) is not the knee; 16 users reach 95 % of the peak.
        let noisy = ramp(&[12e3, 8e3, 20e3, 40e3, 60e3, 63e3, 62e3]);
        assert_eq!(super::knee(&noisy), Some(16));
        // Still growing at the last level: no knee yet.
        assert_eq!(super::knee(&ramp(&[1e3, 2e3, 4e3, 8e3])), None);
        // Flat from the start: the first level is the knee.
        assert_eq!(super::knee(&ramp(&[5e3, 5.1e3, 4.9e3])), Some(1));
        assert_eq!(super::knee(&[]), None);
    }

    #[test]
    fn spike_shape_parses() {
        assert!(crate::schedule::Shape::parse("spike:10").is_ok());
    }
}
