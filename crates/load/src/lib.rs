//! `scalewise load` and `scalewise bench`: the load generator and benchmark suite.
//!
//! * A raw HTTP/1.1 engine (pre-serialized requests, `httparse` responses) fast enough to match
//!   wrk, a hyper-based HTTP/2 engine, and WebSocket echo/subscribe load.
//! * Closed model (N virtual users, optional think time) and open model (`--rate`: a fixed
//!   timetable, latency measured from the *scheduled* send time so coordinated omission does not
//!   hide stalls; the uncorrected figure is reported too).
//! * Load shapes (constant, ramp, step, spike, wave, stages), TOML/YAML scenarios (HTTP and
//!   WebSocket steps, k6-style checks), full HDR histograms, JSON/HTML reports, thresholds and baseline
//!   comparison.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let mut args = scalewise_load::LoadArgs::new("http://127.0.0.1:8080/");
//! args.connections = 64;
//! args.duration = Some("10s".into());
//! args.thresholds = vec!["p99<200ms".into()];
//! let report = scalewise_load::load(&args).await?;
//! println!("{:.0} req/s, p99 {} ms", report.rps, report.p99_ms);
//! let exit_code = scalewise_load::run_load(args).await?; // 0 pass, 1 threshold breached
//! # let _ = exit_code; Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod args;
pub mod bench;
mod html;
pub mod http1;
pub mod recorder;
pub mod report;
mod runner;
pub mod scenario;
pub mod schedule;
pub mod target;
pub mod threshold;
mod ws;

use std::sync::Arc;
use std::time::Duration;

pub use args::{BenchArgs, LoadArgs};
pub use report::Report;
pub use runner::Stop;
pub use scenario::{Scenario, ScenarioFormat};
pub use threshold::Threshold;

use runner::{Plan, Proto, WsMode};
use schedule::{parse_duration, Shape};
use target::{Target, TlsOptions};

/// Errors that stop a run before or instead of producing results.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The URL is malformed or uses an unsupported scheme.
    #[error("bad URL {0}")]
    BadUrl(String),
    /// DNS resolution failed.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// The target refused or ignored the first connection attempt.
    #[error("target unreachable: {0}")]
    Unreachable(String),
    /// TLS configuration problem.
    #[error("TLS: {0}")]
    Tls(String),
    /// Invalid option value.
    #[error("{0}")]
    Config(String),
    /// Invalid `--threshold` expression.
    #[error("invalid --threshold {0}")]
    Threshold(String),
    /// Invalid scenario file.
    #[error("scenario {0}")]
    Scenario(String),
    /// Reading or writing a file failed.
    #[error("{0}")]
    Io(String),
    /// Ctrl-C during `scalewise bench` (the suite stops between phases).
    #[error("interrupted by Ctrl-C")]
    Interrupted,
}

fn config<T>(flag: &str, r: Result<T, String>) -> Result<T, LoadError> {
    r.map_err(|e| LoadError::Config(format!("{flag}: {e}")))
}

/// Validates `args` into a plan.
async fn plan(args: &LoadArgs) -> Result<Plan, LoadError> {
    if args.connections == 0 || args.connections > runner::MAX_USERS {
        return Err(LoadError::Config(format!(
            "-c/--connections must be between 1 and {}",
            runner::MAX_USERS
        )));
    }
    if let Some(r) = args.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(LoadError::Config(
                "--rate must be a positive number of requests per second".into(),
            ));
        }
    }
    let timeout = config("--timeout", parse_duration(&args.timeout))?;
    if timeout.is_zero() {
        return Err(LoadError::Config("--timeout must be > 0".into()));
    }
    let graceful_stop = config("--graceful-stop", parse_duration(&args.graceful_stop))?;
    let think = args
        .think_time
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| LoadError::Config(format!("--think-time: {e}")))?;
    if think.is_some() && args.rate.is_some() {
        // In the open model the timetable sets the pace; a pause would only keep connections
        // from taking their slots (the rate silently drops, the slots count as missed).
        return Err(LoadError::Config(
            "--think-time applies to the closed model; with --rate the timetable paces the requests (drop one of them)".into(),
        ));
    }
    let shape = match &args.stages {
        Some(s) => Shape::parse_stages(s)?,
        None => Shape::parse(&args.shape)?,
    };
    let mut duration = args
        .duration
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| LoadError::Config(format!("--duration: {e}")))?;
    if duration.is_none() {
        duration = shape.implied_duration();
    }
    if duration.is_none() {
        duration = match (args.requests, args.rate) {
            (Some(n), Some(r)) => Some(Duration::try_from_secs_f64(n as f64 / r + 1.0).map_err(
                |_| LoadError::Config("-n / --rate: the run would last too long".into()),
            )?),
            (Some(_), None) => None,
            _ => Some(Duration::from_secs(10)),
        };
    }
    if duration.is_some_and(|d| d.is_zero()) {
        return Err(LoadError::Config("--duration must be > 0".into()));
    }
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| LoadError::Config(format!("-H `{h}`: expected `Name: value`")))?;
        let k = k.trim();
        if k.is_empty() || http::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
            return Err(LoadError::Config(format!("-H `{h}`: invalid header name")));
        }
        if http::header::HeaderValue::from_str(v.trim()).is_err() {
            return Err(LoadError::Config(format!("-H `{h}`: invalid header value")));
        }
        headers.push((k.to_string(), v.trim().to_string()));
    }
    let method = http::Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| LoadError::Config(format!("-m `{}`: not an HTTP method", args.method)))?;
    let body: bytes::Bytes = match (&args.body, &args.body_file) {
        (Some(b), _) => b.clone().into_bytes().into(),
        (None, Some(p)) => std::fs::read(p)
            .map_err(|e| LoadError::Io(format!("--body-file {}: {e}", p.display())))?
            .into(),
        (None, None) => bytes::Bytes::new(),
    };
    if args.h2_connections == Some(0) {
        return Err(LoadError::Config(
            "--h2-connections must be at least 1".into(),
        ));
    }
    if args.h2_connections.is_some() && !args.http2 {
        return Err(LoadError::Config("--h2-connections needs --http2".into()));
    }
    let ws_mode = match args.ws_mode.as_str() {
        "echo" => WsMode::Echo,
        "subscribe" => WsMode::Subscribe,
        other => {
            return Err(LoadError::Config(format!(
                "--ws-mode `{other}`: expected echo or subscribe"
            )))
        }
    };
    let mut tls = TlsOptions {
        insecure: args.insecure,
        cacert: args.cacert.clone(),
        alpn: Vec::new(),
    };
    if args.threads == Some(0) {
        // The binary's parser rejects it first; this covers arguments built in code.
        return Err(LoadError::Config(format!(
            "--threads 0: {}",
            args::THREADS_EXPECTED
        )));
    }
    if let (Some(url), Some(file)) = (&args.url, &args.scenario) {
        // The scenario's steps name their own URLs: a URL argument as well would be ignored,
        // and a run against a different target than the one typed is worse than no run.
        return Err(LoadError::Config(format!(
            "--scenario replaces the URL argument; remove one (URL `{url}`, --scenario `{}`)",
            file.display()
        )));
    }
    let scenario = match &args.scenario {
        Some(p) => {
            if args.h2_connections.is_some() {
                return Err(LoadError::Config(
                    "--h2-connections does not apply to scenarios (each user has its own connection per origin)".into(),
                ));
            }
            let mut sc = Scenario::load(p)?;
            sc.set_tls(&tls, args.http2);
            Some(Arc::new(sc))
        }
        None => None,
    };
    // `checks>99%` on a run without checks could only fail after the whole run: say so now.
    if !scenario.as_ref().is_some_and(|s| s.has_checks()) {
        if let Some(t) = parse_thresholds(&args.thresholds)?
            .into_iter()
            .find(|t| t.metric == "checks")
        {
            return Err(LoadError::Threshold(format!(
                "`{}`: `checks` is the pass rate of scenario checks, and {}",
                t.expr,
                if scenario.is_some() {
                    "no step of this scenario has a `check` table"
                } else {
                    "this run has no --scenario"
                }
            )));
        }
    }
    let (target, proto, label) = match (&scenario, &args.url) {
        (Some(sc), _) => {
            // Probe the first step's origin when it needs no runtime variables.
            let first = sc.first_url();
            let t = match url::Url::parse(&first) {
                Ok(_) => Target::parse(&first, &tls).await.ok(),
                Err(_) => None,
            };
            let label = args
                .scenario
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            (t, Proto::Scenario, label)
        }
        (None, Some(url)) => {
            if args.http2 {
                tls.alpn = vec![b"h2".to_vec()];
            } else {
                tls.alpn = vec![b"http/1.1".to_vec()];
            }
            let t = Target::parse(url, &tls).await?;
            let proto = if runner::is_ws(&t) {
                if args.http2 {
                    return Err(LoadError::Config(
                        "--http2 does not apply to ws:// or wss:// URLs".into(),
                    ));
                }
                tls.alpn = vec![b"http/1.1".to_vec()];
                Proto::Ws
            } else if args.http2 {
                Proto::H2
            } else {
                Proto::H1
            };
            let t = if proto == Proto::Ws {
                Target::parse(url, &tls).await?
            } else {
                t
            };
            (Some(t), proto, url.clone())
        }
        (None, None) => {
            return Err(LoadError::Config(
                "a target URL or --scenario FILE is required".into(),
            ))
        }
    };
    let wire = match &target {
        Some(t) => http1::serialize(
            method.as_str(),
            &t.path_and_query,
            &t.authority,
            &headers,
            &body,
            !args.no_keepalive,
        ),
        None => http1::serialize("GET", "/", "", &[], b"", true),
    };
    Ok(Plan {
        label,
        target,
        proto,
        wire,
        method,
        headers,
        body,
        connections: args.connections,
        duration,
        requests: args.requests,
        rate: args.rate,
        shape,
        think,
        timeout,
        keepalive: !args.no_keepalive,
        ws_mode,
        ws_message: args.ws_message.clone().unwrap_or_else(|| {
            if ws_mode == WsMode::Echo {
                "ping".into()
            } else {
                String::new()
            }
        }),
        scenario,
        progress: !args.no_progress,
        probe: true,
        hold: false,
        h2_connections: args.h2_connections,
        http2: args.http2,
        graceful_stop,
    })
}

/// Runs a load test described by `args` and returns its report (no printing, no files).
///
/// # Errors
/// Invalid options, an unreadable scenario, or an unreachable target.
pub async fn load(args: &LoadArgs) -> Result<Report, LoadError> {
    load_until(args, &Stop::new()).await
}

/// [`load`], which also ends (as at the end of its duration: in-flight requests get the
/// graceful stop) when `stop` is stopped.
///
/// # Errors
/// Invalid options, an unreadable scenario, or an unreachable target.
pub async fn load_until(args: &LoadArgs, stop: &Stop) -> Result<Report, LoadError> {
    let plan = plan(args).await?;
    runner::execute(plan, stop).await
}

/// Parses every `--threshold` (so a typo fails before the run, not after).
///
/// # Errors
/// [`LoadError::Threshold`] for the first bad expression.
pub fn parse_thresholds(exprs: &[String]) -> Result<Vec<Threshold>, LoadError> {
    exprs.iter().map(|e| Threshold::parse(e)).collect()
}

/// Checks, before a run, that `--json` / `--html` can be written where asked: finding out
/// after a ten-minute run loses its results. Creates nothing.
pub(crate) fn check_output(path: Option<&std::path::Path>, what: &str) -> Result<(), LoadError> {
    let Some(path) = path else { return Ok(()) };
    let bad = |why: String| LoadError::Io(format!("{what} {}: {why}", path.display()));
    if path.is_dir() {
        return Err(bad("is a directory; give a file name".into()));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() && m.permissions().readonly() => {
            Err(bad(format!("directory {} is read-only", parent.display())))
        }
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(bad(format!("{} is not a directory", parent.display()))),
        Err(e) => Err(bad(format!("directory {}: {e}", parent.display()))),
    }
}

fn write_file(path: &std::path::Path, contents: &str, what: &str) -> Result<(), LoadError> {
    std::fs::write(path, contents)
        .map_err(|e| LoadError::Io(format!("writing {what} {}: {e}", path.display())))
}

/// Raises the soft open-files limit to the hard limit: every connection is a descriptor, and
/// the usual soft limit of 1024 would otherwise cap a run at ~1000 connections and report the
/// generator's limit as the target's.
pub fn raise_open_files_limit() {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let lim = getrlimit(Resource::Nofile);
        if lim.current < lim.maximum {
            let _ = setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: lim.maximum,
                    maximum: lim.maximum,
                },
            );
        }
    }
}

/// Runs `scalewise load`: the run, the summary, the JSON/HTML files, thresholds and baseline.
/// Returns the process exit code: 0 success, 1 a threshold or baseline regression failed,
/// 130 interrupted by Ctrl-C (partial results are still printed and saved).
///
/// # Errors
/// Bad arguments, a bad scenario or threshold, or an unreachable target (the binary exits 2).
pub async fn run_load(args: LoadArgs) -> anyhow::Result<i32> {
    raise_open_files_limit();
    let thresholds = parse_thresholds(&args.thresholds)?;
    let max_regression = threshold::parse_fraction("--max-regression", &args.max_regression)?;
    let baseline = match &args.baseline {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| LoadError::Io(format!("--baseline {}: {e}", p.display())))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| LoadError::Io(format!("--baseline {}: not JSON: {e}", p.display())))?;
            // Before the run, not after it: a wrong file must not cost a whole test.
            report::compare(&v, &v, max_regression)
                .map_err(|e| LoadError::Config(format!("--baseline {}: {e}", p.display())))?;
            Some(v)
        }
        None => None,
    };
    check_output(args.json.as_deref(), "--json")?;
    check_output(args.html.as_deref(), "--html")?;
    let report = load(&args).await?;
    let mut failed = false;
    let mut out = report.text();
    let outcomes: Vec<threshold::Outcome> = thresholds.iter().map(|t| t.check(&report)).collect();
    if !outcomes.is_empty() {
        out.push_str("Thresholds\n");
        for o in &outcomes {
            let actual = if o.actual.is_nan() {
                "no latency samples: no request got a response".to_string()
            } else {
                format!("actual {:.3}", o.actual)
            };
            out.push_str(&format!(
                "  {} {:<24} ({actual})\n",
                if o.pass { "PASS" } else { "FAIL" },
                o.expr,
            ));
            failed |= !o.pass;
        }
    }
    let json = serde_json::to_value(&report).map_err(|e| LoadError::Io(e.to_string()))?;
    let mut deltas = Vec::new();
    if let Some(b) = &baseline {
        deltas = report::compare(&json, b, max_regression)
            .map_err(|e| LoadError::Config(format!("--baseline: {e}")))?;
        out.push_str(&report::deltas_text(&deltas));
        failed |= deltas.iter().any(|d| d.regression);
    }
    if !args.quiet {
        print!("{out}");
    }
    if let Some(p) = &args.json {
        let mut doc = json.clone();
        if let Some(obj) = doc.as_object_mut() {
            obj.insert(
                "thresholds".into(),
                serde_json::to_value(&outcomes).unwrap_or_default(),
            );
            obj.insert(
                "baseline".into(),
                serde_json::to_value(&deltas).unwrap_or_default(),
            );
        }
        let text = serde_json::to_string_pretty(&doc).map_err(|e| LoadError::Io(e.to_string()))?;
        write_file(p, &text, "--json")?;
    }
    if let Some(p) = &args.html {
        write_file(p, &html::load_report(&report, &outcomes, &deltas), "--html")?;
    }
    Ok(if report.interrupted {
        130
    } else if failed {
        1
    } else {
        0
    })
}

/// Runs `scalewise bench`; returns the process exit code (0 all criteria pass, 1 a criterion or
/// baseline comparison failed, 130 interrupted).
///
/// # Errors
/// Bad arguments or an unreachable target.
pub async fn run_bench(args: BenchArgs) -> anyhow::Result<i32> {
    raise_open_files_limit();
    match bench::run(args).await {
        Ok(code) => Ok(code),
        Err(LoadError::Interrupted) => {
            eprintln!("scalewise bench: interrupted by Ctrl-C; no report written");
            Ok(130)
        }
        Err(e) => Err(e.into()),
    }
}
