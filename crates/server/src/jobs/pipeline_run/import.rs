//! An import run: the archive read from the pipeline's source, its signed contents list verified first (against
//! the pipeline's `trustedExporterKeys`, else the server's `[transfer]` keys), every blob streamed into the blob
//! store and hashed, the whole stream checked against `catalogDigest` when the request gives one, and then every
//! artifact written into the registry in ONE transaction on the proofs of the bytes this run received (DESIGN
//! principle 6). A tampered, truncated or unsigned-when-required archive is refused before anything is linked.
//! An import killed midway starts again: blobs are content-addressed and the write is one transaction.

use super::audit::{ArtifactColumns, Outcome, RunAudit};
use super::credentials;
use super::{RunError, RunJob};
use moat_model::transfer::PipelineOption;
use moat_model::{Digest, RepositoryName, Tag};
use moat_store::meta::{ImportWrite, ManifestRecord};
use moat_transfer::archive::{
    self, ExportedArtifact, ReadArchive, StorePinner, TransferPublicKey, TrustPolicy,
};
use serde_json::json;

/// How long an import's pins hold the bytes it stores against the collector (a pin left by a crash lapses).
const PIN_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

pub(super) async fn run(job: &mut RunJob<'_>) -> Result<(), RunError> {
    let state = job.state.clone();
    let registry = job.registry.clone();
    let pipeline = state
        .meta
        .import_pipeline(&registry.id, &job.pipeline)
        .await?
        .ok_or_else(|| {
            RunError::Failed(format!(
                "import pipeline '{}' does not exist (it was deleted): create it again, then run again",
                job.pipeline
            ))
        })?
        .pipeline;
    let ep = pipeline.storage.clone();
    let has = |o: PipelineOption| pipeline.has_option(o);
    let (pipeline_name, run_name) = (job.pipeline.clone(), job.name.clone());
    let audit = RunAudit {
        registry: &registry,
        pipeline: &pipeline_name,
        run: &run_name,
    };
    let name = job
        .request
        .source
        .as_ref()
        .map(|s| s.name.clone())
        .filter(|n| !n.is_empty());
    let failed = |why: String, source: &str| {
        for e in audit.import(
            vec![ArtifactColumns {
                repository: None,
                tag: None,
                digest: None,
            }],
            source,
            &Outcome::Failed(why.clone()),
        ) {
            state.audit.record(e);
        }
        RunError::Failed(why)
    };
    let Some(name) = name else {
        return Err(failed("the run names no archive: set request.source.name (the blob or file name in the pipeline's source)".into(), &ep.uri));
    };
    let store = credentials::open(&state, &ep)
        .await
        .map_err(|e| failed(e, &ep.uri))?;
    let uri = store.uri_of(&name);
    job.response["source"] = credentials::response(&ep, &uri);
    let expected: Option<Digest> = match job.request.catalog_digest.as_deref().filter(|d| !d.is_empty()) {
        None => None,
        Some(d) => Some(d.parse().map_err(|_| {
            failed(format!("request.catalogDigest '{d}' is not a digest (sha256:<64 hex>): give the export run's response.catalogDigest, or leave it out"), &uri)
        })?),
    };
    let trust =
        trust_policy(&state, &pipeline.trusted_exporter_keys).map_err(|e| failed(e, &uri))?;
    job.save("Creating").await?;
    // Nothing to resume from in an import (it reads the archive again); the checkpoint keeps the start time of
    // the first attempt, and tells a cancelled run to stop before it reads.
    if job.ctx.checkpoint.is_none() {
        job.ctx
            .checkpoint(json!({"phase": "reading"}))
            .await
            .map_err(RunError::Stopped)?;
    }

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
    let (store2, name2, blobs) = (store.clone(), name.clone(), state.blobs.clone());
    let pinner = StorePinner {
        meta: state.meta.clone(),
        handle: tokio::runtime::Handle::current(),
        ttl: PIN_TTL,
        job: Some(job.ctx.id.clone()),
    };
    let ep2 = ep.clone();
    let reader = tokio::task::spawn_blocking(move || -> Result<(ReadArchive, u64), String> {
        let total = store2
            .stat(&name2)
            .ok()
            .flatten()
            .map(|e| e.size)
            .unwrap_or(0);
        let mut input = store2
            .open_read(&name2)
            .map_err(|e| credentials::storage_message(&ep2, &e))?;
        let progress = |bytes: u64, _blobs: usize| {
            let _ = tx.send((bytes, total));
        };
        let read = archive::read_archive(
            &mut input,
            &trust,
            expected.as_ref(),
            blobs.as_ref(),
            &pinner,
            &progress,
        )
        .map_err(|e| format!("the archive '{name2}' was refused, nothing was imported: {e}"))?;
        Ok((read, total))
    });
    tokio::pin!(reader);
    let mut last_saved = std::time::Instant::now();
    let read = loop {
        tokio::select! {
            note = rx.recv() => if let Some((bytes, total)) = note {
                job.set_percentage(bytes, total.max(bytes).max(1));
                if last_saved.elapsed() > std::time::Duration::from_secs(1) {
                    last_saved = std::time::Instant::now();
                    job.save("Creating").await?;
                }
            },
            done = &mut reader => break done,
        }
    };
    let (read, _total) = read
        .map_err(|e| RunError::Failed(format!("internal error: {e}")))?
        .map_err(|e| failed(e, &uri))?;
    job.response["catalogDigest"] = json!(read.catalog_digest.to_string());

    // One write per artifact, in one transaction.
    let plans = plan(&read).map_err(|e| failed(e, &uri))?;
    let event_sets: Vec<Vec<moat_model::audit::AuditEvent>> = plans
        .iter()
        .map(|p| audit.import(vec![p.columns()], &uri, &Outcome::Success))
        .collect();
    let writes: Vec<ImportWrite<'_>> = plans
        .iter()
        .zip(&event_sets)
        .map(|(p, events)| ImportWrite {
            target_registry_id: &registry.id,
            targets: &p.targets,
            manifests: &p.manifests,
            blobs: &p.blobs,
            force: has(PipelineOption::OverwriteTags),
            events,
        })
        .collect();
    let outcomes = state
        .meta
        .import_archive(
            &writes,
            &read.received,
            has(PipelineOption::ContinueOnErrors),
        )
        .await;
    state.manifest_cache.invalidate();
    let outcomes = match outcomes {
        Ok(o) => o,
        Err(e) => {
            let why = format!("{e}");
            for p in &plans {
                for ev in audit.import(vec![p.columns()], &uri, &Outcome::Failed(why.clone())) {
                    state.audit.record(ev);
                }
            }
            return Err(RunError::Failed(format!(
                "nothing was imported: {why}{}",
                if has(PipelineOption::OverwriteTags) {
                    ""
                } else {
                    " (add the pipeline option OverwriteTags to move existing tags, or ContinueOnErrors to import the other artifacts)"
                }
            )));
        }
    };
    let mut imported = Vec::new();
    let mut errors = Vec::new();
    for (p, outcome) in plans.iter().zip(outcomes) {
        match outcome {
            Ok(()) => imported.push(p.display()),
            Err(e) => {
                for ev in audit.import(vec![p.columns()], &uri, &Outcome::Failed(e.to_string())) {
                    state.audit.record(ev);
                }
                errors.push(format!("{}: {e}", p.display()));
            }
        }
    }
    job.response["importedArtifacts"] = json!(imported);
    if !errors.is_empty() {
        // ContinueOnErrors: the others are in; the run still says what was left out.
        job.response["pipelineRunErrorMessage"] = json!(format!(
            "{} of {} artifacts were not imported: {}",
            errors.len(),
            plans.len(),
            errors.join("; ")
        ));
    }
    if has(PipelineOption::DeleteSourceBlobOnSuccess) && errors.is_empty() {
        let (store2, name2) = (store.clone(), name.clone());
        let deleted = tokio::task::spawn_blocking(move || store2.delete(&name2))
            .await
            .map_err(|e| RunError::Failed(format!("internal error: {e}")))?;
        if let Err(e) = deleted {
            let why = credentials::storage_message(&ep, &e);
            tracing::warn!(run = %job.name, "the imported archive could not be deleted from its source: {why}");
            job.response["pipelineRunErrorMessage"] = json!(format!(
                "the artifacts were imported, but the archive could not be deleted from the source (DeleteSourceBlobOnSuccess): {}",
                credentials::storage_message(&ep, &e)
            ));
        }
    }
    Ok(())
}

/// Whose signatures an import accepts: the pipeline's `trustedExporterKeys` when it has some, else the server's
/// `[transfer] trusted_keys`; required when either names keys or `require_signature` is set.
fn trust_policy(
    state: &crate::state::AppState,
    pipeline_keys: &[String],
) -> Result<TrustPolicy, String> {
    let pipeline_keys = pipeline_keys
        .iter()
        .map(|k| {
            k.parse::<TransferPublicKey>()
                .map_err(|e| format!("trusted exporter key '{k}' is not valid: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(state.config.transfer.trust(&pipeline_keys))
}

/// One artifact's write: its manifests (children and referrers, the root last) and the blobs they need.
struct Plan {
    artifact: ExportedArtifact,
    targets: Vec<(RepositoryName, Option<Tag>)>,
    manifests: Vec<ManifestRecord>,
    blobs: Vec<(Digest, u64)>,
}

impl Plan {
    fn columns(&self) -> ArtifactColumns {
        ArtifactColumns {
            repository: Some(self.artifact.repository.clone()),
            tag: self.artifact.tag.clone(),
            digest: Some(self.artifact.digest.to_string()),
        }
    }

    /// As `importedArtifacts` lists it: `repo:tag`, or `repo@digest` for an untagged one.
    fn display(&self) -> String {
        self.artifact.reference()
    }
}

/// One write per artifact of the archive, as the archive lists what each needs.
fn plan(read: &ReadArchive) -> Result<Vec<Plan>, String> {
    read.artifacts
        .iter()
        .map(|a| {
            let repository: RepositoryName = a
                .repository
                .parse()
                .map_err(|e| format!("the archive names repository '{}': {e}", a.repository))?;
            let tag = match &a.tag {
                Some(t) => Some(
                    t.parse::<Tag>()
                        .map_err(|e| format!("the archive names tag '{t}': {e}"))?,
                ),
                None => None,
            };
            let (manifests, blobs) = read.image(a);
            if manifests.last().map(|m| &m.digest) != Some(&a.digest) {
                return Err(format!(
                    "the archive lists {} without its manifest: it is not a complete transfer archive",
                    a.reference()
                ));
            }
            Ok(Plan {
                artifact: a.clone(),
                targets: vec![(repository, tag)],
                manifests,
                blobs,
            })
        })
        .collect()
}
