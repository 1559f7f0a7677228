//! Routing by `Host`: which registry a request is for. Registries change rarely and may be created by another
//! process (`moat registry create`), so the directory is reloaded when it is older than a second or a host is
//! unknown.

use moat_model::Registry;
use moat_store::{MetadataStore, StoreError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct RegistryDirectory {
    meta: MetadataStore,
    cache: Arc<RwLock<Snapshot>>,
}

struct Snapshot {
    loaded: Instant,
    registries: Vec<Arc<Registry>>,
    default_id: Option<String>,
}

const MAX_AGE: Duration = Duration::from_secs(1);

impl RegistryDirectory {
    pub fn new(meta: MetadataStore) -> RegistryDirectory {
        RegistryDirectory {
            meta,
            cache: Arc::new(RwLock::new(Snapshot {
                loaded: Instant::now() - MAX_AGE * 2,
                registries: vec![],
                default_id: None,
            })),
        }
    }

    async fn reload(&self) -> Result<(), StoreError> {
        let registries = self
            .meta
            .list_registries()
            .await?
            .into_iter()
            .map(Arc::new)
            .collect();
        let default_id = self.meta.default_registry().await?.map(|r| r.id);
        *self.cache.write().expect("lock") = Snapshot {
            loaded: Instant::now(),
            registries,
            default_id,
        };
        Ok(())
    }

    fn lookup(&self, host: &str) -> Option<Arc<Registry>> {
        let snap = self.cache.read().expect("lock");
        let host = host.to_ascii_lowercase();
        snap.registries
            .iter()
            .find(|r| r.login_server == host)
            .or_else(|| {
                snap.registries
                    .iter()
                    .find(|r| Some(&r.id) == snap.default_id.as_ref())
            })
            .cloned()
    }

    /// The registry a Host names, else the default registry.
    pub async fn for_host(&self, host: &str) -> Result<Option<Arc<Registry>>, StoreError> {
        let stale = self.cache.read().expect("lock").loaded.elapsed() >= MAX_AGE;
        if stale {
            self.reload().await?;
        }
        Ok(self.lookup(host))
    }

    /// Forces a reload on the next request: a registry changed over ARM is served at once.
    pub fn invalidate(&self) {
        self.cache.write().expect("lock").loaded = Instant::now() - MAX_AGE * 2;
    }

    pub async fn by_name(&self, name: &str) -> Result<Option<Registry>, StoreError> {
        self.meta.registry_by_name(name).await
    }
}
