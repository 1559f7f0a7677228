//! `{registry}/webhooks[/{name}[/ping|listEvents|getCallbackConfig]]`: ACR's webhooks.
//! (Owned by the webhooks work; a stub until it lands.)

use crate::arm::error::ArmResult;
use crate::arm::ArmCtx;
use crate::state::AppState;
use axum::response::Response;
use moat_model::registry::Registry;
use serde_json::Value;

/// `rest` is what follows `webhooks` (lower-cased), `rest_original` as sent.
pub async fn dispatch(
    _state: &AppState,
    ctx: &ArmCtx,
    _registry: &Registry,
    _rest: &[&str],
    _rest_original: &[&str],
    _body: &Value,
) -> ArmResult<Response> {
    Err(crate::arm::unsupported(ctx))
}
