//! Blob uploads: monolithic (`POST ?digest=`), `POST` + `PUT`, chunked `PATCH` with in-order checks, status,
//! cancel, and cross-repository mount. Bytes stream through one hasher into the upload object; a `202` or `201`
//! is sent only once the bytes and the session or blob row are durable.

use super::blobs::parse_digest;
use super::error::{Code, OciError, OciResult};
use super::{empty, query_param};
use crate::context::RequestCtx;
use crate::state::AppState;
use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use moat_model::access::ResourceScope;
use moat_model::{Action, Digest, Egress, RepositoryName};
use moat_store::blobs::Unverified;
use moat_store::meta::{FinishedBlob, UploadRow};
use moat_store::{Hashed, ReceivedBlob, UploadState};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type HashState = Option<UploadState>;

/// One lock per open session, holding the state of the bytes acknowledged so far (the same state is in the
/// session's row, for a chunk that arrives at another node). Two requests on one session in this process never
/// interleave.
#[derive(Clone, Default)]
pub struct UploadLocks(Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<HashState>>>>>);

impl UploadLocks {
    fn get(&self, id: &str) -> Arc<tokio::sync::Mutex<HashState>> {
        self.0
            .lock()
            .expect("lock")
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    fn forget(&self, id: &str) {
        self.0.lock().expect("lock").remove(id);
    }

    /// Whether a request is writing this session right now (the collector leaves it alone).
    pub fn busy(&self, id: &str) -> bool {
        self.0
            .lock()
            .expect("lock")
            .get(id)
            .is_some_and(|m| m.try_lock().is_err())
    }
}

fn location(repo: &RepositoryName, id: &str) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

fn range_header(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

fn accepted(repo: &RepositoryName, id: &str, size: u64) -> OciResult<Response> {
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(header::LOCATION, location(repo, id))
        .header(header::RANGE, range_header(size))
        .header(header::CONTENT_LENGTH, 0)
        .header("docker-upload-uuid", id)
        .header("oci-chunk-min-length", 0)
        .body(Body::empty())
        .map_err(OciError::internal)
}

fn created(repo: &RepositoryName, digest: &Digest) -> OciResult<Response> {
    Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{repo}/blobs/{digest}"))
        .header(header::CONTENT_LENGTH, 0)
        .header("docker-content-digest", digest.as_str())
        .body(Body::empty())
        .map_err(OciError::internal)
}

fn content_length(headers: &HeaderMap) -> OciResult<Option<u64>> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| OciError::new(Code::SizeInvalid, "Content-Length is not a number")),
    }
}

async fn new_session(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
) -> OciResult<String> {
    let id = uuid::Uuid::new_v4().to_string();
    let blobs = state.blobs.clone();
    let id2 = id.clone();
    tokio::task::spawn_blocking(move || blobs.create_upload(&id2, true))
        .await
        .map_err(OciError::internal)??;
    state
        .meta
        .create_upload(&id, &ctx.registry.id, repo)
        .await?;
    Ok(id)
}

/// Finds a session by id, in this registry and repository only.
async fn session(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    id: &str,
) -> OciResult<UploadRow> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(OciError::upload_unknown());
    }
    match state.meta.upload(id).await? {
        Some(row) if row.registry_id == ctx.registry.id && row.repository == repo.as_str() => {
            Ok(row)
        }
        _ => Err(OciError::upload_unknown()),
    }
}

/// The state a session's row keeps, when it matches its acknowledged size: what lets a chunk continue on a node
/// that did not see the earlier ones without reading them again.
fn row_state(row: &UploadRow) -> HashState {
    row.resume
        .as_deref()
        .and_then(UploadState::decode)
        .filter(|s| s.size() == row.committed_size as u64)
}

/// How `append` treats the upload object.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A new monolithic upload: create the object first, no fsync (the commit makes it durable).
    Create,
    /// A chunk that a 202 will acknowledge: fsync before returning.
    Chunk,
    /// The final chunk of a session: the commit makes it durable.
    Last,
}

/// Takes a session's lock and reads its row under it: another request may have advanced the session while this
/// one waited. The session is checked before the lock too, so an unknown id never gets a lock entry.
async fn locked_session(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    id: &str,
) -> OciResult<(tokio::sync::OwnedMutexGuard<HashState>, UploadRow)> {
    session(state, ctx, repo, id).await?;
    let guard = state.uploads.get(id).lock_owned().await;
    let row = session(state, ctx, repo, id).await?;
    Ok((guard, row))
}

/// Appends a request body to an upload after its `committed` bytes. Returns the digest of the whole upload so
/// far and its size.
async fn append(
    state: &AppState,
    id: &str,
    committed: u64,
    prior: HashState,
    body: Body,
    mode: Mode,
) -> OciResult<Hashed> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let blobs = state.blobs.clone();
    let id2 = id.to_string();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<Hashed> {
        if mode == Mode::Create {
            blobs.create_upload(&id2, false)?;
        }
        let mut w = blobs.open_upload(&id2, committed, prior)?;
        while let Some(chunk) = rx.blocking_recv() {
            w.write(chunk)?;
        }
        if mode == Mode::Chunk {
            w.finish_chunk()
        } else {
            w.finish()
        }
    });
    let mut stream = body.into_data_stream();
    let mut body_error = None;
    while let Some(frame) = stream.next().await {
        match frame {
            Ok(bytes) => {
                if tx.send(bytes).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                body_error = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let written = writer.await.map_err(OciError::internal)??;
    if let Some(e) = body_error {
        // Nothing is acknowledged: the session keeps its committed size, and the next writer cuts these bytes off.
        return Err(OciError::new(
            Code::BlobUploadInvalid,
            format!("request body ended early: {e}"),
        ));
    }
    Ok(written)
}

/// How long a pin holds bytes an upload is placing: far more than placing and linking take; a pin left by a
/// crash lapses then.
const PIN_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Ends a session as the blob `expected`: checks the digest, makes the bytes durable under their name, then
/// commits the blob row, its link and the audit event together.
async fn commit(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    id: &str,
    expected: &Digest,
    hashed: Hashed,
) -> OciResult<Response> {
    // The bytes are pinned before they are put under their name, so that the collector cannot remove the stored
    // copy this upload may rely on before the link is written (see moat_store::gc::pins).
    let pins = state
        .meta
        .pin_blobs(std::slice::from_ref(expected), PIN_TTL)
        .await?;
    // Bytes are hashed with sha256 as they stream; a client that names them by sha512 pays one more read.
    let (blobs, id2, d2) = (state.blobs.clone(), id.to_string(), expected.clone());
    let (received, pins) = tokio::task::spawn_blocking(move || {
        let r = ReceivedBlob::commit(blobs.as_ref(), &id2, hashed, &d2, &pins);
        (r, pins)
    })
    .await
    .map_err(OciError::internal)?;
    if received.is_err() {
        state.meta.unpin(&pins).await?;
    }
    let received = match received {
        Ok(r) => r,
        Err(Unverified::Mismatch { actual }) => {
            discard(state, id).await?;
            return Err(OciError::new(
                Code::DigestInvalid,
                format!("provided digest {expected} does not match the uploaded content ({actual}); the upload was discarded, push again"),
            ));
        }
        Err(Unverified::Io(e)) => return Err(e.into()),
    };
    let mut e = ctx.event(Some(repo), 201);
    e.digest = Some(expected.to_string());
    e.size = Some(received.size() as i64);
    e.media_type = Some("application/octet-stream".into());
    let blob = FinishedBlob {
        registry_id: &ctx.registry.id,
        repo,
        blob: received,
        upload_id: id,
    };
    state.meta.commit_blob(blob, &e).await?;
    crate::monitor::metrics::observe(&e);
    state.uploads.forget(id);
    created(repo, expected)
}

async fn discard(state: &AppState, id: &str) -> OciResult<()> {
    state.meta.delete_upload(id).await?;
    discard_object(state, id).await
}

/// Removes an upload object that has no session row (a monolithic upload that failed).
async fn discard_object(state: &AppState, id: &str) -> OciResult<()> {
    let blobs = state.blobs.clone();
    let id2 = id.to_string();
    tokio::task::spawn_blocking(move || blobs.remove_upload(&id2))
        .await
        .map_err(OciError::internal)??;
    state.uploads.forget(id);
    Ok(())
}

/// `POST /v2/<name>/blobs/uploads/` with `?digest=` (monolithic), `?mount=&from=` (mount) or nothing.
pub async fn start(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    query: &str,
    headers: &HeaderMap,
    body: Body,
) -> OciResult<Response> {
    let mount_from = query_param(query, "from").and_then(|f| f.parse::<RepositoryName>().ok());
    if let (Some(_), Some(from)) = (query_param(query, "mount"), &mount_from) {
        // A token that does not cover the source repository gets a challenge naming both repositories, as
        // Distribution does, so the client comes back with a token that allows the mount. A token that asked for
        // the source and was refused falls back to an upload below (asking again would loop).
        let access = &ctx.principal.access;
        if !access.allows_repo(repo, Action::Push)
            || !access.mentions(&ResourceScope::Repository(from.clone()))
        {
            let scope = format!("repository:{repo}:pull,push repository:{from}:pull");
            return Err(ctx.challenge(
                Some(&scope),
                ctx.principal.presented.then_some("insufficient_scope"),
            ));
        }
    }
    ctx.require(state, repo, Action::Push)?;
    if let Some(mount) = query_param(query, "mount") {
        let digest = parse_digest(&mount)?;
        if let Some(from) = &mount_from {
            let egress = Egress::Mount {
                source_registry: &ctx.registry,
                from,
                to: repo,
            };
            // A refused or impossible mount is not an error: the spec has the client upload instead. The gate's
            // permit is what the store links with: it names the registry and the repository it allowed reading.
            if let Ok(permit) = ctx.permit(state, &egress) {
                let mut e = ctx.event(Some(repo), 201);
                e.digest = Some(digest.to_string());
                if state
                    .meta
                    .mount_blob(&permit, repo, &digest, &e)
                    .await?
                    .is_some()
                {
                    return created(repo, &digest);
                }
            }
        }
        let id = new_session(state, ctx, repo).await?;
        return accepted(repo, &id, 0);
    }
    if let Some(d) = query_param(query, "digest") {
        let expected = parse_digest(&d)?;
        let declared = content_length(headers)?;
        if declared.is_some_and(|n| n <= INLINE_MAX) {
            return small_blob(state, ctx, repo, &expected, declared.unwrap_or(0), body).await;
        }
        // A monolithic upload needs no session row: it is never resumed, and a crash leaves only an object
        // that the startup sweep removes.
        let id = uuid::Uuid::new_v4().to_string();
        let hashed = match append(state, &id, 0, None, body, Mode::Create).await {
            Ok(w) => w,
            Err(e) => {
                discard_object(state, &id).await?;
                return Err(e);
            }
        };
        if declared.is_some_and(|n| n != hashed.size()) {
            discard_object(state, &id).await?;
            return Err(OciError::new(
                Code::SizeInvalid,
                "body length does not match Content-Length",
            ));
        }
        return commit(state, ctx, repo, &id, &expected, hashed).await;
    }
    let id = new_session(state, ctx, repo).await?;
    accepted(repo, &id, 0)
}

/// Blobs up to this size are kept in the metadata store (see `migrations/0003_inline_blobs.sql`).
const INLINE_MAX: u64 = 64 * 1024;

/// A small monolithic upload: read whole (bounded), checked, and made durable by the group commit alone.
async fn small_blob(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    expected: &Digest,
    declared: u64,
    body: Body,
) -> OciResult<Response> {
    use http_body_util::BodyExt;
    let bytes = http_body_util::Limited::new(body, INLINE_MAX as usize)
        .collect()
        .await
        .map_err(|e| {
            OciError::new(
                Code::BlobUploadInvalid,
                format!("request body ended early or exceeded its length: {e}"),
            )
        })?
        .to_bytes();
    if bytes.len() as u64 != declared {
        return Err(OciError::new(
            Code::SizeInvalid,
            "body length does not match Content-Length",
        ));
    }
    let received = ReceivedBlob::from_bytes(bytes, expected).map_err(|actual| {
        OciError::new(
            Code::DigestInvalid,
            format!("provided digest {expected} does not match the uploaded content ({actual}); push again"),
        )
    })?;
    let mut e = ctx.event(Some(repo), 201);
    e.digest = Some(expected.to_string());
    e.size = Some(received.size() as i64);
    e.media_type = Some("application/octet-stream".into());
    let blob = FinishedBlob {
        registry_id: &ctx.registry.id,
        repo,
        blob: received,
        upload_id: "",
    };
    state.meta.commit_blob(blob, &e).await?;
    crate::monitor::metrics::observe(&e);
    created(repo, expected)
}

pub async fn status(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    id: &str,
) -> OciResult<Response> {
    ctx.require(state, repo, Action::Push)?;
    let row = session(state, ctx, repo, id).await?;
    let mut resp = accepted(repo, id, row.committed_size as u64)?;
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

/// Parses `Content-Range: <start>-<end>` (inclusive; some clients prefix `bytes `).
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let v = v
        .trim()
        .trim_start_matches("bytes")
        .trim_start_matches('=')
        .trim();
    let v = v.split('/').next()?;
    let (a, b) = v.split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b))
}

pub async fn patch(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> OciResult<Response> {
    ctx.require(state, repo, Action::Push)?;
    let (mut guard, row) = locked_session(state, ctx, repo, id).await?;
    let committed = row.committed_size as u64;
    let out_of_order = |msg: String| {
        OciError::new(Code::RangeInvalid, msg)
            .with_header(header::LOCATION, location(repo, id))
            .with_header(header::RANGE, range_header(committed))
            .with_header(
                "docker-upload-uuid".parse().expect("header name"),
                id.to_string(),
            )
    };
    let checked = (|| -> OciResult<Option<u64>> {
        let range = headers
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok());
        let expected_len = match range {
            Some(r) => {
                let (start, end) = parse_content_range(r)
                    .ok_or_else(|| out_of_order(format!("malformed Content-Range '{r}'")))?;
                if start != committed {
                    return Err(out_of_order(format!(
                        "chunk starts at {start} but the upload has {committed} bytes: send the chunk starting at {committed}"
                    )));
                }
                Some(end - start + 1)
            }
            None => None,
        };
        if let (Some(want), Some(n)) = (expected_len, content_length(headers)?) {
            if want != n {
                return Err(OciError::new(
                    Code::SizeInvalid,
                    format!("Content-Range covers {want} bytes but Content-Length is {n}"),
                ));
            }
        }
        Ok(expected_len)
    })();
    let expected_len = match checked {
        Ok(len) => len,
        Err(e) => {
            drop(guard);
            super::drain(body).await;
            return Err(e);
        }
    };
    let declared = content_length(headers)?;
    let prior = guard.take().or_else(|| row_state(&row));
    let resume = append(state, id, committed, prior, body, Mode::Chunk)
        .await?
        .resume_state();
    let size = resume.size();
    if let Some(want) = expected_len.or(declared) {
        if size - committed != want {
            return Err(OciError::new(
                Code::SizeInvalid,
                format!("expected {want} bytes, received {}", size - committed),
            ));
        }
    }
    state
        .meta
        .set_upload_size(id, size, &resume.encode())
        .await?;
    *guard = Some(resume);
    accepted(repo, id, size)
}

pub async fn finish(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    id: &str,
    query: &str,
    headers: &HeaderMap,
    body: Body,
) -> OciResult<Response> {
    ctx.require(state, repo, Action::Push)?;
    let (mut guard, row) = locked_session(state, ctx, repo, id).await?;
    let expected = parse_digest(&query_param(query, "digest").ok_or_else(|| {
        OciError::new(
            Code::DigestInvalid,
            "the digest query parameter is required",
        )
    })?)?;
    let committed = row.committed_size as u64;
    if let Some(r) = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
    {
        if parse_content_range(r).map(|(s, _)| s) != Some(committed) {
            drop(guard);
            super::drain(body).await;
            return Err(OciError::new(
                Code::RangeInvalid,
                format!("final chunk must start at {committed}"),
            )
            .with_header(header::RANGE, range_header(committed)));
        }
    }
    let declared = content_length(headers)?;
    let prior = guard.take().or_else(|| row_state(&row));
    let hashed = append(state, id, committed, prior, body, Mode::Last).await?;
    if declared.is_some_and(|n| n != hashed.size() - committed) {
        return Err(OciError::new(
            Code::SizeInvalid,
            "body length does not match Content-Length",
        ));
    }
    commit(state, ctx, repo, id, &expected, hashed).await
}

pub async fn cancel(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    id: &str,
) -> OciResult<Response> {
    ctx.require(state, repo, Action::Push)?;
    session(state, ctx, repo, id).await?;
    let lock = state.uploads.get(id);
    let _guard = lock.lock().await;
    discard(state, id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// Removes sessions idle for longer than the configured time. At startup (`orphans`), also removes upload
/// objects no session owns: the remains of a crash between creating an object and its row. That second sweep
/// runs only before the server accepts requests, when no session can be half-created.
pub async fn sweep(state: &AppState, orphans: bool) -> Result<usize, moat_store::StoreError> {
    let cutoff = time::OffsetDateTime::now_utc() - state.config.upload_ttl;
    let mut removed = 0;
    for id in state
        .meta
        .stale_uploads(&moat_store::time_fmt::format(cutoff))
        .await?
    {
        let lock = state.uploads.get(&id);
        let Ok(_busy) = lock.try_lock() else { continue };
        state.meta.delete_upload(&id).await?;
        state.blobs.remove_upload(&id)?;
        state.uploads.forget(&id);
        removed += 1;
    }
    if orphans {
        let live: std::collections::HashSet<String> =
            state.meta.upload_ids().await?.into_iter().collect();
        let too_old = std::time::SystemTime::now() - state.config.upload_ttl;
        for id in state.blobs.list_uploads()? {
            if live.contains(&id) {
                continue;
            }
            // In a shared store only age tells a crash's remains from another node's upload in flight.
            if state.blobs.shared()
                && state
                    .blobs
                    .upload_info(&id)
                    .map_or(true, |(_, modified)| modified >= too_old)
            {
                continue;
            }
            state.blobs.remove_upload(&id)?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::parse_content_range;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes=100-199"), Some((100, 199)));
        assert_eq!(parse_content_range("bytes 0-9/10"), Some((0, 9)));
        assert_eq!(parse_content_range("9-0"), None);
        assert_eq!(parse_content_range("x"), None);
    }
}
