//! `moat role assignment create|list|delete`: role assignments on the data directory, as `az role assignment`
//! makes them over the management API (the same store operation, the same rules: a registry scope names a
//! registry that exists, one assignment per principal, role and scope), recorded in the activity log.

use crate::{emit, Common, Output};
use anyhow::bail;
use clap::{Args, Subcommand};
use moat_model::rbac::{assignment_id, Role, RoleScope};
use moat_model::role_definitions::definition_id;
use moat_server::arm::activity::{local_event, operator};
use moat_server::listener::cloud_ids;
use moat_server::operator::DataDir;
use moat_store::meta::{AssignError, NewRoleAssignment, RoleAssignmentRow};
use serde_json::json;

#[derive(Subcommand)]
pub enum RoleCommand {
    /// Role assignments: a principal, a role and a scope.
    Assignment {
        #[command(subcommand)]
        command: AssignmentCommand,
    },
}

#[derive(Subcommand)]
pub enum AssignmentCommand {
    /// Assign a role to a service principal at a scope.
    Create {
        /// The service principal: appId (its object id) or display name.
        #[arg(long)]
        assignee: String,
        /// Owner, Contributor, Reader, AcrPush, AcrPull or AcrDelete.
        #[arg(long)]
        role: String,
        /// /subscriptions/SUB, /subscriptions/SUB/resourceGroups/RG or a registry's id.
        #[arg(long)]
        scope: String,
        #[command(flatten)]
        common: Common,
    },
    /// List role assignments (all of them, or those the options select).
    List {
        #[command(flatten)]
        select: Select,
        /// With --scope: also the assignments above it (the subscription's, its resource group's).
        #[arg(long, requires = "scope")]
        include_inherited: bool,
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
        #[command(flatten)]
        common: Common,
    },
    /// Delete role assignments: by id, or those the options select (at least one is needed).
    Delete {
        /// Assignment ids (`{scope}/providers/Microsoft.Authorization/roleAssignments/{name}`), as `list -o json`
        /// prints them.
        #[arg(long, num_args = 1.., conflicts_with_all = ["assignee", "role", "scope"])]
        ids: Vec<String>,
        #[command(flatten)]
        select: Select,
        #[command(flatten)]
        common: Common,
    },
}

/// What `list` and `delete` select, as az's options do.
#[derive(Args)]
pub struct Select {
    /// Only this service principal's (appId or display name).
    #[arg(long)]
    assignee: Option<String>,
    /// Only this role's.
    #[arg(long)]
    role: Option<String>,
    /// Only those at exactly this scope.
    #[arg(long)]
    scope: Option<String>,
}

pub async fn run(command: RoleCommand) -> anyhow::Result<()> {
    let RoleCommand::Assignment { command } = command;
    match command {
        AssignmentCommand::Create {
            assignee,
            role,
            scope,
            common,
        } => create(assignee, role, scope, common).await,
        AssignmentCommand::List {
            select,
            include_inherited,
            output,
            common,
        } => list(select, include_inherited, output, common).await,
        AssignmentCommand::Delete {
            ids,
            select,
            common,
        } => delete(ids, select, common).await,
    }
}

/// An assignment as `az role assignment` prints one.
fn assignment_json(sub: &str, a: &RoleAssignmentRow, name: Option<&str>) -> serde_json::Value {
    json!({
        "id": assignment_id(&a.scope, &a.id),
        "name": a.id,
        "type": "Microsoft.Authorization/roleAssignments",
        "principalId": a.principal_id,
        "principalName": name,
        "principalType": "ServicePrincipal",
        "roleDefinitionName": a.role,
        "roleDefinitionId": Role::parse(&a.role).map(|r| definition_id(sub, r)),
        "scope": a.scope,
        "createdOn": a.created_at,
        "createdBy": a.created_by,
    })
}

async fn create(
    assignee: String,
    role: String,
    scope: String,
    common: Common,
) -> anyhow::Result<()> {
    let role = crate::sp::parse_role(&role)?;
    let dd = moat_server::operator::open(crate::config(&common)).await?;
    let sub = cloud_ids(&dd.meta).await?.subscription_id;
    let scope = crate::sp::parse_scope(&scope, &sub)?;
    let sp = crate::sp::find(&dd.meta, &assignee).await?;
    let arm_scope = scope.to_arm(&sub);
    let new = NewRoleAssignment {
        id: None,
        principal_id: &sp.app_id,
        role,
        scope: &scope,
        arm_scope: &arm_scope,
        created_by: None,
    };
    let record = |a: &RoleAssignmentRow| {
        local_event(
            &operator(),
            "Microsoft.Authorization/roleAssignments/write",
            &assignment_id(&a.scope, &a.id),
        )
    };
    let row = match dd.meta.create_role_assignment(&new, record).await {
        Ok((row, _)) => row,
        // As az does: assigning what is assigned already answers the existing assignment.
        Err(AssignError::Exists(row)) => row,
        Err(AssignError::RegistryNotFound {
            resource_group,
            name,
        }) => bail!("registry '{name}' does not exist in resource group '{resource_group}': `moat registry list` shows the registries"),
        Err(e) => return Err(e.into()),
    };
    emit(format_args!(
        "{}",
        serde_json::to_string_pretty(&assignment_json(&sub, &row, Some(&sp.display_name)))?
    ));
    Ok(())
}

/// The assignments `select` names (az's rules: `--scope` is exactly that scope unless `inherited`, which adds
/// those above it).
async fn selected(
    dd: &DataDir,
    sub: &str,
    select: &Select,
    inherited: bool,
) -> anyhow::Result<Vec<RoleAssignmentRow>> {
    let principal = match &select.assignee {
        Some(a) => Some(crate::sp::find(&dd.meta, a).await?.app_id),
        None => None,
    };
    let role = select
        .role
        .as_deref()
        .map(crate::sp::parse_role)
        .transpose()?;
    let scope = select
        .scope
        .as_deref()
        .map(|s| crate::sp::parse_scope(s, sub))
        .transpose()?;
    Ok(dd
        .meta
        .all_role_assignments()
        .await?
        .into_iter()
        .filter(|a| principal.as_ref().is_none_or(|p| *p == a.principal_id))
        .filter(|a| role.is_none_or(|r| r.as_str() == a.role))
        .filter(|a| {
            let Some(at) = &scope else { return true };
            RoleScope::parse(&a.scope, sub).is_some_and(|s| {
                (s.covers_scope(at) && at.covers_scope(&s)) || (inherited && s.covers_scope(at))
            })
        })
        .collect())
}

async fn list(
    select: Select,
    include_inherited: bool,
    output: Output,
    common: Common,
) -> anyhow::Result<()> {
    let dd = moat_server::operator::open(crate::config(&common)).await?;
    let sub = cloud_ids(&dd.meta).await?.subscription_id;
    let rows = selected(&dd, &sub, &select, include_inherited).await?;
    let names: std::collections::HashMap<String, String> = dd
        .meta
        .service_principals()
        .await?
        .into_iter()
        .map(|sp| (sp.app_id, sp.display_name))
        .collect();
    match output {
        Output::Json => {
            for a in &rows {
                let name = names.get(&a.principal_id).map(String::as_str);
                emit(format_args!("{}", assignment_json(&sub, a, name)));
            }
        }
        Output::Table => {
            let cells: Vec<[String; 5]> = rows
                .iter()
                .map(|a| {
                    [
                        a.id.clone(),
                        a.principal_id.clone(),
                        names.get(&a.principal_id).cloned().unwrap_or_default(),
                        a.role.clone(),
                        crate::sp::short_scope(&a.scope),
                    ]
                })
                .collect();
            crate::table::print(
                ["NAME", "PRINCIPAL", "DISPLAY NAME", "ROLE", "SCOPE"],
                &cells,
            );
        }
    }
    Ok(())
}

/// The name of an assignment id (`…/providers/Microsoft.Authorization/roleAssignments/{name}`).
fn name_of(id: &str) -> anyhow::Result<&str> {
    let lower = id.to_ascii_lowercase();
    match lower.rfind("/providers/microsoft.authorization/roleassignments/") {
        Some(i) => Ok(&id[i + "/providers/microsoft.authorization/roleassignments/".len()..]),
        None => bail!(
            "'{}' is not a role assignment id: use {{scope}}/providers/Microsoft.Authorization/roleAssignments/{{name}}, as `moat role assignment list -o json` prints it",
            moat_model::text::escape(id)
        ),
    }
}

async fn delete(ids: Vec<String>, select: Select, common: Common) -> anyhow::Result<()> {
    if ids.is_empty()
        && select.assignee.is_none()
        && select.role.is_none()
        && select.scope.is_none()
    {
        bail!("say which assignments to delete: --ids, or any of --assignee, --role, --scope");
    }
    // Every id is checked before anything is deleted.
    let names = ids
        .iter()
        .map(|i| name_of(i))
        .collect::<Result<Vec<_>, _>>()?;
    let dd = moat_server::operator::open(crate::config(&common)).await?;
    let sub = cloud_ids(&dd.meta).await?.subscription_id;
    let rows = if ids.is_empty() {
        selected(&dd, &sub, &select, false).await?
    } else {
        let mut rows = Vec::new();
        for (id, name) in ids.iter().zip(names) {
            match dd.meta.role_assignment(name).await? {
                Some(a) if assignment_id(&a.scope, &a.id).eq_ignore_ascii_case(id) => rows.push(a),
                _ => bail!(
                    "no role assignment '{}': `moat role assignment list -o json` prints their ids",
                    moat_model::text::escape(id)
                ),
            }
        }
        rows
    };
    if rows.is_empty() {
        bail!(
            "no matched assignments were found to delete: `moat role assignment list` shows them"
        );
    }
    for a in rows {
        let record = local_event(
            &operator(),
            "Microsoft.Authorization/roleAssignments/delete",
            &assignment_id(&a.scope, &a.id),
        );
        dd.meta.delete_role_assignment(&a.id, &record).await?;
    }
    Ok(())
}
