//! A read-through cache of manifests by tag. Any manifest write clears it; a generation counter keeps a read
//! that raced a write from putting the old answer back after the clear.

use moat_model::{Reference, RepositoryName};
use moat_store::meta::StoredManifest;
use moat_store::{MetadataStore, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

type Key = (String, String, String);

#[derive(Clone, Default)]
pub struct ManifestCache {
    generation: Arc<AtomicU64>,
    entries: Arc<RwLock<HashMap<Key, Arc<StoredManifest>>>>,
}

/// Bounds memory: manifests are at most 4 MiB, most a few KiB.
const MAX_ENTRIES: usize = 4096;

impl ManifestCache {
    pub async fn get(
        &self,
        meta: &MetadataStore,
        registry_id: &str,
        repo: &RepositoryName,
        reference: &Reference,
    ) -> Result<Option<Arc<StoredManifest>>, StoreError> {
        let Reference::Tag(tag) = reference else {
            return Ok(meta
                .manifest(registry_id, repo, reference)
                .await?
                .map(Arc::new));
        };
        let key = (registry_id.to_string(), repo.to_string(), tag.to_string());
        if let Some(m) = self.entries.read().expect("lock").get(&key) {
            return Ok(Some(m.clone()));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let found = meta
            .manifest(registry_id, repo, reference)
            .await?
            .map(Arc::new);
        if let Some(m) = &found {
            let mut entries = self.entries.write().expect("lock");
            if self.generation.load(Ordering::Acquire) == generation {
                if entries.len() >= MAX_ENTRIES {
                    entries.clear();
                }
                entries.insert(key, m.clone());
            }
        }
        Ok(found)
    }

    /// Called after every manifest or tag change, committed or not.
    pub fn invalidate(&self) {
        let mut entries = self.entries.write().expect("lock");
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }
}
