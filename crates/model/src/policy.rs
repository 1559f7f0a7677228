//! The rules that keep a registry's data-loss protection whole. A change is checked against the state it
//! produces (so one request may both disable public access and exports), and the error names the rule and what
//! to do next. The store calls [`validate_change`] inside the transaction that writes the change.

use crate::registry::{DefaultAction, RegistrySettings, Sku};

/// Facts about a registry that live outside its settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyFacts {
    pub export_pipelines: usize,
    pub approved_private_endpoints: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("Export policy can only be disabled on a Premium registry; registry '{name}' is {sku}. Update the SKU to Premium first (e.g. `moat acr update -n {name} --sku Premium`).")]
    ExportRequiresPremium { name: String, sku: &'static str },
    #[error("Export policy can only be disabled when public network access is disabled. Disable public network access on registry '{name}' first, or in the same request (e.g. `moat acr update -n {name} --public-network-enabled false --allow-exports false`).")]
    ExportRequiresPublicAccessDisabled { name: String },
    #[error("Export policy cannot be disabled on registry '{name}' while it has {count} export pipeline(s). Delete the export pipelines first.")]
    ExportBlockedByPipelines { name: String, count: usize },
    #[error("Export policy can only be disabled when registry '{name}' has at least one approved private endpoint connection. Create and approve a private endpoint first.")]
    ExportRequiresPrivateEndpoint { name: String },
    #[error("Enabling public network access is not supported because the registry '{name}' has exports disabled.")]
    PublicAccessWhileExportsDisabled { name: String },
    #[error("Changing the SKU of registry '{name}' to {sku} is not supported because the registry has exports disabled. Enable exports first.")]
    SkuChangeWhileExportsDisabled { name: String, sku: &'static str },
    #[error("The last approved private endpoint connection of registry '{name}' cannot be removed while exports are disabled. Enable exports first.")]
    PrivateEndpointRequiredWhileExportsDisabled { name: String },
    #[error(
        "Export pipelines cannot be created on registry '{name}' because its exports are disabled."
    )]
    ExportPipelineWhileExportsDisabled { name: String },
    #[error("Anonymous pull is available only on Standard and Premium registries; registry '{name}' is Basic.")]
    AnonymousPullRequiresStandard { name: String },
    #[error("Network rules (a default action of Deny, IP rules) are available only on Premium registries; registry '{name}' is {sku}. Update the SKU to Premium first.")]
    NetworkRulesRequirePremium { name: String, sku: &'static str },
    #[error("Dedicated data endpoints are available only on Premium registries; registry '{name}' is {sku}. Update the SKU to Premium first.")]
    DataEndpointRequiresPremium { name: String, sku: &'static str },
    #[error("The retention policy for untagged manifests is available only on Premium registries; registry '{name}' is {sku}. Update the SKU to Premium first, or leave the retention policy disabled.")]
    RetentionRequiresPremium { name: String, sku: &'static str },
    #[error("The retention policy and the soft delete policy cannot both be enabled on registry '{name}'. Disable one of them first (e.g. `az acr config retention update -r {name} --status disabled --type UntaggedManifests`).")]
    RetentionWithSoftDelete { name: String },
    #[error(transparent)]
    NotEnforced(#[from] crate::unenforced::NotEnforced),
}

impl PolicyError {
    /// ACR answers its policy conflicts with `BadRequest` (the one code its logs show for them).
    pub fn code(&self) -> &'static str {
        match self {
            PolicyError::NotEnforced(_) => "FeatureNotSupported",
            _ => "BadRequest",
        }
    }

    /// The property the error is about, as ARM's `target`.
    pub fn target(&self) -> String {
        let target = match self {
            PolicyError::NotEnforced(e) => return e.0.target(),
            PolicyError::PublicAccessWhileExportsDisabled { .. } => "publicNetworkAccess",
            PolicyError::SkuChangeWhileExportsDisabled { .. } => "sku",
            PolicyError::AnonymousPullRequiresStandard { .. } => "anonymousPullEnabled",
            PolicyError::NetworkRulesRequirePremium { .. } => "networkRuleSet",
            PolicyError::DataEndpointRequiresPremium { .. } => "dataEndpointEnabled",
            PolicyError::RetentionRequiresPremium { .. } => "policies.retentionPolicy",
            PolicyError::RetentionWithSoftDelete { .. } => "policies",
            PolicyError::PrivateEndpointRequiredWhileExportsDisabled { .. } => {
                "privateEndpointConnections"
            }
            PolicyError::ExportPipelineWhileExportsDisabled { .. } => "exportPipelines",
            _ => "policies.exportPolicy",
        };
        target.to_string()
    }
}

/// The invariant every committed state satisfies: exports disabled ⇒ Premium, public access disabled, no export
/// pipelines and an approved private endpoint connection.
pub fn holds(s: &RegistrySettings, facts: &PolicyFacts) -> bool {
    s.exports_enabled()
        || (s.sku == Sku::Premium
            && !s.public_network_access
            && facts.export_pipelines == 0
            && facts.approved_private_endpoints > 0)
}

/// Checks a change from `before` (none for a new registry) to `after`. The error describes the change the
/// caller attempted: re-opening a protected registry reads differently from protecting an open one.
pub fn validate_change(
    name: &str,
    before: Option<&RegistrySettings>,
    after: &RegistrySettings,
    facts: &PolicyFacts,
) -> Result<(), PolicyError> {
    let name = name.to_string();
    retention_allowed(&name, after)?;
    crate::unenforced::check(after)?;
    if after.anonymous_pull_enabled && after.sku == Sku::Basic {
        return Err(PolicyError::AnonymousPullRequiresStandard { name });
    }
    if after.exports_enabled() {
        return network_rules_allowed(&name, after);
    }
    let was_protected = before.is_some_and(|b| !b.exports_enabled());
    if after.sku != Sku::Premium {
        return Err(if was_protected {
            PolicyError::SkuChangeWhileExportsDisabled {
                name,
                sku: after.sku.as_str(),
            }
        } else {
            PolicyError::ExportRequiresPremium {
                name,
                sku: after.sku.as_str(),
            }
        });
    }
    if after.public_network_access {
        return Err(if was_protected {
            PolicyError::PublicAccessWhileExportsDisabled { name }
        } else {
            PolicyError::ExportRequiresPublicAccessDisabled { name }
        });
    }
    if facts.export_pipelines > 0 {
        return Err(PolicyError::ExportBlockedByPipelines {
            name,
            count: facts.export_pipelines,
        });
    }
    if facts.approved_private_endpoints == 0 {
        return Err(PolicyError::ExportRequiresPrivateEndpoint { name });
    }
    network_rules_allowed(&name, after)
}

/// ACR's rules for the retention policy: Premium only (a SKU change away from Premium is refused while it is
/// enabled, so that no stored state breaks the rule), and never together with soft delete.
fn retention_allowed(name: &str, s: &RegistrySettings) -> Result<(), PolicyError> {
    let p = &s.policies;
    if !p.retention.status.is_enabled() {
        return Ok(());
    }
    if p.soft_delete.status.is_enabled() {
        return Err(PolicyError::RetentionWithSoftDelete { name: name.into() });
    }
    if s.sku != Sku::Premium {
        return Err(PolicyError::RetentionRequiresPremium {
            name: name.into(),
            sku: s.sku.as_str(),
        });
    }
    Ok(())
}

/// Whether the settings use network rules, which only Premium registries have (ACR's `networkRuleSet`).
/// Checks a change to a registry's private endpoint connections (reject, disconnect, delete) against its
/// settings: a registry with exports disabled keeps at least one approved connection.
pub fn validate_endpoint_change(
    name: &str,
    settings: &RegistrySettings,
    after: &PolicyFacts,
) -> Result<(), PolicyError> {
    if !settings.exports_enabled() && after.approved_private_endpoints == 0 {
        return Err(PolicyError::PrivateEndpointRequiredWhileExportsDisabled { name: name.into() });
    }
    Ok(())
}

pub fn restricts_network(s: &RegistrySettings) -> bool {
    s.network_rule_set.default_action == DefaultAction::Deny
        || !s.network_rule_set.ip_rules.is_empty()
}

fn network_rules_allowed(name: &str, s: &RegistrySettings) -> Result<(), PolicyError> {
    if s.sku != Sku::Premium && restricts_network(s) {
        return Err(PolicyError::NetworkRulesRequirePremium {
            name: name.to_string(),
            sku: s.sku.as_str(),
        });
    }
    if s.sku != Sku::Premium && s.data_endpoint_enabled {
        return Err(PolicyError::DataEndpointRequiresPremium {
            name: name.to_string(),
            sku: s.sku.as_str(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::PolicyStatus;
    use proptest::prelude::*;

    fn open(sku: Sku) -> RegistrySettings {
        RegistrySettings::new(sku, crate::Location::parse("westeurope").unwrap())
    }

    #[test]
    fn retention_is_premium_only_and_never_with_soft_delete() {
        let facts = PolicyFacts::default();
        for sku in [Sku::Basic, Sku::Standard, Sku::Premium] {
            for (retention, soft) in [(false, false), (true, false), (false, true), (true, true)] {
                let mut s = open(sku);
                s.policies.retention.status = PolicyStatus::from_bool(retention);
                s.policies.soft_delete.status = PolicyStatus::from_bool(soft);
                let got = validate_change("reg", Some(&open(sku)), &s, &facts);
                match (retention, soft, sku) {
                    (true, true, _) => {
                        let e = got.unwrap_err();
                        assert!(matches!(e, PolicyError::RetentionWithSoftDelete { .. }));
                        assert!(e.to_string().contains("cannot both be enabled"));
                    }
                    (true, false, Sku::Basic | Sku::Standard) => {
                        let e = got.unwrap_err();
                        assert!(
                            matches!(e, PolicyError::RetentionRequiresPremium { .. }),
                            "{e}"
                        );
                        assert_eq!(e.target(), "policies.retentionPolicy");
                    }
                    _ => assert!(
                        !matches!(
                            got,
                            Err(PolicyError::RetentionRequiresPremium { .. }
                                | PolicyError::RetentionWithSoftDelete { .. })
                        ),
                        "{sku:?} {retention} {soft}: {got:?}"
                    ),
                }
            }
        }
    }

    #[test]
    fn disabling_exports_needs_premium_and_private_network() {
        let facts = PolicyFacts {
            approved_private_endpoints: 1,
            ..PolicyFacts::default()
        };
        let mut s = open(Sku::Premium);
        s.policies.export = PolicyStatus::Disabled;
        assert!(matches!(
            validate_change("reg", Some(&open(Sku::Premium)), &s, &facts),
            Err(PolicyError::ExportRequiresPublicAccessDisabled { .. })
        ));
        s.public_network_access = false;
        assert_eq!(
            validate_change("reg", Some(&open(Sku::Premium)), &s, &facts),
            Ok(())
        );
        let mut std = s.clone();
        std.sku = Sku::Standard;
        assert!(matches!(
            validate_change("reg", None, &std, &facts),
            Err(PolicyError::ExportRequiresPremium { .. })
        ));
        let with_pipeline = PolicyFacts {
            export_pipelines: 1,
            ..facts
        };
        assert!(matches!(
            validate_change("reg", None, &s, &with_pipeline),
            Err(PolicyError::ExportBlockedByPipelines { .. })
        ));
        let pe = PolicyFacts {
            approved_private_endpoints: 0,
            ..facts
        };
        assert!(matches!(
            validate_change("reg", None, &s, &pe),
            Err(PolicyError::ExportRequiresPrivateEndpoint { .. })
        ));
        assert_eq!(validate_change("reg", None, &s, &facts), Ok(()));
        assert!(matches!(
            validate_endpoint_change("reg", &s, &pe),
            Err(PolicyError::PrivateEndpointRequiredWhileExportsDisabled { .. })
        ));
        assert_eq!(
            validate_endpoint_change("reg", &open(Sku::Premium), &pe),
            Ok(())
        );
    }

    #[test]
    fn protected_registry_cannot_reopen() {
        let facts = PolicyFacts {
            approved_private_endpoints: 1,
            ..PolicyFacts::default()
        };
        let mut locked = open(Sku::Premium);
        locked.public_network_access = false;
        locked.policies.export = PolicyStatus::Disabled;
        let mut reopen = locked.clone();
        reopen.public_network_access = true;
        let err = validate_change("myreg", Some(&locked), &reopen, &facts).unwrap_err();
        assert_eq!(err.to_string(), "Enabling public network access is not supported because the registry 'myreg' has exports disabled.");
        assert_eq!(err.code(), "BadRequest");
        let mut downgrade = locked.clone();
        downgrade.sku = Sku::Standard;
        assert!(matches!(
            validate_change("myreg", Some(&locked), &downgrade, &facts),
            Err(PolicyError::SkuChangeWhileExportsDisabled { .. })
        ));
        // Enabling exports and public access in one request is allowed: the result holds the invariant.
        let mut both = reopen.clone();
        both.policies.export = PolicyStatus::Enabled;
        assert_eq!(
            validate_change("myreg", Some(&locked), &both, &facts),
            Ok(())
        );
    }

    fn arb_settings() -> impl Strategy<Value = RegistrySettings> {
        (
            0..3usize,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(sku, public, export, anon, deny)| {
                let mut s = open([Sku::Basic, Sku::Standard, Sku::Premium][sku]);
                s.public_network_access = public;
                if deny {
                    s.network_rule_set.default_action = DefaultAction::Deny;
                }
                s.policies.export = PolicyStatus::from_bool(export);
                s.anonymous_pull_enabled = anon;
                s
            })
    }

    proptest! {
        /// Random sequences of proposed states: the accepted ones always satisfy the invariant, and a state that
        /// satisfies it (and the SKU rule for anonymous pull) is always accepted.
        #[test]
        fn accepted_states_hold_the_invariant(
            steps in proptest::collection::vec((arb_settings(), 0..2usize, 0..3usize), 1..40)
        ) {
            let mut current = open(Sku::Premium);
            for (proposed, pipelines, endpoints) in steps {
                let facts = PolicyFacts { export_pipelines: pipelines, approved_private_endpoints: endpoints };
                let verdict = validate_change("reg", Some(&current), &proposed, &facts);
                let anon_ok = !(proposed.anonymous_pull_enabled && proposed.sku == Sku::Basic);
                let net_ok = proposed.sku == Sku::Premium || !restricts_network(&proposed);
                prop_assert_eq!(verdict.is_ok(), holds(&proposed, &facts) && anon_ok && net_ok);
                if verdict.is_ok() {
                    current = proposed;
                }
            }
        }
    }
}
