//! A registry and its settings: what ARM shows as the registry's properties and what the policy reads.

use crate::location::{Location, StoredLocation};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sku {
    Basic,
    Standard,
    Premium,
}

impl Sku {
    pub fn as_str(self) -> &'static str {
        match self {
            Sku::Basic => "Basic",
            Sku::Standard => "Standard",
            Sku::Premium => "Premium",
        }
    }

    pub fn parse(s: &str) -> Option<Sku> {
        match s.to_ascii_lowercase().as_str() {
            "basic" => Some(Sku::Basic),
            "standard" => Some(Sku::Standard),
            "premium" => Some(Sku::Premium),
            _ => None,
        }
    }
}

/// `enabled`/`disabled`, as ACR's policies spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyStatus {
    Enabled,
    Disabled,
}

impl PolicyStatus {
    pub fn is_enabled(self) -> bool {
        self == PolicyStatus::Enabled
    }

    pub fn from_bool(enabled: bool) -> PolicyStatus {
        if enabled {
            PolicyStatus::Enabled
        } else {
            PolicyStatus::Disabled
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyStatus::Enabled => "enabled",
            PolicyStatus::Disabled => "disabled",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DefaultAction {
    Allow,
    Deny,
}

/// One `networkRuleSet.ipRules` entry: the value as given (an IPv4 address or CIDR range), and its parsed form,
/// filled by [`RegistrySettings::prepare`] so that a request never parses rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpRule {
    pub value: String,
    #[serde(skip)]
    pub range: Option<Ipv4Range>,
}

impl IpRule {
    pub fn new(value: impl Into<String>) -> IpRule {
        let value = value.into();
        let range = Ipv4Range::parse(&value);
        IpRule { value, range }
    }
}

/// An IPv4 range as two words, so that matching a request against 200 rules is 200 ANDs and compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Ipv4Range {
    network: u32,
    mask: u32,
}

impl Ipv4Range {
    /// The range of a well-formed rule (see [`crate::network::parse_ip_rule`]); `None` otherwise.
    pub fn parse(value: &str) -> Option<Ipv4Range> {
        match crate::network::parse_ip_rule(value).ok()? {
            ipnet::IpNet::V4(n) => Some(Ipv4Range {
                network: u32::from(n.network()),
                mask: u32::from(n.netmask()),
            }),
            ipnet::IpNet::V6(_) => None,
        }
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        match ip {
            std::net::IpAddr::V4(v4) => u32::from(v4) & self.mask == self.network,
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .is_some_and(|v4| u32::from(v4) & self.mask == self.network),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRuleSet {
    pub default_action: DefaultAction,
    pub ip_rules: Vec<IpRule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    pub days: i64,
    pub status: PolicyStatus,
    pub last_updated_time: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftDeletePolicy {
    pub retention_days: i64,
    pub status: PolicyStatus,
    pub last_updated_time: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policies {
    pub export: PolicyStatus,
    pub quarantine: PolicyStatus,
    /// Notary trust policy status (its `type` is always `Notary`).
    pub trust: PolicyStatus,
    pub retention: RetentionPolicy,
    pub soft_delete: SoftDeletePolicy,
    pub azure_ad_authentication_as_arm: PolicyStatus,
}

impl Default for Policies {
    /// ACR's defaults: exports enabled, everything optional off, ARM-audience tokens accepted.
    fn default() -> Policies {
        Policies {
            export: PolicyStatus::Enabled,
            quarantine: PolicyStatus::Disabled,
            trust: PolicyStatus::Disabled,
            retention: RetentionPolicy {
                days: 7,
                status: PolicyStatus::Disabled,
                last_updated_time: None,
            },
            soft_delete: SoftDeletePolicy {
                retention_days: 7,
                status: PolicyStatus::Disabled,
                last_updated_time: None,
            },
            azure_ad_authentication_as_arm: PolicyStatus::Enabled,
        }
    }
}

/// Everything about a registry that its owner can change. Stored whole; the policy compares two of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrySettings {
    pub sku: Sku,
    /// A region name, or (in a database written before locations were validated) a value that is not one.
    pub location: StoredLocation,
    pub tags: BTreeMap<String, String>,
    pub admin_user_enabled: bool,
    pub public_network_access: bool,
    pub network_rule_set: NetworkRuleSet,
    /// `networkRuleBypassOptions: AzureServices` — the server's own trusted operations pass the network rules.
    pub bypass_trusted_services: bool,
    pub data_endpoint_enabled: bool,
    pub zone_redundancy: bool,
    pub anonymous_pull_enabled: bool,
    pub policies: Policies,
}

impl RegistrySettings {
    /// ACR's defaults for a new registry of `sku`.
    pub fn new(sku: Sku, location: Location) -> RegistrySettings {
        RegistrySettings {
            sku,
            location: location.into(),
            tags: BTreeMap::new(),
            admin_user_enabled: false,
            public_network_access: true,
            network_rule_set: NetworkRuleSet {
                default_action: DefaultAction::Allow,
                ip_rules: vec![],
            },
            bypass_trusted_services: true,
            data_endpoint_enabled: false,
            zone_redundancy: false,
            anonymous_pull_enabled: false,
            policies: Policies::default(),
        }
    }

    /// Parses what requests will be matched against (IP rules); called whenever settings are loaded.
    pub fn prepare(&mut self) {
        for r in &mut self.network_rule_set.ip_rules {
            r.range = Ipv4Range::parse(&r.value);
        }
    }

    pub fn exports_enabled(&self) -> bool {
        self.policies.export.is_enabled()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// Stable id (32 hex), carried in tokens as ACR's `rid` so a token cannot be replayed on a re-created registry.
    pub id: String,
    pub name: String,
    /// The Host this registry answers on; tokens are issued for it as their audience.
    pub login_server: String,
    /// The ARM resource group the registry lives in.
    pub resource_group: String,
    pub created_at: String,
    pub settings: RegistrySettings,
}

impl Registry {
    pub fn anonymous_pull_enabled(&self) -> bool {
        self.settings.anonymous_pull_enabled
    }

    /// The host name of the registry's dedicated data endpoint under `domain` (no port): `None` when its stored
    /// name or location is not valid (a database written before they were checked), so no such value ever becomes
    /// a host a client is sent to.
    pub fn data_endpoint_host(&self, domain: &crate::DnsDomain) -> Option<String> {
        let name: crate::RegistryName = self.name.parse().ok()?;
        let region = self.settings.location.region()?;
        Some(crate::location::data_endpoint_host(&name, region, domain))
    }
}

#[cfg(test)]
mod tests {
    use super::Ipv4Range;

    #[test]
    fn ipv4_ranges_match_by_mask() {
        let r = Ipv4Range::parse("203.0.113.0/24").unwrap();
        assert!(r.contains("203.0.113.9".parse().unwrap()));
        assert!(!r.contains("203.0.114.9".parse().unwrap()));
        assert!(r.contains("::ffff:203.0.113.9".parse().unwrap()));
        assert!(!r.contains("2001:db8::1".parse().unwrap()));
        let one = Ipv4Range::parse("198.18.0.2").unwrap();
        assert!(one.contains("198.18.0.2".parse().unwrap()));
        assert!(!one.contains("198.18.0.3".parse().unwrap()));
        assert_eq!(Ipv4Range::parse("nope"), None);
    }
}
