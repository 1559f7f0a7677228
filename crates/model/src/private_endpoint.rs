//! Private endpoints: a listener on an internal network connected to one registry. Only an approved connection
//! makes the listener's traffic private traffic for that registry. The connection's state machine lives here;
//! the rule that a protected registry keeps at least one approved connection lives in [`crate::policy`].

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};

/// ACR's limit: at most 200 private endpoints per registry. Every endpoint holds a listener (whatever its
/// connection's state: a pending, rejected or disconnected one answers `403 DENIED`), so this also bounds the
/// listeners a registry's endpoints open. Counted in the transaction that creates an endpoint.
pub const MAX_PRIVATE_ENDPOINTS_PER_REGISTRY: usize = 200;

/// Why an address cannot be a private endpoint's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("{0} is not a unicast host address ({1}): a private endpoint listens on one address of one host, e.g. 198.18.0.5")]
    NotUnicast(IpAddr, &'static str),
}

/// An address a private endpoint may listen on: one host's unicast address. Built only by [`HostAddress::new`],
/// and the only thing the server binds an endpoint's listener to, so a wildcard (which would make every local
/// address "private" traffic), a multicast or broadcast group, or a cloud metadata address is never bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HostAddress(IpAddr);

impl HostAddress {
    /// Refuses what is decidable from the address alone, in every spelling (IPv4-mapped, IPv4-compatible and
    /// NAT64 forms are judged as the IPv4 address they carry): the unspecified addresses (`0.0.0.0/8`, `::`),
    /// limited broadcast, multicast (`224.0.0.0/4`, `ff00::/8`) and the cloud metadata addresses
    /// (`169.254.169.254`, `fd00:ec2::254`), which local processes trust with the host's credentials.
    pub fn new(ip: IpAddr) -> Result<HostAddress, AddressError> {
        let refuse = |why| Err(AddressError::NotUnicast(ip, why));
        match crate::outbound::canonical(ip) {
            IpAddr::V4(v4) if v4.octets()[0] == 0 => {
                refuse("unspecified: it means every address of this host")
            }
            IpAddr::V4(v4) if v4 == Ipv4Addr::BROADCAST => refuse("the limited broadcast address"),
            IpAddr::V4(v4) if v4.is_multicast() => refuse("a multicast group"),
            IpAddr::V4(v4) if v4 == Ipv4Addr::new(169, 254, 169, 254) => {
                refuse("the cloud instance metadata address")
            }
            IpAddr::V6(v6) if v6.is_unspecified() => {
                refuse("unspecified: it means every address of this host")
            }
            IpAddr::V6(v6) if v6.is_multicast() => refuse("a multicast group"),
            IpAddr::V6(v6)
                if v6
                    == "fd00:ec2::254"
                        .parse::<std::net::Ipv6Addr>()
                        .expect("literal") =>
            {
                refuse("the cloud instance metadata address")
            }
            _ => Ok(HostAddress(ip)),
        }
    }

    pub fn ip(self) -> IpAddr {
        self.0
    }
}

impl std::fmt::Display for HostAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for HostAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        HostAddress::new(IpAddr::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// `privateLinkServiceConnectionState.status`, as ACR names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConnectionStatus {
    Pending,
    Approved,
    Rejected,
    /// The registry side removed the connection; the endpoint still exists but carries no traffic.
    Disconnected,
}

impl ConnectionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionStatus::Pending => "Pending",
            ConnectionStatus::Approved => "Approved",
            ConnectionStatus::Rejected => "Rejected",
            ConnectionStatus::Disconnected => "Disconnected",
        }
    }

    /// Case-insensitive, as ARM enum values are.
    pub fn parse(s: &str) -> Option<ConnectionStatus> {
        [
            ConnectionStatus::Pending,
            ConnectionStatus::Approved,
            ConnectionStatus::Rejected,
            ConnectionStatus::Disconnected,
        ]
        .into_iter()
        .find(|c| c.as_str().eq_ignore_ascii_case(s))
    }
}

/// One private endpoint and its connection to a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivateEndpoint {
    pub id: String,
    /// The endpoint's own resource name (`Microsoft.Network/privateEndpoints/<name>`).
    pub name: String,
    pub resource_group: String,
    pub registry_id: String,
    /// The connection's name on the registry side: `<registry>.<32 hex>`, as ACR names them.
    pub connection_name: String,
    /// The address the endpoint listens on; its port is the server's.
    pub address: IpAddr,
    pub status: ConnectionStatus,
    pub description: String,
    pub created_at: String,
}

impl PrivateEndpoint {
    pub fn is_approved(&self) -> bool {
        self.status == ConnectionStatus::Approved
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    #[error("A rejected private endpoint connection cannot be approved. Delete the private endpoint and create it again.")]
    RejectedIsFinal,
    #[error("The private endpoint connection is disconnected. Delete the private endpoint and create it again.")]
    DisconnectedIsFinal,
    #[error("A connection's status can be set to Approved or Rejected, not {0}.")]
    NotSettable(&'static str),
}

/// Checks a status change requested on the connection (approve, reject). Setting the current status again only
/// updates the description.
pub fn transition(
    from: ConnectionStatus,
    to: ConnectionStatus,
) -> Result<ConnectionStatus, ConnectionError> {
    use ConnectionStatus::*;
    match (from, to) {
        (f, t) if f == t => Ok(t),
        (Disconnected, _) => Err(ConnectionError::DisconnectedIsFinal),
        (_, Pending) | (_, Disconnected) => Err(ConnectionError::NotSettable(to.as_str())),
        (Rejected, Approved) => Err(ConnectionError::RejectedIsFinal),
        _ => Ok(to),
    }
}

#[cfg(test)]
mod tests {
    use super::ConnectionStatus::*;
    use super::*;

    #[test]
    fn approve_and_reject_from_pending() {
        assert_eq!(transition(Pending, Approved), Ok(Approved));
        assert_eq!(transition(Pending, Rejected), Ok(Rejected));
        assert_eq!(transition(Approved, Rejected), Ok(Rejected));
        assert_eq!(transition(Approved, Approved), Ok(Approved));
    }

    #[test]
    fn rejected_and_disconnected_are_final() {
        assert_eq!(
            transition(Rejected, Approved),
            Err(ConnectionError::RejectedIsFinal)
        );
        assert_eq!(
            transition(Disconnected, Approved),
            Err(ConnectionError::DisconnectedIsFinal)
        );
        assert!(transition(Approved, Pending).is_err());
        assert!(transition(Approved, Disconnected).is_err());
    }

    #[test]
    fn endpoint_addresses_are_unicast_host_addresses() {
        for bad in [
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "::ffff:0.0.0.0",
            "255.255.255.255",
            "::ffff:255.255.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "::ffff:224.0.0.1",
            "::224.0.0.1",
            "64:ff9b::e000:1",
            "ff02::1",
            "ff05::1:3",
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "fd00:ec2::254",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(HostAddress::new(ip).is_err(), "{bad}");
        }
        for good in [
            "198.18.0.5",
            "127.0.0.10",
            "10.1.2.3",
            "::1",
            "fd00::5",
            "2001:db8::1",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = good.parse().unwrap();
            assert_eq!(HostAddress::new(ip).unwrap().ip(), ip, "{good}");
        }
    }

    #[test]
    fn status_names_parse_case_insensitively() {
        assert_eq!(ConnectionStatus::parse("approved"), Some(Approved));
        assert_eq!(ConnectionStatus::parse("Nope"), None);
    }
}
