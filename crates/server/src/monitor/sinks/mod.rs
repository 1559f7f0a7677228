//! Diagnostic-setting sinks: the delivery loop that takes each setting's records from the logs after its cursor
//! and ships them to its destinations. (Owned by the diagnostic-settings work; a stub until it lands.)

pub mod partner;
pub mod sink;

use crate::state::AppState;

pub fn start(_state: &AppState) {}
