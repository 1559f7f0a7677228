//! Private endpoints as ARM shows them. The endpoint itself is a `Microsoft.Network/privateEndpoints` resource
//! (Moat answers for the network resource provider: creating one starts a listener on its address); on the
//! registry it appears as a `privateEndpointConnections` entry that the registry owner approves, rejects or
//! removes, and `privateLinkResources` lists what an endpoint can connect to.

use super::error::{ArmError, ArmResult};
use super::registries::require_write;
use super::registry_json::registry_id;
use super::ArmCtx;
use crate::state::AppState;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use moat_model::private_endpoint::{transition, ConnectionStatus};
use moat_model::{HostAddress, PrivateEndpoint, Registry};
use moat_store::meta::{EndpointChange, EndpointSelector, NewPrivateEndpoint, UpdateError};
use serde_json::{json, Value};
use std::net::IpAddr;

const ENDPOINT_TYPE: &str = "Microsoft.Network/privateEndpoints";
const CONNECTION_TYPE: &str = "Microsoft.ContainerRegistry/registries/privateEndpointConnections";
const GROUP_ID: &str = "registry";

pub fn endpoint_id(sub: &str, rg: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/privateEndpoints/{name}")
}

fn state_json(pe: &PrivateEndpoint) -> Value {
    json!({
        "status": pe.status.as_str(),
        "description": pe.description,
        "actionsRequired": if pe.status == ConnectionStatus::Disconnected { "Recreate" } else { "None" },
    })
}

/// One entry of a registry's `privateEndpointConnections`.
pub fn connection_json(sub: &str, r: &Registry, pe: &PrivateEndpoint) -> Value {
    json!({
        "id": format!("{}/privateEndpointConnections/{}", registry_id(sub, &r.resource_group, &r.name), pe.connection_name),
        "name": pe.connection_name,
        "type": CONNECTION_TYPE,
        "properties": {
            "privateEndpoint": {"id": endpoint_id(sub, &pe.resource_group, &pe.name)},
            "privateLinkServiceConnectionState": state_json(pe),
            "groupIds": [GROUP_ID],
            "provisioningState": "Succeeded",
        }
    })
}

fn endpoint_json(
    state: &AppState,
    sub: &str,
    pe: &PrivateEndpoint,
    registry: Option<&Registry>,
) -> Value {
    let id = endpoint_id(sub, &pe.resource_group, &pe.name);
    let service_id = registry
        .map(|r| registry_id(sub, &r.resource_group, &r.name))
        .unwrap_or_default();
    let connection = json!({
        "name": pe.connection_name,
        "id": format!("{id}/privateLinkServiceConnections/{}", pe.connection_name),
        "properties": {
            "privateLinkServiceId": service_id,
            "groupIds": [GROUP_ID],
            "privateLinkServiceConnectionState": state_json(pe),
            "provisioningState": "Succeeded",
        }
    });
    // The names a client inside the endpoint's network must resolve to its address.
    let mut dns = Vec::new();
    if let Some(r) = registry {
        dns.push(
            json!({"fqdn": host_only(&r.login_server), "ipAddresses": [pe.address.to_string()]}),
        );
        if let Some(host) = state
            .config
            .data_endpoint_host(r)
            .filter(|_| r.settings.data_endpoint_enabled)
        {
            dns.push(json!({"fqdn": host_only(&host), "ipAddresses": [pe.address.to_string()]}));
        }
    }
    let (auto, manual) = if pe.status == ConnectionStatus::Pending {
        (vec![], vec![connection])
    } else {
        (vec![connection], vec![])
    };
    json!({
        "id": id,
        "name": pe.name,
        "type": ENDPOINT_TYPE,
        "location": registry.map_or(state.config.region.as_str(), |r| r.settings.location.as_str()),
        "properties": {
            "provisioningState": "Succeeded",
            "privateLinkServiceConnections": auto,
            "manualPrivateLinkServiceConnections": manual,
            "ipConfigurations": [{"name": GROUP_ID, "properties": {"groupId": GROUP_ID, "memberName": GROUP_ID, "privateIPAddress": pe.address.to_string()}}],
            "customDnsConfigs": dns,
            "listenAddress": format!("{}", std::net::SocketAddr::new(pe.address, state.config.listen.port())),
        }
    })
}

fn host_only(host_port: &str) -> &str {
    host_port
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(host_port)
}

// ---------------------------------------------------------------------------------------------------------
// On the registry: privateEndpointConnections and privateLinkResources.

pub async fn registry_dispatch(
    state: &AppState,
    ctx: &ArmCtx,
    r: &Registry,
    rest: &[&str],
    rest_original: &[&str],
    body: &Value,
) -> ArmResult<Response> {
    match (&ctx.method, rest) {
        (&Method::GET, ["privateendpointconnections"]) => {
            let value: Vec<Value> = state
                .meta
                .private_endpoint_connections(&r.id)
                .await?
                .iter()
                .map(|pe| connection_json(&ctx.subscription, r, pe))
                .collect();
            Ok(axum::Json(json!({ "value": value })).into_response())
        }
        (&Method::GET, ["privateendpointconnections", _]) => {
            let pe = connection(state, r, rest_original[1]).await?;
            Ok(axum::Json(connection_json(&ctx.subscription, r, &pe)).into_response())
        }
        (&Method::GET, ["privateendpointconnections", _, "operationstatuses", _]) => {
            Ok(super::operation_status(
                &format!(
                    "{}/privateEndpointConnections/{}",
                    registry_id(&ctx.subscription, &r.resource_group, &r.name),
                    rest_original[1]
                ),
                rest_original[3],
            ))
        }
        (&Method::PUT, ["privateendpointconnections", _]) => {
            set_connection_state(state, ctx, r, rest_original[1], body).await
        }
        (&Method::DELETE, ["privateendpointconnections", _]) => {
            require_write(
                ctx,
                r,
                "Microsoft.ContainerRegistry/registries/privateEndpointConnections/delete",
            )?;
            let name = rest_original[1];
            let result = state
                .meta
                .change_private_endpoint::<_, UpdateError>(
                    EndpointSelector::Connection {
                        registry_id: &r.id,
                        connection_name: name,
                    },
                    &ctx.activity.change(),
                    |_| Ok(EndpointChange::Disconnect),
                )
                .await;
            match result {
                Err(UpdateError::NotFound) => Ok(StatusCode::NO_CONTENT.into_response()),
                Err(e) => Err(e.into()),
                Ok(_) => {
                    crate::endpoints::refresh(state).await;
                    Ok(StatusCode::OK.into_response())
                }
            }
        }
        (&Method::GET, ["privatelinkresources"]) => {
            Ok(axum::Json(json!({"value": [link_resource(state, ctx, r)]})).into_response())
        }
        (&Method::GET, ["privatelinkresources", group]) if *group == GROUP_ID => {
            Ok(axum::Json(link_resource(state, ctx, r)).into_response())
        }
        (&Method::GET, ["privatelinkresources", _]) => Err(ArmError::not_found(
            "Microsoft.ContainerRegistry/registries/privateLinkResources",
            rest_original[1],
        )),
        _ => Err(super::unsupported(ctx)),
    }
}

async fn connection(state: &AppState, r: &Registry, name: &str) -> ArmResult<PrivateEndpoint> {
    state
        .meta
        .private_endpoint_connections(&r.id)
        .await?
        .into_iter()
        .find(|pe| pe.connection_name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            ArmError::not_found(
                "Microsoft.ContainerRegistry/registries/privateEndpointConnections",
                name,
            )
        })
}

/// Approve or reject: `PUT` with `properties.privateLinkServiceConnectionState{status, description}`.
async fn set_connection_state(
    state: &AppState,
    ctx: &ArmCtx,
    r: &Registry,
    name: &str,
    body: &Value,
) -> ArmResult<Response> {
    require_write(
        ctx,
        r,
        "Microsoft.ContainerRegistry/registries/privateEndpointConnections/write",
    )?;
    const PATH: &str = "properties.privateLinkServiceConnectionState.status";
    let wanted = body
        .pointer("/properties/privateLinkServiceConnectionState")
        .ok_or_else(|| {
            ArmError::invalid_property("properties.privateLinkServiceConnectionState", "required")
        })?;
    let status_text = wanted
        .get("status")
        .and_then(Value::as_str)
        .ok_or_else(|| ArmError::invalid_property(PATH, "required: Approved or Rejected"))?;
    let status = ConnectionStatus::parse(status_text).ok_or_else(|| {
        ArmError::invalid_property(
            PATH,
            format!("'{status_text}' is not one of Approved, Rejected"),
        )
    })?;
    let description = wanted
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_string);
    let pe = state
        .meta
        .change_private_endpoint::<_, ArmError>(
            EndpointSelector::Connection {
                registry_id: &r.id,
                connection_name: name,
            },
            &ctx.activity.change(),
            |pe| {
                let status = transition(pe.status, status).map_err(|e| {
                    ArmError::bad_request("BadRequest", e.to_string()).with_target(PATH)
                })?;
                Ok(EndpointChange::SetStatus {
                    status,
                    description: description.unwrap_or_else(|| pe.description.clone()),
                })
            },
        )
        .await
        .map_err(|e| {
            if e.status == StatusCode::NOT_FOUND {
                ArmError::not_found(
                    "Microsoft.ContainerRegistry/registries/privateEndpointConnections",
                    name,
                )
            } else {
                e
            }
        })?
        .ok_or_else(|| ArmError::internal("the connection vanished while it was changed"))?;
    crate::endpoints::refresh(state).await;
    let id = format!(
        "{}/privateEndpointConnections/{}",
        registry_id(&ctx.subscription, &r.resource_group, &r.name),
        pe.connection_name
    );
    Ok(super::lro(
        ctx,
        &id,
        connection_json(&ctx.subscription, r, &pe),
        StatusCode::OK,
    ))
}

fn link_resource(state: &AppState, ctx: &ArmCtx, r: &Registry) -> Value {
    let mut members = vec![GROUP_ID.to_string()];
    // Only a region name makes a data endpoint member (a stored location that is not one makes none).
    if let Some(region) = r.settings.location.region() {
        members.push(format!("registry_data_{region}"));
    }
    json!({
        "id": format!("{}/privateLinkResources/{GROUP_ID}", registry_id(&ctx.subscription, &r.resource_group, &r.name)),
        "name": GROUP_ID,
        "type": "Microsoft.ContainerRegistry/registries/privateLinkResources",
        "properties": {
            "groupId": GROUP_ID,
            "requiredMembers": members,
            "requiredZoneNames": [format!("privatelink.{}", state.config.domain)],
        }
    })
}

// ---------------------------------------------------------------------------------------------------------
// The endpoint resource: Microsoft.Network/privateEndpoints.

pub async fn endpoint_dispatch(
    state: &AppState,
    ctx: &ArmCtx,
    rg: &str,
    rest: &[&str],
    rest_original: &[&str],
    body: &Value,
) -> ArmResult<Response> {
    match (&ctx.method, rest) {
        (&Method::GET, []) => {
            if !ctx.principal.can_read_group(rg) {
                return Err(ctx.principal.denied(
                    "Microsoft.Network/privateEndpoints/read",
                    &format!("/subscriptions/{}/resourceGroups/{rg}", ctx.subscription),
                ));
            }
            let mut value = Vec::new();
            for pe in state.meta.private_endpoints().await? {
                if pe.resource_group.eq_ignore_ascii_case(rg) {
                    let r = state.meta.registry_by_id(&pe.registry_id).await?;
                    value.push(endpoint_json(state, &ctx.subscription, &pe, r.as_ref()));
                }
            }
            Ok(axum::Json(json!({ "value": value })).into_response())
        }
        (&Method::GET, [_]) => {
            let pe = find_endpoint(state, ctx, rg, rest_original[0]).await?;
            let r = state.meta.registry_by_id(&pe.registry_id).await?;
            Ok(
                axum::Json(endpoint_json(state, &ctx.subscription, &pe, r.as_ref()))
                    .into_response(),
            )
        }
        (&Method::GET, [_, "operationstatuses", _]) => {
            let id = endpoint_id(&ctx.subscription, rg, rest_original[0]);
            if !ctx.principal.can_read_group(rg) {
                return Err(ctx.principal.denied(
                    "Microsoft.Network/privateEndpoints/operationStatuses/read",
                    &id,
                ));
            }
            Ok(super::operation_status(&id, rest_original[2]))
        }
        (&Method::PUT, [_]) => create_endpoint(state, ctx, rg, rest_original[0], body).await,
        (&Method::DELETE, [_]) => {
            let name = rest_original[0];
            let id = endpoint_id(&ctx.subscription, rg, name);
            if !ctx.principal.can_write_group(rg) {
                return Err(ctx
                    .principal
                    .denied("Microsoft.Network/privateEndpoints/delete", &id));
            }
            let result = state
                .meta
                .change_private_endpoint::<_, UpdateError>(
                    EndpointSelector::Resource {
                        resource_group: rg,
                        name,
                    },
                    &ctx.activity.change(),
                    |_| Ok(EndpointChange::Delete),
                )
                .await;
            match result {
                Err(UpdateError::NotFound) => Ok(StatusCode::NO_CONTENT.into_response()),
                Err(e) => Err(e.into()),
                Ok(_) => {
                    crate::endpoints::refresh(state).await;
                    Ok(StatusCode::OK.into_response())
                }
            }
        }
        _ => Err(super::unsupported(ctx)),
    }
}

async fn find_endpoint(
    state: &AppState,
    ctx: &ArmCtx,
    rg: &str,
    name: &str,
) -> ArmResult<PrivateEndpoint> {
    if !ctx.principal.can_read_group(rg) {
        return Err(ctx.principal.denied(
            "Microsoft.Network/privateEndpoints/read",
            &endpoint_id(&ctx.subscription, rg, name),
        ));
    }
    state
        .meta
        .private_endpoint(rg, name)
        .await?
        .ok_or_else(|| ArmError::not_found(ENDPOINT_TYPE, name))
}

/// What a `PUT` of an endpoint asks for.
struct EndpointRequest {
    registry: Registry,
    address: HostAddress,
    manual: bool,
    message: String,
}

async fn parse_endpoint(
    state: &AppState,
    ctx: &ArmCtx,
    body: &Value,
) -> ArmResult<EndpointRequest> {
    let props = body
        .get("properties")
        .and_then(Value::as_object)
        .ok_or_else(|| ArmError::invalid_property("properties", "required"))?;
    let mut connections = Vec::new();
    for (key, manual) in [
        ("privateLinkServiceConnections", false),
        ("manualPrivateLinkServiceConnections", true),
    ] {
        if let Some(list) = props.get(key) {
            let list = list.as_array().ok_or_else(|| {
                ArmError::invalid_property(&format!("properties.{key}"), "expected an array")
            })?;
            connections.extend(list.iter().map(|c| (key, c, manual)));
        }
    }
    let [(key, conn, manual)] = connections[..] else {
        return Err(ArmError::invalid_property(
            "properties.privateLinkServiceConnections",
            "exactly one connection is required (privateLinkServiceConnections, or manualPrivateLinkServiceConnections for one that waits for approval)",
        ));
    };
    let path = format!("properties.{key}[0].properties.privateLinkServiceId");
    let service = conn
        .pointer("/properties/privateLinkServiceId")
        .and_then(Value::as_str)
        .ok_or_else(|| ArmError::invalid_property(&path, "required: the registry's resource id"))?;
    let registry = super::registries::by_resource_id(state, ctx, service)
        .await?
    .ok_or_else(|| {
        ArmError::bad_request(
            "PrivateLinkServiceNotFound",
            format!("'{service}' is not a registry on this server. Use the id `moat acr show -n <registry> --query id` prints."),
        )
        .with_target(path.clone())
    })?;
    if let Some(groups) = conn.pointer("/properties/groupIds") {
        let ok = groups
            .as_array()
            .is_some_and(|g| g.len() == 1 && g[0].as_str() == Some(GROUP_ID));
        if !ok {
            return Err(ArmError::invalid_property(
                &format!("properties.{key}[0].properties.groupIds"),
                "a registry's one private link group is [\"registry\"]",
            ));
        }
    }
    let address = props
        .get("ipConfigurations")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .and_then(|c| c.pointer("/properties/privateIPAddress"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ArmError::invalid_property(
                "properties.ipConfigurations[0].properties.privateIPAddress",
                "required: the address on the internal network this endpoint listens on (e.g. 198.18.0.5)",
            )
        })?;
    let address: IpAddr = address.parse().map_err(|_| {
        ArmError::invalid_property(
            "properties.ipConfigurations[0].properties.privateIPAddress",
            format!(
                "'{}' is not an IP address",
                moat_model::text::escape(address)
            ),
        )
    })?;
    let address = HostAddress::new(address).map_err(|e| {
        ArmError::bad_request("PrivateIPAddressInReservedRange", e.to_string())
            .with_target("properties.ipConfigurations[0].properties.privateIPAddress")
    })?;
    let message = conn
        .pointer("/properties/requestMessage")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Ok(EndpointRequest {
        registry,
        address,
        manual,
        message,
    })
}

async fn create_endpoint(
    state: &AppState,
    ctx: &ArmCtx,
    rg: &str,
    name: &str,
    body: &Value,
) -> ArmResult<Response> {
    let id = endpoint_id(&ctx.subscription, rg, name);
    if !ctx.principal.can_write_group(rg) {
        return Err(ctx
            .principal
            .denied("Microsoft.Network/privateEndpoints/write", &id));
    }
    if name.is_empty()
        || name.len() > 80
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ArmError::bad_request(
            "InvalidResourceName",
            format!("Private endpoint name '{name}' is invalid: use 1 to 80 letters, digits, '-', '_' or '.'."),
        ));
    }
    let req = parse_endpoint(state, ctx, body).await?;
    if let Some(existing) = state.meta.private_endpoint(rg, name).await? {
        if existing.registry_id == req.registry.id && existing.address == req.address.ip() {
            return Ok(super::lro(
                ctx,
                &id,
                endpoint_json(state, &ctx.subscription, &existing, Some(&req.registry)),
                StatusCode::OK,
            ));
        }
        return Err(ArmError::bad_request(
            "PrivateEndpointCannotBeUpdated",
            format!("Private endpoint '{name}' exists with another registry or address; delete it first (`moat acr private-endpoint delete -n {name} -g {rg}`)."),
        ));
    }
    // Whoever may change the registry approves their own endpoint, as in Azure; anyone else waits for its owner.
    let approved = !req.manual
        && ctx
            .principal
            .can_write(&req.registry.resource_group, &req.registry.name);
    let (status, description) = if approved {
        (ConnectionStatus::Approved, "Auto-Approved".to_string())
    } else {
        (ConnectionStatus::Pending, req.message.clone())
    };
    // Bind first: an address the server cannot listen on is refused before anything is recorded.
    let listener = state.listeners.bind(req.address).map_err(|e| {
        ArmError::bad_request("PrivateEndpointAddressUnavailable", e.to_string())
            .with_target("properties.ipConfigurations[0].properties.privateIPAddress")
    })?;
    let pe = state
        .meta
        .create_private_endpoint(
            &NewPrivateEndpoint {
                name: name.to_string(),
                resource_group: rg.to_string(),
                registry_id: req.registry.id.clone(),
                registry_name: req.registry.name.clone(),
                address: req.address,
                status,
                description,
            },
            &ctx.activity.change(),
        )
        .await
        .map_err(|e| match e {
            moat_store::StoreError::NotFound => ArmError::bad_request(
                "PrivateLinkServiceNotFound",
                format!(
                    "registry '{}' was deleted while the endpoint was being created",
                    req.registry.name
                ),
            ),
            other => other.into(),
        })?;
    if let Some(l) = listener {
        state.listeners.adopt(&pe, l);
    }
    crate::endpoints::refresh(state).await;
    Ok(super::lro(
        ctx,
        &id,
        endpoint_json(state, &ctx.subscription, &pe, Some(&req.registry)),
        StatusCode::CREATED,
    ))
}

#[cfg(test)]
mod tests {
    use super::host_only;

    #[test]
    fn host_only_strips_the_port() {
        assert_eq!(host_only("app.moat.test:5000"), "app.moat.test");
        assert_eq!(host_only("app.moat.test"), "app.moat.test");
    }
}
