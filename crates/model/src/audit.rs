//! Audit events, shaped after ACR's `ContainerRegistryRepositoryEvents` and `ContainerRegistryLoginEvents`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Category {
    ContainerRegistryRepositoryEvents,
    ContainerRegistryLoginEvents,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::ContainerRegistryRepositoryEvents => "ContainerRegistryRepositoryEvents",
            Category::ContainerRegistryLoginEvents => "ContainerRegistryLoginEvents",
        }
    }
}

/// One audit record. Field names follow ACR's log columns so that queries written for Log Analytics read the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AuditEvent {
    pub time_generated: String,
    pub category: String,
    pub operation_name: String,
    pub registry: String,
    pub login_server: String,
    pub repository: Option<String>,
    pub tag: Option<String>,
    pub digest: Option<String>,
    pub media_type: Option<String>,
    pub size: Option<i64>,
    pub identity: Option<String>,
    pub caller_ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub duration_ms: Option<i64>,
    /// `Success`, `Failure` or `Denied`.
    pub result_type: String,
    /// The HTTP status as a string, plus a reason for denials, as ACR writes it.
    pub result_description: String,
    pub correlation_id: Option<String>,
    /// The endpoint the request came through: `public`, `privateEndpoint/<name>` or `dataEndpoint` (Moat's own
    /// column: a firewall investigation starts from it).
    pub endpoint: Option<String>,
}

impl AuditEvent {
    /// The form in which the event is stored: every field that can carry client input (result description,
    /// user agent, identity, repository and tag as given, …) bounded and escaped (see [`crate::text`]).
    pub fn sanitized(&self) -> AuditEvent {
        use crate::text::stored;
        let opt = |v: &Option<String>| v.as_deref().map(stored);
        AuditEvent {
            time_generated: stored(&self.time_generated),
            category: stored(&self.category),
            operation_name: stored(&self.operation_name),
            registry: stored(&self.registry),
            login_server: stored(&self.login_server),
            repository: opt(&self.repository),
            tag: opt(&self.tag),
            digest: opt(&self.digest),
            media_type: opt(&self.media_type),
            size: self.size,
            identity: opt(&self.identity),
            caller_ip_address: opt(&self.caller_ip_address),
            user_agent: opt(&self.user_agent),
            duration_ms: self.duration_ms,
            result_type: stored(&self.result_type),
            result_description: stored(&self.result_description),
            correlation_id: opt(&self.correlation_id),
            endpoint: opt(&self.endpoint),
        }
    }
}
