//! A pipeline run as a durable job (kind [`KIND`], payload `{"registry_id", "run"}`; the ARM `PUT` of the run
//! records it with the run in one transaction). The handler reads the run and its pipeline, does the export or
//! the import, and writes the run's `response` as ACR spells it (reference §1.3): `status` Running, then
//! Succeeded or Failed with a `pipelineRunErrorMessage` that says what to do; `progress.percentage` as a string;
//! `startTime`, `finishTime`; `target` or `source`; `catalogDigest`; `importedArtifacts`. The provisioning state
//! is `Creating` while the job works and `Succeeded` or `Failed` at its end. A run deleted meanwhile stops.

pub mod audit;
pub mod credentials;
mod export;
mod import;

use super::{JobCtx, JobError, JobFailure, Jobs};
use crate::state::AppState;
use moat_model::transfer::PipelineKind;
use moat_model::Registry;
use moat_store::StoreError;
use serde_json::{json, Value};

/// The job kind of a pipeline run.
pub const KIND: &str = "pipeline-run";

pub fn register(jobs: &Jobs) {
    jobs.register(KIND, run);
}

/// Why a run stopped without succeeding.
pub(crate) enum RunError {
    /// Terminal, with the run's `pipelineRunErrorMessage`.
    Failed(String),
    /// Cancelled (the run was deleted) or handed over to another process.
    Stopped(JobError),
}

impl From<StoreError> for RunError {
    fn from(e: StoreError) -> RunError {
        RunError::Failed(format!("the metadata store failed: {e}"))
    }
}

/// One run being carried out: what it asked, and the response it is building.
pub(crate) struct RunJob<'a> {
    pub ctx: &'a JobCtx,
    pub state: AppState,
    pub registry: Registry,
    pub name: String,
    pub pipeline: String,
    pub request: moat_model::transfer::RunRequest,
    pub response: Value,
}

impl RunJob<'_> {
    /// ACR's `progress.percentage` (a string), with Moat's `bytes` and `totalBytes` beside it (the CLI's bar).
    pub fn set_percentage(&mut self, done: u64, total: u64) {
        let pct = (done.min(total) * 100 / total.max(1)).min(99);
        self.response["progress"] =
            json!({"percentage": pct.to_string(), "bytes": done, "totalBytes": total});
    }

    /// Writes the response as it is now; a run deleted meanwhile stops the job.
    pub async fn save(&self, provisioning_state: &str) -> Result<(), RunError> {
        let there = self
            .state
            .meta
            .set_pipeline_run_response(
                &self.registry.id,
                &self.name,
                provisioning_state,
                &self.response,
            )
            .await?;
        if there {
            Ok(())
        } else {
            Err(RunError::Stopped(JobError::Cancelled))
        }
    }
}

async fn run(ctx: JobCtx) -> Result<Value, JobFailure> {
    let state = ctx.state.clone();
    let registry_id = ctx.payload["registry_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = ctx.payload["run"].as_str().unwrap_or_default().to_string();
    let Some(row) = state
        .meta
        .pipeline_run(&registry_id, &name)
        .await
        .map_err(store_failure)?
    else {
        return Err(JobFailure::failed(format!(
            "pipeline run '{name}' was deleted"
        )));
    };
    let Some(registry) = state
        .meta
        .registry_by_id(&registry_id)
        .await
        .map_err(store_failure)?
    else {
        return Err(JobFailure::failed("the registry was deleted"));
    };
    // A resumed attempt keeps the start time of the first.
    let start = row
        .response
        .get("startTime")
        .filter(|_| ctx.checkpoint.is_some())
        .cloned()
        .unwrap_or_else(|| json!(moat_store::time_fmt::now()));
    let mut job = RunJob {
        ctx: &ctx,
        state: state.clone(),
        registry,
        name: name.clone(),
        pipeline: row.pipeline_name.clone(),
        request: row.request.clone(),
        response: json!({
            "status": "Running",
            "progress": {"percentage": "0"},
            "startTime": start,
        }),
    };
    let result = match row.pipeline_kind {
        PipelineKind::Export => export::run(&mut job).await,
        PipelineKind::Import => import::run(&mut job).await,
    };
    job.response["finishTime"] = json!(moat_store::time_fmt::now());
    match result {
        Ok(()) => {
            job.response["status"] = json!("Succeeded");
            let mut progress = job.response["progress"].clone();
            if !progress.is_object() {
                progress = json!({});
            }
            progress["percentage"] = json!("100");
            if let Some(t) = progress.get("totalBytes").cloned() {
                progress["bytes"] = t;
            }
            job.response["progress"] = progress;
            job.save("Succeeded").await.map_err(run_failure)?;
            Ok(job.response)
        }
        Err(RunError::Failed(message)) => {
            let message = audit::scrub(&message);
            tracing::info!(run = %name, "pipeline run failed: {message}");
            job.response["status"] = json!("Failed");
            job.response["pipelineRunErrorMessage"] = json!(message);
            let _ = job.save("Failed").await;
            Err(JobFailure::Failed(message))
        }
        Err(RunError::Stopped(e)) => Err(JobFailure::Stopped(e)),
    }
}

fn store_failure(e: StoreError) -> JobFailure {
    JobFailure::failed(format!("the metadata store failed: {e}"))
}

fn run_failure(e: RunError) -> JobFailure {
    match e {
        RunError::Failed(m) => JobFailure::Failed(m),
        RunError::Stopped(e) => JobFailure::Stopped(e),
    }
}

/// The server's transfer signing key (the current one of its keyring: `moat keys rotate --purpose transfer`).
fn signer(state: &AppState) -> Result<moat_transfer::archive::TransferSigner, String> {
    Ok(crate::keys::transfer_signer(&state.keys.transfer.current()))
}
