//! Action groups, metric alerts and activity-log alerts (`Microsoft.Insights` in a resource group).
//! (Owned by the alerts work; a stub until it lands.)

use crate::arm::error::ArmResult;
use crate::arm::ArmCtx;
use crate::state::AppState;
use axum::response::Response;
use serde_json::Value;

pub async fn group_dispatch(
    _state: &AppState,
    ctx: &ArmCtx,
    _rg: &str,
    _rest: &[&str],
    _rest_original: &[&str],
    _body: &Value,
    _query: &str,
) -> ArmResult<Response> {
    Err(crate::arm::unsupported(ctx))
}

/// `GET /subscriptions/{sub}/providers/Microsoft.Insights/{actionGroups|metricAlerts|activityLogAlerts}`.
pub async fn subscription_list(
    _state: &AppState,
    ctx: &ArmCtx,
    _rest: &[&str],
    _rest_original: &[&str],
    _body: &Value,
    _query: &str,
) -> ArmResult<Response> {
    Err(crate::arm::unsupported(ctx))
}
