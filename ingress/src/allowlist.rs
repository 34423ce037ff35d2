//! Optional source-IP allowlist, and finding the client's address behind trusted proxies.

use std::net::IpAddr;

use ipnet::IpNet;

/// A parsed list of networks (clap needs a named type for a whole-value parser).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrList(pub Vec<IpNet>);

/// Xsolla's webhook source ranges, from the official PHP SDK (`WebhookAuthenticator.php`,
/// commit 4ac9b70, 2025-10-31); see `docs/xsolla-protocol.md` §5.
pub const XSOLLA_RANGES: &[&str] = &[
    "185.30.20.0/24",
    "185.30.21.0/24",
    "185.30.22.0/24",
    "185.30.23.0/24",
    "34.102.38.178/32",
    "34.94.43.207/32",
    "35.236.73.234/32",
    "34.94.69.44/32",
    "34.102.22.197/32",
];

/// Which client addresses may post webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpAllowlist {
    Off,
    Only(Vec<IpNet>),
}

impl IpAllowlist {
    pub fn allows(&self, ip: IpAddr) -> bool {
        match self {
            IpAllowlist::Off => true,
            IpAllowlist::Only(nets) => nets.iter().any(|n| n.contains(&canonical(ip))),
        }
    }
}

/// `off`, `xsolla`, or a comma-separated list of CIDRs / addresses (which may include `xsolla`).
pub fn parse_allowlist(s: &str) -> Result<IpAllowlist, String> {
    match s.trim() {
        "" | "off" => Ok(IpAllowlist::Off),
        list => {
            let mut nets = Vec::new();
            for item in list.split(',').map(str::trim) {
                if item == "xsolla" {
                    nets.extend(
                        XSOLLA_RANGES
                            .iter()
                            .map(|r| r.parse::<IpNet>().expect("valid constant")),
                    );
                } else {
                    nets.push(parse_net(item)?);
                }
            }
            Ok(IpAllowlist::Only(nets))
        }
    }
}

/// A comma-separated list of CIDRs or plain addresses; empty is allowed.
pub fn parse_cidr_list(s: &str) -> Result<CidrList, String> {
    s.split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(parse_net)
        .collect::<Result<Vec<_>, _>>()
        .map(CidrList)
}

/// `TRUSTED_PROXIES`: a CIDR list without a catch-all. Trusting `0.0.0.0/0` or `::/0` would
/// believe every client's `X-Forwarded-For`, so anyone could claim an allowed address.
pub fn parse_trusted_proxies(s: &str) -> Result<CidrList, String> {
    let list = parse_cidr_list(s)?;
    if let Some(all) = list.0.iter().find(|n| n.prefix_len() == 0) {
        return Err(format!(
            "`{all}` trusts every address: any client could forge its IP in X-Forwarded-For; list only your proxies"
        ));
    }
    Ok(list)
}

fn parse_net(item: &str) -> Result<IpNet, String> {
    item.parse::<IpNet>()
        .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{item}` is not an IP address or CIDR (like 185.30.20.0/24)"))
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`, what a dual-stack listener reports) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy, in which case
/// `X-Forwarded-For` is read from the right, skipping trusted proxies; the first untrusted
/// hop is the client. `forwarded_for` is every line of the header in the order received
/// (`None` for a line that is not text): a proxy may append its own line rather than extend
/// the client's, so reading only the first line would believe whatever the client wrote.
/// A malformed header from a trusted proxy falls back to the peer.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = Option<&'a str>>,
    trusted: &[IpNet],
) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut hops = Vec::new();
    for line in forwarded_for {
        let Some(line) = line else {
            return peer;
        };
        for part in line.split(',').map(str::trim) {
            match part.parse::<IpAddr>() {
                Ok(ip) => hops.push(canonical(ip)),
                Err(_) => return peer,
            }
        }
    }
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn xsolla_list_allows_xsolla_ranges_only() {
        let list = parse_allowlist("xsolla").unwrap();
        assert!(list.allows(ip("185.30.22.7")));
        assert!(list.allows(ip("34.94.69.44")));
        assert!(list.allows(ip("::ffff:185.30.20.1")));
        assert!(!list.allows(ip("34.94.69.45")));
        assert!(!list.allows(ip("127.0.0.1")));
        assert!(parse_allowlist("off").unwrap().allows(ip("8.8.8.8")));
    }

    #[test]
    fn refuses_bad_cidrs_by_name() {
        let err = parse_allowlist("10.0.0.0/33").unwrap_err();
        assert!(err.contains("10.0.0.0/33"), "{err}");
        assert!(parse_cidr_list("").unwrap().0.is_empty());
        assert_eq!(parse_cidr_list("10.0.0.1, 10.1.0.0/16").unwrap().0.len(), 2);
    }

    #[test]
    fn refuses_to_trust_every_address() {
        for all in ["0.0.0.0/0", "10.0.0.1, ::/0"] {
            assert!(
                parse_trusted_proxies(all)
                    .unwrap_err()
                    .contains("trusts every address")
            );
        }
        assert_eq!(parse_trusted_proxies("10.0.0.0/8").unwrap().0.len(), 1);
        assert!(parse_trusted_proxies("").unwrap().0.is_empty());
    }

    #[test]
    fn believes_forwarded_for_only_from_trusted_proxies() {
        let trusted = parse_cidr_list("10.0.0.0/8").unwrap().0;
        // Untrusted peer: header ignored (anyone can write it).
        assert_eq!(
            client_ip(ip("203.0.113.9"), [Some("185.30.20.1")], &trusted),
            ip("203.0.113.9")
        );
        // Trusted proxy: rightmost untrusted hop is the client; a spoofed left part is ignored.
        assert_eq!(
            client_ip(
                ip("10.0.0.2"),
                [Some("1.2.3.4, 185.30.20.1, 10.0.0.3")],
                &trusted
            ),
            ip("185.30.20.1")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), [Some("garbage")], &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(client_ip(ip("10.0.0.2"), [], &trusted), ip("10.0.0.2"));
        assert_eq!(client_ip(ip("10.0.0.2"), [None], &trusted), ip("10.0.0.2"));
    }

    #[test]
    fn reads_every_forwarded_for_line_in_order() {
        let trusted = parse_cidr_list("10.0.0.0/8").unwrap().0;
        // The client wrote an allowed address; the proxy added the real one as a 2nd line.
        let spoofed = [Some("185.30.20.1"), Some("203.0.113.9, 10.0.0.3")];
        assert_eq!(
            client_ip(ip("10.0.0.2"), spoofed, &trusted),
            ip("203.0.113.9")
        );
        let other_order = [Some("203.0.113.9"), Some("185.30.20.1")];
        assert_eq!(
            client_ip(ip("10.0.0.2"), other_order, &trusted),
            ip("185.30.20.1")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), [Some("185.30.20.1"), Some("bad")], &trusted),
            ip("10.0.0.2")
        );
    }
}
