//! DNS backends: `host:port` entries in `upstreams.NAME.backends` (or `--backend`).
//!
//! Names are resolved when the gateway starts (a name that does not resolve is a start-up
//! error), when a reload introduces a new name (a reload error), and again every
//! `resolve_interval` of the upstream, like nginx's `resolve`, HAProxy's `resolvers` or Envoy's
//! STRICT_DNS clusters. Every address a name resolves to becomes an endpoint with the
//! backend's weight. The answers live in a [`Resolved`] table that is an input of the state
//! build, next to the config: a changed answer rebuilds the state from the same config and the
//! new table, which goes through the same in-place `Upstream::update` as a config reload, so
//! endpoints whose address stays keep their balancer, health and breaker state and their
//! pooled connections. A failed or empty lookup keeps the previous answer (and counts in
//! `gateway_dns_resolve_failures_total`).
//!
//! Lookups run on Tokio's blocking pool (`getaddrinfo`) through [`SystemResolver`], never on a
//! request's path. Tests inject a [`Resolve`] of their own.
use crate::config::{BackendAddr, Config};
use futures_util::future::BoxFuture;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Longest a single lookup may take before it counts as failed. `getaddrinfo` has its own
/// retries and timeouts; this bounds what a reload or a refresh round waits for.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Something that turns a host name and port into addresses.
///
/// Implemented by [`SystemResolver`] and by any
/// `Fn(&str, u16) -> io::Result<Vec<SocketAddr>>` closure (handy in tests).
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `host` with `port`.
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>>;
}

/// The operating system's resolver through [`tokio::net::lookup_host`] (`getaddrinfo` on the
/// blocking pool: `/etc/hosts`, `resolv.conf`, nsswitch).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

impl<F> Resolve for F
where
    F: Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync + 'static,
{
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        let answer = self(host, port);
        Box::pin(async move { answer })
    }
}

/// A host name and port, as written in a backend's `addr`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name {
    /// Lower-cased host name.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Name {
    /// The name of a DNS backend; `None` for an IP backend.
    pub fn of(addr: &BackendAddr) -> Option<Self> {
        match addr {
            BackendAddr::Ip(_) => None,
            BackendAddr::Name { host, port } => Some(Self {
                host: host.clone(),
                port: *port,
            }),
        }
    }
}

/// The last good answer for every DNS name the running config uses. Each answer is sorted and
/// deduplicated (resolvers rotate the order of their answers; that is not a change) and never
/// empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    answers: BTreeMap<Name, Vec<SocketAddr>>,
}

impl Resolved {
    /// The addresses of `name`, if it has been resolved.
    pub fn get(&self, name: &Name) -> Option<&[SocketAddr]> {
        self.answers.get(name).map(Vec::as_slice)
    }

    /// Records an answer (sorted, deduplicated). An empty answer is ignored: the last good one
    /// stays.
    pub fn insert(&mut self, name: Name, mut addrs: Vec<SocketAddr>) {
        addrs.sort_unstable();
        addrs.dedup();
        if !addrs.is_empty() {
            self.answers.insert(name, addrs);
        }
    }

    /// Every name and its addresses.
    pub fn iter(&self) -> impl Iterator<Item = (&Name, &[SocketAddr])> {
        self.answers.iter().map(|(n, a)| (n, a.as_slice()))
    }

    /// Only the names `config` uses.
    pub fn retain_used(&mut self, config: &Config) {
        let used = names(config);
        self.answers.retain(|n, _| used.contains_key(n));
    }
}

/// Every DNS name in `config`, with the key paths (`upstreams.app.backends[0].addr`) and
/// upstreams that use it.
pub fn names(config: &Config) -> BTreeMap<Name, Vec<(String, String)>> {
    let mut out: BTreeMap<Name, Vec<(String, String)>> = BTreeMap::new();
    for (up, u) in &config.upstreams {
        for (j, b) in u.backends.iter().enumerate() {
            if let Some(n) = Name::of(&b.addr) {
                out.entry(n)
                    .or_default()
                    .push((up.clone(), format!("upstreams.{up}.backends[{j}].addr")));
            }
        }
    }
    out
}

/// Whether an upstream of `config` has any DNS backend.
pub fn has_names(config: &Config) -> bool {
    config
        .upstreams
        .values()
        .any(|u| u.backends.iter().any(|b| b.addr.host().is_some()))
}

/// Looks `name` up once, bounded by [`LOOKUP_TIMEOUT`]. An empty answer is an error.
///
/// # Errors
/// The resolver failed, timed out or returned no address; the message says which.
pub async fn lookup(resolver: &dyn Resolve, name: &Name) -> Result<Vec<SocketAddr>, String> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, resolver.resolve(&name.host, name.port)).await {
        Err(_) => Err(format!(
            "lookup timed out after {}",
            humantime::format_duration(LOOKUP_TIMEOUT)
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(addrs)) if addrs.is_empty() => Err("the name has no addresses".into()),
        Ok(Ok(addrs)) => Ok(addrs),
    }
}

/// A name of the config that could not be resolved when it had to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// The first key that names it, e.g. `upstreams.app.backends[0].addr`.
    pub key: String,
    /// The name as written (`backend.internal:8080`).
    pub name: String,
    /// Why.
    pub error: String,
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: \"{}\" does not resolve: {}",
            self.key, self.name, self.error
        )
    }
}

/// A table with an answer for every name of `config`: names already in `known` keep that
/// answer, the others are looked up now (concurrently).
///
/// # Errors
/// Every name that is new and does not resolve, each with its key.
pub async fn resolve_new(
    config: &Config,
    known: &Resolved,
    resolver: &dyn Resolve,
) -> Result<Resolved, Vec<Unresolved>> {
    let all = names(config);
    let mut table = Resolved::default();
    let mut todo = Vec::new();
    for (name, users) in &all {
        match known.get(name) {
            Some(addrs) => table.insert(name.clone(), addrs.to_vec()),
            None => todo.push((name, &users[0].1)),
        }
    }
    let answers =
        futures_util::future::join_all(todo.iter().map(|(n, _)| lookup(resolver, n))).await;
    let mut errs = Vec::new();
    for ((name, key), answer) in todo.into_iter().zip(answers) {
        match answer {
            Ok(addrs) => table.insert(name.clone(), addrs),
            Err(error) => errs.push(Unresolved {
                key: key.clone(),
                name: name.to_string(),
                error,
            }),
        }
    }
    if errs.is_empty() {
        Ok(table)
    } else {
        Err(errs)
    }
}

/// One failed lookup of a refresh round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshFailure {
    /// The name.
    pub name: Name,
    /// The upstreams that use it (each gets a failure counted).
    pub upstreams: Vec<String>,
    /// Why.
    pub error: String,
}

/// Looks up again the names used by `upstreams` of `config` (all, for `None`) and returns the
/// new answers and the failures. Failed or empty lookups are not in the answers: the caller
/// keeps the last good answer for them.
pub async fn refresh(
    config: &Config,
    upstreams: Option<&BTreeSet<String>>,
    resolver: &dyn Resolve,
) -> (Vec<(Name, Vec<SocketAddr>)>, Vec<RefreshFailure>) {
    let todo: Vec<(Name, Vec<String>)> = names(config)
        .into_iter()
        .filter(|(_, users)| upstreams.is_none_or(|set| users.iter().any(|(u, _)| set.contains(u))))
        .map(|(n, users)| {
            let mut ups: Vec<String> = users.into_iter().map(|(u, _)| u).collect();
            ups.dedup();
            (n, ups)
        })
        .collect();
    let answers =
        futures_util::future::join_all(todo.iter().map(|(n, _)| lookup(resolver, n))).await;
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for ((name, ups), answer) in todo.into_iter().zip(answers) {
        match answer {
            Ok(addrs) => ok.push((name, addrs)),
            Err(error) => failed.push(RefreshFailure {
                name,
                upstreams: ups,
                error,
            }),
        }
    }
    (ok, failed)
}

/// The resolver a gateway uses unless a test injects one.
pub fn system() -> Arc<dyn Resolve> {
    Arc::new(SystemResolver)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(backends: &str) -> Config {
        toml::from_str(&format!(
            "[[listeners]]\naddr = \"127.0.0.1:1\"\n[[routes]]\nupstream = \"a\"\n\
             [upstreams.a]\nbackends = [{backends}]\n[upstreams.b]\nbackends = [{{ addr = \"svc.test:80\" }}]\n"
        ))
        .unwrap()
    }

    fn fixed(host: &str, _port: u16) -> io::Result<Vec<SocketAddr>> {
        match host {
            "svc.test" => Ok(vec![
                "10.0.0.2:80".parse().unwrap(),
                "10.0.0.1:80".parse().unwrap(),
                "10.0.0.2:80".parse().unwrap(),
            ]),
            "empty.test" => Ok(vec![]),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such host")),
        }
    }

    #[tokio::test]
    async fn new_names_are_resolved_sorted_and_deduplicated() {
        let c = cfg(r#"{ addr = "127.0.0.1:9" }, { addr = "svc.test:80" }"#);
        let table = resolve_new(&c, &Resolved::default(), &fixed).await.unwrap();
        let name = Name::of(&"svc.test:80".parse().unwrap()).unwrap();
        assert_eq!(
            table.get(&name).unwrap(),
            [
                "10.0.0.1:80".parse().unwrap(),
                "10.0.0.2:80".parse().unwrap()
            ]
        );
        assert_eq!(table.iter().count(), 1);
    }

    #[tokio::test]
    async fn unresolvable_names_are_errors_with_their_key() {
        let c = cfg(
            r#"{ addr = "svc.test:80" }, { addr = "nowhere.test:81" }, { addr = "empty.test:1" }"#,
        );
        let errs = resolve_new(&c, &Resolved::default(), &fixed)
            .await
            .unwrap_err();
        let shown: Vec<_> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "upstreams.a.backends[2].addr: \"empty.test:1\" does not resolve: the name has no addresses",
                "upstreams.a.backends[1].addr: \"nowhere.test:81\" does not resolve: no such host",
            ]
        );
    }

    #[tokio::test]
    async fn known_names_are_not_looked_up_again() {
        let c = cfg(r#"{ addr = "svc.test:80" }"#);
        let mut known = Resolved::default();
        let name = Name::of(&"svc.test:80".parse().unwrap()).unwrap();
        known.insert(name.clone(), vec!["10.9.9.9:80".parse().unwrap()]);
        let never = |_: &str, _: u16| -> io::Result<Vec<SocketAddr>> { panic!("looked up") };
        let table = resolve_new(&c, &known, &never).await.unwrap();
        assert_eq!(table, known);
    }

    #[tokio::test]
    async fn refresh_selects_names_by_upstream_and_reports_failures() {
        let c = cfg(r#"{ addr = "nowhere.test:81" }"#);
        let only_b: BTreeSet<String> = ["b".to_string()].into();
        let (ok, failed) = refresh(&c, Some(&only_b), &fixed).await;
        assert_eq!(ok.len(), 1);
        assert!(failed.is_empty());
        let (ok, failed) = refresh(&c, None, &fixed).await;
        assert_eq!(ok.len(), 1);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].upstreams, ["a"]);
        assert_eq!(failed[0].name.to_string(), "nowhere.test:81");
    }

    #[tokio::test]
    async fn the_system_resolver_resolves_localhost() {
        let name = Name {
            host: "localhost".into(),
            port: 9,
        };
        let addrs = lookup(&SystemResolver, &name).await.unwrap();
        assert!(
            addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 9),
            "{addrs:?}"
        );
    }
}
