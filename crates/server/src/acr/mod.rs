//! ACR's own data-plane API, `/acr/v1`: repository, tag and manifest metadata for `az acr repository …`,
//! `az acr manifest list-metadata` and the Azure SDKs' `ContainerRegistryClient`. Reads go through the egress gate
//! (`Egress::ReadMetadata`): tag names and digests tell what a registry holds. Repository names arrive raw or
//! `%2F`-encoded; both are accepted.

mod deleted;
mod metadata;

use crate::context::RequestCtx;
use crate::oci::error::{self, Code, OciError, OciResult};
use crate::oci::{parse_name, percent_decode};
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use moat_model::audit::Operation;

pub fn router() -> Router<AppState> {
    Router::new().route("/acr/v1/{*rest}", any(dispatch))
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Catalog,
    Repository(String),
    Tags(String),
    Tag(String, String),
    Manifests(String),
    Manifest(String, String),
    DeletedCatalog,
    DeletedManifests(String),
    DeletedTags(String),
    DeletedManifest(String, String),
}

fn parse_route(path: &str) -> Option<Route> {
    let rest = percent_decode(path.strip_prefix("/acr/v1/")?);
    let rest = rest.trim_end_matches('/');
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if rest == "_deleted/_catalog" {
        return Some(Route::DeletedCatalog);
    }
    if let Some(deleted) = rest.strip_prefix("_deleted/") {
        return match parse_route(&format!("/acr/v1/{deleted}"))? {
            Route::Manifests(n) => Some(Route::DeletedManifests(n)),
            Route::Tags(n) => Some(Route::DeletedTags(n)),
            Route::Manifest(n, d) => Some(Route::DeletedManifest(n, d)),
            _ => None,
        };
    }
    // Repository name components never start with '_', so the markers cannot be part of a name.
    if let Some(name) = rest.strip_suffix("/_tags") {
        return Some(Route::Tags(name.into()));
    }
    if let Some(name) = rest.strip_suffix("/_manifests") {
        return Some(Route::Manifests(name.into()));
    }
    if let Some((name, tag)) = rest.rsplit_once("/_tags/") {
        return (!tag.contains('/')).then(|| Route::Tag(name.into(), tag.into()));
    }
    if let Some((name, digest)) = rest.rsplit_once("/_manifests/") {
        return (!digest.contains('/')).then(|| Route::Manifest(name.into(), digest.into()));
    }
    (!rest.is_empty() && !rest.contains("/_")).then(|| Route::Repository(rest.into()))
}

impl Route {
    /// What a request on this route does: the name of every event it causes, allowed or refused.
    fn operation(&self, method: &Method) -> Operation {
        match (self, method) {
            (Route::DeletedManifest(..), _) => Operation::Restore,
            (Route::DeletedCatalog | Route::DeletedManifests(_) | Route::DeletedTags(_), _) => {
                Operation::ListDeleted
            }
            (_, &Method::PATCH) => Operation::UpdateAttributes,
            (Route::Catalog, _) => Operation::ListRepositories,
            (Route::Repository(_), &Method::DELETE) => Operation::DeleteRepository,
            (Route::Repository(_), _) => Operation::ShowRepository,
            (Route::Tags(_), _) => Operation::ListTags,
            (Route::Tag(..), &Method::DELETE) => Operation::Untag,
            (Route::Tag(..), _) => Operation::ShowTag,
            (Route::Manifests(_), _) => Operation::ListManifests,
            (Route::Manifest(..), &Method::DELETE) => Operation::Delete,
            (Route::Manifest(..), _) => Operation::ShowManifest,
        }
    }
}

async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    match handle(&state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(state: &AppState, req: Request) -> OciResult<Response> {
    let (parts, body) = req.into_parts();
    let route = parse_route(parts.uri.path()).ok_or_else(|| {
        OciError::new(
            Code::NameUnknown,
            format!("no such endpoint: {}", parts.uri.path()),
        )
        .with_status(StatusCode::NOT_FOUND)
    })?;
    let ctx = RequestCtx::classify(state, &parts, route.operation(&parts.method)).await?;
    let query = parts.uri.query().unwrap_or("");
    let m = &parts.method;
    let unsupported = || error::method_not_allowed(m);
    let locks_unsupported = || {
        OciError::new(
            Code::Unsupported,
            "changing changeable attributes (image locks) is not supported by this registry yet: every repository, tag and manifest stays readable, writable, deletable and listed; restrict who may write with role assignments",
        )
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
    };
    let ctx = &ctx;
    match route {
        Route::Catalog if m == Method::GET => {
            crate::oci::catalog::list(state, ctx, query, "/acr/v1/_catalog").await
        }
        Route::Repository(name) => {
            let repo = parse_name(&name)?;
            match *m {
                Method::GET => metadata::repository(state, ctx, &repo).await,
                Method::DELETE => metadata::delete_repository(state, ctx, &repo).await,
                Method::PATCH => Err(locks_unsupported()),
                _ => Err(unsupported()),
            }
        }
        Route::Tags(name) if m == Method::GET => {
            metadata::tags(state, ctx, &parse_name(&name)?, query).await
        }
        Route::Tag(name, tag) => {
            let repo = parse_name(&name)?;
            match *m {
                Method::GET => metadata::tag(state, ctx, &repo, &tag).await,
                Method::DELETE => metadata::untag(state, ctx, &repo, &tag).await,
                Method::PATCH => Err(locks_unsupported()),
                _ => Err(unsupported()),
            }
        }
        Route::Manifests(name) if m == Method::GET => {
            metadata::manifests(state, ctx, &parse_name(&name)?, query).await
        }
        Route::Manifest(name, digest) => {
            let repo = parse_name(&name)?;
            match *m {
                Method::GET => metadata::manifest(state, ctx, &repo, &digest).await,
                Method::PATCH => Err(locks_unsupported()),
                _ => Err(unsupported()),
            }
        }
        Route::DeletedCatalog if m == Method::GET => deleted::catalog(state, ctx).await,
        Route::DeletedManifests(name) if m == Method::GET => {
            deleted::manifests(state, ctx, &parse_name(&name)?).await
        }
        Route::DeletedTags(name) if m == Method::GET => {
            deleted::tags(state, ctx, &parse_name(&name)?).await
        }
        Route::DeletedManifest(name, digest) if m == Method::POST => {
            let repo = parse_name(&name)?;
            // A restore body is one small JSON object.
            let body = axum::body::to_bytes(body, 64 * 1024).await.map_err(|_| {
                OciError::new(Code::SizeInvalid, "the request body is too large")
                    .with_status(StatusCode::PAYLOAD_TOO_LARGE)
            })?;
            deleted::restore(state, ctx, &repo, &digest, query, &body).await
        }
        _ => Err(unsupported()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_accept_raw_and_encoded_names() {
        assert_eq!(parse_route("/acr/v1/_catalog"), Some(Route::Catalog));
        assert_eq!(
            parse_route("/acr/v1/library/hello"),
            Some(Route::Repository("library/hello".into()))
        );
        assert_eq!(
            parse_route("/acr/v1/library%2Fhello/_tags"),
            Some(Route::Tags("library/hello".into()))
        );
        assert_eq!(
            parse_route("/acr/v1/a/b/_tags/v1.0"),
            Some(Route::Tag("a/b".into(), "v1.0".into()))
        );
        assert_eq!(
            parse_route("/acr/v1/a/_manifests"),
            Some(Route::Manifests("a".into()))
        );
        assert_eq!(
            parse_route("/acr/v1/a/_manifests/sha256:00"),
            Some(Route::Manifest("a".into(), "sha256:00".into()))
        );
        assert_eq!(parse_route("/acr/v1/a/_other"), None);
        assert_eq!(
            parse_route("/acr/v1/_deleted/_catalog"),
            Some(Route::DeletedCatalog)
        );
        assert_eq!(
            parse_route("/acr/v1/_deleted/a%2Fb/_manifests"),
            Some(Route::DeletedManifests("a/b".into()))
        );
        assert_eq!(
            parse_route("/acr/v1/_deleted/a/b/_tags"),
            Some(Route::DeletedTags("a/b".into()))
        );
        assert_eq!(
            parse_route("/acr/v1/_deleted/a/_manifests/sha256:00"),
            Some(Route::DeletedManifest("a".into(), "sha256:00".into()))
        );
        assert_eq!(parse_route("/acr/v1/_deleted/a"), None);
        assert_eq!(parse_route("/acr/v1/"), None);
    }
}
