//! The `/acr/v1` handlers: ACR's JSON for repositories, tags and manifests, and deleting a repository or a tag.

use crate::context::RequestCtx;
use crate::oci::blobs::parse_digest;
use crate::oci::error::{Code, OciError, OciResult};
use crate::oci::{pagination, percent_encode, query_param};
use crate::state::AppState;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use moat_model::manifest::{ManifestKind, ParsedManifest};
use moat_model::{Action, Egress, RepositoryName, Tag};
use moat_store::meta::{ManifestRow, TagRow};
use serde_json::{json, Value};

/// Moat has no image locks (yet): everything is readable, writable, deletable and listed, and says so.
fn changeable_attributes() -> Value {
    json!({"deleteEnabled": true, "writeEnabled": true, "readEnabled": true, "listEnabled": true})
}

fn name_unknown(repo: &RepositoryName) -> OciError {
    OciError::new(Code::NameUnknown, "repository name not known to registry")
        .with_detail(json!({"name": repo.as_str()}))
}

pub async fn repository(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
) -> OciResult<Response> {
    ctx.gate(state, &Egress::ReadMetadata { repository: repo })?;
    let s = state
        .meta
        .repository_summary(&ctx.registry.id, repo)
        .await?
        .ok_or_else(|| name_unknown(repo))?;
    state.audit.record(ctx.event(Some(repo), 200));
    Ok(axum::Json(json!({
        "registry": ctx.registry.login_server,
        "imageName": repo.as_str(),
        "createdTime": s.created_at,
        "lastUpdateTime": s.last_update,
        "manifestCount": s.manifest_count,
        "tagCount": s.tag_count,
        "changeableAttributes": changeable_attributes(),
    }))
    .into_response())
}

pub async fn delete_repository(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
) -> OciResult<Response> {
    ctx.require(state, repo, Action::Delete)?;
    let e = ctx.event(Some(repo), 202);
    let deleted = state
        .meta
        .delete_repository(&ctx.registry.id, repo, &e)
        .await?
        .ok_or_else(|| name_unknown(repo))?;
    state.manifest_cache.invalidate();
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({"manifestsDeleted": deleted.manifests, "tagsDeleted": deleted.tags})),
    )
        .into_response())
}

/// ACR's `orderby`: by name (the default), or by last update, newest or oldest first.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    Name,
    TimeDesc,
    TimeAsc,
}

impl Order {
    /// Sorts rows that are in name order already; times are stored fixed-width, so text order is time order.
    fn sort<T>(self, rows: &mut [T], time: impl Fn(&T) -> &String) {
        match self {
            Order::Name => {}
            Order::TimeDesc => rows.sort_by(|a, b| time(b).cmp(time(a))),
            Order::TimeAsc => rows.sort_by(|a, b| time(a).cmp(time(b))),
        }
    }
}

fn order(query: &str) -> OciResult<Order> {
    match query_param(query, "orderby").as_deref() {
        None | Some("" | "none") => Ok(Order::Name),
        Some("timedesc") => Ok(Order::TimeDesc),
        Some("timeasc") => Ok(Order::TimeAsc),
        Some(other) => Err(OciError::new(
            Code::Unsupported,
            format!("orderby={other} is not known: use timedesc, timeasc or none"),
        )
        .with_status(StatusCode::BAD_REQUEST)),
    }
}

/// One page of `items` (already in order), after the item whose key is `last`, at most `n`; with the `Link` to
/// the next page when there may be one.
fn page<T>(
    mut items: Vec<T>,
    key: impl Fn(&T) -> &str,
    query: &str,
    path: &str,
) -> OciResult<(Vec<T>, Option<String>)> {
    let (n, last) = pagination(query)?;
    if let Some(last) = &last {
        let after = items
            .iter()
            .position(|i| key(i) == last)
            .map_or(0, |p| p + 1);
        items.drain(..after);
    }
    let mut link = None;
    if let Some(n) = n {
        if items.len() as i64 > n {
            items.truncate(n as usize);
            if let Some(l) = items.last() {
                let orderby = query_param(query, "orderby").unwrap_or_default();
                link = Some(format!(
                    "<{path}?last={}&n={n}&orderby={}>; rel=\"next\"",
                    percent_encode(key(l)),
                    percent_encode(&orderby)
                ));
            }
        }
    }
    Ok((items, link))
}

fn with_link(body: Value, link: Option<String>) -> OciResult<Response> {
    let mut resp = axum::Json(body).into_response();
    if let Some(link) = link {
        resp.headers_mut()
            .insert(header::LINK, link.parse().map_err(OciError::internal)?);
    }
    Ok(resp)
}

fn tag_json(t: &TagRow) -> Value {
    json!({
        "name": t.tag,
        "digest": t.digest,
        "createdTime": t.updated_at,
        "lastUpdateTime": t.updated_at,
        "signed": false,
        "changeableAttributes": changeable_attributes(),
    })
}

pub async fn tags(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    query: &str,
) -> OciResult<Response> {
    ctx.gate(state, &Egress::ReadMetadata { repository: repo })?;
    let order = order(query)?;
    if state
        .meta
        .repository_summary(&ctx.registry.id, repo)
        .await?
        .is_none()
    {
        return Err(name_unknown(repo));
    }
    let mut rows = state.meta.tag_rows(&ctx.registry.id, repo, None).await?;
    if let Some(d) = query_param(query, "digest").filter(|d| !d.is_empty()) {
        rows.retain(|t| t.digest == d);
    }
    order.sort(&mut rows, |t| &t.updated_at);
    let path = format!("/acr/v1/{repo}/_tags");
    let (rows, link) = page(rows, |t| t.tag.as_str(), query, &path)?;
    state.audit.record(ctx.event(Some(repo), 200));
    with_link(
        json!({
            "registry": ctx.registry.login_server,
            "imageName": repo.as_str(),
            "tags": rows.iter().map(tag_json).collect::<Vec<_>>(),
        }),
        link,
    )
}

pub async fn tag(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    tag: &str,
) -> OciResult<Response> {
    ctx.gate(state, &Egress::ReadMetadata { repository: repo })?;
    let rows = state
        .meta
        .tag_rows(&ctx.registry.id, repo, Some(tag))
        .await?;
    let t = rows.first().ok_or_else(|| tag_unknown(repo, tag))?;
    state.audit.record(ctx.event(Some(repo), 200));
    Ok(axum::Json(json!({
        "registry": ctx.registry.login_server,
        "imageName": repo.as_str(),
        "tag": tag_json(t),
    }))
    .into_response())
}

fn tag_unknown(repo: &RepositoryName, tag: &str) -> OciError {
    OciError::new(
        Code::TagUnknown,
        format!("the tag {tag} does not exist in {repo}"),
    )
    .with_detail(json!({"name": repo.as_str(), "tag": tag}))
}

/// `DELETE /acr/v1/<name>/_tags/<tag>` (`az acr repository untag`): the manifest stays.
pub async fn untag(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    tag: &str,
) -> OciResult<Response> {
    ctx.require(state, repo, Action::Delete)?;
    let parsed: Tag = tag.parse().map_err(|e: moat_model::NameError| {
        OciError::new(Code::NameInvalid, e.to_string()).with_detail(json!({"tag": tag}))
    })?;
    let mut e = ctx.event(Some(repo), 202);
    e.tag = Some(tag.to_string());
    if !state
        .meta
        .delete_tag(&ctx.registry.id, repo, &parsed, &e)
        .await?
    {
        return Err(tag_unknown(repo, tag));
    }
    state.manifest_cache.invalidate();
    Ok(StatusCode::ACCEPTED.into_response())
}

/// A manifest as ACR lists it: sizes and references come from its body.
fn manifest_json(m: &ManifestRow, tags: &[&TagRow]) -> Value {
    let parsed = ParsedManifest::parse(&m.body, &m.media_type).ok();
    let mut v = json!({
        "digest": m.digest,
        "imageSize": m.size,
        "createdTime": m.created_at,
        "lastUpdateTime": tags.iter().map(|t| t.updated_at.as_str()).chain([m.created_at.as_str()]).max(),
        "mediaType": m.media_type,
        "tags": tags.iter().map(|t| t.tag.as_str()).collect::<Vec<_>>(),
        "changeableAttributes": changeable_attributes(),
    });
    if let Some(p) = parsed {
        match p.kind {
            ManifestKind::Index => {
                v["references"] = p
                    .manifests
                    .iter()
                    .map(|d| {
                        let platform = d.platform.clone().unwrap_or_default();
                        json!({"digest": d.digest.as_str(), "architecture": platform["architecture"], "os": platform["os"]})
                    })
                    .collect();
            }
            _ => {
                // What a pull of this image transfers: the manifest, its config and its layers.
                let parts: i64 = p.config.iter().chain(&p.layers).map(|d| d.size).sum();
                v["imageSize"] = json!(m.size + parts);
                if let Some(c) = &p.config {
                    v["configMediaType"] = json!(c.media_type);
                }
            }
        }
    }
    v
}

pub async fn manifests(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    query: &str,
) -> OciResult<Response> {
    ctx.gate(state, &Egress::ReadMetadata { repository: repo })?;
    let order = order(query)?;
    let mut rows = state
        .meta
        .manifest_rows(&ctx.registry.id, repo, None)
        .await?;
    if rows.is_empty() {
        return Err(name_unknown(repo));
    }
    let tags = state.meta.tag_rows(&ctx.registry.id, repo, None).await?;
    order.sort(&mut rows, |m| &m.created_at);
    let path = format!("/acr/v1/{repo}/_manifests");
    let (rows, link) = page(rows, |m| m.digest.as_str(), query, &path)?;
    state.audit.record(ctx.event(Some(repo), 200));
    let listed: Vec<Value> = rows
        .iter()
        .map(|m| {
            let mine: Vec<&TagRow> = tags.iter().filter(|t| t.digest == m.digest).collect();
            manifest_json(m, &mine)
        })
        .collect();
    with_link(
        json!({
            "registry": ctx.registry.login_server,
            "imageName": repo.as_str(),
            "manifests": listed,
        }),
        link,
    )
}

pub async fn manifest(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    digest: &str,
) -> OciResult<Response> {
    let digest = parse_digest(digest)?;
    ctx.gate(state, &Egress::ReadMetadata { repository: repo })?;
    let rows = state
        .meta
        .manifest_rows(&ctx.registry.id, repo, Some(&digest))
        .await?;
    let m = rows.first().ok_or_else(|| {
        OciError::new(Code::ManifestUnknown, "manifest unknown")
            .with_detail(json!({"name": repo.as_str(), "digest": digest.as_str()}))
    })?;
    let tags = state.meta.tag_rows(&ctx.registry.id, repo, None).await?;
    let mine: Vec<&TagRow> = tags.iter().filter(|t| t.digest == m.digest).collect();
    state.audit.record(ctx.event(Some(repo), 200));
    Ok(axum::Json(json!({
        "registry": ctx.registry.login_server,
        "imageName": repo.as_str(),
        "manifest": manifest_json(m, &mine),
    }))
    .into_response())
}
