//! `moat sp …`: service principals, as `az ad sp` has them. They sign in to the management API (client
//! credentials) and to the data plane (`docker login` with appId and password); their role assignments decide
//! what they may do.

use crate::{emit, Common, Output};
use anyhow::{bail, Context};
use clap::Subcommand;
use moat_model::rbac::{assignment_id, Role, RoleScope};
use moat_server::arm::activity::{local_event, operator};
use moat_server::listener::cloud_ids;
use moat_store::meta::{NewRoleAssignment, RoleAssignmentRow, ServicePrincipal};
use moat_store::MetadataStore;

#[derive(Subcommand)]
pub enum SpCommand {
    /// Create a service principal and print its credentials (shown once) as `az ad sp create-for-rbac` does.
    Create {
        #[arg(long, short)]
        name: String,
        /// Owner, Contributor, Reader, AcrPush, AcrPull or AcrDelete.
        #[arg(long)]
        role: Option<String>,
        /// ARM scope of the role: the subscription (default), a resource group or a registry id.
        #[arg(long, alias = "scopes")]
        scope: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// List service principals with their role assignments.
    List {
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
        #[command(flatten)]
        common: Common,
    },
    /// Show one service principal (by appId or display name) with its role assignments, as JSON.
    Show {
        /// The principal's appId (its object id in Moat) or display name.
        #[arg(long)]
        id: String,
        #[command(flatten)]
        common: Common,
    },
    /// Replace a principal's password and print the new one (shown once), as `az ad sp credential reset` does.
    /// Every token issued before is refused from now on: registry tokens, refresh tokens and Entra tokens.
    #[command(alias = "credential-reset")]
    ResetCredentials {
        #[arg(long)]
        id: String,
        #[command(flatten)]
        common: Common,
    },
    /// Delete a principal with its role assignments; its tokens are refused from now on.
    Delete {
        #[arg(long)]
        id: String,
        #[command(flatten)]
        common: Common,
    },
}

pub async fn run(command: SpCommand) -> anyhow::Result<()> {
    match command {
        SpCommand::Create {
            name,
            role,
            scope,
            common,
        } => create(name, role, scope, common).await,
        SpCommand::List { output, common } => list(output, common).await,
        SpCommand::Show { id, common } => show(id, common).await,
        SpCommand::ResetCredentials { id, common } => reset(id, common).await,
        SpCommand::Delete { id, common } => delete(id, common).await,
    }
}

/// A principal by appId or display name (any case), or an error that lists them.
pub async fn find(meta: &MetadataStore, id: &str) -> anyhow::Result<ServicePrincipal> {
    if let Some(sp) = meta.service_principal(&id.to_ascii_lowercase()).await? {
        return Ok(sp);
    }
    if let Some(sp) = meta.service_principal_named(id).await? {
        return Ok(sp);
    }
    let known: Vec<String> = meta
        .service_principals()
        .await?
        .into_iter()
        .map(|sp| format!("{} ({})", sp.app_id, sp.display_name))
        .collect();
    bail!(
        "no service principal '{}' here: {}",
        moat_model::text::escape(id),
        if known.is_empty() {
            "there are none (moat sp create --name NAME makes one)".to_string()
        } else {
            format!("use an appId or display name of: {}", known.join(", "))
        }
    )
}

/// A scope as a table shows it: `subscription`, `RG` or `RG/REGISTRY`.
pub fn short_scope(scope: &str) -> String {
    let parts: Vec<&str> = scope.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        [_, _] => "subscription".into(),
        [_, _, _, rg] => (*rg).to_string(),
        [_, _, _, rg, _, _, _, name] => format!("{rg}/{name}"),
        _ => scope.to_string(),
    }
}

/// A principal as `moat sp list -o json` and `moat sp show` print it.
fn principal_json(sp: &ServicePrincipal, assignments: &[RoleAssignmentRow]) -> serde_json::Value {
    serde_json::json!({
        "appId": sp.app_id,
        "id": sp.app_id,
        "displayName": sp.display_name,
        "servicePrincipalType": "Application",
        "createdDateTime": sp.created_at,
        "credentialsResetDateTime": sp.credential_changed_at,
        "roleAssignments": assignments.iter().map(|a| serde_json::json!({
            "id": assignment_id(&a.scope, &a.id), "name": a.id, "roleDefinitionName": a.role, "scope": a.scope,
        })).collect::<Vec<_>>(),
    })
}

async fn list(output: Output, common: Common) -> anyhow::Result<()> {
    let dd = moat_server::operator::open(crate::config(&common)).await?;
    let all = dd.meta.all_role_assignments().await?;
    let rows: Vec<(ServicePrincipal, Vec<RoleAssignmentRow>)> = dd
        .meta
        .service_principals()
        .await?
        .into_iter()
        .map(|sp| {
            let mine = all
                .iter()
                .filter(|a| a.principal_id == sp.app_id)
                .cloned()
                .collect();
            (sp, mine)
        })
        .collect();
    match output {
        Output::Json => {
            for (sp, a) in &rows {
                emit(format_args!("{}", principal_json(sp, a)));
            }
        }
        Output::Table => {
            let cells: Vec<[String; 4]> = rows
                .iter()
                .map(|(sp, a)| {
                    let roles: Vec<String> = a
                        .iter()
                        .map(|a| format!("{}@{}", a.role, short_scope(&a.scope)))
                        .collect();
                    [
                        sp.app_id.clone(),
                        sp.display_name.clone(),
                        sp.created_at.clone(),
                        if roles.is_empty() {
                            "-".into()
                        } else {
                            roles.join(", ")
                        },
                    ]
                })
                .collect();
            crate::table::print(["APP ID", "DISPLAY NAME", "CREATED", "ROLES"], &cells);
        }
    }
    Ok(())
}

async fn show(id: String, common: Common) -> anyhow::Result<()> {
    let dd = moat_server::operator::open(crate::config(&common)).await?;
    let sp = find(&dd.meta, &id).await?;
    let a = dd.meta.role_assignments(&sp.app_id).await?;
    emit(format_args!(
        "{}",
        serde_json::to_string_pretty(&principal_json(&sp, &a))?
    ));
    Ok(())
}

async fn reset(id: String, common: Common) -> anyhow::Result<()> {
    let dd = moat_server::operator::open(crate::config(&common)).await?;
    let sp = find(&dd.meta, &id).await?;
    let tenant = cloud_ids(&dd.meta).await?.tenant_id;
    let password = moat_auth::password::generate();
    let record = local_event(
        &operator(),
        "Microsoft.Graph/servicePrincipals/resetCredentials/action",
        &format!("/servicePrincipals/{}", sp.app_id),
    );
    let Some(sp) = dd
        .meta
        .reset_service_principal_secret(&sp.app_id, &moat_auth::password::hash(&password), &record)
        .await?
    else {
        bail!("service principal {} was deleted meanwhile", sp.app_id);
    };
    emit(format_args!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "appId": sp.app_id, "password": password, "tenant": tenant,
        }))?
    ));
    Ok(())
}

async fn delete(id: String, common: Common) -> anyhow::Result<()> {
    let dd = moat_server::operator::open(crate::config(&common)).await?;
    let sp = find(&dd.meta, &id).await?;
    let mut record = local_event(
        &operator(),
        "Microsoft.Graph/servicePrincipals/delete",
        &format!("/servicePrincipals/{}", sp.app_id),
    );
    record.set_property("displayName", sp.display_name.as_str().into());
    if dd
        .meta
        .delete_service_principal(&sp.app_id, &record)
        .await?
        .is_none()
    {
        bail!("service principal {} was deleted meanwhile", sp.app_id);
    }
    Ok(())
}

pub fn parse_role(r: &str) -> anyhow::Result<Role> {
    Role::parse(r).with_context(|| {
        format!("unknown role '{r}': use Owner, Contributor, Reader, AcrPush, AcrPull or AcrDelete")
    })
}

pub fn parse_scope(s: &str, sub: &str) -> anyhow::Result<RoleScope> {
    RoleScope::parse(s, sub).with_context(|| {
        format!("'{s}' is not a scope of subscription {sub}: use /subscriptions/{sub}[/resourceGroups/RG[/providers/Microsoft.ContainerRegistry/registries/NAME]]")
    })
}

async fn create(
    name: String,
    role: Option<String>,
    scope: Option<String>,
    common: Common,
) -> anyhow::Result<()> {
    let role = role.as_deref().map(parse_role).transpose()?;
    if role.is_none() && scope.is_some() {
        bail!("--scope needs --role");
    }
    let dd = moat_server::operator::open(crate::config(&common)).await?;
    let ids = cloud_ids(&dd.meta).await?;
    let scope = match (&role, scope) {
        (Some(_), Some(s)) => Some(parse_scope(&s, &ids.subscription_id)?),
        (Some(_), None) => Some(RoleScope::Subscription),
        (None, _) => None,
    };
    // A registry scope must name a registry: checked before the principal is made, so a refused command
    // leaves nothing behind.
    if let Some(RoleScope::Registry {
        resource_group,
        name: registry,
    }) = &scope
    {
        let found = dd.meta.registry_by_name(registry).await?;
        if !found.is_some_and(|r| r.resource_group.eq_ignore_ascii_case(resource_group)) {
            bail!("registry '{registry}' does not exist in resource group '{resource_group}': create it first or give another --scope");
        }
    }
    let password = moat_auth::password::generate();
    let sp = dd
        .meta
        .create_service_principal(&name, &moat_auth::password::hash(&password), |app_id| {
            let mut e = local_event(
                &operator(),
                "Microsoft.Graph/servicePrincipals/write",
                &format!("/servicePrincipals/{app_id}"),
            );
            e.set_property("displayName", name.as_str().into());
            e
        })
        .await?;
    if let (Some(role), Some(scope)) = (role, scope) {
        let arm_scope = scope.to_arm(&ids.subscription_id);
        dd.meta
            .create_role_assignment(
                &NewRoleAssignment {
                    id: None,
                    principal_id: &sp.app_id,
                    role,
                    scope: &scope,
                    arm_scope: &arm_scope,
                    created_by: None,
                },
                |a| {
                    local_event(
                        &operator(),
                        "Microsoft.Authorization/roleAssignments/write",
                        &assignment_id(&a.scope, &a.id),
                    )
                },
            )
            .await?;
    }
    emit(format_args!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "appId": sp.app_id, "displayName": sp.display_name, "password": password, "tenant": ids.tenant_id,
        }))?
    ));
    Ok(())
}
