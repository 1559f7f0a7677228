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

/// What a data-plane request does: one name per kind of request, whatever its outcome. A request gets its
/// operation from its route before anything is decided, so a push refused by the network, by a missing
/// permission or by the gate is recorded as `Push`, exactly like a push that succeeded, and
/// `moat audit --operation Push` finds them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A sign-in: a token request, or the `/v2/` check clients make before it.
    Login,
    Push,
    Pull,
    /// A blob linked from another repository of the same registry.
    Mount,
    /// A manifest or blob deleted by digest.
    Delete,
    /// A tag removed.
    Untag,
    DeleteRepository,
    ListRepositories,
    ListTags,
    ListReferrers,
    ListManifests,
    ShowRepository,
    ShowTag,
    ShowManifest,
    /// ACR's changeable attributes (image locks); refused today, recorded when refused by the network.
    UpdateAttributes,
    /// An image imported into this registry (management API).
    Import,
    /// An image leaving this registry for another one (an import from it).
    Export,
    /// Soft delete: deleted repositories, manifests or tags listed (`/acr/v1/_deleted/...`).
    ListDeleted,
    /// Soft delete: a deleted manifest restored under a tag.
    Restore,
}

impl Operation {
    pub const ALL: [Operation; 19] = [
        Operation::Login,
        Operation::Push,
        Operation::Pull,
        Operation::Mount,
        Operation::Delete,
        Operation::Untag,
        Operation::DeleteRepository,
        Operation::ListRepositories,
        Operation::ListTags,
        Operation::ListReferrers,
        Operation::ListManifests,
        Operation::ShowRepository,
        Operation::ShowTag,
        Operation::ShowManifest,
        Operation::UpdateAttributes,
        Operation::Import,
        Operation::Export,
        Operation::ListDeleted,
        Operation::Restore,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Login => "Login",
            Operation::Push => "Push",
            Operation::Pull => "Pull",
            Operation::Mount => "Mount",
            Operation::Delete => "Delete",
            Operation::Untag => "Untag",
            Operation::DeleteRepository => "DeleteRepository",
            Operation::ListRepositories => "ListRepositories",
            Operation::ListTags => "ListTags",
            Operation::ListReferrers => "ListReferrers",
            Operation::ListManifests => "ListManifests",
            Operation::ShowRepository => "ShowRepository",
            Operation::ShowTag => "ShowTag",
            Operation::ShowManifest => "ShowManifest",
            Operation::UpdateAttributes => "UpdateAttributes",
            Operation::Import => "Import",
            Operation::Export => "Export",
            Operation::ListDeleted => "ListDeleted",
            Operation::Restore => "Restore",
        }
    }

    /// Reads an operation name in any case (`push`, `PUSH`, `Push`).
    pub fn parse(s: &str) -> Option<Operation> {
        Operation::ALL
            .into_iter()
            .find(|o| o.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// The ACR log table the event belongs to.
    pub fn category(self) -> Category {
        match self {
            Operation::Login => Category::ContainerRegistryLoginEvents,
            _ => Category::ContainerRegistryRepositoryEvents,
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event's outcome, as ACR's `ResultType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResultType {
    Success,
    Failure,
    /// Refused by a rule: the network, a missing permission, the egress gate.
    Denied,
}

impl ResultType {
    pub const ALL: [ResultType; 3] = [ResultType::Success, ResultType::Failure, ResultType::Denied];

    pub fn as_str(self) -> &'static str {
        match self {
            ResultType::Success => "Success",
            ResultType::Failure => "Failure",
            ResultType::Denied => "Denied",
        }
    }

    pub fn parse(s: &str) -> Option<ResultType> {
        ResultType::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// The outcome of a request answered with `status`.
    pub fn of_status(status: u16) -> ResultType {
        if status < 400 {
            ResultType::Success
        } else {
            ResultType::Failure
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_parse_in_any_case_and_round_trip() {
        for op in Operation::ALL {
            assert_eq!(Operation::parse(op.as_str()), Some(op));
            assert_eq!(
                Operation::parse(&op.as_str().to_ascii_lowercase()),
                Some(op)
            );
            assert_eq!(
                Operation::parse(&op.as_str().to_ascii_uppercase()),
                Some(op)
            );
        }
        assert_eq!(Operation::parse("Connect"), None);
        assert_eq!(
            Operation::Login.category(),
            Category::ContainerRegistryLoginEvents
        );
        assert_eq!(
            Operation::Push.category(),
            Category::ContainerRegistryRepositoryEvents
        );
        for r in ResultType::ALL {
            assert_eq!(ResultType::parse(&r.as_str().to_ascii_lowercase()), Some(r));
        }
        assert_eq!(ResultType::of_status(201), ResultType::Success);
        assert_eq!(ResultType::of_status(404), ResultType::Failure);
    }
}
