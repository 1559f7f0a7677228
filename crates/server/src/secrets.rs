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
    Ok(changed)
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
