//! Azure's built-in roles as Moat honours them, and what each lets a principal do on the management plane and
//! the data plane. Assignments have a scope: the subscription, a resource group, or one registry.

use crate::access::Action;
use std::collections::BTreeSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Owner,
    Contributor,
    Reader,
    AcrPush,
    AcrPull,
    AcrDelete,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Owner,
        Role::Contributor,
        Role::Reader,
        Role::AcrPush,
        Role::AcrPull,
        Role::AcrDelete,
    ];

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "Owner",
            Role::Contributor => "Contributor",
            Role::Reader => "Reader",
            Role::AcrPush => "AcrPush",
            Role::AcrPull => "AcrPull",
            Role::AcrDelete => "AcrDelete",
        }
    }

    /// Reading registries over ARM.
    pub fn can_read_resources(self) -> bool {
        matches!(self, Role::Owner | Role::Contributor | Role::Reader)
    }

    /// Creating, changing and deleting registries over ARM, and reading their admin credentials.
    pub fn can_write_resources(self) -> bool {
        matches!(self, Role::Owner | Role::Contributor)
    }

    /// Data-plane actions the role grants on a registry's repositories.
    pub fn data_actions(self) -> BTreeSet<Action> {
        match self {
            Role::Owner | Role::Contributor => Action::ALL.into_iter().collect(),
            Role::Reader | Role::AcrPull => [Action::Pull, Action::MetadataRead].into(),
            Role::AcrPush => [
                Action::Pull,
                Action::Push,
                Action::MetadataRead,
                Action::MetadataWrite,
            ]
            .into(),
            Role::AcrDelete => [Action::Delete].into(),
        }
    }
}

/// The scope of an assignment, from the widest to the narrowest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoleScope {
    Subscription,
    ResourceGroup(String),
    Registry {
        resource_group: String,
        name: String,
    },
}

impl RoleScope {
    /// Parses an ARM scope (`/subscriptions/S`, `/subscriptions/S/resourceGroups/G`, or a registry id) of
    /// subscription `sub`; a resource group name must be one by ARM's rule.
    pub fn parse(scope: &str, sub: &str) -> Option<RoleScope> {
        let parts: Vec<&str> = scope.trim_matches('/').split('/').collect();
        if parts.len() >= 4 && crate::resource::check_resource_group_name(parts[3]).is_err() {
            return None;
        }
        match parts.as_slice() {
            ["subscriptions", s] if s.eq_ignore_ascii_case(sub) => Some(RoleScope::Subscription),
            ["subscriptions", s, rg_kw, rg]
                if s.eq_ignore_ascii_case(sub) && rg_kw.eq_ignore_ascii_case("resourceGroups") =>
            {
                Some(RoleScope::ResourceGroup(rg.to_string()))
            }
            ["subscriptions", s, rg_kw, rg, p, ns, t, name]
                if s.eq_ignore_ascii_case(sub)
                    && rg_kw.eq_ignore_ascii_case("resourceGroups")
                    && p.eq_ignore_ascii_case("providers")
                    && ns.eq_ignore_ascii_case("Microsoft.ContainerRegistry")
                    && t.eq_ignore_ascii_case("registries") =>
            {
                Some(RoleScope::Registry {
                    resource_group: rg.to_string(),
                    name: name.to_ascii_lowercase(),
                })
            }
            _ => None,
        }
    }

    pub fn to_arm(&self, sub: &str) -> String {
        match self {
            RoleScope::Subscription => format!("/subscriptions/{sub}"),
            RoleScope::ResourceGroup(rg) => format!("/subscriptions/{sub}/resourceGroups/{rg}"),
            RoleScope::Registry {
                resource_group,
                name,
            } => {
                format!("/subscriptions/{sub}/resourceGroups/{resource_group}/providers/Microsoft.ContainerRegistry/registries/{name}")
            }
        }
    }

    /// Whether an assignment at this scope covers a registry in `resource_group` named `name`.
    pub fn covers(&self, resource_group: &str, name: &str) -> bool {
        match self {
            RoleScope::Subscription => true,
            RoleScope::ResourceGroup(rg) => rg.eq_ignore_ascii_case(resource_group),
            RoleScope::Registry {
                resource_group: rg,
                name: n,
            } => rg.eq_ignore_ascii_case(resource_group) && n.eq_ignore_ascii_case(name),
        }
    }

    /// Whether this scope is `other` or above it (the subscription above its groups, a group above its
    /// registries): an assignment here holds there too.
    pub fn covers_scope(&self, other: &RoleScope) -> bool {
        match other {
            RoleScope::Subscription => *self == RoleScope::Subscription,
            RoleScope::ResourceGroup(rg) => self.covers_group(rg),
            RoleScope::Registry {
                resource_group,
                name,
            } => self.covers(resource_group, name),
        }
    }

    /// Whether an assignment at this scope covers a whole resource group (to create registries in it).
    pub fn covers_group(&self, resource_group: &str) -> bool {
        match self {
            RoleScope::Subscription => true,
            RoleScope::ResourceGroup(rg) => rg.eq_ignore_ascii_case(resource_group),
            RoleScope::Registry { .. } => false,
        }
    }
}

/// A role assignment's resource id: an extension resource of its scope.
pub fn assignment_id(scope: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/{name}",
        scope.trim_end_matches('/')
    )
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleAssignment {
    pub role: Role,
    pub scope: RoleScope,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_cover() {
        let sub = "00000000-0000-0000-0000-000000000001";
        let reg = format!("/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.ContainerRegistry/registries/MyReg");
        let s = RoleScope::parse(&reg, sub).unwrap();
        assert!(s.covers("RG1", "myreg"));
        assert!(!s.covers("rg2", "myreg"));
        assert!(!s.covers_group("rg1"));
        assert!(RoleScope::parse(&format!("/subscriptions/{sub}"), sub)
            .unwrap()
            .covers("any", "thing"));
        assert!(
            RoleScope::parse(&format!("/subscriptions/{sub}/resourceGroups/rg1"), sub)
                .unwrap()
                .covers_group("rg1")
        );
        assert!(RoleScope::parse("/subscriptions/other", sub).is_none());
        assert!(
            RoleScope::parse(&format!("/subscriptions/{sub}/resourceGroups/a b"), sub).is_none()
        );
        assert!(
            RoleScope::parse(&format!("/subscriptions/{sub}/resourceGroups/rg."), sub).is_none()
        );
        assert_eq!(Role::parse("acrpull"), Some(Role::AcrPull));
        assert!(!Role::AcrPush.can_read_resources());
        assert!(Role::AcrPush.data_actions().contains(&Action::Push));
        assert!(!Role::AcrPull.data_actions().contains(&Action::Push));
        let rg =
            RoleScope::parse(&format!("/subscriptions/{sub}/resourceGroups/RG1"), sub).unwrap();
        assert!(
            RoleScope::Subscription.covers_scope(&s) && rg.covers_scope(&s) && s.covers_scope(&s)
        );
        assert!(!s.covers_scope(&rg) && !rg.covers_scope(&RoleScope::Subscription));
    }
}
