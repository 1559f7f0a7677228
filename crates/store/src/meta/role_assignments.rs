//! Role assignments: a principal, a built-in role and a scope (the subscription, a resource group or a registry),
//! named by a GUID as ARM names them. One assignment per principal, role and scope; one at a registry scope exists
//! only while the registry does (it is made only for a registry that exists and goes when the registry goes).

use super::activity::insert_activity;
use super::MetadataStore;
use crate::error::{Result, StoreError};
use crate::meta::Conn;
use crate::meta::DbRow;
use moat_model::activity::ActivityEvent;
use moat_model::rbac::{Role, RoleScope};
use sqlx::Row;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleAssignmentRow {
    /// The assignment's name (a GUID).
    pub id: String,
    pub principal_id: String,
    pub role: String,
    /// The ARM scope, as stored (`/subscriptions/…[/resourceGroups/…[/providers/…/registries/…]]`).
    pub scope: String,
    pub created_at: String,
    /// The principal that made it (`None`: an operator command or an older version).
    pub created_by: Option<String>,
}

/// An assignment to make.
#[derive(Clone, Debug)]
pub struct NewRoleAssignment<'a> {
    /// The name the caller chose (ARM's PUT names it), else a new GUID.
    pub id: Option<&'a str>,
    pub principal_id: &'a str,
    pub role: Role,
    pub scope: &'a RoleScope,
    /// `scope` in ARM's form, as it is stored.
    pub arm_scope: &'a str,
    pub created_by: Option<&'a str>,
}

/// Why an assignment was not made.
#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    #[error("principal {0} does not exist")]
    PrincipalNotFound(String),
    #[error("registry '{name}' does not exist in resource group '{resource_group}'")]
    RegistryNotFound {
        resource_group: String,
        name: String,
    },
    /// The same principal, role and scope are assigned already (under this name).
    #[error("the role assignment already exists ({})", .0.id)]
    Exists(RoleAssignmentRow),
    /// The name is another assignment's.
    #[error("role assignment {} exists with another principal, role or scope", .0.id)]
    NameTaken(RoleAssignmentRow),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for AssignError {
    fn from(e: sqlx::Error) -> AssignError {
        AssignError::Store(e.into())
    }
}

const COLUMNS: &str = "id, principal_id, role, scope, created_at, created_by";

fn from_row(r: DbRow) -> RoleAssignmentRow {
    RoleAssignmentRow {
        id: r.get(0),
        principal_id: r.get(1),
        role: r.get(2),
        scope: r.get(3),
        created_at: r.get(4),
        created_by: r.get(5),
    }
}

/// A principal's assignments, read in the caller's transaction.
pub(crate) async fn of_principal(
    conn: &mut Conn,
    principal_id: &str,
) -> Result<Vec<RoleAssignmentRow>> {
    let q = format!("SELECT {COLUMNS} FROM role_assignments WHERE principal_id = $1 ORDER BY id");
    Ok(sqlx::query(&q)
        .bind(principal_id)
        .fetch_all(conn)
        .await?
        .into_iter()
        .map(from_row)
        .collect())
}

/// Whether `scope` is the scope of registry `name` in `resource_group` (any case), whatever subscription it names.
fn is_registry_scope(scope: &str, resource_group: &str, name: &str) -> bool {
    let sub = scope
        .trim_matches('/')
        .split('/')
        .nth(1)
        .unwrap_or_default();
    matches!(
        RoleScope::parse(scope, sub),
        Some(RoleScope::Registry { resource_group: rg, name: n })
            if rg.eq_ignore_ascii_case(resource_group) && n.eq_ignore_ascii_case(name)
    )
}

/// Deletes the assignments at a registry's scope (the registry is being deleted in this transaction); returns
/// how many there were.
pub(crate) async fn delete_at_registry(
    conn: &mut Conn,
    resource_group: &str,
    name: &str,
) -> Result<u64> {
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, scope FROM role_assignments")
        .fetch_all(&mut *conn)
        .await?;
    let mut removed = 0;
    for (id, scope) in rows {
        if is_registry_scope(&scope, resource_group, name) {
            sqlx::query("DELETE FROM role_assignments WHERE id = $1")
                .bind(&id)
                .execute(&mut *conn)
                .await?;
            removed += 1;
        }
    }
    Ok(removed)
}

impl MetadataStore {
    /// Makes an assignment after checking, in its transaction, that the principal exists, that a registry scope
    /// names a registry that exists, and that neither the triple nor the name is taken. Asked again with the same
    /// name and triple it returns the assignment it made (`false`: not created now). `activity` makes the record of
    /// the new assignment, written with it.
    pub async fn create_role_assignment(
        &self,
        new: &NewRoleAssignment<'_>,
        activity: impl FnOnce(&RoleAssignmentRow) -> ActivityEvent,
    ) -> Result<(RoleAssignmentRow, bool), AssignError> {
        let mut tx = self.begin_write().await?;
        let principal: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM service_principals WHERE app_id = $1")
                .bind(new.principal_id)
                .fetch_optional(&mut *tx)
                .await?;
        if principal.is_none() {
            return Err(AssignError::PrincipalNotFound(new.principal_id.into()));
        }
        if let RoleScope::Registry {
            resource_group,
            name,
        } = new.scope
        {
            let found: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM registries WHERE lower(name) = lower($1) AND lower(resource_group) = lower($2)",
            )
            .bind(name)
            .bind(resource_group)
            .fetch_optional(&mut *tx)
            .await?;
            if found.is_none() {
                return Err(AssignError::RegistryNotFound {
                    resource_group: resource_group.clone(),
                    name: name.clone(),
                });
            }
        }
        let q = format!(
            "SELECT {COLUMNS} FROM role_assignments WHERE principal_id = $1 AND role = $2 AND lower(scope) = lower($3)"
        );
        let same = sqlx::query(&q)
            .bind(new.principal_id)
            .bind(new.role.as_str())
            .bind(new.arm_scope)
            .fetch_optional(&mut *tx)
            .await?
            .map(from_row);
        let named = match new.id {
            Some(id) => {
                let q =
                    format!("SELECT {COLUMNS} FROM role_assignments WHERE lower(id) = lower($1)");
                sqlx::query(&q)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(from_row)
            }
            None => None,
        };
        match (same, named) {
            (Some(s), Some(n)) if s.id == n.id => return Ok((s, false)),
            (_, Some(n)) => return Err(AssignError::NameTaken(n)),
            (Some(s), None) => return Err(AssignError::Exists(s)),
            (None, None) => {}
        }
        let row = RoleAssignmentRow {
            id: new
                .id
                .map(str::to_ascii_lowercase)
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            principal_id: new.principal_id.into(),
            role: new.role.as_str().into(),
            scope: new.arm_scope.into(),
            created_at: crate::time_fmt::now(),
            created_by: new.created_by.map(str::to_string),
        };
        sqlx::query(
            "INSERT INTO role_assignments(id, principal_id, role, scope, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&row.id)
        .bind(&row.principal_id)
        .bind(&row.role)
        .bind(&row.scope)
        .bind(&row.created_at)
        .bind(&row.created_by)
        .execute(&mut *tx)
        .await?;
        let mut activity = activity(&row);
        activity.set_property(
            "after",
            serde_json::json!({"roleAssignment": row.id, "principalId": row.principal_id, "role": row.role, "scope": row.scope}),
        );
        insert_activity(&mut tx, &activity).await?;
        tx.commit().await?;
        Ok((row, true))
    }

    /// A principal's assignments.
    pub async fn role_assignments(&self, principal_id: &str) -> Result<Vec<RoleAssignmentRow>> {
        of_principal(&mut *self.reader.acquire().await?, principal_id).await
    }

    /// Every assignment, by scope then name (callers filter with the scope rules of `moat_model::rbac`).
    pub async fn all_role_assignments(&self) -> Result<Vec<RoleAssignmentRow>> {
        let q = format!("SELECT {COLUMNS} FROM role_assignments ORDER BY scope, id");
        Ok(sqlx::query(&q)
            .fetch_all(&self.reader)
            .await?
            .into_iter()
            .map(from_row)
            .collect())
    }

    pub async fn role_assignment(&self, id: &str) -> Result<Option<RoleAssignmentRow>> {
        let q = format!("SELECT {COLUMNS} FROM role_assignments WHERE lower(id) = lower($1)");
        Ok(sqlx::query(&q)
            .bind(id)
            .fetch_optional(&self.reader)
            .await?
            .map(from_row))
    }

    /// Deletes an assignment with `activity`; `None` when it did not exist.
    pub async fn delete_role_assignment(
        &self,
        id: &str,
        activity: &ActivityEvent,
    ) -> Result<Option<RoleAssignmentRow>> {
        let mut tx = self.begin_write().await?;
        let q = format!("SELECT {COLUMNS} FROM role_assignments WHERE lower(id) = lower($1)");
        let Some(row) = sqlx::query(&q)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .map(from_row)
        else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM role_assignments WHERE id = $1")
            .bind(&row.id)
            .execute(&mut *tx)
            .await?;
        let mut activity = activity.clone();
        activity.set_property(
            "before",
            serde_json::json!({"roleAssignment": row.id, "principalId": row.principal_id, "role": row.role, "scope": row.scope}),
        );
        insert_activity(&mut tx, &activity).await?;
        tx.commit().await?;
        Ok(Some(row))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn registry_scopes_match_in_any_case() {
        let s = "/subscriptions/S/resourceGroups/RG1/providers/Microsoft.ContainerRegistry/registries/app";
        assert!(super::is_registry_scope(s, "rg1", "APP"));
        assert!(!super::is_registry_scope(s, "rg2", "app"));
        assert!(!super::is_registry_scope(s, "rg1", "app2"));
        assert!(!super::is_registry_scope(
            "/subscriptions/S/resourceGroups/rg1",
            "rg1",
            "app"
        ));
    }
}
