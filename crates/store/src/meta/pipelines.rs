//! ACR Transfer's resources: export and import pipelines and pipeline runs. Every change is written with its
//! activity record in one transaction; an export pipeline is created only after the egress gate allowed it on the
//! registry row read in that transaction (so it cannot slip in beside a concurrent "disable exports", which counts
//! export pipelines in its own transaction: see `policy_facts`), and a run is recorded with the job that carries it
//! out, so neither can exist without the other.

use super::activity::insert_activity;
use super::dialect::numbered;
use super::registries::{load, RegistryKey};
use super::MetadataStore;
use crate::error::{Result, StoreError};
use crate::meta::Conn;
use crate::meta::DbRow;
use moat_model::activity::ActivityEvent;
use moat_model::transfer::{Pipeline, PipelineKind, RunRequest};
use moat_model::Registry;
use serde_json::{json, Value};
use sqlx::Row;

/// The job kind that carries out a pipeline run (the `runs` side registers its handler).
pub const RUN_JOB_KIND: &str = "pipeline-run";

fn table(kind: PipelineKind) -> &'static str {
    match kind {
        PipelineKind::Export => "export_pipelines",
        PipelineKind::Import => "import_pipelines",
    }
}

/// A stored pipeline, with who made and last changed it (ARM's `systemData`).
#[derive(Clone, Debug)]
pub struct PipelineRow {
    pub registry_id: String,
    pub name: String,
    pub pipeline: Pipeline,
    pub created_at: String,
    pub created_by: String,
    pub updated_at: String,
    pub updated_by: String,
}

fn pipeline_from_row(row: DbRow) -> Result<PipelineRow> {
    let body: String = row.get(2);
    Ok(PipelineRow {
        registry_id: row.get(0),
        name: row.get(1),
        pipeline: serde_json::from_str(&body)
            .map_err(|e| StoreError::Invalid(format!("stored pipeline: {e}")))?,
        created_at: row.get(3),
        created_by: row.get(4),
        updated_at: row.get(5),
        updated_by: row.get(6),
    })
}

const PIPELINE_COLUMNS: &str =
    "registry_id, name, body, created_at, created_by, updated_at, updated_by";

/// A stored pipeline run.
#[derive(Clone, Debug)]
pub struct PipelineRunRow {
    pub registry_id: String,
    pub name: String,
    pub pipeline_kind: PipelineKind,
    /// The pipeline's name as the request's `pipelineResourceId` named it (resolved when the run was accepted).
    pub pipeline_name: String,
    pub request: RunRequest,
    pub force_update_tag: Option<String>,
    /// The job carrying out the current attempt (none only for rows of a server without a job runner).
    pub job_id: Option<String>,
    /// ARM's `provisioningState`: `Creating` until the job ends, then `Succeeded` or `Failed`.
    pub provisioning_state: String,
    /// `properties.response`, as the job fills it.
    pub response: Value,
    pub created_at: String,
    pub created_by: String,
    pub updated_at: String,
    pub updated_by: String,
}

const RUN_COLUMNS: &str =
    "registry_id, name, pipeline_kind, pipeline_name, request, force_update_tag, job_id,
     provisioning_state, response, created_at, created_by, updated_at, updated_by";

fn run_from_row(row: DbRow) -> Result<PipelineRunRow> {
    let kind: String = row.get(2);
    let request: String = row.get(4);
    let response: String = row.get(8);
    Ok(PipelineRunRow {
        registry_id: row.get(0),
        name: row.get(1),
        pipeline_kind: if kind == "export" {
            PipelineKind::Export
        } else {
            PipelineKind::Import
        },
        pipeline_name: row.get(3),
        request: serde_json::from_str(&request)
            .map_err(|e| StoreError::Invalid(format!("stored run request: {e}")))?,
        force_update_tag: row.get(5),
        job_id: row.get(6),
        provisioning_state: row.get(7),
        response: serde_json::from_str(&response)
            .map_err(|e| StoreError::Invalid(format!("stored run response: {e}")))?,
        created_at: row.get(9),
        created_by: row.get(10),
        updated_at: row.get(11),
        updated_by: row.get(12),
    })
}

/// Why a pipeline was not written.
#[derive(Debug, thiserror::Error)]
pub enum PipelineWriteError<E> {
    /// The registry was deleted meanwhile.
    #[error("registry not found")]
    RegistryGone,
    /// The caller's gate refused it on the registry as it is in the writing transaction.
    #[error("refused")]
    Refused(E),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<E> From<sqlx::Error> for PipelineWriteError<E> {
    fn from(e: sqlx::Error) -> Self {
        PipelineWriteError::Store(e.into())
    }
}

/// What a run's `PUT` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunPut {
    /// A new run, with its job.
    Created,
    /// The same request and `forceUpdateTag` as the stored run: nothing was done (ACR re-runs only on a new tag).
    Unchanged,
    /// A changed request or a new `forceUpdateTag`: the run starts again with a new job.
    Rerun,
}

/// Why a run was not written.
#[derive(Debug, thiserror::Error)]
pub enum RunWriteError {
    #[error("registry not found")]
    RegistryGone,
    /// A re-run asked for while the current attempt is still going.
    #[error("pipeline run '{0}' is still running: wait until it ends (its response.status is no longer Running), or delete it first")]
    StillRunning(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RunWriteError {
    fn from(e: sqlx::Error) -> Self {
        RunWriteError::Store(e.into())
    }
}

/// Records the job of a run in the caller's transaction.
async fn submit_run_job(conn: &mut Conn, registry_id: &str, run: &str) -> Result<Option<String>> {
    let payload = json!({"registry_id": registry_id, "run": run});
    super::jobs::insert_job(conn, RUN_JOB_KIND, registry_id, &payload)
        .await
        .map(Some)
}

async fn registry_exists(conn: &mut Conn, registry_id: &str) -> Result<bool> {
    Ok(
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM registries WHERE id = $1")
            .bind(registry_id)
            .fetch_one(conn)
            .await?
            > 0,
    )
}

/// How many export pipelines a registry has, in the caller's transaction (a policy fact).
pub(crate) async fn count_export_pipelines(conn: &mut Conn, registry_id: &str) -> Result<usize> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM export_pipelines WHERE registry_id = $1")
        .bind(registry_id)
        .fetch_one(conn)
        .await?;
    Ok(n as usize)
}

/// Removes a registry's pipelines and runs (with the registry, in its deletion's transaction); returns the jobs of
/// its runs, which the caller cancels.
pub(crate) async fn delete_for_registry(conn: &mut Conn, registry_id: &str) -> Result<Vec<String>> {
    let jobs: Vec<String> = sqlx::query_scalar(
        "SELECT job_id FROM pipeline_runs WHERE registry_id = $1 AND job_id IS NOT NULL",
    )
    .bind(registry_id)
    .fetch_all(&mut *conn)
    .await?;
    for t in ["export_pipelines", "import_pipelines", "pipeline_runs"] {
        sqlx::query(&format!("DELETE FROM {t} WHERE registry_id = $1"))
            .bind(registry_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(jobs)
}

impl MetadataStore {
    /// Creates or replaces a pipeline. `gate` sees the registry as it is in the writing transaction (an export
    /// pipeline's egress decision); its refusal writes nothing. `activity` is written with the change. Returns the
    /// stored row and whether it is new. A replacement keeps the creation time and creator, and the identity's
    /// principal id (a system-assigned identity lives as long as its resource).
    pub async fn put_pipeline<E>(
        &self,
        registry_id: &str,
        name: &str,
        pipeline: &Pipeline,
        caller: &str,
        activity: &ActivityEvent,
        gate: impl FnOnce(&Registry) -> Result<(), E>,
    ) -> Result<(PipelineRow, bool), PipelineWriteError<E>> {
        let t = table(pipeline.kind);
        let mut tx = self.begin_write().await?;
        let registry = load(&mut tx, RegistryKey::Id(registry_id))
            .await?
            .ok_or(PipelineWriteError::RegistryGone)?;
        gate(&registry).map_err(PipelineWriteError::Refused)?;
        let existing = sqlx::query(&format!(
            "SELECT {PIPELINE_COLUMNS} FROM {t} WHERE registry_id = $1 AND name = $2"
        ))
        .bind(registry_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .map(pipeline_from_row)
        .transpose()?;
        let mut pipeline = pipeline.clone();
        if let (Some(old), Some(new)) = (
            existing.as_ref().and_then(|e| e.pipeline.identity.as_ref()),
            pipeline.identity.as_mut(),
        ) {
            if new.kind.has_system() && old.kind.has_system() {
                new.principal_id = old.principal_id.clone();
            }
            for (id, u) in new.user_assigned.iter_mut() {
                if let Some(o) = old.user_assigned.get(id) {
                    *u = o.clone();
                }
            }
        }
        let before = existing
            .as_ref()
            .and_then(|e| serde_json::to_value(&e.pipeline).ok());
        let now = crate::time_fmt::now();
        let body = serde_json::to_string(&pipeline)
            .map_err(|e| StoreError::Invalid(format!("pipeline: {e}")))?;
        let trigger =
            i64::from(pipeline.trigger == Some(moat_model::transfer::TriggerStatus::Enabled));
        let (row, created) = match existing {
            Some(e) => {
                sqlx::query(&numbered(&format!(
                    "UPDATE {t} SET body = ?, updated_at = ?, updated_by = ?{} WHERE registry_id = ? AND name = ?",
                    if pipeline.kind == PipelineKind::Import { ", trigger_enabled = ?" } else { "" }
                )))
                .bind(&body)
                .bind(&now)
                .bind(caller)
                .bind_if_import(pipeline.kind, trigger)
                .bind(registry_id)
                .bind(name)
                .execute(&mut *tx)
                .await?;
                let row = PipelineRow {
                    pipeline,
                    updated_at: now,
                    updated_by: caller.to_string(),
                    ..e
                };
                (row, false)
            }
            None => {
                let columns = if pipeline.kind == PipelineKind::Import {
                    format!("{PIPELINE_COLUMNS}, trigger_enabled")
                } else {
                    PIPELINE_COLUMNS.to_string()
                };
                let marks = if pipeline.kind == PipelineKind::Import {
                    "$1, $2, $3, $4, $5, $6, $7, $8"
                } else {
                    "$1, $2, $3, $4, $5, $6, $7"
                };
                sqlx::query(&format!("INSERT INTO {t}({columns}) VALUES ({marks})"))
                    .bind(registry_id)
                    .bind(name)
                    .bind(&body)
                    .bind(&now)
                    .bind(caller)
                    .bind(&now)
                    .bind(caller)
                    .bind_if_import(pipeline.kind, trigger)
                    .execute(&mut *tx)
                    .await?;
                let row = PipelineRow {
                    registry_id: registry_id.to_string(),
                    name: name.to_string(),
                    pipeline,
                    created_at: now.clone(),
                    created_by: caller.to_string(),
                    updated_at: now,
                    updated_by: caller.to_string(),
                };
                (row, true)
            }
        };
        let mut activity = activity
            .clone()
            .with_change(before, serde_json::to_value(&row.pipeline).ok());
        if created {
            activity.set_http_status(201);
        }
        insert_activity(&mut tx, &activity).await?;
        tx.commit().await?;
        Ok((row, created))
    }

    /// One pipeline of a registry, by name in any case.
    pub async fn pipeline(
        &self,
        registry_id: &str,
        kind: PipelineKind,
        name: &str,
    ) -> Result<Option<PipelineRow>> {
        sqlx::query(&format!(
            "SELECT {PIPELINE_COLUMNS} FROM {} WHERE registry_id = $1 AND name = $2",
            table(kind)
        ))
        .bind(registry_id)
        .bind(name)
        .fetch_optional(&self.reader)
        .await?
        .map(pipeline_from_row)
        .transpose()
    }

    pub async fn export_pipeline(
        &self,
        registry_id: &str,
        name: &str,
    ) -> Result<Option<PipelineRow>> {
        self.pipeline(registry_id, PipelineKind::Export, name).await
    }

    pub async fn import_pipeline(
        &self,
        registry_id: &str,
        name: &str,
    ) -> Result<Option<PipelineRow>> {
        self.pipeline(registry_id, PipelineKind::Import, name).await
    }

    /// A registry's pipelines of one kind, by name.
    pub async fn pipelines(
        &self,
        registry_id: &str,
        kind: PipelineKind,
    ) -> Result<Vec<PipelineRow>> {
        sqlx::query(&format!(
            "SELECT {PIPELINE_COLUMNS} FROM {} WHERE registry_id = $1 ORDER BY name",
            table(kind)
        ))
        .bind(registry_id)
        .fetch_all(&self.reader)
        .await?
        .into_iter()
        .map(pipeline_from_row)
        .collect()
    }

    /// Every import pipeline whose source trigger is enabled, on every registry (what the trigger polls).
    pub async fn import_pipelines_with_trigger(&self) -> Result<Vec<PipelineRow>> {
        sqlx::query(&format!(
            "SELECT {PIPELINE_COLUMNS} FROM import_pipelines WHERE trigger_enabled = 1 ORDER BY registry_id, name"
        ))
        .fetch_all(&self.reader)
        .await?
        .into_iter()
        .map(pipeline_from_row)
        .collect()
    }

    /// Deletes a pipeline; false if there was none. Its runs stay (ACR keeps them: a run's record is its log).
    pub async fn delete_pipeline(
        &self,
        registry_id: &str,
        kind: PipelineKind,
        name: &str,
        activity: &ActivityEvent,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(&format!(
            "DELETE FROM {} WHERE registry_id = $1 AND name = $2",
            table(kind)
        ))
        .bind(registry_id)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_activity(&mut tx, activity).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn pipeline_run(
        &self,
        registry_id: &str,
        name: &str,
    ) -> Result<Option<PipelineRunRow>> {
        sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE registry_id = $1 AND name = $2"
        ))
        .bind(registry_id)
        .bind(name)
        .fetch_optional(&self.reader)
        .await?
        .map(run_from_row)
        .transpose()
    }

    pub async fn pipeline_runs(&self, registry_id: &str) -> Result<Vec<PipelineRunRow>> {
        sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE registry_id = $1 ORDER BY created_at, name"
        ))
        .bind(registry_id)
        .fetch_all(&self.reader)
        .await?
        .into_iter()
        .map(run_from_row)
        .collect()
    }

    /// Records a run and its job in one transaction. The same request with the same `forceUpdateTag` as the
    /// stored run changes nothing; anything else starts the run again (a new job, the response reset), unless
    /// its current attempt is still running.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_pipeline_run(
        &self,
        registry_id: &str,
        name: &str,
        kind: PipelineKind,
        pipeline_name: &str,
        request: &RunRequest,
        force_update_tag: Option<&str>,
        caller: &str,
        activity: &ActivityEvent,
    ) -> Result<(PipelineRunRow, RunPut), RunWriteError> {
        let mut tx = self.begin_write().await?;
        if !registry_exists(&mut tx, registry_id).await? {
            return Err(RunWriteError::RegistryGone);
        }
        let existing = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE registry_id = $1 AND name = $2"
        ))
        .bind(registry_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .map(run_from_row)
        .transpose()?;
        if let Some(e) = &existing {
            if e.request == *request && e.force_update_tag.as_deref() == force_update_tag {
                return Ok((e.clone(), RunPut::Unchanged));
            }
            if e.provisioning_state == "Creating" {
                return Err(RunWriteError::StillRunning(e.name.clone()));
            }
        }
        let job_id = submit_run_job(&mut tx, registry_id, name).await?;
        let now = crate::time_fmt::now();
        let response = json!({"status": "Running"});
        let request_json = serde_json::to_string(request)
            .map_err(|e| StoreError::Invalid(format!("run request: {e}")))?;
        let kind_text = kind.as_str();
        let (row, put) = match existing {
            Some(e) => {
                sqlx::query(
                    "UPDATE pipeline_runs SET pipeline_kind = $1, pipeline_name = $2, request = $3, force_update_tag = $4,
                         job_id = $5, provisioning_state = 'Creating', response = $6, updated_at = $7, updated_by = $8
                     WHERE registry_id = $9 AND name = $10",
                )
                .bind(kind_text)
                .bind(pipeline_name)
                .bind(&request_json)
                .bind(force_update_tag)
                .bind(&job_id)
                .bind(response.to_string())
                .bind(&now)
                .bind(caller)
                .bind(registry_id)
                .bind(name)
                .execute(&mut *tx)
                .await?;
                (
                    PipelineRunRow {
                        pipeline_kind: kind,
                        pipeline_name: pipeline_name.to_string(),
                        request: request.clone(),
                        force_update_tag: force_update_tag.map(str::to_string),
                        job_id,
                        provisioning_state: "Creating".into(),
                        response,
                        updated_at: now,
                        updated_by: caller.to_string(),
                        ..e
                    },
                    RunPut::Rerun,
                )
            }
            None => {
                sqlx::query(&format!(
                    "INSERT INTO pipeline_runs({RUN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, 'Creating', $8, $9, $10, $11, $12)"
                ))
                .bind(registry_id)
                .bind(name)
                .bind(kind_text)
                .bind(pipeline_name)
                .bind(&request_json)
                .bind(force_update_tag)
                .bind(&job_id)
                .bind(response.to_string())
                .bind(&now)
                .bind(caller)
                .bind(&now)
                .bind(caller)
                .execute(&mut *tx)
                .await?;
                (
                    PipelineRunRow {
                        registry_id: registry_id.to_string(),
                        name: name.to_string(),
                        pipeline_kind: kind,
                        pipeline_name: pipeline_name.to_string(),
                        request: request.clone(),
                        force_update_tag: force_update_tag.map(str::to_string),
                        job_id,
                        provisioning_state: "Creating".into(),
                        response,
                        created_at: now.clone(),
                        created_by: caller.to_string(),
                        updated_at: now,
                        updated_by: caller.to_string(),
                    },
                    RunPut::Created,
                )
            }
        };
        let mut activity = activity.clone();
        if put == RunPut::Created {
            activity.set_http_status(201);
        }
        insert_activity(&mut tx, &activity).await?;
        tx.commit().await?;
        Ok((row, put))
    }

    /// The job's report: `provisioning_state` (`Creating` while it works, `Succeeded` or `Failed` at its end) and
    /// the whole `response`. False when the run is gone (deleted meanwhile: the job should stop).
    pub async fn set_pipeline_run_response(
        &self,
        registry_id: &str,
        name: &str,
        provisioning_state: &str,
        response: &Value,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE pipeline_runs SET provisioning_state = $1, response = $2 WHERE registry_id = $3 AND name = $4",
        )
        .bind(provisioning_state)
        .bind(response.to_string())
        .bind(registry_id)
        .bind(name)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a run's record; returns its job (for the caller to cancel), or `None` when there was no run.
    pub async fn delete_pipeline_run(
        &self,
        registry_id: &str,
        name: &str,
        activity: &ActivityEvent,
    ) -> Result<Option<Option<String>>> {
        let mut tx = self.begin_write().await?;
        let job: Option<Option<String>> = sqlx::query_scalar(
            "SELECT job_id FROM pipeline_runs WHERE registry_id = $1 AND name = $2",
        )
        .bind(registry_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        if job.is_none() {
            return Ok(None);
        }
        sqlx::query("DELETE FROM pipeline_runs WHERE registry_id = $1 AND name = $2")
            .bind(registry_id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        insert_activity(&mut tx, activity).await?;
        tx.commit().await?;
        Ok(job)
    }

    /// The export run's gate: `gate` decides on the registry row read inside the transaction that records the run's
    /// start (`started` becomes its response, provisioning state `Creating`). A refusal writes nothing and is
    /// returned as the inner `Err`; `Ok(Err(..))` also when the registry or the run is gone.
    pub async fn export_run_gate(
        &self,
        registry_id: &str,
        run: &str,
        started: &Value,
        gate: impl FnOnce(&Registry) -> Result<(), String>,
    ) -> Result<Result<(), String>> {
        let mut tx = self.begin_write().await?;
        let Some(registry) = load(&mut tx, RegistryKey::Id(registry_id)).await? else {
            return Ok(Err("the registry was deleted".into()));
        };
        if let Err(why) = gate(&registry) {
            return Ok(Err(why));
        }
        let done = sqlx::query(
            "UPDATE pipeline_runs SET provisioning_state = 'Creating', response = $1 WHERE registry_id = $2 AND name = $3",
        )
        .bind(started.to_string())
        .bind(registry_id)
        .bind(run)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(Err(format!("pipeline run '{run}' was deleted")));
        }
        tx.commit().await?;
        Ok(Ok(()))
    }
}

/// Binds the import-only `trigger_enabled` value where the statement has it.
trait BindIfImport<'q> {
    fn bind_if_import(self, kind: PipelineKind, v: i64) -> Self;
}

impl<'q> BindIfImport<'q>
    for sqlx::query::Query<'q, crate::meta::Db, crate::meta::DbArguments<'q>>
{
    fn bind_if_import(self, kind: PipelineKind, v: i64) -> Self {
        if kind == PipelineKind::Import {
            self.bind(v)
        } else {
            self
        }
    }
}
