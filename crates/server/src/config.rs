use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `moat serve` is told, after flags and environment are merged.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `host:port` clients use for this server when it is not `listen` (several nodes behind one name): the
    /// `default` registry's login server, and the port of every other registry's (`--public-address`).
    pub public_address: Option<String>,
    /// Plain HTTP instead of TLS (data plane only; the Azure clients refuse it).
    pub insecure_http: bool,
    /// The operator's own certificate and key (PEM) instead of the local CA's leaves.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Registries other than `default` are served at `<name>.<domain>[:port]`.
    pub domain: moat_model::DnsDomain,
    /// The region registries report as their location when a request names none, and the second label of their
    /// data endpoints.
    pub region: moat_model::Location,
    pub database_url: Option<String>,
    /// `MOAT_STORAGE_URL`: where blob bytes live (see [`crate::storage`]); `None` is `<data dir>/storage`.
    pub storage_url: Option<moat_store::blobs::object::StorageUrl>,
    /// Upload sessions untouched for this long are removed with their partial bytes.
    pub upload_ttl: Duration,
    /// Garbage collection: how long a queued item waits before it is reviewed (see `moat_store::gc`).
    pub gc_grace: Duration,
    /// How often the background collector runs; zero turns it off (`moat gc` still works).
    pub gc_interval: Duration,
    /// Peers whose `X-Forwarded-For`/`Forwarded` headers are believed; everyone else's are ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Which of the two headers the trusted proxies write (see [`crate::edge::forwarded`]).
    pub trusted_proxy_header: crate::edge::forwarded::ProxyHeader,
    /// More public listeners besides `listen` (same port semantics: the login servers keep `listen`'s port).
    pub extra_listeners: Vec<SocketAddr>,
    /// Private endpoints declared by the operator; created (approved) at start if they do not exist yet.
    pub private_endpoints: Vec<DeclaredEndpoint>,
    /// How long a data-endpoint download link stays valid (ACR's are valid 20 to 30 minutes).
    pub data_link_ttl: Duration,
    /// PEM bundles of CAs to trust (with the system's) when importing from remote registries.
    pub import_ca_bundles: Vec<PathBuf>,
    /// The operator's outbound allow/deny lists (`[outbound]`), for every connection the server makes itself.
    pub outbound: moat_model::OutboundRules,
    /// Connection caps and timeouts, and the login throttle.
    pub limits: crate::limits::Limits,
    /// One line per request on the `moat::access` log target (see [`crate::access_log`]).
    pub access_log: bool,
    /// The durable job runner's pace (jobs at once, lease length).
    pub jobs: crate::jobs::JobsConfig,
    /// `[transfer]`: which exporters' archives an import pipeline accepts.
    pub transfer: TransferSection,
    /// How often import pipelines' source triggers list their containers (zero: never).
    pub transfer_trigger_interval: Duration,
    /// How often alert rules are looked at and notifications sent; below a minute it also replaces every metric
    /// rule's evaluation frequency (tests).
    pub alert_interval: Duration,
    /// The metrics aggregator's pace and the admin listener (Prometheus).
    pub metrics: crate::monitor::metrics::MetricsConfig,
    /// `[audit]`: the trail's retention and upkeep intervals.
    pub audit: crate::monitor::trail::AuditSection,
    /// How often ACR webhooks' deliveries are queued from the audit log and sent (retries back off from 10×).
    pub webhook_interval: Duration,
    /// How often the diagnostic-setting sinks look for records to ship (zero: never).
    pub sink_interval: Duration,
}

/// How the server's log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `time LEVEL target: message key=value …`
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the fields, `message`.
    Json,
}

/// A private endpoint from the configuration file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredEndpoint {
    pub name: String,
    pub registry: String,
    /// The address it listens on; the port is the server's (`listen`'s), so login server names stay valid.
    pub address: moat_model::HostAddress,
    #[serde(
        default = "default_resource_group",
        deserialize_with = "resource_group"
    )]
    pub resource_group: String,
}

fn resource_group<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name: String = serde::Deserialize::deserialize(d)?;
    moat_model::resource::check_resource_group_name(&name).map_err(serde::de::Error::custom)?;
    Ok(name)
}

fn default_resource_group() -> String {
    crate::listener::DEFAULT_RESOURCE_GROUP.to_string()
}

/// The TOML file given with `--config`: what flags cannot say well.
///
/// ```toml
/// trusted_proxies = ["192.0.2.10/32"]
/// trusted_proxy_header = "x-forwarded-for"   # or "forwarded"; default "auto"
/// listeners = ["198.18.0.1:5000"]
///
/// [[private_endpoint]]
/// name = "pe-app"
/// registry = "app"
/// address = "198.18.0.5"
///
/// [outbound]
/// deny = ["10.0.0.0/8", "192.0.2.7"]
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    #[serde(default)]
    pub trusted_proxy_header: crate::edge::forwarded::ProxyHeader,
    #[serde(default)]
    pub listeners: Vec<SocketAddr>,
    #[serde(default, rename = "private_endpoint")]
    pub private_endpoints: Vec<DeclaredEndpoint>,
    #[serde(default)]
    pub outbound: OutboundSection,
    /// `true`: one line per request (as `--access-log`).
    #[serde(default)]
    pub access_log: Option<bool>,
    /// `text` or `json` (as `--log-format`; the flag wins).
    #[serde(default)]
    pub log_format: Option<LogFormat>,
    #[serde(default)]
    pub transfer: TransferSection,
    /// Where Prometheus' `GET /metrics` is served (as `--admin-listen`; the flag wins).
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    #[serde(default)]
    pub audit: crate::monitor::trail::AuditSection,
}

/// `[transfer]`: the exporters whose archives import pipelines accept. An import pipeline's own
/// `trustedExporterKeys` replace `trusted_keys` for that pipeline. With keys (or `require_signature`), an archive
/// must be signed by one of them; with neither, unsigned archives and any valid signature are accepted (the
/// archive's digest is still checked against the run's catalogDigest).
///
/// ```toml
/// [transfer]
/// trusted_keys = ["ed25519:…"]   # `moat transfer-key show` on each exporting server
/// require_signature = true
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferSection {
    #[serde(default)]
    pub trusted_keys: Vec<moat_transfer::archive::TransferPublicKey>,
    #[serde(default)]
    pub require_signature: bool,
}

impl TransferSection {
    /// The trust policy of an import whose pipeline names `pipeline_keys` (none: the server's keys decide).
    pub fn trust(
        &self,
        pipeline_keys: &[moat_transfer::archive::TransferPublicKey],
    ) -> moat_transfer::archive::TrustPolicy {
        moat_transfer::archive::TrustPolicy::from_config(
            pipeline_keys,
            &self.trusted_keys,
            self.require_signature,
        )
    }
}

/// `[outbound]`: addresses or CIDR ranges the server may (`allow`, when set: only those) or may not (`deny`, wins)
/// connect to on its own. Its own listeners are refused whatever the lists say.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundSection {
    #[serde(default, deserialize_with = "nets")]
    pub allow: Vec<ipnet::IpNet>,
    #[serde(default, deserialize_with = "nets")]
    pub deny: Vec<ipnet::IpNet>,
    /// Directories transfer pipelines of type `LocalDirectory` may use (absolute paths; everything below each).
    #[serde(default, deserialize_with = "directories")]
    pub directories: Vec<std::path::PathBuf>,
}

impl OutboundSection {
    pub fn rules(self) -> moat_model::OutboundRules {
        moat_model::OutboundRules {
            allow: self.allow,
            deny: self.deny,
            directories: self.directories,
        }
    }
}

fn directories<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<std::path::PathBuf>, D::Error> {
    let raw: Vec<String> = serde::Deserialize::deserialize(d)?;
    raw.iter()
        .map(|s| {
            let p = std::path::PathBuf::from(s.trim_end_matches('/'));
            let p = if p.as_os_str().is_empty() {
                "/".into()
            } else {
                p
            };
            moat_model::outbound::decide_directory(&p, std::slice::from_ref(&p))
                .map(|()| p)
                .map_err(|e| serde::de::Error::custom(format!("[outbound] directories: {e}")))
        })
        .collect()
}

fn nets<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    let raw: Vec<String> = serde::Deserialize::deserialize(d)?;
    raw.iter()
        .map(|s| moat_model::outbound::parse_net(s).map_err(serde::de::Error::custom))
        .collect()
}

impl ConfigFile {
    pub fn load(path: &std::path::Path) -> anyhow::Result<ConfigFile> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("reading the configuration file {}: {e}", path.display())
        })?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("configuration file {}: {e}", path.display()))
    }
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
            self.public_port(),
            self.insecure_http,
        )
    }

    /// The `default` registry's login server: the public address, else the listen address. Every node of a
    /// deployment must give the same, or each start would restamp the login servers (and so the tokens'
    /// audience) to its own.
    pub fn default_login_server(&self) -> String {
        self.public_address
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// The port clients reach the server on.
    pub fn public_port(&self) -> u16 {
        self.public_address
            .as_deref()
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(self.listen.port())
    }
}

impl ServeConfig {
    /// `<registry>.<region>.data.<domain>[:port]`: the region is the second label, where `az acr show-endpoints`
    /// reads it; the port is kept as in login servers. Built only from validated parts
    /// ([`moat_model::Registry::data_endpoint_host`]): `None` for a registry whose stored location is not a region
    /// name, which then has no data endpoint (its blobs are served by the login server).
    pub fn data_endpoint_host(&self, r: &moat_model::Registry) -> Option<String> {
        let host = r.data_endpoint_host(&self.domain)?;
        Some(with_port(host, self.public_port(), self.insecure_http))
    }
}

fn with_port(host: String, port: u16, insecure_http: bool) -> String {
    let default_port = if insecure_http { 80 } else { 443 };
    if port == default_port {
        host
    } else {
        format!("{host}:{port}")
    }
}

/// Checks a `--public-address`: `host:port`, the host a DNS name or an IP address.
pub fn parse_public_address(s: &str) -> Result<String, String> {
    let (host, port) = s.rsplit_once(':').ok_or_else(|| {
        format!("'{s}' has no port: give host:port, e.g. registry.example.com:443")
    })?;
    port.parse::<u16>()
        .map_err(|_| format!("'{port}' is not a port number (in '{s}')"))?;
    let host_ok = host.parse::<std::net::IpAddr>().is_ok()
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::Ipv6Addr>()
            .is_ok()
        || moat_model::DnsDomain::parse(host).is_ok();
    if !host_ok {
        return Err(format!(
            "'{host}' is neither a host name nor an IP address (in '{s}')"
        ));
    }
    Ok(s.to_ascii_lowercase())
}

pub fn login_server_for(registry: &str, domain: &str, port: u16, insecure_http: bool) -> String {
    with_port(format!("{registry}.{domain}"), port, insecure_http)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_address_is_host_and_port() {
        assert_eq!(
            parse_public_address("Registry.Example.com:443").unwrap(),
            "registry.example.com:443"
        );
        assert!(parse_public_address("127.0.0.1:5001").is_ok());
        for bad in [
            "registry.example.com",
            "host:99999",
            "bad host:5000",
            ":5000",
        ] {
            assert!(parse_public_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_file_parses_and_refuses_unknown_keys() {
        let c: ConfigFile = toml::from_str(
            "listeners = [\"198.18.0.1:5000\"]\n[[private_endpoint]]\nname = \"pe\"\nregistry = \"app\"\naddress = \"198.18.0.5\"\n",
        )
        .unwrap();
        assert_eq!(c.listeners, vec!["198.18.0.1:5000".parse().unwrap()]);
        assert_eq!(c.private_endpoints[0].resource_group, "moat");
        assert!(toml::from_str::<ConfigFile>("listener = []").is_err());
        use crate::edge::forwarded::ProxyHeader;
        assert_eq!(c.trusted_proxy_header, ProxyHeader::Auto);
        for (v, want) in [
            ("auto", ProxyHeader::Auto),
            ("forwarded", ProxyHeader::Forwarded),
            ("x-forwarded-for", ProxyHeader::XForwardedFor),
        ] {
            let f: ConfigFile = toml::from_str(&format!("trusted_proxy_header = \"{v}\"")).unwrap();
            assert_eq!(f.trusted_proxy_header, want);
        }
        assert!(toml::from_str::<ConfigFile>("trusted_proxy_header = \"x-real-ip\"").is_err());
        let o: ConfigFile =
            toml::from_str("[outbound]\nallow = [\"10.0.0.0/8\"]\ndeny = [\"10.1.2.3\"]\n")
                .unwrap();
        assert_eq!(o.outbound.allow, vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(o.outbound.deny, vec!["10.1.2.3/32".parse().unwrap()]);
        assert!(toml::from_str::<ConfigFile>("[outbound]\ndeny = [\"nope\"]").is_err());
        let o: ConfigFile =
            toml::from_str("[outbound]\ndirectories = [\"/media/usb/\"]\n").unwrap();
        assert_eq!(
            o.outbound.directories,
            vec![std::path::PathBuf::from("/media/usb")]
        );
        assert!(toml::from_str::<ConfigFile>("[outbound]\ndirectories = [\"media\"]").is_err());
        assert!(toml::from_str::<ConfigFile>("[outbound]\ndirectories = [\"/a/../b\"]").is_err());
        assert!(toml::from_str::<ConfigFile>("[outbound]\nblock = []").is_err());
        let logs: ConfigFile =
            toml::from_str("access_log = true\nlog_format = \"json\"\n").unwrap();
        assert_eq!(
            (logs.access_log, logs.log_format),
            (Some(true), Some(LogFormat::Json))
        );
        assert!(toml::from_str::<ConfigFile>("log_format = \"xml\"").is_err());
        assert!(toml::from_str::<ConfigFile>(
            "[[private_endpoint]]\nname = \"pe\"\nregistry = \"a\"\naddress = \"nope\""
        )
        .is_err());
        for bad in ["0.0.0.0", "::", "224.0.0.1", "::ffff:224.0.0.1", "ff02::1"] {
            let text = format!(
                "[[private_endpoint]]\nname = \"pe\"\nregistry = \"a\"\naddress = \"{bad}\""
            );
            let e = toml::from_str::<ConfigFile>(&text).unwrap_err().to_string();
            assert!(e.contains("not a unicast host address"), "{bad}: {e}");
        }
        let e = toml::from_str::<ConfigFile>(
            "[[private_endpoint]]\nname = \"pe\"\nregistry = \"a\"\naddress = \"198.18.0.5\"\nresource_group = \"a/b\"",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("Resource group name 'a/b' is invalid"), "{e}");
    }

    #[test]
    fn transfer_section_parses_keys_and_refuses_bad_ones() {
        let key = moat_transfer::archive::TransferSigner::from_seed("k", &[5u8; 32])
            .unwrap()
            .public_key();
        let c: ConfigFile = toml::from_str(&format!(
            "[transfer]\ntrusted_keys = [\"{key}\"]\nrequire_signature = true\n"
        ))
        .unwrap();
        assert_eq!(c.transfer.trusted_keys, vec![key.clone()]);
        assert!(c.transfer.require_signature);
        assert_eq!(
            c.transfer.trust(&[]),
            moat_transfer::archive::TrustPolicy::Require(vec![key])
        );
        assert_eq!(
            ConfigFile::default().transfer.trust(&[]),
            moat_transfer::archive::TrustPolicy::AnySignatureOrNone
        );
        let e = toml::from_str::<ConfigFile>("[transfer]\ntrusted_keys = [\"ed25519:nope\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("moat transfer-key show"), "{e}");
        assert!(toml::from_str::<ConfigFile>("[transfer]\ntrusted = []").is_err());
    }
}
