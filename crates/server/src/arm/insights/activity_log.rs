//! `GET /subscriptions/{sub}/providers/Microsoft.Insights/eventtypes/management/values?$filter=…`: the activity
//! log as Azure serves it. (Owned by the activity-log work; a stub until it lands.)

use crate::arm::error::ArmResult;
use crate::arm::ArmCtx;
use crate::state::AppState;
use axum::response::Response;

pub async fn list(_state: &AppState, ctx: &ArmCtx, _query: &str) -> ArmResult<Response> {
    Err(crate::arm::unsupported(ctx))
}
