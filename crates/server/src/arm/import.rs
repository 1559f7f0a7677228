//! `POST REG/importImage`, ACR's import. From a registry on this server it is zero copy and synchronous: the
//! egress gate decides on the source inside the transaction that links the image into the target. From a remote
//! registry it is a long-running operation (`202` + `Location`): this handler checks the request and submits a
//! durable job (`crate::jobs::remote_import`), which streams manifests and blobs into the blob store and then
//! writes the whole image in one transaction, or nothing; `operationResults/{op}` reads the job.

use super::error::{ArmError, ArmResult};
use super::ArmCtx;
use crate::jobs::remote_import::{self, event, Caller, RemoteImport};
use crate::jobs::JobState;
use crate::state::AppState;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use moat_model::audit::{AuditEvent, Operation as AuditOperation};
use moat_model::{permit, Access, Egress, Origin, Permit, Registry};
use moat_store::meta::{ImportWrite, ImportWriteError};
use moat_transfer::remote::Credentials;
use moat_transfer::spec::targets;
use moat_transfer::{ImageRef, ImportError, ImportTargets};
use serde_json::{json, Value};

mod own_source;

const CODE: &str = "InvalidParameters";

const IMPORT_ACTION: &str = "Microsoft.ContainerRegistry/registries/importImage/action";

fn invalid(message: impl Into<String>) -> ArmError {
    ArmError::bad_request(CODE, message)
}

impl From<ImportError> for ArmError {
    fn from(e: ImportError) -> ArmError {
        match e {
            ImportError::Store(s) => s.into(),
            ImportError::Io(e) => ArmError::internal(e),
            other => invalid(other.to_string()),
        }
    }
}

/// Where the image comes from.
enum Source {
    Local(Box<Registry>),
    Remote {
        uri: String,
        credentials: Option<Credentials>,
    },
}

struct Request {
    source: Source,
    image: ImageRef,
    targets: ImportTargets,
    force: bool,
}

fn strings(body: &Value, key: &str) -> ArmResult<Vec<String>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ArmError::invalid_property(key, "expected an array of strings"))
            })
            .collect(),
        Some(_) => Err(ArmError::invalid_property(
            key,
            "expected an array of strings",
        )),
    }
}

async fn parse(state: &AppState, ctx: &ArmCtx, body: &Value) -> ArmResult<Request> {
    let source = body
        .get("source")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("source is required: {\"source\": {\"resourceId\" | \"registryUri\", \"sourceImage\"}}"))?;
    let image: ImageRef = source
        .get("sourceImage")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            invalid("source.sourceImage is required (repo, repo:tag or repo@sha256:<hex>)")
        })?
        .parse()?;
    let resource_id = source.get("resourceId").and_then(Value::as_str);
    let uri = source.get("registryUri").and_then(Value::as_str);
    let credentials = match source.get("credentials") {
        None | Some(Value::Null) => None,
        Some(c) => {
            let password = c.get("password").and_then(Value::as_str).ok_or_else(|| {
                invalid("source.credentials.password is required with credentials")
            })?;
            Some(Credentials {
                username: c
                    .get("username")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                password: password.to_string(),
            })
        }
    };
    let source = match (resource_id, uri) {
        (Some(id), None) => {
            if credentials.is_some() {
                return Err(invalid(
                    "source.credentials go with source.registryUri, not resourceId",
                ));
            }
            Source::Local(Box::new(local_registry(state, ctx, id).await?))
        }
        (None, Some(uri)) => Source::Remote {
            uri: uri.to_string(),
            credentials,
        },
        _ => {
            return Err(invalid(
                "give exactly one of source.resourceId and source.registryUri",
            ))
        }
    };
    let targets = targets(
        &image,
        &strings(body, "targetTags")?,
        &strings(body, "untaggedTargetRepositories")?,
    )?;
    let force = match body.get("mode").and_then(Value::as_str) {
        None => false,
        Some(m) if m.eq_ignore_ascii_case("NoForce") => false,
        Some(m) if m.eq_ignore_ascii_case("Force") => true,
        Some(m) => {
            return Err(invalid(format!("mode '{m}' is not NoForce or Force")).with_target("mode"))
        }
    };
    Ok(Request {
        source,
        image,
        targets,
        force,
    })
}

/// A registry of this server named by its ARM id, readable by the caller. The caller's rights are checked on the
/// id as given before it is looked up: a source it may not read is refused the same way whether it exists or not.
async fn local_registry(state: &AppState, ctx: &ArmCtx, id: &str) -> ArmResult<Registry> {
    let not_found = || {
        invalid(format!(
            "source registry '{id}' was not found on this server: give its resource id (`moat acr show -n <name> --query id`)"
        ))
    };
    let (rg, name) = super::registries::registry_id_parts(ctx, id).ok_or_else(not_found)?;
    if !ctx.principal.can_read(rg, name) {
        return Err(ctx.principal.denied(IMPORT_ACTION, id));
    }
    super::registries::by_resource_id(state, ctx, id)
        .await?
        .ok_or_else(not_found)
}

impl Caller {
    fn of(ctx: &ArmCtx) -> Caller {
        Caller {
            app_id: ctx.principal.app_id.clone(),
            ip: ctx.caller_ip,
            correlation_id: ctx.correlation_id.clone(),
        }
    }
}

fn import_events(
    caller: &Caller,
    target: &Registry,
    req: &Request,
    root: Option<&str>,
) -> Vec<AuditEvent> {
    remote_import::import_events(caller, target, &req.targets, root)
}

pub async fn import_image(
    state: &AppState,
    ctx: &ArmCtx,
    target: &Registry,
    body: &Value,
) -> ArmResult<Response> {
    super::registries::require_write(ctx, target, IMPORT_ACTION)?;
    let req = parse(state, ctx, body).await?;
    match &req.source {
        Source::Local(source) => import_local(state, ctx, target, source, &req).await,
        Source::Remote { uri, .. } => {
            own_source::refuse_own_uri(state, &Caller::of(ctx), target, &req, uri).await?;
            start_remote(state, ctx, target, req).await
        }
    }
}

/// The gate's answer for this import leaving `source`, as the source is in the caller's transaction: the permit
/// the store links the image with.
fn gate(
    ctx: &ArmCtx,
    source: &Registry,
    target: &Registry,
    image: &ImageRef,
) -> Result<Permit, String> {
    let egress = Egress::ImportFrom {
        target_registry: target,
        repository: &image.repository,
        reference: &image.reference,
    };
    permit(
        source,
        &Origin::trusted_service(ctx.caller_ip),
        &Access::everything(),
        &egress,
    )
    .map_err(|why| format!("Import from registry '{}' was refused: {why}.", source.name))
}

async fn import_local(
    state: &AppState,
    ctx: &ArmCtx,
    target: &Registry,
    source: &Registry,
    req: &Request,
) -> ArmResult<Response> {
    let caller = Caller::of(ctx);
    let export_event = || {
        let mut e = event(
            &caller,
            source,
            AuditOperation::Export,
            Some(req.image.repository.to_string()),
        );
        e.tag = req.image.tag().map(|t| t.to_string());
        e
    };
    // Decided before anything is read; decided again in the transaction that writes.
    if let Err(why) = gate(ctx, source, target, &req.image) {
        let mut events = import_events(&caller, target, req, None);
        events.push(export_event());
        remote_import::record_failure(state, events, &why, true);
        return Err(invalid(why));
    }
    let artifact = moat_transfer::local::collect(&state.meta, &source.id, &req.image).await?;
    let root = artifact.root().map(|d| d.to_string());
    let mut events = import_events(&caller, target, req, root.as_deref());
    let mut export = export_event();
    export.digest = root.clone();
    events.push(export);
    let write = ImportWrite {
        target_registry_id: &target.id,
        targets: &req.targets,
        manifests: &artifact.manifests,
        blobs: &artifact.blobs,
        force: req.force,
        events: &events,
    };
    let result = state
        .meta
        .import_local(&write, &source.id, |src| gate(ctx, src, target, &req.image))
        .await;
    state.manifest_cache.invalidate();
    match result {
        Ok(()) => Ok(StatusCode::OK.into_response()),
        Err(e) => {
            // The gate's refusal is a denial on both sides; anything else (a tag under NoForce, a source that
            // changed) a failure of the import.
            let denied = matches!(e, ImportWriteError::Refused(_));
            let e = write_error(e);
            remote_import::record_failure(state, events, &e.message, denied);
            Err(e)
        }
    }
}

fn write_error(e: ImportWriteError<String>) -> ArmError {
    match e {
        ImportWriteError::Store(s) => s.into(),
        ImportWriteError::Refused(why) => invalid(why),
        other => invalid(other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Remote imports: a long-running operation, run as a durable job.

async fn start_remote(
    state: &AppState,
    ctx: &ArmCtx,
    target: &Registry,
    req: Request,
) -> ArmResult<Response> {
    // NoForce fails before a byte moves; the transaction checks again.
    if !req.force {
        for (repo, tag) in &req.targets {
            if let Some(tag) = tag {
                if state
                    .meta
                    .manifest(&target.id, repo, &moat_model::Reference::Tag(tag.clone()))
                    .await?
                    .is_some()
                {
                    return Err(invalid(format!(
                        "the tag '{repo}:{tag}' exists in the target registry: import with mode Force (`--force`) to overwrite it"
                    )));
                }
            }
        }
    }
    let Source::Remote { uri, credentials } = req.source else {
        return Err(ArmError::internal(
            "a remote import without a remote source",
        ));
    };
    let job = remote_import::submit(
        state,
        target,
        RemoteImport {
            uri,
            credentials,
            image: req.image,
            targets: req.targets,
            force: req.force,
            caller: Caller::of(ctx),
            completion: ctx.activity.completion(),
        },
    )
    .await
    .map_err(|e| match e {
        remote_import::SubmitError::Store(e) => e.into(),
        remote_import::SubmitError::Seal(e) => ArmError::internal(e),
    })?;
    let location = format!(
        "{}/subscriptions/{}/providers/Microsoft.ContainerRegistry/locations/{}/operationResults/{OPERATION_PREFIX}{job}?api-version={}",
        ctx.base_url,
        ctx.subscription,
        target
            .settings
            .location
            .region()
            .unwrap_or(&state.config.region)
            .as_str()
            .to_ascii_uppercase(),
        ctx.api_version
    );
    let mut resp = (
        StatusCode::ACCEPTED,
        axum::Json(json!({"status": "InProgress"})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    Ok(resp)
}

/// Operation ids are the job's id with this prefix (ACR's look like `registries-<guid>`).
const OPERATION_PREFIX: &str = "registries-";

/// `GET …/locations/{location}/operationResults/{op}`: `202` with progress while the import's job is queued or
/// running, `200` when it succeeded, the import's error when it failed. The job is durable: the answer survives a
/// restart of the server. An operation on a registry the caller may not read is answered as one that does not
/// exist.
pub async fn operation_result(state: &AppState, ctx: &ArmCtx, op: &str) -> ArmResult<Response> {
    let not_found = || {
        ArmError::new(
            StatusCode::NOT_FOUND,
            "OperationNotFound",
            format!("no operation '{op}' on this server"),
        )
    };
    let Some(id) = op.strip_prefix(OPERATION_PREFIX) else {
        return Err(not_found());
    };
    let job = state
        .jobs
        .get(id)
        .await?
        .filter(|j| j.kind == remote_import::KIND)
        .filter(|j| {
            remote_import::job_target(&j.payload)
                .is_some_and(|(rg, name)| ctx.principal.can_read(&rg, &name))
        })
        .ok_or_else(not_found)?;
    let p = &job.progress;
    let num = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
    let percent = match (num("bytesTotal"), num("bytesDone")) {
        (0, _) => 0.0,
        (total, done) => (done as f64 * 100.0 / total as f64).min(100.0),
    };
    match job.state {
        JobState::Queued | JobState::Running => {
            let mut resp = (
                StatusCode::ACCEPTED,
                axum::Json(
                    json!({"status": "InProgress", "percentComplete": percent, "properties": p}),
                ),
            )
                .into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Ok(resp)
        }
        JobState::Succeeded => Ok(axum::Json(
            json!({"status": "Succeeded", "percentComplete": 100.0, "properties": p}),
        )
        .into_response()),
        JobState::Failed => {
            Err(invalid(job.error.unwrap_or_else(|| {
                "the import failed without a message".to_string()
            })))
        }
    }
}
