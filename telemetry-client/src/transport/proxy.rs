//! Which proxy a request goes through, from the conventional variables:
//! `HTTPS_PROXY` (or `https_proxy`, then `ALL_PROXY`, then `HTTP_PROXY`, as
//! ureq read them before) for https endpoints, `HTTP_PROXY` (or `ALL_PROXY`)
//! for http ones, and `NO_PROXY` (or `no_proxy`) for hosts that are
//! reached directly. A loopback endpoint is always reached directly: a
//! proxy elsewhere cannot reach this machine's loopback collector.
//!
//! Read here once for every transport, so the ureq, reqwest and curl
//! transports route alike (curl is told explicitly, never left to its own
//! reading of the variables, which ignores uppercase `HTTP_PROXY`).

use std::net::IpAddr;

/// The proxy URL for `uri`, or `None` to connect directly. `var` reads an
/// environment variable (a parameter, so tests need not change the
/// process's environment).
pub(super) fn choose(
    uri: &http::Uri,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    let host = uri.host().unwrap_or_default();
    if super::host_is_loopback(host) {
        return Ok(None);
    }
    let first = |names: &[&str]| {
        names
            .iter()
            .filter_map(|n| var(n))
            .find(|v| !v.trim().is_empty())
    };
    let names: &[&str] = if uri.scheme_str() == Some("http") {
        &["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
    } else {
        &[
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
            "HTTP_PROXY",
            "http_proxy",
        ]
    };
    let Some(proxy) = first(names) else {
        return Ok(None);
    };
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("http") => 80,
        _ => 443,
    });
    if first(&["NO_PROXY", "no_proxy"]).is_some_and(|list| bypassed(&list, host, port)) {
        return Ok(None);
    }
    let proxy = proxy.trim();
    // `proxy.corp:3128` is as common as `http://proxy.corp:3128`.
    let proxy = if proxy.contains("://") {
        proxy.to_owned()
    } else {
        format!("http://{proxy}")
    };
    let parsed: http::Uri = proxy
        .parse()
        .map_err(|e| format!("invalid proxy setting: {e}"))?;
    match parsed.scheme_str() {
        Some("http" | "https" | "socks5" | "socks5h") if parsed.host().is_some() => Ok(Some(proxy)),
        _ => Err("invalid proxy setting: expected http://host:port".into()),
    }
}

/// Whether a `NO_PROXY` list names `host` (and `port`): `*` for all; a
/// domain for itself and its subdomains, with or without a leading `.` or
/// `*.`; an IP address or CIDR range; each optionally with `:port`.
fn bypassed(list: &str, host: &str, port: u16) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let ip = host.parse::<IpAddr>().ok();
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let (name, entry_port) = split_port(entry);
            if entry_port.is_some_and(|p| p != port) {
                return false;
            }
            let name = name.trim_start_matches("*.").trim_start_matches('.');
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let (Some(ip), Some((net, bits))) = (ip, name.split_once('/')) {
                return in_range(ip, net, bits);
            }
            host == name || host.ends_with(&format!(".{name}"))
        })
}

/// `entry` without a trailing `:port`, and the port. IPv6 entries keep
/// their colons unless bracketed (`[::1]:8080`).
fn split_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((addr, tail)) => (addr, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (entry, None),
        };
    }
    match entry.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => match port.parse() {
            Ok(port) => (name, Some(port)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    }
}

/// Whether `ip` is in the CIDR range `net`/`bits`.
fn in_range(ip: IpAddr, net: &str, bits: &str) -> bool {
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    let (ip, net, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    if bits > width {
        return false;
    }
    let shift = width - bits;
    let mask = if shift >= 128 { 0 } else { u128::MAX << shift };
    // Compare within the address width: v4 values sit in the low 32 bits.
    (ip & mask) == (net & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(url: &str, env: &[(&str, &str)]) -> Result<Option<String>, String> {
        let uri: http::Uri = url.parse().unwrap();
        choose(&uri, |name| {
            env.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    const PROXY: &str = "http://proxy.corp:3128";

    #[test]
    fn https_endpoints_use_https_proxy_then_the_others() {
        let remote = "https://telemetry.example.org";
        assert_eq!(route(remote, &[]), Ok(None));
        for name in ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "HTTP_PROXY"] {
            assert_eq!(
                route(remote, &[(name, PROXY)]),
                Ok(Some(PROXY.into())),
                "{name}"
            );
        }
        let both = [("HTTP_PROXY", "http://other:1"), ("HTTPS_PROXY", PROXY)];
        assert_eq!(route(remote, &both), Ok(Some(PROXY.into())));
        // Empty means unset, and a bare host:port is an http proxy.
        let bare = [("HTTPS_PROXY", " "), ("https_proxy", "proxy.corp:3128")];
        assert_eq!(route(remote, &bare), Ok(Some(PROXY.into())));
        assert!(route(remote, &[("HTTPS_PROXY", "http://")]).is_err());
    }

    #[test]
    fn loopback_is_always_direct() {
        let env = [
            ("HTTPS_PROXY", PROXY),
            ("HTTP_PROXY", PROXY),
            ("ALL_PROXY", PROXY),
        ];
        for url in [
            "http://127.0.0.1:8750",
            "http://127.9.8.7",
            "https://localhost:9",
            "http://LOCALHOST",
            "http://[::1]:80",
        ] {
            assert_eq!(route(url, &env), Ok(None), "{url}");
        }
    }

    #[test]
    fn no_proxy_lists_hosts_domains_addresses_and_ports() {
        let through = |url: &str, list: &str| {
            route(url, &[("HTTPS_PROXY", PROXY), ("no_proxy", list)])
                .unwrap()
                .is_some()
        };
        let remote = "https://telemetry.example.org";
        assert!(!through(remote, "*"));
        assert!(!through(remote, "telemetry.example.org"));
        assert!(!through(remote, "example.org"));
        assert!(!through(remote, ".example.org"));
        assert!(!through(remote, "*.example.org"));
        assert!(!through(remote, "other.net, EXAMPLE.ORG"));
        assert!(!through(remote, "example.org:443"));
        assert!(through(remote, "example.org:8443"));
        assert!(through(remote, "ample.org"));
        assert!(through(remote, "telemetry.example.org.uk"));
        assert!(through(remote, ""));
        assert!(!through("https://10.1.2.3", "10.0.0.0/8"));
        assert!(through("https://11.1.2.3", "10.0.0.0/8"));
        assert!(!through("https://10.1.2.3:8443", "10.1.2.3"));
        assert!(!through("https://[fd00::5]", "fd00::/8"));
        assert!(!through("https://[fd00::5]:9", "[fd00::5]:9"));
        assert!(through("https://[fd00::5]", "10.0.0.0/8"));
        // The uppercase name wins, as with the proxy variables.
        let env = [
            ("HTTPS_PROXY", PROXY),
            ("NO_PROXY", "other.net"),
            ("no_proxy", "*"),
        ];
        assert_eq!(route(remote, &env), Ok(Some(PROXY.into())));
    }

    #[test]
    fn http_endpoints_ignore_https_proxy() {
        let url = "http://collector.invalid:8080";
        assert_eq!(route(url, &[("HTTPS_PROXY", PROXY)]), Ok(None));
        assert_eq!(route(url, &[("http_proxy", PROXY)]), Ok(Some(PROXY.into())));
    }
}
