//! ACR Transfer on the management plane: `exportPipelines`, `importPipelines` and `pipelineRuns` under a registry
//! (GET, list, PUT, DELETE; no PATCH, as in ACR). Pipelines change synchronously; a run is recorded with the job
//! that carries it out and answers its `operationStatuses` from that job. Creating or replacing an export pipeline
//! is an egress decision (`Egress::ExportPipeline`), made on the registry row read in the transaction that writes.

pub mod json;
mod runs;

use super::error::{ArmError, ArmResult};
use super::registries::require_write;
use super::registry_json::registry_id;
use super::ArmCtx;
use crate::state::AppState;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use moat_model::audit::{AuditEvent, Operation as AuditOperation};
use moat_model::policy::PolicyError;
use moat_model::transfer::{check_name, Pipeline, PipelineKind};
use moat_model::{decide, Access, Decision, DenyReason, Egress, Origin, Registry, Sku};
use moat_store::meta::PipelineWriteError;
use serde_json::{json, Value};

/// The versions whose spec has the three resources: every preview from 2019-12-01-preview on (ACR's GA versions
/// never had them; reference §1.1), including the later previews the live service answers with.
pub const API_VERSIONS: &[&str] = &[
    "2019-12-01-preview",
    "2020-11-01-preview",
    "2021-06-01-preview",
    "2021-08-01-preview",
    "2021-12-01-preview",
    "2022-02-01-preview",
    "2023-01-01-preview",
    "2023-06-01-preview",
    "2023-08-01-preview",
    "2023-11-01-preview",
    "2024-11-01-preview",
    "2025-03-01-preview",
    "2025-05-01-preview",
    "2025-06-01-preview",
    "2025-09-01-preview",
    "2025-12-01-preview",
    "2026-01-01-preview",
    "2026-03-01-preview",
    "2026-09-01-preview",
];

/// Whether `l` (the lower-cased path) is one of the three resources (or below them).
pub fn is_pipeline_path(l: &[&str]) -> bool {
    l.len() >= 9
        && l[2] == "resourcegroups"
        && l[5] == "microsoft.containerregistry"
        && l[6] == "registries"
        && matches!(l[8], "exportpipelines" | "importpipelines" | "pipelineruns")
}

/// `api-version` for the three resources.
pub fn check_api_version(version: Option<&str>) -> ArmResult<String> {
    let Some(v) = version.filter(|v| !v.is_empty()) else {
        return Err(ArmError::bad_request(
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    if API_VERSIONS.contains(&v) {
        return Ok(v.to_string());
    }
    Err(ArmError::bad_request(
        "NoRegisteredProviderFound",
        format!(
            "No registered resource provider found for API version '{v}' for the transfer resources (exportPipelines, importPipelines, pipelineRuns). The supported api-versions are '{}'.",
            API_VERSIONS.join(", ")
        ),
    ))
}

fn kind_of(segment: &str) -> Option<PipelineKind> {
    match segment {
        "exportpipelines" => Some(PipelineKind::Export),
        "importpipelines" => Some(PipelineKind::Import),
        _ => None,
    }
}

/// `rest` is the path below the registry, lower-cased; `original` as the caller spelt it.
pub async fn dispatch(
    state: &AppState,
    ctx: &ArmCtx,
    r: &Registry,
    rest: &[&str],
    original: &[&str],
    body: &Value,
) -> ArmResult<Response> {
    let reg_id = registry_id(&ctx.subscription, &r.resource_group, &r.name);
    if rest[0] == "pipelineruns" {
        return runs::dispatch(state, ctx, r, &reg_id, &rest[1..], &original[1..], body).await;
    }
    let Some(kind) = kind_of(rest[0]) else {
        return Err(super::unsupported(ctx));
    };
    match (&ctx.method, &rest[1..]) {
        (&Method::GET, []) => {
            let value: Vec<Value> = state
                .meta
                .pipelines(&r.id, kind)
                .await?
                .iter()
                .map(|p| json::pipeline_json(&reg_id, &ctx.tenant, p))
                .collect();
            Ok(axum::Json(json!({ "value": value })).into_response())
        }
        (&Method::GET, [_]) => {
            let row = state
                .meta
                .pipeline(&r.id, kind, original[1])
                .await?
                .ok_or_else(|| not_found(kind, original[1]))?;
            Ok(axum::Json(json::pipeline_json(&reg_id, &ctx.tenant, &row)).into_response())
        }
        (&Method::GET, [_, "operationstatuses", _]) => {
            state
                .meta
                .pipeline(&r.id, kind, original[1])
                .await?
                .ok_or_else(|| not_found(kind, original[1]))?;
            Ok(super::operation_status(
                &format!("{reg_id}/{}/{}", kind.collection(), original[1]),
                original[3],
            ))
        }
        (&Method::PUT, [_]) => put(state, ctx, r, &reg_id, kind, original[1], body).await,
        (&Method::DELETE, [_]) => {
            require_write(ctx, r, &format!("{}/delete", kind.resource_type()))?;
            let gone = state
                .meta
                .delete_pipeline(&r.id, kind, original[1], &ctx.activity.change())
                .await?;
            // ARM's delete of what is not there: 204 (the az extension GETs first and says "not found" itself).
            Ok(if gone {
                StatusCode::OK
            } else {
                StatusCode::NO_CONTENT
            }
            .into_response())
        }
        (_, [_]) => Err(method_not_allowed(kind.collection())),
        _ => Err(super::unsupported(ctx)),
    }
}

/// ACR has no PATCH (or POST) on the transfer resources ([TSP]): said as ARM's 405 with what to do instead.
pub fn method_not_allowed(collection: &str) -> ArmError {
    ArmError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("{collection} support GET, PUT and DELETE only: to change one, PUT the whole resource again."),
    )
}

pub fn not_found(kind: PipelineKind, name: &str) -> ArmError {
    ArmError::not_found(&kind.resource_type(), name)
}

/// ACR Transfer is a Premium feature ([ACR-REPO] image-transfer README; reference §1.1), and Moat holds it to that.
pub fn require_premium(r: &Registry) -> ArmResult<()> {
    if r.settings.sku == Sku::Premium {
        return Ok(());
    }
    Err(ArmError::bad_request(
        "FeatureNotSupportedForSku",
        format!(
            "Transfer pipelines are available only on Premium registries; registry '{}' is {}. Update the SKU to Premium first (`moat acr update -n {} --sku Premium`).",
            r.name,
            r.settings.sku.as_str(),
            r.name
        ),
    ))
}

/// An audit event of a pipeline's creation on the registry it exports from (the standing egress it allows).
fn export_event(ctx: &ArmCtx, r: &Registry, status: u16, result: &str, why: &str) -> AuditEvent {
    AuditEvent {
        time_generated: moat_store::time_fmt::now(),
        category: AuditOperation::Export.category().as_str().into(),
        operation_name: AuditOperation::Export.as_str().into(),
        registry: r.name.clone(),
        login_server: r.login_server.clone(),
        identity: Some(ctx.principal.app_id.clone()),
        caller_ip_address: Some(ctx.caller_ip.to_string()),
        result_type: result.into(),
        result_description: format!("{status}: {why}"),
        correlation_id: Some(ctx.correlation_id.clone()),
        endpoint: Some("managementApi".into()),
        ..Default::default()
    }
}

/// A `LocalDirectory` pipeline names a directory of the server's host: only the operator's transfer directories
/// (`[outbound] directories`), decided by the connector as each run decides it again.
fn check_directory(state: &AppState, kind: PipelineKind, p: &Pipeline) -> ArmResult<()> {
    let Ok(moat_model::storage_uri::StorageUri::LocalDirectory { dir }) = p.storage.uri.parse()
    else {
        return Ok(());
    };
    let field = match kind {
        PipelineKind::Export => "properties.target.uri",
        PipelineKind::Import => "properties.source.uri",
    };
    state
        .outbound
        .check_directory(&dir)
        .map(|_| ())
        .map_err(|e| ArmError::bad_request("InvalidParameter", e.to_string()).with_target(field))
}

async fn put(
    state: &AppState,
    ctx: &ArmCtx,
    r: &Registry,
    reg_id: &str,
    kind: PipelineKind,
    name: &str,
    body: &Value,
) -> ArmResult<Response> {
    require_write(ctx, r, &format!("{}/write", kind.resource_type()))?;
    check_name("Pipeline", name).map_err(json::invalid)?;
    require_premium(r)?;
    let pipeline = json::parse_pipeline(kind, body)?;
    check_directory(state, kind, &pipeline)?;
    let origin = Origin::trusted_service(ctx.caller_ip);
    // The gate runs on the registry as the writing transaction reads it: a concurrent "disable exports" either
    // committed before (and this is refused) or counts this pipeline (and is refused itself).
    let gate = |current: &Registry| -> Result<(), PolicyError> {
        if kind == PipelineKind::Import {
            return Ok(());
        }
        match decide(
            current,
            &origin,
            &Access::everything(),
            &Egress::ExportPipeline { pipeline: name },
        ) {
            Decision::Allow => Ok(()),
            Decision::Deny(DenyReason::ExportsDisabled { .. }) | Decision::Deny(_) => {
                Err(PolicyError::ExportPipelineWhileExportsDisabled {
                    name: current.name.clone(),
                })
            }
        }
    };
    let written = state
        .meta
        .put_pipeline(
            &r.id,
            name,
            &pipeline,
            &ctx.principal.app_id,
            &ctx.activity.change(),
            gate,
        )
        .await;
    let (row, created) = match written {
        Ok(done) => done,
        Err(PipelineWriteError::Refused(policy)) => {
            state.audit.record(export_event(
                ctx,
                r,
                400,
                "Denied",
                &format!("export pipeline '{name}' refused: {policy}"),
            ));
            return Err(policy.into());
        }
        Err(PipelineWriteError::RegistryGone) => {
            return Err(ArmError::not_found(
                "Microsoft.ContainerRegistry/registries",
                &r.name,
            ))
        }
        Err(PipelineWriteError::Store(e)) => return Err(e.into()),
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    if kind == PipelineKind::Export {
        state.audit.record(export_event(
            ctx,
            r,
            status.as_u16(),
            "Success",
            &format!(
                "export pipeline '{}' allows exports to {}",
                row.name, row.pipeline.storage.uri
            ),
        ));
    }
    let id = format!("{reg_id}/{}/{}", kind.collection(), row.name);
    Ok(super::lro(
        ctx,
        &id,
        json::pipeline_json(reg_id, &ctx.tenant, &row),
        status,
    ))
}
