//! `GET /v2/<name>/tags/list` with `n`/`last` pagination and a `Link` to the next page.

use super::error::{Code, OciError, OciResult};
use super::{pagination, percent_encode};
use crate::context::RequestCtx;
use crate::state::AppState;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use moat_model::{Egress, RepositoryName};

pub async fn list(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    query: &str,
) -> OciResult<Response> {
    ctx.gate(state, &Egress::ListTags { repository: repo })?;
    if !state.meta.repository_exists(&ctx.registry.id, repo).await? {
        return Err(
            OciError::new(Code::NameUnknown, "repository name not known to registry")
                .with_detail(serde_json::json!({"name": repo.as_str()})),
        );
    }
    let (n, last) = pagination(query)?;
    let tags = state
        .meta
        .list_tags(&ctx.registry.id, repo, n, last.as_deref())
        .await?;
    state.audit.record(ctx.event(Some(repo), 200));
    let mut resp = (
        StatusCode::OK,
        axum::Json(serde_json::json!({"name": repo.as_str(), "tags": tags})),
    )
        .into_response();
    if let (Some(n), Some(last)) = (n, tags.last()) {
        if tags.len() as i64 == n {
            let link = format!(
                "</v2/{repo}/tags/list?n={n}&last={}>; rel=\"next\"",
                percent_encode(last)
            );
            resp.headers_mut()
                .insert(header::LINK, link.parse().map_err(OciError::internal)?);
        }
    }
    Ok(resp)
}
