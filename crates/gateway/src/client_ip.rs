//! The client's IP address behind trusted proxies (`listeners[].trusted_proxies`).
//!
//! Rate-limit keys and `client_ip` hashing use the TCP peer's address, which behind a load
//! balancer or CDN is the proxy's. When the peer is one of the listener's trusted proxies,
//! [`client_ip`] walks `X-Forwarded-For` from the right, skipping addresses that are trusted
//! proxies too, and returns the first one that is not (nginx's `real_ip_recursive on`).
//! Addresses left of it were written by the client and are never believed, so a client cannot
//! pick its own rate-limit bucket by sending a forged header.
//!
//! ```
//! use http::HeaderMap;
//! use scalewise_gateway::client_ip::{client_ip, TrustedProxies};
//!
//! let trusted: TrustedProxies = ["10.0.0.0/8".parse().unwrap()].into_iter().collect();
//! let mut h = HeaderMap::new();
//! h.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.2.3".parse().unwrap());
//! // From a trusted proxy: the right-most untrusted address.
//! assert_eq!(client_ip("10.0.0.1".parse().unwrap(), &h, &trusted), "203.0.113.7".parse::<std::net::IpAddr>().unwrap());
//! // From anyone else: the peer, whatever the header says.
//! assert_eq!(client_ip("198.51.100.1".parse().unwrap(), &h, &trusted), "198.51.100.1".parse::<std::net::IpAddr>().unwrap());
//! ```
use http::header::HeaderMap;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Most `X-Forwarded-For` entries looked at: a bound on the work a request can cause. Real
/// proxy chains are a handful of hops long.
pub const MAX_HOPS: usize = 32;

/// An IP network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`); a bare address is a
/// single host (`/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this network. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a
    /// dual-stack socket reports for an IPv4 peer) count as their IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_v4(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_v6(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask_v4(v: u32, prefix: u8) -> u32 {
    v & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(v: u128, prefix: u8) -> u128 {
    v & u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    /// `addr/prefix` or a bare address. Host bits must be zero (`10.0.0.1/8` is refused: it
    /// is almost always a typo for `10.0.0.1/32` or `10.0.0.0/8`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            |why: &str| format!("`{s}` is not a CIDR like 10.0.0.0/8 or 2001:db8::/32: {why}");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad(&format!("the prefix length is not 0 to {max}")))?,
        };
        let masked = match network {
            IpAddr::V4(a) => IpAddr::from(mask_v4(u32::from(a), prefix).to_be_bytes()),
            IpAddr::V6(a) => IpAddr::from(mask_v6(u128::from(a), prefix).to_be_bytes()),
        };
        if masked != network {
            return Err(bad(&format!(
                "host bits are set (the network is {masked}/{prefix})"
            )));
        }
        Ok(Self { network, prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The proxies whose `X-Forwarded-For` is believed. Empty: none (the peer is the client).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Cidr> for TrustedProxies {
    fn from_iter<T: IntoIterator<Item = Cidr>>(iter: T) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// The client address for rate-limit keys and `client_ip` hashing.
///
/// - The peer is not a trusted proxy (or none is configured): the peer.
/// - Otherwise the `X-Forwarded-For` entries (all header lines, in order, comma-separated) are
///   read from the right: a trusted address moves on to the next, the first untrusted one is
///   the client.
/// - Every entry is trusted: the left-most one.
/// - An entry that is not an IP address (`unknown`, garbage, a header that is not ASCII) ends
///   the walk: the last address known good is returned (the peer, or the trusted proxy that
///   wrote the entry), so a malformed header cannot be used to choose a key.
///
/// Entries may carry a port (`203.0.113.7:4711`, `[2001:db8::1]:4711`), which is ignored.
/// At most [`MAX_HOPS`] entries are looked at. IPv4-mapped IPv6 addresses are returned as
/// IPv4.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let mut current = peer;
    let mut hops = 0;
    for line in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(line) = line.to_str() else {
            return current;
        };
        for entry in line.rsplit(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                // `a, , b` or a trailing comma: nothing was said, nothing to believe.
                continue;
            }
            hops += 1;
            if hops > MAX_HOPS {
                return current;
            }
            let Some(ip) = parse_entry(entry) else {
                return current;
            };
            if !trusted.contains(ip) {
                return ip;
            }
            current = ip;
        }
    }
    current
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`.
fn parse_entry(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(list: &[&str]) -> TrustedProxies {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("x-forwarded-for", HeaderValue::from_str(l).unwrap());
        }
        h
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.255.0.1")));
        assert!(c.contains(ip("::ffff:10.1.1.1")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(!c.contains(ip("::1")));
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(c.contains(ip("2001:db8:1::5")));
        assert!(!c.contains(ip("2001:db9::1")));
        let c: Cidr = "192.0.2.7".parse().unwrap();
        assert_eq!(c.to_string(), "192.0.2.7/32");
        assert!(c.contains(ip("192.0.2.7")) && !c.contains(ip("192.0.2.8")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")));
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains(ip("2001:db8::1")) && !all6.contains(ip("1.2.3.4")));
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "10.0.0.0/x",
            "ten/8",
            "",
            "::1/129",
        ] {
            let err = bad.parse::<Cidr>().unwrap_err();
            assert!(err.contains("is not a CIDR"), "{bad}: {err}");
        }
        assert!("10.0.0.1/8"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("10.0.0.0/8"));
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_the_header_says() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = xff(&["1.1.1.1"]);
        assert_eq!(client_ip(ip("203.0.113.9"), &h, &t), ip("203.0.113.9"));
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &TrustedProxies::default()),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_ip(ip("::ffff:203.0.113.9"), &h, &t),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn the_rightmost_untrusted_address_is_the_client() {
        let t = trusted(&["10.0.0.0/8", "2001:db8::/32"]);
        // The client forged the first entry; the trusted chain appended the rest.
        let h = xff(&["6.6.6.6, 198.51.100.4, 10.0.0.9", "10.0.0.8"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("198.51.100.4"));
        let h = xff(&["198.51.100.4:5555, [2001:db8::2]:80, 2001:db8::3"]);
        assert_eq!(client_ip(ip("2001:db8::1"), &h, &t), ip("198.51.100.4"));
        let h = xff(&["[2001:db9::1]"]);
        assert_eq!(client_ip(ip("::ffff:10.0.0.1"), &h, &t), ip("2001:db9::1"));
    }

    #[test]
    fn trusted_all_the_way_gives_the_leftmost_and_no_header_the_peer() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &xff(&["10.0.0.3, 10.0.0.2"]), &t),
            ip("10.0.0.3")
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &t),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), &xff(&[" , "]), &t),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn malformed_entries_stop_at_the_last_known_good_address() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &xff(&["1.2.3.4, unknown"]), &t),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), &xff(&["1.2.3.4, garbage, 10.0.0.2"]), &t),
            ip("10.0.0.2")
        );
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"1.2.3.4, \xff").unwrap(),
        );
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.0.0.1"));
    }

    #[test]
    fn long_chains_are_cut_at_max_hops() {
        let t = trusted(&["10.0.0.0/8"]);
        let mut chain = vec!["198.51.100.1".to_string()];
        chain.extend((0..MAX_HOPS).map(|i| format!("10.0.0.{}", i + 2)));
        let h = xff(&[&chain.join(", ")]);
        // The untrusted address is hop MAX_HOPS + 1 from the right: not reached.
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.0.0.2"));
        let h = xff(&[&chain[1..].join(", ")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.0.0.2"));
        let shorter = &chain[..MAX_HOPS];
        let h = xff(&[&shorter.join(", ")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("198.51.100.1"));
    }
}
