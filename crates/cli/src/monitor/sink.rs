//! `moat monitor sink add|list|show|delete`. Works on the data directory like `moat storage-account` (each change
//! one transaction with its activity record; the server reads sinks from the database at each delivery). `add`
//! connects to the sink once, through an outbound connector that refuses this server's own listeners and applies
//! the `[outbound]` rules of `--config`, and refuses a sink it cannot reach.

use crate::{emit, Common, Output};
use anyhow::{bail, Context};
use clap::Subcommand;
use moat_server::arm::activity::{local_event, operator};
use moat_server::listener::{cloud_ids, DEFAULT_RESOURCE_GROUP};
use moat_server::monitor::sinks::partner::register::{self, NewSink};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Subcommand)]
pub enum SinkCommand {
    /// Register (or replace) a sink; prints its id, the `marketplacePartnerId` of a diagnostic setting.
    Add(Box<AddArgs>),
    /// The registered sinks (never their secrets).
    List {
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
        #[command(flatten)]
        common: Common,
    },
    /// One sink's configuration (never its secrets).
    Show {
        #[arg(long, short)]
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Forget a sink; diagnostic settings naming it keep their records until it is added again.
    Delete {
        #[arg(long, short)]
        name: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(clap::Args)]
pub struct AddArgs {
    #[arg(long, short)]
    name: String,
    /// syslog (RFC 5424 over TLS, RFC 5425 framing) or http (JSON events, Splunk HEC style).
    #[arg(long)]
    kind: String,
    /// The resource group in the sink's id.
    #[arg(long, short = 'g', default_value = DEFAULT_RESOURCE_GROUP)]
    resource_group: String,
    /// syslog: the collector's TLS listener, host:port (6514 by convention).
    #[arg(long)]
    address: Option<String>,
    /// http: the collector's URL, https://…/services/collector (http:// only to a loopback address).
    #[arg(long)]
    url: Option<String>,
    /// PEM certificates to trust for the collector (syslog: instead of the system's roots; http: besides).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// syslog: a PEM certificate chain to present when the collector asks for one.
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// syslog: the PEM private key of --client-cert (stored sealed).
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// syslog: APP-NAME of the messages (default moat).
    #[arg(long)]
    app_name: Option<String>,
    /// syslog: facility, a name (local0 … local7, auth, …) or 0-23 (default local0).
    #[arg(long)]
    facility: Option<String>,
    /// http: a `moat secret` (https://<vault>.vault.azure.net/secrets/<name>) holding the HEC token, sent as
    /// `Authorization: Splunk <token>` and read again whenever the sink is opened.
    #[arg(long)]
    token_secret: Option<String>,
    /// http: a header to send, 'Name: value' (stored sealed, never shown); repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// The server's TOML file, for its [outbound] allow and deny lists (the probe obeys them as the server
    /// will).
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

fn read(path: &Option<PathBuf>, what: &str) -> anyhow::Result<Option<String>> {
    path.as_ref()
        .map(|p| {
            std::fs::read_to_string(p).with_context(|| format!("reading {what} {}", p.display()))
        })
        .transpose()
}

pub async fn run(command: SinkCommand) -> anyhow::Result<()> {
    match command {
        SinkCommand::Add(args) => {
            let AddArgs {
                name,
                kind,
                resource_group,
                address,
                url,
                ca_file,
                client_cert,
                client_key,
                app_name,
                facility,
                token_secret,
                headers,
                config,
                common,
            } = *args;
            let new = NewSink {
                name,
                resource_group,
                kind,
                address,
                url,
                ca_pem: read(&ca_file, "the CA file")?,
                client_cert_pem: read(&client_cert, "the client certificate")?,
                client_key_pem: read(&client_key, "the client key")?,
                app_name,
                facility,
                token_secret,
                headers,
            };
            let rules = match &config {
                Some(path) => moat_server::config::ConfigFile::load(path)?
                    .outbound
                    .rules(),
                None => Default::default(),
            };
            let dd = moat_server::operator::open(crate::config(&common)).await?;
            // The server's own addresses: its main listener and its private endpoints (same port). A sink there
            // would be the server talking to itself.
            let port = dd.config.listen.port();
            let mut own = vec![dd.config.listen];
            own.extend(
                dd.meta
                    .private_endpoints()
                    .await?
                    .into_iter()
                    .map(|pe| std::net::SocketAddr::new(pe.address, port)),
            );
            let outbound = moat_outbound::Outbound::new(rules, Arc::new(move || own.clone()));
            let keys = moat_server::keys::ServerKeys::load(&dd.config.data_dir)?;
            let sb = moat_auth::SecretBox::new(keys.secrets.clone());
            let sub = cloud_ids(&dd.meta).await?.subscription_id;
            let (probe_row, _) = register::row_for(&sub, &new)?;
            let mut record = local_event(
                &operator(),
                "Moat.Monitor/partnerSinks/write",
                &probe_row.id,
            );
            record.set_property("kind", probe_row.kind.clone().into());
            for k in ["address", "url"] {
                if let Some(v) = probe_row.config.get(k) {
                    record.set_property(k, v.clone());
                }
            }
            let row = register::add(&dd.meta, &sb, &outbound, &sub, &new, &record).await?;
            dd.changed().await;
            emit(format_args!(
                "{}",
                serde_json::to_string_pretty(&register::public_json(&row))?
            ));
            Ok(())
        }
        SinkCommand::List { output, common } => {
            let dd = moat_server::operator::open(crate::config(&common)).await?;
            let rows = dd.meta.partner_sinks().await?;
            match output {
                Output::Json => {
                    for r in &rows {
                        emit(format_args!("{}", register::public_json(r)));
                    }
                }
                Output::Table => {
                    let cells: Vec<[String; 4]> = rows
                        .iter()
                        .map(|r| {
                            let target = ["address", "url"]
                                .iter()
                                .find_map(|k| r.config.get(*k).and_then(|v| v.as_str()))
                                .unwrap_or("")
                                .to_string();
                            [r.name.clone(), r.kind.clone(), target, r.id.clone()]
                        })
                        .collect();
                    crate::table::print(["NAME", "KIND", "DESTINATION", "ID"], &cells);
                }
            }
            Ok(())
        }
        SinkCommand::Show { name, common } => {
            let dd = moat_server::operator::open(crate::config(&common)).await?;
            let Some(row) = dd.meta.partner_sink_named(&name).await? else {
                bail!("no sink named '{name}' (moat monitor sink list shows them)");
            };
            emit(format_args!(
                "{}",
                serde_json::to_string_pretty(&register::public_json(&row))?
            ));
            Ok(())
        }
        SinkCommand::Delete { name, common } => {
            let dd = moat_server::operator::open(crate::config(&common)).await?;
            let Some(row) = dd.meta.partner_sink_named(&name).await? else {
                bail!("no sink named '{name}' (moat monitor sink list shows them)");
            };
            let record = local_event(&operator(), "Moat.Monitor/partnerSinks/delete", &row.id);
            if !dd.meta.delete_partner_sink(&row.id, &record).await? {
                bail!("no sink named '{name}' (moat monitor sink list shows them)");
            }
            dd.changed().await;
            Ok(())
        }
    }
}
