//! Orchestration of a run: virtual users, the open-model timetable, the per-second ticker, live
//! progress, Ctrl-C and the drain at the end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;

use scalewise::timeout::timeout_on;

use crate::http1::{Conn, Response, Stream, Wire, MAX_CAPTURE};
use crate::recorder::{ErrorKind, Local, Recorder};
use crate::report::{Meta, Report, Second};
use crate::scenario::Scenario;
use crate::schedule::{Shape, Timetable};
use crate::target::{Scheme, Target};
use crate::LoadError;

/// A request counts as late when it starts this long after its scheduled time. Tokio timers have
/// millisecond resolution, so anything tighter would flag every request.
const LATE_AFTER: Duration = Duration::from_millis(2);
/// Longest pause between reconnect attempts of one virtual user (keeps an outage from turning
/// into a connect storm).
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Most virtual users in one run (each costs a task and, when active, a connection).
pub(crate) const MAX_USERS: usize = 1_000_000;
/// Ends a run from code, as reaching its duration would: no user starts another request, and
/// requests in flight get the graceful stop to finish (those that do not are counted as
/// interrupted). A handle stays stopped: every run it is passed to afterwards stops at once;
/// the end of a run does not stop the handle.
///
/// ```no_run
/// # async fn demo() -> Result<(), scalewise_load::LoadError> {
/// let stop = scalewise_load::Stop::new();
/// let mut args = scalewise_load::LoadArgs::new("http://127.0.0.1:8080/");
/// args.duration = Some("10m".into());
/// let s = stop.clone();
/// tokio::spawn(async move {
///     tokio::time::sleep(std::time::Duration::from_secs(5)).await;
///     s.stop();
/// });
/// let report = scalewise_load::load_until(&args, &stop).await?;
/// # let _ = report; Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<StopState>);

#[derive(Debug, Default)]
struct StopState {
    stopped: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Stop {
    /// A handle that has not been stopped.
    #[must_use]
    pub fn new() -> Self {
        Stop::default()
    }

    /// Stops the runs using this handle. Users see it before their next request (the flag is
    /// set before this returns); the run's own loop wakes up to drain and report.
    pub fn stop(&self) {
        self.0.stopped.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Whether [`stop`](Self::stop) was called.
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::Relaxed)
    }

    /// Completes once [`stop`](Self::stop) has been called.
    pub async fn stopped(&self) {
        loop {
            // Register before checking the flag, so a `stop` in between is not missed.
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }
}

/// Protocol engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    H1,
    H2,
    Ws,
    Scenario,
}

/// WebSocket mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WsMode {
    Echo,
    Subscribe,
}

/// Everything a run needs, validated.
#[derive(Debug)]
pub(crate) struct Plan {
    pub label: String,
    pub target: Option<Target>,
    pub proto: Proto,
    pub wire: Wire,
    pub method: http::Method,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub connections: usize,
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub rate: Option<f64>,
    pub shape: Shape,
    pub think: Option<Duration>,
    pub timeout: Duration,
    pub keepalive: bool,
    pub ws_mode: WsMode,
    pub ws_message: String,
    pub scenario: Option<Arc<Scenario>>,
    pub progress: bool,
    /// Skip the fail-fast probe (bench capacity phase probes itself).
    pub probe: bool,
    /// Hold connections open without sending requests after the first (bench capacity phase).
    pub hold: bool,
    /// HTTP/2: connections shared by all users (None: one per user).
    pub h2_connections: Option<usize>,
    /// `--http2`: scenarios speak HTTP/2 too (plain runs use [`Proto::H2`]).
    pub http2: bool,
    /// `--graceful-stop`: how long in-flight requests get to finish after the end of the run.
    pub graceful_stop: Duration,
}

/// Shared state of a running test.
pub(crate) struct Run {
    pub plan: Arc<Plan>,
    pub recorder: Recorder,
    pub start: Instant,
    /// Set by the runner at the end of the run.
    stop: Stop,
    /// The caller's handle (`load_until`), checked too so that its `stop` takes effect at once;
    /// the runner never sets it (the caller may pass it to later runs).
    external: Stop,
    issued: AtomicU64,
    timetable: Option<Timetable>,
    pub connected: AtomicU64,
    /// HTTP/2 connections shared by all users (`--h2-connections`); empty: one per user.
    h2_pool: Vec<tokio::sync::Mutex<Option<H2Sender>>>,
}

impl Run {
    fn stopped(&self) -> bool {
        self.stop.is_stopped() || self.external.is_stopped()
    }

    /// Waits for virtual user `vu`'s next turn; returns the scheduled start, or `None` when the
    /// user should stop. From the return of `Some` until the user records the result, the
    /// request counts as in flight (see [`Local::start_request`]).
    pub(crate) async fn turn(&self, vu: usize, local: &mut Local<'_>) -> Option<Instant> {
        // Back for another turn: whatever the user did before has ended (a path that records
        // nothing, such as a skipped request, must not count as in flight while waiting here).
        local.settle();
        let at = self.next_turn(vu, local).await?;
        local.start_request();
        Some(at)
    }

    async fn next_turn(&self, vu: usize, local: &mut Local<'_>) -> Option<Instant> {
        if self.stopped() {
            return None;
        }
        let plan = &self.plan;
        if let Some(tt) = &self.timetable {
            let offset = tt.next()?;
            if let Some(n) = plan.requests {
                if self.issued.fetch_add(1, Ordering::Relaxed) >= n {
                    return None;
                }
            }
            let at = self.start + Duration::from_secs_f64(offset);
            let now = Instant::now();
            if at > now {
                tokio::time::sleep_until(at.into()).await;
                // A wake-up within the timer's resolution is on time: measuring from the slot
                // would add the generator's own timer lag (up to ~1 ms) to every latency.
                // Coordinated omission only arises when a request is already overdue.
                let woke = Instant::now();
                if woke.duration_since(at) <= LATE_AFTER {
                    return Some(woke);
                }
                local.late();
            } else if now.duration_since(at) > LATE_AFTER {
                local.late();
            }
            return Some(at);
        }
        if let Some(n) = plan.requests {
            if self.issued.fetch_add(1, Ordering::Relaxed) >= n {
                return None;
            }
        }
        if plan.shape != Shape::Constant {
            let total = plan.duration.map_or(0.0, |d| d.as_secs_f64());
            loop {
                let t = self.start.elapsed().as_secs_f64();
                let users = plan.shape.value(t, total, plan.connections as f64).round();
                if (vu as f64) < users {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                if self.stopped() {
                    return None;
                }
            }
        }
        Some(Instant::now())
    }

    pub(crate) async fn think(&self) {
        if let Some(t) = self.plan.think {
            tokio::time::sleep(t).await;
        }
    }
}

/// Connects a stream for `target` (TCP or TLS).
pub(crate) async fn connect(
    target: &Target,
    timeout: Duration,
) -> Result<Stream, (ErrorKind, std::io::Error)> {
    if target.scheme.tls() {
        Ok(Stream::Tls(Box::new(target.connect_tls(timeout).await?)))
    } else {
        Ok(Stream::Plain(target.connect_tcp(timeout).await?))
    }
}

fn backoff_next(b: &mut Duration) -> Duration {
    let cur = *b;
    *b = (*b * 2).min(MAX_BACKOFF);
    cur
}

async fn h1_vu(run: Arc<Run>, vu: usize) {
    let plan = run.plan.clone();
    let Some(target) = plan.target.as_ref() else {
        return;
    };
    let mut local = run.recorder.local(vu);
    let mut conn: Option<Conn<Stream>> = None;
    let mut backoff = Duration::from_millis(10);
    // One timer for all of this user's request deadlines (see `timeout_on`).
    let mut timer = Box::pin(tokio::time::sleep_until(tokio::time::Instant::now()));
    while let Some(scheduled) = run.turn(vu, &mut local).await {
        let sent = Instant::now();
        if conn.is_none() {
            match connect(target, plan.timeout).await {
                Ok(s) => {
                    run.connected.fetch_add(1, Ordering::Relaxed);
                    conn = Some(Conn::new(s));
                    backoff = Duration::from_millis(10);
                }
                Err((kind, e)) => {
                    local.error_because(0, kind, 0, &e);
                    tokio::time::sleep(backoff_next(&mut backoff)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let deadline = tokio::time::Instant::from_std(sent) + plan.timeout;
        let mut result = timeout_on(timer.as_mut(), deadline, c.request(&plan.wire, false)).await;
        if matches!(result, Some(Err(_))) && c.stale() {
            // The server closed the idle keep-alive connection: resend once on a new one.
            conn = None;
            if let Ok(s) = connect(target, plan.timeout).await {
                run.connected.fetch_add(1, Ordering::Relaxed);
                let c = conn.insert(Conn::new(s));
                let deadline = tokio::time::Instant::now() + plan.timeout;
                result = timeout_on(timer.as_mut(), deadline, c.request(&plan.wire, false)).await;
            }
        }
        match result {
            Some(Ok(resp)) => {
                local.response(0, scheduled, sent, resp.status, resp.bytes);
                if resp.close || !plan.keepalive {
                    conn = None;
                }
            }
            Some(Err((kind, e))) => {
                local.error_because(0, kind, 0, &e);
                conn = None;
            }
            None => {
                local.error_because(
                    0,
                    ErrorKind::Timeout,
                    0,
                    &format_args!("no complete response within {:?}", plan.timeout),
                );
                conn = None;
            }
        }
        if plan.hold {
            // Capacity measurement: keep the connection open and idle until the run ends.
            local.flush();
            while !run.stopped() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            return;
        }
        run.think().await;
    }
}

pub(crate) type H2Sender = hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>;

pub(crate) async fn h2_connect(
    target: &Target,
    timeout: Duration,
) -> Result<H2Sender, (ErrorKind, std::io::Error)> {
    let stream = connect(target, timeout).await?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(io)
            .await
            .map_err(|e| (ErrorKind::Protocol, std::io::Error::other(e)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One HTTP/2 exchange: status and bytes received, and with `capture` the headers and the
/// body (up to [`MAX_CAPTURE`]) like [`Conn::request`] does. The body is counted as it
/// streams, not collected.
pub(crate) async fn h2_exchange(
    sender: &mut H2Sender,
    req: http::Request<http_body_util::Full<bytes::Bytes>>,
    capture: bool,
) -> Result<Response, (ErrorKind, std::io::Error)> {
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| hyper_failure(&e))?;
    let mut out = Response {
        status: resp.status().as_u16(),
        ..Response::default()
    };
    for (k, v) in resp.headers() {
        out.bytes += (k.as_str().len() + v.len() + 4) as u64;
        if capture {
            out.headers.push((
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ));
        }
    }
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| hyper_failure(&e))?;
        if let Some(data) = frame.data_ref() {
            out.bytes += data.len() as u64;
            if capture && out.body.len() < MAX_CAPTURE {
                let room = MAX_CAPTURE - out.body.len();
                out.body.extend_from_slice(&data[..data.len().min(room)]);
            }
        }
    }
    Ok(out)
}

/// The category of a failed HTTP/2 exchange, and its message (with hyper's cause, e.g. the
/// peer answering HTTP/1.1 to the h2 preface).
fn hyper_failure(e: &hyper::Error) -> (ErrorKind, std::io::Error) {
    let mut msg = e.to_string();
    if let Some(cause) = std::error::Error::source(e) {
        msg = format!("{msg}: {cause}");
    }
    (classify_hyper(e), std::io::Error::other(msg))
}

fn classify_hyper(e: &hyper::Error) -> ErrorKind {
    if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_parse() || e.is_user() {
        ErrorKind::Protocol
    } else {
        ErrorKind::Reset
    }
}

async fn h2_vu(run: Arc<Run>, vu: usize) {
    let plan = run.plan.clone();
    let Some(target) = plan.target.as_ref() else {
        return;
    };
    let mut local = run.recorder.local(vu);
    let mut sender: Option<H2Sender> = None;
    let mut backoff = Duration::from_millis(10);
    let uri: http::Uri = match target.url.as_str().parse() {
        Ok(u) => u,
        Err(_) => return,
    };
    while let Some(scheduled) = run.turn(vu, &mut local).await {
        let sent = Instant::now();
        if let Some(slot) = run.h2_pool.get(vu % run.h2_pool.len().max(1)) {
            // Shared connections: users multiplex their streams over `--h2-connections`.
            let mut shared = slot.lock().await;
            if shared.as_ref().is_none_or(|s| s.is_closed()) {
                match h2_connect(target, plan.timeout).await {
                    Ok(s) => {
                        run.connected.fetch_add(1, Ordering::Relaxed);
                        *shared = Some(s);
                        backoff = Duration::from_millis(10);
                    }
                    Err((kind, e)) => {
                        drop(shared);
                        local.error_because(0, kind, 0, &e);
                        tokio::time::sleep(backoff_next(&mut backoff)).await;
                        continue;
                    }
                }
            }
            sender = shared.clone();
        } else if sender.is_none() {
            match h2_connect(target, plan.timeout).await {
                Ok(s) => {
                    run.connected.fetch_add(1, Ordering::Relaxed);
                    sender = Some(s);
                    backoff = Duration::from_millis(10);
                }
                Err((kind, e)) => {
                    local.error_because(0, kind, 0, &e);
                    tokio::time::sleep(backoff_next(&mut backoff)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let mut builder = http::Request::builder()
            .method(plan.method.clone())
            .uri(uri.clone());
        for (k, v) in &plan.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let Ok(req) = builder.body(http_body_util::Full::new(plan.body.clone())) else {
            local.error(0, ErrorKind::Protocol, 0);
            return;
        };
        match tokio::time::timeout(plan.timeout, h2_exchange(s, req, false)).await {
            Ok(Ok(resp)) => local.response(0, scheduled, sent, resp.status, resp.bytes),
            Ok(Err((kind, e))) => {
                local.error_because(0, kind, 0, &e);
                sender = None;
            }
            Err(_) => {
                local.error_because(
                    0,
                    ErrorKind::Timeout,
                    0,
                    &format_args!("no complete response within {:?}", plan.timeout),
                );
                sender = None;
            }
        }
        run.think().await;
    }
}

/// Fails fast with one clear error when the target cannot be reached at all.
async fn probe(plan: &Plan) -> Result<(), LoadError> {
    let Some(target) = &plan.target else {
        return Ok(());
    };
    let timeout = plan.timeout.min(Duration::from_secs(5));
    match connect(target, timeout).await {
        Ok(_) => Ok(()),
        Err((ErrorKind::Tls, e)) => Err(LoadError::Unreachable(format!(
            "TLS handshake with {} failed: {e}",
            target.addr
        ))),
        Err((_, e)) => Err(LoadError::Unreachable(format!(
            "cannot connect to {} ({}): {e}",
            target.url, target.addr
        ))),
    }
}

/// Runs `plan` to completion (duration, request count, `stop`, or Ctrl-C) and builds the
/// report.
/// The longest latency this run can measure, so that its histograms reach that far instead of
/// cutting it to 60 s: a request lasts at most `--timeout` (a scenario `recv` its own timeout),
/// and in the open model latency runs from the scheduled time, so a request due at the start
/// can still finish at the end of the graceful stop.
fn longest_latency(plan: &Plan) -> Duration {
    let recv = plan
        .scenario
        .as_ref()
        .and_then(|s| s.longest_recv_timeout())
        .unwrap_or_default();
    let open = match plan.rate {
        Some(_) => plan
            .duration
            .unwrap_or(Duration::from_secs(10))
            .saturating_add(plan.graceful_stop),
        None => Duration::ZERO,
    };
    plan.timeout.max(recv).max(open)
}

pub(crate) async fn execute(plan: Plan, stop: &Stop) -> Result<Report, LoadError> {
    if plan.probe {
        probe(&plan).await?;
    }
    let plan = Arc::new(plan);
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let total = plan.duration;
    let timetable = plan.rate.map(|r| {
        Timetable::new(
            plan.shape.clone(),
            r,
            total.unwrap_or(Duration::from_secs(10)),
        )
    });
    let vus = match (plan.rate, &plan.proto) {
        (_, Proto::Ws) if plan.ws_mode == WsMode::Subscribe => plan.connections,
        (None, _) => {
            let total_s = total.map_or(0.0, |d| d.as_secs_f64());
            (plan
                .shape
                .max_value(total_s, plan.connections as f64)
                .ceil() as usize)
                .max(1)
        }
        (Some(_), _) => plan.connections.max(1),
    };
    if vus > MAX_USERS {
        return Err(LoadError::Config(format!(
            "the load shape needs {vus} virtual users; at most {MAX_USERS} are supported"
        )));
    }
    let run = Arc::new(Run {
        plan: plan.clone(),
        recorder: {
            let r = Recorder::reaching((workers * 4).clamp(1, 64), longest_latency(&plan));
            if plan.rate.is_none() && plan.scenario.is_none() {
                r.single_closed()
            } else {
                r
            }
        },
        start: Instant::now(),
        stop: Stop::new(),
        external: stop.clone(),
        issued: AtomicU64::new(0),
        timetable,
        connected: AtomicU64::new(0),
        h2_pool: match (plan.proto, plan.h2_connections) {
            (Proto::H2, Some(n)) => (0..n.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            _ => Vec::new(),
        },
    });
    let mut tasks = tokio::task::JoinSet::new();
    for vu in 0..vus {
        let run = run.clone();
        match plan.proto {
            Proto::H1 => tasks.spawn(h1_vu(run, vu)),
            Proto::H2 => tasks.spawn(h2_vu(run, vu)),
            Proto::Ws => tasks.spawn(crate::ws::ws_vu(run, vu)),
            Proto::Scenario => tasks.spawn(crate::scenario::scenario_vu(run, vu)),
        };
    }
    let progress = Progress::new(plan.progress);
    let deadline = total.map(|d| tokio::time::Instant::from_std(run.start + d));
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut timeline: Vec<Second> = Vec::new();
    let mut last_tick = run.start;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;
    let mut ctrl_c_live = true;
    let mut errors_so_far = 0;
    loop {
        let sleep_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep_deadline => break,
            _ = stop.stopped() => break,
            r = &mut ctrl_c, if ctrl_c_live => {
                if r.is_ok() {
                    interrupted = true;
                    break;
                }
                ctrl_c_live = false;
            }
            next = tasks.join_next() => {
                if next.is_none() {
                    break;
                }
            }
            _ = ticker.tick() => {
                let now = Instant::now();
                let sec = tick(&run, now.duration_since(run.start), now.duration_since(last_tick));
                last_tick = now;
                errors_so_far += sec.errors;
                progress.update(run.start.elapsed(), &sec, errors_so_far);
                timeline.push(sec);
            }
        }
    }
    run.stop.stop();
    let end_of_load = Instant::now();
    // Ctrl-C abandons in-flight requests at once: whoever presses it wants the results now.
    if !interrupted && !plan.graceful_stop.is_zero() {
        let _ = tokio::time::timeout(plan.graceful_stop, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
    }
    // Users still busy are aborted; dropping a busy user's buffer counts its request as
    // interrupted (see `Local::start_request`).
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    progress.finish();
    let end = Instant::now();
    // Final partial second of the timeline.
    let rest = end.duration_since(last_tick);
    if rest > Duration::from_millis(50) || timeline.is_empty() {
        timeline.push(tick(&run, end.duration_since(run.start), rest));
    }
    let totals = run.recorder.totals();
    let missed = match &run.timetable {
        Some(tt) if !interrupted => {
            // Tickets that fell due before the end but were never taken.
            tt.remaining_until(end_of_load.duration_since(run.start).as_secs_f64())
        }
        _ => 0,
    };
    let duration_s = end_of_load.duration_since(run.start).as_secs_f64();
    let meta = Meta {
        target: plan.label.clone(),
        protocol: match plan.proto {
            Proto::H1 => "http/1.1".into(),
            Proto::H2 => "h2".into(),
            Proto::Ws => "websocket".into(),
            Proto::Scenario => "scenario".into(),
        },
        model: if plan.rate.is_some() {
            "open".into()
        } else {
            "closed".into()
        },
        shape: plan.shape.describe(),
        connections: vus,
        duration_s,
        interrupted,
        graceful_stop_s: plan.graceful_stop.as_secs_f64(),
        target_rps: plan.rate,
        missed,
        step_names: plan
            .scenario
            .as_ref()
            .map(|s| s.report_names())
            .unwrap_or_default(),
        check_names: plan
            .scenario
            .as_ref()
            .map(|s| s.check_names())
            .unwrap_or_default(),
        ws_mode: match (plan.proto, plan.ws_mode) {
            (Proto::Ws, WsMode::Echo) => Some("echo".to_string()),
            (Proto::Ws, WsMode::Subscribe) => Some("subscribe".to_string()),
            // Scenarios with WebSocket steps report their message counts too.
            (Proto::Scenario, _) if plan.scenario.as_ref().is_some_and(|s| s.has_ws()) => {
                Some("scenario".to_string())
            }
            _ => None,
        },
    };
    Ok(Report::build(&totals, meta, timeline))
}

fn tick(run: &Run, since_start: Duration, interval: Duration) -> Second {
    let i = run.recorder.drain_interval();
    let secs = interval.as_secs_f64().max(1e-9);
    let ms = |q: f64| {
        if i.hist.is_empty() {
            0.0
        } else {
            i.hist.value_at_quantile(q) as f64 / 1000.0
        }
    };
    Second {
        t: (since_start.as_secs_f64() * 1000.0).round() / 1000.0,
        requests: i.counts.requests,
        errors: i.counts.error_total(),
        bytes: i.counts.bytes,
        rps: i.counts.requests as f64 / secs,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: if i.hist.is_empty() {
            0.0
        } else {
            i.hist.max() as f64 / 1000.0
        },
    }
}

/// Live progress line; hidden when disabled or stderr is not a terminal.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new(enabled: bool) -> Self {
        use std::io::IsTerminal;
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let pb = indicatif::ProgressBar::new_spinner();
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
        {
            pb.set_style(style);
        }
        pb.enable_steady_tick(Duration::from_millis(200));
        Progress(Some(pb))
    }

    fn update(&self, elapsed: Duration, sec: &Second, errors: u64) {
        if let Some(pb) = &self.0 {
            pb.set_message(format!(
                "{:.0}s  {:.0} req/s  p50 {}  p99 {}  errors {}",
                elapsed.as_secs_f64(),
                sec.rps,
                crate::report::ms(sec.p50_ms),
                crate::report::ms(sec.p99_ms),
                errors
            ));
        }
    }

    fn finish(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}

/// Whether `target`'s scheme is a WebSocket one.
pub(crate) fn is_ws(target: &Target) -> bool {
    matches!(target.scheme, Scheme::Ws | Scheme::Wss)
}
