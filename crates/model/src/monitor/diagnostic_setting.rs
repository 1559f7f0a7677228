//! A registry's diagnostic setting (`Microsoft.Insights/diagnosticSettings`, api-version 2021-05-01-preview):
//! which categories it routes and to which destinations, parsed from the PUT body and checked here, before
//! anything is stored. Pure; whether a destination exists and answers is the server's to check.

use super::resource_log::{ADMINISTRATIVE, ALL_METRICS, AUDIT_TRAIL};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const REPOSITORY_EVENTS: &str = "ContainerRegistryRepositoryEvents";
pub const LOGIN_EVENTS: &str = "ContainerRegistryLoginEvents";

/// The log categories a registry's setting can route: ACR's two, and Moat's own two (the registry's activity
/// log records and the trail's signed chain heads), each in the groups `allLogs` and `audit`.
pub const LOG_CATEGORIES: [&str; 4] =
    [REPOSITORY_EVENTS, LOGIN_EVENTS, ADMINISTRATIVE, AUDIT_TRAIL];
pub const METRIC_CATEGORIES: [&str; 1] = [ALL_METRICS];
pub const CATEGORY_GROUPS: [&str; 2] = ["allLogs", "audit"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    pub enabled: bool,
    pub days: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogSetting {
    pub category: Option<String>,
    pub category_group: Option<String>,
    pub enabled: bool,
    pub retention_policy: Option<Retention>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricSetting {
    pub category: String,
    pub time_grain: Option<String>,
    pub enabled: bool,
    pub retention_policy: Option<Retention>,
}

/// The setting as stored (and answered): destinations and the categories as the caller listed them, in
/// their canonical spelling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiagnosticSetting {
    pub storage_account_id: Option<String>,
    pub marketplace_partner_id: Option<String>,
    pub logs: Vec<LogSetting>,
    pub metrics: Vec<MetricSetting>,
}

/// Why a setting is refused; `target` is the property at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SettingError {
    pub code: &'static str,
    pub target: String,
    pub message: String,
}

fn err(target: &str, message: impl Into<String>) -> SettingError {
    SettingError {
        code: "BadRequest",
        target: target.into(),
        message: message.into(),
    }
}

fn nonempty<'a>(props: &'a Value, key: &str) -> Option<&'a str> {
    props
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn canonical(list: &[&'static str], v: &str) -> Option<&'static str> {
    list.iter().find(|c| c.eq_ignore_ascii_case(v)).copied()
}

fn retention(v: &Value, target: &str) -> Result<Option<Retention>, SettingError> {
    if v.is_null() {
        return Ok(None);
    }
    let r: Retention = serde_json::from_value(v.clone()).map_err(|e| {
        err(
            target,
            format!("retentionPolicy must be {{\"enabled\": bool, \"days\": int}}: {e}"),
        )
    })?;
    if !(0..=365).contains(&r.days) {
        return Err(err(
            target,
            "retentionPolicy.days must be between 0 and 365",
        ));
    }
    if r.enabled && r.days > 0 {
        return Err(err(
            target,
            "retention in a diagnostic setting is retired by Azure Monitor and not applied by Moat: archived blobs \
             stay until the storage account's lifecycle management deletes them; send retentionPolicy \
             {\"enabled\": false, \"days\": 0} and set a lifecycle rule on the account",
        ));
    }
    Ok(Some(r))
}

impl DiagnosticSetting {
    /// Parses and checks a PUT body's `properties`.
    pub fn parse(props: &Value) -> Result<DiagnosticSetting, SettingError> {
        if !props.is_object() {
            return Err(err("properties", "the body needs a 'properties' object"));
        }
        for (key, what, instead) in [
            ("workspaceId", "Log Analytics workspaces", "a storage account (storageAccountId) or a SIEM sink registered with `moat monitor sink add` (marketplacePartnerId)"),
            ("eventHubAuthorizationRuleId", "Event Hubs", "a SIEM sink registered with `moat monitor sink add` (syslog over TLS or HTTP JSON, marketplacePartnerId) or a storage account (storageAccountId)"),
            ("eventHubName", "Event Hubs", "a SIEM sink registered with `moat monitor sink add` (marketplacePartnerId)"),
            ("serviceBusRuleId", "Service Bus", "a SIEM sink registered with `moat monitor sink add` (marketplacePartnerId) or a storage account (storageAccountId)"),
        ] {
            if nonempty(props, key).is_some() {
                return Err(SettingError {
                    code: "FeatureNotSupported",
                    target: format!("properties.{key}"),
                    message: format!("Moat does not serve {what} ({key}): use {instead}."),
                });
            }
        }
        let storage_account_id = nonempty(props, "storageAccountId").map(str::to_string);
        if let Some(id) = &storage_account_id {
            storage_account_name(id)?;
        }
        let marketplace_partner_id = nonempty(props, "marketplacePartnerId").map(str::to_string);
        if storage_account_id.is_none() && marketplace_partner_id.is_none() {
            return Err(err(
                "properties",
                "a diagnostic setting needs a destination: storageAccountId (a storage account registered with \
                 `moat storage-account add`) or marketplacePartnerId (a sink registered with `moat monitor sink add`)",
            ));
        }
        let mut logs = vec![];
        for (i, l) in array(props, "logs")?.iter().enumerate() {
            let target = format!("properties.logs[{i}]");
            let enabled = l
                .get("enabled")
                .and_then(Value::as_bool)
                .ok_or_else(|| err(&target, "'enabled' (true or false) is required"))?;
            let category = l
                .get("category")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            let group = l
                .get("categoryGroup")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            let (category, category_group) = match (category, group) {
                (Some(c), None) => (
                    Some(canonical(&LOG_CATEGORIES, c).ok_or_else(|| {
                        err(&target, format!(
                            "Category '{c}' is not supported. A registry's log categories are {}",
                            LOG_CATEGORIES.join(", ")
                        ))
                    })?.to_string()),
                    None,
                ),
                (None, Some(g)) => (
                    None,
                    Some(canonical(&CATEGORY_GROUPS, g).ok_or_else(|| {
                        err(&target, format!("Category group '{g}' is not supported: use allLogs or audit"))
                    })?.to_string()),
                ),
                _ => return Err(err(&target, "give exactly one of 'category' and 'categoryGroup'")),
            };
            let retention_policy =
                retention(l.get("retentionPolicy").unwrap_or(&Value::Null), &target)?;
            logs.push(LogSetting {
                category,
                category_group,
                enabled,
                retention_policy,
            });
        }
        let mut metrics = vec![];
        for (i, m) in array(props, "metrics")?.iter().enumerate() {
            let target = format!("properties.metrics[{i}]");
            let enabled = m
                .get("enabled")
                .and_then(Value::as_bool)
                .ok_or_else(|| err(&target, "'enabled' (true or false) is required"))?;
            let c = m
                .get("category")
                .and_then(Value::as_str)
                .unwrap_or("AllMetrics");
            let category = canonical(&METRIC_CATEGORIES, c)
                .ok_or_else(|| err(&target, format!("Category '{c}' is not supported. A registry's metric category is AllMetrics")))?
                .to_string();
            let time_grain = m
                .get("timeGrain")
                .and_then(Value::as_str)
                .map(str::to_string);
            if let Some(g) = &time_grain {
                if !g.eq_ignore_ascii_case("PT1M") {
                    return Err(err(
                        &target,
                        format!(
                            "timeGrain '{g}' is not served: metrics are archived per minute (PT1M)"
                        ),
                    ));
                }
            }
            let retention_policy =
                retention(m.get("retentionPolicy").unwrap_or(&Value::Null), &target)?;
            metrics.push(MetricSetting {
                category,
                time_grain,
                enabled,
                retention_policy,
            });
        }
        let s = DiagnosticSetting {
            storage_account_id,
            marketplace_partner_id,
            logs,
            metrics,
        };
        if s.categories().is_empty() {
            return Err(err(
                "properties",
                "enable at least one log category, category group or AllMetrics",
            ));
        }
        Ok(s)
    }

    /// The enabled categories, canonical, each once, in [`LOG_CATEGORIES`] order then `AllMetrics`.
    pub fn categories(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = LOG_CATEGORIES
            .into_iter()
            .filter(|c| {
                self.logs.iter().any(|l| {
                    l.enabled && (l.category.as_deref() == Some(*c) || l.category_group.is_some())
                })
            })
            .collect();
        if self.metrics.iter().any(|m| m.enabled) {
            out.push(ALL_METRICS);
        }
        out
    }

    /// The `properties` ARM answers.
    pub fn properties_json(&self) -> Value {
        let ret = |r: &Option<Retention>| {
            r.as_ref()
                .map(|r| json!({"enabled": r.enabled, "days": r.days}))
                .unwrap_or(json!({"enabled": false, "days": 0}))
        };
        json!({
            "storageAccountId": self.storage_account_id,
            "serviceBusRuleId": null,
            "eventHubAuthorizationRuleId": null,
            "eventHubName": null,
            "workspaceId": null,
            "logAnalyticsDestinationType": null,
            "marketplacePartnerId": self.marketplace_partner_id,
            "logs": self.logs.iter().map(|l| json!({
                "category": l.category, "categoryGroup": l.category_group, "enabled": l.enabled,
                "retentionPolicy": ret(&l.retention_policy),
            })).collect::<Vec<_>>(),
            "metrics": self.metrics.iter().map(|m| json!({
                "category": m.category, "timeGrain": m.time_grain, "enabled": m.enabled,
                "retentionPolicy": ret(&m.retention_policy),
            })).collect::<Vec<_>>(),
        })
    }
}

fn array<'a>(props: &'a Value, key: &str) -> Result<&'a [Value], SettingError> {
    match props.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(err(
            &format!("properties.{key}"),
            format!("'{key}' must be an array"),
        )),
    }
}

/// The account name of `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}`.
pub fn storage_account_name(id: &str) -> Result<String, SettingError> {
    let parts: Vec<&str> = id.trim_matches('/').split('/').collect();
    let ok = parts.len() == 8
        && parts[0].eq_ignore_ascii_case("subscriptions")
        && parts[2].eq_ignore_ascii_case("resourceGroups")
        && parts[4].eq_ignore_ascii_case("providers")
        && parts[5].eq_ignore_ascii_case("Microsoft.Storage")
        && parts[6].eq_ignore_ascii_case("storageAccounts")
        && !parts[7].is_empty();
    if ok {
        Ok(parts[7].to_ascii_lowercase())
    } else {
        Err(err(
            "properties.storageAccountId",
            format!("'{}' is not a storage account's resource id (/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/Microsoft.Storage/storageAccounts/{{name}})", crate::text::escape(id)),
        ))
    }
}

/// `diagnosticSettingsCategories` as Azure lists them on a resource.
pub fn categories_json(resource_id: &str) -> Vec<Value> {
    let one = |name: &str, kind: &str| {
        let groups: Vec<&str> = if kind == "Logs" {
            CATEGORY_GROUPS.to_vec()
        } else {
            vec![]
        };
        json!({
            "id": format!("{resource_id}/providers/microsoft.insights/diagnosticSettingsCategories/{name}"),
            "name": name,
            "type": "microsoft.insights/diagnosticSettingsCategories",
            "properties": {"categoryType": kind, "categoryGroups": groups},
        })
    };
    LOG_CATEGORIES
        .iter()
        .map(|c| one(c, "Logs"))
        .chain(METRIC_CATEGORIES.iter().map(|c| one(c, "Metrics")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SA: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/Acct1";

    #[test]
    fn a_setting_with_categories_and_a_group_parses() {
        let s = DiagnosticSetting::parse(&json!({
            "storageAccountId": SA, "workspaceId": "",
            "logs": [{"category": "containerregistryloginevents", "enabled": true,
                      "retentionPolicy": {"enabled": false, "days": 0}}],
            "metrics": [{"category": "AllMetrics", "enabled": true}],
        }))
        .unwrap();
        assert_eq!(s.categories(), vec![LOGIN_EVENTS, ALL_METRICS]);
        assert_eq!(s.logs[0].category.as_deref(), Some(LOGIN_EVENTS));
        let g = DiagnosticSetting::parse(&json!({
            "storageAccountId": SA, "logs": [{"categoryGroup": "allLogs", "enabled": true}],
        }))
        .unwrap();
        assert_eq!(g.categories(), LOG_CATEGORIES.to_vec());
        assert_eq!(storage_account_name(SA).unwrap(), "acct1");
        let p = g.properties_json();
        assert_eq!(p["logs"][0]["categoryGroup"], "allLogs");
        assert_eq!(p["workspaceId"], Value::Null);
    }

    #[test]
    fn refusals_say_what_to_use() {
        let cases = [
            (
                json!({"workspaceId": "/subscriptions/s/x", "logs": []}),
                "Log Analytics",
            ),
            (
                json!({"eventHubAuthorizationRuleId": "/x", "storageAccountId": SA}),
                "Event Hubs",
            ),
            (
                json!({"serviceBusRuleId": "/x", "storageAccountId": SA}),
                "Service Bus",
            ),
            (
                json!({"logs": [{"category": LOGIN_EVENTS, "enabled": true}]}),
                "needs a destination",
            ),
            (
                json!({"storageAccountId": SA, "logs": [{"category": "Nope", "enabled": true}]}),
                "'Nope' is not supported",
            ),
            (
                json!({"storageAccountId": SA, "logs": [{"categoryGroup": "x", "enabled": true}]}),
                "allLogs or audit",
            ),
            (
                json!({"storageAccountId": SA, "logs": [{"category": LOGIN_EVENTS}]}),
                "'enabled'",
            ),
            (
                json!({"storageAccountId": SA, "logs": [{"category": LOGIN_EVENTS, "enabled": false}]}),
                "at least one",
            ),
            (
                json!({"storageAccountId": "/subscriptions/s/other", "logs": []}),
                "not a storage account",
            ),
            (
                json!({"storageAccountId": SA, "logs": [{"category": LOGIN_EVENTS, "enabled": true,
                "retentionPolicy": {"enabled": true, "days": 30}}]}),
                "lifecycle",
            ),
            (
                json!({"storageAccountId": SA, "metrics": [{"category": "AllMetrics", "enabled": true, "timeGrain": "PT1H"}]}),
                "PT1M",
            ),
        ];
        for (body, says) in cases {
            let e = DiagnosticSetting::parse(&body).unwrap_err();
            assert!(e.message.contains(says), "{body}: {e}");
        }
    }

    #[test]
    fn categories_list_logs_with_groups_and_metrics() {
        let c = categories_json("/r");
        assert_eq!(c.len(), 5);
        assert_eq!(
            c[0]["properties"]["categoryGroups"],
            json!(["allLogs", "audit"])
        );
        assert_eq!(c[4]["name"], "AllMetrics");
        assert_eq!(c[4]["properties"]["categoryType"], "Metrics");
    }
}
