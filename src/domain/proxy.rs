//! Who called, when Assent sits behind load balancers: the peer address, or — when the peer is a
//! trusted proxy (`ASSENT_TRUSTED_PROXIES`) — the right-most `X-Forwarded-For` address that is not
//! itself a trusted proxy. Addresses a client wrote into the header further left are never taken,
//! so a client cannot choose the IP that the sign-in throttle and the phone's prompt see.

use std::net::IpAddr;

/// An address block such as `10.0.0.0/8`, `172.16.0.0/12` or a single `192.0.2.7`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (text.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr {
            network: addr,
            prefix,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        fn bits(ip: IpAddr) -> (u128, u8) {
            match ip {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => (u128::from(u32::from(v4)), 32),
                    None => (u128::from(v6), 128),
                },
            }
        }
        let (net, net_len) = bits(self.network);
        let (addr, addr_len) = bits(ip);
        if net_len != addr_len {
            return false;
        }
        let host_bits = u32::from(net_len - self.prefix.min(net_len));
        let mask = if host_bits >= 128 {
            0
        } else {
            u128::MAX << host_bits
        };
        (net & mask) == (addr & mask)
    }
}

/// The client's address as the trusted proxies report it.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for hop in header.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            // A hop we cannot read ends the walk: keep the last address a trusted proxy vouched for.
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_match_by_prefix() {
        let net = Cidr::parse("172.16.0.0/12").unwrap();
        assert!(net.contains(ip("172.20.1.2")));
        assert!(!net.contains(ip("172.32.0.1")));
        assert!(Cidr::parse("192.0.2.7").unwrap().contains(ip("192.0.2.7")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("10.0.0.0/8")
            .unwrap()
            .contains(ip("::ffff:10.1.2.3")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
        assert_eq!(Cidr::parse("nope"), None);
    }

    #[test]
    fn only_trusted_peers_are_believed() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        // A client talking to us directly cannot claim another address.
        assert_eq!(
            client_ip(ip("198.51.100.9"), Some("1.2.3.4"), &trusted),
            ip("198.51.100.9")
        );
        // Behind the balancer: the right-most untrusted hop, whatever the client wrote before it.
        assert_eq!(
            client_ip(ip("10.0.0.5"), Some("6.6.6.6, 198.51.100.9"), &trusted),
            ip("198.51.100.9")
        );
        assert_eq!(
            client_ip(ip("10.0.0.5"), Some("198.51.100.9, 10.0.0.7"), &trusted),
            ip("198.51.100.9")
        );
        assert_eq!(client_ip(ip("10.0.0.5"), None, &trusted), ip("10.0.0.5"));
        assert_eq!(
            client_ip(ip("10.0.0.5"), Some("garbage"), &trusted),
            ip("10.0.0.5")
        );
        assert_eq!(
            client_ip(ip("10.0.0.5"), Some("198.51.100.9"), &[]),
            ip("10.0.0.5")
        );
    }
}
