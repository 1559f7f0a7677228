//! Azure Monitor (`Microsoft.Insights`) as ARM serves it for a registry: diagnostic settings and metrics on the
//! registry's resource id, action groups and alert rules in a resource group, the activity log on the
//! subscription. This module only routes and authorizes; each resource has its own module, and the work (sinks,
//! aggregation, alert evaluation) lives in `crate::monitor`.

pub mod activity_log;
pub mod alerts;
pub mod diagnostic_settings;
pub mod metrics;

use super::error::{ArmError, ArmResult};
use super::ArmCtx;
use crate::state::AppState;
use axum::http::Method;
use axum::response::Response;
use serde_json::Value;

/// Whether a (lower-cased) path is one of Azure Monitor's: `…/providers/microsoft.insights/…` anywhere.
pub fn is_insights_path(l: &[&str]) -> bool {
    l.windows(2)
        .any(|w| w[0] == "providers" && w[1] == "microsoft.insights")
}

/// `{registry id}/providers/Microsoft.Insights/{rest}`. `rest` is lower-cased, `rest_original` as sent.
#[allow(clippy::too_many_arguments)]
pub async fn registry_dispatch(
    state: &AppState,
    ctx: &ArmCtx,
    rg: &str,
    name: &str,
    rest: &[&str],
    rest_original: &[&str],
    body: &Value,
    query: &str,
) -> ArmResult<Response> {
    let read_only = matches!(ctx.method, Method::GET | Method::HEAD);
    let allowed = if read_only {
        ctx.principal.can_read(rg, name)
    } else {
        ctx.principal.can_write(rg, name)
    };
    let registry_id = super::registry_json::registry_id(&ctx.subscription, rg, name);
    if !allowed {
        return Err(ctx
            .principal
            .denied(&ctx.activity.operation().operation_name, &registry_id));
    }
    let name = super::registries::parse_name(name)?;
    let registry = super::registries::find(state, rg, &name).await?;
    match rest {
        ["diagnosticsettings", ..] | ["diagnosticsettingscategories", ..] => {
            diagnostic_settings::dispatch(state, ctx, &registry, rest, rest_original, body, query)
                .await
        }
        ["metrics"] | ["metricdefinitions"] | ["metricnamespaces"] => {
            metrics::dispatch(state, ctx, &registry, rest, body, query).await
        }
        _ => Err(super::unsupported(ctx)),
    }
}

/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Insights/{rest}`.
pub async fn group_dispatch(
    state: &AppState,
    ctx: &ArmCtx,
    rg: &str,
    rest: &[&str],
    rest_original: &[&str],
    body: &Value,
    query: &str,
) -> ArmResult<Response> {
    let read_only = matches!(ctx.method, Method::GET | Method::HEAD);
    let allowed = if read_only {
        ctx.principal.can_read_group(rg)
    } else {
        ctx.principal.can_write_group(rg)
    };
    if !allowed {
        let scope = format!("/subscriptions/{}/resourceGroups/{rg}", ctx.subscription);
        return Err(ctx
            .principal
            .denied(&ctx.activity.operation().operation_name, &scope));
    }
    match rest {
        ["actiongroups" | "metricalerts" | "activitylogalerts", ..] => {
            alerts::group_dispatch(state, ctx, rg, rest, rest_original, body, query).await
        }
        _ => Err(super::unsupported(ctx)),
    }
}

/// `/subscriptions/{sub}/providers/Microsoft.Insights/{rest}`.
pub async fn subscription_dispatch(
    state: &AppState,
    ctx: &ArmCtx,
    rest: &[&str],
    rest_original: &[&str],
    body: &Value,
    query: &str,
) -> ArmResult<Response> {
    match rest {
        ["eventtypes", "management", "values"] if ctx.method == Method::GET => {
            activity_log::list(state, ctx, query).await
        }
        ["actiongroups" | "metricalerts" | "activitylogalerts"] if ctx.method == Method::GET => {
            alerts::subscription_list(state, ctx, rest, rest_original, body, query).await
        }
        _ => Err(super::unsupported(ctx)),
    }
}

/// An ARM error for a request this module's routes refuse as malformed.
pub fn invalid(code: &str, message: impl Into<String>) -> ArmError {
    ArmError::bad_request(code, message)
}
