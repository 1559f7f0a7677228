//! `GET /v2/_catalog` (and ACR's `/acr/v1/_catalog`): the repositories of the registry the request is for, and of
//! no other.

use super::error::{OciError, OciResult};
use super::{pagination, percent_encode};
use crate::context::RequestCtx;
use crate::state::AppState;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use moat_model::access::ResourceScope;
use moat_model::Action;

/// `path` is the endpoint's own, for the `Link` to the next page.
pub async fn list(
    state: &AppState,
    ctx: &RequestCtx,
    query: &str,
    path: &str,
) -> OciResult<Response> {
    if !ctx
        .principal
        .access
        .allows(&ResourceScope::Catalog, Action::Pull)
    {
        let mut err = ctx.challenge(
            Some("registry:catalog:*"),
            ctx.principal.presented.then_some("insufficient_scope"),
        );
        err.detail = serde_json::json!([{"Type": "registry", "Name": "catalog", "Action": "*"}]);
        return Err(err);
    }
    let (n, last) = pagination(query)?;
    let repos = state
        .meta
        .list_repositories(&ctx.registry.id, n, last.as_deref())
        .await?;
    state.audit.record(ctx.event(None, 200));
    let mut resp = (
        StatusCode::OK,
        axum::Json(serde_json::json!({"repositories": repos})),
    )
        .into_response();
    if let (Some(n), Some(last)) = (n, repos.last()) {
        if repos.len() as i64 == n {
            let link = format!("<{path}?n={n}&last={}>; rel=\"next\"", percent_encode(last));
            resp.headers_mut()
                .insert(header::LINK, link.parse().map_err(OciError::internal)?);
        }
    }
    Ok(resp)
}
