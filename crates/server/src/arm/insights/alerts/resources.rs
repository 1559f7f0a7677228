//! GET/PUT/PATCH/DELETE/list of the three resource types.

use crate::arm::error::{ArmError, ArmResult};
use crate::arm::ArmCtx;
use crate::state::AppState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use moat_auth::sealed::SecretBox;
use moat_model::monitor::alert::{self, AlertError, AlertKind};
use moat_store::meta::AlertResourceRow;
use serde_json::{json, Map, Value};

fn arm_error(e: AlertError) -> ArmError {
    let err = ArmError::bad_request(e.code, e.message);
    match e.target {
        Some(t) => err.with_target(t),
        None => err,
    }
}

fn check_name(kind: AlertKind, name: &str) -> ArmResult<()> {
    let bad = name.is_empty()
        || name.len() > 260
        || name.ends_with('.')
        || name.ends_with(' ')
        || name
            .chars()
            .any(|c| c.is_control() || "<>%&:\\?/#*".contains(c));
    if bad {
        return Err(ArmError::bad_request(
            "InvalidResourceName",
            format!(
                "The {} name '{name}' is invalid: 1 to 260 characters, none of <>%&:\\?/#* or control characters, not ending in '.' or a space",
                kind.segment()
            ),
        ));
    }
    Ok(())
}

fn resource_id(ctx: &ArmCtx, kind: AlertKind, rg: &str, name: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.Insights/{}/{name}",
        ctx.subscription,
        kind.segment()
    )
}

/// The seal context of a receiver's URL: bound to its action group and name.
pub fn receiver_context(group_id: &str, receiver: &str) -> String {
    format!(
        "alerts:{}:{}",
        group_id.to_ascii_lowercase(),
        receiver.to_ascii_lowercase()
    )
}

fn to_json(r: &AlertResourceRow, kind: AlertKind) -> Value {
    json!({
        "id": r.id, "name": r.name, "type": kind.arm_type(), "location": r.location,
        "tags": r.tags, "properties": r.properties,
    })
}

pub async fn list(
    state: &AppState,
    _ctx: &ArmCtx,
    kind: AlertKind,
    rg: Option<&str>,
) -> ArmResult<Response> {
    let rows = state.meta.alert_resources(kind.as_str(), rg).await?;
    let value: Vec<Value> = rows.iter().map(|r| to_json(r, kind)).collect();
    Ok(axum::Json(json!({ "value": value })).into_response())
}

fn not_found(kind: AlertKind, rg: &str, name: &str) -> ArmError {
    ArmError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource 'Microsoft.Insights/{}/{name}' under resource group '{rg}' was not found.",
            kind.segment()
        ),
    )
}

pub async fn get(
    state: &AppState,
    _ctx: &ArmCtx,
    kind: AlertKind,
    rg: &str,
    name: &str,
) -> ArmResult<Response> {
    let r = state
        .meta
        .alert_resource(kind.as_str(), rg, name)
        .await?
        .ok_or_else(|| not_found(kind, rg, name))?;
    Ok(axum::Json(to_json(&r, kind)).into_response())
}

pub async fn delete(
    state: &AppState,
    ctx: &ArmCtx,
    kind: AlertKind,
    rg: &str,
    name: &str,
) -> ArmResult<Response> {
    let deleted = state
        .meta
        .delete_alert_resource(kind.as_str(), rg, name, &ctx.activity.change())
        .await?;
    let status = if deleted {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    };
    Ok(status.into_response())
}

/// `PATCH`: tags and `properties.enabled` (what the update commands and the SDK's `update` send), applied to the
/// stored resource and checked again like a `PUT`.
pub async fn patch(
    state: &AppState,
    ctx: &ArmCtx,
    kind: AlertKind,
    rg: &str,
    name: &str,
    body: &Value,
) -> ArmResult<Response> {
    let r = state
        .meta
        .alert_resource(kind.as_str(), rg, name)
        .await?
        .ok_or_else(|| not_found(kind, rg, name))?;
    let mut merged = to_json(&r, kind);
    if let Some(tags) = body.get("tags").filter(|t| t.is_object()) {
        merged["tags"] = tags.clone();
    }
    if let Some(enabled) = body.pointer("/properties/enabled") {
        merged["properties"]["enabled"] = enabled.clone();
    }
    put(state, ctx, kind, rg, name, &merged).await
}

pub async fn put(
    state: &AppState,
    ctx: &ArmCtx,
    kind: AlertKind,
    rg: &str,
    name: &str,
    body: &Value,
) -> ArmResult<Response> {
    check_name(kind, name)?;
    let props = body
        .get("properties")
        .ok_or_else(|| ArmError::invalid_property("properties", "required"))?;
    let location = match body.get("location") {
        Some(Value::String(l)) if !l.trim().is_empty() => l.clone(),
        None | Some(Value::Null) => "global".into(),
        _ => return Err(ArmError::invalid_property("location", "must be a string")),
    };
    let tags = match body.get("tags") {
        None | Some(Value::Null) => json!({}),
        Some(t @ Value::Object(m)) if m.values().all(Value::is_string) => t.clone(),
        _ => {
            return Err(ArmError::invalid_property(
                "tags",
                "must be an object of strings",
            ))
        }
    };
    let existing = state.meta.alert_resource(kind.as_str(), rg, name).await?;
    let id = existing
        .as_ref()
        .map(|e| e.id.clone())
        .unwrap_or_else(|| resource_id(ctx, kind, rg, name));
    let mut secrets = json!({});
    let mut from_seq = 0;
    let properties = match kind {
        AlertKind::ActionGroup => {
            let group = alert::parse_action_group(props).map_err(arm_error)?;
            secrets = seal_receivers(state, &id, &group, existing.as_ref())?;
            group.to_json()
        }
        AlertKind::MetricAlert => {
            let rule = alert::parse_metric_alert(props).map_err(arm_error)?;
            for (i, scope) in rule.scopes.iter().enumerate() {
                check_registry_scope(state, ctx, scope, &format!("properties.scopes[{i}]")).await?;
            }
            for (i, a) in rule.actions.iter().enumerate() {
                check_action_group(
                    state,
                    ctx,
                    &a.action_group_id,
                    &format!("properties.actions[{i}].actionGroupId"),
                )
                .await?;
            }
            rule.to_json()
        }
        AlertKind::ActivityLogAlert => {
            let rule = alert::parse_activity_log_alert(props).map_err(arm_error)?;
            for (i, scope) in rule.scopes.iter().enumerate() {
                let sub = format!("/subscriptions/{}", ctx.subscription).to_ascii_lowercase();
                let s = scope.trim_end_matches('/').to_ascii_lowercase();
                if s != sub && !s.starts_with(&format!("{sub}/")) {
                    return Err(ArmError::bad_request(
                        "InvalidScope",
                        format!(
                            "scope '{scope}' is not in subscription {}",
                            ctx.subscription
                        ),
                    )
                    .with_target(format!("properties.scopes[{i}]")));
                }
                if s.contains("/providers/microsoft.containerregistry/registries/") {
                    check_registry_scope(state, ctx, scope, &format!("properties.scopes[{i}]"))
                        .await?;
                }
            }
            for (i, a) in rule.actions.iter().enumerate() {
                check_action_group(
                    state,
                    ctx,
                    &a.action_group_id,
                    &format!("properties.actions.actionGroups[{i}].actionGroupId"),
                )
                .await?;
            }
            // A new rule sees what happens from now on, never the log's past.
            from_seq = match &existing {
                Some(e) => e.from_seq,
                None => state.meta.activity_last_seq().await?,
            };
            rule.to_json()
        }
    };
    let now = moat_store::time_fmt::now();
    let caller = ctx.principal.app_id.clone();
    let row = AlertResourceRow {
        kind: kind.as_str().into(),
        resource_group: rg.to_string(),
        id,
        name: existing
            .as_ref()
            .map(|e| e.name.clone())
            .unwrap_or_else(|| name.to_string()),
        location,
        tags,
        properties,
        secrets,
        from_seq,
        created_at: existing
            .as_ref()
            .map(|e| e.created_at.clone())
            .unwrap_or_else(|| now.clone()),
        created_by: existing
            .as_ref()
            .map(|e| e.created_by.clone())
            .unwrap_or_else(|| caller.clone()),
        updated_at: now,
        updated_by: caller,
    };
    let created = state
        .meta
        .put_alert_resource(&row, &ctx.activity.change())
        .await?;
    // Azure answers a new metric alert with 200 (az treats a 201 there as an error); the others with 201.
    let status = if created && kind != AlertKind::MetricAlert {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(to_json(&row, kind))).into_response())
}

/// Seals each receiver's URL. A URL sent back as GET showed it (redacted) keeps the stored one: `az … update`
/// reads the resource and sends it back whole.
fn seal_receivers(
    state: &AppState,
    group_id: &str,
    group: &alert::ActionGroup,
    existing: Option<&AlertResourceRow>,
) -> ArmResult<Value> {
    let sb = SecretBox::new(state.keys.secrets.clone());
    let mut out = Map::new();
    for r in &group.webhook_receivers {
        let ctx_str = receiver_context(group_id, &r.name);
        let kept = existing.and_then(|e| {
            let sealed = e.secrets.get(r.name.to_ascii_lowercase())?.as_str()?;
            let uri = sb.open(sealed, &ctx_str).ok()?;
            (alert::redact_uri(&uri) == r.service_uri).then(|| sealed.to_string())
        });
        let sealed = match kept {
            Some(s) => s,
            None => sb
                .seal(&r.service_uri, &ctx_str)
                .map_err(ArmError::internal)?,
        };
        out.insert(r.name.to_ascii_lowercase(), Value::String(sealed));
    }
    Ok(Value::Object(out))
}

/// A scope that names a registry: one of this server's, that the caller may read.
async fn check_registry_scope(
    state: &AppState,
    ctx: &ArmCtx,
    scope: &str,
    path: &str,
) -> ArmResult<()> {
    let found = crate::arm::registries::by_resource_id(state, ctx, scope).await?;
    let Some(r) = found else {
        return Err(ArmError::bad_request(
            "InvalidScope",
            format!("{path} '{scope}' is not a registry of this server (metric alerts watch a registry: its resource id, as `az acr show --query id` prints it)"),
        )
        .with_target(path));
    };
    crate::arm::registries::require_read(ctx, &r, "Microsoft.ContainerRegistry/registries/read")
}

async fn check_action_group(state: &AppState, ctx: &ArmCtx, id: &str, path: &str) -> ArmResult<()> {
    let ok = id.to_ascii_lowercase().starts_with(&format!(
        "/subscriptions/{}/",
        ctx.subscription.to_ascii_lowercase()
    )) && state
        .meta
        .alert_resource_by_id(AlertKind::ActionGroup.as_str(), id)
        .await?
        .is_some();
    if !ok {
        return Err(ArmError::bad_request(
            "ActionGroupNotFound",
            format!("{path} '{id}' is not an action group of this subscription (create it first: az monitor action-group create)"),
        )
        .with_target(path));
    }
    Ok(())
}
