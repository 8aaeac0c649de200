//! Stable hashing for consistent hashing and sticky-session pins.
//!
//! The hash must give the same answer in every gateway instance and every release, so that
//! two instances behind a DNS round robin send a key to the same backend and understand
//! each other's sticky cookies. `std`'s `DefaultHasher` promises neither, hence FNV-1a with a
//! SplitMix64 finaliser (FNV alone mixes the high bits poorly for short keys).
use http::HeaderMap;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The stable 64-bit hash of a balancing key.
pub fn hash_key(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    mix64(h)
}

/// The sticky-session pin (cookie value) for a backend address: 16 hex digits of a stable
/// hash of the address, so it reveals nothing and is understood by every gateway instance.
pub fn pin_for_addr(addr: SocketAddr) -> String {
    format!("{:016x}", hash_key(addr.to_string().as_bytes()))
}

pub(crate) fn parse_pin(pin: &str) -> Option<u64> {
    if pin.len() != 16 {
        return None;
    }
    u64::from_str_radix(pin, 16).ok()
}

/// A lock-free pseudo-random source (SplitMix64 over an atomic counter): good enough to
/// spread picks, deterministic under a fixed seed, no lock on the hot path.
#[derive(Debug)]
pub(crate) struct FastRng(std::sync::atomic::AtomicU64);

impl FastRng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(std::sync::atomic::AtomicU64::new(seed))
    }

    pub(crate) fn random() -> Self {
        Self::new(rand::random())
    }

    #[inline]
    pub(crate) fn next_u64(&self) -> u64 {
        mix64(
            self.0
                .fetch_add(0x9e37_79b9_7f4a_7c15, std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift (no modulo bias worth measuring).
    #[inline]
    pub(crate) fn below(&self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Where a consistent-hashing upstream takes its key from.
///
/// In config: `client_ip`, `path`, `header:NAME` or `cookie:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HashKeySource {
    /// The client's IP address ([`PickContext::client_ip`](super::PickContext)).
    #[default]
    ClientIp,
    /// The value of a request header.
    Header(http::HeaderName),
    /// The value of a cookie.
    Cookie(String),
    /// The request path (without query).
    Path,
}

impl HashKeySource {
    /// The key bytes for a request, borrowed from its headers or path. `None` for
    /// [`HashKeySource::ClientIp`] (the balancer uses `client_ip`) or when the header or
    /// cookie is absent; the balancer then falls back to the client IP.
    pub fn extract<'a>(&self, headers: &'a HeaderMap, path: &'a str) -> Option<&'a [u8]> {
        match self {
            Self::ClientIp => None,
            Self::Path => Some(path.as_bytes()),
            Self::Header(name) => headers.get(name).map(|v| v.as_bytes()),
            Self::Cookie(name) => headers
                .get_all(http::header::COOKIE)
                .iter()
                .find_map(|v| cookie_value(v.as_bytes(), name.as_bytes())),
        }
    }
}

/// Finds `name=value` in a Cookie header value (`a=1; b=2`).
pub(crate) fn cookie_value<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = trim(pair);
        let eq = pair.iter().position(|&b| b == b'=')?;
        (trim(&pair[..eq]) == name).then(|| trim(&pair[eq + 1..]))
    })
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A hash-key source string that is not `client_ip`, `path`, `header:NAME` or `cookie:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hash key {0:?}: expected client_ip, path, header:NAME or cookie:NAME")]
pub struct ParseHashKeySourceError(String);

impl FromStr for HashKeySource {
    type Err = ParseHashKeySourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseHashKeySourceError(s.to_string());
        match s {
            "client_ip" | "ip" => return Ok(Self::ClientIp),
            "path" => return Ok(Self::Path),
            _ => {}
        }
        let (kind, name) = s.split_once(':').ok_or_else(err)?;
        if name.is_empty() {
            return Err(err());
        }
        match kind {
            "header" => http::HeaderName::from_bytes(name.as_bytes())
                .map(Self::Header)
                .map_err(|_| err()),
            "cookie" => Ok(Self::Cookie(name.to_string())),
            _ => Err(err()),
        }
    }
}

impl fmt::Display for HashKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientIp => f.write_str("client_ip"),
            Self::Path => f.write_str("path"),
            Self::Header(h) => write!(f, "header:{h}"),
            Self::Cookie(c) => write!(f, "cookie:{c}"),
        }
    }
}

impl<'de> Deserialize<'de> for HashKeySource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_lookup() {
        assert_eq!(
            cookie_value(b"a=1; sid = xyz ;b=2", b"sid"),
            Some(&b"xyz"[..])
        );
        assert_eq!(cookie_value(b"a=1", b"sid"), None);
        assert_eq!(cookie_value(b"garbage;;=;", b"sid"), None);
    }

    #[test]
    fn key_source_round_trips() {
        for s in ["client_ip", "path", "header:x-user", "cookie:sid"] {
            assert_eq!(s.parse::<HashKeySource>().unwrap().to_string(), s);
        }
        assert!("header:".parse::<HashKeySource>().is_err());
        assert!("nope".parse::<HashKeySource>().is_err());
    }

    #[test]
    fn pins_parse_back() {
        let pin = pin_for_addr("127.0.0.1:80".parse().unwrap());
        assert_eq!(
            parse_pin(&pin),
            Some(u64::from_str_radix(&pin, 16).unwrap())
        );
        assert_eq!(parse_pin("zz"), None);
    }
}
