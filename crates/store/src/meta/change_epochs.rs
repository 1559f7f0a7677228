//! The change counters other nodes' caches follow (migration 0027): triggers bump a scope's epoch inside the
//! transaction of every change its cache depends on, so a node that sees the epoch move knows its copy is stale
//! whoever made the change — another node, an operator command, the collector.

use super::MetadataStore;
use crate::error::Result;

/// The manifest-by-tag cache: tags, manifests and repositories.
pub const MANIFESTS: &str = "manifests";
/// The registry directory: registries and their private endpoints.
pub const REGISTRIES: &str = "registries";

impl MetadataStore {
    /// Every scope's current epoch.
    pub async fn change_epochs(&self) -> Result<Vec<(String, i64)>> {
        Ok(
            sqlx::query_as("SELECT scope, epoch FROM change_epochs ORDER BY scope")
                .fetch_all(self.reader())
                .await?,
        )
    }
}
