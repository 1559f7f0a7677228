//! A setting's `marketplacePartnerId`: a SIEM sink the operator registered with `moat monitor sink add`
//! (syslog over TLS, HTTP JSON; `super::partner`), looked up by its id.

use super::sink::{Sink, SinkError};
use crate::state::AppState;

fn not_registered(id: &str) -> String {
    format!(
        "the partner sink '{}' is not registered with Moat: add it with `moat monitor sink add` and use the id it prints as marketplacePartnerId",
        moat_model::text::escape(id)
    )
}

/// Opens the partner sink `id` names.
pub async fn open(state: &AppState, id: &str) -> Result<Box<dyn Sink>, SinkError> {
    match state.meta.partner_sink(id).await {
        Ok(Some(row)) => super::partner::open(state, &row).await,
        Ok(None) => Err(SinkError::Misconfigured(not_registered(id))),
        Err(e) => Err(SinkError::Unavailable {
            message: e.to_string(),
            delivered: 0,
        }),
    }
}

/// Checks that `id` names a registered partner sink that answers (the settings PUT refuses one that does not).
pub async fn probe(state: &AppState, id: &str) -> Result<(), String> {
    let row = state
        .meta
        .partner_sink(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| not_registered(id))?;
    super::partner::probe(state, &row).await.map_err(|e| {
        format!(
            "the partner sink '{}' cannot be reached: {e}",
            moat_model::text::escape(id)
        )
    })
}
