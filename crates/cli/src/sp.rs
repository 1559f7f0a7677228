//! `moat sp …`: service principals, as `az ad sp` has them. They sign in to the management API (client
//! credentials) and to the data plane (`docker login` with appId and password); their role assignments decide
//! what they may do.

use crate::emit;
use crate::Common;
use anyhow::{bail, Context};
use clap::Subcommand;
use moat_model::rbac::{assignment_id, Role, RoleScope};
use moat_server::arm::activity::{local_event, operator};
use moat_server::listener::cloud_ids;
use moat_store::meta::NewRoleAssignment;

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
}

pub async fn run(command: SpCommand) -> anyhow::Result<()> {
    match command {
        SpCommand::Create {
            name,
            role,
            scope,
            common,
        } => create(name, role, scope, common).await,
    }
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
