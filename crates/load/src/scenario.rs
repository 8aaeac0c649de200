//! Scenarios: named HTTP steps from a TOML or YAML file, with `{{var}}` templates, values
//! extracted from JSON bodies (`$.a.b[0]`) or headers (`header:Name`), weights, think time and
//! CSV data rows.
//!
//! ```
//! let text = r#"
//! [vars]
//! base = "http://127.0.0.1:8080"
//!
//! [[steps]]
//! name = "login"
//! method = "POST"
//! url = "{{base}}/login"
//! body = '{"user":"alice"}'
//! on_start = true
//! extract = { token = "$.token" }
//!
//! [[steps]]
//! name = "profile"
//! url = "{{base}}/me"
//! headers = { Authorization = "Bearer {{token}}" }
//! "#;
//! let sc = scalewise_load::Scenario::parse(text, scalewise_load::ScenarioFormat::Toml, None).unwrap();
//! assert_eq!(sc.step_names(), vec!["login", "profile"]);
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Deserializer};

use crate::http1::{serialize, Conn, Stream};
use crate::recorder::{ErrorKind, Local};
use crate::runner::{connect, h2_connect, h2_exchange, H2Sender, Run};
use crate::target::{Target, TlsOptions};
use crate::LoadError;

/// File format of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioFormat {
    /// TOML.
    Toml,
    /// YAML.
    Yaml,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Var(String),
}

/// A string with `{{var}}` placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses a template.
    ///
    /// # Errors
    /// A message for unclosed `{{` or invalid variable names.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("unclosed `{{{{` in `{s}`"))?;
            let name = after[..close].trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
            {
                return Err(format!(
                    "bad variable name `{name}` in `{s}` (letters, digits, _ - .)"
                ));
            }
            parts.push(Part::Var(name.to_string()));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// Renders with `vars`; unknown variables render as the empty string.
    #[must_use]
    pub fn render(&self, vars: &HashMap<String, String>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v) => {
                    if let Some(val) = vars.get(v) {
                        out.push_str(val);
                    }
                }
            }
        }
        out
    }

    fn vars(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Lit(_) => None,
        })
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Template::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One segment of a JSON path.
#[derive(Debug, Clone, PartialEq)]
pub enum Seg {
    /// Object key (`.key` or `["key"]`).
    Key(String),
    /// Array index (`[0]`).
    Index(usize),
}

/// Where an extracted value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Extractor {
    /// A simple JSON path such as `$.data.items[0].id`.
    Json(Vec<Seg>),
    /// A response header (`header:Name`).
    Header(String),
}

impl Extractor {
    /// Parses `$.a.b[0]` or `header:Name`.
    ///
    /// # Errors
    /// A message describing the accepted forms.
    pub fn parse(s: &str) -> Result<Extractor, String> {
        if let Some(h) = s.strip_prefix("header:") {
            let h = h.trim();
            if h.is_empty() {
                return Err("`header:` needs a header name".into());
            }
            return Ok(Extractor::Header(h.to_ascii_lowercase()));
        }
        let bad = || format!("`{s}` is not a JSON path like $.a.b[0] or header:Name");
        let rest = s.strip_prefix('$').ok_or_else(bad)?;
        let mut segs = Vec::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '.' => {
                    let mut key = String::new();
                    while let Some(&n) = chars.peek() {
                        if n == '.' || n == '[' {
                            break;
                        }
                        key.push(n);
                        chars.next();
                    }
                    if key.is_empty() {
                        return Err(bad());
                    }
                    segs.push(Seg::Key(key));
                }
                '[' => {
                    let mut idx = String::new();
                    loop {
                        match chars.next() {
                            Some(']') => break,
                            Some(d) => idx.push(d),
                            None => return Err(bad()),
                        }
                    }
                    let idx = idx.trim();
                    if let Some(q) = idx.strip_prefix('"').and_then(|q| q.strip_suffix('"')) {
                        segs.push(Seg::Key(q.to_string()));
                    } else {
                        segs.push(Seg::Index(idx.parse().map_err(|_| bad())?));
                    }
                }
                _ => return Err(bad()),
            }
        }
        Ok(Extractor::Json(segs))
    }

    fn extract(
        &self,
        headers: &[(String, String)],
        json: Option<&serde_json::Value>,
    ) -> Option<String> {
        match self {
            Extractor::Header(h) => headers.iter().find(|(k, _)| k == h).map(|(_, v)| v.clone()),
            Extractor::Json(segs) => {
                let mut v = json?;
                for s in segs {
                    v = match s {
                        Seg::Key(k) => v.get(k)?,
                        Seg::Index(i) => v.get(*i)?,
                    };
                }
                Some(match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            }
        }
    }
}

impl<'de> Deserialize<'de> for Extractor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Extractor::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy)]
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::schedule::parse_duration(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone)]
struct Method(String);

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let up = s.to_ascii_uppercase();
        if up.is_empty() || !up.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(serde::de::Error::custom(format!(
                "`{s}` is not an HTTP method"
            )));
        }
        Ok(Method(up))
    }
}

fn default_method() -> Method {
    Method("GET".into())
}

/// How each iteration chooses steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pick {
    /// Every step in order; `weight` repeats a step.
    #[default]
    Sequence,
    /// One step per iteration, chosen at random in proportion to `weight`.
    Weighted,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataFile {
    csv: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    name: String,
    #[serde(default = "default_method")]
    method: Method,
    url: Template,
    #[serde(default)]
    headers: BTreeMap<String, Template>,
    #[serde(default)]
    body: Option<Template>,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    think_time: Option<Dur>,
    #[serde(default)]
    on_start: bool,
    #[serde(default)]
    extract: BTreeMap<String, Extractor>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    #[serde(default)]
    data: Option<DataFile>,
    #[serde(default)]
    pick: Pick,
    #[serde(default)]
    think_time: Option<Dur>,
    steps: Vec<StepFile>,
}

/// One step, validated.
#[derive(Debug, Clone)]
pub struct Step {
    /// Name (reported per step).
    pub name: String,
    method: String,
    url: Template,
    headers: Vec<(String, Template)>,
    body: Option<Template>,
    weight: u32,
    think: Option<Duration>,
    on_start: bool,
    extract: Vec<(String, Extractor)>,
}

/// A validated scenario.
#[derive(Debug)]
pub struct Scenario {
    /// Scenario name.
    pub name: String,
    steps: Vec<Step>,
    vars: HashMap<String, String>,
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
    pick: Pick,
    think: Option<Duration>,
    next_row: AtomicU64,
    pub(crate) tls: TlsOptions,
}

/// Variables every virtual user has without declaring them.
const BUILTIN: [&str; 3] = ["vu", "iteration", "random"];

/// Largest step weight (in sequence mode a weight is a repeat count per iteration).
const MAX_WEIGHT: u32 = 10_000;

/// Most rows loaded from a CSV file (memory bound).
const MAX_ROWS: usize = 1_000_000;

impl Scenario {
    /// Loads a scenario file (`.toml`, `.yaml` or `.yml`); CSV paths are relative to it.
    ///
    /// # Errors
    /// [`LoadError::Scenario`] naming the file, line and field.
    pub fn load(path: &Path) -> Result<Scenario, LoadError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LoadError::Scenario(format!("{}: {e}", path.display())))?;
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => ScenarioFormat::Yaml,
            _ => ScenarioFormat::Toml,
        };
        Scenario::parse(&text, format, path.parent()).map_err(|e| match e {
            LoadError::Scenario(m) => LoadError::Scenario(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses scenario text; `base` resolves relative CSV paths.
    ///
    /// # Errors
    /// [`LoadError::Scenario`] naming the line and field.
    pub fn parse(
        text: &str,
        format: ScenarioFormat,
        base: Option<&Path>,
    ) -> Result<Scenario, LoadError> {
        let file: ScenarioFile = match format {
            ScenarioFormat::Toml => {
                toml::from_str(text).map_err(|e| LoadError::Scenario(toml_error(&e, text)))?
            }
            ScenarioFormat::Yaml => {
                serde_yaml::from_str(text).map_err(|e| LoadError::Scenario(yaml_error(&e, text)))?
            }
        };
        if file.steps.is_empty() {
            return Err(LoadError::Scenario(
                "`steps`: at least one step is required".into(),
            ));
        }
        let (columns, rows) = match &file.data {
            Some(d) => {
                let p = match base {
                    Some(b) => b.join(&d.csv),
                    None => d.csv.clone().into(),
                };
                let line = line_of(text, &d.csv)
                    .map(|l| format!("line {l}: "))
                    .unwrap_or_default();
                read_csv(&p)
                    .map_err(|e| LoadError::Scenario(format!("{line}field `data.csv`: {e}")))?
            }
            None => (Vec::new(), Vec::new()),
        };
        let mut known: Vec<String> = BUILTIN.iter().map(|s| (*s).to_string()).collect();
        known.extend(file.vars.keys().cloned());
        known.extend(columns.iter().cloned());
        for s in &file.steps {
            known.extend(s.extract.keys().cloned());
        }
        let mut steps = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for s in &file.steps {
            if names.contains(&s.name.as_str()) {
                let line = line_of(text, &s.name)
                    .map(|l| format!("line {l}: "))
                    .unwrap_or_default();
                return Err(LoadError::Scenario(format!(
                    "{line}field `name`: duplicate step name `{}`",
                    s.name
                )));
            }
            names.push(&s.name);
            let mut fields: Vec<(&str, &Template)> = vec![("url", &s.url)];
            fields.extend(s.headers.iter().map(|(k, v)| (k.as_str(), v)));
            if let Some(b) = &s.body {
                fields.push(("body", b));
            }
            for (field, t) in fields {
                for v in t.vars() {
                    if !known.iter().any(|k| k == v) {
                        let needle = format!("{{{{{v}}}}}");
                        let line = line_of(text, &needle)
                            .map(|l| format!("line {l}: "))
                            .unwrap_or_default();
                        return Err(LoadError::Scenario(format!(
                            "{line}step `{}` field `{field}`: unknown variable `{v}` (not in vars, CSV columns or any extract)",
                            s.name
                        )));
                    }
                }
            }
            if s.weight.is_some_and(|w| w > MAX_WEIGHT) {
                let line = line_of(text, &s.name)
                    .map(|l| format!("line {l}: "))
                    .unwrap_or_default();
                return Err(LoadError::Scenario(format!(
                    "{line}step `{}` field `weight`: at most {MAX_WEIGHT}",
                    s.name
                )));
            }
            if s.weight == Some(0) && file.pick == Pick::Weighted {
                let line = line_of(text, &s.name)
                    .map(|l| format!("line {l}: "))
                    .unwrap_or_default();
                return Err(LoadError::Scenario(format!(
                    "{line}step `{}` field `weight`: must be ≥ 1",
                    s.name
                )));
            }
            steps.push(Step {
                name: s.name.clone(),
                method: s.method.0.clone(),
                url: s.url.clone(),
                headers: s
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                body: s.body.clone(),
                weight: s.weight.unwrap_or(1),
                think: s.think_time.map(|d| d.0),
                on_start: s.on_start,
                extract: s
                    .extract
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            });
        }
        if steps.len() > usize::from(u16::MAX) {
            return Err(LoadError::Scenario("too many steps (max 65535)".into()));
        }
        Ok(Scenario {
            name: file.name.unwrap_or_else(|| "scenario".into()),
            steps,
            vars: file.vars.into_iter().collect(),
            columns,
            rows,
            pick: file.pick,
            think: file.think_time.map(|d| d.0),
            next_row: AtomicU64::new(0),
            tls: TlsOptions::default(),
        })
    }

    /// Step names in file order.
    #[must_use]
    pub fn step_names(&self) -> Vec<String> {
        self.steps.iter().map(|s| s.name.clone()).collect()
    }

    /// The first step's rendered URL with only the declared variables (used to probe the target).
    #[must_use]
    pub fn first_url(&self) -> String {
        self.steps
            .first()
            .map(|s| s.url.render(&self.vars))
            .unwrap_or_default()
    }
}

/// 1-based line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.find(needle)
        .map(|pos| text[..pos].matches('\n').count() + 1)
}

/// The key of a `key = value` / `key: value` line, for naming the field in errors.
fn key_of(line: &str) -> Option<String> {
    let l = line.trim().trim_start_matches("- ").trim();
    let end = l.find(['=', ':'])?;
    let key = l[..end].trim().trim_matches('"');
    (!key.is_empty() && !key.contains(' ')).then(|| key.to_string())
}

fn toml_error(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message();
    match e.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let line = text[..start].matches('\n').count() + 1;
            let col = start - text[..start].rfind('\n').map_or(0, |p| p + 1) + 1;
            let field = text
                .lines()
                .nth(line - 1)
                .and_then(key_of)
                .map(|k| format!(", field `{k}`"))
                .unwrap_or_default();
            format!("line {line}, column {col}{field}: {msg}")
        }
        None => msg.to_string(),
    }
}

fn yaml_error(e: &serde_yaml::Error, text: &str) -> String {
    let msg = e.to_string();
    let Some(loc) = e.location() else { return msg };
    // serde_yaml places errors raised by our own validation (templates, durations, paths) at the
    // start of the enclosing mapping; move them to the line holding the offending value, which
    // those messages quote in backticks.
    let mut line = loc.line().max(1);
    let quoted = msg.split('`').nth(1).filter(|q| !q.is_empty());
    if let Some(q) = quoted {
        if let Some(off) = text.lines().skip(line - 1).position(|l| l.contains(q)) {
            line += off;
        }
    }
    let bare = msg
        .rsplit_once(" at line ")
        .map_or(msg.as_str(), |(m, _)| m);
    let field = text
        .lines()
        .nth(line - 1)
        .and_then(key_of)
        .map(|k| format!(", field `{k}`"))
        .unwrap_or_default();
    format!("line {line}{field}: {bare}")
}

type Csv = (Vec<String>, Vec<Vec<String>>);

fn read_csv(path: &Path) -> Result<Csv, String> {
    let mut rdr = csv::Reader::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let columns: Vec<String> = rdr
        .headers()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| match e.position() {
            Some(p) => format!("{} line {}: {e}", path.display(), p.line()),
            None => format!("{}: {e}", path.display()),
        })?;
        rows.push(rec.iter().map(str::to_string).collect());
        if rows.len() >= MAX_ROWS {
            break;
        }
    }
    if rows.is_empty() {
        return Err(format!("{}: no data rows", path.display()));
    }
    Ok((columns, rows))
}

/// Per-virtual-user connection pool, one connection per origin (bounded: scenarios name few).
struct Pool {
    entries: Vec<(String, Target, Option<Link>)>,
}

/// A virtual user's connection to one origin.
enum Link {
    H1(Conn<Stream>),
    /// `--http2`: the user's own HTTP/2 connection (one stream in flight, like a browser tab
    /// that waits for each answer before the next step).
    H2(H2Sender),
}

impl Link {
    async fn open(target: &Target, timeout: Duration, h2: bool) -> Result<Self, ErrorKind> {
        if h2 {
            h2_connect(target, timeout)
                .await
                .map(Link::H2)
                .map_err(|(k, _)| k)
        } else {
            connect(target, timeout)
                .await
                .map(|s| Link::H1(Conn::new(s)))
                .map_err(|(k, _)| k)
        }
    }
}

const MAX_ORIGINS: usize = 16;

pub(crate) async fn scenario_vu(run: Arc<Run>, vu: usize) {
    let Some(sc) = run.plan.scenario.clone() else {
        return;
    };
    let mut local = run.recorder.local(vu);
    let mut vars = sc.vars.clone();
    vars.insert("vu".into(), vu.to_string());
    let mut pool = Pool {
        entries: Vec::new(),
    };
    let total_weight: u64 = sc
        .steps
        .iter()
        .filter(|s| !s.on_start)
        .map(|s| u64::from(s.weight))
        .sum();
    let mut started = false;
    let mut iteration: u64 = 0;
    loop {
        if !sc.rows.is_empty() {
            let i = sc.next_row.fetch_add(1, Ordering::Relaxed) as usize % sc.rows.len();
            for (c, v) in sc.columns.iter().zip(sc.rows[i].iter()) {
                vars.insert(c.clone(), v.clone());
            }
        }
        vars.insert("iteration".into(), iteration.to_string());
        iteration += 1;
        let mut plan: Vec<usize> = Vec::new();
        if !started {
            plan.extend(
                sc.steps
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.on_start)
                    .map(|(i, _)| i),
            );
            started = true;
        }
        match sc.pick {
            Pick::Sequence => {
                for (i, s) in sc.steps.iter().enumerate().filter(|(_, s)| !s.on_start) {
                    plan.extend(std::iter::repeat_n(i, s.weight as usize));
                }
            }
            Pick::Weighted if total_weight > 0 => {
                let mut r = rand::thread_rng().gen_range(0..total_weight);
                for (i, s) in sc.steps.iter().enumerate().filter(|(_, s)| !s.on_start) {
                    if r < u64::from(s.weight) {
                        plan.push(i);
                        break;
                    }
                    r -= u64::from(s.weight);
                }
            }
            Pick::Weighted => {}
        }
        if plan.is_empty() {
            return;
        }
        for i in plan {
            let Some(scheduled) = run.turn(vu, &mut local).await else {
                return;
            };
            vars.insert("random".into(), rand::thread_rng().gen::<u32>().to_string());
            let step = &sc.steps[i];
            #[allow(clippy::cast_possible_truncation)]
            let idx = i as u16;
            run_step(
                &run, &sc, step, idx, scheduled, &mut vars, &mut pool, &mut local,
            )
            .await;
            if let Some(t) = step.think.or(sc.think).or(run.plan.think) {
                tokio::time::sleep(t).await;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_step(
    run: &Run,
    sc: &Scenario,
    step: &Step,
    idx: u16,
    scheduled: Instant,
    vars: &mut HashMap<String, String>,
    pool: &mut Pool,
    local: &mut Local<'_>,
) {
    let timeout = run.plan.timeout;
    let sent = Instant::now();
    let url_s = step.url.render(vars);
    let Ok(url) = url::Url::parse(&url_s) else {
        local.error(idx, ErrorKind::Protocol, 0);
        return;
    };
    if !matches!(url.scheme(), "http" | "https") {
        local.error(idx, ErrorKind::Protocol, 0);
        return;
    }
    let origin = format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    );
    let pos = match pool.entries.iter().position(|(o, _, _)| *o == origin) {
        Some(p) => p,
        None => match Target::parse(&url_s, &sc.tls).await {
            Ok(t) => {
                if pool.entries.len() >= MAX_ORIGINS {
                    pool.entries.remove(0);
                }
                pool.entries.push((origin, t, None));
                pool.entries.len() - 1
            }
            Err(_) => {
                local.error(idx, ErrorKind::Connect, 0);
                return;
            }
        },
    };
    let (_, target, conn) = &mut pool.entries[pos];
    let h2 = run.plan.http2;
    if conn.is_none() {
        match Link::open(target, timeout, h2).await {
            Ok(l) => *conn = Some(l),
            Err(kind) => {
                local.error(idx, kind, 0);
                return;
            }
        }
    }
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let headers: Vec<(String, String)> = step
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.render(vars)))
        .collect();
    let body = step
        .body
        .as_ref()
        .map(|b| b.render(vars))
        .unwrap_or_default();
    let capture = !step.extract.is_empty();
    let result = match conn {
        Some(Link::H2(sender)) => {
            let mut req = http::Request::builder()
                .method(step.method.as_str())
                .uri(url.as_str());
            for (k, v) in &headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let Ok(req) = req.body(http_body_util::Full::new(bytes::Bytes::from(body))) else {
                local.error(idx, ErrorKind::Protocol, 0);
                return;
            };
            tokio::time::timeout(timeout, h2_exchange(sender, req, capture))
                .await
                .map(|r| r.map_err(|k| (k, std::io::Error::other("HTTP/2 exchange failed"))))
        }
        Some(Link::H1(c)) => {
            let wire = serialize(
                &step.method,
                &path,
                &target.authority,
                &headers,
                body.as_bytes(),
                run.plan.keepalive,
            );
            let mut result = tokio::time::timeout(timeout, c.request(&wire, capture)).await;
            if matches!(result, Ok(Err(_))) && c.stale() {
                // The server closed the idle keep-alive connection: resend once on a new one.
                *conn = None;
                if let Ok(s) = connect(target, timeout).await {
                    let mut fresh = Conn::new(s);
                    result = tokio::time::timeout(timeout, fresh.request(&wire, capture)).await;
                    *conn = Some(Link::H1(fresh));
                }
            }
            result
        }
        None => return,
    };
    match result {
        Ok(Ok(resp)) => {
            if resp.close || (!h2 && !run.plan.keepalive) {
                *conn = None;
            }
            if capture && resp.status < 400 {
                let json: Option<serde_json::Value> = serde_json::from_slice(&resp.body).ok();
                for (name, ex) in &step.extract {
                    match ex.extract(&resp.headers, json.as_ref()) {
                        Some(v) => {
                            vars.insert(name.clone(), v);
                        }
                        None => {
                            // The response lacks what later steps depend on: a failed step.
                            local.error(idx, ErrorKind::Protocol, resp.bytes);
                            return;
                        }
                    }
                }
            }
            local.response(idx, scheduled, sent, resp.status, resp.bytes);
        }
        Ok(Err((kind, _))) => {
            *conn = None;
            local.error(idx, kind, 0);
        }
        Err(_) => {
            *conn = None;
            local.error(idx, ErrorKind::Timeout, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render() {
        let t = Template::parse("a{{x}}b{{ y }}").unwrap();
        let vars: HashMap<String, String> =
            [("x".into(), "1".into()), ("y".into(), "2".into())].into();
        assert_eq!(t.render(&vars), "a1b2");
        assert!(Template::parse("{{x").is_err());
        assert!(Template::parse("{{a b}}").is_err());
    }

    #[test]
    fn json_paths_extract() {
        let v: serde_json::Value = serde_json::json!({"a": {"b": [{"id": 7}, 2]}, "s": "str"});
        let e = Extractor::parse("$.a.b[0].id").unwrap();
        assert_eq!(e.extract(&[], Some(&v)), Some("7".into()));
        assert_eq!(
            Extractor::parse("$.s").unwrap().extract(&[], Some(&v)),
            Some("str".into())
        );
        assert_eq!(
            Extractor::parse("$[\"s\"]").unwrap().extract(&[], Some(&v)),
            Some("str".into())
        );
        assert_eq!(
            Extractor::parse("$.missing")
                .unwrap()
                .extract(&[], Some(&v)),
            None
        );
        assert!(Extractor::parse("a.b").is_err());
        assert!(Extractor::parse("$.a[x]").is_err());
        let h = Extractor::parse("header:X-Token").unwrap();
        assert_eq!(
            h.extract(&[("x-token".into(), "t".into())], None),
            Some("t".into())
        );
    }

    proptest::proptest! {
        /// User-written strings never panic the parsers.
        #[test]
        fn parsers_never_panic(text in ".{0,80}") {
            if let Ok(t) = Template::parse(&text) {
                let _ = t.render(&HashMap::new());
            }
            let _ = Extractor::parse(&text);
            let _ = crate::Threshold::parse(&text);
            let _ = crate::schedule::Shape::parse(&text);
            let _ = crate::schedule::Shape::parse_stages(&text);
            let _ = Scenario::parse(&text, ScenarioFormat::Toml, None);
            let _ = Scenario::parse(&text, ScenarioFormat::Yaml, None);
        }
    }
}
