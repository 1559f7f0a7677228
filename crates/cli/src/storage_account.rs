//! `moat storage-account add|list|delete`: the account keys a transfer pipeline with storageAccessMode
//! ManagedIdentity uses. Moat has no managed identity to grant "Storage Blob Data Contributor" to, so the operator
//! registers the account's key here instead; it is sealed under the secrets key, used only at the blob endpoint
//! it was registered with, and never printed.

use crate::{emit, Common, Output};
use anyhow::{bail, Context};
use clap::Subcommand;
use moat_model::storage_uri::StorageUri;
use moat_server::arm::activity::{local_event, operator};
use moat_server::secrets::storage_account_context;
use moat_store::meta::StorageAccountRow;

#[derive(Subcommand)]
pub enum StorageAccountCommand {
    /// Register (or replace) a storage account's key.
    Add {
        /// The storage account's name.
        #[arg(long, short)]
        name: String,
        /// Its blob endpoint: https://<account>.blob.core.windows.net, or http://127.0.0.1:<port>/<account> for
        /// Azurite. Default: the public cloud's.
        #[arg(long)]
        blob_endpoint: Option<String>,
        /// The account key (base64; visible in the shell's history: prefer --key-file).
        #[arg(long, conflicts_with = "key_file")]
        key: Option<String>,
        /// Read the key from a file.
        #[arg(long)]
        key_file: Option<std::path::PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// The registered accounts and endpoints (never the keys).
    List {
        #[arg(long, short, value_enum, default_value_t = Output::Table)]
        output: Output,
        #[command(flatten)]
        common: Common,
    },
    /// Forget an account's key; ManagedIdentity pipelines to it fail from their next run.
    Delete {
        #[arg(long, short)]
        name: String,
        #[command(flatten)]
        common: Common,
    },
}

fn json(r: &StorageAccountRow) -> serde_json::Value {
    serde_json::json!({
        "name": r.account, "blobEndpoint": r.blob_endpoint, "created": r.created_at, "updated": r.updated_at,
    })
}

/// The endpoint as `StorageUri` spells it (lower-case, no trailing slash), checked to belong to `account`.
fn endpoint_of(account: &str, given: Option<&str>) -> anyhow::Result<String> {
    let given = given
        .map(|e| e.trim().trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"));
    let probe: StorageUri = format!("{given}/probe")
        .parse()
        .with_context(|| format!("'{given}' is not a blob endpoint"))?;
    match probe {
        StorageUri::AzureBlob {
            endpoint,
            account: a,
            ..
        } if a == account => Ok(endpoint),
        StorageUri::AzureBlob { account: a, .. } => {
            bail!("the endpoint {given} is storage account '{a}''s, not '{account}''s")
        }
        StorageUri::LocalDirectory { .. } => bail!("a directory needs no account key"),
    }
}

fn resource(account: &str) -> String {
    format!("/storageAccounts/{account}")
}

pub async fn run(command: StorageAccountCommand) -> anyhow::Result<()> {
    match command {
        StorageAccountCommand::Add {
            name,
            blob_endpoint,
            key,
            key_file,
            common,
        } => {
            let account = name.to_ascii_lowercase();
            if !moat_model::storage_uri::valid_account_name(&account) {
                bail!(
                    "'{name}' is not a storage account name: 3 to 24 lower-case letters and digits"
                );
            }
            let endpoint = endpoint_of(&account, blob_endpoint.as_deref())?;
            let key = match (key, key_file) {
                (Some(k), _) => k,
                (None, Some(f)) => std::fs::read_to_string(&f)
                    .with_context(|| format!("reading the key from {}", f.display()))?,
                (None, None) => bail!("give the account key with --key or --key-file"),
            };
            let key = key.trim().to_string();
            use base64::Engine;
            if base64::engine::general_purpose::STANDARD
                .decode(&key)
                .is_err()
            {
                bail!("the key is not base64: give it as `az storage account keys list` prints it");
            }
            let dd = moat_server::operator::open(crate::config(&common)).await?;
            let keys = moat_server::keys::ServerKeys::load(&dd.config.data_dir)?;
            let sealed = moat_auth::SecretBox::new(keys.secrets.clone())
                .seal(&key, &storage_account_context(&account))?;
            let mut record = local_event(
                &operator(),
                "Microsoft.Storage/storageAccounts/write",
                &resource(&account),
            );
            record.set_property("blobEndpoint", endpoint.as_str().into());
            let row = dd
                .meta
                .set_storage_account(&account, &endpoint, &sealed, &record)
                .await?;
            emit(format_args!(
                "{}",
                serde_json::to_string_pretty(&json(&row))?
            ));
            Ok(())
        }
        StorageAccountCommand::List { output, common } => {
            let dd = moat_server::operator::open(crate::config(&common)).await?;
            let rows = dd.meta.storage_accounts().await?;
            match output {
                Output::Json => {
                    for r in &rows {
                        emit(format_args!("{}", json(r)));
                    }
                }
                Output::Table => {
                    let cells: Vec<[String; 3]> = rows
                        .iter()
                        .map(|r| {
                            [
                                r.account.clone(),
                                r.blob_endpoint.clone(),
                                r.updated_at.clone(),
                            ]
                        })
                        .collect();
                    crate::table::print(["NAME", "BLOB ENDPOINT", "UPDATED"], &cells);
                }
            }
            Ok(())
        }
        StorageAccountCommand::Delete { name, common } => {
            let account = name.to_ascii_lowercase();
            let dd = moat_server::operator::open(crate::config(&common)).await?;
            let record = local_event(
                &operator(),
                "Microsoft.Storage/storageAccounts/delete",
                &resource(&account),
            );
            if !dd.meta.delete_storage_account(&account, &record).await? {
                bail!("no storage account '{account}' registered (moat storage-account list shows them)");
            }
            Ok(())
        }
    }
}
