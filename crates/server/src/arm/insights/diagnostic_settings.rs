//! `{registry}/providers/Microsoft.Insights/diagnosticSettings[/{name}]` and `diagnosticSettingsCategories`
//! (api-version 2021-05-01-preview's shapes): parse, check, store, answer. Delivery is `crate::monitor::sinks`.

use crate::arm::error::{ArmError, ArmResult};
use crate::arm::ArmCtx;
use crate::monitor::sinks::{self, DestinationError};
use crate::state::AppState;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use moat_model::monitor::diagnostic_setting::{categories_json, DiagnosticSetting, SettingError};
use moat_model::registry::Registry;
use moat_store::meta::DiagnosticSettingRow;
use serde_json::{json, Value};

pub async fn dispatch(
    state: &AppState,
    ctx: &ArmCtx,
    registry: &Registry,
    rest: &[&str],
    rest_original: &[&str],
    body: &Value,
    _query: &str,
) -> ArmResult<Response> {
    let registry_id = crate::arm::registry_json::registry_id(
        &ctx.subscription,
        &registry.resource_group,
        &registry.name,
    );
    match (&ctx.method, rest) {
        (&Method::GET, ["diagnosticsettingscategories"]) => {
            Ok(axum::Json(json!({ "value": categories_json(&registry_id) })).into_response())
        }
        (&Method::GET, ["diagnosticsettingscategories", name]) => categories_json(&registry_id)
            .into_iter()
            .find(|c| {
                c["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .map(|c| axum::Json(c).into_response())
            .ok_or_else(|| ArmError::not_found("diagnosticSettingsCategories", rest_original[1])),
        (&Method::GET, ["diagnosticsettings"]) => {
            let value: Vec<Value> = state
                .meta
                .diagnostic_settings(&registry.id)
                .await?
                .iter()
                .map(|r| setting_json(&registry_id, r))
                .collect();
            Ok(axum::Json(json!({ "value": value })).into_response())
        }
        (&Method::GET, ["diagnosticsettings", _]) => {
            let name = rest_original[1];
            let row = state
                .meta
                .diagnostic_setting(&registry.id, name)
                .await?
                .ok_or_else(|| ArmError::not_found("diagnosticSettings", name))?;
            Ok(axum::Json(setting_json(&registry_id, &row)).into_response())
        }
        (&Method::PUT, ["diagnosticsettings", _]) => {
            put(state, ctx, registry, &registry_id, rest_original[1], body).await
        }
        (&Method::DELETE, ["diagnosticsettings", _]) => {
            let name = rest_original[1];
            let deleted = state
                .meta
                .delete_diagnostic_setting(&registry.id, name, &ctx.activity.change())
                .await?;
            Ok(if deleted {
                StatusCode::OK
            } else {
                StatusCode::NO_CONTENT
            }
            .into_response())
        }
        _ => Err(crate::arm::unsupported(ctx)),
    }
}

fn setting_json(registry_id: &str, row: &DiagnosticSettingRow) -> Value {
    let props = serde_json::from_value::<DiagnosticSetting>(row.body.clone())
        .map(|s| s.properties_json())
        .unwrap_or(Value::Null);
    json!({
        "id": format!("{registry_id}/providers/microsoft.insights/diagnosticSettings/{}", row.name),
        "name": row.name,
        "type": "Microsoft.Insights/diagnosticSettings",
        "systemData": null,
        "properties": props,
    })
}

fn destinations_error(e: DestinationError) -> ArmError {
    match e {
        DestinationError::Refused(m) => ArmError::bad_request("BadRequest", m),
        DestinationError::Internal(e) => ArmError::internal(format!("{e:#}")),
    }
}

fn setting_error(e: SettingError) -> ArmError {
    ArmError::bad_request(e.code, e.message).with_target(e.target)
}

/// Azure's rule for a setting's name: 1 to 260 characters, none of `<>*%&:\?/#` nor control characters.
fn check_name(name: &str) -> ArmResult<()> {
    let ok = !name.is_empty()
        && name.chars().count() <= 260
        && !name
            .chars()
            .any(|c| c.is_control() || "<>*%&:\\?/#".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ArmError::bad_request(
            "InvalidResourceName",
            format!(
                "'{}' is not a diagnostic setting name: 1 to 260 characters, none of <>*%&:\\?/# nor control characters",
                moat_model::text::escape(name)
            ),
        )
        .with_target("name"))
    }
}

async fn put(
    state: &AppState,
    ctx: &ArmCtx,
    registry: &Registry,
    registry_id: &str,
    name: &str,
    body: &Value,
) -> ArmResult<Response> {
    check_name(name)?;
    let props = body.get("properties").cloned().unwrap_or(Value::Null);
    let setting = DiagnosticSetting::parse(&props).map_err(setting_error)?;
    let others: Vec<DiagnosticSetting> = state
        .meta
        .diagnostic_settings(&registry.id)
        .await?
        .into_iter()
        .filter(|r| !r.name.eq_ignore_ascii_case(name))
        .filter_map(|r| serde_json::from_value(r.body).ok())
        .collect();
    let sink_ctx = sinks::Context {
        setting: setting.clone(),
        subscription: ctx.subscription.clone(),
        registry_name: registry.name.to_ascii_lowercase(),
        resource_id: registry_id.to_string(),
        location: registry.settings.location.as_str().to_string(),
    };
    sinks::check_destinations(state, &sink_ctx, &others)
        .await
        .map_err(destinations_error)?;
    let stored = serde_json::to_value(&setting).map_err(ArmError::internal)?;
    let (row, _created) = state
        .meta
        .put_diagnostic_setting(&registry.id, name, &stored, &ctx.activity.change())
        .await?;
    sinks::register(state, &row)
        .await
        .map_err(ArmError::internal)?;
    Ok(axum::Json(setting_json(registry_id, &row)).into_response())
}
