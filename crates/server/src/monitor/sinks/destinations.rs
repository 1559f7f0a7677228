//! A setting's destinations: which there are, opening each as a [`Sink`], and checking them when a setting is
//! written (a storage account must be registered with Moat and answer; a partner sink must be registered and
//! answer), and where a new setting's cursors start.

use super::azure_archive::AzureArchive;
use super::records;
use super::sink::{Sink, SinkError};
use crate::state::AppState;
use moat_model::monitor::diagnostic_setting::{storage_account_name, DiagnosticSetting};
use moat_store::meta::DiagnosticSettingRow;

/// Why a setting's destination is refused (the settings PUT answers 400 with it).
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Everything a sink needs about its setting and registry.
pub struct Context {
    pub setting: DiagnosticSetting,
    pub subscription: String,
    pub registry_name: String,
    pub resource_id: String,
    pub location: String,
}

/// The destinations of a stored setting: `storage`, `partner`.
pub fn of(row: &DiagnosticSettingRow) -> Vec<&'static str> {
    let Ok(s) = serde_json::from_value::<DiagnosticSetting>(row.body.clone()) else {
        return vec![];
    };
    let mut d = vec![];
    if s.storage_account_id.is_some() {
        d.push("storage");
    }
    if s.marketplace_partner_id.is_some() {
        d.push("partner");
    }
    d
}

pub async fn context(state: &AppState, row: &DiagnosticSettingRow) -> anyhow::Result<Context> {
    let setting: DiagnosticSetting = serde_json::from_value(row.body.clone())?;
    let registry = state
        .meta
        .registry_by_id(&row.registry_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the setting's registry is gone"))?;
    let ids = crate::listener::cloud_ids(&state.meta).await?;
    Ok(Context {
        setting,
        resource_id: crate::arm::registry_json::registry_id(
            &ids.subscription_id,
            &registry.resource_group,
            &registry.name,
        ),
        subscription: ids.subscription_id,
        registry_name: registry.name.to_ascii_lowercase(),
        location: registry.settings.location.as_str().to_string(),
    })
}

/// The archive sink of a registered storage account (`moat storage-account add`).
async fn archive(
    state: &AppState,
    ctx: &Context,
    account_id: &str,
) -> Result<AzureArchive, DestinationError> {
    let name =
        storage_account_name(account_id).map_err(|e| DestinationError::Refused(e.message))?;
    let Some(row) = state
        .meta
        .storage_account(&name)
        .await
        .map_err(anyhow::Error::from)?
    else {
        return Err(DestinationError::Refused(format!(
            "the storage account '{name}' is not registered with Moat: register its blob endpoint and key with \
             `moat storage-account add --name {name} --blob-endpoint <url> --key-file <file>` first"
        )));
    };
    let uri = moat_model::storage_uri::StorageUri::AzureBlob {
        endpoint: row.blob_endpoint.trim_end_matches('/').to_string(),
        account: name.clone(),
        container: "insights-logs".into(),
        blob: None,
    };
    let cred = crate::secrets::storage_credential(state, &uri)
        .await
        .map_err(|e| DestinationError::Refused(format!("the storage account '{name}': {e}")))?
        .ok_or_else(|| {
            DestinationError::Refused(format!("the storage account '{name}' has no key"))
        })?;
    Ok(AzureArchive::new(
        &name,
        row.blob_endpoint.trim_end_matches('/'),
        cred,
        state.outbound.clone(),
        &ctx.resource_id,
        &ctx.subscription,
    ))
}

/// Opens one destination of a setting.
pub async fn open(state: &AppState, ctx: &Context, dest: &str) -> Result<Box<dyn Sink>, SinkError> {
    match dest {
        "storage" => {
            let id = ctx
                .setting
                .storage_account_id
                .as_deref()
                .unwrap_or_default();
            archive(state, ctx, id)
                .await
                .map(|a| Box::new(a) as Box<dyn Sink>)
                .map_err(|e| SinkError::Misconfigured(e.to_string()))
        }
        "partner" => {
            let id = ctx
                .setting
                .marketplace_partner_id
                .as_deref()
                .unwrap_or_default();
            super::marketplace::open(state, id).await
        }
        other => Err(SinkError::Misconfigured(format!(
            "no destination kind {other}"
        ))),
    }
}

/// Checks a setting's destinations before it is stored: registered, reachable, and not archiving a category to
/// an account another setting of the registry archives it to (Azure refuses that too: the blobs would mix).
pub async fn check_destinations(
    state: &AppState,
    ctx: &Context,
    others: &[DiagnosticSetting],
) -> Result<(), DestinationError> {
    if let Some(id) = &ctx.setting.storage_account_id {
        let name = storage_account_name(id).map_err(|e| DestinationError::Refused(e.message))?;
        for o in others {
            let same = o
                .storage_account_id
                .as_deref()
                .and_then(|x| storage_account_name(x).ok())
                .is_some_and(|n| n == name);
            if let Some(c) = same
                .then(|| {
                    ctx.setting
                        .categories()
                        .into_iter()
                        .find(|c| o.categories().contains(c))
                })
                .flatten()
            {
                return Err(DestinationError::Refused(format!(
                    "Data sink '{id}' is already used in another diagnostic setting of this registry for category '{c}'; \
                     a category goes to one setting per storage account"
                )));
            }
        }
        let mut a = archive(state, ctx, id).await?;
        let category = ctx
            .setting
            .categories()
            .first()
            .copied()
            .unwrap_or("AllMetrics");
        let category = category.to_string();
        tokio::task::spawn_blocking(move || a.probe(&category))
            .await
            .map_err(|e| anyhow::anyhow!("probe task: {e}"))?
            .map_err(|e| {
                DestinationError::Refused(format!(
                    "the storage account '{name}' cannot be written: {e}"
                ))
            })?;
    }
    if let Some(id) = &ctx.setting.marketplace_partner_id {
        super::marketplace::probe(state, id)
            .await
            .map_err(DestinationError::Refused)?;
    }
    Ok(())
}

/// Starts a written setting's cursors at the logs' end (and its metric archive at this minute) where it has
/// none yet: a replaced setting keeps the cursors it had.
pub async fn register(state: &AppState, row: &DiagnosticSettingRow) -> anyhow::Result<()> {
    let ctx = context(state, row).await?;
    let categories = ctx.setting.categories();
    for dest in of(row) {
        let consumer = format!("sink:{}:{dest}", row.key);
        for log in records::logs_of(&categories) {
            let has = state
                .meta
                .consumers(log)
                .await?
                .iter()
                .any(|c| c.consumer == consumer);
            if !has {
                let end = records::max_seq(state, log).await?;
                state
                    .meta
                    .set_consumer_seq(&consumer, log, Some(&ctx.registry_name), end)
                    .await?;
            }
        }
        if categories.contains(&moat_model::monitor::resource_log::ALL_METRICS)
            && state.meta.sink_metric_minute(&consumer).await?.is_none()
        {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            state
                .meta
                .set_sink_metric_minute(&consumer, now - now.rem_euclid(60) - 60)
                .await?;
        }
    }
    Ok(())
}
