//! ACR webhooks, the pure parts: names, scopes, actions, the per-SKU limit, which audit events fire which action,
//! and the JSON payloads ACR POSTs (`container-registry-webhook-reference.md`; reference acr-behaviour §8.2).

use crate::audit::AuditEvent;
use crate::Sku;
use serde_json::{json, Value};

/// The actions Moat delivers. ACR's `chart_push`, `chart_delete` (Helm charts in ACR's retired chart repository)
/// and `quarantine` (a preview feature) are refused at creation: a webhook that never fires is worse than an error.
pub const SERVED_ACTIONS: [&str; 2] = ["push", "delete"];
const UNSERVED_ACTIONS: [&str; 3] = ["chart_push", "chart_delete", "quarantine"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook name '{0}' is invalid: it must be 5 to 50 letters or digits")]
    Name(String),
    #[error("action '{0}' is not served by Moat (it serves push and delete)")]
    UnservedAction(String),
    #[error("action '{0}' is not a webhook action (push, delete)")]
    UnknownAction(String),
    #[error("scope '{0}' is invalid: expected 'repository', 'repository:tag' or 'repository:*'")]
    Scope(String),
    #[error("status '{0}' is invalid: expected 'enabled' or 'disabled'")]
    Status(String),
}

/// ACR's rule for webhook names: `^[a-zA-Z0-9]*$`, 5 to 50 characters.
pub fn check_name(name: &str) -> Result<(), WebhookError> {
    if (5..=50).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(WebhookError::Name(name.into()))
    }
}

/// How many webhooks a registry of `sku` may have (ACR's limits: Basic 2, Standard 10, Premium 500).
pub fn limit(sku: Sku) -> usize {
    match sku {
        Sku::Basic => 2,
        Sku::Standard => 10,
        Sku::Premium => 500,
    }
}

/// Reads `actions` (any case), refusing what Moat does not deliver; keeps ACR's spelling and drops duplicates.
pub fn parse_actions(actions: &[String]) -> Result<Vec<String>, WebhookError> {
    let mut out: Vec<String> = Vec::new();
    for a in actions {
        let a = a.trim().to_ascii_lowercase();
        if UNSERVED_ACTIONS.contains(&a.as_str()) {
            return Err(WebhookError::UnservedAction(a));
        }
        if !SERVED_ACTIONS.contains(&a.as_str()) {
            return Err(WebhookError::UnknownAction(a));
        }
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

pub fn parse_status(s: &str) -> Result<bool, WebhookError> {
    match s.to_ascii_lowercase().as_str() {
        "enabled" => Ok(true),
        "disabled" => Ok(false),
        _ => Err(WebhookError::Status(s.into())),
    }
}

/// Checks a scope: empty, `repo`, `repo:tag` or `repo:*` (a repository name of lower-case path components).
pub fn check_scope(scope: &str) -> Result<(), WebhookError> {
    if scope.is_empty() {
        return Ok(());
    }
    let (repo, tag) = scope.split_once(':').unwrap_or((scope, "latest"));
    let repo_ok = !repo.is_empty()
        && repo.len() <= 256
        && repo.split('/').all(|c| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
        });
    let tag_ok = tag == "*"
        || (!tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch)));
    if repo_ok && tag_ok {
        Ok(())
    } else {
        Err(WebhookError::Scope(scope.into()))
    }
}

/// Whether an event on `repository` (with `tag`, if any) is in `scope`. ACR: `foo:*` every tag of `foo`, `foo:bar`
/// one tag, `foo` means `foo:latest`, empty means everything. A delete by digest has no tag: it matches a scope
/// naming its repository with `*`, as it touches every tag that pointed at it.
pub fn scope_matches(scope: &str, repository: &str, tag: Option<&str>) -> bool {
    if scope.is_empty() {
        return true;
    }
    let (repo, want) = scope.split_once(':').unwrap_or((scope, "latest"));
    if repo != repository {
        return false;
    }
    match (want, tag) {
        ("*", _) => true,
        (w, Some(t)) => w == t,
        (_, None) => false,
    }
}

/// The webhook action an audit event fires, if any: a successful manifest push (`push`), a successful manifest
/// or repository delete (`delete`; a tag removal fires nothing, as in ACR).
pub fn action_of(e: &AuditEvent) -> Option<&'static str> {
    if e.result_type != "Success" || e.repository.is_none() {
        return None;
    }
    let blob = e.media_type.as_deref() == Some("application/octet-stream");
    match e.operation_name.as_str() {
        "Push" if !blob && e.media_type.is_some() && e.digest.is_some() => Some("push"),
        "Delete" if !blob && e.digest.is_some() => Some("delete"),
        "DeleteRepository" => Some("delete"),
        _ => None,
    }
}

/// The `request` part of a payload: who asked, and how.
fn request(e: &AuditEvent, method: &str) -> Value {
    json!({
        "id": e.correlation_id.clone().unwrap_or_default(),
        "host": e.login_server,
        "method": method,
        "useragent": e.user_agent.clone().unwrap_or_default(),
    })
}

/// ACR's payload for an audit event that fires `action` (see [`action_of`]); `id` is the event id.
pub fn payload(id: &str, action: &str, e: &AuditEvent) -> Value {
    let repository = e.repository.clone().unwrap_or_default();
    match action {
        "push" => json!({
            "id": id,
            "timestamp": e.time_generated,
            "action": "push",
            "target": {
                "mediaType": e.media_type.clone().unwrap_or_default(),
                "size": e.size.unwrap_or(0),
                "digest": e.digest.clone().unwrap_or_default(),
                "length": e.size.unwrap_or(0),
                "repository": repository,
                "tag": e.tag.clone().unwrap_or_default(),
            },
            "request": request(e, "PUT"),
        }),
        _ => {
            let mut target = json!({"repository": repository});
            if let Some(d) = &e.digest {
                target["digest"] = d.clone().into();
            }
            if let Some(m) = &e.media_type {
                target["mediaType"] = m.clone().into();
            }
            json!({
                "id": id,
                "timestamp": e.time_generated,
                "action": "delete",
                "target": target,
                "request": request(e, "DELETE"),
            })
        }
    }
}

/// The payload `ping` sends: a generic event receivers recognise by `action`.
pub fn ping_payload(id: &str, timestamp: &str, host: &str) -> Value {
    json!({
        "id": id,
        "timestamp": timestamp,
        "action": "ping",
        "target": {},
        "request": {"id": id, "host": host, "method": "POST", "useragent": "moat-webhook"},
    })
}

/// The `requestUri` `listEvents` shows: the service URI without its query (which may carry a key) or user info.
pub fn shown_uri(uri: &str) -> String {
    let no_query = uri.split(['?', '#']).next().unwrap_or("");
    match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => no_query.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(op: &str, media: Option<&str>, tag: Option<&str>) -> AuditEvent {
        AuditEvent {
            time_generated: "2026-12-07T18:00:00.000000Z".into(),
            operation_name: op.into(),
            registry: "app".into(),
            login_server: "app.moat.test:5000".into(),
            repository: Some("hello".into()),
            tag: tag.map(Into::into),
            digest: Some("sha256:ab".into()),
            media_type: media.map(Into::into),
            size: Some(528),
            user_agent: Some("skopeo/1".into()),
            correlation_id: Some("c1".into()),
            result_type: "Success".into(),
            ..Default::default()
        }
    }

    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    #[test]
    fn names_actions_statuses_and_limits() {
        assert!(check_name("hook1").is_ok());
        for bad in ["hook", "hook-1", &"a".repeat(51), "hoök12"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_actions(&["Push".into(), "delete".into(), "push".into()]).unwrap(),
            vec!["push", "delete"]
        );
        assert_eq!(
            parse_actions(&["chart_push".into()]),
            Err(WebhookError::UnservedAction("chart_push".into()))
        );
        assert!(parse_actions(&["pull".into()]).is_err());
        assert_eq!(parse_status("Disabled"), Ok(false));
        assert!(parse_status("off").is_err());
        assert_eq!(limit(Sku::Basic), 2);
        assert_eq!(limit(Sku::Standard), 10);
        assert_eq!(limit(Sku::Premium), 500);
    }

    #[test]
    fn scopes_match_as_acr_documents() {
        assert!(scope_matches("", "any/repo", None));
        assert!(scope_matches("hello:*", "hello", Some("v1")));
        assert!(scope_matches("hello:*", "hello", None));
        assert!(scope_matches("hello:v1", "hello", Some("v1")));
        assert!(!scope_matches("hello:v1", "hello", Some("v2")));
        assert!(scope_matches("hello", "hello", Some("latest")));
        assert!(!scope_matches("hello", "hello", Some("v1")));
        assert!(!scope_matches("hello:*", "hello2", Some("v1")));
        assert!(!scope_matches("hello:v1", "hello", None));
        for ok in ["", "hello", "team/app:v1.2", "a:*"] {
            assert!(check_scope(ok).is_ok(), "{ok}");
        }
        for bad in ["Hello", ":v1", "a:", "a:b:c", "a//b", "a:t*"] {
            assert!(check_scope(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn which_events_fire() {
        assert_eq!(
            action_of(&event("Push", Some(MANIFEST), Some("v1"))),
            Some("push")
        );
        assert_eq!(
            action_of(&event("Push", Some("application/octet-stream"), None)),
            None
        );
        assert_eq!(action_of(&event("Delete", None, None)), Some("delete"));
        assert_eq!(
            action_of(&event("Delete", Some("application/octet-stream"), None)),
            None
        );
        assert_eq!(
            action_of(&event("DeleteRepository", None, None)),
            Some("delete")
        );
        assert_eq!(action_of(&event("Untag", None, Some("v1"))), None);
        assert_eq!(action_of(&event("Pull", Some(MANIFEST), Some("v1"))), None);
        let mut refused = event("Push", Some(MANIFEST), Some("v1"));
        refused.result_type = "Denied".into();
        assert_eq!(action_of(&refused), None);
    }

    #[test]
    fn payloads_are_acrs() {
        let p = payload("e1", "push", &event("Push", Some(MANIFEST), Some("v1")));
        assert_eq!(p["action"], "push");
        assert_eq!(p["target"]["mediaType"], MANIFEST);
        assert_eq!(p["target"]["size"], 528);
        assert_eq!(p["target"]["length"], 528);
        assert_eq!(p["target"]["tag"], "v1");
        assert_eq!(p["target"]["repository"], "hello");
        assert_eq!(p["request"]["method"], "PUT");
        assert_eq!(p["request"]["host"], "app.moat.test:5000");
        assert_eq!(p["request"]["useragent"], "skopeo/1");
        let d = payload("e2", "delete", &event("DeleteRepository", None, None));
        assert_eq!(d["action"], "delete");
        assert_eq!(d["request"]["method"], "DELETE");
        assert_eq!(d["target"]["repository"], "hello");
        assert!(d["target"].get("tag").is_none());
        assert_eq!(ping_payload("p", "t", "h")["action"], "ping");
    }

    #[test]
    fn shown_uris_hide_keys() {
        assert_eq!(
            shown_uri("https://user:pw@hooks.example/x/y?code=secret#f"),
            "https://hooks.example/x/y"
        );
        assert_eq!(shown_uri("http://h:8080"), "http://h:8080");
    }
}
