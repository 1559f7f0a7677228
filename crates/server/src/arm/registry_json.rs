//! The Registry resource as ARM shows it, and the merge of a PUT or PATCH body into a registry's settings.
//! Unknown properties and wrong enum values are refused with the property's path; read-only properties that a
//! client echoes back from a GET are ignored, as ARM does.

use super::error::{ArmError, ArmResult};
use moat_model::registry::{DefaultAction, IpRule, PolicyStatus};
use moat_model::{Location, NotEnforced, PolicyError, Registry, RegistrySettings, Sku, Unenforced};
use serde_json::{json, Map, Value};

pub const REGISTRY_TYPE: &str = "Microsoft.ContainerRegistry/registries";

pub fn registry_id(sub: &str, rg: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{name}")
}

fn on_off(b: bool) -> &'static str {
    if b {
        "Enabled"
    } else {
        "Disabled"
    }
}

pub fn to_json(
    r: &Registry,
    sub: &str,
    config: &crate::config::ServeConfig,
    connections: &[moat_model::PrivateEndpoint],
) -> Value {
    let s = &r.settings;
    let p = &s.policies;
    let data_hosts: Vec<String> = if s.data_endpoint_enabled {
        config.data_endpoint_host(r).into_iter().collect()
    } else {
        vec![]
    };
    let connections: Vec<Value> = connections
        .iter()
        .map(|pe| super::private_endpoints::connection_json(sub, r, pe))
        .collect();
    json!({
        "id": registry_id(sub, &r.resource_group, &r.name),
        "name": r.name,
        "type": REGISTRY_TYPE,
        "location": s.location.as_str(),
        "tags": s.tags,
        "sku": {"name": s.sku.as_str(), "tier": s.sku.as_str()},
        "properties": {
            "loginServer": r.login_server,
            "creationDate": r.created_at,
            "provisioningState": "Succeeded",
            "status": null,
            "adminUserEnabled": s.admin_user_enabled,
            "networkRuleSet": {
                "defaultAction": match s.network_rule_set.default_action { DefaultAction::Allow => "Allow", DefaultAction::Deny => "Deny" },
                "virtualNetworkRules": [],
                "ipRules": s.network_rule_set.ip_rules.iter().map(|r| json!({"action": "Allow", "value": r.value})).collect::<Vec<_>>(),
            },
            "policies": {
                "quarantinePolicy": {"status": p.quarantine.as_str()},
                "trustPolicy": {"type": "Notary", "status": p.trust.as_str()},
                "retentionPolicy": {"days": p.retention.days, "lastUpdatedTime": p.retention.last_updated_time, "status": p.retention.status.as_str()},
                "exportPolicy": {"status": p.export.as_str()},
                "azureADAuthenticationAsArmPolicy": {"status": p.azure_ad_authentication_as_arm.as_str()},
                "softDeletePolicy": {"retentionDays": p.soft_delete.retention_days, "lastUpdatedTime": p.soft_delete.last_updated_time, "status": p.soft_delete.status.as_str()},
            },
            "encryption": {"status": "disabled"},
            "dataEndpointEnabled": s.data_endpoint_enabled,
            "dataEndpointHostNames": data_hosts,
            "privateEndpointConnections": connections,
            "publicNetworkAccess": on_off(s.public_network_access),
            "networkRuleBypassOptions": if s.bypass_trusted_services { "AzureServices" } else { "None" },
            "networkRuleBypassAllowedForTasks": false,
            "zoneRedundancy": on_off(s.zone_redundancy),
            "anonymousPullEnabled": s.anonymous_pull_enabled,
            "roleAssignmentMode": "LegacyRegistryPermissions",
        }
    })
}

fn object<'a>(v: &'a Value, path: &str) -> ArmResult<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| ArmError::invalid_property(path, "expected an object"))
}

fn boolean(v: &Value, path: &str) -> ArmResult<bool> {
    v.as_bool()
        .ok_or_else(|| ArmError::invalid_property(path, "expected true or false"))
}

fn string<'a>(v: &'a Value, path: &str) -> ArmResult<&'a str> {
    v.as_str()
        .ok_or_else(|| ArmError::invalid_property(path, "expected a string"))
}

/// Enum values are case-insensitive on the way in, canonical on the way out (as ACR does).
fn one_of<T: Copy>(v: &Value, path: &str, options: &[(&str, T)]) -> ArmResult<T> {
    let s = string(v, path)?;
    options
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(s))
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let allowed: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            ArmError::invalid_property(path, format!("'{s}' is not one of {}", allowed.join(", ")))
        })
}

fn enabled(v: &Value, path: &str) -> ArmResult<bool> {
    one_of(v, path, &[("Enabled", true), ("Disabled", false)])
}

fn policy_status(v: &Value, path: &str) -> ArmResult<PolicyStatus> {
    one_of(
        v,
        path,
        &[
            ("enabled", PolicyStatus::Enabled),
            ("disabled", PolicyStatus::Disabled),
        ],
    )
}

fn unknown(path: &str, key: &str) -> ArmError {
    ArmError::invalid_property(&format!("{path}.{key}"), "unknown property")
}

/// A setting Moat does not enforce, turned on (the rule and its message are `moat_model::unenforced`'s).
fn not_enforced(setting: Unenforced) -> ArmError {
    PolicyError::from(NotEnforced(setting)).into()
}

const DISABLED: &[(&str, bool)] = &[("Disabled", true), ("Enabled", false)];

/// A setting Moat does not enforce and does not store: its inert value is accepted, any other known one refused.
fn inert(v: &Value, path: &str, setting: Unenforced, options: &[(&str, bool)]) -> ArmResult<()> {
    if one_of(v, path, options)? {
        Ok(())
    } else {
        Err(not_enforced(setting))
    }
}

/// `encryption`: customer-managed keys. `{"status": "disabled"}` (what a GET shows) is accepted.
fn encryption(v: &Value, path: &str) -> ArmResult<()> {
    for (k, v) in object(v, path)? {
        let fpath = format!("{path}.{k}");
        match k.as_str() {
            "status" => inert(
                v,
                &fpath,
                Unenforced::Encryption,
                &[("disabled", true), ("enabled", false)],
            )?,
            "keyVaultProperties" if v.is_null() => {}
            "keyVaultProperties" => return Err(not_enforced(Unenforced::Encryption)),
            other => return Err(unknown(path, other)),
        }
    }
    Ok(())
}

/// `identity`: managed identities, which Moat has none of. Absent, null or `{"type": "None"}` is accepted.
fn identity(v: &Value) -> ArmResult<()> {
    if v.is_null() {
        return Ok(());
    }
    for (k, v) in object(v, "identity")? {
        let path = format!("identity.{k}");
        match k.as_str() {
            "type" => inert(
                v,
                &path,
                Unenforced::Identity,
                &[
                    ("None", true),
                    ("SystemAssigned", false),
                    ("UserAssigned", false),
                    ("SystemAssigned, UserAssigned", false),
                ],
            )?,
            "userAssignedIdentities"
                if v.is_null() || v.as_object().is_some_and(|o| o.is_empty()) => {}
            "userAssignedIdentities" => return Err(not_enforced(Unenforced::Identity)),
            // Read-only: echoed back from a GET.
            "principalId" | "tenantId" => {}
            other => return Err(unknown("identity", other)),
        }
    }
    Ok(())
}

pub fn parse_sku(v: &Value) -> ArmResult<Sku> {
    let o = object(v, "sku")?;
    let mut sku = None;
    for (k, v) in o {
        match k.as_str() {
            "name" => {
                sku = Some(
                    one_of(
                        v,
                        "sku.name",
                        &[
                            ("Basic", Sku::Basic),
                            ("Standard", Sku::Standard),
                            ("Premium", Sku::Premium),
                        ],
                    )
                    .map_err(|e| {
                        if string(v, "sku.name").is_ok_and(|s| s.eq_ignore_ascii_case("classic")) {
                            ArmError::bad_request(
                                "InvalidSku",
                                "Classic SKU is no longer supported. Please select a managed SKU.",
                            )
                            .with_target("sku.name")
                        } else {
                            e
                        }
                    })?,
                )
            }
            "tier" => {}
            other => return Err(unknown("sku", other)),
        }
    }
    sku.ok_or_else(|| ArmError::invalid_property("sku.name", "required"))
}

/// `tags`: an object of strings, within ARM's bounds (50 tags, names 512 and values 256 characters).
pub fn parse_tags(v: &Value) -> ArmResult<std::collections::BTreeMap<String, String>> {
    let mut tags = std::collections::BTreeMap::new();
    if v.is_null() {
        return Ok(tags);
    }
    let o = object(v, "tags")?;
    // Counted before the values are read: a body of a million tags is refused without walking it.
    if o.len() > moat_model::resource::MAX_TAGS {
        let e = moat_model::resource::TagError::TooMany(o.len());
        return Err(ArmError::bad_request(e.code(), e.to_string()).with_target("tags"));
    }
    for (k, v) in o {
        tags.insert(k.clone(), string(v, "tags")?.to_string());
    }
    moat_model::resource::check_tags(&tags)
        .map_err(|e| ArmError::bad_request(e.code(), e.to_string()).with_target("tags"))?;
    Ok(tags)
}

/// `location`: a region name (`westeurope`, or ARM's display form `West Europe`), stored as ARM stores it.
pub fn parse_location(v: &Value) -> ArmResult<Location> {
    let text = string(v, "location")?;
    Location::parse(text).map_err(|e| {
        ArmError::bad_request(
            "LocationNotAvailableForResourceType",
            format!(
                "The provided location is not available for resource type '{REGISTRY_TYPE}'. {e}"
            ),
        )
        .with_target("location")
    })
}

/// A registry's location is chosen at creation (as in ACR); a stored value that is not a region name (written
/// before locations were checked) may be replaced by one, the only way to repair it.
pub fn keeps_location(before: &RegistrySettings, after: &RegistrySettings) -> ArmResult<()> {
    match after.location.region() {
        Some(next) if before.location.may_become(next) => Ok(()),
        _ => Err(ArmError::bad_request(
            "LocationNotAvailableForResourceType",
            format!(
                "The location of a registry cannot be changed: this one is in '{}'.",
                moat_model::text::escape(before.location.as_str())
            ),
        )
        .with_target("location")),
    }
}

fn apply_policies(v: &Value, s: &mut RegistrySettings, now: &str) -> ArmResult<()> {
    for (k, v) in object(v, "properties.policies")? {
        let path = format!("properties.policies.{k}");
        let o = object(v, &path)?;
        for (field, value) in o {
            let fpath = format!("{path}.{field}");
            let p = &mut s.policies;
            match (k.as_str(), field.as_str()) {
                ("exportPolicy", "status") => p.export = policy_status(value, &fpath)?,
                ("quarantinePolicy", "status") => p.quarantine = policy_status(value, &fpath)?,
                ("trustPolicy", "status") => p.trust = policy_status(value, &fpath)?,
                ("trustPolicy", "type") => {
                    one_of(value, &fpath, &[("Notary", ())])?;
                }
                ("retentionPolicy", "status") => {
                    p.retention.status = policy_status(value, &fpath)?;
                    p.retention.last_updated_time = Some(now.to_string());
                }
                ("retentionPolicy", "days") => {
                    p.retention.days = value
                        .as_i64()
                        .filter(|d| (0..=365).contains(d))
                        .ok_or_else(|| ArmError::invalid_property(&fpath, "expected 0 to 365"))?
                }
                ("softDeletePolicy", "status") => {
                    p.soft_delete.status = policy_status(value, &fpath)?;
                    p.soft_delete.last_updated_time = Some(now.to_string());
                }
                ("softDeletePolicy", "retentionDays") => {
                    p.soft_delete.retention_days =
                        value
                            .as_i64()
                            .filter(|d| (1..=90).contains(d))
                            .ok_or_else(|| ArmError::invalid_property(&fpath, "expected 1 to 90"))?
                }
                ("azureADAuthenticationAsArmPolicy", "status") => {
                    p.azure_ad_authentication_as_arm = policy_status(value, &fpath)?
                }
                (_, "lastUpdatedTime") => {}
                (
                    "exportPolicy"
                    | "quarantinePolicy"
                    | "trustPolicy"
                    | "retentionPolicy"
                    | "softDeletePolicy"
                    | "azureADAuthenticationAsArmPolicy",
                    other,
                ) => return Err(unknown(&path, other)),
                (other, _) => return Err(unknown("properties.policies", other)),
            }
        }
    }
    Ok(())
}

fn apply_network_rule_set(v: &Value, s: &mut RegistrySettings) -> ArmResult<()> {
    for (k, v) in object(v, "properties.networkRuleSet")? {
        let path = format!("properties.networkRuleSet.{k}");
        match k.as_str() {
            "defaultAction" => {
                s.network_rule_set.default_action = one_of(
                    v,
                    &path,
                    &[
                        ("Allow", DefaultAction::Allow),
                        ("Deny", DefaultAction::Deny),
                    ],
                )?
            }
            "ipRules" => {
                let rules = v
                    .as_array()
                    .ok_or_else(|| ArmError::invalid_property(&path, "expected an array"))?;
                let mut out = Vec::new();
                for (i, rule) in rules.iter().enumerate() {
                    let rpath = format!("{path}[{i}]");
                    let o = object(rule, &rpath)?;
                    let mut value = None;
                    for (rk, rv) in o {
                        match rk.as_str() {
                            "action" => {
                                one_of(rv, &format!("{rpath}.action"), &[("Allow", ())])?;
                            }
                            "value" | "iPAddressOrRange" => {
                                value = Some(string(rv, &format!("{rpath}.value"))?.to_string())
                            }
                            other => return Err(unknown(&rpath, other)),
                        }
                    }
                    out.push(value.ok_or_else(|| {
                        ArmError::invalid_property(&format!("{rpath}.value"), "required")
                    })?);
                }
                let values: Vec<String> = out.iter().map(|v| v.trim().to_string()).collect();
                moat_model::network::validate_ip_rules(&values)
                    .map_err(|e| ArmError::invalid_property(&path, e.to_string()))?;
                s.network_rule_set.ip_rules = values.into_iter().map(IpRule::new).collect();
            }
            "virtualNetworkRules" => {
                let rules = v
                    .as_array()
                    .ok_or_else(|| ArmError::invalid_property(&path, "expected an array"))?;
                if !rules.is_empty() {
                    return Err(not_enforced(Unenforced::VirtualNetworkRules));
                }
            }
            other => return Err(unknown("properties.networkRuleSet", other)),
        }
    }
    Ok(())
}

/// Merges `properties` into `s`: only the keys present change (PATCH semantics; a PUT starts from defaults).
fn apply_properties(v: &Value, s: &mut RegistrySettings, now: &str) -> ArmResult<()> {
    for (k, v) in object(v, "properties")? {
        let path = format!("properties.{k}");
        match k.as_str() {
            "adminUserEnabled" => s.admin_user_enabled = boolean(v, &path)?,
            "publicNetworkAccess" => s.public_network_access = enabled(v, &path)?,
            "networkRuleSet" => apply_network_rule_set(v, s)?,
            "networkRuleBypassOptions" => {
                s.bypass_trusted_services =
                    one_of(v, &path, &[("AzureServices", true), ("None", false)])?
            }
            "dataEndpointEnabled" => s.data_endpoint_enabled = boolean(v, &path)?,
            "zoneRedundancy" => s.zone_redundancy = enabled(v, &path)?,
            "anonymousPullEnabled" => s.anonymous_pull_enabled = boolean(v, &path)?,
            "policies" => apply_policies(v, s, now)?,
            "encryption" => encryption(v, &path)?,
            "networkRuleBypassAllowedForTasks" => {
                if boolean(v, &path)? {
                    return Err(not_enforced(Unenforced::NetworkRuleBypassAllowedForTasks));
                }
            }
            "roleAssignmentMode" => inert(
                v,
                &path,
                Unenforced::RoleAssignmentMode,
                &[
                    ("LegacyRegistryPermissions", true),
                    ("AbacRepositoryPermissions", false),
                ],
            )?,
            "metadataSearch" => inert(v, &path, Unenforced::MetadataSearch, DISABLED)?,
            "regionalEndpoints" => inert(v, &path, Unenforced::RegionalEndpoints, DISABLED)?,
            "writableCacheRepos" => inert(v, &path, Unenforced::WritableCacheRepos, DISABLED)?,
            "endpointProtocol" => inert(
                v,
                &path,
                Unenforced::EndpointProtocol,
                &[("IPv4", true), ("IPv4AndIPv6", false)],
            )?,
            "autoGeneratedDomainNameLabelScope" => inert(
                v,
                &path,
                Unenforced::AutoGeneratedDomainNameLabelScope,
                &[
                    ("Unsecure", true),
                    ("TenantReuse", false),
                    ("SubscriptionReuse", false),
                    ("ResourceGroupReuse", false),
                    ("NoReuse", false),
                ],
            )?,
            // Read-only: a client may echo them back from a GET.
            "loginServer"
            | "creationDate"
            | "provisioningState"
            | "status"
            | "dataEndpointHostNames"
            | "regionalEndpointHostNames"
            | "privateEndpointConnections" => {}
            other => return Err(unknown("properties", other)),
        }
    }
    Ok(())
}

/// A PUT body: a full description; whatever it omits takes ACR's default (so a PUT without `policies`
/// re-enables exports, as in ACR).
pub fn settings_from_put(
    body: &Value,
    now: &str,
    default_location: &Location,
) -> ArmResult<RegistrySettings> {
    let o = object(body, "body")?;
    let sku = parse_sku(
        o.get("sku")
            .ok_or_else(|| ArmError::invalid_property("sku", "required"))?,
    )?;
    let location = match o.get("location") {
        Some(l) => parse_location(l)?,
        None => default_location.clone(),
    };
    let mut s = RegistrySettings::new(sku, location);
    for (k, v) in o {
        match k.as_str() {
            "sku" | "location" => {}
            "tags" => s.tags = parse_tags(v)?,
            "properties" => apply_properties(v, &mut s, now)?,
            "identity" => identity(v)?,
            "id" | "name" | "type" | "systemData" => {}
            other => return Err(ArmError::invalid_property(other, "unknown property")),
        }
    }
    Ok(s)
}

/// A PATCH body (`RegistryUpdateParameters`): merged into the current settings.
pub fn settings_from_patch(
    body: &Value,
    current: &RegistrySettings,
    now: &str,
) -> ArmResult<RegistrySettings> {
    let mut s = current.clone();
    for (k, v) in object(body, "body")? {
        match k.as_str() {
            "sku" => s.sku = parse_sku(v)?,
            "tags" => s.tags = parse_tags(v)?,
            "properties" => apply_properties(v, &mut s, now)?,
            "identity" => identity(v)?,
            "location" => {
                s.location = parse_location(v)?.into();
                keeps_location(current, &s)?;
            }
            other => return Err(ArmError::invalid_property(other, "unknown property")),
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_resets_and_patch_merges() {
        let now = "2026-01-01T00:00:00Z";
        let put = json!({"location": "westeurope", "sku": {"name": "premium"}, "properties": {"adminUserEnabled": true, "publicNetworkAccess": "disabled", "policies": {"exportPolicy": {"status": "Disabled"}}}});
        let local = Location::parse("local").unwrap();
        let s = settings_from_put(&put, now, &local).unwrap();
        assert_eq!(s.sku, Sku::Premium);
        assert!(!s.public_network_access && !s.exports_enabled() && s.admin_user_enabled);
        let patch = json!({"properties": {"networkRuleSet": {"defaultAction": "Deny", "ipRules": [{"action": "Allow", "value": "10.0.0.0/8"}]}}});
        let merged = settings_from_patch(&patch, &s, now).unwrap();
        assert!(
            !merged.exports_enabled(),
            "PATCH keeps what it does not name"
        );
        assert_eq!(merged.network_rule_set.ip_rules.len(), 1);
        let again = settings_from_put(
            &json!({"location": "westeurope", "sku": {"name": "Premium"}}),
            now,
            &local,
        )
        .unwrap();
        assert!(
            again.exports_enabled(),
            "PUT without policies resets the export policy"
        );
    }

    #[test]
    fn refuses_bad_input_with_the_path() {
        let now = "x";
        let base =
            RegistrySettings::new(Sku::Premium, moat_model::Location::parse("local").unwrap());
        let cases = [
            (json!({"properties": {"nope": 1}}), "properties.nope"),
            (
                json!({"properties": {"publicNetworkAccess": "Sometimes"}}),
                "properties.publicNetworkAccess",
            ),
            (
                json!({"properties": {"policies": {"exportPolicy": {"status": "off"}}}}),
                "properties.policies.exportPolicy.status",
            ),
            (json!({"sku": {"name": "Gold"}}), "sku.name"),
            (
                json!({"properties": {"adminUserEnabled": "yes"}}),
                "properties.adminUserEnabled",
            ),
        ];
        for (body, path) in cases {
            let e = settings_from_patch(&body, &base, now).unwrap_err();
            assert_eq!(e.target.as_deref(), Some(path), "{body}");
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        }
        assert_eq!(
            parse_sku(&json!({"name": "Classic"})).unwrap_err().code,
            "InvalidSku"
        );
        for rules in [
            json!([{"value": "10.0.0.0/33"}]),
            json!([{"value": "10.0.0.0/8"}, {"value": "10.1.0.0/16"}]),
            json!([{"value": "1.2.3.4"}, {"value": "1.2.3.4"}]),
        ] {
            let body = json!({"properties": {"networkRuleSet": {"ipRules": rules}}});
            let e = settings_from_patch(&body, &base, now).unwrap_err();
            assert_eq!(
                e.target.as_deref(),
                Some("properties.networkRuleSet.ipRules"),
                "{body}"
            );
        }
    }

    /// Parses a PATCH and checks the result as the store does (`validate_change` in its transaction).
    fn patched(body: &Value) -> ArmResult<RegistrySettings> {
        let base = RegistrySettings::new(Sku::Premium, Location::parse("local").unwrap());
        let s = settings_from_patch(body, &base, "now")?;
        moat_model::policy::validate_change("r", Some(&base), &s, &Default::default())?;
        Ok(s)
    }

    #[test]
    fn settings_moat_does_not_enforce_are_refused_when_turned_on() {
        let cases = [
            (
                json!({"properties": {"policies": {"quarantinePolicy": {"status": "enabled"}}}}),
                Unenforced::QuarantinePolicy,
            ),
            (
                json!({"properties": {"policies": {"quarantinePolicy": {"status": "ENABLED"}}}}),
                Unenforced::QuarantinePolicy,
            ),
            (
                json!({"properties": {"policies": {"trustPolicy": {"type": "Notary", "status": "Enabled"}}}}),
                Unenforced::TrustPolicy,
            ),
            (
                json!({"properties": {"zoneRedundancy": "enabled"}}),
                Unenforced::ZoneRedundancy,
            ),
            (
                json!({"properties": {"encryption": {"status": "Enabled"}}}),
                Unenforced::Encryption,
            ),
            (
                json!({"properties": {"encryption": {"status": "disabled", "keyVaultProperties": {"keyIdentifier": "https://kv/k"}}}}),
                Unenforced::Encryption,
            ),
            (
                json!({"identity": {"type": "SystemAssigned"}}),
                Unenforced::Identity,
            ),
            (
                json!({"identity": {"type": "systemassigned, userassigned"}}),
                Unenforced::Identity,
            ),
            (
                json!({"identity": {"type": "None", "userAssignedIdentities": {"/x": {}}}}),
                Unenforced::Identity,
            ),
            (
                json!({"properties": {"networkRuleSet": {"virtualNetworkRules": [{"id": "/x"}]}}}),
                Unenforced::VirtualNetworkRules,
            ),
            (
                json!({"properties": {"networkRuleBypassAllowedForTasks": true}}),
                Unenforced::NetworkRuleBypassAllowedForTasks,
            ),
            (
                json!({"properties": {"roleAssignmentMode": "AbacRepositoryPermissions"}}),
                Unenforced::RoleAssignmentMode,
            ),
            (
                json!({"properties": {"metadataSearch": "Enabled"}}),
                Unenforced::MetadataSearch,
            ),
            (
                json!({"properties": {"regionalEndpoints": "enabled"}}),
                Unenforced::RegionalEndpoints,
            ),
            (
                json!({"properties": {"endpointProtocol": "IPv4AndIPv6"}}),
                Unenforced::EndpointProtocol,
            ),
            (
                json!({"properties": {"autoGeneratedDomainNameLabelScope": "TenantReuse"}}),
                Unenforced::AutoGeneratedDomainNameLabelScope,
            ),
            (
                json!({"properties": {"writableCacheRepos": "Enabled"}}),
                Unenforced::WritableCacheRepos,
            ),
        ];
        for (body, setting) in cases {
            let e = patched(&body).unwrap_err();
            assert_eq!(
                (e.status, e.code.as_str()),
                (axum::http::StatusCode::BAD_REQUEST, "FeatureNotSupported"),
                "{body}"
            );
            assert_eq!(e.message, NotEnforced(setting).to_string(), "{body}");
            assert_eq!(e.target, Some(setting.target()), "{body}");
            // A PUT says the same.
            let mut put = body.clone();
            put["sku"] = json!({"name": "Premium"});
            let e = settings_from_put(&put, "now", &Location::parse("local").unwrap())
                .and_then(|s| {
                    Ok(moat_model::policy::validate_change(
                        "r",
                        None,
                        &s,
                        &Default::default(),
                    )?)
                })
                .unwrap_err();
            assert_eq!(e.code, "FeatureNotSupported", "{put}");
        }
        // A value that is no value of the setting is still a plain invalid property.
        let e = patched(&json!({"properties": {"metadataSearch": "Sometimes"}})).unwrap_err();
        assert_eq!(e.code, "InvalidRequestContent");
    }

    #[test]
    fn a_body_echoing_every_default_is_accepted() {
        // ACR's GET of a new registry (2026-09-01-preview, see reference/acr-behaviour.md), sent back whole.
        let body = json!({
            "sku": {"name": "Premium", "tier": "Premium"}, "location": "local", "tags": {},
            "identity": {"type": "None"},
            "properties": {
                "loginServer": "x", "creationDate": "2026-01-01T00:00:00Z", "provisioningState": "Succeeded", "status": null,
                "adminUserEnabled": false,
                "networkRuleSet": {"defaultAction": "Allow", "virtualNetworkRules": [], "ipRules": []},
                "policies": {
                    "quarantinePolicy": {"status": "disabled"},
                    "trustPolicy": {"type": "Notary", "status": "disabled"},
                    "retentionPolicy": {"days": 7, "lastUpdatedTime": "2026-01-01T00:00:00Z", "status": "disabled"},
                    "exportPolicy": {"status": "enabled"},
                    "azureADAuthenticationAsArmPolicy": {"status": "enabled"},
                    "softDeletePolicy": {"retentionDays": 7, "lastUpdatedTime": "2026-01-01T00:00:00Z", "status": "disabled"}
                },
                "encryption": {"status": "disabled"},
                "dataEndpointEnabled": false, "dataEndpointHostNames": [], "privateEndpointConnections": [],
                "publicNetworkAccess": "Enabled", "networkRuleBypassOptions": "AzureServices",
                "networkRuleBypassAllowedForTasks": false, "zoneRedundancy": "Disabled", "anonymousPullEnabled": false,
                "roleAssignmentMode": "LegacyRegistryPermissions",
                "regionalEndpoints": "Disabled", "regionalEndpointHostNames": [], "endpointProtocol": "IPv4",
                "metadataSearch": "Disabled", "autoGeneratedDomainNameLabelScope": "Unsecure", "writableCacheRepos": "Disabled"
            }
        });
        let s = patched(&body).unwrap();
        assert_eq!(s, {
            let mut want = RegistrySettings::new(Sku::Premium, Location::parse("local").unwrap());
            want.policies.retention.last_updated_time = Some("now".into());
            want.policies.soft_delete.last_updated_time = Some("now".into());
            want
        });
        let s = settings_from_put(&body, "now", &Location::parse("local").unwrap()).unwrap();
        moat_model::policy::validate_change("r", None, &s, &Default::default()).unwrap();
        // Parameters of a disabled policy are kept (they take effect only when Moat enforces the policy).
        let s = patched(&json!({"properties": {"policies": {"retentionPolicy": {"days": 30, "status": "disabled"}}}})).unwrap();
        assert_eq!(s.policies.retention.days, 30);
    }

    #[test]
    fn locations_are_region_names_and_keep_to_the_registry() {
        let now = "x";
        let local = Location::parse("local").unwrap();
        let put = |loc: &str| json!({"location": loc, "sku": {"name": "Premium"}});
        for (given, stored) in [("West Europe", "westeurope"), ("EASTUS2", "eastus2")] {
            let s = settings_from_put(&put(given), now, &local).unwrap();
            assert_eq!(s.location.as_str(), stored);
        }
        for bad in ["evil.com", "westeurope\n", "west-europe", "wëst", ""] {
            let e = settings_from_put(&put(bad), now, &local).unwrap_err();
            assert_eq!(e.code, "LocationNotAvailableForResourceType", "{bad:?}");
            assert_eq!(e.target.as_deref(), Some("location"));
            assert!(!e.message.contains('\n'), "{}", e.message);
        }
        let base = RegistrySettings::new(Sku::Premium, Location::parse("westeurope").unwrap());
        assert!(settings_from_patch(&json!({"location": "West Europe"}), &base, now).is_ok());
        assert!(settings_from_patch(&json!({"location": "eastus"}), &base, now).is_err());
        // A stored value that is not a region may be repaired, once, to a region.
        let mut broken = base.clone();
        broken.location = moat_model::StoredLocation::from_stored("evil.com/\n");
        let fixed = settings_from_patch(&json!({"location": "westeurope"}), &broken, now).unwrap();
        assert_eq!(fixed.location.as_str(), "westeurope");
    }

    #[test]
    fn tags_are_bounded() {
        let now = "x";
        let base = RegistrySettings::new(Sku::Premium, Location::parse("local").unwrap());
        let many: serde_json::Map<String, Value> =
            (0..51).map(|i| (format!("t{i}"), json!("v"))).collect();
        let e = settings_from_patch(&json!({"tags": many}), &base, now).unwrap_err();
        assert_eq!(
            (e.code.as_str(), e.target.as_deref()),
            ("TooManyTags", Some("tags"))
        );
        let e =
            settings_from_patch(&json!({"tags": {"k": "v".repeat(257)}}), &base, now).unwrap_err();
        assert_eq!(e.code, "InvalidTagValueLength");
        let ok = settings_from_patch(&json!({"tags": {"k": "v".repeat(256)}}), &base, now).unwrap();
        assert_eq!(ok.tags.len(), 1);
    }
}
