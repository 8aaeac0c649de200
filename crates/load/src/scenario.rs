//! Scenarios: named steps from a TOML or YAML file, with `{{var}}` templates, values extracted
//! from JSON bodies (`$.a.b[0]`) or headers (`header:Name`), weights, think time and CSV data
//! rows. A step is an HTTP request (`url`) or a WebSocket session (`ws`) whose `actions` send
//! messages (text or binary frames) and wait (`recv`) for matching replies, extracting values
//! from them. An HTTP step's `check` table asserts on its responses (status, body substring,
//! JSON paths, headers); each check is counted pass/fail without failing the request, as k6's
//! `check` is.
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
//! check = { status = 200, match = { "$.name" = "alice", "header:Content-Type" = "application/json" } }
//!
//! [[steps]]
//! name = "chat"
//! ws = "ws://127.0.0.1:8080/chat?token={{token}}"
//!
//! [[steps.actions]]
//! send = '{"say":"hi from {{vu}}"}'
//!
//! [[steps.actions]]
//! recv = "reply"
//! match = { "$.type" = "said" }
//! timeout = "2s"
//! extract = { msg_id = "$.id" }
//! "#;
//! let sc = scalewise_load::Scenario::parse(text, scalewise_load::ScenarioFormat::Toml, None).unwrap();
//! assert_eq!(sc.step_names(), vec!["login", "profile", "chat"]);
//! assert!(sc.has_checks());
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Deserializer};
use tokio_tungstenite::tungstenite::Message;

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

/// How the bytes of a binary WebSocket frame are written in a scenario file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// Pairs of hex digits, whitespace allowed between them (`de ad be ef`).
    Hex,
    /// Standard base64 (`+/`), padding optional, whitespace ignored.
    Base64,
}

/// Base64 as people paste it: with or without the trailing `=`.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

impl Encoding {
    fn name(self) -> &'static str {
        match self {
            Encoding::Hex => "hex",
            Encoding::Base64 => "base64",
        }
    }

    fn example(self) -> &'static str {
        match self {
            Encoding::Hex => "pairs of hex digits such as `de ad be ef`",
            Encoding::Base64 => "standard base64 such as `3q2+7w==`",
        }
    }

    /// Whether `c` can appear in an encoded value (whitespace is allowed in both).
    fn allows(self, c: char) -> bool {
        c.is_ascii_whitespace()
            || match self {
                Encoding::Hex => c.is_ascii_hexdigit(),
                Encoding::Base64 => c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='),
            }
    }

    /// Decodes `text`; the error says what is wrong with it.
    fn decode(self, text: &str) -> Result<Vec<u8>, String> {
        if let Some(c) = text.chars().find(|c| !self.allows(*c)) {
            return Err(format!("`{c}` cannot appear in {}", self.name()));
        }
        let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        match self {
            Encoding::Hex => {
                if compact.len() % 2 != 0 {
                    return Err(format!(
                        "{} hex digits is an odd number (two per byte)",
                        compact.len()
                    ));
                }
                // Only ASCII hex digits are left, so every pair is a valid byte.
                Ok(compact
                    .as_bytes()
                    .chunks(2)
                    .filter_map(|p| std::str::from_utf8(p).ok())
                    .filter_map(|p| u8::from_str_radix(p, 16).ok())
                    .collect())
            }
            Encoding::Base64 => {
                use base64::{DecodeError, Engine as _};
                BASE64.decode(compact.as_bytes()).map_err(|e| match e {
                    DecodeError::InvalidLength(n) => format!(
                        "{n} characters cannot be base64 (every 4 characters are 3 bytes; a \
                         shorter tail has 2 or 3)"
                    ),
                    DecodeError::InvalidByte(at, b) => {
                        format!("`{}` at character {} is misplaced", char::from(b), at + 1)
                    }
                    DecodeError::InvalidLastSymbol(at, b) => format!(
                        "the last character `{}` (character {}) leaves stray bits; is a character missing?",
                        char::from(b),
                        at + 1
                    ),
                    DecodeError::InvalidPadding => "the `=` padding is wrong".to_string(),
                })
            }
        }
    }
}

/// The bytes of a binary frame, written hex- or base64-encoded, with `{{var}}` templates that
/// are rendered before decoding (so a variable can hold an encoded value, e.g. one extracted
/// from a JSON reply).
#[derive(Debug, Clone)]
struct BinTemplate {
    encoding: Encoding,
    template: Template,
    /// Decoded at load time when the value has no variables.
    fixed: Option<Vec<u8>>,
}

impl BinTemplate {
    /// Parses a value of a `*_hex` / `*_base64` field. A value without variables must decode
    /// now; one with variables must at least be made of the encoding's characters outside them.
    fn parse(text: &str, encoding: Encoding) -> Result<BinTemplate, String> {
        let bad = |why: String| {
            format!(
                "`{text}` is not {}: {why}; expected {}",
                encoding.name(),
                encoding.example()
            )
        };
        let template = Template::parse(text)?;
        let fixed = if template.vars().next().is_none() {
            Some(encoding.decode(text).map_err(bad)?)
        } else {
            for p in &template.parts {
                if let Part::Lit(l) = p {
                    if let Some(c) = l.chars().find(|c| !encoding.allows(*c)) {
                        return Err(bad(format!(
                            "`{c}` cannot appear in {} (outside `{{{{...}}}}`)",
                            encoding.name()
                        )));
                    }
                }
            }
            None
        };
        Ok(BinTemplate {
            encoding,
            template,
            fixed,
        })
    }

    /// The bytes for this use; an error when the rendered variables do not decode.
    fn render(&self, vars: &HashMap<String, String>) -> Result<Vec<u8>, String> {
        match &self.fixed {
            Some(b) => Ok(b.clone()),
            None => self.encoding.decode(&self.template.render(vars)),
        }
    }
}

fn de_hex<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BinTemplate>, D::Error> {
    let s = String::deserialize(d)?;
    BinTemplate::parse(&s, Encoding::Hex)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn de_base64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BinTemplate>, D::Error> {
    let s = String::deserialize(d)?;
    BinTemplate::parse(&s, Encoding::Base64)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// One segment of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Seg {
    /// Object key (`.key` or `["key"]`).
    Key(String),
    /// Array index (`[0]`).
    Index(usize),
}

/// Where an extracted value comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
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

/// Written back in the form [`Extractor::parse`] reads (check names quote their path).
impl std::fmt::Display for Extractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Extractor::Header(h) => write!(f, "header:{h}"),
            Extractor::Json(segs) => {
                f.write_str("$")?;
                for s in segs {
                    match s {
                        Seg::Key(k) if k.is_empty() || k.contains(['.', '[']) => {
                            write!(f, "[\"{k}\"]")?;
                        }
                        Seg::Key(k) => write!(f, ".{k}")?,
                        Seg::Index(i) => write!(f, "[{i}]")?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// Whether `haystack` holds `needle` (a `contains` of a WebSocket `recv` or an HTTP `check`).
fn contains(haystack: &[u8], needle: &str) -> bool {
    contains_bytes(haystack, needle.as_bytes())
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether every path holds its templated value (`match` of a `recv` or a `check`).
fn all_match(
    matches: &[(Extractor, Template)],
    headers: &[(String, String)],
    json: Option<&serde_json::Value>,
    vars: &HashMap<String, String>,
) -> bool {
    matches
        .iter()
        .all(|(path, want)| one_matches(path, want, headers, json, vars))
}

fn one_matches(
    path: &Extractor,
    want: &Template,
    headers: &[(String, String)],
    json: Option<&serde_json::Value>,
    vars: &HashMap<String, String>,
) -> bool {
    path.extract(headers, json)
        .is_some_and(|v| v == want.render(vars))
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
    #[serde(default)]
    method: Option<Method>,
    /// HTTP(S) steps.
    #[serde(default)]
    url: Option<Template>,
    /// WebSocket steps.
    #[serde(default)]
    ws: Option<Template>,
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
    #[serde(default)]
    actions: Vec<Action>,
    /// HTTP steps: assertions on the response, counted pass/fail (k6's `check`).
    #[serde(default)]
    check: Option<CheckFile>,
    /// HTTP steps: statuses that are not errors although ≥ 400 (k6's `expectedStatuses`),
    /// e.g. a 404 from a lookup that may miss.
    #[serde(default)]
    expected_status: Option<Statuses>,
    /// WebSocket steps: keep the session open from one run of the step to the next (one
    /// connection per user, as a chat client holds it) instead of one session per run.
    #[serde(default)]
    persistent: bool,
}

/// A step's `check` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckFile {
    #[serde(default)]
    status: Option<Statuses>,
    #[serde(default)]
    contains: Option<Template>,
    #[serde(default, rename = "match")]
    matches: BTreeMap<Extractor, Template>,
}

/// `status = 200` or `status = [200, 404]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Statuses(Vec<u16>);

impl<'de> Deserialize<'de> for Statuses {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTING: &str = "`status` as an HTTP status code (100-599) or a list of them";
        fn code<E: serde::de::Error>(v: i128) -> Result<u16, E> {
            u16::try_from(v)
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| {
                    E::custom(format!(
                        "`{v}` is not an HTTP status code; expected {EXPECTING}"
                    ))
                })
        }
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Statuses;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(EXPECTING)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Statuses, E> {
                Ok(Statuses(vec![code(i128::from(v))?]))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Statuses, E> {
                Ok(Statuses(vec![code(i128::from(v))?]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Statuses, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<i64>()? {
                    out.push(code(i128::from(v))?);
                }
                if out.is_empty() {
                    return Err(serde::de::Error::custom(format!(
                        "an empty list accepts no status; expected {EXPECTING}"
                    )));
                }
                Ok(Statuses(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// One action of a WebSocket step as written: exactly one of `send`, `send_hex`,
/// `send_base64` or `recv`; the other fields qualify a `recv`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionFile {
    #[serde(default)]
    send: Option<Template>,
    /// A binary frame, hex-encoded in the file.
    #[serde(default, deserialize_with = "de_hex")]
    send_hex: Option<BinTemplate>,
    /// A binary frame, base64-encoded in the file.
    #[serde(default, deserialize_with = "de_base64")]
    send_base64: Option<BinTemplate>,
    #[serde(default)]
    recv: Option<String>,
    /// The `recv` waits for a binary frame (else a text message).
    #[serde(default)]
    binary: bool,
    #[serde(default, rename = "match")]
    matches: BTreeMap<Extractor, Template>,
    #[serde(default)]
    contains: Option<Template>,
    #[serde(default)]
    equals: Option<Template>,
    #[serde(default, deserialize_with = "de_hex")]
    contains_hex: Option<BinTemplate>,
    #[serde(default, deserialize_with = "de_base64")]
    contains_base64: Option<BinTemplate>,
    #[serde(default, deserialize_with = "de_hex")]
    equals_hex: Option<BinTemplate>,
    #[serde(default, deserialize_with = "de_base64")]
    equals_base64: Option<BinTemplate>,
    #[serde(default)]
    timeout: Option<Dur>,
    #[serde(default)]
    extract: BTreeMap<String, Extractor>,
}

/// The one pattern given among a text field and its `_hex` / `_base64` forms (`contains`,
/// `equals`), checked against the kind of frame the `recv` waits for.
fn pattern(
    field: &str,
    binary: bool,
    text: Option<Template>,
    hex: Option<BinTemplate>,
    b64: Option<BinTemplate>,
) -> Result<Option<Pattern>, String> {
    match (text, hex, b64) {
        (None, None, None) => Ok(None),
        (Some(_), _, _) if binary => Err(format!(
            "`{field}` matches text messages; a `binary = true` recv uses `{field}_hex` or `{field}_base64`"
        )),
        (Some(t), None, None) => Ok(Some(Pattern::Text(t))),
        (None, Some(_), Some(_)) => Err(format!(
            "give one of `{field}_hex` and `{field}_base64`, not both"
        )),
        (None, Some(b), None) | (None, None, Some(b)) if binary => Ok(Some(Pattern::Bytes(b))),
        (None, Some(b), None) | (None, None, Some(b)) => Err(format!(
            "`{field}_{}` matches binary frames: add `binary = true` to the recv",
            b.encoding.name()
        )),
        (Some(_), _, _) => Err(format!(
            "give one of `{field}`, `{field}_hex` and `{field}_base64`"
        )),
    }
}

impl TryFrom<ActionFile> for Action {
    type Error = String;

    fn try_from(a: ActionFile) -> Result<Action, String> {
        let qualifiers = [
            ("match", !a.matches.is_empty()),
            ("contains", a.contains.is_some()),
            ("equals", a.equals.is_some()),
            ("contains_hex", a.contains_hex.is_some()),
            ("contains_base64", a.contains_base64.is_some()),
            ("equals_hex", a.equals_hex.is_some()),
            ("equals_base64", a.equals_base64.is_some()),
            ("binary", a.binary),
            ("timeout", a.timeout.is_some()),
            ("extract", !a.extract.is_empty()),
        ];
        // A WebSocket message has no headers: only JSON paths make sense here.
        if let Some(Extractor::Header(h)) = a
            .matches
            .keys()
            .chain(a.extract.values())
            .find(|e| matches!(e, Extractor::Header(_)))
        {
            return Err(format!(
                "`header:{h}`: WebSocket messages have no headers; use a JSON path like $.a.b"
            ));
        }
        let sends: Vec<(&str, Payload)> = [
            ("send", a.send.map(Payload::Text)),
            ("send_hex", a.send_hex.map(Payload::Binary)),
            ("send_base64", a.send_base64.map(Payload::Binary)),
        ]
        .into_iter()
        .filter_map(|(field, p)| p.map(|p| (field, p)))
        .collect();
        let mut sends = sends.into_iter();
        match (sends.next(), sends.next(), a.recv) {
            (Some((first, _)), Some((second, _)), _) => Err(format!(
                "an action sends one message: `{first}` or `{second}`, not both"
            )),
            (Some((field, _)), None, Some(name)) => Err(format!(
                "`{name}`: an action has either `{field}` or `recv`, not both"
            )),
            (None, _, None) => Err(
                "an action needs `send = \"message\"` (or `send_hex` / `send_base64` for a binary frame) or `recv = \"name\"`".to_string(),
            ),
            (Some((field, payload)), None, None) => match qualifiers.iter().find(|(_, set)| *set) {
                Some((q, _)) => Err(format!(
                    "`{q}` applies to `recv` actions, not `{field}` (put it in a `recv` after the `{field}`)"
                )),
                None => Ok(Action::Send(payload)),
            },
            (None, _, Some(name)) => {
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(format!(
                        "`recv = \"{name}\"`: the name (reported as `step.name`) needs letters, digits, _ or -"
                    ));
                }
                let binary = a.binary;
                Ok(Action::Recv(Recv {
                    name,
                    slot: 0,
                    binary,
                    matches: a.matches.into_iter().collect(),
                    contains: pattern(
                        "contains",
                        binary,
                        a.contains,
                        a.contains_hex,
                        a.contains_base64,
                    )?,
                    equals: pattern("equals", binary, a.equals, a.equals_hex, a.equals_base64)?,
                    timeout: a.timeout.map(|d| d.0),
                    extract: a.extract.into_iter().collect(),
                }))
            }
        }
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Validate inside the map visit rather than after it (as `serde(try_from)` would): the
        // TOML deserializer only attaches the action's location to errors raised in there.
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Action;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an action table such as { send = \"...\" } or { recv = \"reply\" }")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Action, A::Error> {
                let raw =
                    ActionFile::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Action::try_from(raw).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_map(V)
    }
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
    /// Index of the step's own entry in the per-step statistics.
    slot: u16,
    /// `url` of an HTTP step, `ws` of a WebSocket step.
    url: Template,
    headers: Vec<(String, Template)>,
    weight: u32,
    think: Option<Duration>,
    on_start: bool,
    kind: StepKind,
}

#[derive(Debug, Clone)]
enum StepKind {
    Http {
        method: String,
        body: Option<Template>,
        extract: Vec<(String, Extractor)>,
        checks: Checks,
        /// Statuses ≥ 400 that do not count as errors (`expected_status`).
        expected: Vec<u16>,
    },
    /// One WebSocket session per run of the step: handshake, the actions in order, close.
    Ws {
        actions: Vec<Action>,
        /// The session stays open across runs of the step (`persistent`).
        persistent: bool,
    },
}

/// The `check` table of an HTTP step, validated: assertions on every response, each counted
/// pass/fail on its own report entry. Like k6's `check`, a failing check neither fails the
/// request nor stops the iteration.
#[derive(Debug, Clone, Default)]
struct Checks {
    /// Index of the first check's entry in the recorder's check counters; the others follow.
    first: usize,
    list: Vec<Check>,
    /// Some check reads the body or the headers (else the engine need not keep them).
    capture: bool,
    /// Some check reads a JSON path (else the body is never parsed for checks).
    json: bool,
}

#[derive(Debug, Clone)]
enum Check {
    /// The status is one of these.
    Status(Vec<u16>),
    /// The body holds this (templated) text.
    Contains(Template),
    /// A JSON path or header holds this (templated) value.
    Match(Extractor, Template),
}

impl Checks {
    fn new(file: CheckFile, first: usize) -> Checks {
        let mut list = Vec::new();
        list.extend(file.status.map(|s| Check::Status(s.0)));
        list.extend(file.contains.map(Check::Contains));
        list.extend(file.matches.into_iter().map(|(e, t)| Check::Match(e, t)));
        let json = list
            .iter()
            .any(|c| matches!(c, Check::Match(Extractor::Json(_), _)));
        let capture = list.iter().any(|c| !matches!(c, Check::Status(_)));
        Checks {
            first,
            list,
            capture,
            json,
        }
    }

    /// Report names, `step.status`, `step.contains`, `step.$.path`, `step.header:name`.
    fn names(&self, step: &str) -> Vec<String> {
        self.list
            .iter()
            .map(|c| match c {
                Check::Status(_) => format!("{step}.status"),
                Check::Contains(_) => format!("{step}.contains"),
                Check::Match(e, _) => format!("{step}.{e}"),
            })
            .collect()
    }

    /// Records one pass or fail per check for a response.
    fn record(
        &self,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
        json: Option<&serde_json::Value>,
        vars: &HashMap<String, String>,
        local: &mut Local<'_>,
    ) {
        for (i, c) in self.list.iter().enumerate() {
            let pass = match c {
                Check::Status(ok) => ok.contains(&status),
                Check::Contains(t) => contains(body, &t.render(vars)),
                Check::Match(e, t) => one_matches(e, t, headers, json, vars),
            };
            local.check(self.first + i, pass);
        }
    }

    /// Records every check as failed: the step got no response to check (k6 likewise fails a
    /// check on a request that errored), so an outage cannot pass `checks>99%` by checking
    /// nothing.
    fn fail_all(&self, local: &mut Local<'_>) {
        for i in 0..self.list.len() {
            local.check(self.first + i, false);
        }
    }
}

/// One action of a WebSocket step.
#[derive(Debug, Clone)]
enum Action {
    /// Send a text message or a binary frame.
    Send(Payload),
    /// Wait for a matching data message.
    Recv(Recv),
}

/// What a `send` action sends.
#[derive(Debug, Clone)]
enum Payload {
    /// `send`: a text message.
    Text(Template),
    /// `send_hex` / `send_base64`: a binary frame.
    Binary(BinTemplate),
}

impl Payload {
    /// The message to send; an error when templated bytes do not decode.
    fn render(&self, vars: &HashMap<String, String>) -> Result<Message, String> {
        Ok(match self {
            Payload::Text(t) => Message::Text(t.render(vars)),
            Payload::Binary(b) => Message::Binary(b.render(vars)?),
        })
    }
}

/// A `contains` / `equals` of a `recv`: text, or bytes for a binary `recv`.
#[derive(Debug, Clone)]
enum Pattern {
    Text(Template),
    Bytes(BinTemplate),
}

impl Pattern {
    fn render(&self, vars: &HashMap<String, String>) -> Result<Vec<u8>, String> {
        match self {
            Pattern::Text(t) => Ok(t.render(vars).into_bytes()),
            Pattern::Bytes(b) => b.render(vars),
        }
    }

    /// The template, and the field it was written in (for unknown-variable errors).
    fn field<'a>(&'a self, text_field: &'static str) -> (&'static str, &'a Template) {
        match self {
            Pattern::Text(t) => (text_field, t),
            Pattern::Bytes(b) => (
                match (text_field, b.encoding) {
                    ("contains", Encoding::Hex) => "contains_hex",
                    ("contains", Encoding::Base64) => "contains_base64",
                    (_, Encoding::Hex) => "equals_hex",
                    (_, Encoding::Base64) => "equals_base64",
                },
                &b.template,
            ),
        }
    }
}

/// `recv`: wait (up to `timeout`) for the next data message of its kind (text, or binary
/// with `binary = true`) that matches, skipping others.
#[derive(Debug, Clone)]
struct Recv {
    /// Name; the action is reported as `step.name`.
    name: String,
    /// Index of the action's entry (`step.recv`) in the per-step statistics.
    slot: u16,
    /// Waits for a binary frame; text messages are skipped (and binary frames when false).
    binary: bool,
    matches: Vec<(Extractor, Template)>,
    contains: Option<Pattern>,
    equals: Option<Pattern>,
    timeout: Option<Duration>,
    extract: Vec<(String, Extractor)>,
}

/// A `recv`'s `contains` and `equals`, rendered (and decoded) once per wait.
#[derive(Debug, Default)]
struct Needles {
    contains: Option<Vec<u8>>,
    equals: Option<Vec<u8>>,
}

impl Recv {
    /// Renders `contains` and `equals` for this wait; an error when templated bytes do not
    /// decode.
    fn needles(&self, vars: &HashMap<String, String>) -> Result<Needles, String> {
        Ok(Needles {
            contains: self.contains.as_ref().map(|p| p.render(vars)).transpose()?,
            equals: self.equals.as_ref().map(|p| p.render(vars)).transpose()?,
        })
    }

    /// Whether a received message is the one this action waits for.
    fn accepts(
        &self,
        frame: &crate::ws::Frame,
        needles: &Needles,
        json: Option<&serde_json::Value>,
        vars: &HashMap<String, String>,
    ) -> bool {
        let msg = &frame.data;
        frame.binary == self.binary
            && needles.equals.as_ref().is_none_or(|e| e == msg)
            && needles
                .contains
                .as_ref()
                .is_none_or(|c| contains_bytes(msg, c))
            && all_match(&self.matches, &[], json, vars)
    }

    /// Whether the message has to be parsed as JSON.
    fn needs_json(&self) -> bool {
        !self.matches.is_empty() || !self.extract.is_empty()
    }
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
    /// Entry names of the per-step statistics (see [`Scenario::report_names`]).
    report_names: Vec<String>,
    /// (step, check name) of every check, in counter order.
    check_names: Vec<(String, String)>,
    /// TLS for HTTP steps.
    tls: TlsOptions,
    /// TLS for WebSocket steps.
    ws_tls: TlsOptions,
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
            for a in &s.actions {
                if let Action::Recv(r) = a {
                    known.extend(r.extract.iter().map(|(k, _)| k.clone()));
                }
            }
        }
        let mut steps = Vec::new();
        let mut report_names: Vec<String> = Vec::new();
        let mut check_names: Vec<(String, String)> = Vec::new();
        for s in file.steps {
            if report_names.contains(&s.name) {
                return Err(LoadError::Scenario(format!(
                    "{}field `name`: duplicate step name `{}`",
                    at(line_of(text, &s.name)),
                    s.name
                )));
            }
            let names = Names {
                report: &mut report_names,
                checks: &mut check_names,
            };
            let step =
                validate_step(text, s, &known, file.pick, names).map_err(LoadError::Scenario)?;
            steps.push(step);
        }
        // A sequence whose every (non-`on_start`) step has weight 0 runs nothing per
        // iteration: each user would stop after its start steps and the run end at once.
        let looped: Vec<&Step> = steps.iter().filter(|s| !s.on_start).collect();
        if !looped.is_empty() && looped.iter().all(|s| s.weight == 0) {
            return Err(LoadError::Scenario(format!(
                "{}field `weight`: every step that is not `on_start` has weight 0, so an iteration would run nothing",
                at(line_of(text, "weight"))
            )));
        }
        Ok(Scenario {
            name: file.name.unwrap_or_else(|| "scenario".into()),
            steps,
            report_names,
            check_names,
            vars: file.vars.into_iter().collect(),
            columns,
            rows,
            pick: file.pick,
            think: file.think_time.map(|d| d.0),
            next_row: AtomicU64::new(0),
            tls: TlsOptions::default(),
            ws_tls: TlsOptions::default(),
        })
    }

    /// Sets the TLS options: HTTP steps offer ALPN `h2` with `--http2` (else `http/1.1`);
    /// WebSocket steps always `http/1.1`, since their upgrade is an HTTP/1.1 exchange.
    pub(crate) fn set_tls(&mut self, base: &TlsOptions, http2: bool) {
        let http1 = b"http/1.1".to_vec();
        self.tls = TlsOptions {
            alpn: vec![if http2 { b"h2".to_vec() } else { http1.clone() }],
            ..base.clone()
        };
        self.ws_tls = TlsOptions {
            alpn: vec![http1],
            ..base.clone()
        };
    }

    /// Names of the per-step entries of the report, in slot order: every step, and after a
    /// WebSocket step one `step.name` entry per `recv` action.
    pub(crate) fn report_names(&self) -> Vec<String> {
        self.report_names.clone()
    }

    /// (step, check name) of every `check`, in the order of the recorder's check counters.
    pub(crate) fn check_names(&self) -> Vec<(String, String)> {
        self.check_names.clone()
    }

    /// Whether any step has a `check` table.
    #[must_use]
    pub fn has_checks(&self) -> bool {
        !self.check_names.is_empty()
    }

    /// Whether any step is a WebSocket step (the report then counts messages).
    pub(crate) fn has_ws(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s.kind, StepKind::Ws { .. }))
    }

    /// The longest `timeout` of any WebSocket `recv` (None when no `recv` sets one): the
    /// recorder's histograms must reach that far.
    pub(crate) fn longest_recv_timeout(&self) -> Option<Duration> {
        self.steps
            .iter()
            .filter_map(|s| match &s.kind {
                StepKind::Ws { actions, .. } => Some(actions),
                StepKind::Http { .. } => None,
            })
            .flatten()
            .filter_map(|a| match a {
                Action::Recv(r) => r.timeout,
                Action::Send(_) => None,
            })
            .max()
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

/// `line N: `, or nothing when the line is unknown.
fn at(line: Option<usize>) -> String {
    line.map(|l| format!("line {l}: ")).unwrap_or_default()
}

/// 1-based line of field `field` of step `step`: the first line with that key at or after the
/// step's `name` line (step names are unique), else the `name` line itself.
fn field_line(text: &str, step: &str, field: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| {
        key_of(l).is_some_and(|k| k == "name")
            && l.split_once(['=', ':'])
                .is_some_and(|(_, v)| v.trim().trim_matches(|c| c == '"' || c == '\'') == step)
    })?;
    let found = lines[start..]
        .iter()
        .position(|l| key_of(l).is_some_and(|k| k == field));
    Some(start + found.unwrap_or(0) + 1)
}

/// The literal start of a URL template, to catch `url = "ws://…"` / `ws = "http://…"` at load
/// time (a URL made entirely of variables is checked when it is used).
fn literal_scheme(t: &Template) -> Option<&str> {
    match t.parts.first() {
        Some(Part::Lit(l)) => l.split_once("://").map(|(scheme, _)| scheme),
        _ => None,
    }
}

/// Why an HTTP step's URL without variables cannot be requested (it would fail every run of
/// the step as a `protocol` error, so say so when the file is loaded).
fn static_url_problem(t: &Template) -> Option<String> {
    if t.vars().next().is_some() {
        return None;
    }
    let u = t.render(&HashMap::new());
    match url::Url::parse(&u) {
        Ok(p) if p.scheme() == "http" || p.scheme() == "https" => {
            p.host_str().is_none().then(|| format!("`{u}` has no host"))
        }
        Ok(p) => Some(format!(
            "`{u}`: unsupported scheme `{}` (expected http:// or https://)",
            p.scheme()
        )),
        Err(url::ParseError::RelativeUrlWithoutBase) => Some(format!(
            "`{u}` has no scheme; write `http://{u}` (or https://)"
        )),
        Err(e) => Some(format!("`{u}` is not a URL: {e}")),
    }
}

/// Report entries handed out so far while validating steps.
struct Names<'a> {
    /// Per-step statistics: every step, and every `recv` as `step.name`.
    report: &'a mut Vec<String>,
    /// Check counters: (step, check name).
    checks: &'a mut Vec<(String, String)>,
}

/// Checks one step and gives it (and its `recv` actions and checks) their report slots.
fn validate_step(
    text: &str,
    s: StepFile,
    known: &[String],
    pick: Pick,
    names: Names<'_>,
) -> Result<Step, String> {
    let report_names = names.report;
    let name = s.name.clone();
    let err = |field: &str, msg: String| {
        format!(
            "{}step `{name}` field `{field}`: {msg}",
            at(field_line(text, &name, field))
        )
    };
    let (url, is_ws) = match (s.url, s.ws) {
        (Some(u), None) => {
            if literal_scheme(&u).is_some_and(|sc| sc == "ws" || sc == "wss") {
                return Err(err(
                    "url",
                    "a ws:// or wss:// URL goes in `ws = \"...\"` (a WebSocket step)".into(),
                ));
            }
            if !s.actions.is_empty() {
                return Err(err(
                    "actions",
                    "only WebSocket steps (`ws = \"ws://...\"`) have actions".into(),
                ));
            }
            if s.persistent {
                return Err(err(
                    "persistent",
                    "only WebSocket steps (`ws = \"ws://...\"`) keep a session open".into(),
                ));
            }
            (u, false)
        }
        (None, Some(w)) => {
            if literal_scheme(&w).is_some_and(|sc| sc != "ws" && sc != "wss") {
                return Err(err("ws", "expected a ws:// or wss:// URL".into()));
            }
            for (field, set) in [
                ("method", s.method.is_some()),
                ("body", s.body.is_some()),
                ("extract", !s.extract.is_empty()),
                ("check", s.check.is_some()),
                ("expected_status", s.expected_status.is_some()),
            ] {
                if set {
                    return Err(err(
                        field,
                        "does not apply to WebSocket steps (send messages, and match and extract replies, with `actions`)".into(),
                    ));
                }
            }
            (w, true)
        }
        (Some(_), Some(_)) => {
            return Err(err(
                "ws",
                "a step has either `url` (HTTP) or `ws` (WebSocket), not both".into(),
            ))
        }
        (None, None) => {
            return Err(err(
                "name",
                "needs `url = \"http://...\"` (HTTP) or `ws = \"ws://...\"` (WebSocket)".into(),
            ))
        }
    };
    // Headers go onto the wire as written: a bad name or a CR/LF in a value would corrupt
    // (or smuggle a second request into) every request of the step.
    for (k, v) in &s.headers {
        if http::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
            return Err(err(
                "headers",
                format!("`{k}` is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)"),
            ));
        }
        if v.vars().next().is_none()
            && http::header::HeaderValue::from_str(&v.render(&HashMap::new())).is_err()
        {
            return Err(err(
                "headers",
                format!(
                    "header `{k}`: the value must not contain control characters such as CR or LF"
                ),
            ));
        }
    }
    if !is_ws {
        if let Some(e) = static_url_problem(&url) {
            return Err(err("url", e));
        }
    }
    let mut fields: Vec<(&str, &Template)> = vec![(if is_ws { "ws" } else { "url" }, &url)];
    fields.extend(s.headers.iter().map(|(k, v)| (k.as_str(), v)));
    if let Some(b) = &s.body {
        fields.push(("body", b));
    }
    for a in &s.actions {
        match a {
            Action::Send(Payload::Text(t)) => fields.push(("send", t)),
            Action::Send(Payload::Binary(b)) => fields.push((
                match b.encoding {
                    Encoding::Hex => "send_hex",
                    Encoding::Base64 => "send_base64",
                },
                &b.template,
            )),
            Action::Recv(r) => {
                fields.extend(r.matches.iter().map(|(_, t)| ("match", t)));
                fields.extend(r.contains.iter().map(|p| p.field("contains")));
                fields.extend(r.equals.iter().map(|p| p.field("equals")));
            }
        }
    }
    if let Some(c) = &s.check {
        if c.status.is_none() && c.contains.is_none() && c.matches.is_empty() {
            return Err(err(
                "check",
                "an empty `check` checks nothing (give `status`, `contains` or `match`)".into(),
            ));
        }
        fields.extend(c.contains.iter().map(|t| ("check.contains", t)));
        fields.extend(c.matches.values().map(|t| ("check.match", t)));
    }
    for (field, t) in fields {
        for v in t.vars() {
            if !known.iter().any(|k| k == v) {
                let needle = format!("{{{{{v}}}}}");
                return Err(format!(
                    "{}step `{name}` field `{field}`: unknown variable `{v}` (not in vars, CSV columns or any extract)",
                    at(line_of(text, &needle))
                ));
            }
        }
    }
    if s.weight.is_some_and(|w| w > MAX_WEIGHT) {
        return Err(err("weight", format!("at most {MAX_WEIGHT}")));
    }
    if s.weight == Some(0) && pick == Pick::Weighted {
        return Err(err("weight", "must be ≥ 1".into()));
    }
    let slot = |names: &Vec<String>| {
        u16::try_from(names.len())
            .map_err(|_| format!("too many steps and `recv` actions (at most {})", u16::MAX))
    };
    let own = slot(report_names)?;
    report_names.push(name.clone());
    let kind = if is_ws {
        let mut actions = s.actions;
        for a in &mut actions {
            if let Action::Recv(r) = a {
                let entry = format!("{name}.{}", r.name);
                if report_names.contains(&entry) {
                    return Err(format!(
                        "{}step `{name}` field `recv`: `{}` would be reported as `{entry}`, which is already taken (recv names must be unique per step)",
                        at(field_line(text, &name, "recv")),
                        r.name
                    ));
                }
                r.slot = slot(report_names)?;
                report_names.push(entry);
            }
        }
        StepKind::Ws {
            actions,
            persistent: s.persistent,
        }
    } else {
        let checks = match s.check {
            Some(c) => {
                let checks = Checks::new(c, names.checks.len());
                names
                    .checks
                    .extend(checks.names(&name).into_iter().map(|n| (name.clone(), n)));
                checks
            }
            None => Checks::default(),
        };
        StepKind::Http {
            method: s.method.map_or_else(|| "GET".to_string(), |m| m.0),
            body: s.body,
            extract: s.extract.into_iter().collect(),
            checks,
            expected: s.expected_status.map_or_else(Vec::new, |e| e.0),
        }
    };
    Ok(Step {
        name,
        slot: own,
        url,
        headers: s.headers.into_iter().collect(),
        weight: s.weight.unwrap_or(1),
        think: s.think_time.map(|d| d.0),
        on_start: s.on_start,
        kind,
    })
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
    // Two columns of one name would leave `{{name}}` meaning whichever came last.
    for (i, c) in columns.iter().enumerate() {
        if columns[..i].contains(c) {
            return Err(format!(
                "{} line 1: column `{c}` appears twice; header names must be unique",
                path.display()
            ));
        }
    }
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
/// WebSocket origins keep only their resolved [`Target`]: each run of a WebSocket step opens
/// its own connection.
struct Pool {
    entries: Vec<(String, Target, Option<Link>)>,
    /// Open sessions of persistent WebSocket steps: (step slot, rendered URL, session).
    ws: Vec<(u16, String, crate::ws::Ws)>,
    /// Whether the last step opened a connection: `Some(false)` it could not resolve or
    /// connect to its origin, so the user backs off before its next step (as the plain engines
    /// do: a dead origin is not hit in a tight loop); `Some(true)` a new connection worked,
    /// which ends the backoff; `None` no connect was needed.
    connected: Option<bool>,
}

impl Pool {
    /// The entry for `url`'s origin, resolved (DNS, TLS configuration) on first use.
    async fn entry(
        &mut self,
        url: &url::Url,
        tls: &TlsOptions,
        timeout: Duration,
    ) -> Result<&mut (String, Target, Option<Link>), (ErrorKind, String)> {
        let origin = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port_or_known_default().unwrap_or(0)
        );
        let pos = match self.entries.iter().position(|(o, _, _)| *o == origin) {
            Some(p) => p,
            None => {
                // DNS is bounded by --timeout like the connect it precedes (getaddrinfo for a
                // dead resolver can take many seconds).
                let t = match tokio::time::timeout(timeout, Target::parse(url.as_str(), tls)).await
                {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => return Err((ErrorKind::Connect, e.to_string())),
                    Err(_) => {
                        return Err((
                            ErrorKind::Connect,
                            format!("resolving {origin} took longer than {timeout:?}"),
                        ))
                    }
                };
                if self.entries.len() >= MAX_ORIGINS {
                    self.entries.remove(0);
                }
                self.entries.push((origin, t, None));
                self.entries.len() - 1
            }
        };
        Ok(&mut self.entries[pos])
    }
}

/// A virtual user's connection to one origin.
enum Link {
    H1(Conn<Stream>),
    /// `--http2`: the user's own HTTP/2 connection (one stream in flight, like a browser tab
    /// that waits for each answer before the next step).
    H2(H2Sender),
}

impl Link {
    async fn open(
        target: &Target,
        timeout: Duration,
        h2: bool,
    ) -> Result<Self, (ErrorKind, std::io::Error)> {
        if h2 {
            h2_connect(target, timeout).await.map(Link::H2)
        } else {
            connect(target, timeout)
                .await
                .map(|s| Link::H1(Conn::new(s)))
        }
    }
}

const MAX_ORIGINS: usize = 16;
/// Longest pause of a scenario user after a failed connect (see `scenario_vu`).
const MAX_SCENARIO_BACKOFF: Duration = Duration::from_millis(100);

pub(crate) async fn scenario_vu(run: Arc<Run>, vu: usize) {
    let Some(sc) = run.plan.scenario.clone() else {
        return;
    };
    let mut local = run.recorder.local(vu);
    let mut vars = sc.vars.clone();
    vars.insert("vu".into(), vu.to_string());
    let mut pool = Pool {
        entries: Vec::new(),
        ws: Vec::new(),
        connected: None,
    };
    let mut backoff = Duration::from_millis(10);
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
                // The run is over: say goodbye on the sessions persistent steps kept open.
                for (_, _, mut ws) in pool.ws.drain(..) {
                    crate::ws::close(&mut ws).await;
                }
                return;
            };
            vars.insert("random".into(), rand::thread_rng().gen::<u32>().to_string());
            let step = &sc.steps[i];
            run_step(&run, &sc, step, scheduled, &mut vars, &mut pool, &mut local).await;
            match pool.connected.take() {
                Some(false) => {
                    // 10 ms doubling, like the plain engines, but only to 100 ms: the pause
                    // also holds up the user's steps to healthy origins.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_SCENARIO_BACKOFF);
                }
                Some(true) => backoff = Duration::from_millis(10),
                None => {}
            }
            if let Some(t) = step.think.or(sc.think).or(run.plan.think) {
                tokio::time::sleep(t).await;
            }
        }
    }
}

async fn run_step(
    run: &Run,
    sc: &Scenario,
    step: &Step,
    scheduled: Instant,
    vars: &mut HashMap<String, String>,
    pool: &mut Pool,
    local: &mut Local<'_>,
) {
    let answered = send_step(run, sc, step, scheduled, vars, pool, local).await;
    if let (false, StepKind::Http { checks, .. }) = (answered, &step.kind) {
        checks.fail_all(local);
    }
}

/// Runs one step; false when an HTTP step got no response (its checks then count as failed).
async fn send_step(
    run: &Run,
    sc: &Scenario,
    step: &Step,
    scheduled: Instant,
    vars: &mut HashMap<String, String>,
    pool: &mut Pool,
    local: &mut Local<'_>,
) -> bool {
    let idx = step.slot;
    let url_s = step.url.render(vars);
    let Ok(url) = url::Url::parse(&url_s) else {
        local.error(idx, ErrorKind::Protocol, 0);
        return false;
    };
    let (schemes, tls) = match &step.kind {
        StepKind::Http { .. } => (["http", "https"], &sc.tls),
        StepKind::Ws { .. } => (["ws", "wss"], &sc.ws_tls),
    };
    if !schemes.contains(&url.scheme()) {
        local.error(idx, ErrorKind::Protocol, 0);
        return false;
    }
    let headers: Vec<(String, String)> = step
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.render(vars)))
        .collect();
    // A value from a CSV row or a response may hold CR/LF: sending it would inject headers
    // (or a whole request) into the connection. Fail the step instead, as HTTP/2 does.
    if headers
        .iter()
        .any(|(_, v)| http::header::HeaderValue::from_str(v).is_err())
    {
        local.error(idx, ErrorKind::Protocol, 0);
        return false;
    }
    // A persistent WebSocket step reuses its session while the rendered URL stays the same.
    let kept = match pool
        .ws
        .iter()
        .position(|(slot, u, _)| *slot == idx && *u == url_s)
    {
        Some(i) => Some(pool.ws.swap_remove(i).2),
        None => None,
    };
    let timeout = run.plan.timeout;
    let (target, conn) = match pool.entry(&url, tls, timeout).await {
        Ok((_, target, conn)) => (target, conn),
        Err((kind, why)) => {
            local.error_because(idx, kind, 0, &why);
            pool.connected = Some(false);
            return false;
        }
    };
    match &step.kind {
        StepKind::Http {
            method,
            body,
            extract,
            checks,
            expected,
        } => {
            let req = HttpRequest {
                method,
                url: &url,
                headers: &headers,
                body: body.as_ref().map(|b| b.render(vars)).unwrap_or_default(),
                extract,
                checks,
                expected,
            };
            let mut connected = None;
            let answered = http_step(
                run,
                &req,
                idx,
                scheduled,
                (target, conn),
                vars,
                local,
                &mut connected,
            )
            .await;
            pool.connected = connected;
            answered
        }
        StepKind::Ws {
            actions,
            persistent,
        } => {
            let session = crate::ws::Session {
                target,
                url: url.as_str(),
                headers: &headers,
                timeout: run.plan.timeout,
            };
            let mut ws = kept;
            let ok = ws_step(&session, &mut ws, actions, idx, scheduled, vars, local).await;
            match ws {
                Some(ws) if ok && *persistent => pool.ws.push((idx, url_s, ws)),
                Some(mut ws) => crate::ws::close(&mut ws).await,
                None => {}
            }
            true
        }
    }
}

/// One rendered HTTP request of a step.
struct HttpRequest<'a> {
    method: &'a str,
    url: &'a url::Url,
    headers: &'a [(String, String)],
    body: String,
    extract: &'a [(String, Extractor)],
    checks: &'a Checks,
    expected: &'a [u16],
}

/// One HTTP request of a step; false when no response arrived.
#[allow(clippy::too_many_arguments)]
async fn http_step(
    run: &Run,
    req: &HttpRequest<'_>,
    idx: u16,
    scheduled: Instant,
    (target, conn): (&Target, &mut Option<Link>),
    vars: &mut HashMap<String, String>,
    local: &mut Local<'_>,
    connected: &mut Option<bool>,
) -> bool {
    let timeout = run.plan.timeout;
    let sent = Instant::now();
    let h2 = run.plan.http2;
    if conn.is_none() {
        match Link::open(target, timeout, h2).await {
            Ok(l) => {
                *conn = Some(l);
                *connected = Some(true);
            }
            Err((kind, e)) => {
                local.error_because(idx, kind, 0, &e);
                *connected = Some(false);
                return false;
            }
        }
    }
    let mut path = req.url.path().to_string();
    if let Some(q) = req.url.query() {
        path.push('?');
        path.push_str(q);
    }
    // Headers and body are kept only for a step that reads them.
    let capture = !req.extract.is_empty() || req.checks.capture;
    let result = match conn {
        Some(Link::H2(sender)) => {
            let mut builder = http::Request::builder()
                .method(req.method)
                .uri(req.url.as_str());
            for (k, v) in req.headers {
                builder = builder.header(k.as_str(), v.as_str());
            }
            let Ok(request) = builder.body(http_body_util::Full::new(bytes::Bytes::from(
                req.body.clone(),
            ))) else {
                local.error(idx, ErrorKind::Protocol, 0);
                return false;
            };
            tokio::time::timeout(timeout, h2_exchange(sender, request, capture)).await
        }
        Some(Link::H1(c)) => {
            let wire = serialize(
                req.method,
                &path,
                &target.authority,
                req.headers,
                req.body.as_bytes(),
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
        None => return false,
    };
    match result {
        Ok(Ok(resp)) => {
            if resp.close || (!h2 && !run.plan.keepalive) {
                *conn = None;
            }
            let extract = resp.status < 400 && !req.extract.is_empty();
            // Parse the body once, and only when a JSON path will read it.
            let json: Option<serde_json::Value> = if req.checks.json
                || (extract
                    && req
                        .extract
                        .iter()
                        .any(|(_, e)| matches!(e, Extractor::Json(_))))
            {
                serde_json::from_slice(&resp.body).ok()
            } else {
                None
            };
            // Checks see the variables as they were when the request was sent: checking a
            // value against one extracted from the same response would prove nothing.
            req.checks.record(
                resp.status,
                &resp.headers,
                &resp.body,
                json.as_ref(),
                vars,
                local,
            );
            if extract {
                if let Err(why) = extract_into(req.extract, &resp.headers, json.as_ref(), vars) {
                    // The response lacks what later steps depend on: a failed step.
                    local.error_because(idx, ErrorKind::Protocol, resp.bytes, &why);
                    return true;
                }
            }
            let expected = req.expected.contains(&resp.status);
            local.response_as(idx, scheduled, sent, resp.status, resp.bytes, expected);
            true
        }
        Ok(Err((kind, e))) => {
            *conn = None;
            local.error_because(idx, kind, 0, &e);
            false
        }
        Err(_) => {
            *conn = None;
            local.error(idx, ErrorKind::Timeout, 0);
            false
        }
    }
}

/// Stores every extracted value in `vars`; false when one is missing.
fn extract_into(
    extract: &[(String, Extractor)],
    headers: &[(String, String)],
    json: Option<&serde_json::Value>,
    vars: &mut HashMap<String, String>,
) -> Result<(), String> {
    for (name, ex) in extract {
        match ex.extract(headers, json) {
            Some(v) => {
                vars.insert(name.clone(), v);
            }
            None => {
                return Err(format!(
                    "extract `{name}`: `{ex}` not found in the response{}",
                    if json.is_none() && !matches!(ex, Extractor::Header(_)) {
                        " (the body is not JSON)"
                    } else {
                        ""
                    }
                ))
            }
        }
    }
    Ok(())
}

/// A WebSocket step: the actions in order over `slot`'s session, opened first when there is
/// none (the handshake is recorded as the step, status 101). True when every action
/// succeeded; the caller then keeps a persistent step's session for the next run and closes
/// any other (one session per run, like k6's `ws.connect`). A failed action skips the rest,
/// and its session is closed.
#[allow(clippy::too_many_arguments)]
async fn ws_step(
    session: &crate::ws::Session<'_>,
    slot: &mut Option<crate::ws::Ws>,
    actions: &[Action],
    idx: u16,
    scheduled: Instant,
    vars: &mut HashMap<String, String>,
    local: &mut Local<'_>,
) -> bool {
    let ws = match slot {
        // A persistent session from an earlier run: no handshake to record.
        Some(ws) => ws,
        None => {
            let opened = Instant::now();
            match session.open().await {
                Ok(ws) => {
                    local.response(idx, scheduled, opened, 101, 0);
                    slot.insert(ws)
                }
                Err((kind, why)) => {
                    local.error_because(idx, kind, 0, &why);
                    return false;
                }
            }
        }
    };
    // A `recv` is timed from the latest `send` before it, or from the end of the handshake
    // when nothing was sent yet (a greeting the server pushes).
    let mut since = Instant::now();
    for action in actions {
        // Each action is a request in flight until it is recorded (or, for a `send`, done):
        // an abort at the end of the run counts it as interrupted.
        local.start_request();
        match action {
            Action::Send(payload) => {
                let msg = match payload.render(vars) {
                    Ok(msg) => msg,
                    Err(why) => {
                        // Templated bytes that do not decode: nothing sensible to send.
                        let why = format!("WebSocket send: {why}");
                        local.error_because(idx, ErrorKind::Protocol, 0, &why);
                        return false;
                    }
                };
                since = Instant::now();
                match tokio::time::timeout(session.timeout, crate::ws::send(ws, msg)).await {
                    Ok(Ok(())) => {
                        local.ws(1, 0);
                        local.settle();
                    }
                    Ok(Err((kind, why))) => {
                        local.error_because(idx, kind, 0, &why);
                        return false;
                    }
                    Err(_) => {
                        let why = crate::ws::timed_out("send", session.timeout);
                        local.error_because(idx, ErrorKind::Timeout, 0, &why);
                        return false;
                    }
                }
            }
            Action::Recv(r) => {
                let needles = match r.needles(vars) {
                    Ok(n) => n,
                    Err(why) => {
                        let why = format!("WebSocket recv: {why}");
                        local.error_because(r.slot, ErrorKind::Protocol, 0, &why);
                        return false;
                    }
                };
                let mut bytes = 0u64;
                let wait = async {
                    loop {
                        let frame = crate::ws::next_frame(ws).await?;
                        local.ws(0, 1);
                        bytes += frame.data.len() as u64;
                        // A message of the other kind is skipped like any other that does
                        // not match; only the right kind is worth parsing.
                        let json: Option<serde_json::Value> =
                            if frame.binary == r.binary && r.needs_json() {
                                serde_json::from_slice(&frame.data).ok()
                            } else {
                                None
                            };
                        if r.accepts(&frame, &needles, json.as_ref(), vars) {
                            return Ok::<_, crate::ws::WsError>(json);
                        }
                    }
                };
                let limit = r.timeout.unwrap_or(session.timeout);
                match tokio::time::timeout(limit, wait).await {
                    Ok(Ok(json)) => {
                        if let Err(why) = extract_into(&r.extract, &[], json.as_ref(), vars) {
                            local.error_because(r.slot, ErrorKind::Protocol, bytes, &why);
                            return false;
                        }
                        local.response(r.slot, since, since, 0, bytes);
                    }
                    Ok(Err((kind, why))) => {
                        local.error_because(r.slot, kind, bytes, &why);
                        return false;
                    }
                    Err(_) => {
                        // Say whether anything arrived: "no message" and "no matching
                        // message" need different fixes.
                        let why = if bytes == 0 {
                            crate::ws::timed_out("recv", limit)
                        } else {
                            format!(
                                "WebSocket recv: no matching message within {limit:?} \
                                 ({bytes} bytes of other messages)"
                            )
                        };
                        local.error_because(r.slot, ErrorKind::Timeout, bytes, &why);
                        return false;
                    }
                }
            }
        }
    }
    // A kept session with no actions records nothing: the run of the step is over all the same.
    local.settle();
    true
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

    #[test]
    fn yaml_websocket_step_gets_one_report_entry_per_recv() {
        let text = "steps:\n  - name: login\n    url: http://x/login\n    extract: { token: $.token }\n  - name: chat\n    ws: ws://x/chat?token={{token}}\n    actions:\n      - send: '{\"say\":\"hi\"}'\n      - recv: ack\n        match: { $.type: ack }\n      - recv: reply\n        contains: hi\n        timeout: 2s\n        extract: { id: $.id }\n  - name: after\n    url: http://x/item/{{id}}\n";
        let sc = Scenario::parse(text, ScenarioFormat::Yaml, None).unwrap();
        assert_eq!(
            sc.report_names(),
            ["login", "chat", "chat.ack", "chat.reply", "after"]
        );
        assert!(sc.has_ws());
        let StepKind::Ws { actions, .. } = &sc.steps[1].kind else {
            panic!("chat is a WebSocket step");
        };
        let slots: Vec<u16> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Recv(r) => Some(r.slot),
                Action::Send(_) => None,
            })
            .collect();
        assert_eq!(slots, [2, 3]);
        assert_eq!(sc.steps[2].slot, 4);
    }

    #[test]
    fn extractors_print_as_parsed() {
        for p in [
            "$.a.b[0].id",
            "$[\"a.b\"][2]",
            "header:content-type",
            "$",
            "$[\"\"]",
        ] {
            let e = Extractor::parse(p).unwrap();
            assert_eq!(e.to_string(), p);
            assert_eq!(Extractor::parse(&e.to_string()).unwrap(), e);
        }
        assert_eq!(
            Extractor::parse("$[\"id\"]").unwrap().to_string(),
            "$.id",
            "the short form when it reads back the same"
        );
    }

    #[test]
    fn checks_get_names_in_file_order_and_capture_only_when_needed() {
        let text = "steps:\n  - name: a\n    url: http://x/\n    check: { status: 200 }\n  - name: b\n    url: http://x/\n    check:\n      contains: hi\n      match: { header:X-Id: \"1\", $.ok: \"true\" }\n";
        let sc = Scenario::parse(text, ScenarioFormat::Yaml, None).unwrap();
        assert!(sc.has_checks());
        let names: Vec<String> = sc.check_names().into_iter().map(|(_, n)| n).collect();
        assert_eq!(names, ["a.status", "b.contains", "b.$.ok", "b.header:x-id"]);
        let flags: Vec<(usize, bool, bool)> = sc
            .steps
            .iter()
            .map(|s| match &s.kind {
                StepKind::Http { checks, .. } => (checks.first, checks.capture, checks.json),
                StepKind::Ws { .. } => panic!("HTTP steps"),
            })
            .collect();
        // A status check reads neither headers nor body: the engine keeps neither.
        assert_eq!(flags, [(0, false, false), (1, true, true)]);
    }

    #[test]
    fn recv_matches_json_fields_and_substrings() {
        let Ok(Action::Recv(r)) = Action::try_from(ActionFile {
            recv: Some("reply".into()),
            matches: [(
                Extractor::parse("$.to").unwrap(),
                Template::parse("{{user}}").unwrap(),
            )]
            .into(),
            contains: Some(Template::parse("said").unwrap()),
            ..ActionFile::default()
        }) else {
            panic!("a valid recv");
        };
        let vars: HashMap<String, String> = [("user".into(), "ann".into())].into();
        let needles = r.needles(&vars).unwrap();
        let check = |msg: &str, binary: bool| {
            let json: Option<serde_json::Value> = serde_json::from_str(msg).ok();
            let frame = crate::ws::Frame {
                binary,
                data: msg.as_bytes().to_vec(),
            };
            r.accepts(&frame, &needles, json.as_ref(), &vars)
        };
        assert!(check(r#"{"to":"ann","type":"said"}"#, false));
        assert!(
            !check(r#"{"to":"ann","type":"said"}"#, true),
            "a text recv skips binary frames"
        );
        assert!(!check(r#"{"to":"bob","type":"said"}"#, false), "other user");
        assert!(
            !check(r#"{"to":"ann","type":"joined"}"#, false),
            "no substring"
        );
        assert!(!check("said to ann", false), "not JSON");
    }

    #[test]
    fn binary_recv_matches_decoded_bytes_of_binary_frames_only() {
        let recv = |file: ActionFile| match Action::try_from(ActionFile {
            recv: Some("bin".into()),
            binary: true,
            ..file
        }) {
            Ok(Action::Recv(r)) => r,
            other => panic!("a valid recv: {other:?}"),
        };
        let frame = |binary: bool, data: &[u8]| crate::ws::Frame {
            binary,
            data: data.to_vec(),
        };
        let vars: HashMap<String, String> = [("tail".into(), "7w==".into())].into();
        let exact = recv(ActionFile {
            equals_base64: BinTemplate::parse("3q2+{{tail}}", Encoding::Base64).ok(),
            ..ActionFile::default()
        });
        let n = exact.needles(&vars).unwrap();
        assert_eq!(n.equals.as_deref(), Some(&[0xde, 0xad, 0xbe, 0xef][..]));
        assert!(exact.accepts(&frame(true, &[0xde, 0xad, 0xbe, 0xef]), &n, None, &vars));
        assert!(!exact.accepts(&frame(true, &[0xde, 0xad, 0xbe]), &n, None, &vars));
        assert!(
            !exact.accepts(&frame(false, &[0xde, 0xad, 0xbe, 0xef]), &n, None, &vars),
            "a binary recv skips text messages"
        );
        let part = recv(ActionFile {
            contains_hex: BinTemplate::parse("AD be", Encoding::Hex).ok(),
            ..ActionFile::default()
        });
        let n = part.needles(&vars).unwrap();
        assert!(part.accepts(&frame(true, &[0xde, 0xad, 0xbe, 0xef]), &n, None, &vars));
        assert!(!part.accepts(&frame(true, &[0xbe, 0xad]), &n, None, &vars));
        // Templated bytes that do not decode are an error of the wait, not a panic.
        let bad: HashMap<String, String> = [("tail".into(), "*".into())].into();
        assert!(exact.needles(&bad).is_err());
    }

    #[test]
    fn hex_and_base64_decode_or_say_why_not() {
        let hex = |s: &str| Encoding::Hex.decode(s);
        let b64 = |s: &str| Encoding::Base64.decode(s);
        assert_eq!(hex("00 ff\n7F").unwrap(), [0, 255, 127]);
        assert_eq!(hex("").unwrap(), Vec::<u8>::new());
        assert!(hex("abc").unwrap_err().contains("odd"));
        assert!(hex("zz").unwrap_err().contains("`z`"));
        assert!(hex("é0").unwrap_err().contains("`é`"));
        assert_eq!(b64("3q2+7w==").unwrap(), [0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(
            b64("3q2+7w").unwrap(),
            [0xde, 0xad, 0xbe, 0xef],
            "padding optional"
        );
        assert!(b64("3q2+7").is_err());
        assert!(b64("3q-_").unwrap_err().contains("`-`"));
        let e = BinTemplate::parse("ab{{x}}g", Encoding::Hex).unwrap_err();
        assert!(
            e.contains("`ab{{x}}g` is not hex") && e.contains("`g`"),
            "{e}"
        );
        assert!(BinTemplate::parse("ab{{x}}", Encoding::Hex)
            .unwrap()
            .fixed
            .is_none());
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
