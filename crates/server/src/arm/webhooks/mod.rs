//! `{registry}/webhooks[/{name}[/ping|listEvents|getCallbackConfig]]`: ACR's webhooks. This module parses,
//! authorizes and answers; sealing, queueing and delivery are `crate::monitor::webhooks`'. The service URI and
//! custom headers never appear in GET or list: only `getCallbackConfig` returns them, to a caller who may write.

mod json;

use super::error::{ArmError, ArmResult};
use super::registries::{require_read, require_write};
use super::registry_json::registry_id;
use super::ArmCtx;
use crate::monitor::webhooks as service;
use crate::state::AppState;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use moat_model::monitor::webhook;
use moat_model::registry::Registry;
use serde_json::{json, Value};

const TYPE: &str = "Microsoft.ContainerRegistry/registries/webhooks";
/// listEvents answers the newest deliveries first, this many at most.
const EVENTS_PAGE: i64 = 100;

/// `rest` is what follows `webhooks` (lower-cased), `rest_original` as sent.
pub async fn dispatch(
    state: &AppState,
    ctx: &ArmCtx,
    registry: &Registry,
    rest: &[&str],
    rest_original: &[&str],
    body: &Value,
) -> ArmResult<Response> {
    let reg_id = registry_id(&ctx.subscription, &registry.resource_group, &registry.name);
    let r = registry;
    match (&ctx.method, rest) {
        (&Method::GET, []) => {
            require_read(ctx, r, &format!("{TYPE}/read"))?;
            let value: Vec<Value> = state
                .meta
                .webhooks(&r.id)
                .await?
                .iter()
                .map(|h| json::webhook_json(&reg_id, h))
                .collect();
            Ok(axum::Json(json!({ "value": value })).into_response())
        }
        (&Method::GET, [_]) => {
            require_read(ctx, r, &format!("{TYPE}/read"))?;
            let h = find(state, r, rest_original[0]).await?;
            Ok(axum::Json(json::webhook_json(&reg_id, &h)).into_response())
        }
        (&Method::GET, [_, "operationstatuses", _]) => {
            require_read(ctx, r, &format!("{TYPE}/read"))?;
            let h = find(state, r, rest_original[0]).await?;
            Ok(super::operation_status(
                &format!("{reg_id}/webhooks/{}", h.name),
                rest_original[2],
            ))
        }
        (&Method::PUT, [_]) => put(state, ctx, r, &reg_id, rest_original[0], body, false).await,
        (&Method::PATCH, [_]) => put(state, ctx, r, &reg_id, rest_original[0], body, true).await,
        (&Method::DELETE, [_]) => {
            require_write(ctx, r, &format!("{TYPE}/delete"))?;
            let gone = state
                .meta
                .delete_webhook(&r.id, rest_original[0], &ctx.activity.change())
                .await?;
            Ok(if gone {
                StatusCode::OK
            } else {
                StatusCode::NO_CONTENT
            }
            .into_response())
        }
        (&Method::POST, [_, "ping"]) => {
            require_write(ctx, r, &format!("{TYPE}/ping/action"))?;
            let h = find(state, r, rest_original[0]).await?;
            let id = service::ping(state, &h, &r.login_server).await?;
            Ok(axum::Json(json!({ "id": id })).into_response())
        }
        (&Method::POST, [_, "listevents"]) => {
            require_write(ctx, r, &format!("{TYPE}/listEvents/action"))?;
            let h = find(state, r, rest_original[0]).await?;
            list_events(state, ctx, &reg_id, r, &h).await
        }
        (&Method::POST, [_, "getcallbackconfig"]) => {
            // ACR requires `…/webhooks/getCallbackConfig/action`, which only writing roles hold.
            require_write(ctx, r, &format!("{TYPE}/getCallbackConfig/action"))?;
            let h = find(state, r, rest_original[0]).await?;
            let (uri, headers) = service::callback_config(state, &h).await?;
            Ok(axum::Json(json!({ "serviceUri": uri, "customHeaders": headers })).into_response())
        }
        _ => Err(super::unsupported(ctx)),
    }
}

/// `listEvents`: the newest deliveries first, a page at a time (`$top`, default 100); `nextLink` carries the
/// id to go on below (`$skipToken`).
async fn list_events(
    state: &AppState,
    ctx: &ArmCtx,
    reg_id: &str,
    r: &Registry,
    h: &moat_store::meta::WebhookRow,
) -> ArmResult<Response> {
    let param = |k: &str| {
        crate::oci::query_param(&ctx.query, k)
            .or_else(|| crate::oci::query_param(&ctx.query, &k.replace('$', "%24")))
    };
    let bad =
        |what: &str| ArmError::bad_request("InvalidParameter", format!("{what} is not valid here"));
    let top = match param("$top") {
        None => EVENTS_PAGE,
        Some(t) => t
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| bad("$top"))?,
    };
    let before = match param("$skipToken") {
        None => None,
        Some(t) => Some(
            t.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad("$skipToken"))?,
        ),
    };
    let rows = state
        .meta
        .webhook_deliveries(&r.id, &h.name, before, top)
        .await?;
    let value: Vec<Value> = rows.iter().map(service::event_json).collect();
    let mut body = json!({ "value": value });
    if rows.len() as i64 == top {
        if let Some(last) = rows.last() {
            body["nextLink"] = format!(
                "{}{reg_id}/webhooks/{}/listEvents?api-version={}&$top={top}&$skipToken={}",
                ctx.base_url, h.name, ctx.api_version, last.id
            )
            .into();
        }
    }
    Ok(axum::Json(body).into_response())
}

async fn find(
    state: &AppState,
    r: &Registry,
    name: &str,
) -> ArmResult<moat_store::meta::WebhookRow> {
    state
        .meta
        .webhook(&r.id, name)
        .await?
        .ok_or_else(|| ArmError::not_found(TYPE, name))
}

/// PUT (create or replace) and PATCH (update what the body names).
async fn put(
    state: &AppState,
    ctx: &ArmCtx,
    r: &Registry,
    reg_id: &str,
    name: &str,
    body: &Value,
    patch: bool,
) -> ArmResult<Response> {
    require_write(ctx, r, &format!("{TYPE}/write"))?;
    webhook::check_name(name).map_err(|e| {
        ArmError::bad_request("InvalidResourceName", e.to_string()).with_target("webhookName")
    })?;
    let existing = state.meta.webhook(&r.id, name).await?;
    if patch && existing.is_none() {
        return Err(ArmError::not_found(TYPE, name));
    }
    let spec = json::parse(body, patch)?;
    let location = json::location(r, spec.location.as_deref())?;
    let now = moat_store::time_fmt::now();
    let base = existing.clone();
    let row = moat_store::meta::WebhookRow {
        registry_id: r.id.clone(),
        name: base
            .as_ref()
            .map(|b| b.name.clone())
            .unwrap_or_else(|| name.to_string()),
        location: match (&spec.location, &base) {
            (None, Some(b)) if patch => b.location.clone(),
            _ => location,
        },
        tags: spec
            .tags
            .clone()
            .or_else(|| base.as_ref().filter(|_| patch).map(|b| b.tags.clone()))
            .unwrap_or_else(|| json!({})),
        enabled: spec
            .enabled
            .or_else(|| base.as_ref().map(|b| b.enabled))
            .unwrap_or(true),
        scope: spec
            .scope
            .clone()
            .or_else(|| base.as_ref().map(|b| b.scope.clone()))
            .unwrap_or_default(),
        actions: spec
            .actions
            .clone()
            .or_else(|| base.as_ref().map(|b| b.actions.clone()))
            .unwrap_or_default(),
        service_uri_sealed: String::new(),
        custom_headers_sealed: String::new(),
        header_names: vec![],
        created: now.clone(),
        updated: now,
    };
    if row.actions.is_empty() {
        return Err(ArmError::invalid_property(
            "properties.actions",
            "a webhook needs at least one action: push, delete",
        ));
    }
    let mut row = row;
    let sealed_name = row.name.clone();
    match &spec.service_uri {
        Some(uri) => {
            row.service_uri_sealed =
                service::seal_uri(state, &r.id, &sealed_name, uri).map_err(ArmError::internal)?;
        }
        None if existing.is_none() => {
            return Err(ArmError::invalid_property(
                "properties.serviceUri",
                "a webhook needs a service URI",
            ))
        }
        None => {}
    }
    // A PUT replaces the headers (none given: none); a PATCH keeps them unless it names new ones.
    let headers = match (&spec.custom_headers, patch) {
        (Some(h), _) => Some(h.clone()),
        (None, false) => Some(Default::default()),
        (None, true) => None,
    };
    if let Some(h) = headers {
        row.custom_headers_sealed =
            service::seal_headers(state, &r.id, &sealed_name, &h).map_err(ArmError::internal)?;
        row.header_names = h.keys().cloned().collect();
    }
    let (stored, created) = state
        .meta
        .put_webhook(&row, webhook::limit(r.settings.sku), &ctx.activity.change())
        .await
        .map_err(|e| match e {
            moat_store::StoreError::Limit(m) => ArmError::bad_request("QuotaExceeded", m),
            moat_store::StoreError::NotFound => {
                ArmError::not_found("Microsoft.ContainerRegistry/registries", &r.name)
            }
            other => other.into(),
        })?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let id = format!("{reg_id}/webhooks/{}", stored.name);
    Ok(super::lro(
        ctx,
        &id,
        json::webhook_json(reg_id, &stored),
        status,
    ))
}
