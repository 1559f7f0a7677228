//! Docker-token access scopes (`repository:<name>:<actions>`, `registry:catalog:*`) and the access a token grants.

use crate::names::RepositoryName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Pull,
    Push,
    Delete,
    MetadataRead,
    MetadataWrite,
    /// ACR's soft delete: listing a repository's deleted manifests and tags (and, on `registry:deleted_catalog`,
    /// the repositories that have some).
    DeletedRead,
    /// ACR's soft delete: restoring a deleted manifest.
    DeletedRestore,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::Pull,
        Action::Push,
        Action::Delete,
        Action::MetadataRead,
        Action::MetadataWrite,
        Action::DeletedRead,
        Action::DeletedRestore,
    ];

    /// Accepts the Docker spellings and ACR's camelCase twins (`metadataRead`), as the az CLI sends both.
    pub fn parse_list(s: &str) -> BTreeSet<Action> {
        let mut out = BTreeSet::new();
        for a in s.split(',') {
            match a.trim() {
                "pull" => {
                    out.insert(Action::Pull);
                }
                "push" => {
                    out.insert(Action::Push);
                }
                "delete" => {
                    out.insert(Action::Delete);
                }
                "metadata_read" | "metadataRead" => {
                    out.insert(Action::MetadataRead);
                }
                "metadata_write" | "metadataWrite" => {
                    out.insert(Action::MetadataWrite);
                }
                "deleted_read" | "deletedRead" => {
                    out.insert(Action::DeletedRead);
                }
                "deleted_restore" | "deletedRestore" => {
                    out.insert(Action::DeletedRestore);
                }
                "*" => out.extend(Action::ALL),
                _ => {}
            }
        }
        out
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::MetadataRead => "metadata_read",
            Action::MetadataWrite => "metadata_write",
            Action::DeletedRead => "deleted_read",
            Action::DeletedRestore => "deleted_restore",
        }
    }
}

/// What a scope names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "name", rename_all = "snake_case")]
pub enum ResourceScope {
    Repository(RepositoryName),
    Catalog,
    /// `registry:deleted_catalog:*` (az acr repository list-deleted): the repositories with deleted artifacts.
    DeletedCatalog,
}

/// One requested scope: a resource and the actions asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeRequest {
    pub resource: ResourceScope,
    pub actions: BTreeSet<Action>,
}

impl ScopeRequest {
    /// Parses `repository:<name>:<actions>` or `registry:catalog:*`. The name may itself hold ':' only in
    /// the host part Docker never sends here, so the last ':' splits name and actions.
    pub fn parse(s: &str) -> Option<ScopeRequest> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        let resource = match kind {
            "repository" | "artifact-repository" => ResourceScope::Repository(name.parse().ok()?),
            "registry" if name == "catalog" => ResourceScope::Catalog,
            "registry" if name == "deleted_catalog" => ResourceScope::DeletedCatalog,
            _ => return None,
        };
        Some(ScopeRequest {
            resource,
            actions: Action::parse_list(actions),
        })
    }

    pub fn to_scope_string(&self) -> String {
        let actions: Vec<&str> = self.actions.iter().map(|a| a.as_str()).collect();
        match &self.resource {
            ResourceScope::Repository(r) => format!("repository:{}:{}", r, actions.join(",")),
            ResourceScope::Catalog => "registry:catalog:*".to_string(),
            ResourceScope::DeletedCatalog => "registry:deleted_catalog:*".to_string(),
        }
    }
}

/// The access a token carries, as in the Docker token spec's `access` claim.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// Actions allowed on every repository of the registry, and on the catalog when `Pull` is among them: what
    /// an identity signing in with its password may do (the admin identity: everything).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub any_repository: BTreeSet<Action>,
    pub grants: Vec<AccessGrant>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessGrant {
    #[serde(flatten)]
    pub resource: ResourceScope,
    pub actions: BTreeSet<Action>,
}

impl Access {
    /// Every action on every repository.
    pub fn everything() -> Access {
        Access {
            any_repository: Action::ALL.into_iter().collect(),
            grants: vec![],
        }
    }

    pub fn allows(&self, resource: &ResourceScope, action: Action) -> bool {
        self.any_repository.contains(&action)
            || self
                .grants
                .iter()
                .any(|g| &g.resource == resource && g.actions.contains(&action))
    }

    /// Whether the token was issued for `resource` at all (even with no action granted on it).
    pub fn mentions(&self, resource: &ResourceScope) -> bool {
        !self.any_repository.is_empty() || self.grants.iter().any(|g| &g.resource == resource)
    }

    pub fn allows_repo(&self, repo: &RepositoryName, action: Action) -> bool {
        self.allows(&ResourceScope::Repository(repo.clone()), action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scopes() {
        let s = ScopeRequest::parse("repository:library/alpine:pull,push").unwrap();
        assert_eq!(s.actions, BTreeSet::from([Action::Pull, Action::Push]));
        assert_eq!(s.to_scope_string(), "repository:library/alpine:pull,push");
        let c = ScopeRequest::parse("registry:catalog:*").unwrap();
        assert_eq!(c.resource, ResourceScope::Catalog);
        assert_eq!(
            ScopeRequest::parse("repository:a:*").unwrap().actions.len(),
            7
        );
        let d = ScopeRequest::parse("repository:a:deleted_read,deleted_restore").unwrap();
        assert_eq!(
            d.actions,
            BTreeSet::from([Action::DeletedRead, Action::DeletedRestore])
        );
        assert_eq!(
            ScopeRequest::parse("registry:deleted_catalog:*")
                .unwrap()
                .resource,
            ResourceScope::DeletedCatalog
        );
        assert!(ScopeRequest::parse("repository:a:metadataRead")
            .unwrap()
            .actions
            .contains(&Action::MetadataRead));
        assert!(ScopeRequest::parse("repository:UPPER:pull").is_none());
        assert!(ScopeRequest::parse("nonsense").is_none());
    }

    #[test]
    fn access_checks_exact_resource() {
        let repo: RepositoryName = "a/b".parse().unwrap();
        let access = Access {
            any_repository: Default::default(),
            grants: vec![AccessGrant {
                resource: ResourceScope::Repository(repo.clone()),
                actions: BTreeSet::from([Action::Pull]),
            }],
        };
        assert!(access.allows_repo(&repo, Action::Pull));
        assert!(!access.allows_repo(&repo, Action::Push));
        assert!(!access.allows_repo(&"a".parse().unwrap(), Action::Pull));
        let json = serde_json::to_string(&access).unwrap();
        assert!(
            json.contains(r#""type":"repository","name":"a/b""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Access>(&json).unwrap(), access);
    }
}
