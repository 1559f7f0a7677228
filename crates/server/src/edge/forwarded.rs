//! The client's address behind trusted proxies, from `Forwarded` (RFC 7239) and `X-Forwarded-For`.
//!
//! The rule: the client is the first hop no trusted party vouches for, walking from the socket peer back through
//! the trusted proxies. Each proxy appends the address it received the request from; everything to the left of
//! the nearest trusted proxy's entry was written by whoever sent it the request, so a client can write anything
//! there, and only the entries a trusted proxy appended are believed. A hop that does not disclose an address
//! (`unknown`, an obfuscated `_name`, anything unparsable) ends the walk: the client's address is unknown.
//!
//! Which header: the one the proxy writes. When a request carries only one of the two, that one. When it carries
//! both, Moat cannot tell which the proxy wrote (it passes the other through from the client untouched), so both
//! must name the same client, or the request is refused: otherwise a client behind a proxy that writes one header
//! could choose its own address with the other. `trusted_proxy_header` in the configuration file names the
//! header when the proxy's path adds the other one legitimately (a forward proxy on the client's side).

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Which forwarding header the trusted proxies write (`trusted_proxy_header` in the configuration file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyHeader {
    /// Whichever the request carries; both must agree when it carries both.
    #[default]
    Auto,
    /// Only `Forwarded`; `X-Forwarded-For` is ignored.
    Forwarded,
    /// Only `X-Forwarded-For`; `Forwarded` is ignored.
    XForwardedFor,
}

/// One entry of a forwarding header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    Addr(IpAddr),
    /// `unknown`, an obfuscated identifier, an element without `for=`, or text that does not parse.
    Undisclosed,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientAddrError {
    #[error("the trusted proxy {proxy} forwarded this request without disclosing the client's address (an `unknown` or obfuscated hop, or a forwarding header that does not parse): configure the proxy to send the client's IP address, or remove it from trusted_proxies")]
    Undisclosed { proxy: IpAddr },
    #[error("the request carries both Forwarded (client {forwarded}) and X-Forwarded-For (client {x_forwarded_for}) and they disagree: Moat cannot tell which one the trusted proxy {proxy} wrote. Configure the proxy to send one of them, or set trusted_proxy_header in the configuration file")]
    Conflict {
        proxy: IpAddr,
        forwarded: String,
        x_forwarded_for: String,
    },
}

/// The trusted proxies and which header they write.
#[derive(Clone, Copy, Debug)]
pub struct TrustedProxies<'a> {
    pub nets: &'a [IpNet],
    pub header: ProxyHeader,
}

impl TrustedProxies<'_> {
    /// Whether `ip` is one of the trusted proxies.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client's address for a request from `peer` carrying these header lines (each `Forwarded` and
    /// `X-Forwarded-For` line as received, in order). Untrusted peers' headers are not looked at.
    pub fn client(
        &self,
        peer: IpAddr,
        forwarded: &[&str],
        x_forwarded_for: &[&str],
    ) -> Result<IpAddr, ClientAddrError> {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return Ok(peer);
        }
        let forwarded = match self.header {
            ProxyHeader::XForwardedFor => None,
            _ => forwarded_hops(forwarded),
        };
        let xff = match self.header {
            ProxyHeader::Forwarded => None,
            _ => xff_hops(x_forwarded_for),
        };
        let walk = |hops: Vec<Hop>| {
            self.walk(&hops)
                .ok_or(ClientAddrError::Undisclosed { proxy: peer })
        };
        match (forwarded, xff) {
            (None, None) => Ok(peer),
            (Some(f), None) => walk(f),
            (None, Some(x)) => walk(x),
            (Some(f), Some(x)) => {
                let (f, x) = (self.walk(&f), self.walk(&x));
                match (f, x) {
                    (Some(a), Some(b)) if a == b => Ok(a),
                    _ => Err(ClientAddrError::Conflict {
                        proxy: peer,
                        forwarded: shown(f),
                        x_forwarded_for: shown(x),
                    }),
                }
            }
        }
    }

    /// From the nearest hop back: trusted proxies are passed, the first other address is the client, an
    /// undisclosed hop means nobody can say. When every hop is a trusted address, the farthest one is the client
    /// (a client inside a trusted range).
    fn walk(&self, hops: &[Hop]) -> Option<IpAddr> {
        let mut farthest = None;
        for hop in hops.iter().rev() {
            match *hop {
                Hop::Undisclosed => return None,
                Hop::Addr(ip) if !self.trusts(ip) => return Some(ip),
                Hop::Addr(ip) => farthest = Some(ip),
            }
        }
        farthest
    }
}

fn shown(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "undisclosed".into(), |ip| ip.to_string())
}

/// A node as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711`, or a bare
/// IPv6 address (in `X-Forwarded-For`); a port may be obfuscated (`:_p1`). Anything else (`unknown`, `_hidden`,
/// garbage) discloses nothing.
fn node(s: &str) -> Hop {
    let s = s.trim();
    let addr = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, "")) => v6.parse::<Ipv6Addr>().ok(),
            Some((v6, port)) if port.strip_prefix(':').is_some_and(is_port) => {
                v6.parse::<Ipv6Addr>().ok()
            }
            _ => None,
        }
        .map(IpAddr::V6)
    } else if let Ok(ip) = s.parse::<IpAddr>() {
        Some(ip)
    } else {
        match s.rsplit_once(':') {
            Some((v4, port)) if is_port(port) => v4.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
            _ => None,
        }
    };
    addr.map_or(Hop::Undisclosed, |ip| Hop::Addr(ip.to_canonical()))
}

/// RFC 7239's `node-port`: a port number, or an obfuscated one (`_` and letters, digits, `.`, `_`, `-`).
fn is_port(s: &str) -> bool {
    match s.strip_prefix('_') {
        Some(obf) => {
            !obf.is_empty()
                && obf
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        }
        None => !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u16>().is_ok(),
    }
}

/// `X-Forwarded-For` lines as one list; `None` when the request has none.
fn xff_hops(lines: &[&str]) -> Option<Vec<Hop>> {
    if lines.is_empty() {
        return None;
    }
    Some(lines.iter().flat_map(|l| l.split(',')).map(node).collect())
}

/// `Forwarded` lines as one list of `for=` hops; `None` when no element of any line has a `for=` (a proxy that
/// forwards only `proto`/`host` says nothing about addresses). A line that does not tokenize (an unterminated
/// quoted string) is one undisclosed hop: where its elements begin and end cannot be told.
fn forwarded_hops(lines: &[&str]) -> Option<Vec<Hop>> {
    let mut hops = Vec::new();
    let mut any_for = false;
    for line in lines {
        match split_outside_quotes(line, ',') {
            None => {
                // It may well have held a `for`: fail closed.
                any_for = true;
                hops.push(Hop::Undisclosed);
            }
            Some(elements) => {
                for element in elements {
                    let (hop, has_for) = forwarded_element(element);
                    any_for |= has_for;
                    hops.push(hop);
                }
            }
        }
    }
    any_for.then_some(hops)
}

/// One element (`for=…;proto=…;by=…`): its `for` node, and whether it had one. Parameter names are
/// case-insensitive; a repeated `for`, a pair without `=` or a malformed quoted string disclose nothing.
fn forwarded_element(element: &str) -> (Hop, bool) {
    let Some(pairs) = split_outside_quotes(element, ';') else {
        return (Hop::Undisclosed, true);
    };
    let mut found: Option<Hop> = None;
    let mut malformed = false;
    for pair in pairs.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            malformed = true;
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("for") {
            continue;
        }
        let hop = unquote(value.trim()).map_or(Hop::Undisclosed, |v| node(&v));
        if found.is_some() {
            malformed = true;
        }
        found = Some(hop);
    }
    match found {
        Some(_) if malformed => (Hop::Undisclosed, true),
        Some(hop) => (hop, true),
        None => (Hop::Undisclosed, false),
    }
}

/// A token, or a quoted-string with its backslash escapes resolved; `None` for a malformed quoted string.
fn unquote(v: &str) -> Option<String> {
    let Some(inner) = v.strip_prefix('"') else {
        return (!v.contains('"')).then(|| v.to_string());
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return chars.as_str().is_empty().then_some(out),
            c => out.push(c),
        }
    }
    None
}

/// Splits at `sep` outside quoted strings; `None` when a quoted string is not terminated.
fn split_outside_quotes(s: &str, sep: char) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    parts.push(&s[start..]);
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROXY: &str = "10.0.0.1";

    fn nets() -> Vec<IpNet> {
        vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]
    }

    fn client(peer: &str, fwd: &[&str], xff: &[&str]) -> Result<String, String> {
        client_with(ProxyHeader::Auto, peer, fwd, xff)
    }

    fn client_with(
        h: ProxyHeader,
        peer: &str,
        fwd: &[&str],
        xff: &[&str],
    ) -> Result<String, String> {
        let nets = nets();
        TrustedProxies {
            nets: &nets,
            header: h,
        }
        .client(peer.parse().unwrap(), fwd, xff)
        .map(|ip| ip.to_string())
        .map_err(|e| match e {
            ClientAddrError::Undisclosed { .. } => "undisclosed".into(),
            ClientAddrError::Conflict { .. } => "conflict".into(),
        })
    }

    #[test]
    fn untrusted_peers_are_their_own_address_whatever_they_send() {
        for (fwd, xff) in [
            (vec!["for=203.0.113.9"], vec![]),
            (vec![], vec!["203.0.113.9"]),
            (vec!["for=unknown"], vec!["garbage"]),
        ] {
            assert_eq!(
                client("198.51.100.1", &fwd, &xff),
                Ok("198.51.100.1".into())
            );
        }
        // An IPv4-mapped peer is the IPv4 address.
        assert_eq!(
            client("::ffff:198.51.100.1", &[], &[]),
            Ok("198.51.100.1".into())
        );
    }

    #[test]
    fn x_forwarded_for_walks_back_through_trusted_hops() {
        let table: &[(&[&str], &str)] = &[
            (&["203.0.113.9"], "203.0.113.9"),
            (&["203.0.113.9, 10.0.0.7"], "203.0.113.9"),
            // A client-written prefix is left of the proxy's own entry and never reached.
            (&["192.0.2.66, 203.0.113.9"], "203.0.113.9"),
            (&["192.0.2.66", "203.0.113.9"], "203.0.113.9"),
            (&["203.0.113.9:4711"], "203.0.113.9"),
            (&["[2001:db8::1]:4711"], "2001:db8::1"),
            (&["2001:db8::1"], "2001:db8::1"),
            (&["[2001:db8::1]"], "2001:db8::1"),
            (&["::ffff:203.0.113.9"], "203.0.113.9"),
            // Every hop trusted: the farthest is the client.
            (&["10.1.1.1, 10.0.0.7"], "10.1.1.1"),
        ];
        for (xff, want) in table {
            assert_eq!(client(PROXY, &[], xff), Ok(want.to_string()), "{xff:?}");
        }
        for xff in [
            &["unknown"][..],
            &["garbage"],
            &["203.0.113.9, "],
            &["[2001:db8::1"],
            &["1.2.3.4:99999"],
        ] {
            assert_eq!(
                client(PROXY, &[], xff),
                Err("undisclosed".into()),
                "{xff:?}"
            );
        }
        // Past the client, what is further left does not matter, garbage included.
        assert_eq!(
            client(PROXY, &[], &["garbage, 203.0.113.9"]),
            Ok("203.0.113.9".into())
        );
    }

    #[test]
    fn forwarded_walks_back_through_trusted_hops() {
        let table: &[(&[&str], &str)] = &[
            (&["for=203.0.113.9"], "203.0.113.9"),
            (&["For=203.0.113.9;proto=https;by=10.0.0.1"], "203.0.113.9"),
            (&["for=192.0.2.66, for=203.0.113.9"], "203.0.113.9"),
            (
                &["for=192.0.2.66", "for=203.0.113.9, for=10.0.0.7"],
                "203.0.113.9",
            ),
            (&[r#"for="[2001:db8:cafe::17]:4711""#], "2001:db8:cafe::17"),
            (&[r#"for="[2001:db8:cafe::17]""#], "2001:db8:cafe::17"),
            (&[r#"for="203.0.113.9:4711""#], "203.0.113.9"),
            (&[r#"for="\203.0.113.9""#], "203.0.113.9"),
            (
                &[r#"for=203.0.113.9;proto=https, proto=http;for="[fd00::2]""#],
                "203.0.113.9",
            ),
            // A quoted comma does not split elements.
            (&[r#"for=203.0.113.9;host="a,b""#], "203.0.113.9"),
            (&["for=_hidden, for=203.0.113.9"], "203.0.113.9"),
            (&[r#"for="[2001:db8::1]:_p1""#], "2001:db8::1"),
            // Not RFC 7239 (which brackets IPv6), but unambiguous.
            (&["for=2001:db8::1"], "2001:db8::1"),
        ];
        for (fwd, want) in table {
            assert_eq!(client(PROXY, fwd, &[]), Ok(want.to_string()), "{fwd:?}");
        }
        let undisclosed: &[&[&str]] = &[
            &["for=unknown"],
            &["for=_hidden"],
            &["for=_hidden:_port"],
            &[r#"for="[2001:db8::1]:""#],
            &["for=203.0.113.9, for=unknown"],
            &[r#"for="[2001:db8::1"#],
            &["for=203.0.113.9;for=198.51.100.2"],
            &["for=203.0.113.9, proto=https"],
            &["for=203.0.113.9, garbage"],
            // The client opens a quoted string the proxy's own element would fall into.
            &[r#"for="203.0.113.66, for=198.51.100.2"#],
        ];
        for fwd in undisclosed {
            assert_eq!(
                client(PROXY, fwd, &[]),
                Err("undisclosed".into()),
                "{fwd:?}"
            );
        }
        // A Forwarded header without any for= says nothing about addresses.
        assert_eq!(
            client(PROXY, &["proto=https;host=r.example"], &[]),
            Ok(PROXY.into())
        );
        assert_eq!(
            client(PROXY, &["proto=https"], &["203.0.113.9"]),
            Ok("203.0.113.9".into())
        );
    }

    #[test]
    fn a_trusted_peer_without_headers_is_the_client() {
        assert_eq!(client(PROXY, &[], &[]), Ok(PROXY.into()));
    }

    #[test]
    fn a_client_cannot_choose_its_address_with_the_header_the_proxy_does_not_write() {
        // The proxy writes Forwarded; the client adds X-Forwarded-For naming an allowed address.
        assert_eq!(
            client(PROXY, &["for=198.51.100.2"], &["203.0.113.9"]),
            Err("conflict".into())
        );
        // The proxy writes X-Forwarded-For (appending the real client); the client adds Forwarded.
        assert_eq!(
            client(PROXY, &["for=203.0.113.9"], &["203.0.113.9, 198.51.100.2"]),
            Err("conflict".into())
        );
        assert_eq!(
            client(PROXY, &["for=unknown"], &["203.0.113.9"]),
            Err("conflict".into())
        );
        // A proxy that writes both, consistently.
        assert_eq!(
            client(PROXY, &["for=203.0.113.9"], &["203.0.113.9"]),
            Ok("203.0.113.9".into())
        );
        // Named in the configuration: the other header is not read at all.
        assert_eq!(
            client_with(
                ProxyHeader::Forwarded,
                PROXY,
                &["for=198.51.100.2"],
                &["203.0.113.9"]
            ),
            Ok("198.51.100.2".into())
        );
        assert_eq!(
            client_with(
                ProxyHeader::XForwardedFor,
                PROXY,
                &["for=203.0.113.9"],
                &["198.51.100.2"]
            ),
            Ok("198.51.100.2".into())
        );
        assert_eq!(
            client_with(ProxyHeader::Forwarded, PROXY, &[], &["203.0.113.9"]),
            Ok(PROXY.into())
        );
    }
}
