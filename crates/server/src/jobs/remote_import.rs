//! Remote `importImage` as a durable job (kind "remote-import"): manifests and blobs stream from the source
//! registry into the blob store, then one transaction writes the whole image into the target, or nothing.
//!
//! The payload holds everything a run needs after a restart: the source URI, its credentials (the password
//! sealed with the secrets key, bound to this job's target and a nonce: never in clear in the database), the image,
//! the targets, the mode, the caller (for audit events) and the activity-log record to complete. Each blob is pinned
//! under the job before its bytes are placed, and recorded as received once hashed and placed (a checkpoint): an
//! attempt resumed after a crash links those without downloading them again, and fetches the rest. Manifests are
//! read again (they are small); a source whose tag moved in between simply yields other blobs.

use super::{JobCtx, JobError, JobFailure, Jobs};
use crate::state::AppState;
use moat_auth::{SealError, SecretBox};
use moat_model::activity::ActivityEvent;
use moat_model::audit::{AuditEvent, Operation as AuditOperation};
use moat_model::{Digest, Registry};
use moat_outbound::Refused;
use moat_store::meta::{ImportWrite, ImportWriteError};
use moat_store::ReceivedBlob;
use moat_transfer::progress::ProgressSnapshot;
use moat_transfer::remote::{Credentials, Remote};
use moat_transfer::{Artifact, ImageRef, ImportError, ImportTargets, Progress};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const KIND: &str = "remote-import";
/// How long the job's pins hold the bytes it downloads against the collector (renewed by each attempt; released
/// when the job ends; a pin left by a job nobody resumes lapses).
const PIN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Who asked for an import, as its audit events name them (kept by a remote import that outlives its request).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Caller {
    pub app_id: String,
    pub ip: std::net::IpAddr,
    pub correlation_id: String,
}

/// An audit event of the import on `registry`.
pub fn event(
    caller: &Caller,
    registry: &Registry,
    operation: AuditOperation,
    repo: Option<String>,
) -> AuditEvent {
    AuditEvent {
        time_generated: moat_store::time_fmt::now(),
        category: operation.category().as_str().into(),
        operation_name: operation.as_str().into(),
        registry: registry.name.clone(),
        login_server: registry.login_server.clone(),
        repository: repo,
        identity: Some(caller.app_id.clone()),
        caller_ip_address: Some(caller.ip.to_string()),
        user_agent: None,
        result_type: "Success".into(),
        result_description: "200".into(),
        correlation_id: Some(caller.correlation_id.clone()),
        endpoint: Some("managementApi".into()),
        ..Default::default()
    }
}

/// The target's `Import` events, one per target repository (and tag).
pub fn import_events(
    caller: &Caller,
    target: &Registry,
    targets: &ImportTargets,
    root: Option<&str>,
) -> Vec<AuditEvent> {
    targets
        .iter()
        .map(|(repo, tag)| {
            let mut e = event(
                caller,
                target,
                AuditOperation::Import,
                Some(repo.to_string()),
            );
            e.tag = tag.as_ref().map(|t| t.to_string());
            e.digest = root.map(str::to_string);
            e
        })
        .collect()
}

pub fn record_failure(state: &AppState, events: Vec<AuditEvent>, why: &str, denied: bool) {
    for mut e in events {
        e.result_type = if denied { "Denied" } else { "Failure" }.into();
        e.result_description = format!("400: {why}");
        state.audit.record(e);
    }
}

/// Records an attempted export of `image` on `registry` (Denied).
pub fn audit_export(
    state: &AppState,
    caller: &Caller,
    registry: &Registry,
    image: &ImageRef,
    why: &str,
) {
    let mut e = event(
        caller,
        registry,
        AuditOperation::Export,
        Some(image.repository.to_string()),
    );
    e.tag = image.tag().map(|t| t.to_string());
    record_failure(state, vec![e], why, true);
}

/// The registry a connection to `refused` would have reached: the private endpoint's at that address, else the one
/// `Host` routing picks for the name (a login server's, else `default`).
pub async fn reached(state: &AppState, refused: &Refused) -> Option<Arc<Registry>> {
    if let Ok(Some(r)) = state.registries.behind_endpoint(refused.addr.ip()).await {
        return Some(r);
    }
    let host = refused.host.to_ascii_lowercase();
    let name = match host.rsplit_once(':') {
        Some((n, p)) if !n.ends_with(':') && p.parse::<u16>().is_ok() => n,
        _ => host.as_str(),
    };
    let name = name.trim_end_matches('.');
    if !name.starts_with('[') && name.parse::<std::net::IpAddr>().is_err() {
        if let Ok(Some(r)) = state.registries.named(name).await {
            return Some(r);
        }
    }
    state
        .registries
        .for_host(&refused.host)
        .await
        .ok()
        .flatten()
        .map(|m| m.registry)
}

/// The connector refused a connection during a running import (a redirect, a token realm): the export it would
/// have been is recorded on the registry it would have reached.
async fn audit_refusal(state: &AppState, caller: &Caller, image: &ImageRef, refused: &Refused) {
    if !refused.reason.is_self() {
        return;
    }
    if let Some(registry) = reached(state, refused).await {
        audit_export(state, caller, &registry, image, &refused.to_string());
    }
}

/// A remote import as the ARM handler hands it over.
pub struct RemoteImport {
    pub uri: String,
    pub credentials: Option<Credentials>,
    pub image: ImageRef,
    pub targets: ImportTargets,
    pub force: bool,
    pub caller: Caller,
    /// The activity-log record written when the import ends.
    pub completion: ActivityEvent,
}

#[derive(Serialize, Deserialize)]
struct Target {
    repository: String,
    tag: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct SealedCredentials {
    username: String,
    /// Sealed with the secrets key under [`seal_context`].
    password: String,
}

/// The job's payload: everything a run needs, and nothing in clear that is secret.
#[derive(Serialize, Deserialize)]
struct Payload {
    uri: String,
    credentials: Option<SealedCredentials>,
    /// Binds the sealed password to this payload (with the target registry).
    nonce: String,
    image: String,
    targets: Vec<Target>,
    force: bool,
    caller: Caller,
    /// The target's resource group and name: only a caller who may read it sees the operation (also after the
    /// registry is gone).
    target_group: String,
    target_name: String,
    completion: ActivityEvent,
}

fn seal_context(registry_id: &str, nonce: &str) -> String {
    format!("remote-import/{registry_id}/{nonce}")
}

/// Records the import as a job and returns its id (the operation id is `registries-<id>`).
pub async fn submit(
    state: &AppState,
    target: &Registry,
    req: RemoteImport,
) -> Result<String, SubmitError> {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let credentials = match req.credentials {
        None => None,
        Some(c) => Some(SealedCredentials {
            username: c.username,
            password: SecretBox::new(state.keys.secrets.clone())
                .seal(&c.password, &seal_context(&target.id, &nonce))?,
        }),
    };
    let payload = Payload {
        uri: req.uri,
        credentials,
        nonce,
        image: req.image.to_string(),
        targets: req
            .targets
            .iter()
            .map(|(r, t)| Target {
                repository: r.to_string(),
                tag: t.as_ref().map(|t| t.to_string()),
            })
            .collect(),
        force: req.force,
        caller: req.caller,
        target_group: target.resource_group.clone(),
        target_name: target.name.clone(),
        completion: req.completion,
    };
    let payload = serde_json::to_value(&payload).expect("a payload serializes");
    Ok(state.jobs.submit(KIND, &target.id, payload).await?)
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Store(#[from] moat_store::StoreError),
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// The target registry's resource group and name a remote-import job's payload names (who may poll it).
pub fn job_target(payload: &Value) -> Option<(String, String)> {
    Some((
        payload.get("target_group")?.as_str()?.to_string(),
        payload.get("target_name")?.as_str()?.to_string(),
    ))
}

pub fn progress_json(p: ProgressSnapshot) -> Value {
    json!({
        "bytesTotal": p.bytes_total,
        "bytesDone": p.bytes_done,
        "layersTotal": p.layers_total,
        "layersDone": p.layers_done,
        "manifests": p.manifests,
    })
}

/// Registers the handler of remote imports.
pub fn register(jobs: &Jobs) {
    jobs.register(KIND, |ctx: JobCtx| async move { run(ctx).await });
    jobs.on_abandoned(KIND, abandoned);
}

/// An import the runner failed without running it again (interrupted too often, or cancelled): its failure is
/// audited and completes its activity-log record, as the handler would have.
async fn abandoned(state: AppState, job: moat_store::meta::JobRecord) {
    let Ok(p) = serde_json::from_value::<Payload>(job.payload) else {
        return;
    };
    let why = job.error.unwrap_or_default();
    let message = format!(
        "Import of '{}' into registry '{}' failed: {why}",
        p.image, p.target_name
    );
    if let Ok(Some(target)) = state.meta.registry_by_id(&job.registry_id).await {
        let targets: ImportTargets = p
            .targets
            .iter()
            .filter_map(|t| {
                Some((
                    t.repository.parse().ok()?,
                    match &t.tag {
                        None => None,
                        Some(tag) => Some(tag.parse().ok()?),
                    },
                ))
            })
            .collect();
        record_failure(
            &state,
            import_events(&p.caller, &target, &targets, None),
            &why,
            false,
        );
    }
    let mut completion = p.completion;
    completion.time = moat_store::time_fmt::now();
    state
        .audit
        .record_activity(completion.failed(400, "InvalidParameters", &message));
}

/// How an attempt ended short of success.
enum Stop {
    /// The import failed: the job fails with this message.
    Failed(String),
    /// The job was cancelled or handed over.
    Job(JobError),
}

impl From<moat_store::StoreError> for Stop {
    fn from(e: moat_store::StoreError) -> Stop {
        Stop::Failed(format!("storage error: {e}"))
    }
}

struct Run {
    ctx: Arc<JobCtx>,
    target: Registry,
    image: ImageRef,
    targets: ImportTargets,
    force: bool,
    caller: Caller,
    uri: String,
    credentials: Option<Credentials>,
    progress: Arc<Progress>,
    /// The outbound connector's refusal that stopped the import (a redirect or realm pointing at this server).
    refused: Mutex<Option<Refused>>,
}

fn bad_payload(e: impl std::fmt::Display) -> JobFailure {
    JobFailure::failed(format!("the job's payload is not a remote import: {e}"))
}

async fn run(ctx: JobCtx) -> Result<Value, JobFailure> {
    let p: Payload = serde_json::from_value(ctx.payload.clone()).map_err(bad_payload)?;
    let state = ctx.state.clone();
    let Some(target) = state
        .meta
        .registry_by_id(&ctx.registry_id)
        .await
        .map_err(|e| JobFailure::failed(format!("storage error: {e}")))?
    else {
        return Err(JobFailure::failed(format!(
            "Import of '{}' into registry '{}' failed: the registry no longer exists",
            p.image, p.target_name
        )));
    };
    let image: ImageRef = p.image.parse().map_err(bad_payload)?;
    let targets = p
        .targets
        .iter()
        .map(|t| {
            Ok((
                t.repository.parse().map_err(bad_payload)?,
                t.tag
                    .as_deref()
                    .map(|t| t.parse().map_err(bad_payload))
                    .transpose()?,
            ))
        })
        .collect::<Result<ImportTargets, JobFailure>>()?;
    let credentials = match &p.credentials {
        None => None,
        Some(c) => Some(Credentials {
            username: c.username.clone(),
            password: open_sealed(&state, &c.password, &seal_context(&target.id, &p.nonce))
                .await
                .map_err(|e| {
                    JobFailure::failed(format!(
                        "the source credentials could not be opened ({e}): start the import again"
                    ))
                })?,
        }),
    };
    let run = Run {
        ctx: Arc::new(ctx),
        target,
        image,
        targets,
        force: p.force,
        caller: p.caller,
        uri: p.uri,
        credentials,
        progress: Arc::new(Progress::default()),
        refused: Mutex::new(None),
    };
    let ticker = {
        let (ctx, progress) = (run.ctx.clone(), run.progress.clone());
        tokio::spawn(async move {
            loop {
                ctx.progress(progress_json(progress.snapshot())).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let result = run.import().await;
    ticker.abort();
    run.ctx
        .progress(progress_json(run.progress.snapshot()))
        .await;
    let mut completion = p.completion;
    completion.time = moat_store::time_fmt::now();
    match result {
        Ok(root) => {
            completion.set_http_status(200);
            state.audit.record_activity(completion);
            Ok(json!({"digest": root}))
        }
        Err(Stop::Job(e)) => Err(JobFailure::Stopped(e)),
        Err(Stop::Failed(why)) => {
            let refused = run.refused.lock().expect("lock").take();
            if let Some(r) = &refused {
                audit_refusal(&state, &run.caller, &run.image, r).await;
            }
            record_failure(
                &state,
                import_events(&run.caller, &run.target, &run.targets, None),
                &why,
                refused.is_some(),
            );
            let message = format!(
                "Import of '{}' into registry '{}' failed: {why}",
                run.image, run.target.name
            );
            state
                .audit
                .record_activity(completion.failed(400, "InvalidParameters", &message));
            Err(JobFailure::Failed(message))
        }
    }
}

/// Opens a sealed value; a key this process has not loaded yet (rotated a moment ago) makes it re-read the keys.
async fn open_sealed(state: &AppState, sealed: &str, context: &str) -> Result<String, SealError> {
    let sb = SecretBox::new(state.keys.secrets.clone());
    match sb.open(sealed, context) {
        Err(SealError::UnknownKey(_)) => {
            let keys = state.keys.clone();
            let _ = tokio::task::spawn_blocking(move || keys.reload()).await;
            SecretBox::new(state.keys.secrets.clone()).open(sealed, context)
        }
        other => other,
    }
}

fn internal(e: impl std::fmt::Display) -> Stop {
    Stop::Failed(format!("internal error: {e}"))
}

impl Run {
    /// An import error as the job reports it, keeping the connector's refusal for the audit trail.
    fn noted(&self, e: ImportError) -> Stop {
        if let ImportError::Refused(r) = &e {
            *self.refused.lock().expect("lock") = Some(r.clone());
        }
        Stop::Failed(e.to_string())
    }

    async fn import(&self) -> Result<Option<String>, Stop> {
        let state = &self.ctx.state;
        let tls = if state.config.import_ca_bundles.is_empty() {
            None
        } else {
            Some(
                moat_transfer::remote::tls_config(&state.config.import_ca_bundles)
                    .map_err(internal)?,
            )
        };
        let (uri, credentials, image, progress, outbound) = (
            self.uri.clone(),
            self.credentials.clone(),
            self.image.clone(),
            self.progress.clone(),
            state.outbound.clone(),
        );
        let (remote, artifact) =
            tokio::task::spawn_blocking(move || -> Result<(Remote, Artifact), ImportError> {
                let remote = Remote::connect(&uri, credentials, &outbound, tls)?;
                let artifact = remote.collect(&image, &progress)?;
                Ok((remote, artifact))
            })
            .await
            .map_err(internal)?
            .map_err(|e| self.noted(e))?;
        self.ctx
            .checkpoint(json!({"phase": "blobs", "manifests": artifact.manifests.len()}))
            .await
            .map_err(Stop::Job)?;
        // Blobs an earlier attempt of this job received (still pinned under it): not downloaded again.
        let mut earlier: HashMap<Digest, ReceivedBlob> = state
            .meta
            .job_received_blobs(&self.ctx.id)
            .await?
            .into_iter()
            .map(|b| (b.digest().clone(), b))
            .collect();
        // Proof of possession (DESIGN principle 6): every blob is downloaded and hashed by this job, unless the
        // target registry links it already. That a digest is stored for another registry proves nothing.
        let mut missing = Vec::new();
        let mut received = Vec::new();
        for (digest, size) in &artifact.blobs {
            let held = state
                .meta
                .linked_in_registry(&self.target.id, digest)
                .await?;
            Progress::add(&self.progress.layers_total, 1);
            if held {
                Progress::add(&self.progress.layers_done, 1);
            } else if let Some(b) = earlier.remove(digest) {
                Progress::add(&self.progress.layers_done, 1);
                Progress::add(&self.progress.bytes_total, *size);
                Progress::add(&self.progress.bytes_done, *size);
                received.push(b);
            } else {
                Progress::add(&self.progress.bytes_total, *size);
                missing.push((digest.clone(), *size));
            }
        }
        // Held against the collector from before their bytes are placed until the import links them (or the job
        // ends), under the job's name so that a resumed attempt finds them held still.
        let mut pinned: Vec<Digest> = missing.iter().map(|(d, _)| d.clone()).collect();
        pinned.extend(received.iter().map(|b| b.digest().clone()));
        let pins = state
            .meta
            .pin_blobs_for_job(&self.ctx.id, &pinned, PIN_TTL)
            .await?;
        let fetched = self.fetch(remote, missing, pins).await?;
        received.extend(fetched);
        let root = artifact.root().map(|d| d.to_string());
        let events = import_events(&self.caller, &self.target, &self.targets, root.as_deref());
        let write = ImportWrite {
            target_registry_id: &self.target.id,
            targets: &self.targets,
            manifests: &artifact.manifests,
            blobs: &artifact.blobs,
            force: self.force,
            events: &events,
        };
        // Last look before the write: a cancelled job writes nothing.
        self.ctx.still_ours().map_err(Stop::Job)?;
        let result = state.meta.import_remote::<String>(&write, &received).await;
        state.manifest_cache.invalidate();
        match result {
            Ok(()) => Ok(root),
            Err(ImportWriteError::Store(e)) => Err(e.into()),
            Err(ImportWriteError::Refused(why)) => Err(Stop::Failed(why)),
            Err(other) => Err(Stop::Failed(other.to_string())),
        }
    }

    /// Downloads `missing` on a blocking thread; each blob received is recorded under the job and checkpointed,
    /// and a checkpoint that finds the job cancelled or handed over stops the downloads.
    async fn fetch(
        &self,
        remote: Remote,
        missing: Vec<(Digest, u64)>,
        pins: moat_store::gc::BlobPins,
    ) -> Result<Vec<ReceivedBlob>, Stop> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ReceivedBlob>();
        let stop = Arc::new(AtomicBool::new(false));
        let recorder = {
            let (ctx, stop) = (self.ctx.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while let Some(blob) = rx.recv().await {
                    if let Err(e) = ctx.state.meta.record_job_blob(&ctx.id, &blob).await {
                        stop.store(true, Ordering::Relaxed);
                        return Err(JobError::Store(e));
                    }
                    n += 1;
                    if let Err(e) = ctx
                        .checkpoint(json!({"phase": "blobs", "received": n}))
                        .await
                    {
                        stop.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
                Ok(())
            })
        };
        // Whatever ends this attempt (an abort included) stops the downloads.
        struct StopOnDrop(Arc<AtomicBool>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _guard = StopOnDrop(stop.clone());
        let (blobs, repo, progress) = (
            self.ctx.state.blobs.clone(),
            self.image.repository.to_string(),
            self.progress.clone(),
        );
        let fetched = tokio::task::spawn_blocking(move || {
            let done =
                |b: &ReceivedBlob| tx.send(b.clone()).is_ok() && !stop.load(Ordering::Relaxed);
            remote.fetch_blobs(blobs.as_ref(), &repo, &missing, &progress, &pins, &done)
        })
        .await
        .map_err(internal)?;
        let recorded = recorder.await.map_err(internal)?;
        match (fetched, recorded) {
            (_, Err(JobError::Store(e))) => Err(e.into()),
            (_, Err(e)) => Err(Stop::Job(e)),
            (Ok(r), Ok(())) => Ok(r),
            (Err(e), Ok(())) => Err(self.noted(e)),
        }
    }
}
