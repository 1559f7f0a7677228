//! Routing by `Host`: which registry a request is for, and whether it came to the registry's login server or
//! its dedicated data endpoint; and the private endpoints, by id, for classifying origins. Registries change
//! rarely and may be created by another process (`moat registry create`), so the directory is reloaded when it
//! is older than a second or after a change made through this server.

use crate::config::ServeConfig;
use moat_model::outbound::canonical;
use moat_model::{PrivateEndpoint, Registry};
use moat_store::{MetadataStore, StoreError};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct RegistryDirectory {
    meta: MetadataStore,
    config: Arc<ServeConfig>,
    cache: Arc<RwLock<Snapshot>>,
    /// Bumped by every `invalidate`: a reload that started before a change must not pass for fresh after it.
    generation: Arc<std::sync::atomic::AtomicU64>,
}

struct Snapshot {
    loaded: Instant,
    registries: Vec<Arc<Registry>>,
    /// Data endpoint host → index into `registries`, for registries with data endpoints enabled.
    data_hosts: HashMap<String, usize>,
    default_id: Option<String>,
    endpoints: HashMap<String, Arc<PrivateEndpoint>>,
}

/// What a request's Host names.
#[derive(Clone, Debug)]
pub struct HostMatch {
    pub registry: Arc<Registry>,
    /// The Host is the registry's dedicated data endpoint, not its login server.
    pub data_endpoint: bool,
}

const MAX_AGE: Duration = Duration::from_secs(1);

/// `host[:port]` without its port, lower-cased.
fn host_name(h: &str) -> String {
    h.rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>().is_ok())
        .map_or(h, |(n, _)| n)
        .to_ascii_lowercase()
}

impl RegistryDirectory {
    pub fn new(meta: MetadataStore, config: Arc<ServeConfig>) -> RegistryDirectory {
        RegistryDirectory {
            meta,
            config,
            cache: Arc::new(RwLock::new(Snapshot {
                loaded: Instant::now() - MAX_AGE * 2,
                registries: vec![],
                data_hosts: HashMap::new(),
                default_id: None,
                endpoints: HashMap::new(),
            })),
            generation: Default::default(),
        }
    }

    async fn reload(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let generation = self.generation.load(Ordering::SeqCst);
        let registries: Vec<Arc<Registry>> = self
            .meta
            .list_registries()
            .await?
            .into_iter()
            .map(Arc::new)
            .collect();
        let data_hosts = registries
            .iter()
            .enumerate()
            .filter(|(_, r)| r.settings.data_endpoint_enabled)
            .filter_map(|(i, r)| Some((self.config.data_endpoint_host(r)?, i)))
            .collect();
        let default_id = self.meta.default_registry().await?.map(|r| r.id);
        let endpoints = self
            .meta
            .private_endpoints()
            .await?
            .into_iter()
            .map(|e| (e.id.clone(), Arc::new(e)))
            .collect();
        let mut cache = self.cache.write().expect("lock");
        let current = self.generation.load(Ordering::SeqCst) == generation;
        *cache = Snapshot {
            // Read before the latest change committed: usable now, reloaded by the next request.
            loaded: if current {
                Instant::now()
            } else {
                Instant::now() - MAX_AGE * 2
            },
            registries,
            data_hosts,
            default_id,
            endpoints,
        };
        Ok(())
    }

    async fn fresh(&self) -> Result<(), StoreError> {
        let stale = self.cache.read().expect("lock").loaded.elapsed() >= MAX_AGE;
        if stale {
            self.reload().await?;
        }
        Ok(())
    }

    /// The registry a Host names (login server or data endpoint), else the default registry.
    pub async fn for_host(&self, host: &str) -> Result<Option<HostMatch>, StoreError> {
        self.fresh().await?;
        let snap = self.cache.read().expect("lock");
        let host = host.to_ascii_lowercase();
        if let Some(r) = snap.registries.iter().find(|r| r.login_server == host) {
            return Ok(Some(HostMatch {
                registry: r.clone(),
                data_endpoint: false,
            }));
        }
        if let Some(&i) = snap.data_hosts.get(&host) {
            return Ok(Some(HostMatch {
                registry: snap.registries[i].clone(),
                data_endpoint: true,
            }));
        }
        // The name without the port: a registry's login server carries the port of the node that created it,
        // and the same registry is asked for on another node's port (several nodes on one host, a proxy).
        // Falling through to the default registry would put a push meant for this one into another.
        let name = host_name(&host);
        if let Some(r) = snap
            .registries
            .iter()
            .find(|r| host_name(&r.login_server) == name)
        {
            return Ok(Some(HostMatch {
                registry: r.clone(),
                data_endpoint: false,
            }));
        }
        if let Some((_, &i)) = snap.data_hosts.iter().find(|(h, _)| host_name(h) == name) {
            return Ok(Some(HostMatch {
                registry: snap.registries[i].clone(),
                data_endpoint: true,
            }));
        }
        Ok(snap
            .registries
            .iter()
            .find(|r| Some(&r.id) == snap.default_id.as_ref())
            .map(|r| HostMatch {
                registry: r.clone(),
                data_endpoint: false,
            }))
    }

    /// The registry whose login server or data endpoint has this host name, whatever the port (a name under the
    /// server's domain names the server, also behind a proxy on another port).
    pub async fn named(&self, name: &str) -> Result<Option<Arc<Registry>>, StoreError> {
        self.fresh().await?;
        let snap = self.cache.read().expect("lock");
        let name = name.to_ascii_lowercase();
        if let Some(r) = snap
            .registries
            .iter()
            .find(|r| host_name(&r.login_server) == name)
        {
            return Ok(Some(r.clone()));
        }
        Ok(snap
            .data_hosts
            .iter()
            .find(|(h, _)| host_name(h) == name)
            .map(|(_, &i)| snap.registries[i].clone()))
    }

    /// The registry whose private endpoint listens at `ip`.
    pub async fn behind_endpoint(&self, ip: IpAddr) -> Result<Option<Arc<Registry>>, StoreError> {
        self.fresh().await?;
        let snap = self.cache.read().expect("lock");
        let ip = canonical(ip);
        let Some(pe) = snap.endpoints.values().find(|e| canonical(e.address) == ip) else {
            return Ok(None);
        };
        Ok(snap
            .registries
            .iter()
            .find(|r| r.id == pe.registry_id)
            .cloned())
    }

    /// A private endpoint by id, as of the last reload.
    pub async fn endpoint(&self, id: &str) -> Result<Option<Arc<PrivateEndpoint>>, StoreError> {
        self.fresh().await?;
        Ok(self.cache.read().expect("lock").endpoints.get(id).cloned())
    }

    /// Forces a reload on the next request: a change made over ARM is served at once.
    pub fn invalidate(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.cache.write().expect("lock").loaded = Instant::now() - MAX_AGE * 2;
    }

    pub async fn by_name(&self, name: &str) -> Result<Option<Registry>, StoreError> {
        self.meta.registry_by_name(name).await
    }
}
