//! Reading a configuration from a file, a request body or the environment, with errors that
//! name the file, the line and column, the key path, the bad value and what was expected.
//!
//! Pipeline: text → a `serde_json::Value` tree (TOML is converted into the same tree) → environment
//! overrides `SCALEWISE_<SECTION>__<KEY>` applied to the tree → deserialised into `T` with
//! [`serde_path_to_error`], which records the key path of the first error. The line and column
//! are then looked up in the original text by that key path, so an error in the tree (and the
//! tree is what was deserialised) still points at the line the user wrote. When the offending
//! key came from the environment, the error names the variable instead.
//!
//! [`parse_str`] is generic over `T` so it stays ignorant of the config's shape;
//! [`parse_config`] and [`load_config`] add the gateway's `Config::validate()`.
//!
//! ```
//! use scalewise_gateway::config_file::{parse_config, Format};
//!
//! let text = r#"
//! [[listeners]]
//! addr = "127.0.0.1:8080"
//! [[routes]]
//! upstream = "app"
//! [upstreams.app]
//! algorithm = "fastest"
//! backends = [{ addr = "127.0.0.1:9001" }]
//! "#;
//! let err = parse_config(text, Format::Toml, "gw.toml", []).unwrap_err().to_string();
//! assert!(err.starts_with("gw.toml:7:1: key `upstreams.app.algorithm`: unknown variant `fastest`"));
//!
//! let env = [("SCALEWISE_UPSTREAMS__APP__ALGORITHM".to_string(), "least_conn".to_string())];
//! let config = parse_config(text, Format::Toml, "gw.toml", env).unwrap();
//! assert_eq!(config.upstreams["app"].algorithm.as_str(), "least_conn");
//! ```
use crate::config::Config;
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::Path;

/// Prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "SCALEWISE_";

/// Text format of a config document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML (the default).
    Toml,
    /// JSON.
    Json,
}

impl Format {
    /// JSON for a `.json` file name, TOML otherwise.
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Self::Json,
            _ => Self::Toml,
        }
    }

    /// Guesses the format of a request body: JSON if its content type says so or it starts
    /// with `{`, TOML otherwise.
    pub fn sniff(content_type: Option<&str>, body: &str) -> Self {
        let json_type = content_type.is_some_and(|t| t.to_ascii_lowercase().contains("json"));
        if json_type || body.trim_start().starts_with('{') {
            Self::Json
        } else {
            Self::Toml
        }
    }
}

/// A config that could not be read. `Display` gives one line a person can act on, such as
/// `gateway.toml:7:1: upstreams.app.algorithm: unknown variant `fastest`, expected one of ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The file name (or `<request body>`, `<command line>`).
    pub origin: String,
    /// 1-based line and column in the origin, when known.
    pub location: Option<(usize, usize)>,
    /// Dotted key path (`upstreams.app.backends[1].weight`), when known.
    pub key: Option<String>,
    /// The environment variable that supplied the bad value, if one did.
    pub env_var: Option<String>,
    /// What is wrong: the bad value and what was expected.
    pub message: String,
}

impl LoadError {
    /// An error not tied to a key or location.
    pub fn new(origin: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            origin: origin.into(),
            location: None,
            key: None,
            env_var: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.env_var {
            Some(var) => write!(f, "environment variable {var}")?,
            None => {
                write!(f, "{}", self.origin)?;
                if let Some((line, col)) = self.location {
                    write!(f, ":{line}:{col}")?;
                }
            }
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for LoadError {}

/// Environment variables that look like overrides (`SCALEWISE_A__B...`), from the process.
///
/// Variables without a `__` (such as `SCALEWISE_REQUIRE_SERVICES`) are not overrides.
pub fn env_overrides() -> Vec<(String, String)> {
    std::env::vars().filter(|(k, _)| is_override(k)).collect()
}

fn is_override(name: &str) -> bool {
    name.strip_prefix(ENV_PREFIX)
        .is_some_and(|rest| rest.contains("__") && !rest.starts_with('_'))
}

/// Reads `path` (TOML, or JSON by extension) and applies the process's environment overrides.
///
/// # Errors
/// The file cannot be read, does not parse, an override is malformed, or the document does not
/// match `T` (unknown key, wrong type, bad value).
pub fn load_file<T: DeserializeOwned>(path: &Path) -> Result<T, LoadError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| LoadError::new(&origin, format!("cannot read file: {e}")))?;
    parse_str(&text, Format::from_path(path), &origin, env_overrides())
}

/// Parses `text`, applies `env` overrides (name, value) and deserialises `T`.
///
/// # Errors
/// As [`load_file`].
pub fn parse_str<T: DeserializeOwned>(
    text: &str,
    format: Format,
    origin: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, LoadError> {
    let mut tree = parse_tree(text, format, origin)?;
    let applied = apply_env(&mut tree, env)?;
    deserialize(tree, &applied, origin, Some((text, format)))
}

fn parse_tree(text: &str, format: Format, origin: &str) -> Result<Tree, LoadError> {
    match format {
        Format::Toml => text
            .parse::<toml::Table>()
            .map_err(|e| LoadError {
                origin: origin.to_owned(),
                location: e.span().map(|s| line_col(text, s.start)),
                key: None,
                env_var: None,
                message: e.message().trim().replace('\n', "; "),
            })
            .and_then(|t| {
                serde_json::to_value(t).map_err(|e| LoadError::new(origin, e.to_string()))
            }),
        Format::Json => serde_json::from_str(text).map_err(|e| LoadError {
            origin: origin.to_owned(),
            location: Some((e.line(), e.column())),
            key: None,
            env_var: None,
            message: strip_json_position(&e.to_string()),
        }),
    }
}

/// The document as a tree. JSON's value type rather than TOML's because it can say `null`
/// (an absent `Option`), which a config read back from `GET /api/config` contains.
type Tree = serde_json::Value;

/// Key path segments of an override and the variable it came from.
#[derive(Debug)]
struct Applied {
    var: String,
    path: Vec<String>,
}

fn apply_env(
    tree: &mut Tree,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Applied>, LoadError> {
    let mut env: Vec<_> = env.into_iter().filter(|(k, _)| is_override(k)).collect();
    // Deterministic order whatever the environment's order.
    env.sort();
    let mut applied = Vec::with_capacity(env.len());
    for (var, value) in env {
        let rest = &var[ENV_PREFIX.len()..];
        let segments: Vec<&str> = rest.split("__").collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(LoadError {
                env_var: Some(var.clone()),
                ..LoadError::new(
                    "<environment>",
                    "expected SCALEWISE_<SECTION>__<KEY> with non-empty parts",
                )
            });
        }
        let path = set_path(tree, &segments, &value).map_err(|msg| LoadError {
            env_var: Some(var.clone()),
            ..LoadError::new("<environment>", msg)
        })?;
        applied.push(Applied { var, path });
    }
    Ok(applied)
}

/// Sets the value at the path spelled by env segments, creating tables as needed, and returns
/// the real key path used.
fn set_path(tree: &mut Tree, segments: &[&str], raw: &str) -> Result<Vec<String>, String> {
    let mut node = tree;
    let mut path = Vec::with_capacity(segments.len());
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match node {
            Tree::Object(table) => {
                // Env names are upper case; config keys are lower case. Match an existing key
                // case-insensitively (with `-` spelled `_`) so `APP` finds an upstream `App`.
                let key = table
                    .keys()
                    .find(|k| k.replace('-', "_").eq_ignore_ascii_case(seg))
                    .cloned()
                    .unwrap_or_else(|| seg.to_ascii_lowercase());
                path.push(key.clone());
                if last {
                    let new = env_value(raw, table.get(&key));
                    table.insert(key, new);
                    return Ok(path);
                }
                node = table
                    .entry(key)
                    .or_insert_with(|| Tree::Object(serde_json::Map::new()));
            }
            Tree::Array(items) => {
                // An array element by index, or a table element by its `name`.
                let idx = match seg.parse::<usize>() {
                    Ok(n) if n < items.len() => n,
                    Ok(n) => {
                        return Err(format!("index {n} is past the end of `{}`", path.join(".")))
                    }
                    Err(_) => items
                        .iter()
                        .position(|item| {
                            item.get("name")
                                .and_then(Tree::as_str)
                                .is_some_and(|n| n.replace('-', "_").eq_ignore_ascii_case(seg))
                        })
                        .ok_or_else(|| {
                            format!(
                                "no element named `{}` in `{}`",
                                seg.to_ascii_lowercase(),
                                path.join(".")
                            )
                        })?,
                };
                path.push(idx.to_string());
                if last {
                    let new = env_value(raw, items.get(idx));
                    items[idx] = new;
                    return Ok(path);
                }
                node = &mut items[idx];
            }
            _ => return Err(format!("`{}` is not a table", path.join("."))),
        }
    }
    Ok(path)
}

/// Interprets an env value: a string where a string already is; otherwise a TOML value if it
/// parses as one (`30`, `true`, `["a", "b"]`), else a string (`127.0.0.1:9090`, `5s`).
fn env_value(raw: &str, existing: Option<&Tree>) -> Tree {
    if matches!(existing, Some(Tree::String(_))) {
        return Tree::String(raw.to_owned());
    }
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or_else(|| Tree::String(raw.to_owned()))
}

fn deserialize<T: DeserializeOwned>(
    tree: Tree,
    applied: &[Applied],
    origin: &str,
    source: Option<(&str, Format)>,
) -> Result<T, LoadError> {
    // Kept to quote the bad value when serde's message does not (e.g. an address parse error).
    let original = tree.clone();
    let err = match serde_path_to_error::deserialize::<_, T>(tree) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let mut message = err.inner().to_string().trim().to_owned();
    let mut path: Vec<String> = err
        .path()
        .iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
            serde_path_to_error::Segment::Unknown => None,
        })
        .collect();
    // An unknown key fails while its name is read, before the path records it.
    if let Some(name) = unknown_field(&message) {
        if path.last().map(String::as_str) != Some(name) {
            path.push(name.to_owned());
        }
    }
    if let Some(value) = lookup(&original, &path).filter(|v| !v.is_object() && !v.is_array()) {
        let shown = value.to_string();
        let bare = value.as_str().map_or(shown.as_str(), |s| s);
        if !message.contains(bare) {
            message = format!("{message}: got {shown}");
        }
    }
    let env_var = env_for(applied, &path);
    let location = match (source, &env_var) {
        (Some((text, Format::Toml)), None) => toml_location(text, &path),
        (Some((text, Format::Json)), None) => json_location::<T>(text),
        _ => None,
    };
    Err(LoadError {
        origin: origin.to_owned(),
        location,
        key: (!path.is_empty()).then(|| display_path(&path)),
        env_var,
        message,
    })
}

fn lookup<'a>(tree: &'a Tree, path: &[String]) -> Option<&'a Tree> {
    path.iter().try_fold(tree, |node, seg| match node {
        Tree::Object(map) => map.get(seg),
        Tree::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if seg.parse::<usize>().is_ok() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The position of the deepest part of `path` that exists in the TOML text: the key itself if
/// present, else its closest ancestor.
fn toml_location(text: &str, path: &[String]) -> Option<(usize, usize)> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    enum Node<'a> {
        Item(&'a toml_edit::Item),
        Value(&'a toml_edit::Value),
        Table(&'a toml_edit::Table),
    }
    let mut node = Node::Item(doc.as_item());
    let mut best: Option<std::ops::Range<usize>> = None;
    for seg in path {
        let next = match node {
            Node::Item(item) => {
                if let Some(table) = item.as_table_like() {
                    table
                        .get_key_value(seg)
                        .map(|(k, v)| (k.span(), Node::Item(v)))
                } else if let Some(aot) = item.as_array_of_tables() {
                    let idx: usize = seg.parse().ok()?;
                    aot.get(idx).map(|t| (t.span(), Node::Table(t)))
                } else if let Some(array) = item.as_array() {
                    let idx: usize = seg.parse().ok()?;
                    array.get(idx).map(|v| (v.span(), Node::Value(v)))
                } else {
                    None
                }
            }
            Node::Table(table) => table
                .get_key_value(seg)
                .map(|(k, v)| (k.span(), Node::Item(v))),
            Node::Value(value) => match value {
                toml_edit::Value::InlineTable(t) => {
                    t.get_key_value(seg).map(|(k, v)| (k.span(), Node::Item(v)))
                }
                toml_edit::Value::Array(a) => {
                    let idx: usize = seg.parse().ok()?;
                    a.get(idx).map(|v| (v.span(), Node::Value(v)))
                }
                _ => None,
            },
        };
        match next {
            Some((span, n)) => {
                if span.is_some() {
                    best = span;
                }
                node = n;
            }
            None => break,
        }
    }
    best.map(|s| line_col(text, s.start))
}

fn json_location<T: DeserializeOwned>(text: &str) -> Option<(usize, usize)> {
    let mut de = serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(_) => None,
        Err(e) => Some((e.inner().line(), e.inner().column())),
    }
}

fn strip_json_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Every problem of a config, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

impl From<LoadError> for LoadErrors {
    fn from(e: LoadError) -> Self {
        Self(vec![e])
    }
}

/// Reads, overrides from the process environment, deserialises and validates the gateway
/// config at `path`.
///
/// # Errors
/// Every problem found; see [`parse_config`].
pub fn load_config(path: &Path) -> Result<Config, LoadErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| LoadError::new(&origin, format!("cannot read file: {e}")))?;
    parse_config(&text, Format::from_path(path), &origin, env_overrides())
}

/// Parses `text`, applies `env` overrides, deserialises a [`Config`] and runs
/// [`Config::validate`], locating each validation error in the text as well.
///
/// # Errors
/// The first parse or type error, or every validation error.
pub fn parse_config(
    text: &str,
    format: Format,
    origin: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, LoadErrors> {
    let mut tree = parse_tree(text, format, origin)?;
    let applied = apply_env(&mut tree, env)?;
    let config: Config = deserialize(tree, &applied, origin, Some((text, format)))?;
    validate(&config, &applied, origin, Some((text, format)))?;
    Ok(config)
}

/// The one-line start's config (or any built in code) with the process's env overrides
/// applied, validated.
///
/// # Errors
/// A bad override, or a validation error.
pub fn finish_built(config: &Config, origin: &str) -> Result<Config, LoadErrors> {
    let mut tree = serde_json::to_value(config)
        .map_err(|e| LoadError::new(origin, format!("cannot represent config: {e}")))?;
    let applied = apply_env(&mut tree, env_overrides())?;
    let config: Config = deserialize(tree, &applied, origin, None)?;
    validate(&config, &applied, origin, None)?;
    Ok(config)
}

fn validate(
    config: &Config,
    applied: &[Applied],
    origin: &str,
    source: Option<(&str, Format)>,
) -> Result<(), LoadErrors> {
    let errs = match config.validate() {
        Ok(()) => return Ok(()),
        Err(errs) => errs,
    };
    Err(LoadErrors(
        errs.into_iter()
            .map(|e| {
                let path = split_key_path(&e.key_path);
                let env_var = env_for(applied, &path);
                let location = match (source, &env_var) {
                    (Some((text, Format::Toml)), None) => toml_location(text, &path),
                    _ => None,
                };
                LoadError {
                    origin: origin.to_owned(),
                    location,
                    key: Some(e.key_path),
                    env_var,
                    message: format!("got {}, expected {}", e.value, e.expected),
                }
            })
            .collect(),
    ))
}

/// `upstreams.api.backends[0].weight` → `["upstreams", "api", "backends", "0", "weight"]`.
fn split_key_path(key: &str) -> Vec<String> {
    key.replace('[', ".")
        .replace(']', "")
        .split('.')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn env_for(applied: &[Applied], path: &[String]) -> Option<String> {
    applied
        .iter()
        .rev()
        .find(|a| path.starts_with(&a.path) || (!path.is_empty() && a.path.starts_with(path)))
        .map(|a| a.var.clone())
}

/// Replaces every value whose key names a secret (`token`, `password`, `secret`, `key` as in
/// `private_key`) with `"<redacted>"`, for showing a config over the admin API.
pub fn redact(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let k = k.to_ascii_lowercase();
                let secret = ["token", "password", "secret", "private_key"]
                    .iter()
                    .any(|s| k.contains(s));
                if secret && !v.is_null() {
                    *v = serde_json::Value::String("<redacted>".into());
                } else {
                    redact(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        admin: Admin,
        #[serde(default)]
        upstreams: std::collections::BTreeMap<String, Up>,
    }
    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Admin {
        addr: String,
        #[serde(default)]
        port: u16,
    }
    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Up {
        algorithm: Alg,
        #[serde(default)]
        backends: Vec<Backend>,
    }
    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Backend {
        addr: String,
        #[serde(default)]
        weight: u32,
    }
    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Alg {
        RoundRobin,
        LeastConn,
    }

    const DOC: &str = r#"
[admin]
addr = "127.0.0.1:9090"

[upstreams.app]
algorithm = "round_robin"
backends = [{ addr = "a" }, { addr = "b", weight = 2 }]
"#;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Cfg, LoadError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        parse_str(text, Format::Toml, "gw.toml", env)
    }

    #[test]
    fn ok_document_parses() {
        let cfg = parse(DOC, &[]).unwrap();
        assert_eq!(cfg.upstreams["app"].backends[1].weight, 2);
    }

    #[test]
    fn unknown_key_names_line_and_path() {
        let text = DOC.replace("algorithm = ", "algoritm = \"x\"\nalgorithm = ");
        let err = parse(&text, &[]).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("upstreams.app.algoritm"), "{err}");
        assert_eq!(err.location, Some((6, 1)), "{err}");
        assert!(err.message.contains("unknown field `algoritm`"), "{err}");
    }

    #[test]
    fn bad_enum_lists_valid_values() {
        let err = parse(&DOC.replace("round_robin", "fastest"), &[]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("gw.toml:6:1: key `upstreams.app.algorithm`"),
            "{text}"
        );
        assert!(
            text.contains("round_robin") && text.contains("least_conn"),
            "{text}"
        );
        assert!(text.contains("fastest"), "{text}");
    }

    #[test]
    fn nested_array_error_points_at_element() {
        let err = parse(&DOC.replace("weight = 2", "weight = -2"), &[]).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("upstreams.app.backends[1].weight"));
        assert_eq!(err.location.map(|l| l.0), Some(7));
    }

    #[test]
    fn syntax_error_has_location() {
        let err = parse("[admin]\naddr = \n", &[]).unwrap_err();
        assert_eq!(err.location.map(|l| l.0), Some(2), "{err}");
    }

    #[test]
    fn env_overrides_apply_and_errors_name_the_variable() {
        let cfg = parse(
            DOC,
            &[
                ("SCALEWISE_ADMIN__ADDR", "0.0.0.0:1"),
                ("SCALEWISE_UPSTREAMS__APP__ALGORITHM", "least_conn"),
                ("SCALEWISE_UPSTREAMS__APP__BACKENDS__0__WEIGHT", "5"),
                ("SCALEWISE_REQUIRE_SERVICES", "1"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.admin.addr, "0.0.0.0:1");
        assert_eq!(cfg.upstreams["app"].algorithm, Alg::LeastConn);
        assert_eq!(cfg.upstreams["app"].backends[0].weight, 5);

        let err = parse(DOC, &[("SCALEWISE_ADMIN__PORT", "huge")]).unwrap_err();
        assert_eq!(err.env_var.as_deref(), Some("SCALEWISE_ADMIN__PORT"));
        assert!(err
            .to_string()
            .starts_with("environment variable SCALEWISE_ADMIN__PORT"));
        let err = parse(DOC, &[("SCALEWISE_ADMIN__NOPE", "1")]).unwrap_err();
        assert_eq!(
            err.env_var.as_deref(),
            Some("SCALEWISE_ADMIN__NOPE"),
            "{err}"
        );
    }

    #[test]
    fn json_is_accepted_and_located() {
        let json = r#"{"admin": {"addr": "x"}, "upstreams": {"app": {"algorithm": "least_conn"}}}"#;
        let cfg: Cfg = parse_str(json, Format::Json, "gw.json", []).unwrap();
        assert_eq!(cfg.upstreams["app"].algorithm, Alg::LeastConn);
        let bad = "{\n \"admin\": {\"addr\": \"x\",\n \"bogus\": 1}}";
        let err = parse_str::<Cfg>(bad, Format::Json, "gw.json", []).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("admin.bogus"));
        assert_eq!(err.location.map(|l| l.0), Some(3), "{err}");
    }

    #[test]
    fn redact_hides_tokens() {
        let mut v = serde_json::json!({"admin": {"token": "s3cret", "addr": "x"}, "l": [{"tls_private_key": "k"}]});
        redact(&mut v);
        assert_eq!(v["admin"]["token"], "<redacted>");
        assert_eq!(v["admin"]["addr"], "x");
        assert_eq!(v["l"][0]["tls_private_key"], "<redacted>");
    }
}
