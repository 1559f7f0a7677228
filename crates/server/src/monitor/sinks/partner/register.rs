//! Registering a SIEM sink (`moat monitor sink add`): the operator's flags become a row whose `config` holds no
//! secret, the secrets are sealed to the sink's id, the sink is probed through the outbound connector (an
//! unreachable or misconfigured sink is refused with what failed), and the row and its activity record are written
//! in one transaction. The CLI only reads files and flags.

use super::{build, resolve_token, seal, HttpConfig, SinkSecrets, SyslogConfig};
use crate::monitor::sinks::sink::SinkError;
use moat_auth::SecretBox;
use moat_model::activity::ActivityEvent;
use moat_model::monitor::partner::{self as model, PartnerSinkError, SinkKind};
use moat_outbound::Outbound;
use moat_store::meta::PartnerSinkRow;
use moat_store::{MetadataStore, StoreError};

/// What the operator asked for.
#[derive(Clone, Debug, Default)]
pub struct NewSink {
    pub name: String,
    pub resource_group: String,
    pub kind: String,
    /// syslog: `host:port`.
    pub address: Option<String>,
    /// http: the collector's URL.
    pub url: Option<String>,
    pub ca_pem: Option<String>,
    pub client_cert_pem: Option<String>,
    pub client_key_pem: Option<String>,
    pub app_name: Option<String>,
    pub facility: Option<String>,
    pub token_secret: Option<String>,
    /// `Name: value` as given to `--header`.
    pub headers: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Invalid(#[from] PartnerSinkError),
    #[error("{0}")]
    Usage(String),
    #[error("the sink was not added: {0}")]
    Probe(SinkError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] moat_auth::SealError),
}

fn usage(s: impl Into<String>) -> RegisterError {
    RegisterError::Usage(s.into())
}

/// The row (without `sealed`) and the secrets to seal for `new`, checked.
pub fn row_for(
    subscription_id: &str,
    new: &NewSink,
) -> Result<(PartnerSinkRow, SinkSecrets), RegisterError> {
    model::valid_name(&new.name)?;
    let kind: SinkKind = new.kind.parse()?;
    let mut secrets = SinkSecrets::default();
    let config = match kind {
        SinkKind::Syslog => {
            let address = new
                .address
                .as_deref()
                .ok_or_else(|| usage("a syslog sink needs --address host:port"))?;
            model::parse_address(address)?;
            if new.url.is_some() || new.token_secret.is_some() || !new.headers.is_empty() {
                return Err(usage(
                    "--url, --token-secret and --header are for --kind http",
                ));
            }
            if new.client_cert_pem.is_some() != new.client_key_pem.is_some() {
                return Err(usage("give --client-cert and --client-key together"));
            }
            let app_name = new.app_name.clone().unwrap_or_else(|| "moat".into());
            model::valid_app_name(&app_name)?;
            let facility = model::parse_facility(new.facility.as_deref().unwrap_or("local0"))?;
            secrets.client_key_pem = new.client_key_pem.clone();
            serde_json::to_value(SyslogConfig {
                address: address.to_string(),
                ca_pem: new.ca_pem.clone(),
                client_cert_pem: new.client_cert_pem.clone(),
                app_name,
                facility,
            })
        }
        SinkKind::Http => {
            let url = new
                .url
                .as_deref()
                .ok_or_else(|| usage("an http sink needs --url https://…/services/collector"))?;
            model::parse_collector_url(url)?;
            if new.address.is_some()
                || new.client_cert_pem.is_some()
                || new.app_name.is_some()
                || new.facility.is_some()
            {
                return Err(usage(
                    "--address, --client-cert, --app-name and --facility are for --kind syslog",
                ));
            }
            if let Some(uri) = &new.token_secret {
                uri.parse::<moat_model::secret_uri::SecretUri>()
                    .map_err(|e| usage(format!("--token-secret: {e}")))?;
            }
            for h in &new.headers {
                let (k, v) = h.split_once(':').ok_or_else(|| {
                    usage("--header takes 'Name: value' (the value is not repeated here)")
                })?;
                let k = k.trim();
                model::valid_header_name(k)?;
                if v.contains(['\r', '\n']) {
                    return Err(usage(format!("the value of header {k} holds a line break")));
                }
                if k.eq_ignore_ascii_case("authorization") && new.token_secret.is_some() {
                    return Err(usage("--token-secret already sets Authorization"));
                }
                secrets.headers.push((k.to_string(), v.trim().to_string()));
            }
            serde_json::to_value(HttpConfig {
                url: url.to_string(),
                token_secret: new.token_secret.clone(),
                header_names: secrets.headers.iter().map(|(k, _)| k.clone()).collect(),
                ca_pem: new.ca_pem.clone(),
            })
        }
    }
    .expect("config serializes");
    let row = PartnerSinkRow {
        id: model::sink_id(subscription_id, &new.resource_group, &new.name),
        name: new.name.clone(),
        kind: kind.as_str().into(),
        config,
        created: moat_store::time_fmt::now(),
        sealed: None,
    };
    Ok((row, secrets))
}

/// Checks, probes and stores a sink; `activity` is its record (`Moat.Monitor/partnerSinks/write`).
pub async fn add(
    meta: &MetadataStore,
    sb: &SecretBox,
    outbound: &Outbound,
    subscription_id: &str,
    new: &NewSink,
    activity: &ActivityEvent,
) -> Result<PartnerSinkRow, RegisterError> {
    let (mut row, secrets) = row_for(subscription_id, new)?;
    if let Some(existing) = meta.partner_sink_named(&new.name).await? {
        if !existing.id.eq_ignore_ascii_case(&row.id) {
            return Err(usage(format!(
                "a sink named '{}' exists in another resource group ({}): delete it first",
                existing.name, existing.id
            )));
        }
    }
    let token = match &new.token_secret {
        Some(uri) => Some(
            resolve_token(meta, sb, uri)
                .await
                .map_err(RegisterError::Probe)?,
        ),
        None => None,
    };
    let mut sink = build(outbound, &row, secrets.clone(), token).map_err(RegisterError::Probe)?;
    tokio::task::spawn_blocking(move || sink.probe())
        .await
        .unwrap_or_else(|e| Err(SinkError::Misconfigured(format!("the probe failed: {e}"))))
        .map_err(RegisterError::Probe)?;
    row.sealed = seal(sb, &row.id, &secrets)?;
    Ok(meta.set_partner_sink(&row, activity).await?)
}

/// What `list`/`show`/`add` print: the configuration with certificates summarized, header names, whether a
/// client key is set; never a secret.
pub fn public_json(row: &PartnerSinkRow) -> serde_json::Value {
    let mut config = row.config.clone();
    if let Some(map) = config.as_object_mut() {
        for k in ["caPem", "clientCertPem"] {
            if let Some(pem) = map.get(k).and_then(|v| v.as_str()) {
                let n = pem.matches("-----BEGIN CERTIFICATE-----").count();
                map.insert(k.replace("Pem", "Certificates"), n.into());
                map.remove(k);
            }
        }
    }
    serde_json::json!({
        "id": row.id,
        "name": row.name,
        "kind": row.kind,
        "config": config,
        "sealedSecrets": row.sealed.is_some(),
        "created": row.created,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(url: &str) -> NewSink {
        NewSink {
            name: "splunk".into(),
            resource_group: "moat".into(),
            kind: "http".into(),
            url: Some(url.into()),
            ..Default::default()
        }
    }

    #[test]
    fn headers_are_secrets_and_only_their_names_are_shown() {
        let mut n = http("https://splunk.example.com/services/collector");
        n.headers = vec!["X-Api-Key: s3cret".into()];
        let (row, secrets) = row_for("sub", &n).unwrap();
        assert_eq!(
            secrets.headers,
            vec![("X-Api-Key".to_string(), "s3cret".to_string())]
        );
        assert!(!row.config.to_string().contains("s3cret"));
        assert!(!public_json(&row).to_string().contains("s3cret"));
        assert_eq!(
            row.id,
            "/subscriptions/sub/resourceGroups/moat/providers/Moat.Monitor/partnerSinks/splunk"
        );
    }

    #[test]
    fn bad_input_is_refused_before_anything_connects() {
        assert!(matches!(
            row_for("s", &http("http://splunk.example.com/x")),
            Err(RegisterError::Invalid(_))
        ));
        let mut n = http("https://x/y");
        n.kind = "kafka".into();
        assert!(matches!(
            row_for("s", &n),
            Err(RegisterError::Invalid(PartnerSinkError::UnknownKind(_)))
        ));
        let mut n = http("https://x/y");
        n.headers = vec!["no colon".into()];
        assert!(row_for("s", &n).is_err());
        let mut n = http("https://x/y");
        n.headers = vec!["X: a\r\nEvil: 1".into()];
        assert!(row_for("s", &n).is_err());
        let syslog = NewSink {
            name: "s".into(),
            resource_group: "moat".into(),
            kind: "syslog".into(),
            ..Default::default()
        };
        assert!(matches!(
            row_for("s", &syslog),
            Err(RegisterError::Usage(_))
        ));
    }
}
