//! The object store's HTTP goes through the outbound connector's address check (DESIGN principle 7). The storage
//! endpoint is operator configuration, so it may well be a private or loopback address; what is refused is an
//! address where this server itself listens (and the operator's deny list), checked at each request for the
//! host and port it names and, for a name, again for every address the name resolves to when a connection is
//! made (so a name that later resolves to this server is refused too).

use object_store::client::{
    DnsFuture, DnsResolver, HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest,
    HttpResponse, HttpService, ReqwestConnector,
};
use object_store::ClientOptions;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Resolves `host:port` and checks every address; an error of kind `PermissionDenied` is a refusal.
pub type AddressCheck = Arc<dyn Fn(&str) -> io::Result<Vec<SocketAddr>> + Send + Sync>;

/// The DNS resolver object_store's reqwest transport uses: the connector's resolution and check. The transport
/// gives no port, so the endpoint's is used (every request of a store goes to its one endpoint).
pub(super) struct CheckedDns {
    /// object_store asks a resolver to be unwind-safe; a panic in the check leaves nothing half-updated.
    pub check: std::panic::AssertUnwindSafe<AddressCheck>,
    pub port: u16,
}

impl std::fmt::Debug for CheckedDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedDns")
            .field("port", &self.port)
            .finish()
    }
}

impl DnsResolver for CheckedDns {
    fn resolve(&self, host: &str) -> DnsFuture {
        let check = self.check.0.clone();
        let netloc = format!("{host}:{}", self.port);
        Box::pin(async move {
            let addrs = tokio::task::spawn_blocking(move || check(&netloc))
                .await
                .map_err(|e| Box::new(e) as object_store::client::DnsError)??;
            Ok(addrs.into_iter().map(|a| a.ip()).collect())
        })
    }
}

/// Makes object_store's usual reqwest client and checks each request's host and port before it is sent: an
/// address literal never reaches a resolver, so this is where it is checked.
#[derive(Clone)]
pub(super) struct CheckedConnector {
    pub check: AddressCheck,
}

impl std::fmt::Debug for CheckedConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckedConnector")
    }
}

impl HttpConnector for CheckedConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Checked {
            inner,
            check: self.check.clone(),
        }))
    }
}

struct Checked {
    inner: HttpClient,
    check: AddressCheck,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Checked")
    }
}

impl Checked {
    fn allowed(&self, req: &HttpRequest) -> io::Result<()> {
        let uri = req.uri();
        let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
        let Ok(ip) = host.parse::<IpAddr>() else {
            // A name: checked by `CheckedDns` for the addresses actually dialled.
            return Ok(());
        };
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        (self.check)(&SocketAddr::new(ip, port).to_string()).map(|_| ())
    }
}

#[async_trait::async_trait]
impl HttpService for Checked {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        if let Err(e) = self.allowed(&req) {
            return Err(HttpError::new(HttpErrorKind::Connect, e));
        }
        self.inner.execute(req).await
    }
}
