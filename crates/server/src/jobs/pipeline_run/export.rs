//! An export run: the gate decided again in the transaction that marks the run started, the artifacts collected
//! (every child of an index, every referrer), the deterministic archive written into the target under a
//! temporary name with a checkpoint per blob, then committed under its name. A run killed midway resumes from its
//! last checkpoint: the archive's bytes are a function of the export set (its collection time is kept in the
//! checkpoint), so the writer continues where the durable bytes end. Nothing is visible under the archive's name
//! before the commit; a run that fails aborts its temporary bytes.

use super::audit::{ArtifactColumns, Outcome, RunAudit};
use super::credentials;
use super::{RunError, RunJob};
use crate::jobs::JobError;
use moat_model::transfer::{PipelineOption, StorageEndpoint};
use moat_model::{decide, Access, Decision, Egress, Origin};
use moat_transfer::archive::{self, ArchiveError, ExportSet, TransferSigner, WriteStep};
use moat_transfer::storage::{ArchiveStore, ArchiveWriter, StorageError};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// What the writer thread tells the job: a checkpoint to persist, or progress to show.
enum Note {
    Checkpoint {
        writer: Value,
        bytes: u64,
        blobs: usize,
        total: u64,
    },
    Progress {
        bytes: u64,
        total: u64,
    },
}

/// Asked of the writer thread by the job.
const GO: u8 = 0;
/// The run was deleted: stop and throw the temporary bytes away.
const CANCEL: u8 = 1;
/// Another process holds the job now: stop and leave the temporary bytes to it.
const LOST: u8 = 2;

pub(super) async fn run(job: &mut RunJob<'_>) -> Result<(), RunError> {
    let state = job.state.clone();
    let registry = job.registry.clone();
    let pipeline = state
        .meta
        .export_pipeline(&registry.id, &job.pipeline)
        .await?
        .ok_or_else(|| {
            RunError::Failed(format!(
                "export pipeline '{}' does not exist (it was deleted): create it again, then run again",
                job.pipeline
            ))
        })?
        .pipeline;
    let ep = pipeline.storage.clone();
    let artifacts = job.request.artifacts.clone();
    let (pipeline_name, run_name) = (job.pipeline.clone(), job.name.clone());
    let audit = RunAudit {
        registry: &registry,
        pipeline: &pipeline_name,
        run: &run_name,
    };
    let request_columns = || {
        artifacts
            .iter()
            .map(|a| ArtifactColumns::of_request(a))
            .collect()
    };

    // The gate, in the transaction that records the run's start: a run queued before exports were disabled
    // exports nothing after.
    let started = job.response.clone();
    let gate = state
        .meta
        .export_run_gate(&registry.id, &run_name, &started, |reg| {
            let egress = Egress::PipelineRun {
                pipeline: &pipeline_name,
                run: &run_name,
                artifacts: &artifacts,
            };
            let origin = Origin::trusted_service(std::net::Ipv4Addr::LOCALHOST.into());
            match decide(reg, &origin, &Access::everything(), &egress) {
                Decision::Allow => Ok(()),
                Decision::Deny(why) => Err(why.to_string()),
            }
        })
        .await?;
    if let Err(why) = gate {
        for e in audit.export(request_columns(), &ep.uri, &Outcome::Denied(why.clone())) {
            state.audit.record(e);
        }
        return Err(RunError::Failed(format!(
            "The export was refused: {why}. Nothing was written."
        )));
    }
    let failed = |why: String| {
        for e in audit.export(request_columns(), &ep.uri, &Outcome::Failed(why.clone())) {
            state.audit.record(e);
        }
        RunError::Failed(why)
    };

    let name = archive_name(job, &ep).map_err(failed)?;
    let store = credentials::open(&state, &ep).await.map_err(failed)?;
    let uri = store.uri_of(&name);
    job.response["target"] = credentials::response(&ep, &uri);
    job.save("Creating").await?;

    // ContinueOnErrors: an artifact that does not exist is left out (and named in the response); the others go.
    let mut wanted = artifacts.clone();
    let mut skipped: Vec<String> = Vec::new();
    let mut set = loop {
        match archive::collect_export(&state.meta, &registry.id, &wanted).await {
            Ok(set) => break set,
            Err(ArchiveError::ArtifactNotFound(a))
                if pipeline.has_option(PipelineOption::ContinueOnErrors)
                    && wanted.len() > 1
                    && wanted.iter().any(|w| w == &a) =>
            {
                wanted.retain(|w| w != &a);
                skipped.push(a);
            }
            Err(e) => return Err(failed(e.to_string())),
        }
    };
    if !skipped.is_empty() {
        for e in audit.export(
            skipped
                .iter()
                .map(|a| ArtifactColumns::of_request(a))
                .collect(),
            &ep.uri,
            &Outcome::Failed("the artifact does not exist".into()),
        ) {
            state.audit.record(e);
        }
        job.response["pipelineRunErrorMessage"] = json!(format!(
            "not exported (they do not exist; ContinueOnErrors): {}",
            skipped.join(", ")
        ));
    }
    // The signing key is in the archive's head: a rotation between two attempts makes another archive.
    let signer = super::signer(&state).map_err(failed)?;
    let fingerprint = fingerprint(&set, signer.kid());
    // A checkpoint of the same archive resumes it (with the contents list's time of the first attempt, so the
    // bytes are the same); one of an archive whose artifacts changed meanwhile starts again.
    let resume = job
        .ctx
        .checkpoint
        .as_ref()
        .filter(|c| c["fingerprint"].as_str() == Some(fingerprint.as_str()));
    let writer_state = match resume {
        Some(c) => {
            if let Some(t) = c["created"].as_str() {
                set.created = t.to_string();
            }
            c.get("writer").cloned()
        }
        None => None,
    };
    if writer_state.is_none() && !pipeline.has_option(PipelineOption::OverwriteBlobs) {
        let (store2, name2) = (store.clone(), name.clone());
        let exists = tokio::task::spawn_blocking(move || store2.stat(&name2))
            .await
            .map_err(|e| RunError::Failed(format!("internal error: {e}")))?
            .map_err(|e| failed(credentials::storage_message(&ep, &e)))?;
        if exists.is_some() {
            return Err(failed(format!(
                "an archive named '{name}' exists already at {}: give the run another target name, or add the export pipeline option OverwriteBlobs",
                super::audit::redact(&uri)
            )));
        }
    }

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Note>();
    let stop = Arc::new(AtomicU8::new(GO));
    let created = set.created.clone();
    let set = Arc::new(set);
    let writer = {
        let (store, name, set, blobs, stop, ep) = (
            store.clone(),
            name.clone(),
            set.clone(),
            state.blobs.clone(),
            stop.clone(),
            ep.clone(),
        );
        tokio::task::spawn_blocking(move || {
            write(
                store.as_ref(),
                &ep,
                &name,
                writer_state,
                &set,
                blobs.as_ref(),
                &signer,
                &tx,
                &stop,
            )
        })
    };
    tokio::pin!(writer);
    let mut last_saved = std::time::Instant::now();
    let result = loop {
        tokio::select! {
            note = rx.recv() => match note {
                Some(Note::Checkpoint { writer, bytes, blobs, total }) => {
                    let c = json!({"fingerprint": fingerprint, "created": created, "writer": writer,
                                   "bytes": bytes, "blobs": blobs});
                    match job.ctx.checkpoint(c).await {
                        Ok(()) => {}
                        Err(JobError::Lost) => stop.store(LOST, Ordering::SeqCst),
                        Err(_) => stop.store(CANCEL, Ordering::SeqCst),
                    }
                    job.set_percentage(bytes, total);
                    job.ctx.progress(json!({"bytes": bytes, "total": total, "blobs": blobs})).await;
                }
                Some(Note::Progress { bytes, total }) => {
                    job.set_percentage(bytes, total);
                    if last_saved.elapsed() >= std::time::Duration::from_secs(1) {
                        last_saved = std::time::Instant::now();
                        if let Err(e) = job.save("Creating").await {
                            stop.store(CANCEL, Ordering::SeqCst);
                            let _ = e;
                        }
                    }
                }
                None => {}
            },
            done = &mut writer => break done,
        }
    };
    let result = result.map_err(|e| RunError::Failed(format!("internal error: {e}")))?;
    match stop.load(Ordering::SeqCst) {
        CANCEL => return Err(RunError::Stopped(JobError::Cancelled)),
        LOST => return Err(RunError::Stopped(JobError::Lost)),
        _ => {}
    }
    let digest = result.map_err(failed)?;
    job.response["catalogDigest"] = json!(digest.to_string());
    let columns = set
        .artifacts
        .iter()
        .map(|a| ArtifactColumns {
            repository: Some(a.repository.clone()),
            tag: a.tag.clone(),
            digest: Some(a.digest.to_string()),
        })
        .collect();
    for e in audit.export(columns, &uri, &Outcome::Success) {
        state.audit.record(e);
    }
    Ok(())
}

/// The archive's name: the run's `target.name`, else the blob the pipeline's URI names.
fn archive_name(job: &RunJob<'_>, ep: &StorageEndpoint) -> Result<String, String> {
    if let Some(n) = job
        .request
        .target
        .as_ref()
        .map(|t| t.name.clone())
        .filter(|n| !n.is_empty())
    {
        return Ok(n);
    }
    match ep.uri.parse::<moat_model::storage_uri::StorageUri>() {
        Ok(moat_model::storage_uri::StorageUri::AzureBlob { blob: Some(b), .. }) => Ok(b),
        _ => Err("the run names no archive: set request.target.name (the blob or file name, e.g. `moat acr pipeline-run create … --storage-blob export1.tar`)".into()),
    }
}

/// The same archive, byte for byte: the artifacts, every manifest and every blob, in order, signed by one key.
fn fingerprint(set: &ExportSet, kid: &str) -> String {
    let mut h = Sha256::new();
    h.update(format!("k {kid}\n"));
    for a in &set.artifacts {
        h.update(format!("a {}|{:?}|{}\n", a.repository, a.tag, a.digest));
    }
    for m in &set.manifests {
        h.update(format!("m {}\n", m.digest));
    }
    for (d, size) in &set.blobs {
        h.update(format!("b {d} {size}\n"));
    }
    h.update(format!("e {}\n", set.exporter));
    hex::encode(h.finalize())
}

/// Writes and commits the archive, on a blocking thread. Errors are the run's message; a storage error (a SAS
/// without write permission fails at the first block) says which credential to check, as every other one does.
#[allow(clippy::too_many_arguments)]
fn write(
    store: &dyn ArchiveStore,
    ep: &StorageEndpoint,
    name: &str,
    resume: Option<Value>,
    set: &ExportSet,
    blobs: &dyn moat_store::BlobStore,
    signer: &TransferSigner,
    notes: &tokio::sync::mpsc::UnboundedSender<Note>,
    stop: &AtomicU8,
) -> Result<moat_model::Digest, String> {
    let mut writer = match store.begin_write(name, resume.clone()) {
        Ok(w) => w,
        // A checkpoint the store cannot continue from (its temporary bytes are gone): start again.
        Err(e) if resume.is_some() => {
            let why = super::audit::scrub(&e.to_string());
            tracing::info!(
                "export of '{name}' starts again: its checkpoint could not be resumed ({why})"
            );
            store
                .begin_write(name, None)
                .map_err(|e| credentials::storage_message(ep, &e))?
        }
        Err(e) => return Err(credentials::storage_message(ep, &e)),
    };
    let skip = writer.durable_len();
    let mut blobs_checkpointed = 0usize;
    let mut step =
        |w: &mut (dyn ArchiveWriter + 'static), s: WriteStep| -> Result<(), ArchiveError> {
            if stop.load(Ordering::SeqCst) != GO {
                return Err(ArchiveError::Stopped("the run was stopped".into()));
            }
            // A checkpoint per blob written by this attempt (the blobs before `skip` are durable already).
            if s.boundary && s.blobs_done > blobs_checkpointed && s.bytes > skip {
                blobs_checkpointed = s.blobs_done;
                let state = w
                    .checkpoint()
                    .map_err(|e| ArchiveError::Stopped(credentials::storage_message(ep, &e)))?;
                let _ = notes.send(Note::Checkpoint {
                    writer: state,
                    bytes: s.bytes,
                    blobs: s.blobs_done,
                    total: s.total,
                });
            } else {
                let _ = notes.send(Note::Progress {
                    bytes: s.bytes,
                    total: s.total,
                });
            }
            Ok(())
        };
    let result = archive::write_archive(set, blobs, signer, &mut *writer, skip, &mut step);
    match (result, stop.load(Ordering::SeqCst)) {
        (Ok(summary), GO) => {
            writer
                .commit()
                .map_err(|e| credentials::storage_message(ep, &e))?;
            Ok(summary.digest)
        }
        // Handed over: the new owner resumes from the temporary bytes.
        (_, LOST) => {
            drop(writer);
            Err("the run was handed over to another process".into())
        }
        (Ok(_), _) => {
            writer.abort();
            Err("the run was cancelled".into())
        }
        // The writer's own failure (wrapped for `io::Write`); other I/O errors (the blob store's) stay as they are.
        (Err(ArchiveError::Io(e)), _) if e.get_ref().is_some_and(|i| i.is::<StorageError>()) => {
            writer.abort();
            let e = StorageError::from_io(e, &store.uri_of(name));
            Err(credentials::storage_message(ep, &e))
        }
        (Err(e), _) => {
            writer.abort();
            Err(e.to_string())
        }
    }
}
