//! Metric alert rules: static thresholds on a registry's metrics.

use super::rules::{boolean, get, list, obj, parse_actions, required, string, RuleAction};
use super::{metric_dimensions, AlertError, FREQUENCIES, METRIC_NAMESPACE, WINDOW_SIZES};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// `Microsoft.Insights/metricAlerts` properties, static thresholds on one registry's metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricAlert {
    pub description: String,
    pub severity: u8,
    pub enabled: bool,
    pub scopes: Vec<String>,
    pub evaluation_frequency: String,
    pub window_size: String,
    pub criteria_type: String,
    pub criteria: Vec<MetricCriterion>,
    pub auto_mitigate: bool,
    pub actions: Vec<RuleAction>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricCriterion {
    pub name: String,
    pub metric_name: String,
    pub operator: String,
    pub threshold: f64,
    pub time_aggregation: String,
    pub dimensions: Vec<DimensionFilter>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DimensionFilter {
    pub name: String,
    /// `Include` or `Exclude`.
    pub operator: String,
    pub values: Vec<String>,
}

pub const OPERATORS: [&str; 5] = [
    "GreaterThan",
    "GreaterThanOrEqual",
    "LessThan",
    "LessThanOrEqual",
    "Equals",
];
pub const AGGREGATIONS: [&str; 5] = ["Total", "Average", "Minimum", "Maximum", "Count"];
const SINGLE: &str = "Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria";
const MULTI: &str = "Microsoft.Azure.Monitor.MultipleResourceMultipleMetricCriteria";

fn one_of(
    v: &str,
    allowed: &[&'static str],
    path: &str,
    code: &'static str,
) -> Result<&'static str, AlertError> {
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(v))
        .copied()
        .ok_or_else(|| {
            AlertError::new(
                code,
                format!("{path} '{v}' is not one of {}", allowed.join(", ")),
            )
            .at(path)
        })
}

fn duration_of(m: &Map<String, Value>, key: &str, allowed: &[i64]) -> Result<i64, AlertError> {
    let path = format!("properties.{key}");
    let s = required(m, key, &path)?;
    let secs = super::parse_duration(&s).ok_or_else(|| {
        AlertError::new(
            "InvalidDuration",
            format!("{path} '{s}' is not an ISO 8601 duration"),
        )
        .at(&path)
    })?;
    if !allowed.contains(&secs) {
        let names: Vec<String> = allowed.iter().map(|s| super::format_duration(*s)).collect();
        return Err(AlertError::new(
            "InvalidDuration",
            format!("{path} '{s}' must be one of {}", names.join(", ")),
        )
        .at(&path));
    }
    Ok(secs)
}

pub fn parse_metric_alert(props: &Value) -> Result<MetricAlert, AlertError> {
    let m = obj(props, "properties")?;
    let severity = match get(m, "severity") {
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= 4) => {
            n.as_u64().unwrap_or(0) as u8
        }
        None => {
            return Err(AlertError::new(
                "MissingRequiredProperty",
                "properties.severity is required",
            )
            .at("properties.severity"))
        }
        Some(_) => {
            return Err(
                AlertError::new("InvalidSeverity", "properties.severity must be 0 to 4")
                    .at("properties.severity"),
            )
        }
    };
    let scopes: Vec<String> = list(m, "scopes", "properties.scopes")?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            AlertError::new("InvalidScope", "properties.scopes must be resource ids")
                .at("properties.scopes")
        })?;
    if scopes.len() != 1 {
        return Err(AlertError::new(
            "InvalidScope",
            "properties.scopes must name exactly one registry (Moat's metric alerts watch one registry each)",
        )
        .at("properties.scopes"));
    }
    let window = duration_of(m, "windowSize", &WINDOW_SIZES)?;
    let frequency = duration_of(m, "evaluationFrequency", &FREQUENCIES)?;
    if frequency > window {
        return Err(AlertError::new(
            "InvalidDuration",
            "properties.evaluationFrequency must not be longer than properties.windowSize",
        )
        .at("properties.evaluationFrequency"));
    }
    let crit = get(m, "criteria").ok_or_else(|| {
        AlertError::new("MissingRequiredProperty", "properties.criteria is required")
            .at("properties.criteria")
    })?;
    let crit = obj(crit, "properties.criteria")?;
    let ty = required(crit, "odata.type", "properties.criteria.odata.type")?;
    let ty = [SINGLE, MULTI].into_iter().find(|t| t.eq_ignore_ascii_case(&ty)).ok_or_else(|| {
        AlertError::new(
            "UnsupportedCriteria",
            format!("properties.criteria.odata.type '{ty}': Moat evaluates {SINGLE} (static thresholds on a registry's metrics)"),
        )
        .at("properties.criteria.odata.type")
    })?;
    let all = list(crit, "allOf", "properties.criteria.allOf")?;
    if all.is_empty() {
        return Err(AlertError::new(
            "MissingRequiredProperty",
            "properties.criteria.allOf needs at least one criterion",
        )
        .at("properties.criteria.allOf"));
    }
    let mut criteria = Vec::new();
    for (i, c) in all.iter().enumerate() {
        criteria.push(parse_criterion(
            c,
            &format!("properties.criteria.allOf[{i}]"),
        )?);
    }
    Ok(MetricAlert {
        description: string(m, "description", "properties.description")?.unwrap_or_default(),
        severity,
        enabled: boolean(m, "enabled", "properties.enabled", true)?,
        scopes,
        evaluation_frequency: super::format_duration(frequency),
        window_size: super::format_duration(window),
        criteria_type: ty.to_string(),
        criteria,
        auto_mitigate: boolean(m, "autoMitigate", "properties.autoMitigate", true)?,
        actions: parse_actions(
            list(m, "actions", "properties.actions")?,
            "properties.actions",
            "webHookProperties",
        )?,
    })
}

fn parse_criterion(c: &Value, path: &str) -> Result<MetricCriterion, AlertError> {
    let c = obj(c, path)?;
    let kind = string(c, "criterionType", &format!("{path}.criterionType"))?
        .unwrap_or_else(|| "StaticThresholdCriterion".into());
    if !kind.eq_ignore_ascii_case("StaticThresholdCriterion") {
        return Err(AlertError::new(
            "UnsupportedCriterion",
            format!("{path}.criterionType '{kind}': Moat evaluates static thresholds only (StaticThresholdCriterion); dynamic thresholds need Azure's machine-learned baselines"),
        )
        .at(format!("{path}.criterionType")));
    }
    let metric = required(c, "metricName", &format!("{path}.metricName"))?;
    let (metric, dims) = metric_dimensions(&metric).ok_or_else(|| {
        AlertError::new(
            "UnknownMetric",
            format!("{path}.metricName '{metric}' is not a metric of {METRIC_NAMESPACE} (az monitor metrics list-definitions shows them)"),
        )
        .at(format!("{path}.metricName"))
    })?;
    if let Some(ns) = string(c, "metricNamespace", &format!("{path}.metricNamespace"))? {
        if !ns.eq_ignore_ascii_case(METRIC_NAMESPACE) {
            return Err(AlertError::new(
                "UnknownMetric",
                format!("{path}.metricNamespace must be {METRIC_NAMESPACE}"),
            )
            .at(format!("{path}.metricNamespace")));
        }
    }
    let op = required(c, "operator", &format!("{path}.operator"))?;
    let operator = one_of(
        &op,
        &OPERATORS,
        &format!("{path}.operator"),
        "InvalidOperator",
    )?;
    let agg = required(c, "timeAggregation", &format!("{path}.timeAggregation"))?;
    let time_aggregation = one_of(
        &agg,
        &AGGREGATIONS,
        &format!("{path}.timeAggregation"),
        "InvalidTimeAggregation",
    )?;
    let threshold = match get(c, "threshold") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        None => {
            return Err(AlertError::new(
                "MissingRequiredProperty",
                format!("{path}.threshold is required"),
            )
            .at(format!("{path}.threshold")))
        }
        Some(_) => None,
    }
    .filter(|t| t.is_finite())
    .ok_or_else(|| {
        AlertError::new(
            "InvalidThreshold",
            format!("{path}.threshold must be a finite number"),
        )
        .at(format!("{path}.threshold"))
    })?;
    let mut dimensions = Vec::new();
    for (j, d) in list(c, "dimensions", &format!("{path}.dimensions"))?
        .iter()
        .enumerate()
    {
        let p = format!("{path}.dimensions[{j}]");
        let d = obj(d, &p)?;
        let name = required(d, "name", &format!("{p}.name"))?;
        let name = dims
            .iter()
            .find(|n| n.eq_ignore_ascii_case(&name))
            .ok_or_else(|| {
                AlertError::new(
                    "UnknownDimension",
                    format!(
                        "{p}.name '{name}' is not a dimension of {metric} ({})",
                        if dims.is_empty() {
                            "it has none".to_string()
                        } else {
                            dims.join(", ")
                        }
                    ),
                )
                .at(format!("{p}.name"))
            })?;
        let op = required(d, "operator", &format!("{p}.operator"))?;
        let operator = one_of(
            &op,
            &["Include", "Exclude"],
            &format!("{p}.operator"),
            "InvalidOperator",
        )?;
        let values: Vec<String> = list(d, "values", &format!("{p}.values"))?
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .filter(|v: &Vec<String>| !v.is_empty())
            .ok_or_else(|| {
                AlertError::new(
                    "InvalidDimension",
                    format!("{p}.values must be a non-empty list of strings"),
                )
                .at(format!("{p}.values"))
            })?;
        if operator == "Exclude" && values.iter().any(|v| v == "*") {
            return Err(AlertError::new(
                "InvalidDimension",
                format!("{p}: Exclude cannot take '*'"),
            )
            .at(format!("{p}.values")));
        }
        dimensions.push(DimensionFilter {
            name: name.to_string(),
            operator: operator.to_string(),
            values,
        });
    }
    Ok(MetricCriterion {
        name: string(c, "name", &format!("{path}.name"))?.unwrap_or_else(|| "cond".into()),
        metric_name: metric.to_string(),
        operator: operator.to_string(),
        threshold,
        time_aggregation: time_aggregation.to_string(),
        dimensions,
    })
}

impl MetricAlert {
    pub fn window_secs(&self) -> i64 {
        super::parse_duration(&self.window_size).unwrap_or(300)
    }

    pub fn frequency_secs(&self) -> i64 {
        super::parse_duration(&self.evaluation_frequency).unwrap_or(60)
    }

    pub fn to_json(&self) -> Value {
        let all_of: Vec<Value> = self
            .criteria
            .iter()
            .map(|c| {
                json!({"criterionType": "StaticThresholdCriterion", "name": c.name, "metricName": c.metric_name,
                       "metricNamespace": METRIC_NAMESPACE, "operator": c.operator, "threshold": c.threshold,
                       "timeAggregation": c.time_aggregation, "skipMetricValidation": false,
                       "dimensions": c.dimensions.iter().map(|d| json!({"name": d.name, "operator": d.operator, "values": d.values})).collect::<Vec<_>>()})
            })
            .collect();
        json!({
            "description": self.description, "severity": self.severity, "enabled": self.enabled,
            "scopes": self.scopes, "evaluationFrequency": self.evaluation_frequency, "windowSize": self.window_size,
            "targetResourceType": METRIC_NAMESPACE,
            "criteria": {"odata.type": self.criteria_type, "allOf": all_of},
            "autoMitigate": self.auto_mitigate,
            "actions": self.actions.iter().map(|a| json!({"actionGroupId": a.action_group_id, "webHookProperties": a.web_hook_properties})).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metric(crit: Value) -> Value {
        json!({"severity": 2, "enabled": true, "scopes": ["/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/r"],
               "evaluationFrequency": "PT1M", "windowSize": "PT5M",
               "criteria": {"odata.type": SINGLE, "allOf": [crit]},
               "actions": [{"actionGroupId": "/subscriptions/s/resourceGroups/rg/providers/microsoft.insights/actionGroups/g", "webHookProperties": {"k": "v"}}]})
    }

    fn crit() -> Value {
        json!({"name": "c1", "metricName": "PulledBytes", "operator": "GreaterThan", "threshold": 1000.0,
               "timeAggregation": "Total", "criterionType": "StaticThresholdCriterion",
               "dimensions": [{"name": "Identity", "operator": "Include", "values": ["*"]}]})
    }

    #[test]
    fn a_static_per_identity_rule_parses_and_round_trips() {
        let r = parse_metric_alert(&metric(crit())).unwrap();
        assert_eq!(r.criteria[0].metric_name, "PulledBytes");
        assert_eq!(r.window_secs(), 300);
        assert!(r.auto_mitigate);
        assert_eq!(r.actions[0].web_hook_properties["k"], "v");
        let again = parse_metric_alert(&r.to_json()).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn bad_rules_are_refused_naming_the_property() {
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"criterionType": "DynamicThresholdCriterion", "metricName": "PulledBytes", "operator": "GreaterThan", "alertSensitivity": "Medium", "timeAggregation": "Total"}),
                "UnsupportedCriterion",
            ),
            (
                json!({"metricName": "PulledBytes", "operator": "Bigger", "threshold": 1, "timeAggregation": "Total"}),
                "InvalidOperator",
            ),
            (
                json!({"metricName": "CpuPercent", "operator": "GreaterThan", "threshold": 1, "timeAggregation": "Total"}),
                "UnknownMetric",
            ),
            (
                json!({"metricName": "PulledBytes", "operator": "GreaterThan", "threshold": "lots", "timeAggregation": "Total"}),
                "InvalidThreshold",
            ),
            (
                json!({"metricName": "PulledBytes", "operator": "GreaterThan", "threshold": 1, "timeAggregation": "Median"}),
                "InvalidTimeAggregation",
            ),
            (
                json!({"metricName": "PulledBytes", "operator": "GreaterThan", "threshold": 1, "timeAggregation": "Total", "dimensions": [{"name": "Colour", "operator": "Include", "values": ["*"]}]}),
                "UnknownDimension",
            ),
        ];
        for (c, code) in cases {
            assert_eq!(
                parse_metric_alert(&metric(c.clone())).unwrap_err().code,
                code,
                "{c}"
            );
        }
        let mut bad_window = metric(crit());
        bad_window["windowSize"] = json!("PT7M");
        assert_eq!(
            parse_metric_alert(&bad_window).unwrap_err().code,
            "InvalidDuration"
        );
        let mut slow = metric(crit());
        slow["evaluationFrequency"] = json!("PT15M");
        assert_eq!(
            parse_metric_alert(&slow).unwrap_err().code,
            "InvalidDuration"
        );
    }
}
