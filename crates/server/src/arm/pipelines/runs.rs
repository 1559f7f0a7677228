//! `pipelineRuns`: a run's PUT checks its request against the pipeline it names and records the run with its job
//! in one transaction (the job carries it out: `crates/server/src/jobs`); its `operationStatuses` answer from the
//! run as the job left it.

use super::super::error::{ArmError, ArmResult};
use super::super::registries::require_write;
use super::super::ArmCtx;
use super::json::{self, invalid, RUN_TYPE};
use crate::state::AppState;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use moat_model::transfer::{check_name, PipelineRef, RunRequest};
use moat_model::Registry;
use moat_store::meta::{PipelineRunRow, RunPut, RunWriteError};
use serde_json::{json, Value};

pub async fn dispatch(
    state: &AppState,
    ctx: &ArmCtx,
    r: &Registry,
    reg_id: &str,
    rest: &[&str],
    original: &[&str],
    body: &Value,
) -> ArmResult<Response> {
    match (&ctx.method, rest) {
        (&Method::GET, []) => {
            let mut value = Vec::new();
            for row in state.meta.pipeline_runs(&r.id).await? {
                value.push(json::run_json(reg_id, &current(state, row).await));
            }
            Ok(axum::Json(json!({ "value": value })).into_response())
        }
        (&Method::GET, [_]) => {
            let row = find(state, r, original[0]).await?;
            Ok(axum::Json(json::run_json(reg_id, &row)).into_response())
        }
        (&Method::GET, [_, "operationstatuses", _]) => {
            let row = find(state, r, original[0]).await?;
            Ok(operation_status(reg_id, &row, original[2]))
        }
        (&Method::PUT, [_]) => put(state, ctx, r, reg_id, original[0], body).await,
        (&Method::DELETE, [_]) => {
            require_write(ctx, r, &format!("{RUN_TYPE}/delete"))?;
            // Deleting a run removes its record, not what it transferred (ACR: "more like deleting the log");
            // a job still working finds its run gone at its next report and stops.
            match state
                .meta
                .delete_pipeline_run(&r.id, original[0], &ctx.activity.change())
                .await?
            {
                None => Ok(StatusCode::NO_CONTENT.into_response()),
                Some(job) => {
                    if let Some(job) = job {
                        cancel_job(state, &job).await;
                    }
                    Ok(StatusCode::OK.into_response())
                }
            }
        }
        (_, [_]) => Err(super::method_not_allowed("pipelineRuns")),
        _ => Err(super::super::unsupported(ctx)),
    }
}

/// Stops a deleted run's job at its next checkpoint.
async fn cancel_job(state: &AppState, job: &str) {
    if let Err(e) = state.jobs.cancel(job).await {
        tracing::warn!("pipeline run deleted, its job {job} not cancelled: {e}");
    }
}

/// The run as its job leaves it. A job that ended without reporting (it failed before the run's own code could
/// say why, e.g. after its attempts ran out) shows as a failed run with the job's error.
async fn current(state: &AppState, mut row: PipelineRunRow) -> PipelineRunRow {
    if row.provisioning_state != "Creating" {
        return row;
    }
    let Some(job) = row.job_id.as_deref() else {
        return row;
    };
    let failed = match state.jobs.get(job).await {
        Ok(Some(j)) if j.state == moat_store::meta::jobs::JobState::Failed => j
            .error
            .unwrap_or_else(|| "the pipeline run's job failed".into()),
        Ok(Some(_)) => return row,
        Ok(None) => "the pipeline run's job is gone: run it again with a new forceUpdateTag (`moat acr pipeline-run create … --force-redeploy`)".into(),
        Err(_) => return row,
    };
    row.provisioning_state = "Failed".into();
    if !row.response.is_object() {
        row.response = json!({});
    }
    row.response["status"] = json!("Failed");
    if row
        .response
        .get("pipelineRunErrorMessage")
        .is_none_or(Value::is_null)
    {
        row.response["pipelineRunErrorMessage"] = json!(failed);
    }
    row
}

async fn find(state: &AppState, r: &Registry, name: &str) -> ArmResult<PipelineRunRow> {
    let row = state
        .meta
        .pipeline_run(&r.id, name)
        .await?
        .ok_or_else(|| ArmError::not_found(RUN_TYPE, name))?;
    Ok(current(state, row).await)
}

/// ARM's operation status of a run: `InProgress` while its job works, then `Succeeded`, or `Failed` with the
/// run's `pipelineRunErrorMessage` (what `az acr pipeline-run create` prints when it fails).
fn operation_status(reg_id: &str, row: &PipelineRunRow, op: &str) -> Response {
    let id = format!("{reg_id}/pipelineRuns/{}/operationStatuses/{op}", row.name);
    let start = row
        .response
        .get("startTime")
        .cloned()
        .unwrap_or_else(|| json!(row.updated_at));
    let mut body = json!({"id": id, "name": op, "startTime": start});
    match row.provisioning_state.as_str() {
        "Succeeded" => {
            body["status"] = json!("Succeeded");
            body["endTime"] = row
                .response
                .get("finishTime")
                .cloned()
                .unwrap_or(Value::Null);
        }
        "Failed" | "Canceled" => {
            let message = row
                .response
                .get("pipelineRunErrorMessage")
                .and_then(Value::as_str)
                .unwrap_or("the pipeline run failed");
            body["status"] = json!(row.provisioning_state);
            body["endTime"] = row
                .response
                .get("finishTime")
                .cloned()
                .unwrap_or(Value::Null);
            body["error"] = json!({"code": "PipelineRunFailed", "message": message});
        }
        _ => body["status"] = json!("InProgress"),
    }
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// Reads a run's PUT body: `properties.request` and `properties.forceUpdateTag`.
fn parse(body: &Value) -> ArmResult<(RunRequest, Option<String>)> {
    let props = body
        .get("properties")
        .and_then(Value::as_object)
        .ok_or_else(|| ArmError::invalid_property("properties", "required"))?;
    let request = props
        .get("request")
        .filter(|v| v.is_object())
        .ok_or_else(|| ArmError::invalid_property("properties.request", "required"))?;
    let request: RunRequest = serde_json::from_value(request.clone()).map_err(|e| {
        ArmError::invalid_property(
            "properties.request",
            format!("{e} (expected pipelineResourceId, artifacts, source, target, catalogDigest)"),
        )
    })?;
    let tag = match props.get("forceUpdateTag") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ArmError::invalid_property(
                "properties.forceUpdateTag",
                "expected a string",
            ))
        }
    };
    Ok((request, tag))
}

async fn put(
    state: &AppState,
    ctx: &ArmCtx,
    r: &Registry,
    reg_id: &str,
    name: &str,
    body: &Value,
) -> ArmResult<Response> {
    require_write(ctx, r, &format!("{RUN_TYPE}/write"))?;
    check_name("Pipeline run", name).map_err(invalid)?;
    super::require_premium(r)?;
    let (request, tag) = parse(body)?;
    let pipeline = PipelineRef::parse(&request.pipeline_resource_id).map_err(invalid)?;
    let same_registry = pipeline
        .subscription
        .eq_ignore_ascii_case(&ctx.subscription)
        && pipeline
            .resource_group
            .eq_ignore_ascii_case(&r.resource_group)
        && pipeline.registry.eq_ignore_ascii_case(&r.name);
    if !same_registry {
        return Err(ArmError::bad_request(
            "InvalidParameter",
            format!(
                "pipelineResourceId '{}' is not a pipeline of registry '{}': a run uses a pipeline of its own registry.",
                moat_model::text::escape(&request.pipeline_resource_id),
                r.name
            ),
        )
        .with_target("properties.request.pipelineResourceId"));
    }
    let stored = state
        .meta
        .pipeline(&r.id, pipeline.kind, &pipeline.name)
        .await?
        .ok_or_else(|| {
            ArmError::bad_request(
                "InvalidParameter",
                format!(
                    "{} pipeline '{}' does not exist on registry '{}': create it first (`moat acr {}-pipeline create`).",
                    if pipeline.kind == moat_model::transfer::PipelineKind::Export { "Export" } else { "Import" },
                    moat_model::text::escape(&pipeline.name),
                    r.name,
                    pipeline.kind.as_str()
                ),
            )
            .with_target("properties.request.pipelineResourceId")
        })?;
    let request = request.validate(pipeline.kind).map_err(invalid)?;
    let (row, put) = state
        .meta
        .put_pipeline_run(
            &r.id,
            name,
            pipeline.kind,
            &stored.name,
            &request,
            tag.as_deref(),
            &ctx.principal.app_id,
            &ctx.activity.change(),
        )
        .await
        .map_err(|e| match e {
            RunWriteError::RegistryGone => {
                ArmError::not_found("Microsoft.ContainerRegistry/registries", &r.name)
            }
            RunWriteError::StillRunning(_) => {
                ArmError::new(StatusCode::CONFLICT, "Conflict", e.to_string())
            }
            RunWriteError::Store(s) => s.into(),
        })?;
    if put != RunPut::Unchanged {
        wake_jobs(state);
    }
    let status = if put == RunPut::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let id = format!("{reg_id}/pipelineRuns/{}", row.name);
    Ok(super::super::lro(
        ctx,
        &id,
        json::run_json(reg_id, &row),
        status,
    ))
}

/// Nudges the job runner: a run's job was just recorded.
fn wake_jobs(state: &AppState) {
    state.jobs.wake();
}
