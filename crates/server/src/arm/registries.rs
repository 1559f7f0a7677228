//! Registry resources: create or replace (PUT), update (PATCH), read, delete, lists, credentials, usages, and
//! the operation status resources the Azure pollers read. Every change runs through the store's transactional
//! upsert, where the export policy is checked against the state it produces.

use super::error::{ArmError, ArmResult};
use super::registry_json::{self, registry_id, REGISTRY_TYPE};
use super::ArmCtx;
use crate::state::AppState;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use moat_model::arm_support;
use moat_model::{Registry, RegistryName, Sku};
use serde_json::{json, Value};

pub(crate) fn parse_name(name: &str) -> ArmResult<String> {
    name.parse::<RegistryName>().map(|n| n.as_str().to_string()).map_err(|_| {
        ArmError::bad_request(
            "InvalidResourceName",
            format!("Registry name '{name}' is invalid: use 5 to 50 letters and digits (ACR's naming rule)."),
        )
        .with_target("registryName")
    })
}

/// The registry's JSON, with its private endpoint connections.
async fn json_of(state: &AppState, ctx: &ArmCtx, r: &Registry) -> ArmResult<Value> {
    let connections = state.meta.private_endpoint_connections(&r.id).await?;
    Ok(registry_json::to_json(
        r,
        &ctx.subscription,
        &state.config,
        &connections,
    ))
}

/// The registry `rg/name` (the caller's rights on that scope are checked before, from the path: see
/// [`authorize`]). A registry of that name in another resource group is not this one: the answer is the same
/// `404` as for no registry at all.
pub(crate) async fn find(state: &AppState, rg: &str, name: &str) -> ArmResult<Registry> {
    let not_found = || {
        ArmError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("The Resource 'Microsoft.ContainerRegistry/registries/{name}' under resource group '{rg}' was not found."),
        )
    };
    let r = state
        .meta
        .registry_by_name(&name.to_ascii_lowercase())
        .await?
        .ok_or_else(not_found)?;
    if !r.resource_group.eq_ignore_ascii_case(rg) {
        return Err(not_found());
    }
    Ok(r)
}

/// Whether the caller may do what the request asks on the registry scope `rg/name` as it spelled it, decided
/// before anything is looked up: without rights there, the answer is `AuthorizationFailed` whether the registry
/// exists or not. Reads need a reading role on the scope; everything else a writing one.
fn authorize(ctx: &ArmCtx, rg: &str, name: &str, rest: &[&str]) -> ArmResult<()> {
    let read_only = matches!(ctx.method, Method::GET | Method::HEAD);
    let allowed = if read_only {
        ctx.principal.can_read(rg, name)
    } else {
        ctx.principal.can_write(rg, name)
    };
    if allowed {
        return Ok(());
    }
    let id = registry_id(&ctx.subscription, rg, name);
    let action = match (&ctx.method, rest) {
        (&Method::POST, [action]) => format!("{REGISTRY_TYPE}/{action}/action"),
        (&Method::DELETE, []) => format!("{REGISTRY_TYPE}/delete"),
        (_, [child, ..]) if read_only => format!("{REGISTRY_TYPE}/{child}/read"),
        (_, [child, ..]) => format!("{REGISTRY_TYPE}/{child}/write"),
        _ if read_only => format!("{REGISTRY_TYPE}/read"),
        _ => format!("{REGISTRY_TYPE}/write"),
    };
    Err(ctx.principal.denied(&action, &id))
}

/// The resource group and name of a registry resource id of this subscription (`/subscriptions/{sub}/
/// resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{name}`, fixed segments in any case).
pub fn registry_id_parts<'a>(ctx: &ArmCtx, id: &'a str) -> Option<(&'a str, &'a str)> {
    let segments: Vec<&str> = id.trim_matches('/').split('/').collect();
    let ["subscriptions", sub, rg_key, rg, "providers", provider, kind, name] = segments[..] else {
        return None;
    };
    (sub.eq_ignore_ascii_case(&ctx.subscription)
        && rg_key.eq_ignore_ascii_case("resourceGroups")
        && provider.eq_ignore_ascii_case("Microsoft.ContainerRegistry")
        && kind.eq_ignore_ascii_case("registries"))
    .then_some((rg, name))
}

/// The registry a resource id names, if it is one of this server's.
pub async fn by_resource_id(
    state: &AppState,
    ctx: &ArmCtx,
    id: &str,
) -> ArmResult<Option<Registry>> {
    let Some((rg, name)) = registry_id_parts(ctx, id) else {
        return Ok(None);
    };
    Ok(state
        .meta
        .registry_by_name(&name.to_ascii_lowercase())
        .await?
        .filter(|r| r.resource_group.eq_ignore_ascii_case(rg)))
}

pub fn require_write(ctx: &ArmCtx, r: &Registry, action: &str) -> ArmResult<()> {
    require(
        ctx,
        r,
        action,
        ctx.principal.can_write(&r.resource_group, &r.name),
    )
}

pub fn require_read(ctx: &ArmCtx, r: &Registry, action: &str) -> ArmResult<()> {
    require(
        ctx,
        r,
        action,
        ctx.principal.can_read(&r.resource_group, &r.name),
    )
}

fn require(ctx: &ArmCtx, r: &Registry, action: &str, allowed: bool) -> ArmResult<()> {
    if allowed {
        Ok(())
    } else {
        Err(ctx.principal.denied(
            action,
            &registry_id(&ctx.subscription, &r.resource_group, &r.name),
        ))
    }
}

async fn lro(
    state: &AppState,
    ctx: &ArmCtx,
    r: &Registry,
    status: StatusCode,
) -> ArmResult<Response> {
    let id = registry_id(&ctx.subscription, &r.resource_group, &r.name);
    Ok(super::lro(ctx, &id, json_of(state, ctx, r).await?, status))
}

pub async fn dispatch(
    state: &AppState,
    ctx: &ArmCtx,
    rg: &str,
    name: &str,
    rest: &[&str],
    rest_original: &[&str],
    body: &Value,
) -> ArmResult<Response> {
    authorize(ctx, rg, name, rest_original)?;
    let name = parse_name(name)?;
    match (&ctx.method, rest) {
        (&Method::GET, []) => {
            let r = find(state, rg, &name).await?;
            Ok(axum::Json(json_of(state, ctx, &r).await?).into_response())
        }
        (&Method::PUT, []) => put(state, ctx, rg, &name, body).await,
        (&Method::PATCH, []) => patch(state, ctx, rg, &name, body).await,
        (&Method::DELETE, []) => delete(state, ctx, rg, &name).await,
        (&Method::POST, ["listcredentials"]) => credentials(state, ctx, rg, &name, None).await,
        (&Method::POST, ["regeneratecredential"]) => {
            let which = body.get("name").and_then(Value::as_str).unwrap_or("");
            if which != "password" && which != "password2" {
                return Err(ArmError::invalid_property(
                    "name",
                    "expected 'password' or 'password2'",
                ));
            }
            credentials(state, ctx, rg, &name, Some(which)).await
        }
        (&Method::GET, ["listusages"]) => usages(state, rg, &name).await,
        (&Method::POST, ["importimage"]) => {
            let r = find(state, rg, &name).await?;
            super::import::import_image(state, ctx, &r, body).await
        }
        (_, ["privateendpointconnections", ..] | ["privatelinkresources", ..]) => {
            let r = find(state, rg, &name).await?;
            super::private_endpoints::registry_dispatch(state, ctx, &r, rest, rest_original, body)
                .await
        }
        (_, ["exportpipelines" | "importpipelines" | "pipelineruns", ..]) => {
            let r = find(state, rg, &name).await?;
            super::pipelines::dispatch(state, ctx, &r, rest, rest_original, body).await
        }
        (_, ["webhooks", ..]) => {
            let r = find(state, rg, &name).await?;
            super::webhooks::dispatch(state, ctx, &r, &rest[1..], &rest_original[1..], body).await
        }
        (&Method::GET, ["operationstatuses", _]) => {
            let r = find(state, rg, &name).await?;
            Ok(super::operation_status(
                &registry_id(&ctx.subscription, &r.resource_group, &r.name),
                rest_original[1],
            ))
        }
        // A collection a supported az command lists (replications, for `az acr show-endpoints`): none.
        _ if arm_support::support(ctx.activity.operation()) == arm_support::Support::EmptyList => {
            find(state, rg, &name).await?;
            Ok(axum::Json(json!({ "value": [] })).into_response())
        }
        _ => Err(super::unsupported(ctx)),
    }
}

async fn put(
    state: &AppState,
    ctx: &ArmCtx,
    rg: &str,
    name: &str,
    body: &Value,
) -> ArmResult<Response> {
    // The caller's rights on `rg/name` were checked from the path; a registry is created only by whoever may write
    // the whole resource group.
    let existing = state.meta.registry_by_name(name).await?;
    match &existing {
        // Names are unique per server, as ACR's are per cloud (`checkNameAvailability` says as much): the answer
        // names neither the other registry's resource group nor anything else about it.
        Some(r) if !r.resource_group.eq_ignore_ascii_case(rg) => return Err(name_in_use(name)),
        None if !ctx.principal.can_write_group(rg) => {
            return Err(ctx.principal.denied(
                "Microsoft.ContainerRegistry/registries/write",
                &registry_id(&ctx.subscription, rg, name),
            ))
        }
        _ => {}
    }
    let now = moat_store::time_fmt::now();
    let settings = registry_json::settings_from_put(body, &now, &state.config.region)?;
    if let Some(r) = &existing {
        registry_json::keeps_location(&r.settings, &settings)?;
    }
    let login_server = state.config.login_server_for(name);
    let (r, created) = state
        .meta
        .upsert_registry::<_, ArmError>(name, &login_server, rg, ctx.activity.change(), |current| {
            if let Some(c) = current {
                registry_json::keeps_location(&c.settings, &settings)?;
            }
            Ok(settings.clone())
        })
        .await
        .map_err(|e| {
            // A registry of the same name created in another group in between: the same answer as above.
            if e.status == StatusCode::CONFLICT && e.message.contains("already in use") {
                name_in_use(name)
            } else {
                e
            }
        })?;
    state.registries.invalidate();
    lro(
        state,
        ctx,
        &r,
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
    )
    .await
}

fn name_in_use(name: &str) -> ArmError {
    ArmError::new(
        StatusCode::CONFLICT,
        "AlreadyInUse",
        format!("The registry name '{name}' is already in use on this server. Registry names are unique per server; choose another (`POST …/checkNameAvailability` tells whether a name is free)."),
    )
}

async fn patch(
    state: &AppState,
    ctx: &ArmCtx,
    rg: &str,
    name: &str,
    body: &Value,
) -> ArmResult<Response> {
    let current = find(state, rg, name).await?;
    require_write(
        ctx,
        &current,
        "Microsoft.ContainerRegistry/registries/write",
    )?;
    let now = moat_store::time_fmt::now();
    let (r, _) = state
        .meta
        .upsert_registry::<_, ArmError>(
            name,
            &current.login_server,
            rg,
            ctx.activity.change(),
            |current| {
                let current = current.ok_or_else(|| {
                    ArmError::not_found("Microsoft.ContainerRegistry/registries", name)
                })?;
                registry_json::settings_from_patch(body, &current.settings, &now)
            },
        )
        .await?;
    state.registries.invalidate();
    lro(state, ctx, &r, StatusCode::OK).await
}

async fn delete(state: &AppState, ctx: &ArmCtx, rg: &str, name: &str) -> ArmResult<Response> {
    let r = match find(state, rg, name).await {
        Ok(r) => r,
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            return Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err(e) => return Err(e),
    };
    require_write(ctx, &r, "Microsoft.ContainerRegistry/registries/delete")?;
    let default = state.meta.default_registry().await?;
    if default.is_some_and(|d| d.id == r.id) {
        return Err(ArmError::bad_request(
            "CannotDeleteDefaultRegistry",
            "the server's default registry cannot be deleted",
        ));
    }
    state
        .meta
        .delete_registry(&r.name, &ctx.activity.change())
        .await?;
    crate::endpoints::refresh(state).await;
    Ok(StatusCode::OK.into_response())
}

async fn credentials(
    state: &AppState,
    ctx: &ArmCtx,
    rg: &str,
    name: &str,
    regenerate: Option<&str>,
) -> ArmResult<Response> {
    let r = find(state, rg, name).await?;
    require_write(
        ctx,
        &r,
        "Microsoft.ContainerRegistry/registries/listCredentials/action",
    )?;
    if !r.settings.admin_user_enabled {
        return Err(ArmError::bad_request(
            "AdminUserDisabled",
            format!("The admin user of registry '{name}' is disabled. Enable it with `moat acr update -n {name} --admin-enabled true`."),
        ));
    }
    match regenerate {
        Some(which) => {
            crate::secrets::regenerate_admin_credential(state, &r.id, which, &ctx.activity.change())
                .await?
        }
        // A listing changes nothing, but gives secrets away: it is recorded before they leave.
        None => state.meta.record_activity(&ctx.activity.change()).await?,
    }
    let passwords: Vec<Value> = crate::secrets::admin_credentials(state, &r.id)
        .await?
        .into_iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    Ok(axum::Json(json!({"username": r.name, "passwords": passwords})).into_response())
}

async fn usages(state: &AppState, rg: &str, name: &str) -> ArmResult<Response> {
    let r = find(state, rg, name).await?;
    let size = state.meta.registry_size(&r.id).await?;
    // ACR's included storage and webhook limits per SKU.
    let storage = match r.settings.sku {
        Sku::Basic => 10u64 << 30,
        Sku::Standard => 100u64 << 30,
        Sku::Premium => 500u64 << 30,
    };
    let webhooks = moat_model::monitor::webhook::limit(r.settings.sku) as u64;
    let usage = |name: &str, limit: u64, current: i64, unit: &str| json!({"name": name, "limit": limit, "currentValue": current, "unit": unit});
    Ok(axum::Json(json!({"value": [
        usage("Size", storage, size, "Bytes"),
        usage("Webhooks", webhooks, state.meta.webhooks(&r.id).await?.len() as i64, "Count"),
        usage("Geo-replications", if r.settings.sku == Sku::Premium { 50 } else { 0 }, 0, "Count"),
        usage("IPRules", 200, r.settings.network_rule_set.ip_rules.len() as i64, "Count"),
        usage("VNetRules", 100, 0, "Count"),
        usage("PrivateEndpointConnections", moat_model::private_endpoint::MAX_PRIVATE_ENDPOINTS_PER_REGISTRY as u64, state.meta.private_endpoint_connections(&r.id).await?.len() as i64, "Count"),
    ]}))
    .into_response())
}

pub async fn list(state: &AppState, ctx: &ArmCtx, rg: Option<&str>) -> ArmResult<Response> {
    let mut value: Vec<Value> = Vec::new();
    for r in state.meta.list_registries().await? {
        if rg.is_none_or(|g| r.resource_group.eq_ignore_ascii_case(g))
            && ctx.principal.can_read(&r.resource_group, &r.name)
        {
            value.push(json_of(state, ctx, &r).await?);
        }
    }
    Ok(axum::Json(json!({ "value": value })).into_response())
}

/// `GET /subscriptions/{sub}/resources?$filter=resourceType eq '…'`: how az finds a registry's resource group.
pub async fn generic_resources(state: &AppState, ctx: &ArmCtx, query: &str) -> ArmResult<Response> {
    let filter = super::query_param(query, "$filter").unwrap_or_default();
    let wants_registries = match filter.split_once("resourceType eq '") {
        Some((_, rest)) => rest
            .split('\'')
            .next()
            .is_some_and(|t| t.eq_ignore_ascii_case(REGISTRY_TYPE)),
        None => true,
    };
    let mut value = Vec::new();
    if wants_registries {
        for r in state.meta.list_registries().await? {
            if ctx.principal.can_read(&r.resource_group, &r.name) {
                value.push(json!({
                    "id": registry_id(&ctx.subscription, &r.resource_group, &r.name),
                    "name": r.name, "type": REGISTRY_TYPE, "location": r.settings.location.as_str(),
                    "sku": {"name": r.settings.sku.as_str(), "tier": r.settings.sku.as_str()}, "tags": r.settings.tags,
                }));
            }
        }
    }
    Ok(axum::Json(json!({ "value": value })).into_response())
}

fn group_json(ctx: &ArmCtx, name: &str, location: &str) -> Value {
    json!({
        "id": format!("/subscriptions/{}/resourceGroups/{name}", ctx.subscription),
        "name": name, "type": "Microsoft.Resources/resourceGroups", "location": location,
        "properties": {"provisioningState": "Succeeded"},
    })
}

/// The resource groups the caller may read (ARM lists only those): all of them for a role at the subscription,
/// its own for a role on a group, none for roles on single registries.
pub async fn list_resource_groups(state: &AppState, ctx: &ArmCtx) -> ArmResult<Response> {
    let value: Vec<Value> = state
        .meta
        .resource_groups()
        .await?
        .iter()
        .filter(|(n, _)| ctx.principal.can_read_group(n))
        .map(|(n, l)| group_json(ctx, n, l))
        .collect();
    Ok(axum::Json(json!({ "value": value })).into_response())
}

/// A minimal resource-group API: `GET`/`HEAD` read one, `PUT` creates one (`az group create`). The caller's rights
/// on the group are checked before it is looked up, so a group it may not read is refused whether it exists or not.
pub async fn resource_group(
    state: &AppState,
    ctx: &ArmCtx,
    name: &str,
    body: &Value,
) -> ArmResult<Response> {
    let id = format!("/subscriptions/{}/resourceGroups/{name}", ctx.subscription);
    match ctx.method {
        Method::PUT => {
            if !ctx.principal.can_write_group(name) {
                return Err(ctx.principal.denied(
                    "Microsoft.Resources/subscriptions/resourceGroups/write",
                    &id,
                ));
            }
            let location = match body.get("location") {
                Some(l) => registry_json::parse_location(l)?,
                None => state.config.region.clone(),
            };
            if let Some(tags) = body.get("tags") {
                registry_json::parse_tags(tags)?;
            }
            let existed = state.meta.resource_group(name).await?.is_some();
            let loc = state
                .meta
                .ensure_resource_group(name, location.as_str())
                .await?;
            let status = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok((status, axum::Json(group_json(ctx, name, &loc))).into_response())
        }
        Method::GET | Method::HEAD => {
            if !ctx.principal.can_read_group(name) {
                return Err(ctx
                    .principal
                    .denied("Microsoft.Resources/subscriptions/resourceGroups/read", &id));
            }
            match state.meta.resource_group(name).await? {
                Some((n, l)) => Ok(axum::Json(group_json(ctx, &n, &l)).into_response()),
                None => Err(ArmError::new(
                    StatusCode::NOT_FOUND,
                    "ResourceGroupNotFound",
                    format!("Resource group '{name}' could not be found."),
                )),
            }
        }
        _ => Err(ArmError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "resource groups support GET, HEAD and PUT",
        )),
    }
}

pub async fn check_name(state: &AppState, _ctx: &ArmCtx, body: &Value) -> ArmResult<Response> {
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ArmError::invalid_property("name", "required"))?;
    if let Some(t) = body.get("type").and_then(Value::as_str) {
        if !t.eq_ignore_ascii_case(REGISTRY_TYPE) {
            return Err(ArmError::invalid_property(
                "type",
                format!("expected '{REGISTRY_TYPE}'"),
            ));
        }
    }
    let answer = match name.parse::<RegistryName>() {
        Err(_) => {
            json!({"nameAvailable": false, "reason": "Invalid", "message": format!("The registry name '{name}' is invalid: use 5 to 50 letters and digits.")})
        }
        Ok(n) if state.meta.registry_by_name(n.as_str()).await?.is_some() => {
            json!({"nameAvailable": false, "reason": "AlreadyExists", "message": format!("The registry {name} is already in use.")})
        }
        Ok(n) => {
            json!({"nameAvailable": true, "availableLoginServerName": state.config.login_server_for(n.as_str())})
        }
    };
    Ok(axum::Json(answer).into_response())
}
