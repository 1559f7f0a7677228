//! Activity-log alert rules: conditions on the fields of activity-log records, in a scope.

use super::rules::{boolean, get, list, obj, parse_actions, required, string, RuleAction};
use super::AlertError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

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
    use serde_json::json;

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
