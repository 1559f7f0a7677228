//! ACR's soft-delete API under `/acr/v1/_deleted` (az 2.91: `az acr repository list-deleted`, `az acr manifest
//! list-deleted`, `list-deleted-tags`, `restore`). Listing what was deleted tells what a registry held, so it goes
//! through the egress gate (`Egress::ReadDeleted`, `deleted_read`); a restore is a write (`deleted_restore`).

use crate::context::RequestCtx;
use crate::oci::blobs::parse_digest;
use crate::oci::error::{Code, OciError, OciResult};
use crate::oci::query_param;
use crate::state::AppState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use moat_model::access::ResourceScope;
use moat_model::{Action, Egress, RepositoryName, Tag};
use moat_store::meta::RestoreError;
use moat_store::time_fmt::from_unix;
use serde_json::json;

pub async fn catalog(state: &AppState, ctx: &RequestCtx) -> OciResult<Response> {
    if !ctx
        .principal
        .access
        .allows(&ResourceScope::DeletedCatalog, Action::DeletedRead)
    {
        if ctx.principal.presented {
            ctx.audit_denied(state, None, "401", "insufficient scope");
        }
        let mut err = ctx.challenge(
            Some("registry:deleted_catalog:*"),
            ctx.principal.presented.then_some("insufficient_scope"),
        );
        err.detail =
            json!([{"Type": "registry", "Name": "deleted_catalog", "Action": "deleted_read"}]);
        return Err(err);
    }
    let repos = state.meta.deleted_repositories(&ctx.registry.id).await?;
    state.audit.record(ctx.event(None, 200));
    Ok(axum::Json(json!({"repositories": repos})).into_response())
}

pub async fn manifests(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
) -> OciResult<Response> {
    ctx.gate(state, &Egress::ReadDeleted { repository: repo })?;
    let rows = state.meta.deleted_manifests(&ctx.registry.id, repo).await?;
    state.audit.record(ctx.event(Some(repo), 200));
    let manifests: Vec<_> = rows
        .into_iter()
        .map(|m| {
            json!({
                "digest": m.digest,
                "mediaType": m.media_type,
                "imageSize": m.size,
                "createdTime": m.created_at,
                "deletedAt": from_unix(m.deleted_at),
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "registry": ctx.registry.login_server,
        "imageName": repo.as_str(),
        "manifests": manifests,
    }))
    .into_response())
}

pub async fn tags(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
) -> OciResult<Response> {
    ctx.gate(state, &Egress::ReadDeleted { repository: repo })?;
    let rows = state.meta.deleted_tags(&ctx.registry.id, repo).await?;
    state.audit.record(ctx.event(Some(repo), 200));
    let tags: Vec<_> = rows
        .into_iter()
        .map(|t| json!({"tag": t.tag, "digest": t.digest, "deletedAt": from_unix(t.deleted_at)}))
        .collect();
    Ok(axum::Json(json!({
        "registry": ctx.registry.login_server,
        "imageName": repo.as_str(),
        "tags": tags,
    }))
    .into_response())
}

/// `POST /acr/v1/_deleted/{repo}/_manifests/{digest}?force=…` with `{"tag": "…"}`.
pub async fn restore(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    digest: &str,
    query: &str,
    body: &[u8],
) -> OciResult<Response> {
    ctx.require(state, repo, Action::DeletedRestore)?;
    let digest = parse_digest(digest)?;
    let invalid =
        |why: String| OciError::new(Code::Unsupported, why).with_status(StatusCode::BAD_REQUEST);
    let tag: Option<Tag> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
            invalid(format!(
                "the body must be JSON like {{\"tag\": \"v1\"}}: {e}"
            ))
        })?;
        match v.get("tag") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(t)) => Some(t.parse().map_err(|_| {
                OciError::new(Code::TagUnknown, "invalid tag name")
                    .with_status(StatusCode::BAD_REQUEST)
            })?),
            Some(_) => return Err(invalid("`tag` must be a string".into())),
        }
    };
    let force = match query_param(query, "force")
        .as_deref()
        .map(str::to_ascii_lowercase)
    {
        None => false,
        Some(v) if v == "true" || v == "1" => true,
        Some(v) if v == "false" || v == "0" || v.is_empty() => false,
        Some(_) => return Err(invalid("`force` must be true or false".into())),
    };
    let mut e = ctx.event(Some(repo), 200);
    e.digest = Some(digest.to_string());
    e.tag = tag.as_ref().map(|t| t.to_string());
    match state
        .meta
        .restore_manifest(&ctx.registry.id, repo, &digest, tag.as_ref(), force, &e)
        .await
    {
        Ok(()) => {}
        Err(RestoreError::NotFound(d)) => {
            return Err(OciError::new(
                Code::ManifestUnknown,
                format!("no deleted manifest {d} in repository {repo}"),
            )
            .with_status(StatusCode::NOT_FOUND))
        }
        Err(e @ RestoreError::TagInUse { .. }) => {
            return Err(OciError::new(Code::Denied, e.to_string()).with_status(StatusCode::CONFLICT))
        }
        Err(e @ RestoreError::Incomplete(_)) => {
            return Err(OciError::new(Code::ManifestBlobUnknown, e.to_string())
                .with_status(StatusCode::CONFLICT))
        }
        Err(RestoreError::Store(e)) => return Err(e.into()),
    }
    state.manifest_cache.invalidate();
    Ok(axum::Json(json!({
        "registry": ctx.registry.login_server,
        "imageName": repo.as_str(),
        "digest": digest.to_string(),
        "tag": tag.map(|t| t.to_string()),
    }))
    .into_response())
}
