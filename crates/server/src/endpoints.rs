//! The server's listeners: the public ones from the configuration, and one per private endpoint, started when
//! an endpoint is created and stopped when it is deleted. Each connection carries the [`ListenerKind`] it came
//! in on, which is all the edge needs to classify its origin.

use crate::state::AppState;
use moat_model::{HostAddress, PrivateEndpoint};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::task::AbortHandle;

/// Which kind of listener a connection arrived on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    Public,
    /// The private endpoint with this id.
    PrivateEndpoint(String),
}

/// Put into each request's extensions by the accept loop.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub kind: ListenerKind,
}

/// Starts serving on a bound listener; returns the handle that stops it.
pub type AcceptFn = Arc<dyn Fn(tokio::net::TcpListener, ListenerKind) -> AbortHandle + Send + Sync>;

#[derive(Clone, Debug, thiserror::Error)]
pub enum BindError {
    #[error("the server cannot listen on {0}: {1}. Use an address assigned to one of this host's interfaces and not in use.")]
    Unavailable(SocketAddr, String),
}

/// The private endpoints' listeners, by endpoint id; and the public ones' addresses, so that the outbound
/// connector knows every address where the server listens.
#[derive(Default)]
pub struct Listeners {
    accept: OnceLock<AcceptFn>,
    port: OnceLock<u16>,
    running: Mutex<HashMap<String, (IpAddr, AbortHandle)>>,
    /// The public listeners' bound addresses (a wildcard bind as bound: `0.0.0.0:port`).
    public: Mutex<Vec<SocketAddr>>,
}

impl Listeners {
    /// Called once by `serve` when the router exists; until then endpoints are recorded but not served.
    pub fn start(&self, port: u16, accept: AcceptFn) {
        let _ = self.port.set(port);
        let _ = self.accept.set(accept);
    }

    /// Binds an endpoint's address on the server's port, so that a request for an endpoint the server cannot
    /// serve fails before anything is recorded. Only a [`HostAddress`] is ever bound: never a wildcard, which
    /// would make traffic to every local address an endpoint's private traffic.
    pub fn bind(&self, addr: HostAddress) -> Result<Option<std::net::TcpListener>, BindError> {
        let Some(port) = self.port.get() else {
            return Ok(None);
        };
        let sa = SocketAddr::new(addr.ip(), *port);
        let l = std::net::TcpListener::bind(sa)
            .map_err(|e| BindError::Unavailable(sa, e.to_string()))?;
        l.set_nonblocking(true)
            .map_err(|e| BindError::Unavailable(sa, e.to_string()))?;
        Ok(Some(l))
    }

    /// Serves an endpoint on a listener from [`Listeners::bind`].
    pub fn adopt(&self, pe: &PrivateEndpoint, listener: std::net::TcpListener) {
        let Some(accept) = self.accept.get() else {
            return;
        };
        match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => {
                let handle = accept(l, ListenerKind::PrivateEndpoint(pe.id.clone()));
                if let Some((_, old)) = self
                    .running
                    .lock()
                    .expect("lock")
                    .insert(pe.id.clone(), (pe.address, handle))
                {
                    old.abort();
                }
            }
            Err(e) => tracing::warn!("private endpoint {}: {e}", pe.name),
        }
    }

    /// Makes the running listeners match `endpoints`: starts the missing ones, stops the ones that are gone.
    pub fn reconcile(&self, endpoints: &[PrivateEndpoint]) {
        let stale: Vec<String> = {
            let running = self.running.lock().expect("lock");
            running
                .iter()
                .filter(|(id, (addr, _))| {
                    !endpoints.iter().any(|e| &e.id == *id && e.address == *addr)
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in stale {
            if let Some((_, h)) = self.running.lock().expect("lock").remove(&id) {
                h.abort();
            }
        }
        for pe in endpoints {
            if self.running.lock().expect("lock").contains_key(&pe.id) {
                continue;
            }
            // A database written before addresses were checked may hold one that is not a host's: not served.
            let addr = match HostAddress::new(pe.address) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("private endpoint '{}' is not served: {e}", pe.name);
                    continue;
                }
            };
            match self.bind(addr) {
                Ok(Some(l)) => self.adopt(pe, l),
                Ok(None) => {}
                Err(e) => tracing::warn!("private endpoint '{}' is not served: {e}", pe.name),
            }
        }
    }

    /// Whether the endpoint's listener is running.
    pub fn serves(&self, id: &str) -> bool {
        self.running.lock().expect("lock").contains_key(id)
    }

    /// Records a public listener's bound address.
    pub fn add_public(&self, addr: SocketAddr) {
        self.public.lock().expect("lock").push(addr);
    }

    /// Every address where the server accepts connections now: public listeners and running private endpoints.
    pub fn sockets(&self) -> Vec<SocketAddr> {
        let mut all = self.public.lock().expect("lock").clone();
        if let Some(port) = self.port.get() {
            let running = self.running.lock().expect("lock");
            all.extend(running.values().map(|(ip, _)| SocketAddr::new(*ip, *port)));
        }
        all
    }

    /// The server's one outbound connector, reading this live set of listeners at every connection.
    pub fn outbound(self: &Arc<Self>, rules: moat_model::OutboundRules) -> moat_outbound::Outbound {
        let me = self.clone();
        moat_outbound::Outbound::new(rules, Arc::new(move || me.sockets()))
    }

    pub fn stop_all(&self) {
        for (_, (_, h)) in self.running.lock().expect("lock").drain() {
            h.abort();
        }
    }
}

/// Re-reads the endpoints and brings listeners and the routing snapshot in line with them.
pub async fn refresh(state: &AppState) {
    state.registries.invalidate();
    match state.meta.private_endpoints().await {
        Ok(all) => state.listeners.reconcile(&all),
        Err(e) => tracing::warn!("reading private endpoints: {e}"),
    }
}
