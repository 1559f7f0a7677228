//! The activity log: one record per management-plane change or refused management request, shaped after Azure's
//! Activity Log (`eventDataId`, `caller`, `callerIpAddress`, `operationName`, `resourceId`, `status`,
//! `subStatus`, `correlationId`, `level`, `properties`). Data-plane events live in [`crate::audit`].
//!
//! Which operation a request is follows ARM's own rule, derived here once from the method and the path, so every
//! route (today's and tomorrow's) is named the same way: `PUT`/`PATCH` → `{type}/write`, `DELETE` →
//! `{type}/delete`, `POST {resource}/{verb}` → `{type}/{verb}/action`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `Started` (accepted, still running), `Succeeded` or `Failed`, as the Activity Log's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActivityStatus {
    Started,
    Succeeded,
    Failed,
}

impl ActivityStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityStatus::Started => "Started",
            ActivityStatus::Succeeded => "Succeeded",
            ActivityStatus::Failed => "Failed",
        }
    }

    pub fn parse(s: &str) -> Option<ActivityStatus> {
        [
            ActivityStatus::Started,
            ActivityStatus::Succeeded,
            ActivityStatus::Failed,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    /// The status of a request answered with `http_status`: `202` means the work goes on.
    pub fn of_http(http_status: u16) -> ActivityStatus {
        match http_status {
            202 => ActivityStatus::Started,
            200..=299 => ActivityStatus::Succeeded,
            _ => ActivityStatus::Failed,
        }
    }
}

/// One activity-log record. `event_data_id` is stable: a log sink that ships a record twice ships the same id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityEvent {
    pub event_data_id: String,
    /// When the change was made (RFC 3339, UTC).
    pub time: String,
    /// Always `Administrative` (Azure's category for management operations).
    pub category: String,
    /// `Microsoft.ContainerRegistry/registries/write` and the like.
    pub operation_name: String,
    pub resource_id: String,
    /// The registry the operation concerns, when there is one (Moat's column: `moat audit --registry`).
    pub registry: Option<String>,
    /// Who asked: a service principal's app id, `local:<user>` for the operator commands, or `-` when the
    /// request carried no valid credentials.
    pub caller: String,
    pub caller_ip_address: String,
    pub status: ActivityStatus,
    /// The HTTP status's reason phrase (`OK`, `Created`, `Forbidden`, `BadRequest`), as ARM writes it.
    pub sub_status: String,
    pub http_status_code: u16,
    /// `Informational` for what succeeded, `Warning` for refusals, `Error` for failures of the server.
    pub level: String,
    pub correlation_id: String,
    /// Details: `before`/`after` of a policy change, the refusal's `error {code, message}`, `userAgent`.
    pub properties: Value,
}

impl ActivityEvent {
    /// A record of `operation_name` on `resource_id`, succeeded with 200 until told otherwise.
    pub fn new(
        event_data_id: String,
        time: String,
        operation_name: impl Into<String>,
        resource_id: impl Into<String>,
        caller: impl Into<String>,
        caller_ip_address: impl Into<String>,
        correlation_id: impl Into<String>,
    ) -> ActivityEvent {
        let mut e = ActivityEvent {
            event_data_id,
            time,
            category: "Administrative".into(),
            operation_name: operation_name.into(),
            resource_id: resource_id.into(),
            registry: None,
            caller: caller.into(),
            caller_ip_address: caller_ip_address.into(),
            status: ActivityStatus::Succeeded,
            sub_status: String::new(),
            http_status_code: 0,
            level: String::new(),
            correlation_id: correlation_id.into(),
            properties: Value::Object(Default::default()),
        };
        e.registry = registry_of(&e.resource_id);
        e.set_http_status(200);
        e
    }

    /// Sets the status, sub-status and level from the HTTP answer.
    pub fn set_http_status(&mut self, code: u16) {
        self.http_status_code = code;
        self.status = ActivityStatus::of_http(code);
        self.sub_status = reason(code).to_string();
        self.level = match code {
            500..=599 => "Error",
            400..=499 => "Warning",
            _ => "Informational",
        }
        .into();
    }

    /// A refusal: the status and the error ARM answered with.
    pub fn failed(mut self, http_status: u16, code: &str, message: &str) -> ActivityEvent {
        self.set_http_status(http_status);
        self.set_property(
            "error",
            serde_json::json!({"code": code, "message": message}),
        );
        self
    }

    /// Records the properties before and after a change (`None` where the resource did not or does not exist).
    pub fn with_change(mut self, before: Option<Value>, after: Option<Value>) -> ActivityEvent {
        self.set_property("before", before.unwrap_or(Value::Null));
        self.set_property("after", after.unwrap_or(Value::Null));
        self
    }

    pub fn set_property(&mut self, key: &str, value: Value) {
        if !self.properties.is_object() {
            self.properties = Value::Object(Default::default());
        }
        if let Value::Object(map) = &mut self.properties {
            map.insert(key.into(), value);
        }
    }

    /// The form in which the record is stored: every field that can carry client input bounded and escaped
    /// (see [`crate::text`]).
    pub fn sanitized(&self) -> ActivityEvent {
        use crate::text::{stored, stored_json};
        ActivityEvent {
            event_data_id: stored(&self.event_data_id),
            time: stored(&self.time),
            category: stored(&self.category),
            operation_name: stored(&self.operation_name),
            resource_id: stored(&self.resource_id),
            registry: self.registry.as_deref().map(stored),
            caller: stored(&self.caller),
            caller_ip_address: stored(&self.caller_ip_address),
            status: self.status,
            sub_status: stored(&self.sub_status),
            http_status_code: self.http_status_code,
            level: stored(&self.level),
            correlation_id: stored(&self.correlation_id),
            properties: stored_json(&self.properties),
        }
    }
}

/// ARM's `subStatus` for an HTTP status.
fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "NoContent",
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        413 => "PayloadTooLarge",
        429 => "TooManyRequests",
        500 => "InternalServerError",
        503 => "ServiceUnavailable",
        _ => "",
    }
}

/// The registry named in a resource id (`…/providers/Microsoft.ContainerRegistry/registries/{name}[/…]`).
pub fn registry_of(resource_id: &str) -> Option<String> {
    let parts: Vec<&str> = resource_id.split('/').collect();
    parts.windows(3).find_map(|w| {
        (w[0].eq_ignore_ascii_case("Microsoft.ContainerRegistry")
            && w[1].eq_ignore_ascii_case("registries")
            && !w[2].is_empty())
        .then(|| w[2].to_ascii_lowercase())
    })
}

/// What a management request does, by ARM's naming rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArmOperation {
    pub operation_name: String,
    pub resource_id: String,
    /// Whether the request asks for a change (anything but a read): such a request is always recorded.
    pub is_change: bool,
    /// The resource type the request is about, e.g. `Microsoft.ContainerRegistry/registries/webhooks`.
    pub resource_type: String,
    /// Whether the path names a collection (`…/webhooks`), not one resource (`…/webhooks/hook1`).
    pub collection: bool,
}

/// Canonical spellings of the provider namespaces, types and actions Moat serves (ARM paths are
/// case-insensitive; the activity log spells them one way).
const CANONICAL: &[&str] = &[
    "Microsoft.ContainerRegistry",
    "Microsoft.Network",
    "Microsoft.Resources",
    "Microsoft.Graph",
    "Microsoft.Authorization",
    "Microsoft.Insights",
    "servicePrincipals",
    "roleAssignments",
    "roleDefinitions",
    "resetCredentials",
    "registries",
    "privateEndpointConnections",
    "privateEndpoints",
    "privateLinkResources",
    "resourceGroups",
    "subscriptions",
    "locations",
    "providers",
    "replications",
    "webhooks",
    "tasks",
    "taskRuns",
    "runs",
    "agentPools",
    "connectedRegistries",
    "cacheRules",
    "credentialSets",
    "scopeMaps",
    "tokens",
    "exportPipelines",
    "importPipelines",
    "pipelineRuns",
    "importImage",
    "listCredentials",
    "regenerateCredential",
    "listUsages",
    "checkNameAvailability",
    "operationStatuses",
    "operationResults",
    "diagnosticSettings",
    "diagnosticSettingsCategories",
    "metrics",
    "metricDefinitions",
    "metricNamespaces",
    "actionGroups",
    "metricAlerts",
    "activityLogAlerts",
    "eventtypes",
    "values",
    "ping",
    "listEvents",
    "getCallbackConfig",
];

fn canonical(segment: &str) -> &str {
    CANONICAL
        .iter()
        .find(|c| c.eq_ignore_ascii_case(segment))
        .copied()
        .unwrap_or(segment)
}

/// The provider namespaces whose operations the activity log records.
const NAMESPACES: &[&str] = &[
    "Microsoft.ContainerRegistry",
    "Microsoft.Network",
    "Microsoft.Resources",
    "Microsoft.Graph",
    "Microsoft.Authorization",
    "Microsoft.Insights",
];

/// An activity-log operation name as a person may type it (`microsoft.containerregistry/registries/WRITE`), in the
/// spelling the log stores, or `None` when it is not of the form `{namespace}/{type}[/…]/{read|write|delete|action}`
/// for a namespace the log records.
pub fn canonical_operation_name(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.trim().split('/').collect();
    let (namespace, rest) = parts.split_first()?;
    let namespace = NAMESPACES
        .iter()
        .find(|n| n.eq_ignore_ascii_case(namespace))?;
    let verb = rest.last()?.to_ascii_lowercase();
    if rest.len() < 2 || !["read", "write", "delete", "action"].contains(&verb.as_str()) {
        return None;
    }
    let types = &rest[..rest.len() - 1];
    if types
        .iter()
        .any(|t| t.is_empty() || !t.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return None;
    }
    let mut out = String::from(*namespace);
    for t in types {
        out.push('/');
        out.push_str(canonical(t));
    }
    out.push('/');
    out.push_str(&verb);
    Some(out)
}

/// Reads that are `POST`s in ARM's API and change nothing.
const READ_ACTIONS: &[&str] = &["checkNameAvailability", "listEvents", "getCallbackConfig"];

/// The operation a management request names. `path` is the request path (`/subscriptions/…`).
pub fn arm_operation(method: &str, path: &str) -> ArmOperation {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let method = method.to_ascii_uppercase();
    // The resource path is `subscriptions/{sub}[/resourceGroups/{rg}][/providers/{ns}/{type}/{name}[/{type}/{name}…]]`.
    let mut types: Vec<&str> = Vec::new();
    let mut id: Vec<&str> = Vec::new();
    let mut namespace = "Microsoft.Resources";
    let mut action: Option<&str> = None;
    let mut collection = false;
    let mut i = 0;
    while i < segments.len() {
        let s = canonical(segments[i]);
        if s == "providers" && i + 1 < segments.len() {
            if let Some(ns) = segments.get(i + 1) {
                namespace = canonical(ns);
                id.push("providers");
                id.push(namespace);
                types.clear();
            }
            i += 2;
            continue;
        }
        match segments.get(i + 1) {
            Some(name) => {
                types.push(s);
                id.push(s);
                id.push(name);
                i += 2;
            }
            None => {
                // A trailing single segment: an action on the resource (POST) or a collection (GET).
                if method == "POST" {
                    action = Some(s);
                } else {
                    types.push(s);
                    collection = true;
                }
                i += 1;
            }
        }
    }
    let mut resource_type = String::from(namespace);
    for t in &types {
        resource_type.push('/');
        resource_type.push_str(t);
    }
    let name = &resource_type;
    let verb = match (method.as_str(), action) {
        ("POST", Some(a)) => format!("{a}/action"),
        ("POST", None) => "action".into(),
        ("PUT" | "PATCH", _) => "write".into(),
        ("DELETE", _) => "delete".into(),
        _ => "read".into(),
    };
    let is_change = match method.as_str() {
        "PUT" | "PATCH" | "DELETE" => true,
        "POST" => !action.is_some_and(|a| READ_ACTIONS.contains(&a)),
        _ => false,
    };
    ArmOperation {
        operation_name: format!("{name}/{verb}"),
        resource_id: format!("/{}", id.join("/")),
        is_change,
        resource_type,
        collection,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REG: &str =
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/app";

    #[test]
    fn registry_operations_follow_arms_naming() {
        let put = arm_operation("PUT", REG);
        assert_eq!(
            put.operation_name,
            "Microsoft.ContainerRegistry/registries/write"
        );
        assert_eq!(put.resource_id, REG);
        assert!(put.is_change);
        let lower = arm_operation("patch", &REG.to_ascii_lowercase());
        assert_eq!(
            lower.operation_name,
            "Microsoft.ContainerRegistry/registries/write"
        );
        assert_eq!(
            lower.resource_id,
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/app"
        );
        assert_eq!(
            arm_operation("DELETE", REG).operation_name,
            "Microsoft.ContainerRegistry/registries/delete"
        );
        let creds = arm_operation("POST", &format!("{REG}/listcredentials"));
        assert_eq!(
            creds.operation_name,
            "Microsoft.ContainerRegistry/registries/listCredentials/action"
        );
        assert_eq!(creds.resource_id, REG);
        assert!(creds.is_change);
        let conn = arm_operation("PUT", &format!("{REG}/privateEndpointConnections/app.x1"));
        assert_eq!(
            conn.operation_name,
            "Microsoft.ContainerRegistry/registries/privateEndpointConnections/write"
        );
        assert_eq!(
            conn.resource_id,
            format!("{REG}/privateEndpointConnections/app.x1")
        );
        let get = arm_operation("GET", REG);
        assert!(!get.is_change);
        assert_eq!(
            get.operation_name,
            "Microsoft.ContainerRegistry/registries/read"
        );
        let check = arm_operation(
            "POST",
            "/subscriptions/s1/providers/Microsoft.ContainerRegistry/checkNameAvailability",
        );
        assert!(!check.is_change);
    }

    #[test]
    fn endpoints_and_groups() {
        let pe = arm_operation(
            "DELETE",
            "/subscriptions/s1/resourceGroups/rg/providers/microsoft.network/privateendpoints/pe1",
        );
        assert_eq!(
            pe.operation_name,
            "Microsoft.Network/privateEndpoints/delete"
        );
        assert_eq!(
            pe.resource_id,
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Network/privateEndpoints/pe1"
        );
        let rg = arm_operation("PUT", "/subscriptions/s1/resourcegroups/rg2");
        assert_eq!(
            rg.operation_name,
            "Microsoft.Resources/subscriptions/resourceGroups/write"
        );
        assert_eq!(rg.resource_id, "/subscriptions/s1/resourceGroups/rg2");
    }

    #[test]
    fn operation_names_are_read_in_any_case() {
        assert_eq!(
            canonical_operation_name("microsoft.containerregistry/REGISTRIES/Write").as_deref(),
            Some("Microsoft.ContainerRegistry/registries/write")
        );
        assert_eq!(
            canonical_operation_name(
                "Microsoft.ContainerRegistry/registries/listcredentials/action"
            )
            .as_deref(),
            Some("Microsoft.ContainerRegistry/registries/listCredentials/action")
        );
        assert_eq!(
            canonical_operation_name("microsoft.authorization/roleassignments/write").as_deref(),
            Some("Microsoft.Authorization/roleAssignments/write")
        );
        for bad in [
            "Push",
            "Microsoft.ContainerRegistry/write",
            "Microsoft.Storage/storageAccounts/write",
            "Microsoft.ContainerRegistry/registries/erase",
            "Microsoft.ContainerRegistry//write",
            "Microsoft.ContainerRegistry/regi stries/write",
        ] {
            assert_eq!(canonical_operation_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn registry_is_read_from_the_resource_id() {
        assert_eq!(registry_of(REG), Some("app".into()));
        assert_eq!(
            registry_of(&format!("{REG}/privateEndpointConnections/c")),
            Some("app".into())
        );
        assert_eq!(registry_of("/subscriptions/s1/resourceGroups/rg"), None);
    }

    #[test]
    fn status_level_and_sanitizing() {
        let e = ActivityEvent::new("id".into(), "t".into(), "op", REG, "c\n", "1.2.3.4", "corr")
            .failed(403, "AuthorizationFailed", "no\x1b[2J");
        assert_eq!(e.status, ActivityStatus::Failed);
        assert_eq!(e.sub_status, "Forbidden");
        assert_eq!(e.level, "Warning");
        let s = e.sanitized();
        assert_eq!(s.caller, "c\\n");
        assert_eq!(s.properties["error"]["message"], "no\\x1b[2J");
        let mut ok = ActivityEvent::new("id".into(), "t".into(), "op", REG, "c", "ip", "corr");
        ok.set_http_status(202);
        assert_eq!(ok.status, ActivityStatus::Started);
    }
}
