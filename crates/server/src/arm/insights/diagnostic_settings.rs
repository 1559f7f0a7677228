//! `{registry}/providers/Microsoft.Insights/diagnosticSettings[/{name}]` and `diagnosticSettingsCategories`.
//! (Owned by the diagnostic-settings work; a stub until it lands.)

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
    _rest_original: &[&str],
    _body: &Value,
    _query: &str,
) -> ArmResult<Response> {
    Err(crate::arm::unsupported(ctx))
}
