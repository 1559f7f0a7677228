//! Azure's built-in role definitions for the roles Moat honours, by the GUIDs Azure gives them, so that scripts
//! and `az role assignment create --role AcrPush` (which looks the name up in `roleDefinitions`) name the same
//! role here and in Azure; and the `$filter`s ARM takes when listing role assignments and definitions.

use crate::rbac::{Role, RoleScope};

impl Role {
    /// The name (a GUID) of Azure's built-in definition of this role.
    pub fn definition_guid(self) -> &'static str {
        match self {
            Role::Owner => "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
            Role::Contributor => "b24988ac-6180-42a0-ab88-20f7382dd24c",
            Role::Reader => "acdd72a7-3385-48ef-bd42-f606fba81ae7",
            Role::AcrPush => "8311e382-0749-4cb8-b61a-304f252e45ec",
            Role::AcrPull => "7f951dda-4ed3-4680-a7ca-43fe172d538d",
            Role::AcrDelete => "c2f4ef07-c644-48eb-af81-4b1b4947fb11",
        }
    }

    /// Azure's description of the role.
    pub fn description(self) -> &'static str {
        match self {
            Role::Owner => "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
            Role::Contributor => "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC, manage assignments in Azure Blueprints, or share image galleries.",
            Role::Reader => "View all resources, but does not allow you to make any changes.",
            Role::AcrPush => "acr push",
            Role::AcrPull => "acr pull",
            Role::AcrDelete => "acr delete",
        }
    }

    /// The definition's `actions` and `notActions`, as Azure lists them.
    pub fn permissions(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Role::Owner => (&["*"], &[]),
            Role::Contributor => (
                &["*"],
                &[
                    "Microsoft.Authorization/*/Delete",
                    "Microsoft.Authorization/*/Write",
                    "Microsoft.Authorization/elevateAccess/Action",
                ],
            ),
            Role::Reader => (&["*/read"], &[]),
            Role::AcrPush => (
                &[
                    "Microsoft.ContainerRegistry/registries/pull/read",
                    "Microsoft.ContainerRegistry/registries/push/write",
                ],
                &[],
            ),
            Role::AcrPull => (&["Microsoft.ContainerRegistry/registries/pull/read"], &[]),
            Role::AcrDelete => (
                &["Microsoft.ContainerRegistry/registries/artifacts/delete"],
                &[],
            ),
        }
    }

    /// Creating and deleting role assignments (`Microsoft.Authorization/roleAssignments/write`): Owner only.
    pub fn can_assign_roles(self) -> bool {
        self == Role::Owner
    }

    /// The role whose definition GUID this is.
    pub fn from_definition_guid(guid: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.definition_guid().eq_ignore_ascii_case(guid))
    }
}

/// A role definition's resource id in subscription `sub`.
pub fn definition_id(sub: &str, role: Role) -> String {
    format!(
        "/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{}",
        role.definition_guid()
    )
}

/// Why a `roleDefinitionId` names no role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    #[error("'{0}' is not a role definition id: use /subscriptions/{{subscription}}/providers/Microsoft.Authorization/roleDefinitions/{{guid}}")]
    Malformed(String),
    #[error("The specified role definition with ID '{0}' does not exist.")]
    Unknown(String),
}

/// The role a `roleDefinitionId` names: `/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/
/// {guid}` (this subscription, any case) or the tenant form `/providers/Microsoft.Authorization/roleDefinitions/
/// {guid}`.
pub fn parse_definition_id(id: &str, sub: &str) -> Result<Role, DefinitionError> {
    let parts: Vec<&str> = id.trim_end_matches('/').split('/').collect();
    let guid = match parts.as_slice() {
        ["", s, this, p, ns, kind, guid]
            if s.eq_ignore_ascii_case("subscriptions") && this.eq_ignore_ascii_case(sub) =>
        {
            (p.eq_ignore_ascii_case("providers")
                && ns.eq_ignore_ascii_case("Microsoft.Authorization")
                && kind.eq_ignore_ascii_case("roleDefinitions"))
            .then_some(*guid)
        }
        ["", p, ns, kind, guid] => (p.eq_ignore_ascii_case("providers")
            && ns.eq_ignore_ascii_case("Microsoft.Authorization")
            && kind.eq_ignore_ascii_case("roleDefinitions"))
        .then_some(*guid),
        _ => None,
    }
    .ok_or_else(|| DefinitionError::Malformed(crate::text::bound(&crate::text::escape(id), 300)))?;
    Role::from_definition_guid(guid).ok_or_else(|| {
        DefinitionError::Unknown(crate::text::bound(&crate::text::escape(guid), 100))
    })
}

/// Which role assignments a list at a scope returns, by ARM's `$filter`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignmentFilter {
    /// `atScope()`: only assignments at the scope or above it (none below).
    pub at_scope: bool,
    /// `principalId eq '…'` or `assignedTo('…')`: only this principal's.
    pub principal: Option<String>,
}

/// Why a `$filter` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("The filter '{0}' is not supported. Supported filters are atScope(), principalId eq '{{id}}', assignedTo('{{id}}') and atScope() and assignedTo('{{id}}').")]
pub struct FilterError(pub String);

/// The quoted value of `name eq 'value'` or `name('value')` (keywords in any case).
fn quoted<'a>(term: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    let t = term.trim();
    let head = t.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let v = t[prefix.len()..].trim_start().strip_suffix(suffix)?;
    let v = v.strip_prefix('\'')?.strip_suffix('\'')?;
    (!v.contains('\'')).then_some(v)
}

impl AssignmentFilter {
    /// Parses ARM's `$filter` for role assignment lists (absent: every assignment at, above and below the scope).
    pub fn parse(filter: Option<&str>) -> Result<AssignmentFilter, FilterError> {
        let mut f = AssignmentFilter {
            at_scope: false,
            principal: None,
        };
        let Some(text) = filter.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(f);
        };
        let refuse = || FilterError(crate::text::bound(&crate::text::escape(text), 300));
        let lower = text.to_ascii_lowercase();
        let terms: Vec<&str> = match lower.find(" and ") {
            Some(i) => vec![&text[..i], &text[i + 5..]],
            None => vec![text],
        };
        for term in terms {
            let t = term.trim();
            if t.eq_ignore_ascii_case("atScope()") && !f.at_scope {
                f.at_scope = true;
            } else if let Some(p) =
                quoted(t, "principalId eq", "").or_else(|| quoted(t, "assignedTo(", ")"))
            {
                if f.principal.is_some() {
                    return Err(refuse());
                }
                f.principal = Some(p.to_ascii_lowercase());
            } else {
                return Err(refuse());
            }
        }
        Ok(f)
    }

    /// Whether an assignment of `principal` at `assigned` is listed at `at`.
    pub fn lists(&self, at: &RoleScope, assigned: &RoleScope, principal: &str) -> bool {
        let above = assigned.covers_scope(at);
        let below = at.covers_scope(assigned);
        (above || (below && !self.at_scope))
            && self
                .principal
                .as_ref()
                .is_none_or(|p| p.eq_ignore_ascii_case(principal))
    }
}

/// ARM's `$filter` for role definition lists: `roleName eq '…'` (any case), else every definition.
pub fn parse_definition_filter(filter: Option<&str>) -> Result<Option<String>, FilterError> {
    let Some(text) = filter.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    quoted(text, "roleName eq", "")
        .map(|n| Some(n.to_string()))
        .ok_or_else(|| {
            FilterError(format!(
                "{} (role definitions take roleName eq '{{name}}')",
                crate::text::bound(&crate::text::escape(text), 300)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "00000000-0000-0000-0000-000000000001";

    #[test]
    fn definitions_round_trip_by_guid_in_every_spelling() {
        for role in Role::ALL {
            let id = definition_id(SUB, role);
            assert_eq!(parse_definition_id(&id, SUB), Ok(role));
            assert_eq!(parse_definition_id(&id.to_ascii_uppercase(), SUB), Ok(role));
            let tenant = format!(
                "/providers/Microsoft.Authorization/roleDefinitions/{}",
                role.definition_guid()
            );
            assert_eq!(parse_definition_id(&tenant, SUB), Ok(role));
        }
        assert_eq!(
            Role::parse("acrpush").map(Role::definition_guid),
            Some("8311e382-0749-4cb8-b61a-304f252e45ec")
        );
        let other = definition_id("another-sub", Role::Owner);
        assert!(matches!(
            parse_definition_id(&other, SUB),
            Err(DefinitionError::Malformed(_))
        ));
        let unknown = format!(
            "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/00000000-0000-0000-0000-00000000dead"
        );
        assert!(matches!(
            parse_definition_id(&unknown, SUB),
            Err(DefinitionError::Unknown(_))
        ));
        assert!(parse_definition_id("AcrPush", SUB).is_err());
        assert!(Role::Owner.can_assign_roles() && !Role::Contributor.can_assign_roles());
    }

    #[test]
    fn filters_parse_as_arm_writes_them() {
        let f = |s: &str| AssignmentFilter::parse(Some(s));
        assert_eq!(
            f("atScope()"),
            Ok(AssignmentFilter {
                at_scope: true,
                principal: None
            })
        );
        let p = Some("abc".to_string());
        for s in [
            "principalId eq 'ABC'",
            "principalid EQ 'abc'",
            "assignedTo('abc')",
        ] {
            assert_eq!(
                f(s),
                Ok(AssignmentFilter {
                    at_scope: false,
                    principal: p.clone()
                }),
                "{s}"
            );
        }
        assert_eq!(
            f("atScope() and assignedTo('abc')"),
            Ok(AssignmentFilter {
                at_scope: true,
                principal: p.clone()
            })
        );
        for bad in [
            "roleName eq 'x'",
            "principalId eq abc",
            "principalId eq 'a'b'",
            "atScope() and atScope()",
            "principalId eq 'a' and assignedTo('b')",
            "atScope() or principalId eq 'a'",
        ] {
            assert!(f(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_definition_filter(Some("roleName eq 'AcrPush'")),
            Ok(Some("AcrPush".into()))
        );
        assert!(parse_definition_filter(Some("type eq 'BuiltInRole'")).is_err());
        assert_eq!(parse_definition_filter(None), Ok(None));
    }

    #[test]
    fn lists_take_the_scope_above_and_below_unless_at_scope() {
        let sub = RoleScope::Subscription;
        let rg = RoleScope::ResourceGroup("RG1".into());
        let reg = RoleScope::Registry {
            resource_group: "rg1".into(),
            name: "app".into(),
        };
        let other = RoleScope::Registry {
            resource_group: "rg2".into(),
            name: "app".into(),
        };
        let all = AssignmentFilter::parse(None).unwrap();
        let at = AssignmentFilter::parse(Some("atScope()")).unwrap();
        // At the resource group: the subscription's and its own (above and at), its registries' (below).
        assert!(all.lists(&rg, &sub, "p") && all.lists(&rg, &rg, "p") && all.lists(&rg, &reg, "p"));
        assert!(!all.lists(&rg, &other, "p"));
        assert!(at.lists(&rg, &sub, "p") && at.lists(&rg, &rg, "p") && !at.lists(&rg, &reg, "p"));
        let mine = AssignmentFilter::parse(Some("principalId eq 'P'")).unwrap();
        assert!(mine.lists(&reg, &sub, "p") && !mine.lists(&reg, &sub, "q"));
    }
}
