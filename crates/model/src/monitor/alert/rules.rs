//! Parsing and checking the three resources' `properties` as az and the SDK send them. What is accepted is
//! stored in its canonical form (these structs serialized back), so a GET shows what the server will act on.

use super::{metric_dimensions, AlertError, FREQUENCIES, METRIC_NAMESPACE, WINDOW_SIZES};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// `Microsoft.Insights/actionGroups` properties: only webhook receivers are sent anything.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionGroup {
    pub group_short_name: String,
    pub enabled: bool,
    pub webhook_receivers: Vec<WebhookReceiver>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookReceiver {
    pub name: String,
    /// The receiver's URL. A secret (its path or query often carries a token): sealed at rest by the server,
    /// shown redacted ([`redact_uri`]).
    pub service_uri: String,
    pub use_common_alert_schema: bool,
    pub use_aad_auth: bool,
}

/// Receiver kinds Azure has and Moat does not send to.
const OTHER_RECEIVERS: [(&str, &str); 11] = [
    ("emailReceivers", "email"),
    ("smsReceivers", "SMS"),
    ("voiceReceivers", "voice calls"),
    ("azureAppPushReceivers", "Azure app push notifications"),
    ("itsmReceivers", "ITSM tickets"),
    ("automationRunbookReceivers", "Automation runbooks"),
    ("logicAppReceivers", "Logic Apps"),
    ("azureFunctionReceivers", "Azure Functions"),
    ("armRoleReceivers", "ARM role emails"),
    ("eventHubReceivers", "Event Hubs"),
    ("incidentReceivers", "incidents"),
];

fn obj<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, AlertError> {
    v.as_object().ok_or_else(|| {
        AlertError::new("InvalidRequestContent", format!("{what} must be an object")).at(what)
    })
}

fn get<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

fn string(m: &Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, AlertError> {
    match get(m, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(AlertError::new(
            "InvalidRequestContent",
            format!("{path} must be a string"),
        )
        .at(path)),
    }
}

fn required(m: &Map<String, Value>, key: &str, path: &str) -> Result<String, AlertError> {
    string(m, key, path)?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            AlertError::new("MissingRequiredProperty", format!("{path} is required")).at(path)
        })
}

fn boolean(
    m: &Map<String, Value>,
    key: &str,
    path: &str,
    default: bool,
) -> Result<bool, AlertError> {
    match get(m, key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(AlertError::new(
            "InvalidRequestContent",
            format!("{path} must be true or false"),
        )
        .at(path)),
    }
}

fn list<'a>(m: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a [Value], AlertError> {
    match get(m, key) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(AlertError::new(
            "InvalidRequestContent",
            format!("{path} must be an array"),
        )
        .at(path)),
    }
}

fn string_map(v: Option<&Value>, path: &str) -> Result<Map<String, Value>, AlertError> {
    match v {
        None => Ok(Map::new()),
        Some(Value::Object(m)) => {
            if m.values().all(Value::is_string) {
                Ok(m.clone())
            } else {
                Err(AlertError::new(
                    "InvalidRequestContent",
                    format!("{path} values must be strings"),
                )
                .at(path))
            }
        }
        Some(_) => Err(AlertError::new(
            "InvalidRequestContent",
            format!("{path} must be an object"),
        )
        .at(path)),
    }
}

/// An `http(s)://host…` URL, or why not.
fn check_uri(uri: &str, path: &str) -> Result<(), AlertError> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))
        .ok_or_else(|| {
            AlertError::new(
                "InvalidServiceUri",
                format!("{path} must be an http:// or https:// URL"),
            )
            .at(path)
        })?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) || uri.len() > 2048 {
        return Err(
            AlertError::new("InvalidServiceUri", format!("{path} is not a valid URL")).at(path),
        );
    }
    Ok(())
}

/// What a GET shows of a receiver's URL: scheme and host, the rest (where tokens live) replaced.
pub fn redact_uri(uri: &str) -> String {
    let (scheme, rest) = match uri.split_once("://") {
        Some(p) => p,
        None => return "***".into(),
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    format!("{scheme}://{host}/***")
}

pub fn parse_action_group(props: &Value) -> Result<ActionGroup, AlertError> {
    let m = obj(props, "properties")?;
    for (key, what) in OTHER_RECEIVERS {
        if !list(m, key, &format!("properties.{key}"))?.is_empty() {
            return Err(AlertError::new(
                "UnsupportedReceiver",
                format!(
                    "Moat does not send {what}: an action group's receivers can only be webhookReceivers \
                     (properties.{key} must be empty)"
                ),
            )
            .at(format!("properties.{key}")));
        }
    }
    let short = required(m, "groupShortName", "properties.groupShortName")?;
    if short.chars().count() > 12 {
        return Err(AlertError::new(
            "InvalidGroupShortName",
            "properties.groupShortName must be at most 12 characters",
        )
        .at("properties.groupShortName"));
    }
    let mut receivers: Vec<WebhookReceiver> = Vec::new();
    for (i, r) in list(m, "webhookReceivers", "properties.webhookReceivers")?
        .iter()
        .enumerate()
    {
        let path = format!("properties.webhookReceivers[{i}]");
        let r = obj(r, &path)?;
        let name = required(r, "name", &format!("{path}.name"))?;
        let uri = required(r, "serviceUri", &format!("{path}.serviceUri"))?;
        check_uri(&uri, &format!("{path}.serviceUri"))?;
        let aad = boolean(r, "useAadAuth", &format!("{path}.useAadAuth"), false)?;
        if aad {
            return Err(AlertError::new(
                "UnsupportedReceiver",
                "Moat does not sign webhook calls with Entra tokens: useAadAuth must be false",
            )
            .at(format!("{path}.useAadAuth")));
        }
        if receivers.iter().any(|x| x.name.eq_ignore_ascii_case(&name)) {
            return Err(AlertError::new(
                "DuplicateReceiverName",
                format!("two receivers are named '{name}'"),
            )
            .at(format!("{path}.name")));
        }
        receivers.push(WebhookReceiver {
            name,
            service_uri: uri,
            use_common_alert_schema: boolean(
                r,
                "useCommonAlertSchema",
                &format!("{path}.useCommonAlertSchema"),
                false,
            )?,
            use_aad_auth: false,
        });
    }
    Ok(ActionGroup {
        group_short_name: short,
        enabled: boolean(m, "enabled", "properties.enabled", true)?,
        webhook_receivers: receivers,
    })
}

impl ActionGroup {
    /// The properties a GET shows: every receiver list Azure has (empty but webhooks), URLs redacted.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("groupShortName".into(), json!(self.group_short_name));
        m.insert("enabled".into(), json!(self.enabled));
        for (key, _) in OTHER_RECEIVERS {
            m.insert(key.into(), json!([]));
        }
        let hooks: Vec<Value> = self
            .webhook_receivers
            .iter()
            .map(|r| {
                json!({"name": r.name, "serviceUri": redact_uri(&r.service_uri),
                       "useCommonAlertSchema": r.use_common_alert_schema, "useAadAuth": false})
            })
            .collect();
        m.insert("webhookReceivers".into(), Value::Array(hooks));
        Value::Object(m)
    }
}

/// An action of a rule: the group to notify and the rule's custom properties (`webHookProperties`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleAction {
    pub action_group_id: String,
    pub web_hook_properties: Map<String, Value>,
}

fn parse_actions(
    items: &[Value],
    path: &str,
    props_key: &str,
) -> Result<Vec<RuleAction>, AlertError> {
    let mut out = Vec::new();
    for (i, a) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let a = obj(a, &p)?;
        let id = required(a, "actionGroupId", &format!("{p}.actionGroupId"))?;
        if !id
            .to_ascii_lowercase()
            .contains("/providers/microsoft.insights/actiongroups/")
        {
            return Err(AlertError::new(
                "InvalidActionGroupId",
                format!("{p}.actionGroupId must be an action group's resource id"),
            )
            .at(format!("{p}.actionGroupId")));
        }
        out.push(RuleAction {
            action_group_id: id,
            web_hook_properties: string_map(get(a, props_key), &format!("{p}.{props_key}"))?,
        });
    }
    Ok(out)
}

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

/// `Microsoft.Insights/activityLogAlerts` properties.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityLogAlert {
    pub description: String,
    pub enabled: bool,
    pub scopes: Vec<String>,
    pub all_of: Vec<ActivityLeaf>,
    pub actions: Vec<RuleAction>,
}

/// One condition: `field` equals one of `values` (`equals`: one value; `containsAny`: any of several, as a
/// substring), or any of `any_of`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityLeaf {
    pub field: Option<String>,
    pub equals: Option<String>,
    pub contains_any: Option<Vec<String>>,
    pub any_of: Vec<ActivityLeaf>,
}

/// The activity-log fields a condition may test (Azure's names).
pub const ACTIVITY_FIELDS: [&str; 12] = [
    "category",
    "operationName",
    "resourceId",
    "resourceGroup",
    "resourceProvider",
    "resourceType",
    "status",
    "subStatus",
    "caller",
    "level",
    "correlationId",
    "eventDataId",
];

fn parse_leaf(v: &Value, path: &str, depth: u8) -> Result<ActivityLeaf, AlertError> {
    let m = obj(v, path)?;
    let any_of = list(m, "anyOf", &format!("{path}.anyOf"))?;
    if !any_of.is_empty() {
        if depth > 0 {
            return Err(
                AlertError::new("InvalidCondition", format!("{path}.anyOf cannot nest")).at(path),
            );
        }
        let leaves = any_of
            .iter()
            .enumerate()
            .map(|(i, l)| parse_leaf(l, &format!("{path}.anyOf[{i}]"), depth + 1))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(ActivityLeaf {
            field: None,
            equals: None,
            contains_any: None,
            any_of: leaves,
        });
    }
    let field = required(m, "field", &format!("{path}.field"))?;
    let canonical = ACTIVITY_FIELDS
        .iter()
        .find(|f| f.eq_ignore_ascii_case(&field))
        .ok_or_else(|| {
            AlertError::new(
                "InvalidCondition",
                format!(
                    "{path}.field '{field}' is not one of {}",
                    ACTIVITY_FIELDS.join(", ")
                ),
            )
            .at(format!("{path}.field"))
        })?;
    let equals = string(m, "equals", &format!("{path}.equals"))?;
    let contains: Option<Vec<String>> = match get(m, "containsAny") {
        None => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    AlertError::new(
                        "InvalidCondition",
                        format!("{path}.containsAny must be strings"),
                    )
                    .at(path)
                })?,
        ),
        Some(_) => {
            return Err(AlertError::new(
                "InvalidCondition",
                format!("{path}.containsAny must be an array"),
            )
            .at(path))
        }
    };
    if equals.is_some() == contains.is_some() {
        return Err(AlertError::new(
            "InvalidCondition",
            format!("{path} needs exactly one of equals and containsAny"),
        )
        .at(path));
    }
    Ok(ActivityLeaf {
        field: Some(canonical.to_string()),
        equals,
        contains_any: contains,
        any_of: vec![],
    })
}

pub fn parse_activity_log_alert(props: &Value) -> Result<ActivityLogAlert, AlertError> {
    let m = obj(props, "properties")?;
    let scopes: Vec<String> = list(m, "scopes", "properties.scopes")?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .filter(|s: &Vec<String>| !s.is_empty())
        .ok_or_else(|| {
            AlertError::new(
                "InvalidScope",
                "properties.scopes must be a non-empty list of resource ids",
            )
            .at("properties.scopes")
        })?;
    for s in &scopes {
        if !s.to_ascii_lowercase().starts_with("/subscriptions/") {
            return Err(AlertError::new(
                "InvalidScope",
                format!("scope '{s}' is not a resource id"),
            )
            .at("properties.scopes"));
        }
    }
    let cond = get(m, "condition").ok_or_else(|| {
        AlertError::new(
            "MissingRequiredProperty",
            "properties.condition is required",
        )
        .at("properties.condition")
    })?;
    let cond = obj(cond, "properties.condition")?;
    let leaves = list(cond, "allOf", "properties.condition.allOf")?;
    if leaves.is_empty() {
        return Err(AlertError::new(
            "InvalidCondition",
            "properties.condition.allOf needs at least one condition",
        )
        .at("properties.condition.allOf"));
    }
    let all_of = leaves
        .iter()
        .enumerate()
        .map(|(i, l)| parse_leaf(l, &format!("properties.condition.allOf[{i}]"), 0))
        .collect::<Result<Vec<_>, _>>()?;
    let actions = match get(m, "actions") {
        None => vec![],
        Some(a) => {
            let a = obj(a, "properties.actions")?;
            parse_actions(
                list(a, "actionGroups", "properties.actions.actionGroups")?,
                "properties.actions.actionGroups",
                "webhookProperties",
            )?
        }
    };
    Ok(ActivityLogAlert {
        description: string(m, "description", "properties.description")?.unwrap_or_default(),
        enabled: boolean(m, "enabled", "properties.enabled", true)?,
        scopes,
        all_of,
        actions,
    })
}

fn leaf_json(l: &ActivityLeaf) -> Value {
    if !l.any_of.is_empty() {
        return json!({"anyOf": l.any_of.iter().map(leaf_json).collect::<Vec<_>>()});
    }
    let mut m = Map::new();
    m.insert("field".into(), json!(l.field));
    if let Some(e) = &l.equals {
        m.insert("equals".into(), json!(e));
    }
    if let Some(c) = &l.contains_any {
        m.insert("containsAny".into(), json!(c));
    }
    Value::Object(m)
}

impl ActivityLogAlert {
    pub fn to_json(&self) -> Value {
        json!({
            "description": self.description, "enabled": self.enabled, "scopes": self.scopes,
            "condition": {"allOf": self.all_of.iter().map(leaf_json).collect::<Vec<_>>()},
            "actions": {"actionGroups": self.actions.iter().map(|a| json!({"actionGroupId": a.action_group_id, "webhookProperties": a.web_hook_properties})).collect::<Vec<_>>()},
        })
    }

    /// Whether a record with these `fields` (Azure's names → values) under `resource_id` matches.
    pub fn matches(&self, resource_id: &str, field: &dyn Fn(&str) -> String) -> bool {
        let rid = resource_id.to_ascii_lowercase();
        let in_scope = self.scopes.iter().any(|s| {
            let s = s.trim_end_matches('/').to_ascii_lowercase();
            rid == s || rid.starts_with(&format!("{s}/"))
        });
        in_scope && self.all_of.iter().all(|l| leaf_matches(l, field))
    }
}

fn leaf_matches(l: &ActivityLeaf, field: &dyn Fn(&str) -> String) -> bool {
    if !l.any_of.is_empty() {
        return l.any_of.iter().any(|x| leaf_matches(x, field));
    }
    let value = field(l.field.as_deref().unwrap_or("")).to_ascii_lowercase();
    if let Some(e) = &l.equals {
        return value == e.to_ascii_lowercase();
    }
    l.contains_any
        .as_ref()
        .is_some_and(|c| c.iter().any(|x| value.contains(&x.to_ascii_lowercase())))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn action_groups_take_webhooks_and_refuse_other_receivers() {
        let g = parse_action_group(&json!({"groupShortName": "ops", "enabled": true,
            "webhookReceivers": [{"name": "hook", "serviceUri": "https://h.example/x?token=s3cret", "useCommonAlertSchema": true}],
            "emailReceivers": []})).unwrap();
        assert_eq!(
            g.webhook_receivers[0].service_uri,
            "https://h.example/x?token=s3cret"
        );
        let shown = g.to_json().to_string();
        assert!(
            !shown.contains("s3cret") && shown.contains("https://h.example/***"),
            "{shown}"
        );
        let e = parse_action_group(&json!({"groupShortName": "ops",
            "emailReceivers": [{"name": "e", "emailAddress": "a@b.c"}]}))
        .unwrap_err();
        assert_eq!(e.code, "UnsupportedReceiver");
        assert!(e.message.contains("does not send email"), "{e}");
        assert_eq!(parse_action_group(&json!({"groupShortName": "ops", "webhookReceivers": [{"name": "h", "serviceUri": "ftp://x"}]})).unwrap_err().code, "InvalidServiceUri");
    }

    #[test]
    fn activity_conditions_match_in_scope_in_any_case() {
        let a = parse_activity_log_alert(&json!({"scopes": ["/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/r"],
            "condition": {"allOf": [{"field": "category", "equals": "Administrative"},
                                    {"field": "operationName", "equals": "Microsoft.ContainerRegistry/registries/write"},
                                    {"anyOf": [{"field": "status", "equals": "Succeeded"}, {"field": "status", "equals": "Started"}]}]}})).unwrap();
        let f = |name: &str| -> String {
            match name {
                "category" => "Administrative".into(),
                "operationName" => "microsoft.containerregistry/registries/write".into(),
                "status" => "Succeeded".into(),
                _ => String::new(),
            }
        };
        assert!(a.matches(
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.containerregistry/registries/r",
            &f
        ));
        assert!(!a.matches("/subscriptions/s/resourcegroups/rg/providers/microsoft.containerregistry/registries/r2", &f));
        let failed = |name: &str| {
            if name == "status" {
                "Failed".to_string()
            } else {
                f(name)
            }
        };
        assert!(!a.matches(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/r",
            &failed
        ));
        assert_eq!(parse_activity_log_alert(&json!({"scopes": ["/subscriptions/s"], "condition": {"allOf": [{"field": "colour", "equals": "x"}]}})).unwrap_err().code, "InvalidCondition");
    }
}
