//! Webhook targets: http(s) URLs only, and (`[webhooks] deny_private_targets`) no
//! loopback, private, link-local or unique-local address, whether written as an IP or
//! reached through DNS (the client's resolver refuses such answers, so a name that
//! resolves to a private address is refused at connect time, not only when checked).

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;
use std::net::{IpAddr, SocketAddr};

/// Parses a target: `http` or `https`, with a host.
pub fn parse_target(url: &str) -> Result<Url, String> {
    let u = Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("`{url}`: webhook targets must be http or https"));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    Ok(u)
}

/// Loopback, private (RFC 1918), carrier-grade NAT, link-local, unique-local and
/// unspecified addresses (IPv4-mapped IPv6 included).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || o[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Why a target is refused under `deny_private_targets`, if it is an IP that is refused.
pub fn refused_literal(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return Some(format!(
            "{host} is a loopback target (webhooks.deny_private_targets)"
        ));
    }
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    is_private(ip)
        .then(|| format!("{ip} is a private or loopback address (webhooks.deny_private_targets)"))
}

/// The system resolver, refusing private answers.
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> =
                addrs.into_iter().filter(|a| !is_private(a.ip())).collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves only to private or loopback addresses \
                     (webhooks.deny_private_targets)"
                )
                .into());
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_private_addresses() {
        assert!(parse_target("https://example.com/h").is_ok());
        assert!(parse_target("http://127.0.0.1:9/h").is_ok());
        assert!(parse_target("ftp://example.com/h").is_err());
        assert!(parse_target("not a url").is_err());
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.5",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "100.64.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
        let u = parse_target("http://[::1]:8080/").unwrap();
        assert!(refused_literal(&u).is_some());
        let u = parse_target("http://localhost:8080/").unwrap();
        assert!(refused_literal(&u).is_some());
        let u = parse_target("https://example.com/").unwrap();
        assert!(refused_literal(&u).is_none());
    }
}
