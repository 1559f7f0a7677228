//! Azure's common alert schema (`azureMonitorCommonAlertSchema`): what a firing or resolved alert posts to an
//! action group's webhook receivers. Field names and values as Azure Monitor's sample payloads show them.

use super::metric_rule::MetricCriterion;
use super::METRIC_NAMESPACE;
use crate::activity::ActivityEvent;
use serde_json::{json, Map, Value};

/// The `essentials` section.
#[derive(Clone, Debug, PartialEq)]
pub struct Essentials {
    /// `/subscriptions/{sub}/providers/Microsoft.AlertsManagement/alerts/{id}`: the same for an alert's Fired
    /// and Resolved notifications.
    pub alert_id: String,
    /// The rule's name.
    pub alert_rule: String,
    /// 0..4 (`Sev0`..`Sev4`).
    pub severity: u8,
    /// Metric or activity log.
    pub activity: bool,
    pub resolved: bool,
    pub target_ids: Vec<String>,
    pub origin_alert_id: String,
    pub fired: String,
    pub resolved_at: Option<String>,
    pub description: String,
}

/// The whole payload: essentials, the signal's context, the rule's custom properties (`null` when none).
pub fn payload(e: &Essentials, alert_context: Value, custom: &Map<String, Value>) -> Value {
    let items: Vec<String> = e
        .target_ids
        .iter()
        .map(|id| id.rsplit('/').next().unwrap_or(id).to_string())
        .collect();
    let mut essentials = json!({
        "alertId": e.alert_id,
        "alertRule": e.alert_rule,
        "severity": format!("Sev{}", e.severity),
        "signalType": if e.activity { "Activity Log" } else { "Metric" },
        "monitorCondition": if e.resolved { "Resolved" } else { "Fired" },
        "monitoringService": if e.activity { "Activity Log - Administrative" } else { "Platform" },
        "alertTargetIDs": e.target_ids.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>(),
        "configurationItems": items,
        "originAlertId": e.origin_alert_id,
        "firedDateTime": e.fired,
        "description": e.description,
        "essentialsVersion": "1.0",
        "alertContextVersion": "1.0",
    });
    if let Some(r) = &e.resolved_at {
        essentials["resolvedDateTime"] = json!(r);
    }
    json!({
        "schemaId": "azureMonitorCommonAlertSchema",
        "data": {
            "essentials": essentials,
            "alertContext": alert_context,
            "customProperties": if custom.is_empty() { Value::Null } else { Value::Object(custom.clone()) },
        }
    })
}

/// One criterion's part of a metric alert's context: what was compared, on which series, with what value.
pub fn metric_condition(c: &MetricCriterion, dimensions: &[(String, String)], value: f64) -> Value {
    json!({
        "metricName": c.metric_name,
        "metricNamespace": METRIC_NAMESPACE,
        "operator": c.operator,
        "threshold": c.threshold.to_string(),
        "timeAggregation": c.time_aggregation,
        "dimensions": dimensions.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
        "metricValue": value,
        "webTestName": null,
    })
}

/// A metric alert's `alertContext`.
pub fn metric_context(
    window_size: &str,
    conditions: Vec<Value>,
    window_start: &str,
    window_end: &str,
) -> Value {
    json!({
        "properties": null,
        "conditionType": "SingleResourceMultipleMetricCriteria",
        "condition": {
            "windowSize": window_size,
            "allOf": conditions,
            "windowStartTime": window_start,
            "windowEndTime": window_end,
        }
    })
}

/// An activity-log alert's `alertContext`, from the record that matched.
pub fn activity_context(e: &ActivityEvent) -> Value {
    let claims = json!({"appid": e.caller, "ipaddr": e.caller_ip_address}).to_string();
    json!({
        "authorization": {"action": e.operation_name, "scope": e.resource_id},
        "channels": "Operation",
        "claims": claims,
        "caller": e.caller,
        "correlationId": e.correlation_id,
        "eventSource": "Administrative",
        "eventTimestamp": e.time,
        "httpRequest": json!({"clientIpAddress": e.caller_ip_address}).to_string(),
        "eventDataId": e.event_data_id,
        "level": e.level,
        "operationName": e.operation_name,
        "operationId": e.correlation_id,
        "properties": e.properties,
        "status": e.status.as_str(),
        "subStatus": e.sub_status,
        "submissionTimestamp": e.time,
    })
}

/// The fields an activity-log condition tests, read from a record (Azure's names; unknown: empty).
pub fn activity_field(e: &ActivityEvent, field: &str) -> String {
    let provider_and_type = || -> (String, String) {
        // …/providers/{Provider}/{type}/{name}[/{subtype}/{name}…]
        let parts: Vec<&str> = e.resource_id.split('/').collect();
        match parts
            .iter()
            .rposition(|p| p.eq_ignore_ascii_case("providers"))
        {
            Some(i) if i + 2 < parts.len() => {
                let provider = parts[i + 1].to_string();
                let types: Vec<&str> = parts[i + 2..].iter().step_by(2).copied().collect();
                (provider.clone(), format!("{provider}/{}", types.join("/")))
            }
            _ => (String::new(), String::new()),
        }
    };
    match field {
        "category" => e.category.clone(),
        "operationName" => e.operation_name.clone(),
        "resourceId" => e.resource_id.clone(),
        "resourceGroup" => {
            let parts: Vec<&str> = e.resource_id.split('/').collect();
            parts
                .iter()
                .position(|p| p.eq_ignore_ascii_case("resourceGroups"))
                .and_then(|i| parts.get(i + 1))
                .map(|s| s.to_string())
                .unwrap_or_default()
        }
        "resourceProvider" => provider_and_type().0,
        "resourceType" => provider_and_type().1,
        "status" => e.status.as_str().to_string(),
        "subStatus" => e.sub_status.clone(),
        "caller" => e.caller.clone(),
        "level" => e.level.clone(),
        "correlationId" => e.correlation_id.clone(),
        "eventDataId" => e.event_data_id.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> ActivityEvent {
        ActivityEvent::new(
            "ev1".into(),
            "2026-12-07T19:00:00.000000Z".into(),
            "Microsoft.ContainerRegistry/registries/write",
            "/subscriptions/s/resourceGroups/rg1/providers/Microsoft.ContainerRegistry/registries/reg",
            "app-1",
            "127.0.0.1",
            "corr-1",
        )
    }

    #[test]
    fn an_activity_alert_names_the_caller_and_the_operation() {
        let e = event();
        let ess = Essentials {
            alert_id: "/subscriptions/s/providers/Microsoft.AlertsManagement/alerts/a1".into(),
            alert_rule: "exports".into(),
            severity: 4,
            activity: true,
            resolved: false,
            target_ids: vec![e.resource_id.clone()],
            origin_alert_id: "ev1".into(),
            fired: e.time.clone(),
            resolved_at: None,
            description: String::new(),
        };
        let p = payload(&ess, activity_context(&e), &Map::new());
        assert_eq!(p["schemaId"], "azureMonitorCommonAlertSchema");
        let es = &p["data"]["essentials"];
        assert_eq!(es["signalType"], "Activity Log");
        assert_eq!(es["monitoringService"], "Activity Log - Administrative");
        assert_eq!(es["configurationItems"], json!(["reg"]));
        assert_eq!(es["severity"], "Sev4");
        assert!(es.get("resolvedDateTime").is_none());
        assert_eq!(p["data"]["alertContext"]["caller"], "app-1");
        assert_eq!(p["data"]["alertContext"]["status"], "Succeeded");
        assert_eq!(p["data"]["customProperties"], Value::Null);
    }

    #[test]
    fn fields_are_read_from_the_resource_id() {
        let e = event();
        assert_eq!(activity_field(&e, "resourceGroup"), "rg1");
        assert_eq!(
            activity_field(&e, "resourceProvider"),
            "Microsoft.ContainerRegistry"
        );
        assert_eq!(
            activity_field(&e, "resourceType"),
            "Microsoft.ContainerRegistry/registries"
        );
        assert_eq!(activity_field(&e, "category"), "Administrative");
    }
}
