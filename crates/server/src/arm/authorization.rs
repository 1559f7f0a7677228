//! `Microsoft.Authorization` as an extension of every scope Moat serves (the subscription, a resource group, a
//! registry): role assignments (create, get, list with ARM's `$filter`s, delete) and the built-in role definitions
//! `az role assignment` resolves `--role` names through. Only an Owner of the scope (or above) may create or delete
//! assignments (`Microsoft.Authorization/roleAssignments/write`); reading them takes a role that reads resources
//! there. Refusals are decided from the path and the caller's roles before anything is looked up.

use super::error::{ArmError, ArmResult};
use super::ArmCtx;
use crate::state::AppState;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use moat_model::rbac::{assignment_id, Role, RoleScope};
use moat_model::role_definitions::{
    definition_id, parse_definition_filter, parse_definition_id, AssignmentFilter, DefinitionError,
};
use moat_store::meta::{AssignError, NewRoleAssignment, RoleAssignmentRow};
use serde_json::{json, Value};

/// Where `Microsoft.Authorization` starts in a lower-cased path (`…/providers/microsoft.authorization/…`).
pub fn extension_at(lower: &[&str]) -> Option<usize> {
    (2..lower.len().saturating_sub(1))
        .find(|&k| lower[k] == "providers" && lower[k + 1] == "microsoft.authorization")
}

/// The `$filter` of a query string, decoded as a form (`%24filter`, `+` for spaces: clients encode it either way).
pub fn odata_filter(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "$filter")
        .map(|(_, v)| v.into_owned())
}

/// A role assignment as ARM returns it.
pub fn assignment_json(sub: &str, row: &RoleAssignmentRow) -> Value {
    let definition = Role::parse(&row.role).map(|r| definition_id(sub, r));
    json!({
        "id": assignment_id(&row.scope, &row.id),
        "name": row.id,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "roleDefinitionId": definition,
            "principalId": row.principal_id,
            "principalType": "ServicePrincipal",
            "scope": row.scope,
            "condition": null,
            "conditionVersion": null,
            "description": null,
            "delegatedManagedIdentityResourceId": null,
            "createdOn": row.created_at,
            "updatedOn": row.created_at,
            "createdBy": row.created_by,
            "updatedBy": row.created_by,
        },
    })
}

/// A built-in role definition as ARM returns it.
pub fn definition_json(sub: &str, role: Role) -> Value {
    let (actions, not_actions) = role.permissions();
    json!({
        "id": definition_id(sub, role),
        "name": role.definition_guid(),
        "type": "Microsoft.Authorization/roleDefinitions",
        "properties": {
            "roleName": role.as_str(),
            "type": "BuiltInRole",
            "description": role.description(),
            "assignableScopes": ["/"],
            "permissions": [{"actions": actions, "notActions": not_actions, "dataActions": [], "notDataActions": []}],
            "createdOn": null, "updatedOn": null, "createdBy": null, "updatedBy": null,
        },
    })
}

/// `{scope}/providers/Microsoft.Authorization/{rest}`: `scope` and `rest` as the caller spelled them (decoded),
/// `lower_rest` lower-cased.
pub async fn dispatch(
    state: &AppState,
    ctx: &ArmCtx,
    scope: &[&str],
    lower_rest: &[&str],
    rest: &[&str],
    query: &str,
    body: &Value,
) -> ArmResult<Response> {
    let spelled = format!("/{}", scope.join("/"));
    let at = RoleScope::parse(&spelled, &ctx.subscription).ok_or_else(|| {
        ArmError::bad_request(
            moat_model::arm_support::CODE,
            format!("Moat does not support role assignments or definitions at '{spelled}': use the subscription, a resource group or a registry."),
        )
    })?;
    let filter = odata_filter(query);
    let full = format!(
        "{spelled}/providers/Microsoft.Authorization/{}",
        rest.join("/")
    );
    match (&ctx.method, lower_rest) {
        (&Method::GET, ["roledefinitions"]) => list_definitions(ctx, filter.as_deref()),
        (&Method::GET, ["roledefinitions", _]) => get_definition(ctx, rest[1]),
        (&Method::GET, ["roleassignments"]) => {
            if !ctx.principal.can_read_scope(&at) {
                return Err(ctx
                    .principal
                    .denied("Microsoft.Authorization/roleAssignments/read", &spelled));
            }
            list(state, ctx, &at, filter.as_deref()).await
        }
        (&Method::GET, ["roleassignments", _]) => {
            if !ctx.principal.can_read_scope(&at) {
                return Err(ctx
                    .principal
                    .denied("Microsoft.Authorization/roleAssignments/read", &full));
            }
            get(state, ctx, &at, rest[1]).await
        }
        (&Method::PUT, ["roleassignments", _]) => {
            if !ctx.principal.can_assign_roles(&at) {
                return Err(ctx
                    .principal
                    .denied("Microsoft.Authorization/roleAssignments/write", &full));
            }
            create(state, ctx, &at, rest[1], body).await
        }
        (&Method::DELETE, ["roleassignments", _]) => {
            if !ctx.principal.can_assign_roles(&at) {
                return Err(ctx
                    .principal
                    .denied("Microsoft.Authorization/roleAssignments/delete", &full));
            }
            delete(state, ctx, &at, rest[1]).await
        }
        _ => Err(super::unsupported(ctx)),
    }
}

fn filter_error(e: impl std::fmt::Display) -> ArmError {
    ArmError::bad_request("InvalidFilter", e.to_string())
}

fn list_definitions(ctx: &ArmCtx, filter: Option<&str>) -> ArmResult<Response> {
    let name = parse_definition_filter(filter).map_err(filter_error)?;
    let value: Vec<Value> = Role::ALL
        .into_iter()
        .filter(|r| {
            name.as_ref()
                .is_none_or(|n| r.as_str().eq_ignore_ascii_case(n))
        })
        .map(|r| definition_json(&ctx.subscription, r))
        .collect();
    Ok(axum::Json(json!({ "value": value })).into_response())
}

fn get_definition(ctx: &ArmCtx, guid: &str) -> ArmResult<Response> {
    match Role::from_definition_guid(guid) {
        Some(r) => Ok(axum::Json(definition_json(&ctx.subscription, r)).into_response()),
        None => Err(definition_missing(guid)),
    }
}

fn definition_missing(guid: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "RoleDefinitionDoesNotExist",
        format!(
            "The specified role definition with ID '{}' does not exist.",
            moat_model::text::escape(guid)
        ),
    )
}

/// Whether a stored scope is `at` (scopes compare in any case: resource group and registry names are
/// case-insensitive in ARM).
fn same_scope(a: &str, at: &RoleScope, sub: &str) -> bool {
    RoleScope::parse(a, sub).is_some_and(|s| s.covers_scope(at) && at.covers_scope(&s))
}

fn assignment_missing(name: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "RoleAssignmentNotFound",
        format!(
            "The role assignment '{}' is not found.",
            moat_model::text::escape(name)
        ),
    )
}

async fn list(
    state: &AppState,
    ctx: &ArmCtx,
    at: &RoleScope,
    filter: Option<&str>,
) -> ArmResult<Response> {
    let filter = AssignmentFilter::parse(filter).map_err(filter_error)?;
    let value: Vec<Value> = state
        .meta
        .all_role_assignments()
        .await?
        .iter()
        .filter(|row| {
            RoleScope::parse(&row.scope, &ctx.subscription)
                .is_some_and(|s| filter.lists(at, &s, &row.principal_id))
        })
        .map(|row| assignment_json(&ctx.subscription, row))
        .collect();
    Ok(axum::Json(json!({ "value": value })).into_response())
}

async fn get(state: &AppState, ctx: &ArmCtx, at: &RoleScope, name: &str) -> ArmResult<Response> {
    match state.meta.role_assignment(name).await? {
        Some(row) if same_scope(&row.scope, at, &ctx.subscription) => {
            Ok(axum::Json(assignment_json(&ctx.subscription, &row)).into_response())
        }
        _ => Err(assignment_missing(name)),
    }
}

/// A property that must be absent or null: Moat stores none of them, so none is accepted and ignored.
fn refuse_unsupported(props: &Value) -> ArmResult<()> {
    for (key, what) in [
        ("condition", "role assignment conditions (ABAC)"),
        ("conditionVersion", "role assignment conditions (ABAC)"),
        ("description", "role assignment descriptions"),
        (
            "delegatedManagedIdentityResourceId",
            "delegated managed identities",
        ),
    ] {
        if props.get(key).is_some_and(|v| !v.is_null()) {
            return Err(ArmError::bad_request(
                moat_model::arm_support::CODE,
                format!("Moat does not support {what}; leave properties.{key} out."),
            )
            .with_target(format!("properties.{key}")));
        }
    }
    Ok(())
}

async fn create(
    state: &AppState,
    ctx: &ArmCtx,
    at: &RoleScope,
    name: &str,
    body: &Value,
) -> ArmResult<Response> {
    if uuid::Uuid::parse_str(name).is_err() {
        return Err(ArmError::bad_request(
            "InvalidRoleAssignmentId",
            format!(
                "The role assignment ID '{}' is not valid. The role assignment ID must be a GUID.",
                moat_model::text::escape(name)
            ),
        ));
    }
    let props = body.get("properties").cloned().unwrap_or(json!({}));
    let text = |key: &str| -> ArmResult<String> {
        props
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                ArmError::invalid_property(
                    &format!("properties.{key}"),
                    "is required and must be a string",
                )
            })
    };
    let role = match parse_definition_id(&text("roleDefinitionId")?, &ctx.subscription) {
        Ok(r) => r,
        Err(DefinitionError::Unknown(guid)) => {
            return Err(ArmError::bad_request(
                "RoleDefinitionDoesNotExist",
                format!("The specified role definition with ID '{guid}' does not exist."),
            ))
        }
        Err(e @ DefinitionError::Malformed(_)) => {
            return Err(
                ArmError::bad_request("InvalidRoleDefinitionId", e.to_string())
                    .with_target("properties.roleDefinitionId"),
            )
        }
    };
    let principal = text("principalId")?.to_ascii_lowercase();
    refuse_unsupported(&props)?;
    let principal_type = props.get("principalType").and_then(Value::as_str);
    let arm_scope = at.to_arm(&ctx.subscription);
    let new = NewRoleAssignment {
        id: Some(name),
        principal_id: &principal,
        role,
        scope: at,
        arm_scope: &arm_scope,
        created_by: Some(&ctx.principal.app_id),
    };
    // The principal's type is checked once it is known to exist (the store checks that in its transaction).
    if let Some(t) = principal_type.filter(|t| !t.eq_ignore_ascii_case("ServicePrincipal")) {
        if state.meta.service_principal(&principal).await?.is_some() {
            return Err(ArmError::bad_request(
                "UnmatchedPrincipalType",
                format!(
                    "The PrincipalId '{principal}' has type 'ServicePrincipal', which is different from specified PrincipalType '{}'.",
                    moat_model::text::escape(t)
                ),
            ));
        }
    }
    match state
        .meta
        .create_role_assignment(&new, |_| ctx.activity.change())
        .await
    {
        Ok((row, created)) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, axum::Json(assignment_json(&ctx.subscription, &row))).into_response())
        }
        Err(AssignError::PrincipalNotFound(p)) => Err(ArmError::bad_request(
            "PrincipalNotFound",
            format!(
                "Principal {} does not exist in the directory {}. Create it with `moat sp create`.",
                moat_model::text::escape(&p),
                ctx.tenant
            ),
        )),
        Err(AssignError::RegistryNotFound {
            resource_group,
            name,
        }) => Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("The Resource 'Microsoft.ContainerRegistry/registries/{name}' under resource group '{resource_group}' was not found."),
        )),
        Err(AssignError::Exists(_)) => Err(ArmError::new(
            StatusCode::CONFLICT,
            "RoleAssignmentExists",
            "The role assignment already exists.",
        )),
        Err(AssignError::NameTaken(_)) => Err(ArmError::new(
            StatusCode::CONFLICT,
            "RoleAssignmentUpdateNotPermitted",
            "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
        )),
        Err(AssignError::Store(e)) => Err(e.into()),
    }
}

async fn delete(state: &AppState, ctx: &ArmCtx, at: &RoleScope, name: &str) -> ArmResult<Response> {
    let Some(row) = state.meta.role_assignment(name).await? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    if !same_scope(&row.scope, at, &ctx.subscription) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    match state
        .meta
        .delete_role_assignment(&row.id, &ctx.activity.change())
        .await?
    {
        Some(row) => Ok(axum::Json(assignment_json(&ctx.subscription, &row)).into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}
