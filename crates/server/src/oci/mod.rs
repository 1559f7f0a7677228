//! The OCI Distribution API, v1.1. Repository names contain '/', so paths are dispatched by their last
//! fixed segment (`/blobs/uploads/`, `/manifests/`, `/blobs/`, `/tags/list`, `/referrers/`), the way the spec's
//! URL grammar reads, then handed to one module per resource.

pub mod blobs;
pub mod catalog;
pub mod error;
pub mod manifest_cache;
pub mod manifests;
pub mod referrers;
pub mod tags;
pub mod uploads;

use crate::context::RequestCtx;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use error::{Code, OciError, OciResult};
use futures_util::StreamExt;
use moat_model::audit::Operation;
use moat_model::RepositoryName;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2", any(dispatch))
        .route("/v2/", any(dispatch))
        .route("/v2/{*rest}", any(dispatch))
}

#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Base,
    Catalog,
    Tags(&'a str),
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    UploadStart(&'a str),
    Upload(&'a str, &'a str),
    Referrers(&'a str, &'a str),
}

fn parse_route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix("/v2")?;
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Some(Route::Base);
    }
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads")
        .or_else(|| rest.strip_suffix("/blobs/uploads/"))
    {
        return Some(Route::UploadStart(name));
    }
    // The last segment never contains '/', so splitting at the last marker is unambiguous.
    type Make<'a> = fn(&'a str, &'a str) -> Route<'a>;
    let markers: [(&str, Make); 4] = [
        ("/blobs/uploads/", Route::Upload),
        ("/manifests/", Route::Manifest),
        ("/referrers/", Route::Referrers),
        ("/blobs/", Route::Blob),
    ];
    for (marker, make) in markers {
        if let Some((name, last)) = rest.rsplit_once(marker) {
            if !last.contains('/') && !last.is_empty() {
                return Some(make(name, last));
            }
        }
    }
    None
}

impl Route<'_> {
    /// What a request on this route does: the name of every event it causes, allowed or refused.
    fn operation(&self, method: &Method, query: &str) -> Operation {
        match self {
            Route::Base => Operation::Login,
            Route::Catalog => Operation::ListRepositories,
            Route::Tags(_) => Operation::ListTags,
            Route::Referrers(..) => Operation::ListReferrers,
            Route::Manifest(_, reference) => match *method {
                Method::PUT => Operation::Push,
                // A digest has a ':'; a tag cannot.
                Method::DELETE if reference.contains(':') => Operation::Delete,
                Method::DELETE => Operation::Untag,
                _ => Operation::Pull,
            },
            Route::Blob(..) => match *method {
                Method::DELETE => Operation::Delete,
                _ => Operation::Pull,
            },
            Route::UploadStart(_) if query_param(query, "mount").is_some() => Operation::Mount,
            Route::UploadStart(_) | Route::Upload(..) => Operation::Push,
        }
    }
}

pub fn parse_name(name: &str) -> OciResult<RepositoryName> {
    name.parse().map_err(|e: moat_model::NameError| {
        OciError::new(Code::NameInvalid, e.to_string())
            .with_detail(serde_json::json!({"name": name}))
    })
}

async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    let sends_body = matches!(*req.method(), Method::PUT | Method::PATCH | Method::POST);
    let mut resp = match handle(&state, req).await {
        Ok(r) => r,
        Err(e) => {
            let mut resp = e.into_response();
            if sends_body {
                // A refused write may leave its body unread, and then the connection cannot be reused: say so,
                // or the client's next request races the close (a PUT is not retried by most clients).
                resp.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    HeaderValue::from_static("close"),
                );
            }
            resp
        }
    };
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

async fn handle(state: &AppState, req: Request) -> OciResult<Response> {
    let (parts, body) = req.into_parts();
    // The Azure SDK sends repository names `%2F`-encoded (`/v2/library%2Fhello/manifests/v1`), as ACR accepts.
    let path = match parts.uri.path() {
        p if p.contains('%') => percent_decode(p),
        p => p.to_string(),
    };
    let route = parse_route(&path).ok_or_else(|| {
        OciError::new(Code::NameUnknown, format!("no such endpoint: {path}"))
            .with_status(StatusCode::NOT_FOUND)
    })?;
    let query = parts.uri.query().unwrap_or("");
    let operation = route.operation(&parts.method, query);
    let ctx = match RequestCtx::classify(state, &parts, operation).await {
        Ok(ctx) => ctx,
        Err(e) => {
            // A client that sends a body before it reads the answer (docker's PATCH with stale credentials)
            // should see this 401, not a reset connection.
            if matches!(parts.method, Method::PATCH | Method::PUT | Method::POST) {
                drain(body).await;
            }
            return Err(e);
        }
    };
    let m = &parts.method;
    let unsupported = || error::method_not_allowed(m);
    match route {
        Route::Base => {
            if ctx.principal.identity.is_none() {
                return Err(ctx.challenge(None, None));
            }
            Ok((StatusCode::OK, axum::Json(serde_json::json!({}))).into_response())
        }
        Route::Catalog if m == Method::GET => {
            catalog::list(state, &ctx, query, "/v2/_catalog").await
        }
        Route::Tags(name) if m == Method::GET => {
            tags::list(state, &ctx, &parse_name(name)?, query).await
        }
        Route::Manifest(name, reference) => {
            let repo = parse_name(name)?;
            match *m {
                Method::GET => {
                    manifests::get(state, &ctx, &repo, reference, &parts.headers, true).await
                }
                Method::HEAD => {
                    manifests::get(state, &ctx, &repo, reference, &parts.headers, false).await
                }
                Method::PUT => {
                    manifests::put(state, &ctx, &repo, reference, &parts.headers, body).await
                }
                Method::DELETE => manifests::delete(state, &ctx, &repo, reference).await,
                _ => Err(unsupported()),
            }
        }
        Route::Blob(name, digest) => {
            let repo = parse_name(name)?;
            match *m {
                Method::GET => blobs::get(state, &ctx, &repo, digest, &parts.headers, true).await,
                Method::HEAD => blobs::get(state, &ctx, &repo, digest, &parts.headers, false).await,
                Method::DELETE => blobs::delete(state, &ctx, &repo, digest).await,
                _ => Err(unsupported()),
            }
        }
        Route::UploadStart(name) if m == Method::POST => {
            uploads::start(state, &ctx, &parse_name(name)?, query, &parts.headers, body).await
        }
        Route::Upload(name, id) => {
            let repo = parse_name(name)?;
            match *m {
                Method::GET => uploads::status(state, &ctx, &repo, id).await,
                Method::PATCH => uploads::patch(state, &ctx, &repo, id, &parts.headers, body).await,
                Method::PUT => {
                    uploads::finish(state, &ctx, &repo, id, query, &parts.headers, body).await
                }
                Method::DELETE => uploads::cancel(state, &ctx, &repo, id).await,
                _ => Err(unsupported()),
            }
        }
        Route::Referrers(name, digest) if m == Method::GET => {
            referrers::list(state, &ctx, &parse_name(name)?, digest, query).await
        }
        _ => Err(unsupported()),
    }
}

/// Reads `key` from a query string, percent-decoded.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `n` and `last` for the paginated listings. `n` bounded so one request cannot ask for everything at once.
pub fn pagination(query: &str) -> OciResult<(Option<i64>, Option<String>)> {
    let n = match query_param(query, "n") {
        None => None,
        Some(v) if v.is_empty() => None,
        Some(v) => Some(v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            OciError::new(
                Code::Unsupported,
                format!("n={v} is not a non-negative number"),
            )
            .with_status(StatusCode::BAD_REQUEST)
        })?),
    };
    Ok((
        n.map(|n| n.min(10_000)),
        query_param(query, "last").filter(|s| !s.is_empty()),
    ))
}

/// How much of a refused body [`drain`] reads, and for how long.
const DRAIN_BYTES: usize = 64 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads and discards a refused request's body (bounded), so that a client still sending it gets the error
/// response instead of a reset connection: HTTP/1.1 clients send the whole body before they read an answer, and
/// some HTTP/2 clients (curl before 8) drop a response that a reset of their upload follows.
pub async fn drain(body: Body) {
    drain_stream(body.into_data_stream()).await
}

async fn drain_stream(mut stream: axum::body::BodyDataStream) {
    let mut seen = 0;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

/// Why [`read_bounded`] returned no body.
#[derive(Debug, thiserror::Error)]
pub enum BoundedReadError {
    #[error("the body is over the {0} byte limit")]
    TooLarge(usize),
    #[error("the request body ended early: {0}")]
    Broken(axum::Error),
}

/// Reads a body of at most `limit` bytes (refused at once when its `Content-Length` says more). An oversized body
/// is drained before the caller answers 413, as every refused body is.
pub async fn read_bounded(
    body: Body,
    declared: Option<u64>,
    limit: usize,
) -> Result<bytes::Bytes, BoundedReadError> {
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|n| n > limit as u64) {
        drain_stream(stream).await;
        return Err(BoundedReadError::TooLarge(limit));
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BoundedReadError::Broken)?;
        if buf.len() + chunk.len() > limit {
            drain_stream(stream).await;
            return Err(BoundedReadError::TooLarge(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

pub fn empty(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(parse_route("/v2/"), Some(Route::Base));
        assert_eq!(parse_route("/v2"), Some(Route::Base));
        assert_eq!(parse_route("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(parse_route("/v2/a/b/tags/list"), Some(Route::Tags("a/b")));
        assert_eq!(
            parse_route("/v2/a/blobs/uploads/"),
            Some(Route::UploadStart("a"))
        );
        assert_eq!(
            parse_route("/v2/a/blobs/uploads/123"),
            Some(Route::Upload("a", "123"))
        );
        assert_eq!(
            parse_route("/v2/a/manifests/blobs/manifests/x"),
            Some(Route::Manifest("a/manifests/blobs", "x"))
        );
        assert_eq!(
            parse_route("/v2/blobs/blobs/sha256:1"),
            Some(Route::Blob("blobs", "sha256:1"))
        );
        assert_eq!(
            parse_route("/v2/a/referrers/sha256:1"),
            Some(Route::Referrers("a", "sha256:1"))
        );
        assert_eq!(parse_route("/v2/a/manifests/"), None);
        assert_eq!(parse_route("/v3/a"), None);
    }

    #[test]
    fn every_route_names_its_operation_whatever_the_outcome() {
        let op = |m: Method, path: &str, q: &str| parse_route(path).unwrap().operation(&m, q);
        assert_eq!(
            op(Method::POST, "/v2/a/blobs/uploads/", ""),
            Operation::Push
        );
        assert_eq!(
            op(Method::PATCH, "/v2/a/blobs/uploads/x", ""),
            Operation::Push
        );
        assert_eq!(
            op(Method::PUT, "/v2/a/blobs/uploads/x", "digest=sha256:1"),
            Operation::Push
        );
        assert_eq!(op(Method::PUT, "/v2/a/manifests/v1", ""), Operation::Push);
        assert_eq!(
            op(
                Method::POST,
                "/v2/a/blobs/uploads/",
                "mount=sha256:1&from=b"
            ),
            Operation::Mount
        );
        assert_eq!(op(Method::GET, "/v2/a/manifests/v1", ""), Operation::Pull);
        assert_eq!(
            op(Method::HEAD, "/v2/a/blobs/sha256:1", ""),
            Operation::Pull
        );
        assert_eq!(
            op(Method::DELETE, "/v2/a/manifests/v1", ""),
            Operation::Untag
        );
        assert_eq!(
            op(Method::DELETE, "/v2/a/manifests/sha256:1", ""),
            Operation::Delete
        );
        assert_eq!(
            op(Method::DELETE, "/v2/a/blobs/sha256:1", ""),
            Operation::Delete
        );
        assert_eq!(op(Method::GET, "/v2/a/tags/list", ""), Operation::ListTags);
        assert_eq!(
            op(Method::GET, "/v2/_catalog", ""),
            Operation::ListRepositories
        );
        assert_eq!(
            op(Method::GET, "/v2/a/referrers/sha256:1", ""),
            Operation::ListReferrers
        );
        assert_eq!(op(Method::GET, "/v2/", ""), Operation::Login);
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            query_param("n=2&last=a%2Fb", "last").as_deref(),
            Some("a/b")
        );
        assert_eq!(query_param("mount=x&from=", "from").as_deref(), Some(""));
        assert_eq!(query_param("a=1", "b"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_encode("a/b c"), "a%2Fb%20c");
    }
}
