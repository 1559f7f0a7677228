//! The `acr` commands: flags → request bodies, resource-group lookup, and the calls.

use super::client::{encode, Session, ACR_API, RESOURCES_API};
use super::output::{
    credential_row, registry_row, render, resource_group_from_id, CREDENTIAL_COLUMNS,
    REGISTRY_COLUMNS,
};
use super::{
    print, AcrArgs, AcrCommand, CliError, CredentialCommand, NetworkRuleCommand, SettingsArgs,
};
use anyhow::Context;
use serde_json::{json, Map, Value};
use std::io::{BufRead, IsTerminal, Write};

pub const REGISTRY_TYPE: &str = "Microsoft.ContainerRegistry/registries";
pub const DEFAULT_LOCATION: &str = "local";

// ---------------------------------------------------------------------------------------------------------------
// Flag parsing

fn one_of(value: &str, allowed: &[&str], what: &str) -> Result<String, String> {
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(value.trim()))
        .map(|a| a.to_string())
        .ok_or_else(|| {
            format!(
                "'{value}' is not a valid {what}: use {}",
                allowed.join(", ")
            )
        })
}

pub fn parse_sku(v: &str) -> Result<String, String> {
    if v.trim().eq_ignore_ascii_case("classic") {
        return Err("Classic SKU is no longer supported. Please select a managed SKU (Basic, Standard or Premium).".into());
    }
    one_of(v, &["Basic", "Standard", "Premium"], "SKU")
}

pub fn parse_default_action(v: &str) -> Result<String, String> {
    one_of(v, &["Allow", "Deny"], "default action")
}

pub fn parse_zone_redundancy(v: &str) -> Result<String, String> {
    one_of(v, &["Enabled", "Disabled"], "zone redundancy value")
}

/// `["k=v", "a", ""]` → `{"k":"v","a":""}`; an empty list clears the tags.
pub fn parse_tags(items: &[String]) -> Map<String, Value> {
    let mut m = Map::new();
    for item in items {
        if item.is_empty() {
            continue;
        }
        let (k, v) = item.split_once('=').unwrap_or((item.as_str(), ""));
        m.insert(k.to_string(), Value::String(v.to_string()));
    }
    m
}

// ---------------------------------------------------------------------------------------------------------------
// Request bodies

/// The `properties` object for the settings that were given. `create` adds `adminUserEnabled: false` when the flag
/// is absent, as az does. `--public-network-enabled false` also sets `networkRuleSet.defaultAction: Deny`.
pub fn properties(s: &SettingsArgs, create: bool) -> Map<String, Value> {
    let mut p = Map::new();
    match (s.admin_enabled, create) {
        (Some(a), _) => {
            p.insert("adminUserEnabled".into(), json!(a));
        }
        (None, true) => {
            p.insert("adminUserEnabled".into(), json!(false));
        }
        (None, false) => {}
    }
    if let Some(action) = &s.default_action {
        p.insert("networkRuleSet".into(), json!({"defaultAction": action}));
    }
    if let Some(public) = s.public_network_enabled {
        p.insert(
            "publicNetworkAccess".into(),
            json!(if public { "Enabled" } else { "Disabled" }),
        );
        if !public {
            p.insert("networkRuleSet".into(), json!({"defaultAction": "Deny"}));
        }
    }
    if let Some(exports) = s.allow_exports {
        p.insert(
            "policies".into(),
            json!({"exportPolicy": {"status": if exports { "enabled" } else { "disabled" }}}),
        );
    }
    if let Some(d) = s.data_endpoint_enabled {
        p.insert("dataEndpointEnabled".into(), json!(d));
    }
    if let Some(z) = &s.zone_redundancy {
        p.insert("zoneRedundancy".into(), json!(z));
    }
    if let Some(a) = s.anonymous_pull_enabled {
        p.insert("anonymousPullEnabled".into(), json!(a));
    }
    p
}

pub fn create_body(
    location: Option<&str>,
    sku: &str,
    s: &SettingsArgs,
    tags: Option<&[String]>,
) -> Value {
    let mut body = json!({
        "location": location.unwrap_or(DEFAULT_LOCATION),
        "sku": {"name": sku},
        "properties": properties(s, true),
    });
    if let Some(t) = tags {
        body["tags"] = Value::Object(parse_tags(t));
    }
    body
}

/// The PATCH body, or `None` when no setting was given.
pub fn update_body(sku: Option<&str>, s: &SettingsArgs, tags: Option<&[String]>) -> Option<Value> {
    let mut body = Map::new();
    if let Some(sku) = sku {
        body.insert("sku".into(), json!({"name": sku}));
    }
    if let Some(t) = tags {
        body.insert("tags".into(), Value::Object(parse_tags(t)));
    }
    let p = properties(s, false);
    if !p.is_empty() {
        body.insert("properties".into(), Value::Object(p));
    }
    (!body.is_empty()).then_some(Value::Object(body))
}

// ---------------------------------------------------------------------------------------------------------------
// Paths

pub fn registry_path(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/{REGISTRY_TYPE}/{}",
        encode(sub),
        encode(rg),
        encode(name)
    )
}

pub(super) fn with_api(path: &str, api: &str) -> String {
    format!("{path}?api-version={api}")
}

pub fn resources_filter_path(sub: &str) -> String {
    format!(
        "/subscriptions/{}/resources?$filter={}&api-version={RESOURCES_API}",
        encode(sub),
        encode(&format!("resourceType eq '{REGISTRY_TYPE}'"))
    )
}

/// The resource group of the item named `name` (case-insensitively) in a `/resources` listing.
pub fn pick_resource_group(items: &[Value], name: &str) -> Option<String> {
    items
        .iter()
        .filter(|i| {
            i.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .filter(|i| {
            i.get("type")
                .and_then(Value::as_str)
                .is_none_or(|t| t.eq_ignore_ascii_case(REGISTRY_TYPE))
        })
        .find_map(|i| {
            i.get("id")
                .and_then(Value::as_str)
                .and_then(resource_group_from_id)
        })
}

/// `-g` when given, else the lookup az does through `/resources`.
fn resolve_group(session: &mut Session, name: &str, rg: Option<String>) -> anyhow::Result<String> {
    if let Some(rg) = rg {
        return Ok(rg);
    }
    let path = resources_filter_path(&session.creds.subscription_id.clone());
    let items = session.list_all(&path)?;
    pick_resource_group(&items, name).ok_or_else(|| {
        CliError::new(
            format!(
                "The resource with name '{name}' and type '{REGISTRY_TYPE}' could not be found in subscription '{}'.",
                session.subscription_label()
            ),
            3,
        )
        .into()
    })
}

pub(super) fn registry_url(
    session: &mut Session,
    name: &str,
    rg: Option<String>,
) -> anyhow::Result<String> {
    let rg = resolve_group(session, name, rg)?;
    Ok(with_api(
        &registry_path(&session.creds.subscription_id, &rg, name),
        ACR_API,
    ))
}

// ---------------------------------------------------------------------------------------------------------------
// Commands

fn command_name(c: &AcrCommand) -> &'static str {
    match c {
        AcrCommand::Create { .. } => "acr create",
        AcrCommand::Update { .. } => "acr update",
        AcrCommand::Show { .. } => "acr show",
        AcrCommand::Delete { .. } => "acr delete",
        AcrCommand::List { .. } => "acr list",
        AcrCommand::Credential {
            command: CredentialCommand::Show { .. },
        } => "acr credential show",
        AcrCommand::Credential {
            command: CredentialCommand::Renew { .. },
        } => "acr credential renew",
        AcrCommand::NetworkRule {
            command: NetworkRuleCommand::Add { .. },
        } => "acr network-rule add",
        AcrCommand::NetworkRule {
            command: NetworkRuleCommand::Remove { .. },
        } => "acr network-rule remove",
        AcrCommand::NetworkRule {
            command: NetworkRuleCommand::List { .. },
        } => "acr network-rule list",
        AcrCommand::PrivateEndpointConnection { command } => command.name(),
        AcrCommand::PrivateEndpoint { command } => command.name(),
        AcrCommand::Import(_) => "acr import",
        AcrCommand::ExportPipeline { .. } => "acr export-pipeline",
        AcrCommand::ImportPipeline { .. } => "acr import-pipeline",
        AcrCommand::PipelineRun { .. } => "acr pipeline-run",
    }
}

fn warn(msg: &str) {
    eprintln!("WARNING: {msg}");
}

fn show_registry(v: &Value, args_output: super::OutputFormat) {
    print(&render(v, args_output, &REGISTRY_COLUMNS, registry_row));
}

pub(super) fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::new(
            "Unable to prompt for confirmation as no tty available. Use --yes.",
            2,
        )
        .into());
    }
    let mut err = std::io::stderr().lock();
    write!(err, "{question} (y/n): ")?;
    err.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

pub fn run(args: AcrArgs) -> anyhow::Result<()> {
    let out = args.output;
    // Usage checks before anything reaches the network.
    if let AcrCommand::Update {
        sku,
        settings,
        tags,
        ..
    } = &args.command
    {
        if update_body(sku.as_deref(), settings, tags.as_deref()).is_none() {
            return Err(CliError::new(
                "nothing to update: pass at least one of --sku, --admin-enabled, --public-network-enabled, --allow-exports, --default-action, --data-endpoint-enabled, --zone-redundancy, --anonymous-pull-enabled, --tags",
                2,
            )
            .into());
        }
    }
    let mut session = Session::load(args.ca_bundle.as_deref(), command_name(&args.command))?;
    let sub = session.creds.subscription_id.clone();
    match args.command {
        AcrCommand::Create {
            name,
            resource_group,
            sku,
            location,
            settings,
            tags,
            no_wait,
        } => {
            if settings.public_network_enabled == Some(false) {
                warn("Disabling the public endpoint overrides all firewall configurations.");
            }
            let body = create_body(
                location.as_ref().map(moat_model::Location::as_str),
                &sku,
                &settings,
                tags.as_deref(),
            );
            let url = with_api(&registry_path(&sub, &resource_group, &name), ACR_API);
            if let Some(v) = session.put_or_patch("PUT", &url, &body, no_wait)? {
                show_registry(&v, out);
            }
        }
        AcrCommand::Update {
            name,
            resource_group,
            sku,
            settings,
            tags,
            no_wait,
        } => {
            let body = update_body(sku.as_deref(), &settings, tags.as_deref())
                .context("nothing to update")?;
            if settings.public_network_enabled == Some(false) {
                warn("Disabling the public endpoint overrides all firewall configurations.");
            }
            let url = registry_url(&mut session, &name, resource_group)?;
            if let Some(v) = session.put_or_patch("PATCH", &url, &body, no_wait)? {
                show_registry(&v, out);
            }
        }
        AcrCommand::Show {
            name,
            resource_group,
        } => {
            let url = registry_url(&mut session, &name, resource_group)?;
            let v = session.get_json(&url)?;
            show_registry(&v, out);
        }
        AcrCommand::Delete {
            name,
            resource_group,
            yes,
            no_wait,
        } => {
            let url = registry_url(&mut session, &name, resource_group)?;
            if !yes && !confirm("Are you sure you want to perform this operation?")? {
                return Ok(());
            }
            session.delete(&url, no_wait)?;
        }
        AcrCommand::List { resource_group } => {
            let path = match &resource_group {
                Some(rg) => format!(
                    "/subscriptions/{}/resourceGroups/{}/providers/{REGISTRY_TYPE}",
                    encode(&sub),
                    encode(rg)
                ),
                None => format!("/subscriptions/{}/providers/{REGISTRY_TYPE}", encode(&sub)),
            };
            let items = session.list_all(&with_api(&path, ACR_API))?;
            show_registry(&Value::Array(items), out);
        }
        AcrCommand::Credential {
            command:
                CredentialCommand::Show {
                    name,
                    resource_group,
                },
        } => {
            let url = registry_url(&mut session, &name, resource_group)?;
            let url = url.replacen('?', "/listCredentials?", 1);
            let r = session.request("POST", &url, None)?;
            let v = r.json().context("listCredentials did not answer JSON")?;
            print(&render(&v, out, &CREDENTIAL_COLUMNS, credential_row));
        }
        AcrCommand::Credential {
            command:
                CredentialCommand::Renew {
                    name,
                    resource_group,
                    password_name,
                },
        } => {
            let url = registry_url(&mut session, &name, resource_group)?;
            let url = url.replacen('?', "/regenerateCredential?", 1);
            let r = session.request("POST", &url, Some(&json!({"name": password_name})))?;
            let v = r
                .json()
                .context("regenerateCredential did not answer JSON")?;
            print(&render(&v, out, &CREDENTIAL_COLUMNS, credential_row));
        }
        AcrCommand::PrivateEndpointConnection { command } => {
            super::private_link::connection(&mut session, command, out)?
        }
        AcrCommand::PrivateEndpoint { command } => {
            super::private_link::endpoint(&mut session, command, out)?
        }
        AcrCommand::Import(a) => super::import::run(&mut session, a, out)?,
        AcrCommand::ExportPipeline { command } => {
            super::pipelines::export_pipeline(&mut session, command, out)?
        }
        AcrCommand::ImportPipeline { command } => {
            super::pipelines::import_pipeline(&mut session, command, out)?
        }
        AcrCommand::PipelineRun { command } => {
            super::pipelines::pipeline_run(&mut session, command, out)?
        }
        AcrCommand::NetworkRule { command } => {
            let (name, resource_group, change) = match command {
                NetworkRuleCommand::Add {
                    name,
                    resource_group,
                    ip_address,
                } => (name, resource_group, Some((true, ip_address))),
                NetworkRuleCommand::Remove {
                    name,
                    resource_group,
                    ip_address,
                } => (name, resource_group, Some((false, ip_address))),
                NetworkRuleCommand::List {
                    name,
                    resource_group,
                } => (name, resource_group, None),
            };
            let url = registry_url(&mut session, &name, resource_group)?;
            let current = session.get_json(&url)?;
            let rule_set = current["properties"]["networkRuleSet"].clone();
            let result = match change {
                None => rule_set,
                Some((add, ip)) => {
                    let body = network_rule_body(&rule_set, &ip, add)?;
                    match session.put_or_patch("PATCH", &url, &body, false)? {
                        Some(v) => v["properties"]["networkRuleSet"].clone(),
                        None => Value::Null,
                    }
                }
            };
            let listing = json!({"ipRules": result["ipRules"], "virtualNetworkRules": result["virtualNetworkRules"]});
            let text = match out {
                super::OutputFormat::Json => render(&listing, out, &[], |_| vec![]),
                _ => render(
                    &listing["ipRules"],
                    out,
                    &["ACTION", "IP ADDRESS OR RANGE"],
                    |r| {
                        vec![
                            r["action"].as_str().unwrap_or("Allow").to_string(),
                            r["value"].as_str().unwrap_or("").to_string(),
                        ]
                    },
                ),
            };
            print(&text);
        }
    }
    Ok(())
}

/// The PATCH body that adds or removes one IP rule, keeping the others and the default action (as az does).
pub fn network_rule_body(rule_set: &Value, ip: &str, add: bool) -> anyhow::Result<Value> {
    let mut rules: Vec<Value> = rule_set["ipRules"].as_array().cloned().unwrap_or_default();
    let same = |r: &Value| {
        r["value"]
            .as_str()
            .is_some_and(|v| v == ip || v == format!("{ip}/32") || format!("{v}/32") == ip)
    };
    if add {
        if rules.iter().any(same) {
            return Err(CliError::new(format!("the rule '{ip}' already exists"), 1).into());
        }
        rules.push(json!({"action": "Allow", "value": ip}));
    } else {
        let before = rules.len();
        rules.retain(|r| !same(r));
        if rules.len() == before {
            return Err(CliError::new(
                format!("there is no rule '{ip}': see `moat acr network-rule list`"),
                3,
            )
            .into());
        }
    }
    let default_action = rule_set["defaultAction"].as_str().unwrap_or("Allow");
    Ok(
        json!({"properties": {"networkRuleSet": {"defaultAction": default_action, "ipRules": rules}}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SettingsArgs {
        SettingsArgs::default()
    }

    #[test]
    fn network_rule_bodies_keep_the_rest() {
        let set = json!({"defaultAction": "Deny", "ipRules": [{"action": "Allow", "value": "10.0.0.0/8"}]});
        let added = network_rule_body(&set, "192.0.2.1", true).unwrap();
        assert_eq!(
            added["properties"]["networkRuleSet"]["ipRules"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            added["properties"]["networkRuleSet"]["defaultAction"],
            "Deny"
        );
        assert!(
            network_rule_body(&set, "10.0.0.0/8", true).is_err(),
            "duplicate"
        );
        let removed = network_rule_body(&set, "10.0.0.0/8", false).unwrap();
        assert_eq!(
            removed["properties"]["networkRuleSet"]["ipRules"],
            json!([])
        );
        assert!(network_rule_body(&set, "1.2.3.4", false).is_err(), "absent");
    }

    #[test]
    fn create_body_has_az_defaults() {
        assert_eq!(
            create_body(None, "Premium", &settings(), None),
            json!({"location": "local", "sku": {"name": "Premium"}, "properties": {"adminUserEnabled": false}})
        );
        assert_eq!(
            create_body(
                Some("westeurope"),
                "Basic",
                &SettingsArgs {
                    admin_enabled: Some(true),
                    ..settings()
                },
                None
            ),
            json!({"location": "westeurope", "sku": {"name": "Basic"}, "properties": {"adminUserEnabled": true}})
        );
    }

    #[test]
    fn create_body_with_every_flag() {
        let s = SettingsArgs {
            admin_enabled: Some(false),
            public_network_enabled: Some(true),
            allow_exports: Some(false),
            default_action: Some("Allow".into()),
            data_endpoint_enabled: Some(true),
            zone_redundancy: Some("Enabled".into()),
            anonymous_pull_enabled: Some(true),
        };
        assert_eq!(
            create_body(
                None,
                "Premium",
                &s,
                Some(&["env=prod".to_string(), "team".to_string()])
            ),
            json!({
                "location": "local", "sku": {"name": "Premium"}, "tags": {"env": "prod", "team": ""},
                "properties": {
                    "adminUserEnabled": false, "publicNetworkAccess": "Enabled",
                    "policies": {"exportPolicy": {"status": "disabled"}},
                    "networkRuleSet": {"defaultAction": "Allow"}, "dataEndpointEnabled": true,
                    "zoneRedundancy": "Enabled", "anonymousPullEnabled": true
                }
            })
        );
    }

    #[test]
    fn public_network_disabled_also_denies_by_default() {
        let s = SettingsArgs {
            public_network_enabled: Some(false),
            default_action: Some("Allow".into()),
            ..settings()
        };
        assert_eq!(
            update_body(None, &s, None).unwrap(),
            json!({"properties": {"publicNetworkAccess": "Disabled", "networkRuleSet": {"defaultAction": "Deny"}}})
        );
    }

    #[test]
    fn update_body_has_only_the_given_fields() {
        assert_eq!(update_body(None, &settings(), None), None);
        let s = SettingsArgs {
            allow_exports: Some(false),
            ..settings()
        };
        assert_eq!(
            update_body(None, &s, None).unwrap(),
            json!({"properties": {"policies": {"exportPolicy": {"status": "disabled"}}}})
        );
        let s = SettingsArgs {
            public_network_enabled: Some(true),
            allow_exports: Some(true),
            ..settings()
        };
        assert_eq!(
            update_body(None, &s, None).unwrap(),
            json!({"properties": {"publicNetworkAccess": "Enabled", "policies": {"exportPolicy": {"status": "enabled"}}}})
        );
        assert_eq!(
            update_body(Some("Standard"), &settings(), None).unwrap(),
            json!({"sku": {"name": "Standard"}})
        );
        assert_eq!(
            update_body(None, &settings(), Some(&[])).unwrap(),
            json!({"tags": {}})
        );
        assert_eq!(
            update_body(None, &settings(), Some(&[String::new()])).unwrap(),
            json!({"tags": {}})
        );
        let s = SettingsArgs {
            admin_enabled: Some(true),
            anonymous_pull_enabled: Some(false),
            ..settings()
        };
        assert_eq!(
            update_body(Some("Premium"), &s, Some(&["a=b=c".to_string()])).unwrap(),
            json!({"sku": {"name": "Premium"}, "tags": {"a": "b=c"}, "properties": {"adminUserEnabled": true, "anonymousPullEnabled": false}})
        );
    }

    #[test]
    fn flag_values_are_canonicalised() {
        assert_eq!(parse_sku("premium").unwrap(), "Premium");
        assert!(parse_sku("Classic")
            .unwrap_err()
            .contains("no longer supported"));
        assert!(parse_sku("Gold").is_err());
        assert_eq!(parse_default_action("deny").unwrap(), "Deny");
        assert_eq!(parse_zone_redundancy("ENABLED").unwrap(), "Enabled");
    }

    #[test]
    fn paths() {
        assert_eq!(
            registry_path("sub-1", "rg1", "moatreg"),
            "/subscriptions/sub-1/resourceGroups/rg1/providers/Microsoft.ContainerRegistry/registries/moatreg"
        );
        assert_eq!(
            resources_filter_path("s"),
            "/subscriptions/s/resources?$filter=resourceType%20eq%20%27Microsoft.ContainerRegistry%2Fregistries%27&api-version=2024-11-01"
        );
    }

    #[test]
    fn resource_group_lookup_matches_name_case_insensitively() {
        let items = vec![
            json!({"id": "/subscriptions/s/resourceGroups/rgA/providers/Microsoft.ContainerRegistry/registries/other", "name": "other", "type": REGISTRY_TYPE}),
            json!({"id": "/subscriptions/s/resourceGroups/rgB/providers/Microsoft.ContainerRegistry/registries/MoatReg", "name": "MoatReg", "type": REGISTRY_TYPE}),
            json!({"id": "/subscriptions/s/resourceGroups/rgC/providers/Microsoft.Storage/storageAccounts/moatreg2", "name": "moatreg2"}),
        ];
        assert_eq!(pick_resource_group(&items, "moatreg"), Some("rgB".into()));
        assert_eq!(pick_resource_group(&items, "OTHER"), Some("rgA".into()));
        assert_eq!(pick_resource_group(&items, "missing"), None);
    }

    #[test]
    fn clap_definitions_parse() {
        use clap::{CommandFactory, Parser};
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            acr: AcrArgs,
        }
        T::command().debug_assert();
        let t = T::try_parse_from([
            "t",
            "update",
            "-n",
            "r",
            "--admin-enabled",
            "--allow-exports",
            "false",
            "--tags",
            "a=1",
            "b=2",
            "-o",
            "table",
        ])
        .unwrap();
        assert_eq!(t.acr.output, super::super::OutputFormat::Table);
        match t.acr.command {
            AcrCommand::Update { settings, tags, .. } => {
                assert_eq!(settings.admin_enabled, Some(true));
                assert_eq!(settings.allow_exports, Some(false));
                assert_eq!(tags, Some(vec!["a=1".to_string(), "b=2".to_string()]));
            }
            _ => panic!("not update"),
        }
        let t = T::try_parse_from([
            "t", "-o", "tsv", "create", "-n", "r", "-g", "rg", "--sku", "basic",
        ])
        .unwrap();
        assert_eq!(t.acr.output, super::super::OutputFormat::Tsv);
        assert!(T::try_parse_from([
            "t",
            "credential",
            "renew",
            "-n",
            "r",
            "--password-name",
            "password3"
        ])
        .is_err());
    }
}
