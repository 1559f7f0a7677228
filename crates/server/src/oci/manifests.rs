//! Manifests: `HEAD`/`GET`/`PUT`/`DELETE` by tag or digest, with `Accept` negotiation and `OCI-Subject`.

use super::empty;
use super::error::{Code, OciError, OciResult};
use crate::context::RequestCtx;
use crate::state::AppState;
use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use moat_model::manifest::MAX_MANIFEST_BYTES;
use moat_model::{Action, Digest, Egress, ParsedManifest, Reference, RepositoryName};
use moat_store::meta::ManifestRecord;

/// A reference to read or delete: a name that cannot be a tag names nothing, so it is unknown (404), as in
/// Distribution, whose routes never match it.
fn parse_existing_reference(s: &str) -> OciResult<Reference> {
    match parse_reference(s) {
        Err(e) if e.code == Code::ManifestInvalid => Err(OciError::manifest_unknown()),
        r => r,
    }
}

fn parse_reference(s: &str) -> OciResult<Reference> {
    s.parse().map_err(|e: moat_model::NameError| {
        if s.contains(':') {
            OciError::new(Code::DigestInvalid, e.to_string())
        } else {
            OciError::new(Code::ManifestInvalid, e.to_string())
                .with_detail(serde_json::json!({"tag": s}))
        }
    })
}

/// Whether an `Accept` header admits `media_type`. No header (or `*/*`) admits anything.
fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    let values: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .filter(|t| !t.is_empty())
        .collect();
    values.is_empty()
        || values
            .iter()
            .any(|t| *t == media_type || *t == "*/*" || *t == "application/*")
}

pub async fn get(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    reference: &str,
    headers: &HeaderMap,
    with_body: bool,
) -> OciResult<Response> {
    let reference = parse_existing_reference(reference)?;
    ctx.gate(
        state,
        &Egress::PullManifest {
            repository: repo,
            reference: &reference,
        },
    )?;
    let m = state
        .manifest_cache
        .get(&state.meta, &ctx.registry.id, repo, &reference)
        .await?
        .ok_or_else(OciError::manifest_unknown)?;
    if !accepts(headers, &m.media_type) {
        return Err(OciError::new(
            Code::ManifestUnknown,
            format!(
                "the manifest is {} and the request's Accept header does not admit it",
                m.media_type
            ),
        ));
    }
    // A HEAD is recorded like a GET: it passed the same gate and resolves the tag to its digest.
    let mut e = ctx.event(Some(repo), 200);
    e.digest = Some(m.digest.clone());
    e.media_type = Some(m.media_type.clone());
    e.size = Some(m.body.len() as i64);
    if let Reference::Tag(t) = &reference {
        e.tag = Some(t.to_string());
    }
    state.audit.record(e);
    let len = m.body.len();
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, &m.media_type)
        .header(header::CONTENT_LENGTH, len)
        .header("docker-content-digest", &m.digest)
        .header(header::ETAG, format!("\"{}\"", m.digest))
        .body(if with_body {
            Body::from(m.body.clone())
        } else {
            Body::empty()
        })
        .map_err(OciError::internal)
}

pub async fn put(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    reference: &str,
    headers: &HeaderMap,
    body: Body,
) -> OciResult<Response> {
    let checked = parse_reference(reference).and_then(|r| {
        ctx.require(state, repo, Action::Push)?;
        Ok(r)
    });
    let reference = match checked {
        Ok(r) => r,
        Err(e) => {
            // Read the (small) manifest before answering: a connection closed under an unread body races the
            // client's next request on it.
            super::drain(body).await;
            return Err(e);
        }
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let bytes = super::read_bounded(body, declared, MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| match e {
            super::BoundedReadError::TooLarge(_) => OciError::new(
                Code::SizeInvalid,
                format!("manifest is over the {MAX_MANIFEST_BYTES} byte limit"),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE),
            e => OciError::new(Code::ManifestInvalid, e.to_string()),
        })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let parsed = ParsedManifest::parse(&bytes, &content_type).map_err(|e| {
        OciError::new(
            Code::ManifestInvalid,
            format!("{e}: fix the manifest and push it again"),
        )
    })?;
    let algorithm = match &reference {
        Reference::Digest(d) => d.algorithm(),
        Reference::Tag(_) => moat_model::Algorithm::Sha256,
    };
    let digest = Digest::of(algorithm, &bytes);
    let tag = match &reference {
        Reference::Digest(d) if d != &digest => {
            return Err(OciError::new(
                Code::DigestInvalid,
                format!("manifest digest is {digest}, not {d}"),
            ));
        }
        Reference::Digest(_) => None,
        Reference::Tag(t) => Some(t.clone()),
    };
    let record = ManifestRecord::new(digest.clone(), &parsed, bytes.to_vec());
    let mut e = ctx.event(Some(repo), 201);
    e.digest = Some(digest.to_string());
    e.tag = tag.as_ref().map(|t| t.to_string());
    e.media_type = Some(parsed.media_type.clone());
    e.size = Some(bytes.len() as i64);
    let stored = state
        .meta
        .put_manifest(&ctx.registry.id, repo, &record, tag.as_ref(), &e)
        .await;
    state.manifest_cache.invalidate();
    stored?;
    crate::monitor::metrics::observe(&e);
    let mut resp = Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{repo}/manifests/{digest}"))
        .header(header::CONTENT_LENGTH, 0)
        .header("docker-content-digest", digest.as_str());
    if let Some(subject) = &parsed.subject {
        resp = resp.header("oci-subject", subject.digest.as_str());
    }
    resp.body(Body::empty()).map_err(OciError::internal)
}

pub async fn delete(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    reference: &str,
) -> OciResult<Response> {
    let reference = parse_existing_reference(reference)?;
    ctx.require(state, repo, Action::Delete)?;
    let deleted = match &reference {
        Reference::Digest(d) => {
            let mut e = ctx.event(Some(repo), 202);
            e.digest = Some(d.to_string());
            state
                .meta
                .delete_manifest(&ctx.registry.id, repo, d, &e)
                .await?
        }
        Reference::Tag(t) => {
            let mut e = ctx.event(Some(repo), 202);
            e.tag = Some(t.to_string());
            state.meta.delete_tag(&ctx.registry.id, repo, t, &e).await?
        }
    };
    state.manifest_cache.invalidate();
    if !deleted {
        return Err(OciError::manifest_unknown());
    }
    Ok(empty(StatusCode::ACCEPTED))
}
