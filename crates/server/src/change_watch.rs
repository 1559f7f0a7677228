//! Keeping this node's caches true to changes made elsewhere. Several `moat serve` processes share one database;
//! each caches manifests by tag and the registry directory. Triggers bump a per-cache epoch in the transaction of
//! every change (`moat_store::meta::change_epochs`); every node reads the epochs a few times a second and drops
//! a cache whose epoch moved. A change committed on one node is therefore served by every other within one poll
//! (plus the request in flight), and a node whose database is briefly away keeps its caches until it can read
//! the epochs again — then drops every cache whose epoch moved meanwhile.

use crate::state::AppState;
use moat_store::meta::change_epochs::{MANIFESTS, REGISTRIES};
use std::collections::HashMap;
use std::time::Duration;

/// How often the epochs are read: well inside the one second a policy change may take to reach every node.
pub const POLL: Duration = Duration::from_millis(250);

pub fn spawn(state: &AppState) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut seen: HashMap<String, i64> = HashMap::new();
        loop {
            match state.meta.change_epochs().await {
                Ok(now) => {
                    for (scope, epoch) in now {
                        let moved = seen
                            .insert(scope.clone(), epoch)
                            .is_some_and(|e| e != epoch);
                        if moved {
                            drop_cache(&state, &scope);
                        }
                    }
                }
                Err(e) => tracing::debug!("reading change epochs: {e}"),
            }
            tokio::time::sleep(POLL).await;
        }
    });
}

fn drop_cache(state: &AppState, scope: &str) {
    match scope {
        MANIFESTS => state.manifest_cache.invalidate(),
        REGISTRIES => state.registries.invalidate(),
        _ => {}
    }
}
