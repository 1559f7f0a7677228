//! `POST REG/importImage`, ACR's import. From a registry on this server it is zero copy and synchronous: the
//! egress gate decides on the source inside the transaction that links the image into the target. From a remote
//! registry it is a long-running operation (`202` + `Location`): manifests and blobs stream into the blob store,
//! then the same transaction writes the whole image, or nothing.

use super::error::{ArmError, ArmResult};
use super::ArmCtx;
use crate::state::AppState;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use moat_model::audit::{AuditEvent, Operation as AuditOperation};
use moat_model::{permit, Access, Egress, Origin, Permit, Registry};
use moat_store::meta::{ImportWrite, ImportWriteError};
use moat_transfer::progress::ProgressSnapshot;
use moat_transfer::remote::{Credentials, Remote};
use moat_transfer::spec::targets;
use moat_transfer::{Artifact, ImageRef, ImportError, ImportTargets, Progress};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// Who asked for an import, as its audit events name them (kept by a remote import that outlives its request).
struct Caller {
    app_id: String,
    ip: std::net::IpAddr,
    correlation_id: String,
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

/// An audit event of the import on `registry`.
fn event(
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
fn import_events(
    caller: &Caller,
    target: &Registry,
    req: &Request,
    root: Option<&str>,
) -> Vec<AuditEvent> {
    req.targets
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

fn record_failure(state: &AppState, events: Vec<AuditEvent>, why: &str, denied: bool) {
    for mut e in events {
        e.result_type = if denied { "Denied" } else { "Failure" }.into();
        e.result_description = format!("400: {why}");
        state.audit.record(e);
    }
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
        record_failure(state, events, &why, true);
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
            record_failure(state, events, &e.message, denied);
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
// Remote imports: a long-running operation.

/// The state of one remote import, polled through its `Location`.
pub struct Operation {
    /// The target registry's resource group and name: only a caller who may read it sees the operation.
    target: (String, String),
    progress: Arc<Progress>,
    result: Option<Result<(), ArmError>>,
    finished: Option<std::time::Instant>,
}

/// How long a finished operation's result stays available to pollers.
const KEEP_FINISHED: std::time::Duration = std::time::Duration::from_secs(3600);
/// How long an import's pins hold the bytes it downloads against the collector (a pin left by a crash lapses).
const IMPORT_PIN_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Running and finished remote imports, by operation id. Kept in memory: a restart forgets them (their target
/// is untouched unless the import finished).
#[derive(Clone, Default)]
pub struct ImportOperations(Arc<Mutex<HashMap<String, Operation>>>);

fn progress_json(p: ProgressSnapshot) -> Value {
    json!({
        "bytesTotal": p.bytes_total,
        "bytesDone": p.bytes_done,
        "layersTotal": p.layers_total,
        "layersDone": p.layers_done,
        "manifests": p.manifests,
    })
}

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
    let op = format!("registries-{}", uuid::Uuid::new_v4());
    let progress = Arc::new(Progress::default());
    {
        let mut ops = state.imports.0.lock().expect("lock");
        ops.retain(|_, o| o.finished.is_none_or(|t| t.elapsed() < KEEP_FINISHED));
        ops.insert(
            op.clone(),
            Operation {
                target: (target.resource_group.clone(), target.name.clone()),
                progress: progress.clone(),
                result: None,
                finished: None,
            },
        );
    }
    let location = format!(
        "{}/subscriptions/{}/providers/Microsoft.ContainerRegistry/locations/{}/operationResults/{op}?api-version={}",
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
    let job = RemoteJob {
        state: state.clone(),
        target: target.clone(),
        req,
        progress,
        caller: Caller::of(ctx),
        refused: Mutex::new(None),
    };
    let state2 = state.clone();
    let op2 = op.clone();
    let completion = ctx.activity.completion();
    tokio::spawn(async move {
        let result = job.run().await;
        state2
            .audit
            .record_activity(super::activity::completed(completion, &result));
        if let Some(o) = state2.imports.0.lock().expect("lock").get_mut(&op2) {
            o.result = Some(result);
            o.finished = Some(std::time::Instant::now());
        }
    });
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

/// `GET …/locations/{location}/operationResults/{op}`: `202` with progress while the import runs, `200` when it
/// succeeded, the import's error when it failed.
/// An operation on a registry the caller may not read is answered as one that does not exist.
pub fn operation_result(state: &AppState, ctx: &ArmCtx, op: &str) -> ArmResult<Response> {
    let ops = state.imports.0.lock().expect("lock");
    let o = ops
        .get(op)
        .filter(|o| ctx.principal.can_read(&o.target.0, &o.target.1))
        .ok_or_else(|| {
            ArmError::new(
                StatusCode::NOT_FOUND,
                "OperationNotFound",
                format!("no operation '{op}' on this server"),
            )
        })?;
    let p = o.progress.snapshot();
    match &o.result {
        None => {
            let mut resp = (
                StatusCode::ACCEPTED,
                axum::Json(json!({"status": "InProgress", "percentComplete": p.percent(), "properties": progress_json(p)})),
            )
                .into_response();
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Ok(resp)
        }
        Some(Ok(())) => Ok(axum::Json(json!({"status": "Succeeded", "percentComplete": 100.0, "properties": progress_json(p)})).into_response()),
        Some(Err(e)) => Err(ArmError::new(e.status, &e.code, e.message.clone())),
    }
}

struct RemoteJob {
    state: AppState,
    target: Registry,
    req: Request,
    progress: Arc<Progress>,
    caller: Caller,
    /// The outbound connector's refusal that stopped the import (a redirect or realm pointing at this server).
    refused: Mutex<Option<moat_outbound::Refused>>,
}

impl RemoteJob {
    async fn run(self) -> Result<(), ArmError> {
        let result = self.import().await;
        if let Err(e) = &result {
            let refused = self.refused.lock().expect("lock").take();
            if let Some(r) = &refused {
                own_source::audit_refusal(&self.state, &self.caller, &self.req, r).await;
            }
            record_failure(
                &self.state,
                self.events(None),
                &e.message,
                refused.is_some(),
            );
        }
        result.map_err(|e| {
            ArmError::new(
                e.status,
                &e.code,
                format!(
                    "Import of '{}' into registry '{}' failed: {}",
                    self.req.image, self.target.name, e.message
                ),
            )
        })
    }

    fn events(&self, root: Option<&str>) -> Vec<AuditEvent> {
        import_events(&self.caller, &self.target, &self.req, root)
    }

    /// An import error as ARM reports it, keeping the connector's refusal for the audit trail.
    fn noted(&self, e: ImportError) -> ArmError {
        if let ImportError::Refused(r) = &e {
            *self.refused.lock().expect("lock") = Some(r.clone());
        }
        e.into()
    }

    async fn import(&self) -> Result<(), ArmError> {
        let Source::Remote { uri, credentials } = &self.req.source else {
            return Err(ArmError::internal(
                "a remote import without a remote source",
            ));
        };
        let tls = if self.state.config.import_ca_bundles.is_empty() {
            None
        } else {
            Some(
                moat_transfer::remote::tls_config(&self.state.config.import_ca_bundles)
                    .map_err(ArmError::internal)?,
            )
        };
        let (uri, credentials, image, progress, outbound) = (
            uri.clone(),
            credentials.clone(),
            self.req.image.clone(),
            self.progress.clone(),
            self.state.outbound.clone(),
        );
        let (remote, artifact) =
            tokio::task::spawn_blocking(move || -> Result<(Remote, Artifact), ImportError> {
                let remote = Remote::connect(&uri, credentials, &outbound, tls)?;
                let artifact = remote.collect(&image, &progress)?;
                Ok((remote, artifact))
            })
            .await
            .map_err(ArmError::internal)?
            .map_err(|e| self.noted(e))?;
        // Proof of possession (DESIGN principle 6): every blob is downloaded and hashed, unless the target registry
        // links it already. That a digest is stored for another registry proves nothing and is never asked.
        let mut missing = Vec::new();
        for (digest, size) in &artifact.blobs {
            let held = self
                .state
                .meta
                .linked_in_registry(&self.target.id, digest)
                .await?;
            Progress::add(&self.progress.layers_total, 1);
            if held {
                Progress::add(&self.progress.layers_done, 1);
            } else {
                Progress::add(&self.progress.bytes_total, *size);
                missing.push((digest.clone(), *size));
            }
        }
        // Held against the collector from before their bytes are placed until the import links them (or fails).
        let digests: Vec<_> = missing.iter().map(|(d, _)| d.clone()).collect();
        let pins = self.state.meta.pin_blobs(&digests, IMPORT_PIN_TTL).await?;
        let (blobs, repo, progress) = (
            self.state.blobs.clone(),
            self.req.image.repository.to_string(),
            self.progress.clone(),
        );
        let (fetched, pins) = tokio::task::spawn_blocking(move || {
            let r = remote.fetch_blobs(blobs.as_ref(), &repo, &missing, &progress, &pins);
            (r, pins)
        })
        .await
        .map_err(ArmError::internal)?;
        let received = match fetched {
            Ok(r) => r,
            Err(e) => {
                self.state.meta.unpin(&pins).await?;
                return Err(self.noted(e));
            }
        };
        let root = artifact.root().map(|d| d.to_string());
        let events = self.events(root.as_deref());
        let write = ImportWrite {
            target_registry_id: &self.target.id,
            targets: &self.req.targets,
            manifests: &artifact.manifests,
            blobs: &artifact.blobs,
            force: self.req.force,
            events: &events,
        };
        let result = self
            .state
            .meta
            .import_remote::<String>(&write, &received)
            .await;
        // Linked blobs' pins went with their links; these are the rest (a refused write).
        self.state.meta.unpin(&pins).await?;
        self.state.manifest_cache.invalidate();
        result.map_err(write_error)
    }
}
