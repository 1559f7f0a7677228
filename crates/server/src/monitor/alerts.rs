//! (Owned by the alerts work; a stub until it lands.)

use crate::state::AppState;

pub fn start(_state: &AppState) {}
