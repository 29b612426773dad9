//! Which URLs and addresses the fetcher may connect to.
//!
//! Only public unicast addresses are allowed. The policy is applied to IP-literal hosts before
//! any request ([`check_url`]) and to every DNS answer ([`GuardedResolver`]), so a public name
//! that resolves to a private address is refused too, on every redirect hop.

use std::error::Error as StdError;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use super::outcome::{FailureKind, FetchFailure};

/// IPv4 ranges that are never fetched (besides loopback, handled separately).
const REFUSED_V4: &[([u8; 4], u32)] = &[
    ([0, 0, 0, 0], 8),       // "this network", includes the unspecified address
    ([10, 0, 0, 0], 8),      // private (RFC 1918)
    ([100, 64, 0, 0], 10),   // shared address space / CGNAT (RFC 6598)
    ([169, 254, 0, 0], 16),  // link-local, includes cloud metadata endpoints
    ([172, 16, 0, 0], 12),   // private (RFC 1918)
    ([192, 0, 0, 0], 24),    // IETF protocol assignments
    ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
    ([192, 88, 99, 0], 24),  // deprecated 6to4 relay anycast
    ([192, 168, 0, 0], 16),  // private (RFC 1918)
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
    ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, includes broadcast 255.255.255.255
];

/// Whether connecting to `ip` is refused. Loopback is allowed only with `allow_loopback`.
pub(super) fn is_refused(ip: IpAddr, allow_loopback: bool) -> bool {
    match ip {
        IpAddr::V4(ip) => is_refused_v4(ip, allow_loopback),
        IpAddr::V6(ip) => is_refused_v6(ip, allow_loopback),
    }
}

fn is_refused_v4(ip: Ipv4Addr, allow_loopback: bool) -> bool {
    if ip.is_loopback() {
        return !allow_loopback;
    }
    let bits = u32::from(ip);
    REFUSED_V4.iter().any(|&(net, len)| {
        let mask = u32::MAX << (32 - len);
        bits & mask == u32::from_be_bytes(net)
    })
}

fn is_refused_v6(ip: Ipv6Addr, allow_loopback: bool) -> bool {
    if ip.is_loopback() {
        return !allow_loopback;
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_refused_v4(v4, allow_loopback);
    }
    let o = ip.octets();
    let segments = ip.segments();
    // NAT64 well-known prefix 64:ff9b::/96 and 6to4 2002::/16 reach an embedded IPv4 address.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_refused_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]), allow_loopback);
    }
    if segments[0] == 0x2002 {
        return is_refused_v4(Ipv4Addr::new(o[2], o[3], o[4], o[5]), allow_loopback);
    }
    // Only global unicast (2000::/3) is public; that excludes unspecified, IPv4-compatible,
    // discard-only, unique-local (fc00::/7), link-local (fe80::/10), site-local and multicast.
    let global_unicast = segments[0] & 0xe000 == 0x2000;
    let ietf_assignments = segments[0] == 0x2001 && segments[1] < 0x0200; // 2001::/23
    let documentation = (segments[0] == 0x2001 && segments[1] == 0x0db8) // 2001:db8::/32
        || segments[0] & 0xfff0 == 0x3ff0; // 3fff::/20
    !global_unicast || ietf_assignments || documentation
}

/// Checks a URL before it is requested: http or https, a host, and no refused IP literal.
pub(super) fn check_url(url: &Url, allow_loopback: bool) -> Result<(), FetchFailure> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchFailure::new(
            FailureKind::BadScheme,
            format!("{url}: scheme {:?} is not http or https", url.scheme()),
        ));
    }
    let ip = match url.host() {
        None => {
            return Err(FetchFailure::new(
                FailureKind::BadUrl,
                format!("{url}: no host"),
            ));
        }
        Some(Host::Domain(_)) => return Ok(()),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
    };
    if is_refused(ip, allow_loopback) {
        return Err(FetchFailure::new(
            FailureKind::PrivateAddress,
            format!("{url}: address {ip} is not a public address"),
        ));
    }
    Ok(())
}

/// A DNS answer with only refused addresses.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to non-public addresses ({addresses})")]
pub(super) struct BlockedAddress {
    host: String,
    addresses: String,
}

/// Finds a [`BlockedAddress`] among `error` and its sources.
pub(super) fn find_blocked<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a BlockedAddress> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(blocked) = error.downcast_ref::<BlockedAddress>() {
            return Some(blocked);
        }
        current = error.source();
    }
    None
}

/// DNS resolver for reqwest that resolves with the system resolver (tokio's `lookup_host`) and
/// drops refused addresses; an answer with none left fails with [`BlockedAddress`].
#[derive(Debug, Clone, Copy)]
pub(super) struct GuardedResolver {
    pub(super) allow_loopback: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
                .into_iter()
                .partition(|addr| !is_refused(addr.ip(), allow_loopback));
            tracing::debug!(%host, ?allowed, ?refused, "resolved");
            if !allowed.is_empty() {
                let addrs: Addrs = Box::new(allowed.into_iter());
                return Ok(addrs);
            }
            if refused.is_empty() {
                let error =
                    io::Error::new(io::ErrorKind::NotFound, format!("{host}: no addresses"));
                return Err(error.into());
            }
            let addresses = refused
                .iter()
                .map(|addr| addr.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            Err(BlockedAddress { host, addresses }.into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(ip: &str) -> bool {
        is_refused(ip.parse().expect("ip"), false)
    }

    #[test]
    fn private_and_reserved_addresses_are_refused() {
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "100::1",
            "2001:db8::1",
            "2001::1",
            "3fff::1",
        ] {
            assert!(refused(ip), "{ip} should be refused");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.169.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!refused(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn allow_loopback_allows_only_loopback() {
        for ip in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(!is_refused(ip.parse().expect("ip"), true), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "::",
            "fe80::1",
            "fc00::1",
        ] {
            assert!(is_refused(ip.parse().expect("ip"), true), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_before_requests() {
        let check = |url: &str| {
            check_url(&Url::parse(url).expect("url"), false).map_err(|failure| failure.kind)
        };
        assert_eq!(check("https://example.com/a.png"), Ok(()));
        assert_eq!(check("http://93.184.216.34/a.png"), Ok(()));
        assert_eq!(
            check("ftp://example.com/a.png"),
            Err(FailureKind::BadScheme)
        );
        assert_eq!(check("file:///etc/passwd"), Err(FailureKind::BadScheme));
        assert_eq!(
            check("data:image/png;base64,AAAA"),
            Err(FailureKind::BadScheme)
        );
        assert_eq!(check("http://10.0.0.1/x"), Err(FailureKind::PrivateAddress));
        assert_eq!(
            check("http://169.254.169.254/"),
            Err(FailureKind::PrivateAddress)
        );
        assert_eq!(
            check("http://[::1]:8080/"),
            Err(FailureKind::PrivateAddress)
        );
        assert_eq!(check("http://[fd00::1]/"), Err(FailureKind::PrivateAddress));
        // WHATWG URL parsing turns these spellings into the IPv4 address 127.0.0.1.
        assert_eq!(
            check("http://2130706433/"),
            Err(FailureKind::PrivateAddress)
        );
        assert_eq!(check("http://0x7f.1/"), Err(FailureKind::PrivateAddress));
    }
}
