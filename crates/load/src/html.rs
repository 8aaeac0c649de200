//! Offline HTML reports: one self-contained file, charts drawn as inline SVG by this module (no
//! scripts, no CDN), so a report opens anywhere, including air-gapped machines and CI artifacts.

use std::fmt::Write as _;

use crate::report::{ms, Delta, Report};
use crate::threshold::Outcome;

const W: f64 = 640.0;
const H: f64 = 220.0;
const PAD_L: f64 = 56.0;
const PAD_B: f64 = 28.0;
const PAD_T: f64 = 24.0;
const PAD_R: f64 = 12.0;

/// Escapes text for HTML.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One chart series: label, colour, (x, y) points.
pub(crate) type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// A line chart; `series` = (label, colour, points). `labels`, when given, name x positions.
pub(crate) fn line_chart(
    title: &str,
    y_unit: &str,
    series: &[Series<'_>],
    labels: Option<&[String]>,
) -> String {
    let pts = series.iter().flat_map(|s| s.2.iter());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for (x, y) in pts {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y1 = y1.max(*y);
    }
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\"><title>{t}</title>\
         <text x=\"{PAD_L}\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{t}</text>",
        t = esc(title)
    );
    if !x0.is_finite() {
        svg.push_str("<text x=\"200\" y=\"110\" fill=\"#888\">no data</text></svg>");
        return svg;
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= 0.0 {
        y1 = 1.0;
    }
    y1 *= 1.1;
    let sx = |x: f64| PAD_L + (x - x0) / (x1 - x0) * (W - PAD_L - PAD_R);
    let sy = |y: f64| H - PAD_B - y / y1 * (H - PAD_B - PAD_T);
    let _ = write!(
        svg,
        "<line x1=\"{PAD_L}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#999\"/><line x1=\"{PAD_L}\" y1=\"{PAD_T}\" x2=\"{PAD_L}\" y2=\"{b}\" stroke=\"#999\"/>",
        b = H - PAD_B,
        r = W - PAD_R
    );
    for i in 0..=4 {
        let v = y1 * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<text x=\"{x}\" y=\"{y}\" font-size=\"10\" text-anchor=\"end\">{v:.1}{u}</text><line x1=\"{PAD_L}\" y1=\"{y}\" x2=\"{r}\" y2=\"{y}\" stroke=\"#eee\"/>",
            x = PAD_L - 4.0,
            y = sy(v),
            u = esc(y_unit),
            r = W - PAD_R
        );
    }
    match labels {
        Some(l) => {
            for (i, lab) in l.iter().enumerate() {
                let _ = write!(
                    svg,
                    "<text x=\"{}\" y=\"{}\" font-size=\"9\" text-anchor=\"middle\">{}</text>",
                    sx(i as f64),
                    H - 10.0,
                    esc(lab)
                );
            }
        }
        None => {
            for i in 0..=4 {
                let v = x0 + (x1 - x0) * f64::from(i) / 4.0;
                let _ = write!(svg, "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{v:.0}s</text>", sx(v), H - 10.0);
            }
        }
    }
    for (si, (name, colour, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
            path.join(" ")
        );
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"16\" font-size=\"11\" fill=\"{colour}\">{}</text>",
            W - PAD_R - 90.0 * (series.len() - si) as f64,
            esc(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A horizontal bar chart of (label, value).
pub(crate) fn bar_chart(title: &str, bars: &[(String, f64)], colour: &str) -> String {
    let h = PAD_T + 18.0 * bars.len().max(1) as f64 + 8.0;
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {h}\" width=\"{W}\" height=\"{h}\" role=\"img\"><title>{t}</title>\
         <text x=\"{PAD_L}\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{t}</text>",
        t = esc(title)
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = PAD_T + 18.0 * i as f64;
        let w = v / max * (W - 200.0);
        let _ = write!(
            svg,
            "<text x=\"110\" y=\"{ty}\" font-size=\"11\" text-anchor=\"end\">{l}</text><rect x=\"116\" y=\"{y}\" width=\"{w:.1}\" height=\"13\" fill=\"{colour}\"/><text x=\"{tx}\" y=\"{ty}\" font-size=\"11\">{v}</text>",
            ty = y + 11.0,
            l = esc(label),
            tx = 120.0 + w,
        );
    }
    svg.push_str("</svg>");
    svg
}

pub(crate) const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}\
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}\
th{background:#f4f4f4}.pass{color:#080;font-weight:bold}.fail{color:#c00;font-weight:bold}svg{display:block;margin:12px 0}";

fn outcome_rows(outcomes: &[Outcome], deltas: &[Delta]) -> String {
    let mut s = String::new();
    if !outcomes.is_empty() {
        s.push_str(
            "<h2>Thresholds</h2><table><tr><th>Threshold</th><th>Actual</th><th>Result</th></tr>",
        );
        for o in outcomes {
            // NaN: a latency threshold on a run where no request got a response.
            let actual = if o.actual.is_nan() {
                "no latency samples".to_string()
            } else {
                format!("{:.3}", o.actual)
            };
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{actual}</td><td class=\"{c}\">{c}</td></tr>",
                esc(&o.expr),
                c = if o.pass { "pass" } else { "fail" }
            );
        }
        s.push_str("</table>");
    }
    if !deltas.is_empty() {
        s.push_str("<h2>Baseline comparison</h2><table><tr><th>Metric</th><th>Baseline</th><th>Current</th><th>Change</th><th></th></tr>");
        for d in deltas {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:+.1}%</td><td class=\"{c}\">{t}</td></tr>",
                esc(&d.metric),
                d.baseline,
                d.current,
                d.change * 100.0,
                c = if d.regression { "fail" } else { "pass" },
                t = if d.regression { "regression" } else { "ok" }
            );
        }
        s.push_str("</table>");
    }
    s
}

/// The HTML report of a `scalewise load` run.
pub(crate) fn load_report(r: &Report, outcomes: &[Outcome], deltas: &[Delta]) -> String {
    let mut s = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>scalewise load: {t}</title><style>{STYLE}</style></head><body>\
         <h1>scalewise load</h1><p>{t} — {p}, {m} model, {sh}, {c} connections, {d:.1}s{i}</p>",
        t = esc(&r.target),
        p = esc(&r.protocol),
        m = esc(&r.model),
        sh = esc(&r.shape),
        c = r.connections,
        d = r.duration_s,
        i = if r.interrupted { " (interrupted: partial results)" } else { "" }
    );
    if r.interrupted_requests > 0 {
        let _ = write!(
            s,
            "<p>Interrupted: {} requests in flight at the end were abandoned ({}) and are not recorded.</p>",
            r.interrupted_requests,
            if r.interrupted {
                "at Ctrl-C".to_string()
            } else {
                format!("graceful stop {}s", r.graceful_stop_s)
            }
        );
    }
    let _ = write!(
        s,
        "<table><tr><th>Requests</th><th>req/s</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>Errors</th><th>Bytes</th></tr>\
         <tr><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({:.2}%)</td><td>{}</td></tr></table>",
        r.requests,
        r.rps,
        ms(r.p50_ms),
        ms(r.p90_ms),
        ms(r.p99_ms),
        ms(r.p999_ms),
        ms(r.max_ms),
        r.errors.total,
        r.error_rate * 100.0,
        r.bytes
    );
    if let Some(t) = r.target_rps {
        let _ = write!(
            s,
            "<p>Open model: target {t:.1} req/s, achieved {:.1} req/s, late starts {}, missed {}. Uncorrected p99 {} (corrected {}).</p>",
            r.rps,
            r.late,
            r.missed,
            ms(r.uncorrected.p99_ms),
            ms(r.p99_ms)
        );
    }
    s.push_str(&outcome_rows(outcomes, deltas));
    let tl = &r.timeline;
    s.push_str(&line_chart(
        "Latency over time",
        "ms",
        &[
            (
                "p50",
                "#1f77b4",
                tl.iter().map(|x| (x.t, x.p50_ms)).collect(),
            ),
            (
                "p99",
                "#d62728",
                tl.iter().map(|x| (x.t, x.p99_ms)).collect(),
            ),
            (
                "max",
                "#999999",
                tl.iter().map(|x| (x.t, x.max_ms)).collect(),
            ),
        ],
        None,
    ));
    s.push_str(&line_chart(
        "Throughput",
        "/s",
        &[(
            "req/s",
            "#2ca02c",
            tl.iter().map(|x| (x.t, x.rps)).collect(),
        )],
        None,
    ));
    let labels: Vec<String> = r
        .percentiles
        .iter()
        .map(|p| format!("{}", p.percentile))
        .collect();
    s.push_str(&line_chart(
        "Latency by percentile",
        "ms",
        &[(
            "latency",
            "#9467bd",
            r.percentiles
                .iter()
                .enumerate()
                .map(|(i, p)| (i as f64, p.ms))
                .collect(),
        )],
        Some(&labels),
    ));
    s.push_str(&line_chart(
        "Errors over time",
        "",
        &[(
            "errors",
            "#d62728",
            tl.iter().map(|x| (x.t, x.errors as f64)).collect(),
        )],
        None,
    ));
    let e = &r.errors;
    s.push_str(&bar_chart(
        "Errors by category",
        &[
            ("connect".into(), e.connect as f64),
            ("timeout".into(), e.timeout as f64),
            ("reset".into(), e.reset as f64),
            ("tls".into(), e.tls as f64),
            ("protocol".into(), e.protocol as f64),
            ("http_4xx".into(), e.http_4xx as f64),
            ("http_5xx".into(), e.http_5xx as f64),
        ],
        "#d62728",
    ));
    if !r.error_messages.is_empty() {
        // Server-influenced text: escaped like every other value in the page.
        s.push_str(
            "<h2>First error by category</h2><table><tr><th>Category</th><th>Message</th></tr>",
        );
        for (kind, m) in &r.error_messages {
            let _ = write!(s, "<tr><td>{}</td><td>{}</td></tr>", esc(kind), esc(m));
        }
        s.push_str("</table>");
    }
    let statuses: Vec<(String, f64)> = r
        .statuses
        .iter()
        .map(|(k, v)| (k.clone(), *v as f64))
        .collect();
    if !statuses.is_empty() {
        s.push_str(&bar_chart("Status codes", &statuses, "#1f77b4"));
    }
    if !r.steps.is_empty() {
        s.push_str("<h2>Steps</h2><table><tr><th>Step</th><th>Requests</th><th>Errors</th><th>p50</th><th>p99</th><th>max</th></tr>");
        for st in &r.steps {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&st.name),
                st.requests,
                st.errors,
                ms(st.latency.p50_ms),
                ms(st.latency.p99_ms),
                ms(st.latency.max_ms)
            );
        }
        s.push_str("</table>");
    }
    if let Some(c) = &r.checks {
        let _ = write!(
            s,
            "<h2>Checks</h2><p>{:.2}% passed ({} passed, {} failed)</p><table><tr><th>Check</th><th>Step</th><th>Passed</th><th>Failed</th><th>Result</th></tr>",
            c.rate * 100.0,
            c.passes,
            c.fails
        );
        for ch in &c.list {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{c}\">{c}</td></tr>",
                esc(&ch.name),
                esc(&ch.step),
                ch.passes,
                ch.fails,
                c = if ch.fails == 0 { "pass" } else { "fail" }
            );
        }
        s.push_str("</table>");
    }
    s.push_str("</body></html>\n");
    s
}
