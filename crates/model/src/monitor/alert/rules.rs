//! Parsing and checking the three resources' `properties` as az and the SDK send them. What is accepted is
//! stored in its canonical form (these structs serialized back), so a GET shows what the server will act on.

use super::AlertError;
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

pub(super) fn obj<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, AlertError> {
    v.as_object().ok_or_else(|| {
        AlertError::new("InvalidRequestContent", format!("{what} must be an object")).at(what)
    })
}

pub(super) fn get<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

pub(super) fn string(
    m: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<String>, AlertError> {
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

pub(super) fn required(
    m: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<String, AlertError> {
    string(m, key, path)?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            AlertError::new("MissingRequiredProperty", format!("{path} is required")).at(path)
        })
}

pub(super) fn boolean(
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

pub(super) fn list<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a [Value], AlertError> {
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

pub(super) fn parse_actions(
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
