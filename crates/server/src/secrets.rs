//! Secrets the server must give back in clear (ACR returns the admin passwords from `listCredentials`), kept
//! sealed at rest under the secrets key (DESIGN principle 8): the database alone reveals none of them. The store
//! keeps opaque strings; sealing and opening happen here.

use crate::arm::error::ArmError;
use crate::oci::error::OciError;
use crate::state::AppState;
use moat_auth::{SealError, SecretBox};
use moat_store::{MetadataStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] SealError),
}

impl From<SecretsError> for OciError {
    fn from(e: SecretsError) -> OciError {
        match e {
            SecretsError::Store(e) => e.into(),
            SecretsError::Seal(e) => OciError::internal(e),
        }
    }
}

impl From<SecretsError> for ArmError {
    fn from(e: SecretsError) -> ArmError {
        match e {
            SecretsError::Store(e) => e.into(),
            SecretsError::Seal(e) => ArmError::internal(e),
        }
    }
}

/// The admin user's two password slots, as ACR names them.
const SLOTS: [&str; 2] = ["password", "password2"];

/// A new admin password: two v4 UUIDs give 244 random bits; the simple form is URL- and shell-safe.
fn random_password() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// What a sealed admin password is bound to: copied into another registry's row, it does not open.
fn context(registry_id: &str, slot: &str) -> String {
    format!("registry-credential/{registry_id}/{slot}")
}

fn sealer(state: &AppState) -> SecretBox {
    SecretBox::new(state.keys.secrets.clone())
}

/// Opens every row; a row sealed under a key this process has not loaded yet (a `moat keys rotate --purpose
/// secrets` that ran a moment ago) makes it re-read the key files once.
async fn open_all(
    state: &AppState,
    registry_id: &str,
    rows: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, SecretsError> {
    let sb = sealer(state);
    let open = |rows: &[(String, String)]| {
        rows.iter()
            .map(|(slot, v)| Ok((slot.clone(), sb.open(v, &context(registry_id, slot))?)))
            .collect::<Result<Vec<_>, SealError>>()
    };
    match open(&rows) {
        Err(SealError::UnknownKey(_)) => {
            let keys = state.keys.clone();
            let _ = tokio::task::spawn_blocking(move || keys.reload()).await;
            Ok(open(&rows)?)
        }
        other => Ok(other?),
    }
}

/// The admin user's passwords in clear (slot, password), made on first use.
pub async fn admin_credentials(
    state: &AppState,
    registry_id: &str,
) -> Result<Vec<(String, String)>, SecretsError> {
    let sb = sealer(state);
    let fresh = SLOTS
        .iter()
        .map(|slot| {
            Ok((
                *slot,
                sb.seal(&random_password(), &context(registry_id, slot))?,
            ))
        })
        .collect::<Result<Vec<_>, SealError>>()?;
    let rows = state.meta.admin_credentials(registry_id, &fresh).await?;
    open_all(state, registry_id, rows).await
}

pub async fn regenerate_admin_credential(
    state: &AppState,
    registry_id: &str,
    slot: &str,
    activity: &moat_model::activity::ActivityEvent,
) -> Result<(), SecretsError> {
    let sealed = sealer(state).seal(&random_password(), &context(registry_id, slot))?;
    state
        .meta
        .regenerate_admin_credential(registry_id, slot, &sealed, activity)
        .await?;
    Ok(())
}

/// Seals every stored secret that is still plaintext (rows from before sealing existed) or sealed under a key
/// that is no longer current (after a rotation of the secrets key). Returns how many rows changed.
pub async fn seal_stored(meta: &MetadataStore, sb: &SecretBox) -> Result<usize, SecretsError> {
    let mut changed = 0;
    for (registry_id, slot, stored) in meta.all_admin_credentials().await? {
        if !sb.needs_sealing(&stored) {
            continue;
        }
        let ctx = context(&registry_id, &slot);
        let sealed = sb.seal(&sb.open(&stored, &ctx)?, &ctx)?;
        if meta
            .reseal_admin_credential(&registry_id, &slot, &stored, &sealed)
            .await?
        {
            changed += 1;
        }
    }
    Ok(changed + seal_transfer_secrets(meta, sb).await?)
}

/// Start-of-server upgrade of a data directory from before key files: the signing secret that lived in the
/// settings table is deleted (tokens it signed stop verifying; clients sign in again), and plaintext secrets are
/// sealed.
pub async fn secure_database(
    meta: &MetadataStore,
    keys: &crate::keys::ServerKeys,
) -> Result<(), SecretsError> {
    if meta.delete_setting("token_secret").await? {
        tracing::warn!("moved token signing out of the database: tokens issued before this upgrade are no longer valid, clients sign in again");
    }
    let sealed = seal_stored(meta, &SecretBox::new(keys.secrets.clone())).await?;
    if sealed > 0 {
        tracing::info!("sealed {sealed} stored secret(s) under the current secrets key");
    }
    Ok(())
}

/// Why a secret or storage credential could not be had, worded for a failed pipeline run's message.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(transparent)]
    Uri(#[from] moat_model::secret_uri::SecretUriError),
    #[error("the secret {uri} does not exist in this server's secret store: create it with `moat secret set --id {uri} --value <SAS token>`")]
    NotFound { uri: String },
    #[error("the key registered for storage account '{account}' is for {registered}, not {asked}: register the endpoint the pipeline uses (moat storage-account add --name {account} --blob-endpoint …)")]
    EndpointMismatch {
        account: String,
        registered: String,
        asked: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// What a Key Vault-shaped secret version is sealed to: moved to another row, it does not open.
pub fn secret_context(vault: &str, name: &str, version: &str) -> String {
    format!("secret/{vault}/{name}/{version}")
}

pub fn storage_account_context(account: &str) -> String {
    format!("storage-account/{account}")
}

/// Opens one value, re-reading the key files once if it was sealed under a key this process has not loaded.
async fn open_one(state: &AppState, sealed: &str, ctx: &str) -> Result<String, SealError> {
    match sealer(state).open(sealed, ctx) {
        Err(SealError::UnknownKey(_)) => {
            let keys = state.keys.clone();
            let _ = tokio::task::spawn_blocking(move || keys.reload()).await;
            sealer(state).open(sealed, ctx)
        }
        other => other,
    }
}

/// The value of the secret a `keyVaultUri` names (its latest version unless the URI names one), read from the
/// store at each call: a `moat secret set` is used by the next run without a reload.
pub async fn resolve_secret(state: &AppState, key_vault_uri: &str) -> Result<String, SecretError> {
    let uri: moat_model::secret_uri::SecretUri = key_vault_uri.parse()?;
    let row = state
        .meta
        .secret(&uri.vault, &uri.name, uri.version.as_deref())
        .await?
        .ok_or_else(|| SecretError::NotFound {
            uri: uri.to_string(),
        })?;
    Ok(open_one(
        state,
        &row.value,
        &secret_context(&row.vault, &row.name, &row.version),
    )
    .await?)
}

/// The account key registered (`moat storage-account add`) for the storage account a pipeline URI names, for
/// storageAccessMode ManagedIdentity; `None` if the operator registered none. The key is used only at the blob
/// endpoint it was registered with: a pipeline naming the same account at another host (`acct.blob.example.com`)
/// would otherwise get requests signed with it that could be replayed against the real account.
pub async fn storage_credential(
    state: &AppState,
    uri: &moat_model::storage_uri::StorageUri,
) -> Result<Option<moat_transfer::storage::Credential>, SecretError> {
    let moat_model::storage_uri::StorageUri::AzureBlob {
        endpoint, account, ..
    } = uri
    else {
        return Ok(None);
    };
    let Some(row) = state.meta.storage_account(account).await? else {
        return Ok(None);
    };
    if !row.blob_endpoint.eq_ignore_ascii_case(endpoint) {
        return Err(SecretError::EndpointMismatch {
            account: account.clone(),
            registered: row.blob_endpoint,
            asked: endpoint.clone(),
        });
    }
    let key = open_one(state, &row.key, &storage_account_context(account)).await?;
    Ok(Some(moat_transfer::storage::Credential::SharedKey {
        account: account.clone(),
        key,
    }))
}

/// Re-seals secrets and storage account keys (see [`seal_stored`]).
async fn seal_transfer_secrets(
    meta: &MetadataStore,
    sb: &SecretBox,
) -> Result<usize, SecretsError> {
    let mut changed = 0;
    for (vault, name, version, stored) in meta.all_secret_values().await? {
        if sb.needs_sealing(&stored) {
            let ctx = secret_context(&vault, &name, &version);
            let sealed = sb.seal(&sb.open(&stored, &ctx)?, &ctx)?;
            if meta
                .reseal_secret(&vault, &name, &version, &stored, &sealed)
                .await?
            {
                changed += 1;
            }
        }
    }
    for row in meta.storage_accounts().await? {
        if sb.needs_sealing(&row.key) {
            let ctx = storage_account_context(&row.account);
            let sealed = sb.seal(&sb.open(&row.key, &ctx)?, &ctx)?;
            if meta
                .reseal_storage_account(&row.account, &row.key, &sealed)
                .await?
            {
                changed += 1;
            }
        }
    }
    Ok(changed + crate::monitor::sinks::partner::reseal(meta, sb).await?)
}
