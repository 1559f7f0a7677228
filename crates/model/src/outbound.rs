//! The outbound rule (DESIGN principle 7): may the server, acting on its own (import, and later pipelines,
//! webhooks, log sinks, alerts), open a connection to this address? A connection to an address where this server
//! listens would arrive as trusted traffic (a private endpoint's, a loopback client's) and be served, so it is
//! refused whatever the operator's lists say; then the operator's `deny` list, its `allow` list, and the link-local
//! (cloud metadata) ranges, denied unless `allow` names them.
//!
//! The decision is taken on the address actually dialled, after name resolution, so every spelling of an address
//! (a name, `127.1`, `2130706433`, `[::ffff:127.0.0.1]`) reaches it in one of the two forms [`canonical`] maps to.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The operator's outbound lists (`[outbound]` in the configuration file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboundRules {
    /// When not empty, the only destinations allowed (besides never this server itself).
    pub allow: Vec<IpNet>,
    /// Destinations refused; wins over `allow`.
    pub deny: Vec<IpNet>,
    /// The directories transfer pipelines may write archives to and read them from (`LocalDirectory`: removable
    /// media, a data diode's inbox), each with everything below it. None by default: a management caller must not
    /// choose where on the server's disks files are written.
    pub directories: Vec<std::path::PathBuf>,
}

/// Why a directory is refused to a transfer pipeline.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryDenial {
    #[error("the directory '{0}' is not one of this server's transfer directories: add it (or a directory above it) to `directories` under [outbound] in the configuration file (moat.toml) and restart the server")]
    NotListed(String),
    #[error("the directory '{0}' is not an absolute path without '.' or '..' segments")]
    NotPlain(String),
}

/// Whether `dir` is one of `allowed` or below one, comparing whole path components (never string prefixes: `/media/usb2`
/// is not below `/media/usb`). Pure: the connector also checks the path with its symbolic links resolved.
pub fn decide_directory(
    dir: &std::path::Path,
    allowed: &[std::path::PathBuf],
) -> Result<(), DirectoryDenial> {
    use std::path::Component;
    let shown = || crate::text::escape(&dir.to_string_lossy());
    if !dir.is_absolute()
        || dir
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(DirectoryDenial::NotPlain(shown()));
    }
    if allowed.iter().any(|a| dir.starts_with(a)) {
        Ok(())
    } else {
        Err(DirectoryDenial::NotListed(shown()))
    }
}

/// The ranges refused unless the operator allows them: instance metadata services answer there with the host's
/// credentials (169.254.169.254 on every cloud, fd00:ec2::254 on AWS over IPv6).
pub fn default_denied() -> [IpNet; 3] {
    [
        "169.254.0.0/16".parse().expect("literal"),
        "fe80::/10".parse().expect("literal"),
        "fd00:ec2::254/128".parse().expect("literal"),
    ]
}

/// Why a destination is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutboundDenial {
    #[error("this server listens there ({0})")]
    OwnListener(SocketAddr),
    #[error("the unspecified address reaches this host")]
    Unspecified,
    #[error(
        "{0} is a link-local (cloud metadata) range, refused unless [outbound] allow names it"
    )]
    LinkLocal(IpNet),
    #[error("the operator's [outbound] deny list names {0}")]
    OperatorDeny(IpNet),
    #[error("the operator's [outbound] allow list does not name it")]
    NotAllowed,
}

impl OutboundDenial {
    /// A refusal because the destination is this server itself (the others are the operator's lists).
    pub fn is_self(&self) -> bool {
        matches!(
            self,
            OutboundDenial::OwnListener(_) | OutboundDenial::Unspecified
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboundDecision {
    Allow,
    Deny(OutboundDenial),
}

/// One form per address: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`) and NAT64
/// (`64:ff9b::a.b.c.d`) IPv6 addresses all reach the IPv4 address they embed.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    let embedded = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let compatible = s[..6].iter().all(|&x| x == 0);
    // `::` and `::1` are IPv6's own unspecified and loopback addresses, not compatible forms.
    if compatible && v6 != Ipv6Addr::UNSPECIFIED && v6 != Ipv6Addr::LOCALHOST {
        return IpAddr::V4(embedded);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return IpAddr::V4(embedded);
    }
    ip
}

/// Whether a connection to `dest` reaches the listener bound at `listener`. `dest_is_local` says whether the
/// destination address is one of this host's (a wildcard bind accepts on every one of them).
fn reaches(dest: SocketAddr, dest_is_local: bool, listener: SocketAddr) -> bool {
    if dest.port() != listener.port() {
        return false;
    }
    let (d, l) = (canonical(dest.ip()), canonical(listener.ip()));
    // A dual-stack `[::]` bind accepts IPv4 too: a wildcard of either family is every local address.
    if l.is_unspecified() {
        return dest_is_local || d.is_loopback() || d.is_unspecified();
    }
    // Every loopback address is the same host: 127.0.0.2 is an alias of 127.0.0.1 (and ::1).
    if l.is_loopback() && (d.is_loopback() || d.is_unspecified()) {
        return true;
    }
    d == l
}

/// The decision for a connection to `dest`, given where this server listens now (public listeners and private
/// endpoints, wildcard binds included) and the operator's lists.
pub fn decide_outbound(
    dest: SocketAddr,
    dest_is_local: bool,
    listeners: &[SocketAddr],
    rules: &OutboundRules,
) -> OutboundDecision {
    let ip = canonical(dest.ip());
    if ip.is_unspecified() {
        return OutboundDecision::Deny(OutboundDenial::Unspecified);
    }
    if let Some(l) = listeners.iter().find(|l| reaches(dest, dest_is_local, **l)) {
        return OutboundDecision::Deny(OutboundDenial::OwnListener(*l));
    }
    if let Some(net) = rules.deny.iter().find(|n| contains(n, ip)) {
        return OutboundDecision::Deny(OutboundDenial::OperatorDeny(*net));
    }
    let allowed = rules.allow.iter().any(|n| contains(n, ip));
    if !rules.allow.is_empty() && !allowed {
        return OutboundDecision::Deny(OutboundDenial::NotAllowed);
    }
    if !allowed {
        if let Some(net) = default_denied().into_iter().find(|n| contains(n, ip)) {
            return OutboundDecision::Deny(OutboundDenial::LinkLocal(net));
        }
    }
    OutboundDecision::Allow
}

/// Whether a list entry names `ip` (canonical); an entry written in an IPv6 form of IPv4 addresses counts for them.
fn contains(net: &IpNet, ip: IpAddr) -> bool {
    if net.contains(&ip) {
        return true;
    }
    match (net, ip) {
        (IpNet::V6(n), IpAddr::V4(v4)) => n.contains(&v4.to_ipv6_mapped()),
        _ => false,
    }
}

/// Parses an `[outbound]` list entry: a CIDR (`10.0.0.0/8`) or a single address (`10.1.2.3`, `::1`).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    s.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        format!("'{s}' is not an address or CIDR range (10.0.0.0/8, 192.0.2.7, fd00::/8)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn deny(dest: &str, local: bool, listeners: &[&str], rules: &OutboundRules) -> bool {
        let ls: Vec<SocketAddr> = listeners.iter().map(|l| sa(l)).collect();
        matches!(
            decide_outbound(sa(dest), local, &ls, rules),
            OutboundDecision::Deny(_)
        )
    }

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| parse_net(s).unwrap()).collect()
    }

    #[test]
    fn every_spelling_of_a_loopback_listener_is_refused() {
        let none = OutboundRules::default();
        let l = ["127.0.0.1:5000"];
        for d in [
            "127.0.0.1:5000",
            "127.0.0.9:5000",
            "127.255.255.254:5000",
            "[::1]:5000",
            "[::ffff:127.0.0.1]:5000",
            "[::ffff:7f00:1]:5000",
            "[::127.0.0.1]:5000",
            "[64:ff9b::127.0.0.1]:5000",
            "0.0.0.0:5000",
            "[::]:5000",
            "[::ffff:0.0.0.0]:5000",
        ] {
            assert!(deny(d, true, &l, &none), "{d}");
        }
        // Another port of this host is another service.
        assert!(!deny("127.0.0.1:5001", true, &l, &none));
        assert!(!deny("[::1]:5001", true, &l, &none));
    }

    #[test]
    fn the_unspecified_address_is_refused_on_every_port() {
        let none = OutboundRules::default();
        for d in ["0.0.0.0:80", "[::]:443", "[::ffff:0.0.0.0]:1"] {
            assert_eq!(
                decide_outbound(sa(d), true, &[], &none),
                OutboundDecision::Deny(OutboundDenial::Unspecified),
                "{d}"
            );
        }
    }

    #[test]
    fn a_wildcard_bind_is_every_local_address_at_its_port() {
        let none = OutboundRules::default();
        for l in ["0.0.0.0:5000", "[::]:5000"] {
            assert!(deny("192.0.2.7:5000", true, &[l], &none), "{l}");
            assert!(deny("[::ffff:192.0.2.7]:5000", true, &[l], &none), "{l}");
            assert!(deny("127.0.0.5:5000", false, &[l], &none), "{l}");
            assert!(!deny("192.0.2.7:5000", false, &[l], &none), "{l}");
            assert!(!deny("192.0.2.7:5001", true, &[l], &none), "{l}");
        }
    }

    #[test]
    fn a_private_endpoint_address_is_refused() {
        let none = OutboundRules::default();
        let l = ["127.0.0.1:5000", "198.18.0.5:5000"];
        assert!(deny("198.18.0.5:5000", true, &l, &none));
        assert!(deny("[::ffff:c612:5]:5000", true, &l, &none));
        // Another local address is not that listener.
        assert!(!deny("198.18.0.6:5000", true, &l, &none));
    }

    #[test]
    fn operator_lists() {
        let rules = OutboundRules {
            allow: nets(&["10.0.0.0/8", "127.0.0.0/8"]),
            deny: nets(&["10.9.0.0/16", "127.0.0.9"]),
            ..Default::default()
        };
        assert!(!deny("10.1.2.3:443", false, &[], &rules));
        assert!(deny("10.9.2.3:443", false, &[], &rules));
        assert!(deny("[::ffff:10.9.2.3]:443", false, &[], &rules));
        assert!(deny("127.0.0.9:443", false, &[], &rules));
        assert!(!deny("127.0.0.8:443", false, &[], &rules));
        assert_eq!(
            decide_outbound(sa("192.0.2.1:443"), false, &[], &rules),
            OutboundDecision::Deny(OutboundDenial::NotAllowed)
        );
    }

    #[test]
    fn directories_are_whole_components_below_a_listed_one() {
        let allowed = vec![std::path::PathBuf::from("/media/usb")];
        let d = |p: &str| decide_directory(std::path::Path::new(p), &allowed);
        assert_eq!(d("/media/usb"), Ok(()));
        assert_eq!(d("/media/usb/moat/exports"), Ok(()));
        assert!(matches!(
            d("/media/usb2"),
            Err(DirectoryDenial::NotListed(_))
        ));
        assert!(matches!(d("/media"), Err(DirectoryDenial::NotListed(_))));
        assert!(matches!(d("/etc"), Err(DirectoryDenial::NotListed(_))));
        assert!(matches!(
            d("/media/usb/../../etc"),
            Err(DirectoryDenial::NotPlain(_))
        ));
        assert!(matches!(d("media/usb"), Err(DirectoryDenial::NotPlain(_))));
        assert!(matches!(
            decide_directory(std::path::Path::new("/media/usb"), &[]),
            Err(DirectoryDenial::NotListed(_))
        ));
    }

    #[test]
    fn link_local_is_refused_unless_allowed() {
        let none = OutboundRules::default();
        for d in [
            "169.254.169.254:80",
            "[::ffff:169.254.169.254]:80",
            "[fe80::1]:80",
            "[fd00:ec2::254]:80",
        ] {
            assert!(deny(d, false, &[], &none), "{d}");
        }
        let allow = OutboundRules {
            allow: nets(&["169.254.169.254/32"]),
            deny: vec![],
            ..Default::default()
        };
        assert!(!deny("169.254.169.254:80", false, &[], &allow));
    }

    #[test]
    fn list_entries_parse() {
        assert_eq!(
            parse_net("10.1.2.3").unwrap(),
            "10.1.2.3/32".parse().unwrap()
        );
        assert_eq!(
            parse_net("10.1.2.3/8").unwrap(),
            "10.0.0.0/8".parse().unwrap()
        );
        assert_eq!(parse_net("::1").unwrap(), "::1/128".parse().unwrap());
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("example.com").is_err());
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
            any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
        ]
    }

    fn any_rules() -> impl Strategy<Value = OutboundRules> {
        fn net() -> impl Strategy<Value = IpNet> {
            (any_ip(), 0u8..=128).prop_map(|(ip, len)| {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                IpNet::new(ip, len % (max + 1)).unwrap().trunc()
            })
        }
        (
            proptest::collection::vec(net(), 0..3),
            proptest::collection::vec(net(), 0..3),
        )
            .prop_map(|(allow, deny)| OutboundRules {
                allow,
                deny,
                ..Default::default()
            })
    }

    proptest! {
        /// The IPv6 forms of an IPv4 address get the IPv4 address's decision.
        #[test]
        fn embedded_forms_decide_as_ipv4(v4 in any::<u32>(), port in any::<u16>(), local in any::<bool>(),
                                         lport in any::<u16>(), lv4 in any::<u32>(), rules in any_rules()) {
            let a = Ipv4Addr::from(v4);
            let listeners = [SocketAddr::new(IpAddr::V4(Ipv4Addr::from(lv4)), lport)];
            let plain = decide_outbound(SocketAddr::new(a.into(), port), local, &listeners, &rules);
            let o = a.octets();
            let forms = [
                a.to_ipv6_mapped(),
                Ipv6Addr::new(0, 0, 0, 0, 0, 0, u16::from_be_bytes([o[0], o[1]]), u16::from_be_bytes([o[2], o[3]])),
                Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, u16::from_be_bytes([o[0], o[1]]), u16::from_be_bytes([o[2], o[3]])),
            ];
            for f in forms {
                // `::` and `::1` are IPv6's own addresses, not forms of 0.0.0.0 and 0.0.0.1.
                if f == Ipv6Addr::UNSPECIFIED || f == Ipv6Addr::LOCALHOST { continue; }
                prop_assert_eq!(&decide_outbound(SocketAddr::new(f.into(), port), local, &listeners, &rules), &plain);
            }
        }

        /// No list lets the server connect to where it listens.
        #[test]
        fn own_listeners_are_refused_whatever_the_lists(ip in any_ip(), port in any::<u16>(), rules in any_rules()) {
            let d = decide_outbound(SocketAddr::new(ip, port), true, &[SocketAddr::new(ip, port)], &rules);
            prop_assert!(matches!(d, OutboundDecision::Deny(ref r) if r.is_self()));
            let wildcard = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
            let d = decide_outbound(SocketAddr::new(ip, port), true, &[wildcard], &rules);
            prop_assert!(matches!(d, OutboundDecision::Deny(ref r) if r.is_self()));
        }

        /// `deny` wins over `allow`; a set `allow` admits only what it names.
        #[test]
        fn deny_wins_and_allow_restricts(ip in any_ip(), port in any::<u16>(), rules in any_rules()) {
            let c = canonical(ip);
            let d = decide_outbound(SocketAddr::new(ip, port), false, &[], &rules);
            if rules.deny.iter().any(|n| contains(n, c)) {
                prop_assert!(matches!(d, OutboundDecision::Deny(_)));
            }
            if !rules.allow.is_empty() && !rules.allow.iter().any(|n| contains(n, c)) {
                prop_assert!(matches!(d, OutboundDecision::Deny(_)));
            }
            if d == OutboundDecision::Allow {
                prop_assert!(!c.is_unspecified());
            }
        }

        /// Every loopback address is refused at a port where the server listens on loopback.
        #[test]
        fn loopback_aliases(v4 in any::<u32>(), port in any::<u16>(), rules in any_rules()) {
            let alias = Ipv4Addr::from((127u32 << 24) | (v4 & 0x00ff_ffff));
            let listeners = [SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)];
            for ip in [IpAddr::V4(alias), IpAddr::V6(alias.to_ipv6_mapped()), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
                let d = decide_outbound(SocketAddr::new(ip, port), true, &listeners, &rules);
                prop_assert!(matches!(d, OutboundDecision::Deny(OutboundDenial::OwnListener(_))));
            }
        }
    }
}
