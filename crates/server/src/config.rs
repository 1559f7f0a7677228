use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `moat serve` is told, after flags and environment are merged.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Plain HTTP instead of TLS (data plane only; the Azure clients refuse it).
    pub insecure_http: bool,
    /// The operator's own certificate and key (PEM) instead of the local CA's leaves.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Registries other than `default` are served at `<name>.<domain>[:port]`.
    pub domain: String,
    /// The region registries report as their location, and the second label of their data endpoints.
    pub region: String,
    pub database_url: Option<String>,
    /// Upload sessions untouched for this long are removed with their partial bytes.
    pub upload_ttl: Duration,
    /// Peers whose `X-Forwarded-For`/`Forwarded` headers are believed; everyone else's are ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl ServeConfig {
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("moat.db").display()))
    }

    /// The login server of a non-default registry: the port is kept unless it is the scheme's default.
    pub fn login_server_for(&self, registry: &str) -> String {
        login_server_for(
            registry,
            &self.domain,
            self.listen.port(),
            self.insecure_http,
        )
    }
}

pub fn login_server_for(registry: &str, domain: &str, port: u16, insecure_http: bool) -> String {
    let default_port = if insecure_http { 80 } else { 443 };
    if port == default_port {
        format!("{registry}.{domain}")
    } else {
        format!("{registry}.{domain}:{port}")
    }
}
