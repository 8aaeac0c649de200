//! Command-line arguments of `scalewise load` and `scalewise bench`.

use std::path::PathBuf;

/// Command-line arguments of `scalewise load`.
///
/// Construct it in code with [`LoadArgs::new`] and adjust the fields (tests and `bench` do).
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Target URL (http, https, ws, wss). Optional with --scenario.
    pub url: Option<String>,
    /// Concurrent connections (closed model: virtual users).
    #[arg(short = 'c', long, default_value_t = 10)]
    pub connections: usize,
    /// Run duration (e.g. 10s, 1m). Default 10s unless -n or --stages is given.
    #[arg(short = 'd', long)]
    pub duration: Option<String>,
    /// Total requests to send, then stop.
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// Open model: target requests per second on a fixed timetable (latency corrected for
    /// coordinated omission).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Runtime worker threads, at least 1 (default: one per core). Used by the binary's
    /// runtime.
    #[arg(long, value_parser = worker_threads)]
    pub threads: Option<usize>,
    /// Request header `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// HTTP method.
    #[arg(short = 'm', long, default_value = "GET")]
    pub method: String,
    /// Request body.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Request body read from a file.
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// Use HTTP/2 (h2c prior knowledge for http://, ALPN for https://).
    #[arg(long)]
    pub http2: bool,
    /// HTTP/2: share this many connections among all users, multiplexing their streams
    /// (default: one connection per user).
    #[arg(long)]
    pub h2_connections: Option<usize>,
    /// Open a new connection per request.
    #[arg(long)]
    pub no_keepalive: bool,
    /// Per-request timeout.
    #[arg(long, default_value = "30s")]
    pub timeout: String,
    /// Closed model: pause between a response and the user's next request (not with --rate).
    #[arg(long)]
    pub think_time: Option<String>,
    /// How long requests in flight at the end of the run get to finish (k6's gracefulStop);
    /// those still running then are abandoned and counted as interrupted. `0s`: none.
    #[arg(long, default_value = "500ms")]
    pub graceful_stop: String,
    /// Load shape: `constant`, `ramp[:FROM]`, `step[:N]`, `spike[:FACTOR]`, `wave[:PERIOD]`. Shapes the rate
    /// with --rate, else the number of active users.
    #[arg(long, default_value = "constant")]
    pub shape: String,
    /// Arbitrary stages `DURATION:TARGET,...` (`~TARGET` ramps to it), e.g. "10s:100,30s:~500".
    #[arg(long)]
    pub stages: Option<String>,
    /// Accept any TLS certificate.
    #[arg(long)]
    pub insecure: bool,
    /// Extra CA certificate (PEM) to trust.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// WebSocket mode: echo (send, await reply, measure RTT) or subscribe (receive, measure
    /// latency from a `ts` field when present).
    #[arg(long, default_value = "echo")]
    pub ws_mode: String,
    /// WebSocket message to send (echo), or to send once after connecting (subscribe).
    #[arg(long)]
    pub ws_message: Option<String>,
    /// Scenario file (TOML or YAML): HTTP and WebSocket steps.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Write JSON results (schema `scalewise-load/1`).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an offline HTML report.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Pass/fail threshold, e.g. `p99<200ms`, `error_rate<1%`, `rps>1000`, `checks>99%` (repeatable).
    #[arg(long = "threshold")]
    pub thresholds: Vec<String>,
    /// Previous JSON results to compare against.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Largest tolerated regression against --baseline (latency up or rps down).
    #[arg(long, default_value = "10%")]
    pub max_regression: String,
    /// Disable the live progress display (it is off anyway when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
    /// Do not print the text summary.
    #[arg(long)]
    pub quiet: bool,
}

impl LoadArgs {
    /// Defaults as the command line would give them, for `url`, except that library callers get
    /// no live progress and no printed summary (`no_progress` and `quiet` are set).
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        LoadArgs {
            url: Some(url.into()),
            connections: 10,
            duration: None,
            requests: None,
            rate: None,
            threads: None,
            headers: Vec::new(),
            method: "GET".into(),
            body: None,
            body_file: None,
            http2: false,
            h2_connections: None,
            no_keepalive: false,
            timeout: "30s".into(),
            think_time: None,
            graceful_stop: "500ms".into(),
            shape: "constant".into(),
            stages: None,
            insecure: false,
            cacert: None,
            ws_mode: "echo".into(),
            ws_message: None,
            scenario: None,
            json: None,
            html: None,
            thresholds: Vec::new(),
            baseline: None,
            max_regression: "10%".into(),
            no_progress: true,
            quiet: true,
        }
    }
}

/// Command-line arguments of `scalewise bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Target URL (http or https).
    pub url: String,
    /// Short phases (seconds instead of tens of seconds), for CI and tests.
    #[arg(long)]
    pub quick: bool,
    /// PID of the target process: report its memory (VmRSS) and CPU from /proc.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Baseline concurrency; the degradation criterion compares 10× this against it.
    #[arg(long, default_value_t = 1)]
    pub base_concurrency: usize,
    /// Success criterion: minimum success rate.
    #[arg(long, default_value = "95%")]
    pub min_success_rate: String,
    /// Success criterion: maximum p50 latency degradation at 10× the baseline concurrency.
    #[arg(long, default_value = "50%")]
    pub max_degradation: String,
    /// Scalability objective: p99 latency limit while ramping concurrency.
    #[arg(long, default_value = "500ms")]
    pub latency_objective: String,
    /// Largest concurrency tried by the capacity and scalability phases.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Per-request timeout.
    #[arg(long, default_value = "10s")]
    pub timeout: String,
    /// Accept any TLS certificate.
    #[arg(long)]
    pub insecure: bool,
    /// Extra CA certificate (PEM) to trust, as for `load` (the system bundle is always read).
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Write JSON results (schema `scalewise-bench/1`).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an offline HTML report.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Previous bench JSON to compare against.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Largest tolerated regression against --baseline.
    #[arg(long, default_value = "10%")]
    pub max_regression: String,
    /// Do not print a line as each phase starts (the report is still printed).
    #[arg(long)]
    pub no_progress: bool,
    /// Print nothing: no progress lines and no report (use --json/--html and the exit code).
    #[arg(long)]
    pub quiet: bool,
}

impl BenchArgs {
    /// Defaults as the command line would give them, for `url`, except `quiet` (no progress
    /// lines or printed report for library callers).
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        BenchArgs {
            url: url.into(),
            quick: false,
            pid: None,
            base_concurrency: 1,
            min_success_rate: "95%".into(),
            max_degradation: "50%".into(),
            latency_objective: "500ms".into(),
            max_connections: None,
            timeout: "10s".into(),
            insecure: false,
            cacert: None,
            json: None,
            html: None,
            baseline: None,
            max_regression: "10%".into(),
            no_progress: false,
            quiet: true,
        }
    }
}

/// `--threads`: a whole number ≥ 1. Zero used to mean one thread silently; a usage error
/// says what the flag expects instead (clap names the flag and exits 2).
fn worker_threads(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(THREADS_EXPECTED.into()),
    }
}

/// What `--threads` takes, for the parser's and [`crate::load`]'s errors.
pub(crate) const THREADS_EXPECTED: &str =
    "expected a number of worker threads of at least 1 (omit --threads for one per core)";
