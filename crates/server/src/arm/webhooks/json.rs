//! The webhook resource's JSON: what a PUT or PATCH may say, and what GET answers (never the secrets).

use crate::arm::error::{ArmError, ArmResult};
use moat_model::monitor::webhook;
use moat_model::registry::Registry;
use moat_store::meta::WebhookRow;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// What a request body sets; `None`: not named.
#[derive(Debug, Default)]
pub struct Spec {
    pub location: Option<String>,
    pub tags: Option<Value>,
    pub service_uri: Option<String>,
    pub custom_headers: Option<BTreeMap<String, String>>,
    pub enabled: Option<bool>,
    pub scope: Option<String>,
    pub actions: Option<Vec<String>>,
}

fn bad(path: &str, why: impl Into<String>) -> ArmError {
    ArmError::invalid_property(path, why)
}

/// Reads a PUT (`patch` false: `properties` required) or PATCH body strictly: a field of the wrong type or an
/// unknown property is refused, so a typo never silently leaves a webhook firing on everything.
pub fn parse(body: &Value, patch: bool) -> ArmResult<Spec> {
    let Some(obj) = body.as_object() else {
        return Err(ArmError::bad_request(
            "InvalidRequestContent",
            "the body must be a JSON object",
        ));
    };
    let mut spec = Spec::default();
    for (k, v) in obj {
        match k.as_str() {
            "location" => {
                let s = v
                    .as_str()
                    .ok_or_else(|| bad("location", "expected a string"))?;
                spec.location = Some(s.to_string());
            }
            "tags" => {
                if !v.is_null() {
                    let tags = v
                        .as_object()
                        .ok_or_else(|| bad("tags", "expected an object"))?;
                    if tags.values().any(|t| !t.is_string()) {
                        return Err(bad("tags", "tag values must be strings"));
                    }
                    spec.tags = Some(v.clone());
                }
            }
            "properties" => properties(v, &mut spec)?,
            // What a client echoes back from a GET.
            "id" | "name" | "type" | "systemData" => {}
            other => return Err(bad(other, "unknown property of a webhook")),
        }
    }
    if !patch && obj.get("properties").is_none() {
        return Err(bad(
            "properties",
            "a webhook needs properties: serviceUri and actions",
        ));
    }
    Ok(spec)
}

fn properties(v: &Value, spec: &mut Spec) -> ArmResult<()> {
    let Some(props) = v.as_object() else {
        return Err(bad("properties", "expected an object"));
    };
    for (k, v) in props {
        let path = format!("properties.{k}");
        if v.is_null() {
            continue;
        }
        match k.as_str() {
            "serviceUri" => {
                let s = v.as_str().ok_or_else(|| bad(&path, "expected a string"))?;
                check_uri(s).map_err(|why| bad(&path, why))?;
                spec.service_uri = Some(s.to_string());
            }
            "customHeaders" => {
                let h = v
                    .as_object()
                    .ok_or_else(|| bad(&path, "expected an object"))?;
                let mut out = BTreeMap::new();
                for (name, value) in h {
                    let value = value
                        .as_str()
                        .ok_or_else(|| bad(&path, format!("header '{name}': expected a string")))?;
                    let name_ok = !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
                    if !name_ok || value.bytes().any(|b| b < 0x20 && b != b'\t') {
                        return Err(bad(
                            &path,
                            format!("header '{name}' is not a valid HTTP header"),
                        ));
                    }
                    out.insert(name.clone(), value.to_string());
                }
                spec.custom_headers = Some(out);
            }
            "status" => {
                let s = v.as_str().ok_or_else(|| bad(&path, "expected a string"))?;
                spec.enabled =
                    Some(webhook::parse_status(s).map_err(|e| bad(&path, e.to_string()))?);
            }
            "scope" => {
                let s = v.as_str().ok_or_else(|| bad(&path, "expected a string"))?;
                webhook::check_scope(s).map_err(|e| bad(&path, e.to_string()))?;
                spec.scope = Some(s.to_string());
            }
            "actions" => {
                let list = v
                    .as_array()
                    .ok_or_else(|| bad(&path, "expected an array"))?;
                let names = list
                    .iter()
                    .map(|a| {
                        a.as_str()
                            .map(String::from)
                            .ok_or_else(|| bad(&path, "expected strings"))
                    })
                    .collect::<ArmResult<Vec<_>>>()?;
                let actions =
                    webhook::parse_actions(&names).map_err(|e| bad(&path, e.to_string()))?;
                if actions.is_empty() {
                    return Err(bad(
                        &path,
                        "a webhook needs at least one action: push, delete",
                    ));
                }
                spec.actions = Some(actions);
            }
            "provisioningState" => {}
            other => {
                return Err(bad(
                    &format!("properties.{other}"),
                    "unknown property of a webhook",
                ))
            }
        }
    }
    Ok(())
}

/// An absolute `http(s)://host…` URI (the outbound connector decides at delivery whether the host may be reached).
fn check_uri(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or("the service URI must be an absolute http:// or https:// URI")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || s.len() > 2048 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the service URI is not a valid URI".into());
    }
    Ok(())
}

/// The location of a webhook: the registry's (ACR allows a replica's too; Moat has none). Case and spaces as ARM
/// accepts them (`West Europe`).
pub fn location(r: &Registry, given: Option<&str>) -> ArmResult<String> {
    let own = r.settings.location.as_str().to_string();
    match given {
        None => Ok(own),
        Some(g) => {
            let norm = |s: &str| s.replace(' ', "").to_ascii_lowercase();
            if norm(g) == norm(&own) {
                Ok(own)
            } else {
                Err(ArmError::bad_request(
                    "InvalidLocation",
                    format!("a webhook's location must be its registry's ('{own}'), not '{g}'"),
                )
                .with_target("location"))
            }
        }
    }
}

/// GET's answer: no service URI, no headers.
pub fn webhook_json(reg_id: &str, h: &WebhookRow) -> Value {
    json!({
        "id": format!("{reg_id}/webhooks/{}", h.name),
        "name": h.name,
        "type": "Microsoft.ContainerRegistry/registries/webhooks",
        "location": h.location,
        "tags": h.tags,
        "properties": {
            "status": if h.enabled { "enabled" } else { "disabled" },
            "scope": h.scope,
            "actions": h.actions,
            "provisioningState": "Succeeded",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_read_strictly() {
        let s = parse(
            &json!({"location": "westeurope", "properties": {"serviceUri": "http://h/x?k=1",
                "customHeaders": {"X-Key": "v"}, "status": "disabled", "scope": "hello:*", "actions": ["push"]}}),
            false,
        )
        .unwrap();
        assert_eq!(s.service_uri.as_deref(), Some("http://h/x?k=1"));
        assert_eq!(s.enabled, Some(false));
        assert_eq!(s.custom_headers.unwrap()["X-Key"], "v");
        for bad in [
            json!({"properties": {"serviceUri": "ftp://h", "actions": ["push"]}}),
            json!({"properties": {"serviceUri": "http://h", "actions": ["chart_push"]}}),
            json!({"properties": {"serviceUri": "http://h", "actions": []}}),
            json!({"properties": {"serviceUri": "http://h", "actions": ["push"], "scope": "A:b"}}),
            json!({"properties": {"serviceUri": "http://h", "actions": ["push"], "statuz": "x"}}),
            json!({"properties": {"serviceUri": "http://h", "actions": ["push"], "customHeaders": {"a b": "1"}}}),
            json!({"location": "x"}),
            json!([]),
        ] {
            assert!(parse(&bad, false).is_err(), "{bad}");
        }
        assert!(parse(&json!({"tags": {"a": "b"}}), true).is_ok());
    }
}
