//! (Owned by the trail work; a stub until it lands.)

use crate::state::AppState;

pub fn start(_state: &AppState) {}
