//! `moat secret set|show|list|delete`: the server's secret store, addressed as Key Vault secrets are
//! (`--id https://<vault>.vault.azure.net/secrets/<name>`, or `--vault-name` and `--name` as `az keyvault secret`
//! takes them). A transfer pipeline's `keyVaultUri` names one; the server reads it at each run. Values are sealed
//! under the secrets key and never printed, except by `show --reveal`.

use crate::{emit, Common, Output};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use moat_model::secret_uri::SecretUri;
use moat_server::arm::activity::{local_event, operator};
use moat_server::secrets::secret_context;
use moat_store::meta::SecretRow;
use std::io::Read;

#[derive(Args)]
pub struct SecretRef {
    /// The secret's URI: https://<vault>.vault.azure.net/secrets/<name>[/<version>].
    #[arg(long, conflicts_with_all = ["vault_name", "name"])]
    id: Option<String>,
    /// The vault (with --name), as `az keyvault secret` takes it.
    #[arg(long, requires = "name")]
    vault_name: Option<String>,
    /// The secret's name (with --vault-name).
    #[arg(long, short, requires = "vault_name")]
    name: Option<String>,
}

impl SecretRef {
    fn parse(&self) -> anyhow::Result<SecretUri> {
        match (&self.id, &self.vault_name, &self.name) {
            (Some(id), _, _) => Ok(id.parse()?),
            (None, Some(v), Some(n)) => Ok(SecretUri::new(v, n)?),
            _ => bail!("name the secret with --id https://<vault>.vault.azure.net/secrets/<name>, or --vault-name and --name"),
        }
    }
}

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Store a new version of a secret (the latest from now on). Prints its metadata, not its value.
    Set {
        #[command(flatten)]
        secret: SecretRef,
        /// The value (visible in the shell's history and process list: prefer --file or --value-stdin).
        #[arg(long, conflicts_with_all = ["file", "value_stdin"])]
        value: Option<String>,
        /// Read the value from a file (a trailing newline is removed).
        #[arg(long, short, conflicts_with = "value_stdin")]
        file: Option<std::path::PathBuf>,
        /// Read the value from standard input (a trailing newline is removed).
        #[arg(long)]
        value_stdin: bool,
        /// Key Vault's contentType (free text).
        #[arg(long)]
        content_type: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// A secret's metadata (its latest version, or the version the --id names); the value only with --reveal.
    Show {
        #[command(flatten)]
        secret: SecretRef,
        /// Print the value too.
        #[arg(long)]
        reveal: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Every secret (of one vault, or all), latest versions, without values.
    List {
        #[arg(long)]
        vault_name: Option<String>,
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
        #[command(flatten)]
        common: Common,
    },
    /// Delete a secret with all its versions; pipelines that name it fail from their next run.
    Delete {
        #[command(flatten)]
        secret: SecretRef,
        #[command(flatten)]
        common: Common,
    },
}

/// A secret's metadata as Key Vault's `SecretBundle` spells it (no `value` unless asked).
fn bundle(row: &SecretRow, value: Option<&str>) -> serde_json::Value {
    let uri = SecretUri {
        vault: row.vault.clone(),
        name: row.name.clone(),
        version: Some(row.version.clone()),
    };
    let mut v = serde_json::json!({
        "id": uri.to_string(),
        "name": row.name,
        "vault": row.vault,
        "version": row.version,
        "contentType": row.content_type,
        "attributes": {"enabled": true, "created": row.first_created_at, "updated": row.created_at},
    });
    if let Some(value) = value {
        v["value"] = value.into();
    }
    v
}

fn read_value(
    value: Option<String>,
    file: Option<std::path::PathBuf>,
    stdin: bool,
) -> anyhow::Result<String> {
    let raw = match (value, file, stdin) {
        (Some(v), _, _) => return Ok(v),
        (None, Some(f), _) => std::fs::read_to_string(&f)
            .with_context(|| format!("reading the secret's value from {}", f.display()))?,
        (None, None, true) => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        }
        (None, None, false) => bail!("give the value with --value, --file or --value-stdin"),
    };
    Ok(raw
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&raw)
        .to_string())
}

fn sealer(c: &moat_server::ServeConfig) -> anyhow::Result<moat_auth::SecretBox> {
    let keys = moat_server::keys::ServerKeys::load(&c.data_dir)?;
    Ok(moat_auth::SecretBox::new(keys.secrets.clone()))
}

fn resource(uri: &SecretUri) -> String {
    format!("/vaults/{}/secrets/{}", uri.vault, uri.name)
}

pub async fn run(command: SecretCommand) -> anyhow::Result<()> {
    match command {
        SecretCommand::Set {
            secret,
            value,
            file,
            value_stdin,
            content_type,
            common,
        } => {
            let uri = secret.parse()?;
            if uri.version.is_some() {
                bail!("a new version gets its own id: name the secret without a version");
            }
            let value = read_value(value, file, value_stdin)?;
            if value.is_empty() {
                bail!("the secret's value is empty");
            }
            let dd = moat_server::operator::open(crate::config(&common)).await?;
            let version = uuid::Uuid::new_v4().simple().to_string();
            let sealed = sealer(&dd.config)?
                .seal(&value, &secret_context(&uri.vault, &uri.name, &version))?;
            let mut record = local_event(
                &operator(),
                "Microsoft.KeyVault/vaults/secrets/write",
                &resource(&uri),
            );
            record.set_property("version", version.as_str().into());
            let row = dd
                .meta
                .set_secret(
                    &uri.vault,
                    &uri.name,
                    &version,
                    &sealed,
                    content_type.as_deref(),
                    &record,
                )
                .await?;
            emit(format_args!(
                "{}",
                serde_json::to_string_pretty(&bundle(&row, None))?
            ));
            Ok(())
        }
        SecretCommand::Show {
            secret,
            reveal,
            common,
        } => {
            let uri = secret.parse()?;
            let dd = moat_server::operator::open(crate::config(&common)).await?;
            let Some(row) = dd
                .meta
                .secret(&uri.vault, &uri.name, uri.version.as_deref())
                .await?
            else {
                bail!(
                    "no secret {uri} here (moat secret list shows them; moat secret set makes one)"
                );
            };
            let value = if reveal {
                Some(sealer(&dd.config)?.open(
                    &row.value,
                    &secret_context(&row.vault, &row.name, &row.version),
                )?)
            } else {
                None
            };
            emit(format_args!(
                "{}",
                serde_json::to_string_pretty(&bundle(&row, value.as_deref()))?
            ));
            Ok(())
        }
        SecretCommand::List {
            vault_name,
            output,
            common,
        } => {
            let vault = vault_name.map(|v| v.to_ascii_lowercase());
            let dd = moat_server::operator::open(crate::config(&common)).await?;
            let rows = dd.meta.secrets(vault.as_deref()).await?;
            match output {
                Output::Json => {
                    for r in &rows {
                        emit(format_args!("{}", bundle(r, None)));
                    }
                }
                Output::Table => {
                    let cells: Vec<[String; 3]> = rows
                        .iter()
                        .map(|r| {
                            [
                                SecretUri {
                                    vault: r.vault.clone(),
                                    name: r.name.clone(),
                                    version: None,
                                }
                                .to_string(),
                                r.version.clone(),
                                r.created_at.clone(),
                            ]
                        })
                        .collect();
                    crate::table::print(["ID", "VERSION", "UPDATED"], &cells);
                }
            }
            Ok(())
        }
        SecretCommand::Delete { secret, common } => {
            let uri = secret.parse()?.unversioned();
            let dd = moat_server::operator::open(crate::config(&common)).await?;
            let record = local_event(
                &operator(),
                "Microsoft.KeyVault/vaults/secrets/delete",
                &resource(&uri),
            );
            if !dd
                .meta
                .delete_secret(&uri.vault, &uri.name, &record)
                .await?
            {
                bail!("no secret {uri} here (moat secret list shows them)");
            }
            Ok(())
        }
    }
}
