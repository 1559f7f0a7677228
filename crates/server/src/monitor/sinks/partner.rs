//! SIEM sinks an operator registers with `moat monitor sink add` (syslog over TLS, HTTP JSON) and a diagnostic
//! setting names through `marketplacePartnerId`. The row (`moat_store::meta::PartnerSinkRow`) holds the public
//! part of the configuration; the secrets (custom header values, a TLS client key) are sealed under the secrets
//! key and bound to the sink's id, and a token is read from the secret store (`moat secret`) each time the sink is
//! opened, so a rotated token is used without touching the sink.
//!
//! [`open`] builds the [`Sink`] the diagnostic settings' delivery loop drives; [`probe`] connects once (TLS
//! handshake, or one HTTP request) so that a setting or a `sink add` naming an unreachable sink is refused.

pub mod http;
pub mod register;
pub mod syslog;

use super::sink::{Sink, SinkError, SinkRecord};
use crate::state::AppState;
use moat_auth::{SealError, SecretBox};
use moat_model::monitor::partner::{self as model, SinkKind};
use moat_outbound::Outbound;
use moat_store::meta::PartnerSinkRow;
use moat_store::MetadataStore;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A syslog sink's `config`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyslogConfig {
    /// `host:port` of the collector's TLS syslog listener (6514 by convention, RFC 5425).
    pub address: String,
    /// PEM certificates to trust for the collector instead of the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// PEM chain presented when the collector asks for a client certificate (its key is sealed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_pem: Option<String>,
    pub app_name: String,
    pub facility: u8,
}

/// An HTTP sink's `config`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpConfig {
    /// The collector's endpoint, e.g. `https://splunk.example.com:8088/services/collector`.
    pub url: String,
    /// Key Vault-shaped URI of a `moat secret` holding the HEC token (sent as `Authorization: Splunk <token>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<String>,
    /// Names of the custom headers (their values are sealed), so `show` can say which are set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header_names: Vec<String>,
    /// PEM certificates to trust for the collector besides the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

/// What is sealed in `PartnerSinkRow::sealed`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SinkSecrets {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_pem: Option<String>,
}

impl SinkSecrets {
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.client_key_pem.is_none()
    }
}

/// What a sink's sealed secrets are bound to: copied onto another sink's row, they do not open.
pub fn sealing_context(id: &str) -> String {
    format!("partner-sink/{}", id.to_ascii_lowercase())
}

/// Seals `secrets` for the sink `id`; `None` when there is nothing to seal.
pub fn seal(sb: &SecretBox, id: &str, secrets: &SinkSecrets) -> Result<Option<String>, SealError> {
    if secrets.is_empty() {
        return Ok(None);
    }
    let clear = serde_json::to_string(secrets).expect("strings serialize");
    sb.seal(&clear, &sealing_context(id)).map(Some)
}

fn misconfigured(e: impl std::fmt::Display) -> SinkError {
    SinkError::Misconfigured(e.to_string())
}

/// Opens the row's sealed secrets.
pub fn open_secrets(sb: &SecretBox, row: &PartnerSinkRow) -> Result<SinkSecrets, SinkError> {
    let Some(sealed) = &row.sealed else {
        return Ok(SinkSecrets::default());
    };
    let clear = sb
        .open(sealed, &sealing_context(&row.id))
        .map_err(|e| misconfigured(format!("the sink's secrets do not open: {e}")))?;
    serde_json::from_str(&clear)
        .map_err(|e| misconfigured(format!("the sink's secrets are unreadable: {e}")))
}

/// The token a `--token-secret` URI names, read from the secret store now (its latest version unless the URI
/// names one).
pub async fn resolve_token(
    meta: &MetadataStore,
    sb: &SecretBox,
    uri: &str,
) -> Result<String, SinkError> {
    let parsed: moat_model::secret_uri::SecretUri = uri.parse().map_err(misconfigured)?;
    let row = meta
        .secret(&parsed.vault, &parsed.name, parsed.version.as_deref())
        .await
        .map_err(|e| SinkError::Unavailable {
            message: format!("reading the token secret: {e}"),
            delivered: 0,
        })?
        .ok_or_else(|| {
            misconfigured(format!(
                "the token secret {parsed} does not exist in this server's secret store: create it with `moat secret set --id {parsed} --value <token>`"
            ))
        })?;
    sb.open(
        &row.value,
        &crate::secrets::secret_context(&row.vault, &row.name, &row.version),
    )
    .map_err(|e| misconfigured(format!("the token secret does not open: {e}")))
}

/// The host name syslog messages carry (RFC 5424 HOSTNAME).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "-".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// PEM certificates, or a message naming what is wrong.
fn pem_certs(
    pem: &str,
    what: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} holds no PEM certificate"));
    }
    Ok(certs)
}

/// The TLS client configuration for a collector: `ca_pem` (only) when given, else the system's roots plus
/// nothing; a client certificate when one is configured.
pub fn tls_config(
    ca_pem: Option<&str>,
    system_roots: bool,
    client: Option<(&str, &str)>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = ca_pem {
        for c in pem_certs(pem, "the CA file")? {
            roots.add(c).map_err(|e| format!("the CA file: {e}"))?;
        }
    }
    if ca_pem.is_none() || system_roots {
        let system = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
        if let Ok(pem) = std::fs::read(system) {
            for cert in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
                let _ = roots.add(cert);
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = pem_certs(cert, "the client certificate")?;
            let key = rustls_pemfile::private_key(&mut key.as_bytes())
                .map_err(|e| format!("the client key: {e}"))?
                .ok_or("the client key holds no PEM private key")?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("the client certificate and key: {e}"))?
        }
    };
    Ok(Arc::new(config))
}

/// A built sink of either kind.
pub enum PartnerSink {
    /// Boxed: it holds a TLS connection's buffers.
    Syslog(Box<syslog::SyslogSink>),
    Http(http::HttpSink),
}

impl PartnerSink {
    /// Connects once: a TLS handshake with the syslog collector, or an empty batch POSTed to the HTTP collector
    /// (HEC answers it with "No data", a 400 that proves the URL and the token were understood).
    pub fn probe(&mut self) -> Result<(), SinkError> {
        match self {
            PartnerSink::Syslog(s) => s.probe(),
            PartnerSink::Http(h) => h.probe(),
        }
    }
}

impl Sink for PartnerSink {
    fn describe(&self) -> String {
        match self {
            PartnerSink::Syslog(s) => s.describe(),
            PartnerSink::Http(h) => h.describe(),
        }
    }

    fn deliver(&mut self, records: &[SinkRecord]) -> Result<(), SinkError> {
        match self {
            PartnerSink::Syslog(s) => s.deliver(records),
            PartnerSink::Http(h) => h.deliver(records),
        }
    }
}

/// Builds a sink from its row, its opened secrets and its token, connecting through `outbound`. Connects
/// nothing yet.
pub fn build(
    outbound: &Outbound,
    row: &PartnerSinkRow,
    secrets: SinkSecrets,
    token: Option<String>,
) -> Result<PartnerSink, SinkError> {
    let kind: SinkKind = row.kind.parse().map_err(misconfigured)?;
    match kind {
        SinkKind::Syslog => {
            let c: SyslogConfig = serde_json::from_value(row.config.clone()).map_err(|e| {
                misconfigured(format!("the sink's configuration is unreadable: {e}"))
            })?;
            let (host, port) = model::parse_address(&c.address).map_err(misconfigured)?;
            let client = match (&c.client_cert_pem, &secrets.client_key_pem) {
                (Some(cert), Some(key)) => Some((cert.as_str(), key.as_str())),
                _ => None,
            };
            let tls = tls_config(c.ca_pem.as_deref(), false, client).map_err(misconfigured)?;
            Ok(PartnerSink::Syslog(Box::new(syslog::SyslogSink::new(
                outbound.clone(),
                tls,
                host,
                port,
                syslog::Origin {
                    facility: c.facility,
                    hostname: hostname(),
                    app_name: c.app_name,
                    proc_id: std::process::id(),
                },
            ))))
        }
        SinkKind::Http => {
            let c: HttpConfig = serde_json::from_value(row.config.clone()).map_err(|e| {
                misconfigured(format!("the sink's configuration is unreadable: {e}"))
            })?;
            let url = model::parse_collector_url(&c.url).map_err(misconfigured)?;
            let tls = tls_config(c.ca_pem.as_deref(), true, None).map_err(misconfigured)?;
            let mut headers = secrets.headers;
            if let Some(t) = token {
                headers.push(("Authorization".into(), format!("Splunk {t}")));
            }
            let agent = outbound.agent(concat!("moat-siem/", env!("CARGO_PKG_VERSION")), Some(tls));
            Ok(PartnerSink::Http(http::HttpSink::new(
                agent, c.url, url.host, headers,
            )))
        }
    }
}

/// Opens the row's secrets (re-reading the key files once if they were sealed under a key this process has not
/// loaded) and its token.
async fn secrets_and_token(
    meta: &MetadataStore,
    keys: &crate::keys::ServerKeys,
    row: &PartnerSinkRow,
) -> Result<(SinkSecrets, Option<String>), SinkError> {
    let sb = SecretBox::new(keys.secrets.clone());
    let secrets = match open_secrets(&sb, row) {
        Err(_) if row.sealed.is_some() => {
            let k = keys.clone();
            let _ = tokio::task::spawn_blocking(move || k.reload()).await;
            open_secrets(&SecretBox::new(keys.secrets.clone()), row)?
        }
        other => other?,
    };
    let token = match row.config.get("tokenSecret").and_then(|v| v.as_str()) {
        Some(uri) => Some(resolve_token(meta, &sb, uri).await?),
        None => None,
    };
    Ok((secrets, token))
}

/// The sink a diagnostic setting's `marketplacePartnerId` names, ready for the delivery loop.
pub async fn open(state: &AppState, row: &PartnerSinkRow) -> Result<Box<dyn Sink>, SinkError> {
    let (secrets, token) = secrets_and_token(&state.meta, &state.keys, row).await?;
    Ok(Box::new(build(&state.outbound, row, secrets, token)?))
}

/// Connects to the sink once; the settings PUT refuses one that fails.
pub async fn probe(state: &AppState, row: &PartnerSinkRow) -> Result<(), SinkError> {
    let (secrets, token) = secrets_and_token(&state.meta, &state.keys, row).await?;
    let mut sink = build(&state.outbound, row, secrets, token)?;
    tokio::task::spawn_blocking(move || sink.probe())
        .await
        .unwrap_or_else(|e| Err(misconfigured(format!("the probe failed: {e}"))))
}

/// Re-seals every sink's secrets still sealed under a key that is not current (after `moat keys rotate`).
pub async fn reseal(
    meta: &MetadataStore,
    sb: &SecretBox,
) -> Result<usize, crate::secrets::SecretsError> {
    let mut changed = 0;
    for row in meta.partner_sinks().await? {
        let Some(stored) = &row.sealed else { continue };
        if sb.needs_sealing(stored) {
            let ctx = sealing_context(&row.id);
            let sealed = sb.seal(&sb.open(stored, &ctx)?, &ctx)?;
            if meta.reseal_partner_sink(&row.id, stored, &sealed).await? {
                changed += 1;
            }
        }
    }
    Ok(changed)
}
