//! Blob `HEAD`/`GET` (with `Range`) and `DELETE`. A blob is visible only where it is linked.

use super::empty;
use super::error::{Code, OciError, OciResult};
use crate::context::RequestCtx;
use crate::state::AppState;
use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use moat_model::{Action, Digest, Egress, RepositoryName};
use std::io::Read;

pub fn parse_digest(s: &str) -> OciResult<Digest> {
    s.parse()
        .map_err(|e: moat_model::DigestError| OciError::new(Code::DigestInvalid, e.to_string()))
}

/// What a `Range` header asks of a blob of `size` bytes. RFC 9110 §14.2: a server may ignore `Range`, and must
/// ignore one it does not understand, so only a single well-formed byte range is served as such; any other
/// value (another unit, a malformed or multi-range set) gets the whole blob. A single range that selects nothing
/// is unsatisfiable (416).
#[derive(Debug, PartialEq, Eq)]
enum RangeAsk {
    Whole,
    /// `[start, end]`, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

fn range_ask(value: Option<&str>, size: u64) -> RangeAsk {
    use http_range_header::RangeUnsatisfiableError as E;
    let Some(ranges) = value.and_then(|v| http_range_header::parse_range_header(v).ok()) else {
        return RangeAsk::Whole;
    };
    if ranges.len() != 1 {
        return RangeAsk::Whole;
    }
    match ranges.validate(size).as_deref() {
        Ok([r]) => RangeAsk::Part(*r.start(), *r.end()),
        Err(E::Unsatisfiable) => RangeAsk::Unsatisfiable,
        _ => RangeAsk::Whole,
    }
}

/// Bytes read from a blob file per message to the response body.
const CHUNK: usize = 2 << 20;

/// Streams `[start, start+len)` of a blob from a blocking reader, 1 MiB at a time, with bounded buffering. The
/// blob is opened first, so that storage that is down gets a 503 rather than a response that breaks off.
pub async fn blob_body(state: &AppState, digest: &Digest, start: u64, len: u64) -> OciResult<Body> {
    let blobs = state.blobs.clone();
    let d = digest.clone();
    let mut reader = match tokio::task::spawn_blocking(move || blobs.open_blob(&d, start, len))
        .await
        .map_err(OciError::internal)?
    {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(OciError::internal(format!(
                "{digest} is linked but its bytes are missing: {e}"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || loop {
        // read_to_end fills spare capacity without zeroing it first: at GB/s a memset per chunk shows.
        let mut buf = Vec::with_capacity(CHUNK);
        match (&mut reader).take(CHUNK as u64).read_to_end(&mut buf) {
            Ok(0) => return,
            Ok(_) => {
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    });
    Ok(Body::from_stream(futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
    )))
}

pub async fn get(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    digest: &str,
    headers: &HeaderMap,
    with_body: bool,
) -> OciResult<Response> {
    let digest = parse_digest(digest)?;
    ctx.gate(
        state,
        &Egress::PullBlob {
            repository: repo,
            digest: &digest,
        },
    )?;
    let size = state
        .meta
        .linked_blob_size(&ctx.registry.id, repo, &digest)
        .await?
        .ok_or_else(OciError::blob_unknown)? as u64;
    // With a dedicated data endpoint, bytes leave from there: the client follows a link bound to its origin.
    if with_body && ctx.registry.settings.data_endpoint_enabled {
        if let Some(redirect) = crate::data_endpoint::redirect(state, ctx, repo, &digest) {
            return redirect;
        }
    }
    serve(state, ctx, repo, &digest, size, headers, with_body).await
}

/// Answers a blob `GET`/`HEAD` whose egress is decided: `Range`, the body, the headers, the audit event.
pub async fn serve(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    digest: &Digest,
    size: u64,
    headers: &HeaderMap,
    with_body: bool,
) -> OciResult<Response> {
    let digest = digest.clone();
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match range_ask(range, size) {
        RangeAsk::Part(s, e) => (StatusCode::PARTIAL_CONTENT, s, e),
        RangeAsk::Whole => (StatusCode::OK, 0, size.saturating_sub(1)),
        RangeAsk::Unsatisfiable => {
            return Err(OciError::new(
                Code::RangeInvalid,
                format!(
                    "range '{}' is not satisfiable for {size} bytes",
                    range.unwrap_or_default()
                ),
            )
            .with_header(header::CONTENT_RANGE, format!("bytes */{size}")))
        }
    };
    let len = if size == 0 { 0 } else { end - start + 1 };
    let body = if with_body && len > 0 {
        match state
            .meta
            .inline_blob(&ctx.registry.id, repo, &digest)
            .await?
        {
            Some(data) if data.len() as u64 >= start + len => {
                Body::from(data.slice(start as usize..(start + len) as usize))
            }
            _ => blob_body(state, &digest, start, len).await?,
        }
    } else {
        Body::empty()
    };
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, len)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("docker-content-digest", digest.as_str())
        .header(header::ETAG, format!("\"{digest}\""))
        .header(header::ACCEPT_RANGES, "bytes");
    if status == StatusCode::PARTIAL_CONTENT {
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"));
    }
    // A HEAD passed the same gate as a GET and tells the caller the blob is there and its size: it is recorded
    // the same way, so an investigation sees every probe, not only the downloads.
    let mut e = ctx.event(Some(repo), status.as_u16());
    e.digest = Some(digest.to_string());
    e.size = Some(len as i64);
    e.media_type = Some("application/octet-stream".into());
    state.audit.record(e);
    resp.body(body).map_err(OciError::internal)
}

pub async fn delete(
    state: &AppState,
    ctx: &RequestCtx,
    repo: &RepositoryName,
    digest: &str,
) -> OciResult<Response> {
    let digest = parse_digest(digest)?;
    ctx.require(state, repo, Action::Delete)?;
    let mut e = ctx.event(Some(repo), 202);
    e.digest = Some(digest.to_string());
    // Marks the event as a blob's (a manifest delete has no media type here): webhooks fire on manifests only.
    e.media_type = Some("application/octet-stream".into());
    if !state
        .meta
        .unlink_blob(&ctx.registry.id, repo, &digest, &e)
        .await?
    {
        return Err(OciError::blob_unknown());
    }
    Ok(empty(StatusCode::ACCEPTED))
}

#[cfg(test)]
mod tests {
    use super::{range_ask, RangeAsk};

    #[test]
    fn ranges() {
        use RangeAsk::*;
        let table: &[(&str, u64, RangeAsk)] = &[
            ("bytes=0-9", 100, Part(0, 9)),
            ("bytes=90-", 100, Part(90, 99)),
            ("bytes=-10", 100, Part(90, 99)),
            ("bytes=-1000", 100, Part(0, 99)),
            ("bytes=50-500", 100, Part(50, 99)),
            ("Bytes=0-0", 100, Part(0, 0)),
            ("bytes=0-3", 10, Part(0, 3)),
            ("bytes=-4", 10, Part(6, 9)),
            // Unsatisfiable: a single range that selects nothing.
            ("bytes=100-", 100, Unsatisfiable),
            ("bytes=100-", 10, Unsatisfiable),
            ("bytes=100-200", 10, Unsatisfiable),
            ("bytes=-0", 10, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            // Ignored: what the server does not support or cannot parse gets the whole blob.
            ("bytes=0-1,3-4", 100, Whole),
            ("bytes=0-1, 3-4", 10, Whole),
            ("items=0-3", 100, Whole),
            ("bytes=abc", 100, Whole),
            ("bytes=5-1", 100, Whole),
            ("bytes=", 100, Whole),
            ("bytes=--1", 100, Whole),
            ("bytes = 0-1", 100, Whole),
            ("0-1", 100, Whole),
            ("", 100, Whole),
        ];
        for (v, size, want) in table {
            assert_eq!(&range_ask(Some(v), *size), want, "{v} on {size} bytes");
        }
        assert_eq!(range_ask(None, 100), Whole);
    }
}
