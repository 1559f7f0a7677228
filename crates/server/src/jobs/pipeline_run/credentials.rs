//! Where a run's archive lives and how the server gets in: a pipeline's `target`/`source` (`type`, `uri`,
//! `keyVaultUri`, `storageAccessMode`) turned into an open [`ArchiveStore`]. In `SasToken` mode (ACR's default)
//! the SAS token is the secret `keyVaultUri` names, resolved from the server's secret store at run time; in
//! `ManagedIdentity` mode it is the credential the operator registered for the storage account. A
//! `LocalDirectory` needs none. Messages name the secret or the account, never a credential.

use crate::state::AppState;
use moat_model::storage_uri::StorageUri;
use moat_model::transfer::{StorageAccessMode, StorageEndpoint, StorageType};
use moat_transfer::storage::{ArchiveStore, Credential, StorageError};
use serde_json::{json, Value};
use std::sync::Arc;

/// The run response's `target` / `source` for the archive at `uri`: ACR answers `type` `AzureStorageBlob` and
/// the archive's full URI (Moat: `LocalDirectory` and its `file://` URI).
pub fn response(ep: &StorageEndpoint, uri: &str) -> Value {
    let kind = match ep.kind {
        StorageType::LocalDirectory => "LocalDirectory",
        _ => "AzureStorageBlob",
    };
    json!({
        "type": kind,
        "uri": super::audit::redact(uri),
        "keyVaultUri": ep.key_vault_uri,
        "storageAccessMode": ep.storage_access_mode.as_str(),
    })
}

/// Resolves the credential and opens the store.
pub async fn open(state: &AppState, ep: &StorageEndpoint) -> Result<Arc<dyn ArchiveStore>, String> {
    let uri: StorageUri = ep.uri.parse().map_err(|e| {
        format!(
            "the pipeline's storage URI '{}' is not valid: {e}",
            super::audit::redact(&ep.uri)
        )
    })?;
    let credential = credential(state, ep, &uri).await?;
    let outbound = state.outbound.clone();
    let store = tokio::task::spawn_blocking(move || {
        moat_transfer::storage::open(&uri, credential, &outbound)
    })
    .await
    .map_err(|e| format!("internal error: {e}"))?
    .map_err(|e| storage_message(ep, &e))?;
    Ok(Arc::from(store))
}

async fn credential(
    state: &AppState,
    ep: &StorageEndpoint,
    uri: &StorageUri,
) -> Result<Credential, String> {
    let account = match uri {
        StorageUri::LocalDirectory { .. } => return Ok(Credential::None),
        StorageUri::AzureBlob { account, .. } => account.clone(),
    };
    if ep.storage_access_mode == StorageAccessMode::ManagedIdentity {
        return match crate::secrets::storage_credential(state, uri).await {
            Ok(Some(c)) => Ok(c),
            Ok(None) => Err(format!(
                "the pipeline uses storageAccessMode ManagedIdentity and no credential is registered for storage account '{account}': register one with `moat storage-account add --name {account} --blob-endpoint <url> --key <base64 key>`, or use a SAS token from a secret (storageAccessMode SasToken with keyVaultUri)"
            )),
            Err(e) => Err(format!(
                "the credential of storage account '{account}' could not be used: {e}"
            )),
        };
    }
    let Some(kv) = &ep.key_vault_uri else {
        return Err("the pipeline uses storageAccessMode SasToken but names no secret: set keyVaultUri to the secret that holds the SAS token (`moat secret set --vault <vault> --name <name> --value <sas>`)".into());
    };
    let sas = crate::secrets::resolve_secret(state, kv)
        .await
        .map_err(|e| format!("the SAS token could not be read from secret '{kv}': {e}"))?;
    Ok(Credential::Sas(sas))
}

/// A storage failure as a run's `pipelineRunErrorMessage`: what failed and what to do about it.
pub fn storage_message(ep: &StorageEndpoint, e: &StorageError) -> String {
    super::audit::scrub(&raw_message(ep, e))
}

fn raw_message(ep: &StorageEndpoint, e: &StorageError) -> String {
    match e {
        StorageError::CredentialRefused { .. } => {
            let how = match (&ep.storage_access_mode, &ep.key_vault_uri) {
                (StorageAccessMode::ManagedIdentity, _) => {
                    "check the key registered with `moat storage-account add`".to_string()
                }
                (_, Some(kv)) => format!(
                    "check the SAS token in secret '{kv}' (its permissions, expiry and resource types)"
                ),
                _ => "check the storage credential".to_string(),
            };
            format!("{e}: {how}")
        }
        _ => e.to_string(),
    }
}
