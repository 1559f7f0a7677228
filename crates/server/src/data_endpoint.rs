//! Dedicated data endpoints: with `dataEndpointEnabled`, a blob download on the login server answers `307` to
//! `<registry>.<region>.data.<domain>` with a short-lived link that authenticates itself and is bound to the
//! registry, repository, digest and the caller's origin. The data host serves only such links, after checking
//! the origin against the registry's network rules again and asking the egress gate. Pushes never come here.
//! Moat never redirects to raw object storage: the data endpoint is Moat itself, so every rule still applies.

use crate::context::RequestCtx;
use crate::oci::blobs;
use crate::oci::error::{Code, OciError, OciResult};
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use moat_auth::LinkClaims;
use moat_model::audit::Operation;
use moat_model::{Digest, Egress, RepositoryName};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims<'a>(
    ctx: &'a RequestCtx,
    repo: &'a str,
    digest: &'a str,
    expires: i64,
    client_ip: &'a str,
) -> LinkClaims<'a> {
    LinkClaims {
        registry_id: &ctx.registry.id,
        repository: repo,
        digest,
        expires,
        client_ip,
        endpoint: &ctx.origin.listener,
    }
}

/// The `307` a login server answers for a blob `GET` when the registry has a data endpoint; `None` when its data
/// endpoint has no valid host name (a stored location that is not a region name), and the login server serves the
/// blob itself, after the same gate: the redirect target is only ever a name built from validated parts.
pub fn redirect(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    digest: &Digest,
) -> Option<OciResult<Response>> {
    let host = state.config.data_endpoint_host(&ctx.registry)?;
    let expires = now() + state.config.data_link_ttl.as_secs() as i64;
    let ip = ctx.origin.client_ip.to_string();
    let signature = state
        .links
        .sign(&claims(ctx, repo.as_str(), digest.as_str(), expires, &ip));
    let location = format!(
        "{}://{host}/?r={}&d={}&e={expires}&s={signature}",
        ctx.scheme, repo, digest
    );
    Some(
        Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header(header::LOCATION, location)
            .header("docker-content-digest", digest.as_str())
            .header(header::CONTENT_LENGTH, 0)
            .body(axum::body::Body::empty())
            .map_err(OciError::internal),
    )
}

/// `GET /?r=<repository>&d=<digest>&e=<expiry>&s=<signature>` on a data endpoint host.
pub async fn download(State(state): State<AppState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    match serve_link(&state, &parts).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn serve_link(state: &AppState, parts: &axum::http::request::Parts) -> OciResult<Response> {
    // The origin is classified and checked against the registry's network rules first, as on the login server.
    let ctx = RequestCtx::classify_origin(state, parts, Operation::Pull).await?;
    if !ctx.data_endpoint {
        return Err(
            OciError::new(Code::NameUnknown, "no such endpoint").with_status(StatusCode::NOT_FOUND)
        );
    }
    let query = parts.uri.query().unwrap_or("");
    let param = |k: &str| crate::oci::query_param(query, k);
    let (Some(repo), Some(digest), Some(expires), Some(signature)) =
        (param("r"), param("d"), param("e"), param("s"))
    else {
        return Err(OciError::new(
            Code::Unsupported,
            "a data endpoint serves only the download links its login server issues (r, d, e and s parameters); pull through the login server",
        )
        .with_status(StatusCode::BAD_REQUEST));
    };
    let repository: RepositoryName = repo
        .parse()
        .map_err(|e: moat_model::NameError| OciError::new(Code::NameInvalid, e.to_string()))?;
    let digest = blobs::parse_digest(&digest)?;
    let refuse = |why: &str| {
        ctx.audit_denied(state, Some(&repository), "403", why);
        OciError::new(Code::Denied, why.to_string())
    };
    let expires: i64 = expires
        .parse()
        .map_err(|_| refuse("the download link's expiry is not a number"))?;
    let ip = ctx.origin.client_ip.to_string();
    state
        .links
        .verify(
            &claims(&ctx, repository.as_str(), digest.as_str(), expires, &ip),
            &signature,
            now(),
            state.config.data_link_ttl.as_secs() as i64,
        )
        .map_err(|e| refuse(&e.to_string()))?;
    ctx.gate(
        state,
        &Egress::DataEndpointDownload {
            repository: &repository,
            digest: &digest,
        },
    )?;
    let size = state
        .meta
        .linked_blob_size(&ctx.registry.id, &repository, &digest)
        .await?
        .ok_or_else(OciError::blob_unknown)? as u64;
    let with_body = parts.method != axum::http::Method::HEAD;
    blobs::serve(
        state,
        &ctx,
        &repository,
        &digest,
        size,
        &parts.headers,
        with_body,
    )
    .await
}
