//! Private endpoints: a listener on an internal network connected to one registry. Only an approved connection
//! makes the listener's traffic private traffic for that registry. The connection's state machine lives here;
//! the rule that a protected registry keeps at least one approved connection lives in [`crate::policy`].

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// `privateLinkServiceConnectionState.status`, as ACR names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConnectionStatus {
    Pending,
    Approved,
    Rejected,
    /// The registry side removed the connection; the endpoint still exists but carries no traffic.
    Disconnected,
}

impl ConnectionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionStatus::Pending => "Pending",
            ConnectionStatus::Approved => "Approved",
            ConnectionStatus::Rejected => "Rejected",
            ConnectionStatus::Disconnected => "Disconnected",
        }
    }

    /// Case-insensitive, as ARM enum values are.
    pub fn parse(s: &str) -> Option<ConnectionStatus> {
        [
            ConnectionStatus::Pending,
            ConnectionStatus::Approved,
            ConnectionStatus::Rejected,
            ConnectionStatus::Disconnected,
        ]
        .into_iter()
        .find(|c| c.as_str().eq_ignore_ascii_case(s))
    }
}

/// One private endpoint and its connection to a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivateEndpoint {
    pub id: String,
    /// The endpoint's own resource name (`Microsoft.Network/privateEndpoints/<name>`).
    pub name: String,
    pub resource_group: String,
    pub registry_id: String,
    /// The connection's name on the registry side: `<registry>.<32 hex>`, as ACR names them.
    pub connection_name: String,
    /// The address the endpoint listens on; its port is the server's.
    pub address: IpAddr,
    pub status: ConnectionStatus,
    pub description: String,
    pub created_at: String,
}

impl PrivateEndpoint {
    pub fn is_approved(&self) -> bool {
        self.status == ConnectionStatus::Approved
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    #[error("A rejected private endpoint connection cannot be approved. Delete the private endpoint and create it again.")]
    RejectedIsFinal,
    #[error("The private endpoint connection is disconnected. Delete the private endpoint and create it again.")]
    DisconnectedIsFinal,
    #[error("A connection's status can be set to Approved or Rejected, not {0}.")]
    NotSettable(&'static str),
}

/// Checks a status change requested on the connection (approve, reject). Setting the current status again only
/// updates the description.
pub fn transition(
    from: ConnectionStatus,
    to: ConnectionStatus,
) -> Result<ConnectionStatus, ConnectionError> {
    use ConnectionStatus::*;
    match (from, to) {
        (f, t) if f == t => Ok(t),
        (Disconnected, _) => Err(ConnectionError::DisconnectedIsFinal),
        (_, Pending) | (_, Disconnected) => Err(ConnectionError::NotSettable(to.as_str())),
        (Rejected, Approved) => Err(ConnectionError::RejectedIsFinal),
        _ => Ok(to),
    }
}

#[cfg(test)]
mod tests {
    use super::ConnectionStatus::*;
    use super::*;

    #[test]
    fn approve_and_reject_from_pending() {
        assert_eq!(transition(Pending, Approved), Ok(Approved));
        assert_eq!(transition(Pending, Rejected), Ok(Rejected));
        assert_eq!(transition(Approved, Rejected), Ok(Rejected));
        assert_eq!(transition(Approved, Approved), Ok(Approved));
    }

    #[test]
    fn rejected_and_disconnected_are_final() {
        assert_eq!(
            transition(Rejected, Approved),
            Err(ConnectionError::RejectedIsFinal)
        );
        assert_eq!(
            transition(Disconnected, Approved),
            Err(ConnectionError::DisconnectedIsFinal)
        );
        assert!(transition(Approved, Pending).is_err());
        assert!(transition(Approved, Disconnected).is_err());
    }

    #[test]
    fn status_names_parse_case_insensitively() {
        assert_eq!(ConnectionStatus::parse("approved"), Some(Approved));
        assert_eq!(ConnectionStatus::parse("Nope"), None);
    }
}
