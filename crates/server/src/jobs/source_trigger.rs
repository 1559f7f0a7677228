//! The source trigger of import pipelines (ACR: "import each new archive"): every interval (`moat serve
//! --transfer-trigger-interval-secs`, default 60 s), in one process among those sharing the store, each import
//! pipeline whose `trigger.sourceTrigger.status` is Enabled has its container listed, and every archive that
//! follows ACR's rules (blob metadata `category=acr-transfer-blob`, a Content-MD5, Last-Modified within 60 days,
//! reference §1.5) and was not taken before is imported by a pipeline run named after it. An archive is taken
//! once: its name and ETag are remembered (migration 0018) after its run is recorded, and the run's name is a
//! function of both, so a crash between the two records the same run again, which changes nothing.

use super::pipeline_run::{self, credentials};
use super::Jobs;
use crate::state::AppState;
use moat_model::activity::ActivityEvent;
use moat_model::transfer::{PipelineKind, RunBlob, RunRequest, StorageType};
use moat_store::meta::PipelineRow;
use moat_transfer::storage::ArchiveEntry;
use sha2::{Digest as _, Sha256};
use std::time::{Duration, SystemTime};

/// ACR imports archives at most this old.
const MAX_AGE: Duration = Duration::from_secs(60 * 24 * 3600);

pub fn register(jobs: &Jobs, state: &AppState) {
    let interval = state.config.transfer_trigger_interval;
    if interval.is_zero() {
        return;
    }
    let state = state.clone();
    jobs.every("source-trigger", interval, move || {
        let state = state.clone();
        async move { poll(&state).await }
    });
}

async fn poll(state: &AppState) {
    let pipelines = match state.meta.import_pipelines_with_trigger().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("source trigger: {e}");
            return;
        }
    };
    for p in pipelines {
        if let Err(e) = poll_pipeline(state, &p).await {
            // A source that cannot be listed is retried at the next tick; the operator sees why in the log.
            let e = pipeline_run::audit::scrub(&e);
            tracing::warn!(pipeline = %p.name, "source trigger: {e}");
        }
    }
}

/// Whether ACR's source trigger would import this blob (reference §1.5). A directory (`LocalDirectory`) keeps no
/// blob metadata or Content-MD5: there, every complete archive file (partial files are hidden) young enough is.
pub fn eligible(e: &ArchiveEntry, now: SystemTime, directory: bool) -> bool {
    let category = e
        .metadata
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("category") && v == "acr-transfer-blob");
    let fresh = now
        .duration_since(e.last_modified)
        .map(|age| age <= MAX_AGE)
        .unwrap_or(true);
    fresh && (directory || (category && e.content_md5.is_some()))
}

/// The run that imports archive `blob` at `etag`: 5–50 alphanumerics, named after the blob and unique per version.
pub fn run_name(blob: &str, etag: &str) -> String {
    let stem: String = blob
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(30)
        .collect();
    let hash = hex::encode(Sha256::digest(format!("{blob}\n{etag}").as_bytes()));
    format!("trigger{stem}{}", &hash[..12])
}

async fn poll_pipeline(state: &AppState, p: &PipelineRow) -> Result<(), String> {
    let store = credentials::open(state, &p.pipeline.storage).await?;
    let store2 = store.clone();
    let entries = tokio::task::spawn_blocking(move || store2.list())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| credentials::storage_message(&p.pipeline.storage, &e))?;
    let now = SystemTime::now();
    let directory = p.pipeline.storage.kind == StorageType::LocalDirectory;
    for e in entries.into_iter().filter(|e| eligible(e, now, directory)) {
        if state
            .meta
            .trigger_seen(&p.registry_id, &p.name, &e.name, &e.etag)
            .await
            .map_err(|e| e.to_string())?
        {
            continue;
        }
        let run = run_name(&e.name, &e.etag);
        start_run(state, p, &run, &e.name).await?;
        state
            .meta
            .mark_trigger_seen(&p.registry_id, &p.name, &e.name, &e.etag, &run)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(pipeline = %p.name, run = %run, "source trigger: importing archive '{}'", e.name);
    }
    Ok(())
}

async fn start_run(state: &AppState, p: &PipelineRow, run: &str, blob: &str) -> Result<(), String> {
    let Some(registry) = state
        .meta
        .registry_by_id(&p.registry_id)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    let subscription = crate::listener::cloud_ids(&state.meta)
        .await
        .map_err(|e| e.to_string())?
        .subscription_id;
    let registry_path = format!(
        "/subscriptions/{subscription}/resourceGroups/{}/providers/Microsoft.ContainerRegistry/registries/{}",
        registry.resource_group, registry.name
    );
    let request = RunRequest {
        pipeline_resource_id: format!("{registry_path}/importPipelines/{}", p.name),
        artifacts: vec![],
        source: Some(RunBlob {
            kind: "AzureStorageBlob".into(),
            name: blob.to_string(),
        }),
        target: None,
        catalog_digest: None,
    };
    let activity = ActivityEvent::new(
        uuid::Uuid::new_v4().to_string(),
        moat_store::time_fmt::now(),
        "Microsoft.ContainerRegistry/registries/pipelineRuns/write",
        format!("{registry_path}/pipelineRuns/{run}"),
        format!("sourceTrigger:{}", p.name),
        "",
        uuid::Uuid::new_v4().to_string(),
    );
    let put = state
        .meta
        .put_pipeline_run(
            &p.registry_id,
            run,
            PipelineKind::Import,
            &p.name,
            &request,
            None,
            &format!("sourceTrigger:{}", p.name),
            &activity,
        )
        .await;
    match put {
        Ok(_) => {
            state.jobs.wake();
            Ok(())
        }
        // A run of that name is running already: the archive is taken.
        Err(moat_store::meta::RunWriteError::StillRunning(_)) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn entry(md5: bool, category: Option<&str>, age_days: u64) -> ArchiveEntry {
        let mut metadata = BTreeMap::new();
        if let Some(c) = category {
            metadata.insert("category".to_string(), c.to_string());
        }
        ArchiveEntry {
            name: "export1.tar".into(),
            size: 10,
            last_modified: SystemTime::now() - Duration::from_secs(age_days * 24 * 3600),
            etag: "0x1".into(),
            content_md5: md5.then(|| "abc==".to_string()),
            metadata,
        }
    }

    #[test]
    fn acr_rules_decide_what_the_trigger_imports() {
        let now = SystemTime::now();
        assert!(eligible(
            &entry(true, Some("acr-transfer-blob"), 1),
            now,
            false
        ));
        assert!(!eligible(
            &entry(false, Some("acr-transfer-blob"), 1),
            now,
            false
        ));
        assert!(!eligible(&entry(true, None, 1), now, false));
        assert!(!eligible(&entry(true, Some("other"), 1), now, false));
        assert!(!eligible(
            &entry(true, Some("acr-transfer-blob"), 61),
            now,
            false
        ));
        // A directory has neither metadata nor Content-MD5; the age still counts.
        assert!(eligible(&entry(false, None, 1), now, true));
        assert!(!eligible(&entry(false, None, 61), now, true));
    }

    #[test]
    fn run_names_are_arm_names_and_differ_per_version() {
        let a = run_name("exports/2026-12-07 nightly.tar", "0x8D1");
        assert!(
            a.len() >= 5 && a.len() <= 50 && a.chars().all(|c| c.is_ascii_alphanumeric()),
            "{a}"
        );
        assert_ne!(a, run_name("exports/2026-12-07 nightly.tar", "0x8D2"));
        assert_eq!(a, run_name("exports/2026-12-07 nightly.tar", "0x8D1"));
        let long = run_name(&"x".repeat(300), "e");
        assert!(long.len() <= 50);
    }
}
