//! `GET /v2/<name>/referrers/<digest>`: an image index of the manifests whose `subject` is the digest.

use super::blobs::parse_digest;
use super::error::{OciError, OciResult};
use super::query_param;
use crate::context::RequestCtx;
use crate::state::AppState;
use axum::http::{header, StatusCode};
use axum::response::Response;
use moat_model::manifest::OCI_INDEX;
use moat_model::{Egress, Reference, RepositoryName};
use serde_json::json;

pub async fn list(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    digest: &str,
    query: &str,
) -> OciResult<Response> {
    let digest = parse_digest(digest)?;
    let reference = Reference::Digest(digest.clone());
    ctx.gate(
        state,
        &Egress::PullManifest {
            repository: repo,
            reference: &reference,
        },
    )?;
    let filter = query_param(query, "artifactType").filter(|s| !s.is_empty());
    let rows = state
        .meta
        .referrers(&ctx.registry.id, repo, &digest)
        .await?;
    let manifests: Vec<serde_json::Value> = rows
        .into_iter()
        .filter(|r| filter.is_none() || r.artifact_type == filter)
        .map(|r| {
            let mut d = json!({"mediaType": r.media_type, "digest": r.digest, "size": r.size});
            if let Some(t) = r.artifact_type {
                d["artifactType"] = json!(t);
            }
            if let Some(a) = r
                .annotations
                .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
            {
                d["annotations"] = a;
            }
            d
        })
        .collect();
    let mut e = ctx.event(Some(repo), 200);
    e.digest = Some(digest.to_string());
    state.audit.record(e);
    let body = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, OCI_INDEX);
    if filter.is_some() {
        resp = resp.header("oci-filters-applied", "artifactType");
    }
    resp.body(axum::body::Body::from(body.to_string()))
        .map_err(OciError::internal)
}
