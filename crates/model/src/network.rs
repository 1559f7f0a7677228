//! Network decisions: whether a request's origin may reach a registry at all. Public network access and the
//! IP rules decide for requests from the public listener; requests through a private endpoint are private
//! traffic for the registry the endpoint is connected to, and for no other.

use crate::egress::Origin;
use crate::registry::{DefaultAction, RegistrySettings};
use ipnet::IpNet;
use std::fmt;
use std::net::IpAddr;

/// ACR's IP rules take IPv4 addresses or CIDR ranges, at most 200 of them.
pub const MAX_IP_RULES: usize = 200;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpRuleError {
    #[error("'{0}' is not an IPv4 address or CIDR range (e.g. 203.0.113.7 or 203.0.113.0/24)")]
    Malformed(String),
    #[error("'{0}' has host bits set: use {1}")]
    HostBits(String, String),
    #[error("the rule '{0}' is listed twice")]
    Duplicate(String),
    #[error("the rules '{0}' and '{1}' overlap: keep the wider one")]
    Overlap(String, String),
    #[error("at most {MAX_IP_RULES} IP rules are allowed")]
    TooMany,
}

/// Parses one rule: a bare IPv4 address is a /32.
pub fn parse_ip_rule(value: &str) -> Result<IpNet, IpRuleError> {
    let v = value.trim();
    let net: IpNet = if v.contains('/') {
        v.parse()
            .map_err(|_| IpRuleError::Malformed(value.into()))?
    } else {
        let ip: IpAddr = v
            .parse()
            .map_err(|_| IpRuleError::Malformed(value.into()))?;
        IpNet::from(ip)
    };
    if !matches!(net, IpNet::V4(_)) {
        return Err(IpRuleError::Malformed(value.into()));
    }
    if net.network() != net.addr() {
        return Err(IpRuleError::HostBits(value.into(), net.trunc().to_string()));
    }
    Ok(net)
}

/// Validates a whole rule list: well-formed, no duplicates, no overlaps, within the limit.
pub fn validate_ip_rules(values: &[String]) -> Result<Vec<IpNet>, IpRuleError> {
    if values.len() > MAX_IP_RULES {
        return Err(IpRuleError::TooMany);
    }
    let nets = values
        .iter()
        .map(|v| parse_ip_rule(v))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, a) in nets.iter().enumerate() {
        for (j, b) in nets.iter().enumerate().skip(i + 1) {
            if a == b {
                return Err(IpRuleError::Duplicate(values[i].clone()));
            }
            if a.contains(b) || b.contains(a) {
                return Err(IpRuleError::Overlap(values[i].clone(), values[j].clone()));
            }
        }
    }
    Ok(nets)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkDenial {
    PublicAccessDisabled,
    NotInIpRules,
    /// The private endpoint the request came through belongs to another registry.
    OtherRegistrysEndpoint,
    /// The private endpoint's connection is pending, rejected or disconnected.
    EndpointNotApproved,
    /// The server acting for a caller (import) on a network-restricted registry that does not trust its services
    /// (`networkRuleBypassOptions: None`).
    TrustedServicesNotAllowed,
}

impl fmt::Display for NetworkDenial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetworkDenial::PublicAccessDisabled => "public network access is disabled",
            NetworkDenial::NotInIpRules => {
                "the caller's IP matches no IP rule and the default action is Deny"
            }
            NetworkDenial::OtherRegistrysEndpoint => {
                "the private endpoint is connected to another registry"
            }
            NetworkDenial::EndpointNotApproved => "the private endpoint connection is not approved",
            NetworkDenial::TrustedServicesNotAllowed => {
                "the registry's network rules do not let trusted services through (networkRuleBypassOptions: None)"
            }
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkDecision {
    /// Through an approved private endpoint of this registry.
    Private,
    /// From the public network, allowed by the settings.
    Public,
    /// The server itself, for a management-plane caller, let through as a trusted service.
    Trusted,
    Denied(NetworkDenial),
}

/// Decides whether `origin` may reach a registry with `settings`, whose id is `registry_id`.
pub fn decide_network(
    registry_id: &str,
    settings: &RegistrySettings,
    origin: &Origin,
) -> NetworkDecision {
    if let Some(pe) = &origin.private_endpoint {
        return if pe.registry_id != registry_id {
            NetworkDecision::Denied(NetworkDenial::OtherRegistrysEndpoint)
        } else if !pe.approved {
            NetworkDecision::Denied(NetworkDenial::EndpointNotApproved)
        } else {
            NetworkDecision::Private
        };
    }
    if origin.trusted_service {
        let restricted = !settings.public_network_access
            || settings.network_rule_set.default_action == DefaultAction::Deny;
        return if restricted && !settings.bypass_trusted_services {
            NetworkDecision::Denied(NetworkDenial::TrustedServicesNotAllowed)
        } else {
            NetworkDecision::Trusted
        };
    }
    if !settings.public_network_access {
        return NetworkDecision::Denied(NetworkDenial::PublicAccessDisabled);
    }
    let rules = &settings.network_rule_set;
    if rules.default_action == DefaultAction::Allow {
        return NetworkDecision::Public;
    }
    let allowed = rules.ip_rules.iter().any(|r| {
        // Rules are parsed when settings load (`RegistrySettings::prepare`); parsing here is the fallback for
        // settings built in memory.
        r.range
            .or_else(|| crate::registry::Ipv4Range::parse(&r.value))
            .is_some_and(|range| range.contains(origin.client_ip))
    });
    if allowed {
        NetworkDecision::Public
    } else {
        NetworkDecision::Denied(NetworkDenial::NotInIpRules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::PrivateEndpointOrigin;
    use crate::registry::{IpRule, Sku};

    fn origin(ip: &str) -> Origin {
        Origin {
            client_ip: ip.parse().unwrap(),
            listener: "main".into(),
            private_endpoint: None,
            trusted_service: false,
        }
    }

    #[test]
    fn rules_parse_and_validate() {
        assert_eq!(
            parse_ip_rule("10.0.0.1").unwrap().to_string(),
            "10.0.0.1/32"
        );
        assert!(
            matches!(parse_ip_rule("10.0.0.1/24"), Err(IpRuleError::HostBits(_, s)) if s == "10.0.0.0/24")
        );
        for bad in ["", "10.0.0", "10.0.0.0/33", "::1", "abc"] {
            assert!(parse_ip_rule(bad).is_err(), "{bad}");
        }
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(validate_ip_rules(&v(&["10.0.0.0/8", "192.168.1.0/24"])).is_ok());
        assert!(matches!(
            validate_ip_rules(&v(&["10.0.0.0/8", "10.0.0.0/8"])),
            Err(IpRuleError::Duplicate(_))
        ));
        assert!(matches!(
            validate_ip_rules(&v(&["10.0.0.0/8", "10.1.0.0/16"])),
            Err(IpRuleError::Overlap(..))
        ));
        assert!(matches!(
            validate_ip_rules(&vec!["1.2.3.4".to_string(); 201]),
            Err(IpRuleError::TooMany)
        ));
    }

    #[test]
    fn decisions() {
        let mut s = RegistrySettings::new(Sku::Premium, crate::Location::parse("local").unwrap());
        assert_eq!(
            decide_network("r", &s, &origin("8.8.8.8")),
            NetworkDecision::Public
        );
        s.network_rule_set.default_action = DefaultAction::Deny;
        s.network_rule_set.ip_rules = vec![IpRule::new("127.0.0.0/30")];
        assert_eq!(
            decide_network("r", &s, &origin("127.0.0.2")),
            NetworkDecision::Public
        );
        assert_eq!(
            decide_network("r", &s, &origin("127.0.0.9")),
            NetworkDecision::Denied(NetworkDenial::NotInIpRules)
        );
        s.public_network_access = false;
        assert_eq!(
            decide_network("r", &s, &origin("127.0.0.2")),
            NetworkDecision::Denied(NetworkDenial::PublicAccessDisabled)
        );
        let mut via = origin("10.1.1.1");
        via.private_endpoint = Some(PrivateEndpointOrigin {
            name: "pe1".into(),
            registry_id: "r".into(),
            approved: true,
        });
        assert_eq!(decide_network("r", &s, &via), NetworkDecision::Private);
        assert_eq!(
            decide_network("other", &s, &via),
            NetworkDecision::Denied(NetworkDenial::OtherRegistrysEndpoint)
        );
        via.private_endpoint.as_mut().unwrap().approved = false;
        assert_eq!(
            decide_network("r", &s, &via),
            NetworkDecision::Denied(NetworkDenial::EndpointNotApproved)
        );
    }
}
