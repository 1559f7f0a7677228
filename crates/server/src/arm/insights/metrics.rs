//! `{registry}/providers/Microsoft.Insights/metrics`, `metricDefinitions`, `metricNamespaces`.
//! (Owned by the metrics work; a stub until it lands.)

use crate::arm::error::ArmResult;
use crate::arm::ArmCtx;
use crate::state::AppState;
use axum::response::Response;
use moat_model::registry::Registry;
use serde_json::Value;

pub async fn dispatch(
    _state: &AppState,
    ctx: &ArmCtx,
    _registry: &Registry,
    _rest: &[&str],
    _body: &Value,
    _query: &str,
) -> ArmResult<Response> {
    Err(crate::arm::unsupported(ctx))
}
