//! The one outbound connector (DESIGN principle 7). Every connection the server makes on its own — a remote
//! import today; pipelines, webhooks, log sinks and alerts tomorrow — is made by an HTTP agent from
//! [`Outbound::agent`]. The agent resolves names itself and asks the policy ([`moat_model::outbound`]) about each
//! address it is about to dial, at connect time: the first request, every redirect hop, a token realm, any storage
//! URL a remote hands back. Checking the addresses actually dialled (not a name checked earlier) closes DNS
//! rebinding, and the set of addresses where the server listens is read live, so a private endpoint created a
//! second ago is refused too.
//!
//! Redirects are followed by the agent (at most 5), each hop through the same resolver, and never carry the
//! `Authorization` header (`RedirectAuthHeaders::Never`): a registry's credentials or token go only to the host
//! they were given for (a blob redirect to a CDN carries its own signature in the URL). No proxy is used, from the
//! environment or otherwise: the address checked is the address connected to.

pub use moat_model::outbound::DirectoryDenial;
use moat_model::outbound::{
    decide_directory, decide_outbound, OutboundDecision, OutboundDenial, OutboundRules,
};
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where this server listens now: every public listener and every private endpoint's, as bound (a wildcard bind
/// as `0.0.0.0:port` or `[::]:port`). Read at each connection.
pub trait Listening: Send + Sync {
    fn sockets(&self) -> Vec<SocketAddr>;
}

impl<F: Fn() -> Vec<SocketAddr> + Send + Sync> Listening for F {
    fn sockets(&self) -> Vec<SocketAddr> {
        self()
    }
}

/// A connection the connector refused: which name, which address, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the server does not connect to '{host}' ({addr}): {reason}")]
pub struct Refused {
    /// The name as the URL gave it (`host:port`).
    pub host: String,
    /// The address it resolved to.
    pub addr: SocketAddr,
    pub reason: OutboundDenial,
}

/// The connector: the operator's lists and the live set of the server's own addresses. Cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    rules: Arc<OutboundRules>,
    listening: Arc<dyn Listening>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

/// Whether `ip` is one of this host's addresses (a wildcard listener accepts there). Binding is the kernel's own
/// answer, routing-table `local` entries included, with no interface list to keep in sync.
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// `path` with the symbolic links of its longest existing ancestor resolved (the rest appended as written): a
/// directory not made yet still cannot hide behind a link that leads elsewhere.
fn resolved(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
}

impl Outbound {
    pub fn new(rules: OutboundRules, listening: Arc<dyn Listening>) -> Outbound {
        Outbound {
            rules: Arc::new(rules),
            listening,
        }
    }

    /// The decision for one address, as the agent takes it when it dials.
    pub fn check(&self, host: &str, addr: SocketAddr) -> Result<(), Refused> {
        let ip = moat_model::outbound::canonical(addr.ip());
        let local = is_local(ip);
        match decide_outbound(addr, local, &self.listening.sockets(), &self.rules) {
            OutboundDecision::Allow => Ok(()),
            OutboundDecision::Deny(reason) => Err(Refused {
                host: host.to_string(),
                addr,
                reason,
            }),
        }
    }

    /// Resolves `host:port` (`[v6]:port` for IPv6) and checks every address. A name with any refused address is
    /// refused whole: a name that also points at this server is not a remote to talk to.
    pub fn resolve(&self, netloc: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        // `name.:port` is the same name written fully qualified; the system resolver may not say so.
        let lookup = match netloc.rsplit_once(':') {
            Some((name, port)) if name.ends_with('.') && !name.ends_with(':') => {
                format!("{}:{port}", name.trim_end_matches('.'))
            }
            _ => netloc.to_string(),
        };
        let addrs: Vec<SocketAddr> = lookup
            .to_socket_addrs()
            .map_err(|e| ResolveError::Lookup(netloc.to_string(), e.to_string()))?
            .collect();
        for a in &addrs {
            self.check(netloc, *a)?;
        }
        Ok(addrs)
    }

    /// Whether a transfer pipeline may use directory `dir` (the operator's `[outbound] directories`), first as
    /// written and then, when it exists, with its symbolic links resolved (a link inside a listed directory
    /// pointing elsewhere is refused). Returns the path to use: the resolved one when it exists.
    pub fn check_directory(&self, dir: &Path) -> Result<PathBuf, DirectoryDenial> {
        decide_directory(dir, &self.rules.directories)?;
        // The listed directories themselves may be links (/media/usb -> /run/media/…): compared resolved too.
        let listed: Vec<PathBuf> = self.rules.directories.iter().map(|d| resolved(d)).collect();
        let real = resolved(dir);
        decide_directory(&real, &listed)?;
        Ok(real)
    }

    /// The HTTP agent every outbound feature uses; `user_agent` names the feature (`moat-import/0.1.0`).
    pub fn agent(&self, user_agent: &str, tls: Option<Arc<rustls::ClientConfig>>) -> ureq::Agent {
        let me = self.clone();
        let mut b = ureq::AgentBuilder::new()
            .resolver(move |netloc: &str| -> io::Result<Vec<SocketAddr>> {
                me.resolve(netloc).map_err(|e| match e {
                    ResolveError::Refused(r) => io::Error::new(io::ErrorKind::PermissionDenied, r),
                    ResolveError::Lookup(..) => io::Error::new(io::ErrorKind::NotFound, e),
                })
            })
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(60))
            .redirects(5)
            .redirect_auth_headers(ureq::RedirectAuthHeaders::Never)
            .user_agent(user_agent);
        if let Some(t) = tls {
            b = b.tls_config(t);
        }
        b.build()
    }
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("cannot resolve '{0}': {1}")]
    Lookup(String, String),
}

/// The connector's refusal inside an agent's transport error, if that is what stopped the request.
pub fn refusal(e: &ureq::Transport) -> Option<Refused> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refused>() {
            return Some(r.clone());
        }
        if let Some(io) = s.downcast_ref::<io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<Refused>()) {
                return Some(r.clone());
            }
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn connector(own: Vec<SocketAddr>, rules: OutboundRules) -> Outbound {
        Outbound::new(rules, Arc::new(move || own.clone()))
    }

    /// A one-shot HTTP server answering every request with `response`.
    fn serve(response: String) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().take(4) {
                let mut s = s.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(response.as_bytes());
            }
        });
        addr
    }

    fn refused_by(agent: &ureq::Agent, url: &str) -> Refused {
        match agent.get(url).call() {
            Err(ureq::Error::Transport(t)) => refusal(&t).unwrap_or_else(|| panic!("{url}: {t}")),
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn own_listener_refused_in_every_spelling() {
        let own = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = own.local_addr().unwrap().port();
        let agent =
            connector(vec![own.local_addr().unwrap()], OutboundRules::default()).agent("t", None);
        for host in [
            "127.0.0.1",
            "localhost",
            "LOCALHOST.",
            "127.1",
            "2130706433",
            "0x7f000001",
            "0177.0.0.1",
            "127.0.0.9",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "0.0.0.0",
            "[::]",
        ] {
            let r = refused_by(&agent, &format!("http://{host}:{port}/v2/"));
            assert!(r.reason.is_self(), "{host}: {r}");
        }
    }

    #[test]
    fn redirects_are_checked_at_each_hop() {
        let own = TcpListener::bind("127.0.0.1:0").unwrap();
        let own_addr = own.local_addr().unwrap();
        let remote = serve(format!(
            "HTTP/1.1 302 Found\r\nLocation: http://localhost:{}/v2/\r\nContent-Length: 0\r\n\r\n",
            own_addr.port()
        ));
        let agent = connector(vec![own_addr], OutboundRules::default()).agent("t", None);
        let r = refused_by(&agent, &format!("http://{remote}/v2/"));
        assert_eq!(r.reason, OutboundDenial::OwnListener(own_addr));
        assert!(r.host.starts_with("localhost:"), "{r}");
    }

    #[test]
    fn operator_deny_list_and_normal_remotes() {
        let remote = serve("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".into());
        let open = connector(vec![], OutboundRules::default()).agent("t", None);
        assert_eq!(
            open.get(&format!("http://{remote}/v2/"))
                .call()
                .unwrap()
                .status(),
            200
        );
        let rules = OutboundRules {
            allow: vec![],
            deny: vec!["127.0.0.0/8".parse().unwrap()],
            ..Default::default()
        };
        let closed = connector(vec![], rules).agent("t", None);
        let r = refused_by(&closed, &format!("http://{remote}/v2/"));
        assert!(matches!(r.reason, OutboundDenial::OperatorDeny(_)), "{r}");
    }
}
