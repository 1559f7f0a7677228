//! Action groups, metric alerts and activity-log alerts (`Microsoft.Insights` in a resource group), as
//! `az monitor action-group|metrics alert|activity-log alert` and azure-mgmt-monitor send them. Handlers parse
//! (`moat_model::monitor::alert`), check what the rule names (registries the caller may read, action groups that
//! exist), seal webhook URLs, and store; evaluation and delivery are `crate::monitor::alerts`.

mod resources;

pub use resources::receiver_context;

use crate::arm::error::ArmResult;
use crate::arm::ArmCtx;
use crate::state::AppState;
use axum::http::Method;
use axum::response::Response;
use moat_model::monitor::alert::AlertKind;
use serde_json::Value;

pub async fn group_dispatch(
    state: &AppState,
    ctx: &ArmCtx,
    rg: &str,
    rest: &[&str],
    rest_original: &[&str],
    body: &Value,
    _query: &str,
) -> ArmResult<Response> {
    let Some(kind) = rest.first().and_then(|s| AlertKind::from_segment(s)) else {
        return Err(crate::arm::unsupported(ctx));
    };
    match (&ctx.method, rest_original) {
        (&Method::GET, [_]) => resources::list(state, ctx, kind, Some(rg)).await,
        (&Method::GET, [_, name]) => resources::get(state, ctx, kind, rg, name).await,
        (&Method::PUT, [_, name]) => resources::put(state, ctx, kind, rg, name, body).await,
        (&Method::PATCH, [_, name]) => resources::patch(state, ctx, kind, rg, name, body).await,
        (&Method::DELETE, [_, name]) => resources::delete(state, ctx, kind, rg, name).await,
        _ => Err(crate::arm::unsupported(ctx)),
    }
}

/// `GET /subscriptions/{sub}/providers/Microsoft.Insights/{actionGroups|metricAlerts|activityLogAlerts}`.
pub async fn subscription_list(
    state: &AppState,
    ctx: &ArmCtx,
    rest: &[&str],
    _rest_original: &[&str],
    _body: &Value,
    _query: &str,
) -> ArmResult<Response> {
    let Some(kind) = rest.first().and_then(|s| AlertKind::from_segment(s)) else {
        return Err(crate::arm::unsupported(ctx));
    };
    resources::list(state, ctx, kind, None).await
}
